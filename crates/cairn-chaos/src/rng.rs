//! A tiny seeded generator (xorshift64*), so a run's kill schedule can be
//! replayed with `--seed`.

use std::time::Duration;

/// xorshift64* (Vigna). Not for cryptography; plenty for kill schedules.
#[derive(Clone, Debug)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        // Scramble so that nearby seeds give unrelated sequences.
        let s = crate::workload::splitmix64(seed);
        XorShift {
            state: if s == 0 { 0x9E37_79B9_7F4A_7C15 } else { s },
        }
    }

    /// A seed from the clock and the process id (printed by the harness).
    pub fn seed_from_entropy() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        crate::workload::splitmix64(nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; slight modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// A duration uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        for _ in 0..1000 {
            let x = a.between(10, 20);
            assert_eq!(x, b.between(10, 20));
            assert!((10..=20).contains(&x));
        }
        assert_ne!(XorShift::new(1).next_u64(), XorShift::new(2).next_u64());
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }
}
