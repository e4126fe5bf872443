//! Cairn's write cache: recently used rows of value and list states, kept in
//! memory in front of RocksDB and written to it in one batch when the cache
//! is full and at every snapshot (Kafka Streams' record cache is the model).
//!
//! A hot key then costs a hash lookup instead of a memtable search and a
//! write per record, and a checkpoint writes each changed key once. The
//! cache holds at most its configured bytes (part of the managed memory
//! budget), so state beyond it lives in RocksDB as before.
//!
//! Map states are not cached (a key's map is a prefix scan in RocksDB), and a
//! state that is scanned in order (timers) stops being cached: its rows go to
//! RocksDB directly so scans see them.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use cairn_state::heap::small_bytes::SmallBytes;
use cairn_state::table_hash::TableHasher;

/// Rows and values of up to 22 bytes live inline in the table's buckets (as
/// in the heap backend), so a lookup of a hot key touches one cache line.
/// The seeded table hash mixes every byte into the low bits the table
/// indexes by (rows end with the key's last bytes, which a multiply-and-
/// rotate hash left in the high bits only: rows collided).
type Map = HashMap<SmallBytes, Slot, BuildHasherDefault<TableHasher>>;

/// Bytes charged per entry beyond its key and value (bucket, boxes).
const ENTRY_OVERHEAD: usize = 64;

/// What the cache knows about one row.
#[derive(Debug)]
pub(crate) enum Cached {
    /// The row's whole value.
    Value(SmallBytes),
    /// The row has no value.
    Absent,
    /// Bytes to append to whatever RocksDB holds (list state adds without
    /// a read); merged into RocksDB on write-out.
    Appends(SmallBytes),
}

#[derive(Debug)]
struct Slot {
    value: Cached,
    /// Differs from RocksDB.
    dirty: bool,
    /// Used since the last eviction (second chance).
    referenced: bool,
}

impl Slot {
    fn bytes(&self, key_len: usize) -> usize {
        let v = match &self.value {
            Cached::Value(v) | Cached::Appends(v) => v.len(),
            Cached::Absent => 0,
        };
        key_len + v + ENTRY_OVERHEAD
    }
}

/// A change to write to RocksDB.
pub(crate) enum WriteOut<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    Merge(&'a [u8], &'a [u8]),
}

/// The cache of one backend instance, one map per state.
pub(crate) struct WriteCache {
    states: Vec<Option<Map>>,
    bytes: usize,
    limit: usize,
    /// Bytes of rows that became dirty since the last write-out (about).
    dirty_bytes: usize,
}

impl WriteCache {
    /// A cache of at most `limit` bytes (0: nothing is cached).
    pub fn new(limit: u64) -> Self {
        WriteCache {
            states: Vec::new(),
            bytes: 0,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            dirty_bytes: 0,
        }
    }

    /// Whether anything is cached at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// A new state `state` is cached (`cached`) or not.
    pub fn register(&mut self, state: usize, cached: bool) {
        if self.states.len() <= state {
            self.states.resize_with(state + 1, || None);
        }
        self.states[state] = (cached && self.enabled()).then(Map::default);
    }

    /// Whether rows of `state` go through the cache.
    #[inline]
    pub fn caches(&self, state: usize) -> bool {
        matches!(self.states.get(state), Some(Some(_)))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the cache is over its limit (the caller then evicts).
    #[inline]
    pub fn over_limit(&self) -> bool {
        self.bytes > self.limit
    }

    /// Whether a quarter of the cache is dirty: the caller writes it out
    /// (keeping the rows), so a snapshot's synchronous part never has more
    /// than that to write. Hot keys rewritten again and again stay one dirty
    /// row each and are written once per snapshot.
    #[inline]
    pub fn dirty_over_limit(&self) -> bool {
        self.dirty_bytes > self.limit / 4
    }

    /// What the cache knows about `row`, marking it used.
    #[inline]
    pub fn get(&mut self, state: usize, row: &[u8]) -> Option<&Cached> {
        let map = self.states[state].as_mut()?;
        let slot = map.get_mut(row)?;
        slot.referenced = true;
        Some(&slot.value)
    }

    /// Set `row` to `value` (dirty), reusing the cached buffer.
    #[inline]
    pub fn put(&mut self, state: usize, row: &[u8], value: &[u8]) {
        let Some(map) = self.states[state].as_mut() else {
            return;
        };
        if let Some(slot) = map.get_mut(row) {
            let before = slot.bytes(row.len());
            match &mut slot.value {
                Cached::Value(v) => v.set(value),
                other => *other = Cached::Value(SmallBytes::from_slice(value)),
            }
            if !slot.dirty {
                self.dirty_bytes += slot.bytes(row.len());
            }
            slot.dirty = true;
            slot.referenced = true;
            self.bytes = self.bytes + slot.bytes(row.len()) - before;
            return;
        }
        self.set(state, row, Cached::Value(SmallBytes::from_slice(value)), true);
    }

    /// Record `value` for `row`; `dirty` when RocksDB does not have it yet.
    pub fn set(&mut self, state: usize, row: &[u8], value: Cached, dirty: bool) {
        let Some(map) = self.states[state].as_mut() else {
            return;
        };
        let slot = Slot {
            value,
            dirty,
            referenced: true,
        };
        let add = slot.bytes(row.len());
        match map.get_mut(row) {
            Some(old) => {
                if dirty && !old.dirty {
                    self.dirty_bytes += add;
                }
                let dirty = dirty || old.dirty;
                self.bytes = self.bytes + add - old.bytes(row.len());
                *old = Slot { dirty, ..slot };
            }
            None => {
                self.bytes += add;
                if dirty {
                    self.dirty_bytes += add;
                }
                map.insert(SmallBytes::from_slice(row), slot);
            }
        }
    }

    /// Append `bytes` to the cached value of `row`: true when the cache
    /// took it (the row was cached or is now an `Appends` entry).
    pub fn append(&mut self, state: usize, row: &[u8], bytes: &[u8]) -> bool {
        let Some(map) = self.states[state].as_mut() else {
            return false;
        };
        match map.get_mut(row) {
            Some(slot) => {
                let before = slot.bytes(row.len());
                match &mut slot.value {
                    Cached::Value(v) | Cached::Appends(v) => v.extend_from_slice(bytes),
                    Cached::Absent => slot.value = Cached::Value(SmallBytes::from_slice(bytes)),
                }
                self.dirty_bytes += if slot.dirty { bytes.len() } else { slot.bytes(row.len()) };
                slot.dirty = true;
                slot.referenced = true;
                self.bytes = self.bytes + slot.bytes(row.len()) - before;
            }
            None => {
                let slot = Slot {
                    value: Cached::Appends(SmallBytes::from_slice(bytes)),
                    dirty: true,
                    referenced: true,
                };
                self.bytes += slot.bytes(row.len());
                self.dirty_bytes += slot.bytes(row.len());
                map.insert(SmallBytes::from_slice(row), slot);
            }
        }
        true
    }

    /// Hand every dirty row (of `only` state, or of all) to `write`, in row
    /// order per state (RocksDB inserts sorted rows into its memtable much
    /// faster); they are clean afterwards (`Appends` entries are dropped:
    /// the cache no longer knows the whole value).
    pub fn write_out(&mut self, only: Option<usize>, write: &mut dyn FnMut(usize, WriteOut<'_>)) {
        if only.is_none() {
            self.dirty_bytes = 0;
        }
        for (state, map) in self.states.iter_mut().enumerate() {
            if only.is_some_and(|o| o != state) {
                continue;
            }
            let Some(map) = map.as_mut() else { continue };
            let mut dirty: Vec<(&SmallBytes, &mut Slot)> = map.iter_mut().filter(|(_, s)| s.dirty).collect();
            if dirty.is_empty() {
                continue;
            }
            dirty.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut appended = false;
            for (row, slot) in dirty {
                slot.dirty = false;
                match &slot.value {
                    Cached::Value(v) => write(state, WriteOut::Put(row, v)),
                    Cached::Absent => write(state, WriteOut::Delete(row)),
                    Cached::Appends(a) => {
                        write(state, WriteOut::Merge(row, a));
                        appended = true;
                    }
                }
            }
            if appended {
                let mut freed = 0;
                map.retain(|row, slot| {
                    let keep = !matches!(slot.value, Cached::Appends(_));
                    if !keep {
                        freed += slot.bytes(row.len());
                    }
                    keep
                });
                self.bytes -= freed;
            }
        }
    }

    /// After [`WriteCache::write_out`]: keep rows used since the last
    /// eviction (forgetting that they were), drop the others; if the kept
    /// rows still fill more than half the cache, drop everything.
    pub fn evict_clean(&mut self) {
        let mut kept = 0;
        for map in self.states.iter_mut().flatten() {
            map.retain(|row, slot| {
                debug_assert!(!slot.dirty, "evicting a dirty row");
                let keep = slot.referenced;
                slot.referenced = false;
                if keep {
                    kept += slot.bytes(row.len());
                }
                keep
            });
        }
        self.bytes = kept;
        if kept > self.limit / 2 {
            for map in self.states.iter_mut().flatten() {
                map.clear();
                map.shrink_to(map.len());
            }
            self.bytes = 0;
        }
    }

    /// Stop caching `state` (its dirty rows must have been written out).
    pub fn stop_caching(&mut self, state: usize) {
        if let Some(slot) = self.states.get_mut(state) {
            if let Some(map) = slot.take() {
                let freed: usize = map.iter().map(|(k, s)| s.bytes(k.len())).sum();
                self.bytes -= freed;
            }
        }
    }

    /// Forget every cached row of `state` (after a restore wrote RocksDB directly).
    pub fn invalidate(&mut self, state: usize) {
        if let Some(Some(map)) = self.states.get_mut(state) {
            let freed: usize = map.iter().map(|(k, s)| s.bytes(k.len())).sum();
            map.clear();
            self.bytes -= freed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut WriteCache) -> Vec<String> {
        let mut out = Vec::new();
        c.write_out(None, &mut |s, w| {
            out.push(match w {
                WriteOut::Put(k, v) => format!("{s} put {k:?}={v:?}"),
                WriteOut::Delete(k) => format!("{s} del {k:?}"),
                WriteOut::Merge(k, v) => format!("{s} merge {k:?}+{v:?}"),
            })
        });
        out.sort();
        out
    }

    #[test]
    fn dirty_rows_are_written_once_and_appends_merge() {
        let mut c = WriteCache::new(1 << 20);
        c.register(0, true);
        c.register(1, true);
        c.set(0, b"a", Cached::Value(b"1"[..].into()), true);
        c.set(0, b"a", Cached::Value(b"2"[..].into()), true);
        c.set(0, b"clean", Cached::Value(b"x"[..].into()), false);
        c.set(0, b"gone", Cached::Absent, true);
        assert!(c.append(1, b"l", b"ab"));
        assert!(c.append(1, b"l", b"cd"));
        assert_eq!(
            drain(&mut c),
            vec![
                "0 del [103, 111, 110, 101]",
                "0 put [97]=[50]",
                "1 merge [108]+[97, 98, 99, 100]"
            ]
        );
        assert!(drain(&mut c).is_empty(), "clean after writing out");
        assert!(c.get(1, b"l").is_none(), "an append-only row is forgotten once merged");
        assert!(matches!(c.get(0, b"a"), Some(Cached::Value(v)) if v.as_slice() == b"2"));
    }

    #[test]
    fn appends_to_known_values_stay_whole() {
        let mut c = WriteCache::new(1 << 20);
        c.register(0, true);
        c.set(0, b"k", Cached::Absent, false);
        c.append(0, b"k", b"x");
        c.append(0, b"k", b"y");
        assert!(matches!(c.get(0, b"k"), Some(Cached::Value(v)) if v.as_slice() == b"xy"));
        assert_eq!(drain(&mut c), vec!["0 put [107]=[120, 121]"]);
    }

    #[test]
    fn eviction_keeps_recently_used_rows_and_accounts_bytes() {
        let mut c = WriteCache::new(10_000);
        c.register(0, true);
        for i in 0..200u32 {
            c.set(0, &i.to_be_bytes(), Cached::Value(vec![0; 16].as_slice().into()), true);
        }
        assert!(c.over_limit());
        let mut written = 0;
        c.write_out(None, &mut |_, _| written += 1);
        assert_eq!(written, 200);
        c.evict_clean();
        assert_eq!(
            c.bytes(),
            0,
            "every row was used since the last eviction and they fill the cache: all go"
        );
        c.set(0, b"hot", Cached::Value(b"\x01"[..].into()), false);
        c.set(0, b"cold", Cached::Value(b"\x01"[..].into()), false);
        c.evict_clean(); // both lose their mark
        c.get(0, b"hot");
        c.evict_clean();
        assert!(c.get(0, b"hot").is_some());
        assert!(c.get(0, b"cold").is_none());
        let expected = 3 + 1 + ENTRY_OVERHEAD;
        assert!(c.bytes() >= expected, "{}", c.bytes());
        c.invalidate(0);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn rewriting_a_dirty_row_does_not_count_again_but_new_dirty_rows_do() {
        let mut c = WriteCache::new(4 * 1000);
        c.register(0, true);
        for _ in 0..1000 {
            c.put(0, b"hot", b"v");
        }
        assert!(!c.dirty_over_limit(), "one hot row is one dirty row");
        for i in 0..20u32 {
            c.put(0, &i.to_be_bytes(), b"v");
        }
        assert!(
            c.dirty_over_limit(),
            "twenty new dirty rows exceed a quarter of 4000 bytes"
        );
        c.write_out(None, &mut |_, _| {});
        assert!(!c.dirty_over_limit());
        c.put(0, b"hot", b"w");
        assert!(!c.dirty_over_limit());
    }

    #[test]
    fn uncached_and_disabled_states_take_nothing() {
        let mut c = WriteCache::new(0);
        c.register(0, true);
        assert!(!c.caches(0));
        assert!(!c.append(0, b"k", b"v"));
        let mut c = WriteCache::new(100);
        c.register(0, false);
        c.register(1, true);
        assert!(!c.caches(0) && c.caches(1));
        c.set(1, b"k", Cached::Value(b"\x01"[..].into()), true);
        let mut n = 0;
        c.write_out(Some(1), &mut |_, _| n += 1);
        c.stop_caching(1);
        assert_eq!(c.bytes(), 0);
        assert!(!c.caches(1));
        assert_eq!(n, 1);
    }
}
