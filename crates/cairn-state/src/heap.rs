//! The in-memory ("hashmap") keyed state backend.
//!
//! Each (state, key group) is its own hash map behind an `Arc`. A snapshot
//! clones the `Arc`s only — O(states × key groups), independent of state size —
//! and a later write to a group still shared with a snapshot copies that one
//! group first (copy-on-write), so the snapshot stays consistent while
//! processing goes on.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::backend::{
    BackendContext, BackendSnapshot, GroupVisitor, KeyedStateBackend, KeyedStateSnapshot, SnapshotRequest,
    StateBackendFactory, StateId,
};
use crate::descriptor::{StateKind, StateMeta};
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;
use crate::snapshot_codec::{self, Decoded};

use small_bytes::SmallBytes;

/// A fast non-cryptographic hasher for state keys (keys come from the job, not
/// from an adversary, and the map is per subtask).
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;
type Bytes = SmallBytes;

/// Short byte strings stored inline (in the hash-table bucket itself), longer
/// ones in one heap allocation.
///
/// The heap backend keeps one entry per key; with `Vec<u8>` keys and values
/// every entry is two extra allocations, and after a copy-on-write clone of a
/// group those allocations lie in bucket (hash) order, so every probe that
/// compares key bytes misses the cache. Keys (an 8-byte encoded `u64`, often
/// with a namespace) and small values (a few bytes of MessagePack) fit inline.
pub mod small_bytes {
    use std::borrow::Borrow;
    use std::cmp::Ordering;
    use std::fmt;
    use std::hash::{Hash, Hasher};
    use std::ops::Deref;

    /// Longest byte string kept inline.
    pub const INLINE_CAP: usize = 22;

    /// A byte string that compares, orders and hashes exactly like `[u8]`, so a
    /// `HashMap<SmallBytes, _>` or `BTreeMap<SmallBytes, _>` is searched with a
    /// `&[u8]`.
    pub struct SmallBytes(Repr);

    // Invariant: `Heap` only when the length exceeds `INLINE_CAP`.
    enum Repr {
        Inline {
            len: u8,
            buf: [u8; INLINE_CAP],
        },
        /// `buf[..buf.len() - spare]` holds the bytes; the rest is room for
        /// appends (list state), so repeated appends stay amortized O(1).
        Heap {
            buf: Box<[u8]>,
            spare: u32,
        },
    }

    // As small as a `Vec<u8>`: a (key, value) bucket stays 48 bytes.
    const _: () = assert!(std::mem::size_of::<SmallBytes>() == 24);

    impl SmallBytes {
        /// The empty byte string.
        #[inline]
        pub const fn new() -> Self {
            SmallBytes(Repr::Inline {
                len: 0,
                buf: [0; INLINE_CAP],
            })
        }

        /// A copy of `bytes`.
        #[inline]
        pub fn from_slice(bytes: &[u8]) -> Self {
            if bytes.len() <= INLINE_CAP {
                let mut buf = [0; INLINE_CAP];
                buf[..bytes.len()].copy_from_slice(bytes);
                SmallBytes(Repr::Inline {
                    len: bytes.len() as u8,
                    buf,
                })
            } else {
                SmallBytes(Repr::Heap {
                    buf: bytes.into(),
                    spare: 0,
                })
            }
        }

        #[inline]
        pub fn as_slice(&self) -> &[u8] {
            match &self.0 {
                Repr::Inline { len, buf } => &buf[..*len as usize],
                Repr::Heap { buf, spare } => &buf[..buf.len() - *spare as usize],
            }
        }

        /// True when the bytes are stored inline (no heap allocation).
        #[cfg(test)]
        pub fn is_inline(&self) -> bool {
            matches!(self.0, Repr::Inline { .. })
        }

        /// Replace the contents with `bytes`, reusing a heap buffer that is
        /// large enough (as `Vec::clear` + `extend_from_slice` would).
        #[inline]
        pub fn set(&mut self, bytes: &[u8]) {
            if let Repr::Heap { buf, spare } = &mut self.0 {
                if bytes.len() > INLINE_CAP && bytes.len() <= buf.len() && buf.len() - bytes.len() <= u32::MAX as usize
                {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    *spare = (buf.len() - bytes.len()) as u32;
                    return;
                }
            }
            *self = SmallBytes::from_slice(bytes);
        }

        /// Append `more`; the bytes move to the heap once they no longer fit
        /// inline, and the heap buffer grows geometrically.
        pub fn extend_from_slice(&mut self, more: &[u8]) {
            if more.is_empty() {
                return;
            }
            match &mut self.0 {
                Repr::Inline { len, buf } => {
                    let old = *len as usize;
                    let new = old + more.len();
                    if new <= INLINE_CAP {
                        buf[old..new].copy_from_slice(more);
                        *len = new as u8;
                    } else {
                        let mut v = Vec::with_capacity(new.max(2 * INLINE_CAP));
                        v.extend_from_slice(&buf[..old]);
                        v.extend_from_slice(more);
                        self.0 = Repr::heap_from_vec(v);
                    }
                }
                Repr::Heap { buf, spare } => {
                    let used = buf.len() - *spare as usize;
                    if more.len() <= *spare as usize {
                        buf[used..used + more.len()].copy_from_slice(more);
                        *spare -= more.len() as u32;
                    } else {
                        // `Box<[u8]>` -> `Vec<u8>` keeps the allocation; the
                        // `Vec` then grows geometrically.
                        let mut v = std::mem::take(buf).into_vec();
                        v.truncate(used);
                        v.extend_from_slice(more);
                        self.0 = Repr::heap_from_vec(v);
                    }
                }
            }
        }
    }

    impl Repr {
        /// A heap representation using all of `v`'s capacity (at most
        /// `u32::MAX` bytes of it spare).
        fn heap_from_vec(mut v: Vec<u8>) -> Repr {
            let len = v.len();
            let cap = v.capacity().min(len.saturating_add(u32::MAX as usize));
            v.resize(cap, 0);
            Repr::Heap {
                buf: v.into_boxed_slice(),
                spare: (cap - len) as u32,
            }
        }
    }

    impl Default for SmallBytes {
        #[inline]
        fn default() -> Self {
            SmallBytes::new()
        }
    }

    impl Clone for SmallBytes {
        #[inline]
        fn clone(&self) -> Self {
            match &self.0 {
                Repr::Inline { len, buf } => SmallBytes(Repr::Inline { len: *len, buf: *buf }),
                // A copy drops the spare room: copies are snapshots' groups.
                Repr::Heap { .. } => SmallBytes::from_slice(self.as_slice()),
            }
        }
    }

    impl From<&[u8]> for SmallBytes {
        #[inline]
        fn from(bytes: &[u8]) -> Self {
            SmallBytes::from_slice(bytes)
        }
    }

    impl Deref for SmallBytes {
        type Target = [u8];
        #[inline]
        fn deref(&self) -> &[u8] {
            self.as_slice()
        }
    }

    impl AsRef<[u8]> for SmallBytes {
        #[inline]
        fn as_ref(&self) -> &[u8] {
            self.as_slice()
        }
    }

    impl Borrow<[u8]> for SmallBytes {
        #[inline]
        fn borrow(&self) -> &[u8] {
            self.as_slice()
        }
    }

    impl Hash for SmallBytes {
        /// Exactly `[u8]`'s hash, as `Borrow<[u8]>` requires.
        #[inline]
        fn hash<H: Hasher>(&self, state: &mut H) {
            self.as_slice().hash(state)
        }
    }

    impl PartialEq for SmallBytes {
        #[inline]
        fn eq(&self, other: &Self) -> bool {
            self.as_slice() == other.as_slice()
        }
    }

    impl Eq for SmallBytes {}

    impl PartialOrd for SmallBytes {
        #[inline]
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }

    impl Ord for SmallBytes {
        #[inline]
        fn cmp(&self, other: &Self) -> Ordering {
            self.as_slice().cmp(other.as_slice())
        }
    }

    impl fmt::Debug for SmallBytes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(self.as_slice(), f)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::collections::hash_map::DefaultHasher;
        use std::collections::{BTreeMap, HashMap};

        fn hash_of<T: Hash + ?Sized, H: Hasher + Default>(t: &T) -> u64 {
            let mut h = H::default();
            t.hash(&mut h);
            h.finish()
        }

        fn bytes(n: usize) -> Vec<u8> {
            (0..n).map(|i| (i * 7 + 1) as u8).collect()
        }

        #[test]
        fn stays_inline_up_to_the_capacity() {
            assert_eq!(std::mem::size_of::<SmallBytes>(), 24);
            for n in 0..=INLINE_CAP + 2 {
                let b = bytes(n);
                let s = SmallBytes::from_slice(&b);
                assert_eq!(s.is_inline(), n <= INLINE_CAP, "length {n}");
                assert_eq!(s.as_slice(), &b[..]);
                assert_eq!(&*s, &b[..]);
                assert_eq!(s.len(), n);
                assert_eq!(s.clone(), s);
                assert_eq!(s.clone().as_slice(), &b[..]);
                assert_eq!(format!("{s:?}"), format!("{b:?}"));
            }
            assert!(SmallBytes::new().is_empty());
            assert_eq!(SmallBytes::default(), SmallBytes::from_slice(&[]));
        }

        #[test]
        fn hashes_equal_the_slices() {
            for n in [0, 1, 7, 8, 9, 16, 21, 22, 23, 24, 100] {
                let b = bytes(n);
                let s = SmallBytes::from_slice(&b);
                assert_eq!(hash_of::<_, DefaultHasher>(&s), hash_of::<_, DefaultHasher>(&b[..]));
                assert_eq!(
                    hash_of::<_, crate::heap::FxHasher>(&s),
                    hash_of::<_, crate::heap::FxHasher>(&b[..])
                );
                // A heap value reached by appends (with spare room) hashes the same.
                let mut grown = SmallBytes::new();
                for chunk in b.chunks(3) {
                    grown.extend_from_slice(chunk);
                }
                assert_eq!(hash_of::<_, DefaultHasher>(&grown), hash_of::<_, DefaultHasher>(&b[..]));
                assert_eq!(grown, s);
            }
        }

        #[test]
        fn maps_are_searched_with_slices() {
            let mut h: HashMap<SmallBytes, SmallBytes, crate::heap::FxBuild> = HashMap::default();
            let mut t = BTreeMap::new();
            for n in 0..40 {
                let b = bytes(n);
                h.insert(SmallBytes::from_slice(&b), SmallBytes::from_slice(&b[..n / 2]));
                t.insert(SmallBytes::from_slice(&b), n);
            }
            for n in 0..40 {
                let b = bytes(n);
                assert_eq!(h.get(&b[..]).map(|v| v.as_slice()), Some(&b[..n / 2]));
                assert_eq!(t.get(&b[..]), Some(&n));
            }
            assert!(!h.contains_key(&[0xff][..]));
        }

        #[test]
        fn orders_like_slices() {
            let mut raw: Vec<Vec<u8>> = vec![
                vec![],
                vec![0],
                vec![0, 0],
                vec![1],
                vec![0xff],
                vec![1; 22],
                vec![1; 23],
                vec![1; 40],
                [vec![1; 22], vec![0]].concat(),
                [vec![1; 21], vec![2]].concat(),
                vec![0xff; 30],
                vec![2; 5],
            ];
            let mut small: Vec<SmallBytes> = raw.iter().map(|b| SmallBytes::from_slice(b)).collect();
            raw.sort();
            small.sort();
            let back: Vec<Vec<u8>> = small.iter().map(|s| s.to_vec()).collect();
            assert_eq!(back, raw);
            for a in &raw {
                for b in &raw {
                    let (sa, sb) = (SmallBytes::from_slice(a), SmallBytes::from_slice(b));
                    assert_eq!(sa.cmp(&sb), a.cmp(b));
                    assert_eq!(sa == sb, a == b);
                }
            }
        }

        #[test]
        fn appends_cross_the_inline_boundary() {
            for step in [1, 2, 5, 9, 22, 23, 50] {
                let mut s = SmallBytes::new();
                let mut v = Vec::new();
                for i in 0..60 {
                    let chunk: Vec<u8> = (0..step).map(|j| (i * 31 + j) as u8).collect();
                    s.extend_from_slice(&chunk);
                    v.extend_from_slice(&chunk);
                    assert_eq!(s.as_slice(), &v[..], "step {step} append {i}");
                    assert_eq!(s.is_inline(), v.len() <= INLINE_CAP);
                }
                s.extend_from_slice(&[]);
                assert_eq!(s.as_slice(), &v[..]);
                let c = s.clone();
                assert_eq!(c, s);
                assert_eq!(c.as_slice(), &v[..]);
            }
            // Exactly filling the inline buffer, then one more byte.
            let mut s = SmallBytes::from_slice(&bytes(20));
            s.extend_from_slice(&[1, 2]);
            assert!(s.is_inline());
            s.extend_from_slice(&[3]);
            assert!(!s.is_inline());
            assert_eq!(s.as_slice(), &[&bytes(20)[..], &[1, 2, 3]].concat()[..]);
        }

        #[test]
        fn set_replaces_the_contents() {
            let mut s = SmallBytes::from_slice(&bytes(3));
            s.set(&bytes(30));
            assert_eq!(s.as_slice(), &bytes(30)[..]);
            s.set(&bytes(25));
            assert!(!s.is_inline());
            assert_eq!(s.as_slice(), &bytes(25)[..]);
            s.extend_from_slice(&bytes(4));
            assert_eq!(s.as_slice(), &[&bytes(25)[..], &bytes(4)[..]].concat()[..]);
            s.set(&bytes(40));
            assert_eq!(s.as_slice(), &bytes(40)[..]);
            s.set(&bytes(2));
            assert!(s.is_inline());
            assert_eq!(s.as_slice(), &bytes(2)[..]);
            s.set(&[]);
            assert!(s.is_empty());
        }
    }
}

/// The contents of one (state, key group).
#[derive(Clone, Debug)]
enum Group {
    Values(HashMap<Bytes, Bytes, FxBuild>),
    Maps(HashMap<Bytes, BTreeMap<Bytes, Bytes>, FxBuild>),
}

impl Group {
    fn new(kind: StateKind) -> Self {
        match kind {
            StateKind::Value | StateKind::List => Group::Values(HashMap::default()),
            StateKind::Map => Group::Maps(HashMap::default()),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Group::Values(m) => m.is_empty(),
            Group::Maps(m) => m.is_empty(),
        }
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        buf.clear();
        match self {
            // Map order: a snapshot's byte layout is not canonical (sorting
            // would cost more than writing); restores do not depend on order.
            Group::Values(m) => {
                for (k, v) in m {
                    snapshot_codec::put_entry(buf, k, v);
                }
            }
            Group::Maps(m) => {
                for (k, map) in m {
                    snapshot_codec::put_map(buf, k, map.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
                }
            }
        }
    }
}

struct Table {
    meta: StateMeta,
    groups: Vec<Arc<Group>>,
}

/// In-memory keyed state for one subtask's key groups.
pub struct HeapKeyedStateBackend {
    range: KeyGroupRange,
    tables: Vec<Table>,
    metas: Vec<StateMeta>,
}

impl HeapKeyedStateBackend {
    /// An empty backend for the key groups in `range`.
    pub fn new(range: KeyGroupRange) -> Self {
        HeapKeyedStateBackend {
            range,
            tables: Vec::new(),
            metas: Vec::new(),
        }
    }

    #[inline]
    fn slot(&self, kg: u32) -> Result<usize, StateError> {
        if self.range.contains(kg) {
            Ok((kg - self.range.start) as usize)
        } else {
            Err(StateError::Usage(format!(
                "key group {kg} is outside this subtask's key groups {}..{}",
                self.range.start, self.range.end_exclusive
            )))
        }
    }

    #[inline]
    fn group(&self, state: StateId, kg: u32) -> Result<&Group, StateError> {
        let slot = self.slot(kg)?;
        let table = self.tables.get(state as usize).ok_or_else(|| unknown(state))?;
        Ok(&table.groups[slot])
    }

    #[inline]
    fn group_mut(&mut self, state: StateId, kg: u32) -> Result<&mut Group, StateError> {
        let slot = self.slot(kg)?;
        let table = self.tables.get_mut(state as usize).ok_or_else(|| unknown(state))?;
        Ok(Arc::make_mut(&mut table.groups[slot]))
    }

    fn values_mut(&mut self, state: StateId, kg: u32) -> Result<&mut HashMap<Bytes, Bytes, FxBuild>, StateError> {
        match self.group_mut(state, kg)? {
            Group::Values(m) => Ok(m),
            Group::Maps(_) => Err(wrong_kind(state, "a map state")),
        }
    }

    fn maps_mut(
        &mut self,
        state: StateId,
        kg: u32,
    ) -> Result<&mut HashMap<Bytes, BTreeMap<Bytes, Bytes>, FxBuild>, StateError> {
        match self.group_mut(state, kg)? {
            Group::Maps(m) => Ok(m),
            Group::Values(_) => Err(wrong_kind(state, "not a map state")),
        }
    }

    /// Number of keys held for `state` (for tests and metrics).
    pub fn key_count(&self, state: StateId) -> usize {
        self.tables.get(state as usize).map_or(0, |t| {
            t.groups
                .iter()
                .map(|g| match &**g {
                    Group::Values(m) => m.len(),
                    Group::Maps(m) => m.len(),
                })
                .sum()
        })
    }
}

fn unknown(state: StateId) -> StateError {
    StateError::Usage(format!("state id {state} was never registered with this backend"))
}

fn wrong_kind(state: StateId, what: &str) -> StateError {
    StateError::Usage(format!("state id {state} is {what}; use the matching state handle"))
}

impl KeyedStateBackend for HeapKeyedStateBackend {
    fn kind(&self) -> &'static str {
        "hashmap"
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn register(&mut self, meta: &StateMeta) -> Result<StateId, StateError> {
        if let Some(i) = self.metas.iter().position(|m| m.name == meta.name) {
            let existing = &self.metas[i];
            if existing.kind != meta.kind {
                return Err(StateError::Conflict {
                    state: meta.name.clone(),
                    detail: format!(
                        "registered as {:?} state and again as {:?} state; give each state its own name",
                        existing.kind, meta.kind
                    ),
                });
            }
            // A restored state learns its TTL and type from the registering code.
            self.metas[i].ttl = meta.ttl;
            self.metas[i].value_type = meta.value_type.clone();
            if meta.shapes.is_some() {
                self.metas[i].shapes = meta.shapes.clone();
            }
            self.tables[i].meta = self.metas[i].clone();
            return Ok(i as StateId);
        }
        let groups = (0..self.range.len()).map(|_| Arc::new(Group::new(meta.kind))).collect();
        self.tables.push(Table {
            meta: meta.clone(),
            groups,
        });
        self.metas.push(meta.clone());
        Ok((self.metas.len() - 1) as StateId)
    }

    fn registered(&self) -> &[StateMeta] {
        &self.metas
    }

    #[inline]
    fn get(&mut self, state: StateId, kg: u32, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        match self.group(state, kg)? {
            Group::Values(m) => match m.get(key) {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(v);
                    Ok(true)
                }
                None => Ok(false),
            },
            Group::Maps(_) => Err(wrong_kind(state, "a map state")),
        }
    }

    #[inline]
    fn put(&mut self, state: StateId, kg: u32, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let m = self.values_mut(state, kg)?;
        match m.get_mut(key) {
            Some(v) => v.set(value),
            None => {
                m.insert(Bytes::from_slice(key), Bytes::from_slice(value));
            }
        }
        Ok(())
    }

    fn append(&mut self, state: StateId, kg: u32, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        let m = self.values_mut(state, kg)?;
        match m.get_mut(key) {
            Some(v) => v.extend_from_slice(bytes),
            None => {
                m.insert(Bytes::from_slice(key), Bytes::from_slice(bytes));
            }
        }
        Ok(())
    }

    fn remove(&mut self, state: StateId, kg: u32, key: &[u8]) -> Result<(), StateError> {
        // Avoid copying a shared group just to find the key is absent.
        let present = match self.group(state, kg)? {
            Group::Values(m) => m.contains_key(key),
            Group::Maps(m) => m.contains_key(key),
        };
        if present {
            match self.group_mut(state, kg)? {
                Group::Values(m) => {
                    m.remove(key);
                }
                Group::Maps(m) => {
                    m.remove(key);
                }
            }
        }
        Ok(())
    }

    fn map_get(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        user_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        match self.group(state, kg)? {
            Group::Maps(m) => match m.get(key).and_then(|map| map.get(user_key)) {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(v);
                    Ok(true)
                }
                None => Ok(false),
            },
            Group::Values(_) => Err(wrong_kind(state, "not a map state")),
        }
    }

    fn map_put(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let m = self.maps_mut(state, kg)?;
        let map = match m.get_mut(key) {
            Some(map) => map,
            None => m.entry(Bytes::from_slice(key)).or_default(),
        };
        match map.get_mut(user_key) {
            Some(v) => v.set(value),
            None => {
                map.insert(Bytes::from_slice(user_key), Bytes::from_slice(value));
            }
        }
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, kg: u32, key: &[u8], user_key: &[u8]) -> Result<(), StateError> {
        let m = self.maps_mut(state, kg)?;
        if let Some(map) = m.get_mut(key) {
            map.remove(user_key);
            if map.is_empty() {
                m.remove(key);
            }
        }
        Ok(())
    }

    fn map_entries(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        match self.group(state, kg)? {
            Group::Maps(m) => {
                if let Some(map) = m.get(key) {
                    for (k, v) in map {
                        visit(k, v);
                    }
                }
                Ok(())
            }
            Group::Values(_) => Err(wrong_kind(state, "not a map state")),
        }
    }

    fn for_each_key(&mut self, state: StateId, visit: &mut dyn FnMut(u32, &[u8])) -> Result<(), StateError> {
        let table = self.tables.get(state as usize).ok_or_else(|| unknown(state))?;
        for (slot, group) in table.groups.iter().enumerate() {
            let kg = self.range.start + slot as u32;
            match &**group {
                Group::Values(m) => m.keys().for_each(|k| visit(kg, k)),
                Group::Maps(m) => m.keys().for_each(|k| visit(kg, k)),
            }
        }
        Ok(())
    }

    /// Every kind of snapshot is the same copy-on-write view of the groups.
    fn snapshot(&mut self, _request: &SnapshotRequest) -> Result<BackendSnapshot, StateError> {
        let tables = self.tables.iter().map(|t| (t.meta.clone(), t.groups.clone())).collect();
        Ok(BackendSnapshot::KeyGroups(Box::new(HeapSnapshot {
            start: self.range.start,
            tables,
        })))
    }

    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError> {
        let id = self.register(meta)?;
        let kind = meta.kind;
        let group = self.group_mut(id, kg)?;
        snapshot_codec::decode_group(&meta.name, kind, encoded, &mut |d| {
            match (d, &mut *group) {
                (Decoded::Entry { key, value }, Group::Values(m)) => {
                    m.insert(Bytes::from_slice(key), Bytes::from_slice(value));
                }
                (Decoded::MapEntry { key, user_key, value }, Group::Maps(m)) => {
                    m.entry(Bytes::from_slice(key))
                        .or_default()
                        .insert(Bytes::from_slice(user_key), Bytes::from_slice(value));
                }
                _ => {
                    return Err(StateError::Restore(format!(
                        "state '{}': snapshot entries do not match its kind {:?}",
                        meta.name, kind
                    )))
                }
            }
            Ok(())
        })
    }
}

/// Creates [`HeapKeyedStateBackend`]s (`state.backend.type: hashmap`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapBackendFactory;

impl StateBackendFactory for HeapBackendFactory {
    fn name(&self) -> &str {
        "hashmap"
    }
    fn create(&self, ctx: &BackendContext) -> Result<Box<dyn KeyedStateBackend>, StateError> {
        Ok(Box::new(HeapKeyedStateBackend::new(ctx.key_groups)))
    }
}

/// A copy-on-write view of a heap backend.
struct HeapSnapshot {
    start: u32,
    tables: Vec<(StateMeta, Vec<Arc<Group>>)>,
}

impl KeyedStateSnapshot for HeapSnapshot {
    fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        let mut buf = Vec::new();
        for (meta, groups) in &self.tables {
            for (slot, group) in groups.iter().enumerate() {
                if group.is_empty() {
                    continue;
                }
                group.encode(&mut buf);
                visit(meta, self.start + slot as u32, &buf)?;
            }
        }
        Ok(())
    }
}
