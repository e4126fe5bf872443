//! A cache prefetch hint for state lookups.
//!
//! The heap state backend looks up a whole batch of keys ahead of their
//! records, so that their cache misses overlap. A plain load of each key's
//! slot does not overlap them well: a load retires only when its line has
//! arrived, so a few outstanding loads fill the processor's reorder buffer
//! and everything behind them waits. A prefetch instruction retires at once.
//! It needs `unsafe` only because `core::arch` marks every intrinsic that
//! takes a pointer so; a prefetch never dereferences in the language's sense,
//! cannot fault (the hardware drops one it cannot serve) and changes nothing
//! a program can observe but its timing. This crate is the only place in the
//! workspace allowed `unsafe`, for that one instruction.

/// Ask the processor to start bringing the cache line holding `value` into
/// the nearest cache level. A hint only: no effect on behaviour, a no-op on
/// processors without such an instruction.
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let address = (value as *const T).cast::<i8>();
        // SAFETY: `_mm_prefetch` is a hint that reads nothing the program can
        // see and cannot fault, whatever the address; here it even comes from a
        // live reference. SSE, which the instruction needs, is part of every
        // x86_64 target.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(address)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = value;
    }
}
