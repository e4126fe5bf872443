//! The hash of Cairn's in-memory tables of keys: the heap backend's pages,
//! the timer queue's sets, RocksDB's write cache.
//!
//! Keys come from a job's input, and whoever writes that input may choose
//! them. With a fixed hash, keys crafted to share one hash (for a
//! multiply-and-rotate hash like Fx that takes a line of arithmetic per key)
//! all land in one probe sequence and every state access becomes a scan:
//! the job stalls (hash flooding). This hasher is keyed by a seed drawn from
//! the operating system's randomness once per process, so which keys collide
//! cannot be worked out from outside.
//!
//! It mixes 16 bytes per 64×64→128-bit multiply, folded (the high half xor
//! the low half, so every output bit depends on every input bit of both
//! operands), the construction of wyhash and foldhash: as cheap as Fx for
//! the 8-byte keys most jobs have, cheaper for longer ones.
//!
//! Nothing persisted may depend on it: hashes differ between processes.
//! Persisted hashes (key groups, operator ids) are the stable ones in
//! [`crate::hash`].

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Constants (fractional digits of pi) that keep an all-zero seed from
/// zeroing a multiply.
const PI_0: u64 = 0x243f_6a88_85a3_08d3;
const PI_1: u64 = 0x1319_8a2e_0370_7344;

/// A hasher with the process's seed, drawn on first use.
#[inline(always)]
fn seeded() -> TableHasher {
    static SEEDED: OnceLock<TableHasher> = OnceLock::new();
    *SEEDED.get_or_init(|| {
        // std's `RandomState` is keyed from the operating system's random
        // source; two of its hashes are two independent random words.
        let random = std::collections::hash_map::RandomState::new();
        TableHasher::with_seed(random.hash_one(PI_0), random.hash_one(PI_1))
    })
}

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = (a as u128).wrapping_mul(b as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

#[inline(always)]
fn half(bytes: &[u8]) -> u64 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as u64
}

/// A [`Hasher`] keyed by the process's random seed ([`BuildHasherDefault`]
/// makes one per hash, so `HashMap<_, _, BuildHasherDefault<TableHasher>>`
/// is seeded too).
///
/// [`BuildHasherDefault`]: std::hash::BuildHasherDefault
#[derive(Clone, Copy)]
pub struct TableHasher {
    state: u64,
    key: u64,
}

impl Default for TableHasher {
    #[inline]
    fn default() -> Self {
        seeded()
    }
}

impl TableHasher {
    /// A hasher with a given seed (tests compare seeds; tables use `default`).
    #[inline]
    pub fn with_seed(state: u64, key: u64) -> Self {
        TableHasher {
            state: state ^ PI_0,
            key: key ^ PI_1,
        }
    }

    #[inline(always)]
    fn mix(&mut self, low: u64, high: u64) {
        self.state = folded_multiply(self.state ^ low, self.key ^ high);
    }
}

impl Hasher for TableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        // Up to 16 bytes (most keys) in one multiply, read as two words that
        // overlap when shorter; the length tells such readings apart.
        let (low, high) = if len > 16 {
            // 16 bytes a multiply; the last 16 (overlapping) make the tail.
            let mut rest = bytes;
            while rest.len() > 16 {
                self.mix(word(&rest[..8]), word(&rest[8..16]));
                rest = &rest[16..];
            }
            (word(&bytes[len - 16..len - 8]), word(&bytes[len - 8..]))
        } else if len >= 8 {
            (word(&bytes[..8]), word(&bytes[len - 8..]))
        } else if len >= 4 {
            (half(&bytes[..4]), half(&bytes[len - 4..]))
        } else if len > 0 {
            (
                (bytes[0] as u64) << 16 | (bytes[len / 2] as u64) << 8 | bytes[len - 1] as u64,
                0,
            )
        } else {
            (0, 0)
        };
        self.mix(low, high ^ (len as u64).rotate_left(32));
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(i as u64, 1);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(i as u64, 4);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i, 8);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64, 8);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

/// The hash of one key's bytes in this process ([`TableHasher`]).
#[inline(always)]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = TableHasher::default();
    h.write(bytes);
    h.finish()
}

/// The multiplier of Fx, the multiply-and-rotate hash the tables used before.
#[cfg(test)]
const FX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Keys of 16 bytes that all share one Fx hash: the second word cancels
/// the first.
#[cfg(test)]
pub(crate) fn fx_flood(n: u64) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let w0 = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let w1 = w0.wrapping_mul(FX).rotate_left(5) ^ 0xdead_beef;
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&w0.to_le_bytes());
            key[8..].copy_from_slice(&w1.to_le_bytes());
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The Fx hash of 16 bytes (two words), as the heap tables used before.
    fn fx16(w: [u64; 2]) -> u64 {
        let h = w[0].wrapping_mul(FX);
        (h.rotate_left(5) ^ w[1]).wrapping_mul(FX)
    }

    #[test]
    fn keys_crafted_to_collide_under_a_fixed_hash_hash_apart() {
        let keys = fx_flood(50_000);
        let fx: HashSet<u64> = keys.iter().map(|k| fx16([word(&k[..8]), word(&k[8..])])).collect();
        assert_eq!(fx.len(), 1, "the crafted keys share one Fx hash");
        let seeded: HashSet<u64> = keys.iter().map(|k| hash_bytes(k)).collect();
        assert_eq!(seeded.len(), keys.len(), "every crafted key has its own hash");
        // The bits tables index by (low bits for slots, bits 32 and up for
        // pages) spread too: 50,000 keys over 1,024 buckets leave none empty.
        for shift in [0, 32] {
            let buckets: HashSet<u64> = keys.iter().map(|k| (hash_bytes(k) >> shift) & 1023).collect();
            assert_eq!(buckets.len(), 1024, "bits {shift}..{} of the hash", shift + 10);
        }
    }

    #[test]
    fn the_seed_decides_the_hash() {
        let hash = |seed: (u64, u64), bytes: &[u8]| {
            let mut h = TableHasher::with_seed(seed.0, seed.1);
            h.write(bytes);
            h.finish()
        };
        let a = (1, 2);
        let b = (3, 4);
        for key in [&b""[..], b"k", b"12345678", b"a key of more than sixteen bytes"] {
            assert_eq!(hash(a, key), hash(a, key));
            assert_ne!(hash(a, key), hash(b, key), "{key:?}");
        }
        // Trailing zero bytes and lengths matter.
        assert_ne!(hash(a, b"ab"), hash(a, b"ab\0"));
        assert_ne!(hash(a, &[0; 8]), hash(a, &[0; 16]));
        assert_eq!(hash_bytes(b"same process"), hash_bytes(b"same process"));
    }

    #[test]
    fn one_bit_of_input_changes_about_half_the_output() {
        let mut flipped = 0u32;
        let mut total = 0u32;
        for len in [1usize, 8, 12, 16, 24, 40] {
            let base: Vec<u8> = (0..len as u8).collect();
            let h0 = hash_bytes(&base);
            for bit in 0..len * 8 {
                let mut k = base.clone();
                k[bit / 8] ^= 1 << (bit % 8);
                flipped += (hash_bytes(&k) ^ h0).count_ones();
                total += 64;
            }
        }
        let share = flipped as f64 / total as f64;
        assert!((0.4..0.6).contains(&share), "avalanche {share}");
    }
}
