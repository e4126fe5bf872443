//! One page of the heap backend's paged map ([`crate::paged`]): an
//! open-addressing hash table whose slots hold key and value inline, with
//! linear probing and backward-shift deletion (no tombstones).
//!
//! Why not std's `HashMap`: its buckets lie behind an array of control
//! bytes, so finding a key takes two dependent cache misses (the control
//! group, then the bucket its match points to), and nothing can fetch the
//! bucket before the control bytes arrive. Here a key's first slot follows
//! from its hash alone: [`PageTable::touch`] prefetches it (and the next
//! slots a probe reads) for the keys of a whole chunk of records before any
//! of them is looked up, so their misses overlap; most keys are found in
//! that slot (the table is at most 3/4 full).
//!
//! The caller hashes each key once ([`key_hash`], carried by [`HashedKey`])
//! and passes the hash with the key to every operation.

use crate::heap::SmallBytes;

/// The hash of a key's bytes every paged-map operation is given. Bits 32 and
/// up choose the page; the slot comes from a second mix of all bits.
#[inline]
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    crate::table_hash::hash_bytes(key)
}

/// A key's bytes with their [`key_hash`], computed once and given to every
/// operation on the key (a record's value and update of two states hash it
/// once, not four times).
#[derive(Clone, Copy, Debug)]
pub struct HashedKey<'a> {
    bytes: &'a [u8],
    hash: u64,
}

impl<'a> HashedKey<'a> {
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        HashedKey {
            bytes,
            hash: key_hash(bytes),
        }
    }

    /// `bytes` with the hash [`key_hash`] gave for them earlier.
    #[inline]
    pub(crate) fn with_hash(bytes: &'a [u8], hash: u64) -> Self {
        debug_assert_eq!(hash, key_hash(bytes), "a key's cached hash is stale");
        HashedKey { bytes, hash }
    }

    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// Spreads every bit of a key hash into the bits the slot index is taken
/// from (a multiplicative hash by an odd constant near 2^64 / phi).
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;
/// Slots [`PageTable::touch`] fetches from a key's home slot on: a probe
/// at most 3/4 full reads 1.5-2.5 slots on average to find a key.
const PROBE_PREFETCH: usize = 3;
/// The smallest table that holds anything.
const MIN_SLOTS: usize = 8;

type Entry<V> = (SmallBytes, V);

/// An open-addressing table from key bytes to `V`.
#[derive(Clone, Debug)]
pub(crate) struct PageTable<V> {
    /// Empty, or a power-of-two number of slots at most 3/4 full.
    slots: Box<[Option<Entry<V>>]>,
    len: usize,
}

impl<V> Default for PageTable<V> {
    fn default() -> Self {
        PageTable {
            slots: Box::new([]),
            len: 0,
        }
    }
}

/// How many slots hold `entries` at most 3/4 full.
fn slots_for(entries: usize) -> usize {
    if entries == 0 {
        return 0;
    }
    (entries * 4).div_ceil(3).next_power_of_two().max(MIN_SLOTS)
}

impl<V> PageTable<V> {
    /// A table that takes `entries` keys without growing.
    pub fn with_capacity(entries: usize) -> Self {
        PageTable {
            slots: empty_slots(slots_for(entries)),
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The slot a key of hash `hash` is looked for first.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash.wrapping_mul(SPREAD) >> 32) as usize & (self.slots.len() - 1)
    }

    /// Start loading the first slots of `hash` into the cache (its home slot
    /// and the next ones a probe reads) with a prefetch instruction, which
    /// retires at once: a batch's misses overlap instead of each load
    /// holding the processor's reorder buffer until its line arrives.
    #[inline]
    pub fn touch(&self, hash: u64) {
        if !self.slots.is_empty() {
            let home = self.home(hash);
            let end = (home + PROBE_PREFETCH).min(self.slots.len());
            cairn_prefetch::prefetch_read(&self.slots[home..end]);
        }
    }

    /// The slot holding `key`, if any.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            match &self.slots[i] {
                None => return None,
                Some((k, _)) if k.matches(key) => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// The value of `key` and the index of its slot, a hint for
    /// [`PageTable::get_mut_at`].
    #[inline]
    pub fn get_indexed(&self, hash: u64, key: &[u8]) -> Option<(&V, usize)> {
        let i = self.find(hash, key)?;
        self.slots[i].as_ref().map(|(_, v)| (v, i))
    }

    /// The value in slot `i` when that slot holds `key` (no probe): a read
    /// gave `i`, and the table may have changed since, so the key is checked.
    #[inline]
    pub fn get_mut_at(&mut self, i: usize, key: &[u8]) -> Option<&mut V> {
        match self.slots.get_mut(i) {
            Some(Some((k, v))) if k.matches(key) => Some(v),
            _ => None,
        }
    }

    #[inline]
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&V> {
        let i = self.find(hash, key)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    #[inline]
    pub fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.find(hash, key).is_some()
    }

    #[inline]
    pub fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut V> {
        let i = self.find(hash, key)?;
        self.slots[i].as_mut().map(|(_, v)| v)
    }

    /// The value of `key` for writing, inserting `make()` first when absent;
    /// true when it was inserted.
    #[inline]
    pub fn get_or_insert_with(&mut self, hash: u64, key: &[u8], make: impl FnOnce() -> V) -> (&mut V, bool) {
        let (i, inserted) = match self.find(hash, key) {
            Some(i) => (i, false),
            None => (self.insert_new(hash, SmallBytes::from_slice(key), make()), true),
        };
        match &mut self.slots[i] {
            Some((_, v)) => (v, inserted),
            None => unreachable!("slot {i} was just found or filled"),
        }
    }

    /// Set `key` to `value`; true when the key is new.
    #[inline]
    pub fn insert(&mut self, hash: u64, key: &[u8], value: V) -> bool {
        match self.find(hash, key) {
            Some(i) => {
                if let Some((_, v)) = &mut self.slots[i] {
                    *v = value;
                }
                false
            }
            None => {
                self.insert_new(hash, SmallBytes::from_slice(key), value);
                true
            }
        }
    }

    /// Put a key known to be absent into its first free slot; its index.
    #[inline]
    pub fn insert_new(&mut self, hash: u64, key: SmallBytes, value: V) -> usize {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize(slots_for(self.len + 1).max(self.slots.len() * 2));
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some((key, value));
        self.len += 1;
        i
    }

    /// Remove `key`. The entries after it in its run move back so that
    /// every key stays reachable from its first slot without a gap.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        let mut hole = self.find(hash, key)?;
        let (_, removed) = self.slots[hole].take()?;
        self.len -= 1;
        let mask = self.slots.len() - 1;
        let mut i = (hole + 1) & mask;
        while let Some((k, _)) = &self.slots[i] {
            let home = self.home(key_hash(k));
            // The entry at `i` may fill the hole when its first slot is not
            // cyclically within (hole, i]: it was pushed past the hole.
            let distance_to_home = i.wrapping_sub(home) & mask;
            let distance_to_hole = i.wrapping_sub(hole) & mask;
            if distance_to_home >= distance_to_hole {
                self.slots[hole] = self.slots[i].take();
                hole = i;
            }
            i = (i + 1) & mask;
        }
        Some(removed)
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&SmallBytes, &V)> {
        self.slots.iter().filter_map(|s| s.as_ref().map(|(k, v)| (k, v)))
    }

    /// Every entry, by value.
    pub fn into_entries(self) -> impl Iterator<Item = Entry<V>> {
        self.slots.into_vec().into_iter().flatten()
    }

    /// The longest distance of an entry from its first slot (for tests).
    #[cfg(test)]
    pub fn longest_probe(&self) -> usize {
        let mask = self.slots.len().wrapping_sub(1);
        (0..self.slots.len())
            .filter_map(|i| {
                self.slots[i]
                    .as_ref()
                    .map(|(k, _)| i.wrapping_sub(self.home(key_hash(k))) & mask)
            })
            .max()
            .unwrap_or(0)
    }

    /// Make room for `additional` more keys at once.
    pub fn reserve(&mut self, additional: usize) {
        let want = slots_for(self.len + additional);
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, empty_slots(slots));
        let mask = slots - 1;
        for (k, v) in old.into_vec().into_iter().flatten() {
            let mut i = self.home(key_hash(&k));
            while self.slots[i].is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i] = Some((k, v));
        }
    }
}

fn empty_slots<V>(n: usize) -> Box<[Option<Entry<V>>]> {
    std::iter::repeat_with(|| None).take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key(i: u32) -> Vec<u8> {
        // Short keys (inline) and long ones (on the heap) mixed.
        if i % 5 == 0 {
            format!("a-longer-key-that-does-not-fit-inline-{i}").into_bytes()
        } else {
            i.to_be_bytes().to_vec()
        }
    }

    /// Random inserts, updates, removes and lookups against std's HashMap,
    /// in a small key space so that runs, wrap-around and backward shifts
    /// happen often.
    #[test]
    fn behaves_as_a_hash_map_under_random_operations() {
        let mut table = PageTable::<u64>::default();
        let mut oracle = HashMap::<Vec<u8>, u64>::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % 300) as u32);
            let h = key_hash(&k);
            match (x >> 40) % 4 {
                0 | 1 => assert_eq!(table.insert(h, &k, step), oracle.insert(k, step).is_none()),
                2 => assert_eq!(table.remove(h, &k), oracle.remove(&k), "step {step}"),
                _ => {
                    let absent = !oracle.contains_key(&k);
                    let (v, inserted) = table.get_or_insert_with(h, &k, || step);
                    assert_eq!(inserted, absent);
                    *v += 1;
                    let o = oracle.entry(k).or_insert(step);
                    *o += 1;
                }
            }
            assert_eq!(table.len(), oracle.len());
            if step % 997 == 0 {
                for i in 0..300 {
                    let k = key(i);
                    assert_eq!(table.get(key_hash(&k), &k), oracle.get(&k), "step {step} key {i}");
                }
                let mut seen: Vec<_> = table.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
                let mut want: Vec<_> = oracle.iter().map(|(k, v)| (k.clone(), *v)).collect();
                seen.sort();
                want.sort();
                assert_eq!(seen, want);
            }
        }
    }

    #[test]
    fn stays_at_most_three_quarters_full_and_reserve_avoids_growth() {
        let mut t = PageTable::<u32>::with_capacity(1000);
        let slots = t.slots.len();
        assert!(slots * 3 >= 1000 * 4 && slots.is_power_of_two());
        for i in 0..1000 {
            let k = key(i);
            t.insert(key_hash(&k), &k, i);
        }
        assert_eq!(t.slots.len(), slots, "reserved room is used without growing");
        t.reserve(5000);
        assert!(t.slots.len() * 3 >= 6000 * 4);
        for i in 0..1000 {
            let k = key(i);
            assert_eq!(t.get(key_hash(&k), &k), Some(&i));
        }
        let entries: usize = t.into_entries().count();
        assert_eq!(entries, 1000);
    }

    #[test]
    fn an_empty_table_answers_without_allocating() {
        let t = PageTable::<u8>::default();
        let k = key(1);
        t.touch(key_hash(&k));
        assert!(t.get(key_hash(&k), &k).is_none());
        assert!(!t.contains(key_hash(&k), &k));
        assert_eq!(t.iter().count(), 0);
    }
}
