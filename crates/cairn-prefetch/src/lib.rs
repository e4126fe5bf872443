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

/// The cache line size of the processors Cairn runs on (x86_64, aarch64).
const LINE: usize = 64;

/// Ask the processor to start bringing every cache line `value` spans into
/// the nearest cache level (a value of 32 bytes may straddle two lines; a
/// slice prefetches all of its elements). A
/// hint only: no effect on behaviour, a no-op on processors without such an
/// instruction.
#[inline(always)]
pub fn prefetch_read<T: ?Sized>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let address = start as usize;
    let lines = (address + std::mem::size_of_val(value).max(1) - 1) / LINE - address / LINE;
    prefetch_line(start);
    for line in 1..=lines {
        prefetch_line(start.wrapping_add(line * LINE - address % LINE));
    }
}

#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `_mm_prefetch` is a hint that reads nothing the program can
        // see and cannot fault, whatever the address (here: within or at the
        // start of a line of a live value). SSE, which the instruction needs,
        // is part of every x86_64 target.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = address;
    }
}
