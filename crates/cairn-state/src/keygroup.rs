//! Key groups: how keyed state is partitioned across parallel subtasks.
//!
//! Keyed state is split into `max_parallelism` *key groups*. Every key belongs to exactly one
//! key group, computed from a stable hash of its canonical byte encoding. Key groups are the
//! unit of rescaling: each subtask owns a contiguous range of key groups, and when the
//! parallelism changes whole key groups move between subtasks. The number of key groups (the
//! max parallelism) is therefore fixed for the lifetime of a job's state.
//!
//! Everything here is persisted implicitly in checkpoints and savepoints, so the formulas are
//! part of the on-disk contract. They are specified in `docs/key-groups.md` and pinned by
//! golden vectors in `tests/keygroup_golden.rs`. Do not change them.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::hash::murmur3_x86_32;
use crate::key_encoding;

/// The smallest default max parallelism.
pub const MIN_DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest allowed max parallelism (number of key groups), also the cap of the default.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 32768;

/// Seed of the key-group hash.
pub const KEY_GROUP_HASH_SEED: u32 = 0;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A key could not be turned into its canonical byte encoding.
#[derive(Debug)]
pub struct KeyEncodingError {
    source: key_encoding::Error,
}

impl KeyEncodingError {
    /// Why the key encoding refused the key.
    pub fn encoding_error(&self) -> &key_encoding::Error {
        &self.source
    }
}

impl fmt::Display for KeyEncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not encode the key to compute its key group: {}. Keys must serialize with \
             serde to Cairn's canonical key encoding (see docs/key-groups.md); use a key \
             type whose Serialize implementation does not fail (for example, no maps with \
             non-serializable entries or sequences of unknown length)",
            self.source
        )
    }
}

impl std::error::Error for KeyEncodingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<key_encoding::Error> for KeyEncodingError {
    fn from(source: key_encoding::Error) -> Self {
        KeyEncodingError { source }
    }
}

/// An invalid combination of parallelism and max parallelism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyGroupError {
    /// The parallelism is 0.
    ZeroParallelism,
    /// The max parallelism is 0 or above [`UPPER_BOUND_MAX_PARALLELISM`].
    MaxParallelismOutOfRange { max_parallelism: u32 },
    /// The parallelism is larger than the max parallelism.
    ParallelismAboveMaxParallelism { parallelism: u32, max_parallelism: u32 },
    /// The max parallelism of a restored job differs from the one its state was written with.
    MaxParallelismChanged { restored: u32, configured: u32 },
}

impl fmt::Display for KeyGroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KeyGroupError::ZeroParallelism => write!(
                f,
                "parallelism is 0: an operator needs at least one parallel subtask. \
                 Set a parallelism of 1 or more"
            ),
            KeyGroupError::MaxParallelismOutOfRange { max_parallelism } => write!(
                f,
                "max parallelism {max_parallelism} is out of range: it must be between 1 and \
                 {UPPER_BOUND_MAX_PARALLELISM}. The max parallelism is the number of key groups \
                 keyed state is split into. Set pipeline.max-parallelism (or \
                 set_max_parallelism) to a value in that range, or leave it unset to get the \
                 default min(max(next_power_of_two(parallelism + parallelism / 2), \
                 {MIN_DEFAULT_MAX_PARALLELISM}), {UPPER_BOUND_MAX_PARALLELISM})"
            ),
            KeyGroupError::ParallelismAboveMaxParallelism {
                parallelism,
                max_parallelism,
            } => {
                write!(
                    f,
                    "parallelism {parallelism} is larger than max parallelism \
                     {max_parallelism}. Keyed state is split into {max_parallelism} key groups \
                     (one per unit of max parallelism) and every subtask needs at least one key \
                     group, so the parallelism can never exceed the max parallelism. Either \
                     lower the parallelism to {max_parallelism} or less, or raise the max \
                     parallelism with pipeline.max-parallelism (or set_max_parallelism, at most \
                     {UPPER_BOUND_MAX_PARALLELISM}) when starting a NEW job. The max parallelism \
                     of a job restored from a savepoint or checkpoint can never change: its \
                     state was written in {max_parallelism} key groups"
                )
            }
            KeyGroupError::MaxParallelismChanged { restored, configured } => write!(
                f,
                "max parallelism changed: the state being restored was written with max \
                 parallelism {restored}, but the job is configured with {configured}. Keyed \
                 state is split into max-parallelism key groups, so this number can never change \
                 for a restored job; restoring anyway would misplace keys. Set \
                 pipeline.max-parallelism (or set_max_parallelism) back to {restored}, or \
                 remove the setting so the restored value is used"
            ),
        }
    }
}

impl std::error::Error for KeyGroupError {}

// ---------------------------------------------------------------------------------------------
// Max parallelism
// ---------------------------------------------------------------------------------------------

/// The default max parallelism for an operator with the given parallelism:
/// `min(max(next_power_of_two(p + p / 2), 128), 32768)` with integer division `p / 2`.
///
/// `next_power_of_two(x)` is the smallest power of two `>= x`.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = u64::from(parallelism);
    let wanted = (p + p / 2).next_power_of_two();
    wanted.clamp(
        u64::from(MIN_DEFAULT_MAX_PARALLELISM),
        u64::from(UPPER_BOUND_MAX_PARALLELISM),
    ) as u32
}

/// Checks that `parallelism` subtasks can share `max_parallelism` key groups.
///
/// Fails when the parallelism is 0, the max parallelism is 0 or above
/// [`UPPER_BOUND_MAX_PARALLELISM`], or the parallelism exceeds the max parallelism.
pub fn check_parallelism(parallelism: u32, max_parallelism: u32) -> Result<(), KeyGroupError> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(KeyGroupError::MaxParallelismOutOfRange { max_parallelism });
    }
    if parallelism == 0 {
        return Err(KeyGroupError::ZeroParallelism);
    }
    if parallelism > max_parallelism {
        return Err(KeyGroupError::ParallelismAboveMaxParallelism {
            parallelism,
            max_parallelism,
        });
    }
    Ok(())
}

/// Checks that a restored job keeps the max parallelism its state was written with.
///
/// Changing the max parallelism would change every key's key group, so it is refused.
pub fn check_max_parallelism_unchanged(restored: u32, configured: u32) -> Result<(), KeyGroupError> {
    if restored != configured {
        return Err(KeyGroupError::MaxParallelismChanged { restored, configured });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Keys to key groups to subtasks
// ---------------------------------------------------------------------------------------------

/// Writes the canonical encoding of `key` into `buf` (cleared first).
///
/// The canonical encoding is [`key_encoding`] (the bytes of bincode 1.x's default encoding):
/// fixed-width little-endian integers, `u64` little-endian length prefixes for strings,
/// byte arrays and sequences, `u32` variant indices for enums, tuples and structs as the
/// concatenation of their fields.
pub fn key_bytes<K: Serialize + ?Sized>(key: &K, buf: &mut Vec<u8>) -> Result<(), KeyEncodingError> {
    buf.clear();
    key_encoding::encode_into(key, buf)?;
    Ok(())
}

/// The key group of an already encoded key: `murmur3_x86_32(key_bytes, 0) % max_parallelism`.
///
/// # Panics
///
/// If `max_parallelism` is 0. Validate configurations with [`check_parallelism`] first.
#[inline]
pub fn key_group_for_bytes(key_bytes: &[u8], max_parallelism: u32) -> u32 {
    key_group_hash(key_bytes) % max_parallelism
}

/// The hash [`key_group_for_bytes`] takes the remainder of, for callers that
/// also use the hash itself (a reader's duplicate-key check).
#[inline]
pub fn key_group_hash(key_bytes: &[u8]) -> u32 {
    murmur3_x86_32(key_bytes, KEY_GROUP_HASH_SEED)
}

/// The key group of `key`: encodes it with [`key_bytes`] and calls [`key_group_for_bytes`].
///
/// # Panics
///
/// If `max_parallelism` is 0. Validate configurations with [`check_parallelism`] first.
pub fn key_group_for_key<K: Serialize + ?Sized>(key: &K, max_parallelism: u32) -> Result<u32, KeyEncodingError> {
    let mut buf = Vec::new();
    key_bytes(key, &mut buf)?;
    Ok(key_group_for_bytes(&buf, max_parallelism))
}

/// The subtask (operator index) that owns `key_group`: `key_group * parallelism /
/// max_parallelism`, computed in 64 bits and rounded down.
///
/// # Panics
///
/// If `max_parallelism` is 0. Validate configurations with [`check_parallelism`] first.
#[inline]
pub fn subtask_for_key_group(max_parallelism: u32, parallelism: u32, key_group: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// `2^64 / divisor` rounded up, for [`remainder`] (0 for a divisor of 1).
fn reciprocal(divisor: u32) -> u64 {
    (u64::MAX / u64::from(divisor)).wrapping_add(1)
}

/// `value % divisor` by two multiplications, exact for every 32-bit value and
/// divisor (Lemire, Kaser and Kurz, "Faster remainder by direct computation").
#[inline]
fn remainder(value: u32, divisor: u32, reciprocal: u64) -> u32 {
    let low = reciprocal.wrapping_mul(u64::from(value));
    ((u128::from(low) * u128::from(divisor)) >> 64) as u32
}

/// [`key_group_for_bytes`] and [`subtask_for_key_group`] for one edge, with the
/// divisions done once: a sender routes every record of a `key_by`, and two
/// integer divisions per record were a tenth of its work. Same results as
/// those functions for every key.
#[derive(Clone, Debug)]
pub struct KeyGroupRouter {
    max_parallelism: u32,
    /// `2^64 / max_parallelism`, rounded up (0 when it is 1): the remainder
    /// of a 32-bit hash then takes two multiplications (Lemire's fastmod).
    reciprocal: u64,
    subtask_of_group: Vec<u32>,
}

impl KeyGroupRouter {
    /// # Panics
    ///
    /// If `max_parallelism` is 0. Validate configurations with [`check_parallelism`] first.
    pub fn new(max_parallelism: u32, parallelism: u32) -> Self {
        assert!(max_parallelism > 0, "max parallelism 0");
        KeyGroupRouter {
            max_parallelism,
            reciprocal: reciprocal(max_parallelism),
            subtask_of_group: (0..max_parallelism)
                .map(|kg| subtask_for_key_group(max_parallelism, parallelism, kg))
                .collect(),
        }
    }

    /// The key group of an encoded key.
    #[inline]
    pub fn key_group(&self, key_bytes: &[u8]) -> u32 {
        remainder(
            murmur3_x86_32(key_bytes, KEY_GROUP_HASH_SEED),
            self.max_parallelism,
            self.reciprocal,
        )
    }

    /// The subtask that owns `key_group` (below the max parallelism).
    #[inline]
    pub fn subtask(&self, key_group: u32) -> usize {
        self.subtask_of_group[key_group as usize] as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Key-group ranges
// ---------------------------------------------------------------------------------------------

/// A contiguous, half-open range of key groups `[start, end_exclusive)`.
///
/// A range with `end_exclusive <= start` is empty; test with [`KeyGroupRange::is_empty`]
/// rather than comparing with [`KeyGroupRange::EMPTY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end_exclusive: u32,
}

impl KeyGroupRange {
    /// The canonical empty range.
    pub const EMPTY: KeyGroupRange = KeyGroupRange {
        start: 0,
        end_exclusive: 0,
    };

    /// The range `[start, end_exclusive)`.
    pub const fn new(start: u32, end_exclusive: u32) -> Self {
        KeyGroupRange { start, end_exclusive }
    }

    /// All key groups of a job: `[0, max_parallelism)`.
    pub const fn all(max_parallelism: u32) -> Self {
        KeyGroupRange {
            start: 0,
            end_exclusive: max_parallelism,
        }
    }

    /// The key groups owned by `subtask` out of `parallelism` subtasks:
    /// `[ceil(subtask * max_parallelism / parallelism),
    ///   ceil((subtask + 1) * max_parallelism / parallelism))`, computed in 64 bits.
    ///
    /// Exactly the key groups `g` with `subtask_for_key_group(max_parallelism, parallelism, g)
    /// == subtask`. For a valid configuration (see [`check_parallelism`]) every subtask gets a
    /// non-empty range and the ranges of subtasks `0..parallelism` partition
    /// `[0, max_parallelism)`. Invalid input never panics: `parallelism == 0` or
    /// `subtask >= parallelism` gives [`KeyGroupRange::EMPTY`].
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, subtask: u32) -> Self {
        if parallelism == 0 || subtask >= parallelism {
            return KeyGroupRange::EMPTY;
        }
        let m = u64::from(max_parallelism);
        let p = u64::from(parallelism);
        let i = u64::from(subtask);
        let start = (i * m).div_ceil(p);
        let end = ((i + 1) * m).div_ceil(p);
        KeyGroupRange {
            start: start as u32,
            end_exclusive: end as u32,
        }
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> u32 {
        self.end_exclusive.saturating_sub(self.start)
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.end_exclusive <= self.start
    }

    /// Whether `key_group` is in the range.
    pub fn contains(&self, key_group: u32) -> bool {
        self.start <= key_group && key_group < self.end_exclusive
    }

    /// The key groups of the range, in ascending order.
    pub fn iter(&self) -> Range<u32> {
        self.start..self.end_exclusive.max(self.start)
    }

    /// The key groups in both ranges; [`KeyGroupRange::EMPTY`] when they do not overlap.
    ///
    /// On rescaling, the state a new subtask must read from an old subtask's snapshot is the
    /// intersection of their two ranges.
    pub fn intersect(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end = self.end_exclusive.min(other.end_exclusive);
        if start < end {
            KeyGroupRange {
                start,
                end_exclusive: end,
            }
        } else {
            KeyGroupRange::EMPTY
        }
    }
}

impl IntoIterator for KeyGroupRange {
    type Item = u32;
    type IntoIter = Range<u32>;
    fn into_iter(self) -> Range<u32> {
        self.iter()
    }
}

impl IntoIterator for &KeyGroupRange {
    type Item = u32;
    type IntoIter = Range<u32>;
    fn into_iter(self) -> Range<u32> {
        self.iter()
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key groups [{}, {})", self.start, self.end_exclusive)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_router_gives_the_key_group_and_subtask_of_the_plain_functions() {
        let mut keys: Vec<Vec<u8>> = (0u32..2_000).map(|i| i.to_le_bytes().to_vec()).collect();
        keys.extend([vec![], vec![0xff; 3], vec![0x80; 17], b"a longer key of text".to_vec()]);
        for (max, parallelism) in [
            (1, 1),
            (2, 1),
            (3, 2),
            (7, 7),
            (128, 2),
            (128, 3),
            (1000, 700),
            (4096, 5),
            (32768, 999),
            (32767, 1),
        ] {
            let router = KeyGroupRouter::new(max, parallelism);
            for key in &keys {
                let kg = key_group_for_bytes(key, max);
                assert_eq!(router.key_group(key), kg, "max parallelism {max}, key {key:?}");
                assert_eq!(router.subtask(kg) as u32, subtask_for_key_group(max, parallelism, kg));
            }
        }
        // The remainder itself, at the hashes' extremes, for every max parallelism.
        for max in 1..=UPPER_BOUND_MAX_PARALLELISM {
            let r = reciprocal(max);
            for hash in [
                0u32,
                1,
                max - 1,
                max,
                max + 1,
                u32::MAX / 2,
                u32::MAX - max,
                u32::MAX - 1,
                u32::MAX,
            ] {
                assert_eq!(remainder(hash, max, r), hash % max, "hash {hash} mod {max}");
            }
        }
    }
    use super::*;

    #[test]
    fn default_max_parallelism_bounds() {
        assert_eq!(default_max_parallelism(0), 128);
        assert_eq!(default_max_parallelism(1), 128);
        assert_eq!(default_max_parallelism(85), 128);
        assert_eq!(default_max_parallelism(86), 256);
        assert_eq!(default_max_parallelism(u32::MAX), UPPER_BOUND_MAX_PARALLELISM);
    }

    #[test]
    fn key_bytes_layout() {
        let mut buf = vec![9, 9, 9];
        key_bytes(&7u64, &mut buf).unwrap();
        assert_eq!(buf, 7u64.to_le_bytes());
        key_bytes("ab", &mut buf).unwrap();
        assert_eq!(buf, [2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
        key_bytes(&(1u32, String::from("x")), &mut buf).unwrap();
        assert_eq!(buf, [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'x']);
        key_bytes(&-1i32, &mut buf).unwrap();
        assert_eq!(buf, [0xff; 4]);
    }

    #[test]
    fn str_and_string_keys_agree() {
        let a = key_group_for_key("user-42", 128).unwrap();
        let b = key_group_for_key(&String::from("user-42"), 128).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn range_operations() {
        let r = KeyGroupRange::new(10, 20);
        assert_eq!(r.len(), 10);
        assert!(!r.is_empty());
        assert!(r.contains(10) && r.contains(19) && !r.contains(20) && !r.contains(9));
        assert_eq!(r.iter().collect::<Vec<_>>(), (10..20).collect::<Vec<_>>());
        assert_eq!(r.intersect(&KeyGroupRange::new(15, 30)), KeyGroupRange::new(15, 20));
        assert_eq!(r.intersect(&KeyGroupRange::new(20, 30)), KeyGroupRange::EMPTY);
        assert!(r.intersect(&KeyGroupRange::new(0, 5)).is_empty());
        let backwards = KeyGroupRange::new(5, 3);
        assert!(backwards.is_empty());
        assert_eq!(backwards.len(), 0);
        assert_eq!(backwards.iter().count(), 0);
        assert_eq!(KeyGroupRange::all(128), KeyGroupRange::new(0, 128));
    }

    #[test]
    fn for_subtask_invalid_input_is_empty() {
        assert_eq!(KeyGroupRange::for_subtask(128, 0, 0), KeyGroupRange::EMPTY);
        assert_eq!(KeyGroupRange::for_subtask(128, 4, 4), KeyGroupRange::EMPTY);
    }

    #[test]
    fn for_subtask_large_values_do_not_overflow() {
        let m = UPPER_BOUND_MAX_PARALLELISM;
        let last = KeyGroupRange::for_subtask(m, m, m - 1);
        assert_eq!(last, KeyGroupRange::new(m - 1, m));
        assert_eq!(subtask_for_key_group(m, m, m - 1), m - 1);
    }

    #[test]
    fn rescaling_moves_whole_key_groups() {
        // Each key group's data goes from exactly one old subtask to exactly one new subtask.
        let m = 128;
        for (old_p, new_p) in [(3, 5), (5, 3), (1, 128), (128, 1), (7, 7)] {
            for kg in 0..m {
                let old = subtask_for_key_group(m, old_p, kg);
                let new = subtask_for_key_group(m, new_p, kg);
                let overlap =
                    KeyGroupRange::for_subtask(m, old_p, old).intersect(&KeyGroupRange::for_subtask(m, new_p, new));
                assert!(overlap.contains(kg));
            }
        }
    }

    #[test]
    fn errors_are_clear() {
        let e = check_parallelism(200, 128).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("200") && msg.contains("128"));
        assert!(msg.contains("key group"));
        assert!(msg.contains("pipeline.max-parallelism"));
        assert!(msg.contains("savepoint"));
        let e = check_max_parallelism_unchanged(128, 256).unwrap_err();
        assert!(e.to_string().contains("128") && e.to_string().contains("256"));
        assert!(check_max_parallelism_unchanged(128, 128).is_ok());
    }
}
