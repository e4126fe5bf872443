//! The in-memory ("hashmap") keyed state backend.
//!
//! Each (state, key group) is its own paged hash map ([`crate::paged`]): a
//! snapshot clones the pages' `Arc`s only, and a later write to a page still
//! shared with a snapshot copies that one page first (copy-on-write per
//! page), so the snapshot stays consistent while processing goes on.
//!
//! States registered through the typed handles keep their values as Rust
//! objects ([`crate::typed`]); they are encoded only when a snapshot is
//! written. States with a TTL, and states used only through the byte
//! methods (timers, tools), keep bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{
    BackendContext, BackendSnapshot, GroupVisitor, KeyedStateBackend, KeyedStateSnapshot, ObjectVisitor,
    SnapshotRequest, StateBackendFactory, StateId,
};
use crate::descriptor::{StateKind, StateMeta};
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;
use crate::page_table::HashedKey;
use crate::paged::Paged;
use crate::snapshot_codec::{self, Decoded};
use crate::typed::{TypedGroup, TypedKind};

pub(crate) use small_bytes::SmallBytes;

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

    impl SmallBytes {
        /// Whether these are `key`'s bytes: the hash-table compare of the
        /// heap backend, done in fixed-size words for inline strings instead
        /// of a `memcmp` call for a few bytes.
        #[inline]
        pub fn matches(&self, key: &[u8]) -> bool {
            match &self.0 {
                Repr::Inline { len, buf } => *len as usize == key.len() && short_eq(&buf[..key.len()], key),
                Repr::Heap { .. } => self.as_slice() == key,
            }
        }
    }

    /// `a == b` for slices of one length of at most [`INLINE_CAP`] bytes,
    /// by (overlapping) 8- or 4-byte words that together cover every byte.
    #[inline]
    fn short_eq(a: &[u8], b: &[u8]) -> bool {
        let n = a.len();
        let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
        if n >= 8 {
            word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8) && (n <= 16 || word(a, 8) == word(b, 8))
        } else if n >= 4 {
            half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
        } else {
            a == b
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
        fn matches_compares_every_byte_at_every_length() {
            for n in 0..=INLINE_CAP + 3 {
                let b = bytes(n);
                let s = SmallBytes::from_slice(&b);
                assert!(s.matches(&b), "length {n}");
                assert!(!s.matches(&b[..n.saturating_sub(1)]) || n == 0, "length {n} vs shorter");
                for i in 0..n {
                    let mut other = b.clone();
                    other[i] ^= 0x40;
                    assert!(!s.matches(&other), "length {n}, byte {i} differs");
                }
            }
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
                    hash_of::<_, crate::table_hash::TableHasher>(&s),
                    hash_of::<_, crate::table_hash::TableHasher>(&b[..])
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
            let mut h: HashMap<SmallBytes, SmallBytes, std::hash::BuildHasherDefault<crate::table_hash::TableHasher>> =
                HashMap::default();
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
enum Group {
    Values(Paged<Bytes>),
    Maps(Paged<BTreeMap<Bytes, Bytes>>),
    /// Values kept as objects (a state registered through a typed handle).
    Typed(Box<dyn TypedGroup>),
}

impl Group {
    /// A read-only copy-on-write view for a snapshot: shares every page.
    fn share(&mut self) -> Group {
        match self {
            Group::Values(m) => Group::Values(m.share()),
            Group::Maps(m) => Group::Maps(m.share()),
            Group::Typed(g) => Group::Typed(g.share()),
        }
    }

    fn new(kind: StateKind) -> Self {
        match kind {
            StateKind::Value | StateKind::List => Group::Values(Paged::default()),
            StateKind::Map => Group::Maps(Paged::default()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Group::Values(m) => m.len(),
            Group::Maps(m) => m.len(),
            Group::Typed(g) => g.len(),
        }
    }

    /// Make room for `keys` more keys.
    fn reserve(&mut self, keys: usize) {
        match self {
            Group::Values(m) => m.reserve(keys),
            Group::Maps(m) => m.reserve(keys),
            Group::Typed(g) => g.reserve(keys),
        }
    }

    fn encode(&self, state: &str, buf: &mut Vec<u8>) -> Result<(), StateError> {
        buf.clear();
        match self {
            // Map order: a snapshot's byte layout is not canonical (sorting
            // would cost more than writing); restores do not depend on order.
            Group::Values(m) => {
                for (k, v) in m.iter() {
                    snapshot_codec::put_entry(buf, k, v);
                }
            }
            Group::Maps(m) => {
                for (k, map) in m.iter() {
                    snapshot_codec::put_map(buf, k, map.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
                }
            }
            Group::Typed(g) => g.encode(state, buf)?,
        }
        Ok(())
    }
}

struct Table {
    meta: StateMeta,
    groups: Vec<Group>,
    /// Set when the state's values are kept as objects.
    typed: Option<Arc<dyn TypedKind>>,
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
    fn table(&self, state: StateId) -> Result<&Table, StateError> {
        self.tables.get(state as usize).ok_or_else(|| unknown(state))
    }

    /// The group of (state, kg) with the state's name.
    #[inline]
    fn group(&self, state: StateId, kg: u32) -> Result<(&str, &Group), StateError> {
        let slot = self.slot(kg)?;
        let table = self.table(state)?;
        Ok((&table.meta.name, &table.groups[slot]))
    }

    /// The group of (state, kg) for writing, with the state's name. Pages
    /// are copied (if shared) by the write itself, not here.
    #[inline]
    fn group_mut(&mut self, state: StateId, kg: u32) -> Result<(&str, &mut Group), StateError> {
        let slot = self.slot(kg)?;
        let table = self.tables.get_mut(state as usize).ok_or_else(|| unknown(state))?;
        Ok((&table.meta.name, &mut table.groups[slot]))
    }

    /// Number of keys held for `state` (for tests and metrics).
    pub fn key_count(&self, state: StateId) -> usize {
        self.tables
            .get(state as usize)
            .map_or(0, |t| t.groups.iter().map(Group::len).sum())
    }

    /// Whether `state` keeps its values as objects (for tests).
    pub fn is_typed(&self, state: StateId) -> bool {
        self.tables.get(state as usize).is_some_and(|t| t.typed.is_some())
    }
}

fn unknown(state: StateId) -> StateError {
    StateError::Usage(format!("state id {state} was never registered with this backend"))
}

fn wrong_kind(state: &str, what: &str) -> StateError {
    StateError::Usage(format!("state '{state}' is {what}; use the matching state handle"))
}

/// Decode a group of restored bytes into objects of `kind`; the bytes group
/// is left as it was when a value does not decode.
fn to_typed(name: &str, group: &Group, kind: &dyn TypedKind) -> Result<Box<dyn TypedGroup>, StateError> {
    let mut typed = kind.empty();
    match group {
        Group::Values(m) => {
            typed.reserve(m.len());
            for (k, v) in m.iter() {
                typed.put_bytes(name, k, v)?;
            }
            Ok(typed)
        }
        Group::Maps(_) => Err(wrong_kind(name, "a map state")),
        Group::Typed(_) => Err(StateError::Usage(format!("state '{name}' already keeps objects"))),
    }
}

fn not_typed(state: &str) -> StateError {
    StateError::Usage(format!(
        "state '{state}' keeps bytes, not objects; it was not registered through a typed handle (this is a Cairn bug)"
    ))
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
        let groups = (0..self.range.len()).map(|_| Group::new(meta.kind)).collect();
        self.tables.push(Table {
            meta: meta.clone(),
            groups,
            typed: None,
        });
        self.metas.push(meta.clone());
        Ok((self.metas.len() - 1) as StateId)
    }

    fn registered(&self) -> &[StateMeta] {
        &self.metas
    }

    /// Keeps the state's values as objects from now on. Restored bytes are
    /// decoded group by group, at the first typed access to a group (so a
    /// type that does not fit them fails there, naming the state and type,
    /// as a byte read would).
    fn register_typed(&mut self, state: StateId, kind: Arc<dyn TypedKind>) -> Result<bool, StateError> {
        let table = self.tables.get_mut(state as usize).ok_or_else(|| unknown(state))?;
        if table.meta.ttl.is_some() || table.meta.kind == StateKind::Map {
            return Ok(false);
        }
        if let Some(existing) = &table.typed {
            if existing.value_type() == kind.value_type() {
                return Ok(true);
            }
            return Err(StateError::Conflict {
                state: table.meta.name.clone(),
                detail: format!(
                    "registered with value type {} and again with {}; one state keeps one type",
                    existing.type_name(),
                    kind.type_name()
                ),
            });
        }
        table.typed = Some(kind);
        Ok(true)
    }

    #[inline]
    fn typed_group(&mut self, state: StateId, kg: u32) -> Result<&dyn TypedGroup, StateError> {
        Ok(&*self.typed_group_mut(state, kg)?)
    }

    #[inline]
    fn typed_group_mut(&mut self, state: StateId, kg: u32) -> Result<&mut dyn TypedGroup, StateError> {
        let slot = self.slot(kg)?;
        let table = self.tables.get_mut(state as usize).ok_or_else(|| unknown(state))?;
        let group = &mut table.groups[slot];
        if !matches!(group, Group::Typed(_)) {
            let kind = table.typed.as_ref().ok_or_else(|| not_typed(&table.meta.name))?;
            *group = Group::Typed(to_typed(&table.meta.name, group, &**kind)?);
        }
        match group {
            Group::Typed(g) => Ok(&mut **g),
            _ => unreachable!("converted above"),
        }
    }

    /// Starts the load of the key's slot in every typed state (the ones
    /// handles read per record) without waiting for any of them.
    #[inline]
    fn prefetch(&mut self, kg: u32, key: &[u8]) {
        let Ok(slot) = self.slot(kg) else { return };
        let key = HashedKey::new(key);
        for table in &self.tables {
            if let Group::Typed(g) = &table.groups[slot] {
                g.prefetch(key);
            }
        }
    }

    #[inline]
    fn get(&mut self, state: StateId, kg: u32, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        match self.group(state, kg)? {
            (_, Group::Values(m)) => match m.get(HashedKey::new(key)) {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(v);
                    Ok(true)
                }
                None => Ok(false),
            },
            (name, Group::Typed(g)) => g.get_bytes(name, key, out),
            (name, Group::Maps(_)) => Err(wrong_kind(name, "a map state")),
        }
    }

    #[inline]
    fn put(&mut self, state: StateId, kg: u32, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        match self.group_mut(state, kg)? {
            (_, Group::Values(m)) => {
                match m.get_mut(HashedKey::new(key)) {
                    Some(v) => v.set(value),
                    None => m.insert(HashedKey::new(key), Bytes::from_slice(value)),
                }
                Ok(())
            }
            (name, Group::Typed(g)) => g.put_bytes(name, key, value),
            (name, Group::Maps(_)) => Err(wrong_kind(name, "a map state")),
        }
    }

    fn append(&mut self, state: StateId, kg: u32, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        match self.group_mut(state, kg)? {
            (_, Group::Values(m)) => {
                m.get_or_insert_with(HashedKey::new(key), Bytes::new)
                    .extend_from_slice(bytes);
                Ok(())
            }
            (name, Group::Typed(g)) => g.append_bytes(name, key, bytes),
            (name, Group::Maps(_)) => Err(wrong_kind(name, "a map state")),
        }
    }

    fn remove(&mut self, state: StateId, kg: u32, key: &[u8]) -> Result<(), StateError> {
        // Pages are copied only when the key is present.
        match self.group_mut(state, kg)?.1 {
            Group::Values(m) => {
                m.remove(HashedKey::new(key));
            }
            Group::Maps(m) => {
                m.remove(HashedKey::new(key));
            }
            Group::Typed(g) => g.remove(key),
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
            (_, Group::Maps(m)) => match m.get(HashedKey::new(key)).and_then(|map| map.get(user_key)) {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(v);
                    Ok(true)
                }
                None => Ok(false),
            },
            (name, _) => Err(wrong_kind(name, "not a map state")),
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
        match self.group_mut(state, kg)? {
            (_, Group::Maps(m)) => {
                let map = m.get_or_insert_with(HashedKey::new(key), BTreeMap::new);
                match map.get_mut(user_key) {
                    Some(v) => v.set(value),
                    None => {
                        map.insert(Bytes::from_slice(user_key), Bytes::from_slice(value));
                    }
                }
                Ok(())
            }
            (name, _) => Err(wrong_kind(name, "not a map state")),
        }
    }

    fn map_remove(&mut self, state: StateId, kg: u32, key: &[u8], user_key: &[u8]) -> Result<(), StateError> {
        match self.group_mut(state, kg)? {
            (_, Group::Maps(m)) => {
                let present = m.get(HashedKey::new(key)).is_some_and(|map| map.contains_key(user_key));
                if present {
                    let emptied = m.get_mut(HashedKey::new(key)).is_some_and(|map| {
                        map.remove(user_key);
                        map.is_empty()
                    });
                    if emptied {
                        m.remove(HashedKey::new(key));
                    }
                }
                Ok(())
            }
            (name, _) => Err(wrong_kind(name, "not a map state")),
        }
    }

    fn map_entries(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        match self.group(state, kg)? {
            (_, Group::Maps(m)) => {
                if let Some(map) = m.get(HashedKey::new(key)) {
                    for (k, v) in map {
                        visit(k, v);
                    }
                }
                Ok(())
            }
            (name, _) => Err(wrong_kind(name, "not a map state")),
        }
    }

    fn for_each_key(&mut self, state: StateId, visit: &mut dyn FnMut(u32, &[u8])) -> Result<(), StateError> {
        let table = self.table(state)?;
        for (slot, group) in table.groups.iter().enumerate() {
            let kg = self.range.start + slot as u32;
            match group {
                Group::Values(m) => m.iter().for_each(|(k, _)| visit(kg, k)),
                Group::Maps(m) => m.iter().for_each(|(k, _)| visit(kg, k)),
                Group::Typed(g) => g.for_each_key(&mut |k| visit(kg, k)),
            }
        }
        Ok(())
    }

    /// Every kind of snapshot is the same copy-on-write view of the groups.
    fn snapshot(&mut self, _request: &SnapshotRequest) -> Result<BackendSnapshot, StateError> {
        let tables = self
            .tables
            .iter_mut()
            .map(|t| (t.meta.clone(), t.groups.iter_mut().map(Group::share).collect()))
            .collect();
        Ok(BackendSnapshot::KeyGroups(Box::new(HeapSnapshot {
            start: self.range.start,
            tables,
        })))
    }

    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError> {
        self.restore_group_sized(meta, kg, encoded, snapshot_codec::count_keys(meta.kind, encoded))
    }

    fn restore_group_of(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8], keys: usize) -> Result<(), StateError> {
        self.restore_group_sized(meta, kg, encoded, Some(keys))
    }
}

impl HeapKeyedStateBackend {
    /// Restore a group, its tables sized for `keys` more keys first.
    fn restore_group_sized(
        &mut self,
        meta: &StateMeta,
        kg: u32,
        encoded: &[u8],
        keys: Option<usize>,
    ) -> Result<(), StateError> {
        let id = self.register(meta)?;
        let kind = meta.kind;
        let (name, group) = self.group_mut(id, kg)?;
        if let Some(keys) = keys {
            group.reserve(keys);
        }
        snapshot_codec::decode_group(&meta.name, kind, encoded, &mut |d| {
            match (d, &mut *group) {
                (Decoded::Entry { key, value }, Group::Values(m)) => {
                    m.insert(HashedKey::new(key), Bytes::from_slice(value))
                }
                (Decoded::Entry { key, value }, Group::Typed(g)) => g.put_bytes(name, key, value)?,
                (Decoded::MapEntry { key, user_key, value }, Group::Maps(m)) => {
                    m.get_or_insert_with(HashedKey::new(key), BTreeMap::new)
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

/// A copy-on-write view of a heap backend; typed groups are encoded here,
/// on the thread that writes the snapshot.
struct HeapSnapshot {
    start: u32,
    tables: Vec<(StateMeta, Vec<Group>)>,
}

impl KeyedStateSnapshot for HeapSnapshot {
    fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        let mut buf = Vec::new();
        for (meta, groups) in &self.tables {
            for (slot, group) in groups.iter().enumerate() {
                if group.len() == 0 {
                    continue;
                }
                group.encode(&meta.name, &mut buf)?;
                visit(meta, self.start + slot as u32, &buf)?;
            }
        }
        Ok(())
    }

    fn for_each_group_or_object(
        &self,
        groups: &mut GroupVisitor<'_>,
        objects: &mut ObjectVisitor<'_>,
    ) -> Result<(), StateError> {
        let mut buf = Vec::new();
        for (meta, tables) in &self.tables {
            for (slot, group) in tables.iter().enumerate() {
                if group.len() == 0 {
                    continue;
                }
                let kg = self.start + slot as u32;
                if let Group::Typed(g) = group {
                    if g.for_each_object(&mut |key, value| objects(meta, kg, key, value))? {
                        continue;
                    }
                }
                group.encode(&meta.name, &mut buf)?;
                groups(meta, kg, &buf)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod typed_tests {
    use super::*;
    use crate::typed::{ListKind, ValueKind};
    use crate::StateTtlConfig;

    fn meta(name: &str, kind: StateKind, ttl: bool) -> StateMeta {
        StateMeta {
            name: name.into(),
            kind,
            value_type: "test".into(),
            ttl: ttl.then(|| StateTtlConfig::new(std::time::Duration::from_secs(1))),
            shapes: None,
        }
    }

    #[test]
    fn states_without_ttl_keep_objects_and_one_type_only() {
        let mut b = HeapKeyedStateBackend::new(KeyGroupRange::new(0, 4));
        let v = b.register(&meta("v", StateKind::Value, false)).unwrap();
        let t = b.register(&meta("t", StateKind::Value, true)).unwrap();
        let m = b.register(&meta("m", StateKind::Map, false)).unwrap();
        assert!(b.register_typed(v, Arc::new(ValueKind::<u64>::default())).unwrap());
        assert!(b.is_typed(v));
        assert!(b.register_typed(v, Arc::new(ValueKind::<u64>::default())).unwrap());
        let err = b
            .register_typed(v, Arc::new(ListKind::<u64>::default()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'v'") && err.contains("u64"), "{err}");
        assert!(!b.register_typed(t, Arc::new(ValueKind::<u64>::default())).unwrap());
        assert!(!b.register_typed(m, Arc::new(ValueKind::<u64>::default())).unwrap());
        assert!(!b.is_typed(t) && !b.is_typed(m));
        assert!(b.typed_group(t, 0).is_err(), "a byte state has no objects");
    }

    #[test]
    fn restored_bytes_become_objects_group_by_group() {
        let mut b = HeapKeyedStateBackend::new(KeyGroupRange::new(0, 4));
        let v = b.register(&meta("v", StateKind::Value, false)).unwrap();
        let mut bytes = Vec::new();
        crate::codec::encode_into("v", &41u64, &mut bytes).unwrap();
        b.put(v, 1, b"k", &bytes).unwrap();
        b.put(v, 2, b"k", &bytes).unwrap();
        assert!(b.register_typed(v, Arc::new(ValueKind::<u64>::default())).unwrap());
        let g = b.typed_group(v, 1).unwrap();
        let g = (g as &dyn std::any::Any)
            .downcast_ref::<crate::typed::ValueGroup<u64>>()
            .unwrap();
        assert_eq!(g.get(HashedKey::new(b"k")), Some(&41));
        // Group 2 is still bytes until touched; byte reads see the same value either way.
        let mut out = Vec::new();
        assert!(b.get(v, 2, b"k", &mut out).unwrap());
        assert_eq!(out, bytes);
        assert_eq!(b.key_count(v), 2);
    }
}
