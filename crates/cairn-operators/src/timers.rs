//! Per-key timers in event time and processing time. Timers are de-duplicated
//! per (time, key, namespace), fire in time order, and are kept in the keyed
//! state backend (as internal value states, one row per timer) so they are
//! snapshotted by key group and survive rescaling like any other keyed state.
//!
//! Two queues keep them in order:
//! - [`MemoryQueue`]: every timer also in memory (by timestamp), for backends
//!   that cannot scan keys in order (the heap backend) or when
//!   `state.backend.rocksdb.timer-service.factory: HEAP`;
//! - [`BackendQueue`]: for backends that scan in order (RocksDB), only the
//!   earliest timers of each key group are in memory (at most
//!   `state.backend.rocksdb.timer-service.cache-size` per group) and the rest
//!   stay in the backend, so timers are not bounded by memory (Flink's key-group
//!   partitioned priority queue). A group's head is refilled by an ordered scan
//!   of its rows when it runs empty.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

use cairn_config::{options, Configuration, TimerServiceFactory};
use cairn_state::codec::{get_bytes, put_bytes};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::table_hash::TableHasher;
use cairn_state::{KeyedStateAccess, KeyedStateBackend, StateError, StateId, StateKind, StateMeta};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// One timer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub namespace: Vec<u8>,
    pub key_group: u32,
}

/// Name of the internal state holding event-time timers.
pub const EVENT_TIMERS_STATE: &str = "_timers/event";
/// Name of the internal state holding processing-time timers.
pub const PROCESSING_TIMERS_STATE: &str = "_timers/processing";

/// Where timers are kept, from the job's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerSettings {
    /// Keep timers in the backend when it can scan in order.
    pub in_backend: bool,
    /// Timers per key group held in memory by a [`BackendQueue`].
    pub cache_size: usize,
}

impl TimerSettings {
    /// `state.backend.rocksdb.timer-service.*`.
    pub fn from_config(config: &Configuration) -> Self {
        TimerSettings {
            in_backend: config.get(&options::ROCKSDB_TIMER_SERVICE_FACTORY) == TimerServiceFactory::RocksDb,
            cache_size: config.get(&options::ROCKSDB_TIMER_CACHE_SIZE).max(1) as usize,
        }
    }
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            in_backend: true,
            cache_size: 128,
        }
    }
}

/// The timers of one keyed operator subtask.
pub struct TimerService {
    event: Queue,
    processing: Queue,
    buf: Vec<u8>,
}

fn timer_meta(name: &str) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind: StateKind::Value,
        value_type: "timer".into(),
        ttl: None,
        shapes: None,
    }
}

/// The timer (`timestamp`, `key`, `namespace`) as the row key it is stored
/// under: order-preserving timestamp, then key and namespace, so keys of one
/// key group sort by timestamp first.
fn encode(timestamp: i64, key: &[u8], namespace: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&((timestamp as u64) ^ (1 << 63)).to_be_bytes());
    put_bytes(buf, key);
    buf.extend_from_slice(namespace);
}

fn decode(kg: u32, bytes: &[u8]) -> Option<Timer> {
    let ts = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let (key, ns) = get_bytes(&bytes[8..])?;
    Some(Timer {
        timestamp: ts as i64,
        key: key.to_vec(),
        namespace: ns.to_vec(),
        key_group: kg,
    })
}

/// Whether `bytes` decode as a timer (without building it).
fn well_formed(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && get_bytes(&bytes[8..]).is_some()
}

fn timestamp_of(encoded: &[u8]) -> i64 {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&encoded[..8]);
    (u64::from_be_bytes(ts) ^ (1 << 63)) as i64
}

fn corrupt(kg: u32) -> StateError {
    StateError::Restore(format!(
        "a timer of key group {kg} is corrupt (fewer than 8 bytes or bad key framing)"
    ))
}

enum Queue {
    Memory(MemoryQueue),
    Backend(BackendQueue),
}

impl Queue {
    fn open(backend: &mut dyn KeyedStateBackend, name: &str, settings: TimerSettings) -> Result<Self, StateError> {
        let state = backend.register(&timer_meta(name))?;
        if settings.in_backend && backend.supports_ordered_scan() {
            Ok(Queue::Backend(BackendQueue::open(backend, state, settings.cache_size)?))
        } else {
            Ok(Queue::Memory(MemoryQueue::open(backend, state)?))
        }
    }

    /// Register the timer encoded in `enc` (of key group `kg`).
    fn register(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32, enc: &[u8]) -> Result<(), StateError> {
        match self {
            Queue::Memory(q) => q.register(backend, kg, enc),
            Queue::Backend(q) => q.register(backend, kg, enc),
        }
    }

    /// Delete the timer encoded in `enc` (of key group `kg`), if registered.
    fn delete(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32, enc: &[u8]) -> Result<(), StateError> {
        match self {
            Queue::Memory(q) => q.delete(backend, kg, enc),
            Queue::Backend(q) => q.delete(backend, kg, enc),
        }
    }

    fn pop_due(&mut self, backend: &mut dyn KeyedStateBackend, time: i64) -> Result<Option<Timer>, StateError> {
        match self {
            Queue::Memory(q) => q.pop_due(backend, time),
            Queue::Backend(q) => q.pop_due(backend, time),
        }
    }

    fn next_time(&self) -> Option<i64> {
        match self {
            Queue::Memory(q) => q.by_time.keys().next().copied(),
            Queue::Backend(q) => q.order.first().map(|(ts, _)| *ts),
        }
    }
}

/// Every timer in memory, mirrored into the backend.
struct MemoryQueue {
    /// The timers of each timestamp. Windows give most timers one of a few
    /// timestamps (window ends) and register them again for every record, so
    /// a search of the ordered map compares integers only and the timer is
    /// found by one hash of its encoded bytes; ordering a timestamp's timers
    /// waits until they fire.
    by_time: BTreeMap<i64, Bucket>,
    state: StateId,
}

/// The encoded timers of one timestamp with their key groups.
enum Bucket {
    /// Not firing yet: in no order.
    Waiting(HashMap<Box<[u8]>, u32, BuildHasherDefault<TableHasher>>),
    /// Firing: in descending byte order (the next to fire last), so a
    /// timestamp's timers fire in an order that does not depend on hashing.
    Firing(Vec<(Box<[u8]>, u32)>),
}

impl Bucket {
    fn is_empty(&self) -> bool {
        match self {
            Bucket::Waiting(m) => m.is_empty(),
            Bucket::Firing(v) => v.is_empty(),
        }
    }
}

/// Where `enc` is (or would go) in a firing bucket.
fn firing_slot(v: &[(Box<[u8]>, u32)], enc: &[u8]) -> Result<usize, usize> {
    v.binary_search_by(|(e, _)| enc.cmp(e))
}

impl MemoryQueue {
    fn open(backend: &mut dyn KeyedStateBackend, state: StateId) -> Result<Self, StateError> {
        let mut q = MemoryQueue {
            by_time: BTreeMap::new(),
            state,
        };
        let mut bad = None;
        backend.for_each_key(state, &mut |kg, k| {
            if !well_formed(k) {
                bad = Some(kg);
            } else if let Bucket::Waiting(m) = q.bucket(timestamp_of(k)) {
                m.insert(k.into(), kg);
            }
        })?;
        if let Some(kg) = bad {
            return Err(corrupt(kg));
        }
        Ok(q)
    }

    fn bucket(&mut self, ts: i64) -> &mut Bucket {
        self.by_time
            .entry(ts)
            .or_insert_with(|| Bucket::Waiting(HashMap::default()))
    }

    fn register(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32, enc: &[u8]) -> Result<(), StateError> {
        if !well_formed(enc) {
            return Err(corrupt(kg));
        }
        let ts = timestamp_of(enc);
        let known = match self.by_time.get(&ts) {
            Some(Bucket::Waiting(m)) => m.contains_key(enc),
            Some(Bucket::Firing(v)) => firing_slot(v, enc).is_ok(),
            None => false,
        };
        if known {
            return Ok(());
        }
        // Into the backend first: a failed write leaves no empty bucket.
        backend.put(self.state, kg, enc, &[])?;
        match self.bucket(ts) {
            Bucket::Waiting(m) => {
                m.insert(enc.into(), kg);
            }
            Bucket::Firing(v) => {
                if let Err(slot) = firing_slot(v, enc) {
                    v.insert(slot, (enc.into(), kg));
                }
            }
        }
        Ok(())
    }

    fn delete(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32, enc: &[u8]) -> Result<(), StateError> {
        let ts = timestamp_of(enc);
        let Some(bucket) = self.by_time.get_mut(&ts) else {
            return Ok(());
        };
        let removed = match bucket {
            Bucket::Waiting(m) => m.remove(enc).is_some(),
            Bucket::Firing(v) => firing_slot(v, enc).map(|slot| v.remove(slot)).is_ok(),
        };
        if bucket.is_empty() {
            self.by_time.remove(&ts);
        }
        if removed {
            backend.remove(self.state, kg, enc)?;
        }
        Ok(())
    }

    fn pop_due(&mut self, backend: &mut dyn KeyedStateBackend, time: i64) -> Result<Option<Timer>, StateError> {
        loop {
            let Some(mut first) = self.by_time.first_entry() else {
                return Ok(None);
            };
            if *first.key() > time {
                return Ok(None);
            }
            let bucket = first.get_mut();
            if let Bucket::Waiting(m) = bucket {
                let mut v: Vec<(Box<[u8]>, u32)> = m.drain().collect();
                v.sort_unstable_by(|a, b| b.0.cmp(&a.0));
                *bucket = Bucket::Firing(v);
            }
            let Bucket::Firing(v) = bucket else {
                unreachable!("the bucket was just sorted")
            };
            // Buckets are removed when they empty; an empty one is skipped anyway.
            let Some((enc, kg)) = v.pop() else {
                first.remove();
                continue;
            };
            if v.is_empty() {
                first.remove();
            }
            backend.remove(self.state, kg, &enc)?;
            return decode(kg, &enc).map(Some).ok_or_else(|| corrupt(kg));
        }
    }
}

/// The in-memory head of one key group's timers.
#[derive(Default)]
struct GroupHead {
    /// The group's smallest timers (encoded, in byte order = time order).
    head: BTreeSet<Vec<u8>>,
    /// The backend holds no timer of the group beyond `head`.
    complete: bool,
    /// A lower bound of the group's timers that are only in the backend, so
    /// a refill seeks past the deleted rows of fired timers.
    floor: Option<Vec<u8>>,
}

/// Timers in the backend; the earliest `cap` of each key group in memory.
struct BackendQueue {
    state: StateId,
    range: KeyGroupRange,
    cap: usize,
    groups: Vec<GroupHead>,
    /// (earliest timestamp in the head, key group) of every non-empty head.
    order: BTreeSet<(i64, u32)>,
}

impl BackendQueue {
    fn open(backend: &mut dyn KeyedStateBackend, state: StateId, cap: usize) -> Result<Self, StateError> {
        let range = backend.key_group_range();
        let mut q = BackendQueue {
            state,
            range,
            cap: cap.max(1),
            groups: (0..range.len()).map(|_| GroupHead::default()).collect(),
            order: BTreeSet::new(),
        };
        for kg in range.start..range.end_exclusive {
            q.refill(backend, kg)?;
        }
        Ok(q)
    }

    fn slot(&self, kg: u32) -> Result<usize, StateError> {
        if self.range.contains(kg) {
            Ok((kg - self.range.start) as usize)
        } else {
            Err(StateError::Usage(format!(
                "timer of key group {kg} is outside this subtask's key groups {}..{}",
                self.range.start, self.range.end_exclusive
            )))
        }
    }

    /// Load the earliest `cap` timers of an empty, incomplete head.
    fn refill(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32) -> Result<(), StateError> {
        let slot = self.slot(kg)?;
        let cap = self.cap;
        let g = &mut self.groups[slot];
        debug_assert!(g.head.is_empty());
        let from = g.floor.take().unwrap_or_default();
        let mut loaded: Vec<Vec<u8>> = Vec::new();
        let mut next = None;
        let mut bad = false;
        backend.scan_from(self.state, kg, &from, &mut |k, _| {
            if k.len() < 8 {
                bad = true;
                return false;
            }
            if loaded.len() < cap {
                loaded.push(k.to_vec());
                true
            } else {
                next = Some(k.to_vec());
                false
            }
        })?;
        if bad {
            return Err(corrupt(kg));
        }
        g.complete = next.is_none();
        g.floor = next;
        g.head.extend(loaded);
        if let Some(first) = g.head.first() {
            self.order.insert((timestamp_of(first), kg));
        }
        Ok(())
    }

    /// Re-rank a group after its head's first element may have changed.
    fn reorder(&mut self, kg: u32, old_first: Option<i64>) {
        let slot = (kg - self.range.start) as usize;
        let new_first = self.groups[slot].head.first().map(|e| timestamp_of(e));
        if old_first != new_first {
            if let Some(ts) = old_first {
                self.order.remove(&(ts, kg));
            }
            if let Some(ts) = new_first {
                self.order.insert((ts, kg));
            }
        }
    }

    fn register(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32, enc: &[u8]) -> Result<(), StateError> {
        let slot = self.slot(kg)?;
        let g = &mut self.groups[slot];
        if g.head.contains(enc) {
            return Ok(());
        }
        let in_head_range = g.complete || g.head.last().is_some_and(|last| enc < last.as_slice());
        if !in_head_range {
            // Beyond the head: only the backend knows whether it exists.
            let mut out = Vec::new();
            if backend.get(self.state, kg, enc, &mut out)? {
                return Ok(());
            }
            backend.put(self.state, kg, enc, &[])?;
            if g.floor.as_deref().is_none_or(|f| enc < f) {
                g.floor = Some(enc.to_vec());
            }
            return Ok(());
        }
        backend.put(self.state, kg, enc, &[])?;
        let old_first = g.head.first().map(|e| timestamp_of(e));
        g.head.insert(enc.to_vec());
        if g.head.len() > self.cap {
            let evicted = g.head.pop_last().expect("over capacity");
            g.complete = false;
            if g.floor.as_deref().is_none_or(|f| evicted.as_slice() < f) {
                g.floor = Some(evicted);
            }
        }
        self.reorder(kg, old_first);
        Ok(())
    }

    fn delete(&mut self, backend: &mut dyn KeyedStateBackend, kg: u32, enc: &[u8]) -> Result<(), StateError> {
        let slot = self.slot(kg)?;
        let g = &mut self.groups[slot];
        let old_first = g.head.first().map(|e| timestamp_of(e));
        if g.head.remove(enc) {
            backend.remove(self.state, kg, enc)?;
            let refill = g.head.is_empty() && !g.complete;
            self.reorder(kg, old_first);
            if refill {
                self.refill(backend, kg)?;
            }
        } else if !g.complete && g.head.last().is_none_or(|last| enc > last.as_slice()) {
            backend.remove(self.state, kg, enc)?;
        }
        Ok(())
    }

    fn pop_due(&mut self, backend: &mut dyn KeyedStateBackend, time: i64) -> Result<Option<Timer>, StateError> {
        let Some(&(ts, kg)) = self.order.first() else {
            return Ok(None);
        };
        if ts > time {
            return Ok(None);
        }
        let slot = (kg - self.range.start) as usize;
        let g = &mut self.groups[slot];
        let enc = g.head.pop_first().expect("ordered groups have a head");
        backend.remove(self.state, kg, &enc)?;
        let refill = g.head.is_empty() && !g.complete;
        self.reorder(kg, Some(ts));
        if refill {
            self.refill(backend, kg)?;
        }
        decode(kg, &enc).map(Some).ok_or_else(|| corrupt(kg))
    }
}

impl TimerService {
    /// Register the timer states and load the restored timers (all of them,
    /// or the head of each key group when they stay in the backend).
    pub fn open(access: &mut KeyedStateAccess, settings: TimerSettings) -> Result<Self, StateError> {
        let backend = access.backend_mut();
        let event = Queue::open(backend, EVENT_TIMERS_STATE, settings)?;
        let processing = Queue::open(backend, PROCESSING_TIMERS_STATE, settings)?;
        Ok(TimerService {
            event,
            processing,
            buf: Vec::new(),
        })
    }

    fn parts(&mut self, domain: TimeDomain) -> (&mut Queue, &mut Vec<u8>) {
        match domain {
            TimeDomain::EventTime => (&mut self.event, &mut self.buf),
            TimeDomain::ProcessingTime => (&mut self.processing, &mut self.buf),
        }
    }

    /// Whether the timers of `domain` stay in the backend (not all in memory).
    pub fn kept_in_backend(&self, domain: TimeDomain) -> bool {
        let q = match domain {
            TimeDomain::EventTime => &self.event,
            TimeDomain::ProcessingTime => &self.processing,
        };
        matches!(q, Queue::Backend(_))
    }

    /// Register a timer for the access's current key and `namespace`.
    pub fn register(
        &mut self,
        access: &mut KeyedStateAccess,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &[u8],
    ) -> Result<(), StateError> {
        let (q, buf) = self.parts(domain);
        encode(timestamp, access.current_key_bytes(), namespace, buf);
        let kg = access.current_key_group();
        q.register(access.backend_mut(), kg, buf)
    }

    /// Delete a timer of the current key (no-op when absent).
    pub fn delete(
        &mut self,
        access: &mut KeyedStateAccess,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &[u8],
    ) -> Result<(), StateError> {
        let (q, buf) = self.parts(domain);
        encode(timestamp, access.current_key_bytes(), namespace, buf);
        let kg = access.current_key_group();
        q.delete(access.backend_mut(), kg, buf)
    }

    /// Remove and return the earliest timer due at `time`, if any.
    pub fn pop_due(
        &mut self,
        access: &mut KeyedStateAccess,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Option<Timer>, StateError> {
        let (q, _) = self.parts(domain);
        q.pop_due(access.backend_mut(), time)
    }

    /// The earliest processing-time timer.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.processing.next_time()
    }

    /// The earliest event-time timer.
    pub fn next_event_time(&self) -> Option<i64> {
        self.event.next_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_state::HeapKeyedStateBackend;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A heap backend that also scans in order (through `for_each_key` and a
    /// sort), so the backend queue runs against a reference store here; the
    /// RocksDB crate's tests run it against RocksDB.
    /// (Writes fail while the flag is set.)
    struct Ordered(HeapKeyedStateBackend, Arc<AtomicBool>);

    impl KeyedStateBackend for Ordered {
        fn kind(&self) -> &'static str {
            "ordered-heap"
        }
        fn key_group_range(&self) -> KeyGroupRange {
            self.0.key_group_range()
        }
        fn register(&mut self, meta: &StateMeta) -> Result<StateId, StateError> {
            self.0.register(meta)
        }
        fn registered(&self) -> &[StateMeta] {
            self.0.registered()
        }
        fn get(&mut self, s: StateId, kg: u32, k: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
            self.0.get(s, kg, k, out)
        }
        fn put(&mut self, s: StateId, kg: u32, k: &[u8], v: &[u8]) -> Result<(), StateError> {
            if self.1.load(Ordering::Relaxed) {
                return Err(StateError::Backend("the test's disk is full".into()));
            }
            self.0.put(s, kg, k, v)
        }
        fn append(&mut self, s: StateId, kg: u32, k: &[u8], v: &[u8]) -> Result<(), StateError> {
            self.0.append(s, kg, k, v)
        }
        fn remove(&mut self, s: StateId, kg: u32, k: &[u8]) -> Result<(), StateError> {
            self.0.remove(s, kg, k)
        }
        fn map_get(&mut self, s: StateId, kg: u32, k: &[u8], u: &[u8], o: &mut Vec<u8>) -> Result<bool, StateError> {
            self.0.map_get(s, kg, k, u, o)
        }
        fn map_put(&mut self, s: StateId, kg: u32, k: &[u8], u: &[u8], v: &[u8]) -> Result<(), StateError> {
            self.0.map_put(s, kg, k, u, v)
        }
        fn map_remove(&mut self, s: StateId, kg: u32, k: &[u8], u: &[u8]) -> Result<(), StateError> {
            self.0.map_remove(s, kg, k, u)
        }
        fn map_entries(
            &mut self,
            s: StateId,
            kg: u32,
            k: &[u8],
            v: &mut dyn FnMut(&[u8], &[u8]),
        ) -> Result<(), StateError> {
            self.0.map_entries(s, kg, k, v)
        }
        fn for_each_key(&mut self, s: StateId, v: &mut dyn FnMut(u32, &[u8])) -> Result<(), StateError> {
            self.0.for_each_key(s, v)
        }
        fn snapshot(&mut self, r: &cairn_state::SnapshotRequest) -> Result<cairn_state::BackendSnapshot, StateError> {
            self.0.snapshot(r)
        }
        fn restore_group(&mut self, m: &StateMeta, kg: u32, e: &[u8]) -> Result<(), StateError> {
            self.0.restore_group(m, kg, e)
        }
        fn supports_ordered_scan(&self) -> bool {
            true
        }
        fn scan_from(
            &mut self,
            s: StateId,
            kg: u32,
            from: &[u8],
            visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), StateError> {
            let mut keys = Vec::new();
            self.0.for_each_key(s, &mut |g, k| {
                if g == kg && k >= from {
                    keys.push(k.to_vec())
                }
            })?;
            keys.sort();
            for k in keys {
                if !visit(&k, &[]) {
                    break;
                }
            }
            Ok(())
        }
    }

    fn access(ordered: bool) -> KeyedStateAccess {
        let range = KeyGroupRange {
            start: 0,
            end_exclusive: 4,
        };
        let heap = HeapKeyedStateBackend::new(range);
        if ordered {
            KeyedStateAccess::new(Box::new(Ordered(heap, Arc::default())))
        } else {
            KeyedStateAccess::new(Box::new(heap))
        }
    }

    /// A small deterministic random sequence (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Both queues fire exactly the same timers, in time order, across
    /// random registers, duplicates, deletes and pops, with a head cache of
    /// 3 timers per key group (so heads overflow and refill constantly).
    #[test]
    fn backend_queue_fires_like_the_memory_queue() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed * 7919);
            let small = TimerSettings {
                in_backend: true,
                cache_size: 3,
            };
            let mut ma = access(false);
            let mut ba = access(true);
            let mut mem = TimerService::open(&mut ma, small).unwrap();
            let mut bq = TimerService::open(&mut ba, small).unwrap();
            assert!(!mem.kept_in_backend(TimeDomain::EventTime));
            assert!(bq.kept_in_backend(TimeDomain::EventTime));
            let mut fired_m = Vec::new();
            let mut fired_b = Vec::new();
            let mut now = 0i64;
            for _ in 0..3000 {
                let key = (rng.next(40) as u8).to_le_bytes();
                let kg = key[0] as u32 % 4;
                let ts = now + rng.next(60) as i64 - 5;
                for a in [&mut ma, &mut ba] {
                    a.set_current_key(&key, kg);
                }
                match rng.next(10) {
                    0..=5 => {
                        mem.register(&mut ma, TimeDomain::EventTime, ts, b"").unwrap();
                        bq.register(&mut ba, TimeDomain::EventTime, ts, b"").unwrap();
                    }
                    6 | 7 => {
                        let ts = now + rng.next(30) as i64;
                        mem.delete(&mut ma, TimeDomain::EventTime, ts, b"").unwrap();
                        bq.delete(&mut ba, TimeDomain::EventTime, ts, b"").unwrap();
                    }
                    _ => {
                        now += rng.next(8) as i64;
                        let (mut round_m, mut round_b) = (Vec::new(), Vec::new());
                        while let Some(t) = mem.pop_due(&mut ma, TimeDomain::EventTime, now).unwrap() {
                            round_m.push((t.timestamp, t.key, t.key_group));
                        }
                        while let Some(t) = bq.pop_due(&mut ba, TimeDomain::EventTime, now).unwrap() {
                            round_b.push((t.timestamp, t.key, t.key_group));
                        }
                        assert!(round_b.windows(2).all(|w| w[0].0 <= w[1].0), "time order, seed {seed}");
                        // Within one timestamp the queues may order keys differently.
                        round_m.sort();
                        round_b.sort();
                        assert_eq!(round_m, round_b, "seed {seed}");
                        fired_m.extend(round_m);
                        fired_b.extend(round_b);
                        assert_eq!(mem.next_event_time(), bq.next_event_time(), "seed {seed}");
                    }
                }
            }
            while let Some(t) = mem.pop_due(&mut ma, TimeDomain::EventTime, i64::MAX).unwrap() {
                fired_m.push((t.timestamp, t.key, t.key_group));
            }
            while let Some(t) = bq.pop_due(&mut ba, TimeDomain::EventTime, i64::MAX).unwrap() {
                fired_b.push((t.timestamp, t.key, t.key_group));
            }
            let (mut sm, mut sb) = (fired_m.clone(), fired_b.clone());
            sm.sort();
            sb.sort();
            assert_eq!(sm, sb, "seed {seed}");
            assert!(sm.len() > 300, "the test fires many timers ({})", sm.len());
            let mut left = 0;
            let event_state = ba.backend_mut().register(&timer_meta(EVENT_TIMERS_STATE)).unwrap();
            ba.backend_mut()
                .for_each_key(event_state, &mut |_, _| left += 1)
                .unwrap();
            assert_eq!(left, 0, "fired timers are removed from the backend");
        }
    }

    /// Timers registered and deleted while their timestamp fires (as a timer
    /// handler does): a new timer of that timestamp fires in the same round,
    /// a deleted one never, a duplicate once, in both queues; the memory
    /// queue fires a timestamp's timers in byte order of their keys.
    #[test]
    fn timers_changed_while_their_timestamp_fires() {
        for ordered in [false, true] {
            let settings = TimerSettings {
                in_backend: true,
                cache_size: 2,
            };
            let mut a = access(ordered);
            let mut q = TimerService::open(&mut a, settings).unwrap();
            let at = |a: &mut KeyedStateAccess, k: u8| a.set_current_key(&[k], u32::from(k) % 4);
            for k in [5u8, 1, 9, 3, 7] {
                at(&mut a, k);
                q.register(&mut a, TimeDomain::EventTime, 10, b"").unwrap();
            }
            at(&mut a, 2);
            q.register(&mut a, TimeDomain::EventTime, 20, b"").unwrap();
            let mut fired = Vec::new();
            let first = q.pop_due(&mut a, TimeDomain::EventTime, 10).unwrap().unwrap();
            fired.push(first.key[0]);
            // While 10 fires: add 4 and 8 at 10, 4 twice, delete 9 and the fired 1.
            for k in [8u8, 4, 4] {
                at(&mut a, k);
                q.register(&mut a, TimeDomain::EventTime, 10, b"").unwrap();
            }
            for k in [9u8, 1] {
                at(&mut a, k);
                q.delete(&mut a, TimeDomain::EventTime, 10, b"").unwrap();
            }
            while let Some(t) = q.pop_due(&mut a, TimeDomain::EventTime, 10).unwrap() {
                assert_eq!(t.timestamp, 10);
                fired.push(t.key[0]);
            }
            if ordered {
                // The backend queue goes key group by key group.
                fired.sort();
            }
            assert_eq!(fired, [1, 3, 4, 5, 7, 8], "ordered backend: {ordered}");
            assert_eq!(q.next_event_time(), Some(20));
            let t = q.pop_due(&mut a, TimeDomain::EventTime, 20).unwrap().unwrap();
            assert_eq!((t.timestamp, t.key, t.key_group), (20, vec![2], 2));
            assert_eq!(q.next_event_time(), None);
            let state = a.backend_mut().register(&timer_meta(EVENT_TIMERS_STATE)).unwrap();
            let mut left = 0;
            a.backend_mut().for_each_key(state, &mut |_, _| left += 1).unwrap();
            assert_eq!(left, 0, "fired and deleted timers leave no rows");
        }
    }

    /// A registration whose backend write fails leaves both queues as they
    /// were: no timer and no wake-up time they could not store.
    #[test]
    fn a_failed_timer_write_leaves_the_queue_as_it_was() {
        for in_backend in [false, true] {
            let range = KeyGroupRange {
                start: 0,
                end_exclusive: 4,
            };
            let full = Arc::new(AtomicBool::new(false));
            let heap = HeapKeyedStateBackend::new(range);
            let mut a = KeyedStateAccess::new(Box::new(Ordered(heap, full.clone())));
            let settings = TimerSettings {
                in_backend,
                cache_size: 2,
            };
            let mut q = TimerService::open(&mut a, settings).unwrap();
            assert_eq!(q.kept_in_backend(TimeDomain::EventTime), in_backend);
            a.set_current_key(&[1], 1);
            q.register(&mut a, TimeDomain::EventTime, 20, b"").unwrap();
            full.store(true, Ordering::Relaxed);
            a.set_current_key(&[2], 2);
            let e = q.register(&mut a, TimeDomain::EventTime, 10, b"").unwrap_err();
            assert!(e.to_string().contains("disk is full"), "{e}");
            full.store(false, Ordering::Relaxed);
            assert_eq!(q.next_event_time(), Some(20), "in backend: {in_backend}");
            let mut fired = Vec::new();
            while let Some(t) = q.pop_due(&mut a, TimeDomain::EventTime, 100).unwrap() {
                fired.push((t.timestamp, t.key));
            }
            assert_eq!(fired, [(20, vec![1])], "in backend: {in_backend}");
        }
    }

    /// Restored timers are found again by both queues: the backend queue
    /// loads only the heads.
    #[test]
    fn reopened_queues_see_the_stored_timers() {
        let settings = TimerSettings {
            in_backend: true,
            cache_size: 2,
        };
        let mut a = access(true);
        let mut q = TimerService::open(&mut a, settings).unwrap();
        for i in 0..10i64 {
            a.set_current_key(&[i as u8], (i % 4) as u32);
            q.register(&mut a, TimeDomain::ProcessingTime, 100 - i, b"ns").unwrap();
        }
        let mut q2 = TimerService::open(&mut a, settings).unwrap();
        assert_eq!(q2.next_processing_time(), Some(91));
        let mut times = Vec::new();
        while let Some(t) = q2.pop_due(&mut a, TimeDomain::ProcessingTime, 1000).unwrap() {
            assert_eq!(t.namespace, b"ns");
            times.push(t.timestamp);
        }
        assert_eq!(times, (91..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_corrupt_stored_timer_is_an_error() {
        let mut a = access(true);
        let id = a.backend_mut().register(&timer_meta(EVENT_TIMERS_STATE)).unwrap();
        a.backend_mut().put(id, 2, b"short", &[]).unwrap();
        let e = TimerService::open(&mut a, TimerSettings::default())
            .err()
            .expect("corrupt timer refused")
            .to_string();
        assert!(e.contains("key group 2"), "{e}");
    }
}
