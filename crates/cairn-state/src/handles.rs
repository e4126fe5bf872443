//! Typed state handles. A user function registers its states once (in `open`)
//! and keeps the returned handles; each access goes through the context the
//! runtime passes in, which knows the current key (and window namespace).
//!
//! When the backend keeps a state's values as objects ([`crate::typed`]: the
//! heap backend, for states without TTL), an access is a hash-map lookup and
//! a clone; otherwise values are encoded and decoded on every access.
//!
//! ```ignore
//! self.count = ctx.value_state(ValueStateDescriptor::<u64>::new("count"))?;
//! let n = self.count.value(ctx)?.unwrap_or(0) + 1;
//! self.count.update(ctx, &n)?;
//! ```

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{self, get_bytes, put_bytes};
use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, StateMeta,
    StateTtlConfig, TtlUpdateType, ValueStateDescriptor,
};
use crate::error::StateError;
use crate::heap::HeapKeyedStateBackend;
use crate::page_table::key_hash;
use crate::query::{self, QueryableSlot, QueryableState};
use crate::typed::{HashedKey, ListGroup, ListKind, StateValue, TypedKind, ValueGroup, ValueKind};

/// Anything that gives access to keyed state for the current key: the runtime's
/// keyed contexts implement this.
pub trait StateContext {
    fn state_access(&mut self) -> &mut KeyedStateAccess;
}

impl StateContext for KeyedStateAccess {
    fn state_access(&mut self) -> &mut KeyedStateAccess {
        self
    }
}

/// A subtask's keyed state: the backend plus the current key, key group and
/// namespace that every typed access is scoped to.
pub struct KeyedStateAccess {
    backend: Backend,
    key_group: u32,
    has_key: bool,
    key_len: usize,
    /// Current key bytes followed by the current namespace bytes.
    composite: Vec<u8>,
    /// The hash of `composite` for typed groups, computed at its first use
    /// after each change (one hash per record, not one per access).
    composite_hash: Option<u64>,
    /// Where the last typed value read found its key: (state, slot hint),
    /// so that the update of a read-modify-write does not probe again. Only
    /// a hint: the slot is checked to hold the key before it is written.
    read_slot: Option<(StateId, usize)>,
    now_ms: u64,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// States marked `queryable(..)`, answered by [`KeyedStateAccess::query`].
    queryable: Vec<QueryableSlot>,
}

/// The backend of a state access: the heap backend by its own type, so that
/// typed accesses (several per record) call it directly instead of through
/// the trait object; any other behind the trait.
enum Backend {
    Heap(Box<HeapKeyedStateBackend>),
    Other(Box<dyn KeyedStateBackend>),
}

impl Backend {
    fn new(backend: Box<dyn KeyedStateBackend>) -> Self {
        if !(&*backend as &dyn Any).is::<HeapKeyedStateBackend>() {
            return Backend::Other(backend);
        }
        let any: Box<dyn Any> = backend;
        match any.downcast() {
            Ok(heap) => Backend::Heap(heap),
            Err(_) => unreachable!("checked to be the heap backend above"),
        }
    }
}

impl std::ops::Deref for Backend {
    type Target = dyn KeyedStateBackend;
    fn deref(&self) -> &Self::Target {
        match self {
            Backend::Heap(heap) => &**heap,
            Backend::Other(other) => &**other,
        }
    }
}

impl std::ops::DerefMut for Backend {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Backend::Heap(heap) => &mut **heap,
            Backend::Other(other) => &mut **other,
        }
    }
}

impl KeyedStateAccess {
    /// Wrap a backend; no key is current yet.
    pub fn new(backend: Box<dyn KeyedStateBackend>) -> Self {
        KeyedStateAccess {
            backend: Backend::new(backend),
            key_group: 0,
            has_key: false,
            key_len: 0,
            composite: Vec::with_capacity(64),
            composite_hash: None,
            read_slot: None,
            now_ms: 0,
            buf: Vec::with_capacity(64),
            scratch: Vec::with_capacity(64),
            queryable: Vec::new(),
        }
    }

    /// Make `key_bytes` (in key group `kg`) the current key, with no namespace.
    #[inline]
    pub fn set_current_key(&mut self, key_bytes: &[u8], kg: u32) {
        self.composite.clear();
        self.composite.extend_from_slice(key_bytes);
        self.composite_hash = None;
        self.key_len = key_bytes.len();
        self.key_group = kg;
        self.has_key = true;
    }

    /// Hint that `key_bytes` (in key group `kg`, no namespace) will be the
    /// current key soon ([`KeyedStateBackend::prefetch`]).
    #[inline]
    pub fn prefetch(&mut self, key_bytes: &[u8], kg: u32) {
        match &mut self.backend {
            Backend::Heap(heap) => heap.prefetch(kg, key_bytes),
            Backend::Other(other) => other.prefetch(kg, key_bytes),
        }
    }

    /// Scope later accesses to `namespace` (a window's encoding); empty = none.
    #[inline]
    pub fn set_namespace(&mut self, namespace: &[u8]) {
        self.composite.truncate(self.key_len);
        self.composite.extend_from_slice(namespace);
        self.composite_hash = None;
    }

    /// The current key's bytes.
    pub fn current_key_bytes(&self) -> &[u8] {
        &self.composite[..self.key_len]
    }

    /// The current key's group.
    pub fn current_key_group(&self) -> u32 {
        self.key_group
    }

    /// Processing time used for TTL decisions, set by the runtime.
    pub fn set_processing_time(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// The backend, for snapshots and restores.
    pub fn backend_mut(&mut self) -> &mut dyn KeyedStateBackend {
        &mut *self.backend
    }

    /// Register a value state.
    pub fn value_state<T: StateValue>(&mut self, d: ValueStateDescriptor<T>) -> Result<ValueState<T>, StateError> {
        Ok(ValueState {
            slot: self.register_typed(d.meta(), d.queryable.as_deref(), ValueKind::<T>::default())?,
            _t: PhantomData,
        })
    }

    /// Register a list state.
    pub fn list_state<T: StateValue>(&mut self, d: ListStateDescriptor<T>) -> Result<ListState<T>, StateError> {
        Ok(ListState {
            slot: self.register_typed(d.meta(), d.queryable.as_deref(), ListKind::<T>::default())?,
            _t: PhantomData,
        })
    }

    /// Register a map state.
    pub fn map_state<K: DeserializeOwned, V: DeserializeOwned>(
        &mut self,
        d: MapStateDescriptor<K, V>,
    ) -> Result<MapState<K, V>, StateError> {
        Ok(MapState {
            slot: self.register(d.meta(), d.queryable.as_deref())?,
            _t: PhantomData,
        })
    }

    /// Register a reducing state with its reduce function.
    pub fn reducing_state<T: StateValue>(
        &mut self,
        d: ReducingStateDescriptor<T>,
        reduce: impl Fn(T, T) -> T + Send + Sync + 'static,
    ) -> Result<ReducingState<T>, StateError> {
        Ok(ReducingState {
            slot: self.register_typed(d.meta(), d.queryable.as_deref(), ValueKind::<T>::default())?,
            reduce: Arc::new(reduce),
        })
    }

    /// Register an aggregating state with its aggregate function.
    pub fn aggregating_state<IN, F: AggregateFunction<IN>>(
        &mut self,
        d: AggregatingStateDescriptor<IN, F::Acc>,
        function: F,
    ) -> Result<AggregatingState<IN, F>, StateError> {
        Ok(AggregatingState {
            slot: self.register_typed(d.meta(), d.queryable.as_deref(), ValueKind::<F::Acc>::default())?,
            function: Arc::new(function),
            _t: PhantomData,
        })
    }

    fn register(&mut self, meta: StateMeta, queryable: Option<&str>) -> Result<Slot, StateError> {
        let id = self.backend.register(&meta)?;
        if let Some(name) = queryable {
            query::add(
                &mut self.queryable,
                QueryableSlot {
                    info: QueryableState {
                        name: name.to_string(),
                        state: meta.name.clone(),
                        kind: meta.kind,
                        value_type: meta.value_type.clone(),
                    },
                    id,
                    ttl: meta.ttl,
                },
            )?;
        }
        Ok(Slot {
            id,
            name: meta.name.into(),
            ttl: meta.ttl,
            typed: false,
        })
    }

    /// The states registered as queryable, in registration order.
    pub fn queryable_states(&self) -> Vec<QueryableState> {
        self.queryable.iter().map(|q| q.info.clone()).collect()
    }

    /// A live query: the current value of `key` (key bytes, in key group
    /// `kg`) in the state queryable as `name`, as JSON (`None`: nothing
    /// live). Only reads ([`crate::query`]); the current key is untouched.
    pub fn query(&mut self, name: &str, key: &[u8], kg: u32) -> Result<Option<serde_json::Value>, StateError> {
        let slot = self.queryable.iter().find(|q| q.info.name == name).ok_or_else(|| {
            StateError::Usage(format!(
                "no state is queryable as '{name}' here; queryable: {}",
                self.queryable
                    .iter()
                    .map(|q| q.info.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let range = self.backend.key_group_range();
        if !range.contains(kg) {
            return Err(StateError::Usage(format!(
                "key group {kg} belongs to another subtask (this one holds {}..={})",
                range.start,
                range.end_exclusive.saturating_sub(1)
            )));
        }
        // TTL is judged at the time of the query, like a read by the operator.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .max(self.now_ms);
        query::read(&mut *self.backend, slot, key, kg, now)
    }

    /// Register, and have the backend keep the values as objects of `kind`
    /// when it can (not for states with a TTL).
    fn register_typed(
        &mut self,
        meta: StateMeta,
        queryable: Option<&str>,
        kind: impl TypedKind + 'static,
    ) -> Result<Slot, StateError> {
        let mut slot = self.register(meta, queryable)?;
        if slot.ttl.is_none() {
            slot.typed = self.backend.register_typed(slot.id, Arc::new(kind))?;
        }
        Ok(slot)
    }

    /// The current key's typed group `G` of a typed state, and the key.
    #[inline]
    fn typed<G: Any>(&mut self, slot: &Slot) -> Result<(&G, HashedKey<'_>), StateError> {
        self.require_key(slot)?;
        let hash = self.composite_hash();
        let group = match &mut self.backend {
            Backend::Heap(heap) => heap.typed_group(slot.id, self.key_group)?,
            Backend::Other(other) => other.typed_group(slot.id, self.key_group)?,
        };
        let group = (group as &dyn Any).downcast_ref::<G>().ok_or_else(|| mismatch(slot))?;
        Ok((group, HashedKey::with_hash(&self.composite, hash)))
    }

    /// [`KeyedStateAccess::typed`] for writing.
    #[inline]
    fn typed_mut<G: Any>(&mut self, slot: &Slot) -> Result<(&mut G, HashedKey<'_>), StateError> {
        self.require_key(slot)?;
        let hash = self.composite_hash();
        let group = match &mut self.backend {
            Backend::Heap(heap) => heap.typed_group_mut(slot.id, self.key_group)?,
            Backend::Other(other) => other.typed_group_mut(slot.id, self.key_group)?,
        };
        let group = (group as &mut dyn Any)
            .downcast_mut::<G>()
            .ok_or_else(|| mismatch(slot))?;
        Ok((group, HashedKey::with_hash(&self.composite, hash)))
    }

    #[inline]
    fn composite_hash(&mut self) -> u64 {
        *self.composite_hash.get_or_insert_with(|| key_hash(&self.composite))
    }

    fn require_key(&self, slot: &Slot) -> Result<(), StateError> {
        if self.has_key {
            Ok(())
        } else {
            Err(StateError::Usage(format!(
                "keyed state '{}' was accessed with no current key; keyed state is only available while processing a record or timer of a keyed stream",
                slot.name
            )))
        }
    }

    /// Read the raw value of the current key into `self.buf`, applying TTL.
    fn read_raw(&mut self, slot: &Slot) -> Result<bool, StateError> {
        self.require_key(slot)?;
        let found = self
            .backend
            .get(slot.id, self.key_group, &self.composite, &mut self.buf)?;
        if !found {
            return Ok(false);
        }
        if let Some(ttl) = slot.ttl {
            let ts = read_ts(&slot.name, &self.buf)?;
            if expired(ts, ttl, self.now_ms) {
                self.backend.remove(slot.id, self.key_group, &self.composite)?;
                return Ok(false);
            }
            if ttl.update_type == TtlUpdateType::OnReadAndWrite {
                self.buf[..8].copy_from_slice(&self.now_ms.to_le_bytes());
                self.backend.put(slot.id, self.key_group, &self.composite, &self.buf)?;
            }
        }
        Ok(true)
    }

    fn payload<'a>(slot: &Slot, raw: &'a [u8]) -> &'a [u8] {
        if slot.ttl.is_some() {
            &raw[8..]
        } else {
            raw
        }
    }

    fn write_value<T: Serialize>(&mut self, slot: &Slot, value: &T) -> Result<(), StateError> {
        self.require_key(slot)?;
        self.buf.clear();
        if slot.ttl.is_some() {
            self.buf.extend_from_slice(&self.now_ms.to_le_bytes());
        }
        codec::append(&slot.name, value, &mut self.buf)?;
        self.backend.put(slot.id, self.key_group, &self.composite, &self.buf)
    }

    fn clear(&mut self, slot: &Slot) -> Result<(), StateError> {
        self.require_key(slot)?;
        self.backend.remove(slot.id, self.key_group, &self.composite)
    }
}

fn mismatch(slot: &Slot) -> StateError {
    StateError::Usage(format!(
        "state '{}' is kept as another type than this handle's; register each state with one type",
        slot.name
    ))
}

fn read_ts(state: &str, raw: &[u8]) -> Result<u64, StateError> {
    raw.get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| StateError::Codec {
            state: state.to_string(),
            detail: "TTL timestamp missing".into(),
        })
}

fn expired(ts: u64, ttl: StateTtlConfig, now: u64) -> bool {
    ts.saturating_add(ttl.ttl_ms) <= now
}

/// The registration of one state: its id, name (for errors) and TTL.
#[derive(Clone, Debug)]
struct Slot {
    id: StateId,
    name: Arc<str>,
    ttl: Option<StateTtlConfig>,
    /// The backend keeps this state's values as objects.
    typed: bool,
}

/// One value per key.
#[derive(Clone, Debug)]
pub struct ValueState<T> {
    slot: Slot,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ValueState<T> {
    /// The current key's value, if any.
    #[inline]
    pub fn value<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Option<T>, StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let (group, key) = a.typed::<ValueGroup<T>>(&self.slot)?;
            let found = group.get_indexed(key).map(|(v, i)| (v.clone(), i));
            a.read_slot = found.as_ref().map(|(_, i)| (self.slot.id, *i));
            return Ok(found.map(|(v, _)| v));
        }
        if !a.read_raw(&self.slot)? {
            return Ok(None);
        }
        codec::decode(&self.slot.name, KeyedStateAccess::payload(&self.slot, &a.buf)).map(Some)
    }

    /// Set the current key's value.
    #[inline]
    pub fn update<C: StateContext + ?Sized>(&self, ctx: &mut C, value: &T) -> Result<(), StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let hint = a.read_slot.take().filter(|(id, _)| *id == self.slot.id);
            let (group, key) = a.typed_mut::<ValueGroup<T>>(&self.slot)?;
            match hint {
                Some((_, i)) => group.insert_hinted(key, value.clone(), i),
                None => group.insert(key, value.clone()),
            }
            return Ok(());
        }
        a.write_value(&self.slot, value)
    }

    /// Remove the current key's value.
    pub fn clear<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<(), StateError> {
        ctx.state_access().clear(&self.slot)
    }
}

/// A list of values per key.
#[derive(Clone, Debug)]
pub struct ListState<T> {
    slot: Slot,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ListState<T> {
    /// The current key's elements (empty when none).
    pub fn get<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Vec<T>, StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let (group, key) = a.typed::<ListGroup<T>>(&self.slot)?;
            return Ok(group.get(key).cloned().unwrap_or_default());
        }
        a.require_key(&self.slot)?;
        if !a.backend.get(self.slot.id, a.key_group, &a.composite, &mut a.buf)? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut rest: &[u8] = &a.buf;
        let mut dropped = false;
        let mut refreshed = false;
        a.scratch.clear();
        while !rest.is_empty() {
            let (elem, r) = get_bytes(rest).ok_or_else(|| StateError::Codec {
                state: self.slot.name.to_string(),
                detail: "list element framing is corrupt".into(),
            })?;
            rest = r;
            let payload = match self.slot.ttl {
                Some(ttl) => {
                    if expired(read_ts(&self.slot.name, elem)?, ttl, a.now_ms) {
                        dropped = true;
                        continue;
                    }
                    put_bytes(&mut a.scratch, elem);
                    if ttl.update_type == TtlUpdateType::OnReadAndWrite {
                        // The element's bytes end the scratch buffer; restart its clock.
                        let at = a.scratch.len() - elem.len();
                        a.scratch[at..at + 8].copy_from_slice(&a.now_ms.to_le_bytes());
                        refreshed = true;
                    }
                    &elem[8..]
                }
                None => elem,
            };
            out.push(codec::decode(&self.slot.name, payload)?);
        }
        if dropped || refreshed {
            if a.scratch.is_empty() {
                a.backend.remove(self.slot.id, a.key_group, &a.composite)?;
            } else {
                a.backend.put(self.slot.id, a.key_group, &a.composite, &a.scratch)?;
            }
        }
        Ok(out)
    }

    /// Append one element.
    pub fn add<C: StateContext + ?Sized>(&self, ctx: &mut C, value: &T) -> Result<(), StateError> {
        self.add_is_first(ctx, value).map(|_| ())
    }

    /// [`add`](Self::add), telling whether the current key's list had no
    /// element before, so a caller sets up once what a new list needs (a
    /// window's timers): `Some` where the backend keeps lists as objects and
    /// learns it from the same lookup (the heap backend), `None` where it
    /// appends bytes without reading them (RocksDB's merge), as finding out
    /// there would cost a read.
    pub fn add_is_first<C: StateContext + ?Sized>(&self, ctx: &mut C, value: &T) -> Result<Option<bool>, StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let (group, key) = a.typed_mut::<ListGroup<T>>(&self.slot)?;
            return Ok(Some(group.push(key, value.clone())));
        }
        a.require_key(&self.slot)?;
        a.scratch.clear();
        if self.slot.ttl.is_some() {
            a.scratch.extend_from_slice(&a.now_ms.to_le_bytes());
        }
        codec::append(&self.slot.name, value, &mut a.scratch)?;
        a.buf.clear();
        put_bytes(&mut a.buf, &a.scratch);
        a.backend.append(self.slot.id, a.key_group, &a.composite, &a.buf)?;
        Ok(None)
    }

    /// Replace the current key's elements.
    pub fn update<C: StateContext + ?Sized>(&self, ctx: &mut C, values: &[T]) -> Result<(), StateError> {
        if self.slot.typed {
            let (group, key) = ctx.state_access().typed_mut::<ListGroup<T>>(&self.slot)?;
            group.set(key, values.to_vec());
            return Ok(());
        }
        self.clear(ctx)?;
        for v in values {
            self.add(ctx, v)?;
        }
        Ok(())
    }

    /// Remove the current key's elements.
    pub fn clear<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<(), StateError> {
        ctx.state_access().clear(&self.slot)
    }
}

/// A map of user keys to values per key.
#[derive(Clone, Debug)]
pub struct MapState<K, V> {
    slot: Slot,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    /// The value under `user_key` for the current key.
    pub fn get<C: StateContext + ?Sized>(&self, ctx: &mut C, user_key: &K) -> Result<Option<V>, StateError> {
        let a = ctx.state_access();
        a.require_key(&self.slot)?;
        codec::encode_into(&self.slot.name, user_key, &mut a.scratch)?;
        if !a
            .backend
            .map_get(self.slot.id, a.key_group, &a.composite, &a.scratch, &mut a.buf)?
        {
            return Ok(None);
        }
        if let Some(ttl) = self.slot.ttl {
            if expired(read_ts(&self.slot.name, &a.buf)?, ttl, a.now_ms) {
                a.backend
                    .map_remove(self.slot.id, a.key_group, &a.composite, &a.scratch)?;
                return Ok(None);
            }
            if ttl.update_type == TtlUpdateType::OnReadAndWrite {
                a.buf[..8].copy_from_slice(&a.now_ms.to_le_bytes());
                a.backend
                    .map_put(self.slot.id, a.key_group, &a.composite, &a.scratch, &a.buf)?;
            }
        }
        codec::decode(&self.slot.name, KeyedStateAccess::payload(&self.slot, &a.buf)).map(Some)
    }

    /// Set the value under `user_key`.
    pub fn put<C: StateContext + ?Sized>(&self, ctx: &mut C, user_key: &K, value: &V) -> Result<(), StateError> {
        let a = ctx.state_access();
        a.require_key(&self.slot)?;
        codec::encode_into(&self.slot.name, user_key, &mut a.scratch)?;
        a.buf.clear();
        if self.slot.ttl.is_some() {
            a.buf.extend_from_slice(&a.now_ms.to_le_bytes());
        }
        codec::append(&self.slot.name, value, &mut a.buf)?;
        a.backend
            .map_put(self.slot.id, a.key_group, &a.composite, &a.scratch, &a.buf)
    }

    /// Remove the entry under `user_key`.
    pub fn remove<C: StateContext + ?Sized>(&self, ctx: &mut C, user_key: &K) -> Result<(), StateError> {
        let a = ctx.state_access();
        a.require_key(&self.slot)?;
        codec::encode_into(&self.slot.name, user_key, &mut a.scratch)?;
        a.backend
            .map_remove(self.slot.id, a.key_group, &a.composite, &a.scratch)
    }

    /// Whether `user_key` has a live entry.
    pub fn contains<C: StateContext + ?Sized>(&self, ctx: &mut C, user_key: &K) -> Result<bool, StateError> {
        Ok(self.get(ctx, user_key)?.is_some())
    }

    /// All live entries of the current key, in user-key byte order.
    pub fn entries<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Vec<(K, V)>, StateError> {
        let a = ctx.state_access();
        a.require_key(&self.slot)?;
        if self.slot.ttl.is_none() {
            // Nothing to expire or refresh while scanning: decode in place.
            let mut out = Vec::new();
            let mut failed = None;
            a.backend
                .map_entries(self.slot.id, a.key_group, &a.composite, &mut |k, v| {
                    if failed.is_none() {
                        match (codec::decode(&self.slot.name, k), codec::decode(&self.slot.name, v)) {
                            (Ok(k), Ok(v)) => out.push((k, v)),
                            (Err(e), _) | (_, Err(e)) => failed = Some(e),
                        }
                    }
                })?;
            return match failed {
                Some(e) => Err(e),
                None => Ok(out),
            };
        }
        let mut raw: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        a.backend
            .map_entries(self.slot.id, a.key_group, &a.composite, &mut |k, v| {
                raw.push((k.to_vec(), v.to_vec()))
            })?;
        let mut out = Vec::with_capacity(raw.len());
        for (k, mut v) in raw {
            if let Some(ttl) = self.slot.ttl {
                if expired(read_ts(&self.slot.name, &v)?, ttl, a.now_ms) {
                    a.backend.map_remove(self.slot.id, a.key_group, &a.composite, &k)?;
                    continue;
                }
                if ttl.update_type == TtlUpdateType::OnReadAndWrite {
                    v[..8].copy_from_slice(&a.now_ms.to_le_bytes());
                    a.backend.map_put(self.slot.id, a.key_group, &a.composite, &k, &v)?;
                }
            }
            let key = codec::decode(&self.slot.name, &k)?;
            let value = codec::decode(&self.slot.name, KeyedStateAccess::payload(&self.slot, &v))?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// The live user keys of the current key.
    pub fn keys<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Vec<K>, StateError> {
        Ok(self.entries(ctx)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Whether the current key's map has no live entries.
    pub fn is_empty<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<bool, StateError> {
        Ok(self.entries(ctx)?.is_empty())
    }

    /// Remove the current key's whole map.
    pub fn clear<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<(), StateError> {
        ctx.state_access().clear(&self.slot)
    }
}

/// A value per key that folds added values with a reduce function.
#[derive(Clone)]
pub struct ReducingState<T> {
    slot: Slot,
    reduce: Arc<dyn Fn(T, T) -> T + Send + Sync>,
}

impl<T: StateValue> ReducingState<T> {
    /// The reduced value of the current key.
    pub fn get<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Option<T>, StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let (group, key) = a.typed::<ValueGroup<T>>(&self.slot)?;
            return Ok(group.get(key).cloned());
        }
        if !a.read_raw(&self.slot)? {
            return Ok(None);
        }
        codec::decode(&self.slot.name, KeyedStateAccess::payload(&self.slot, &a.buf)).map(Some)
    }

    /// Fold `value` into the current key's value.
    pub fn add<C: StateContext + ?Sized>(&self, ctx: &mut C, value: T) -> Result<(), StateError> {
        self.add_is_first(ctx, value).map(|_| ())
    }

    /// [`add`](Self::add), telling whether the current key had no value
    /// before, so a caller sets up once what a new key needs (a window's
    /// timers) without a lookup of its own.
    pub fn add_is_first<C: StateContext + ?Sized>(&self, ctx: &mut C, value: T) -> Result<bool, StateError> {
        if self.slot.typed {
            let (group, key) = ctx.state_access().typed_mut::<ValueGroup<T>>(&self.slot)?;
            return Ok(match group.get_mut(key) {
                Some(acc) => {
                    *acc = (self.reduce)(acc.clone(), value);
                    false
                }
                None => {
                    group.insert(key, value);
                    true
                }
            });
        }
        let (next, first) = match self.get(ctx)? {
            Some(acc) => ((self.reduce)(acc, value), false),
            None => (value, true),
        };
        ctx.state_access().write_value(&self.slot, &next)?;
        Ok(first)
    }

    /// Remove the current key's value.
    pub fn clear<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<(), StateError> {
        ctx.state_access().clear(&self.slot)
    }
}

/// An incremental aggregation: accumulator creation, adding, merging, result.
pub trait AggregateFunction<IN>: Send + Sync + 'static {
    /// Kept in state (as an object where the backend can).
    type Acc: StateValue;
    type Out;
    fn create_accumulator(&self) -> Self::Acc;
    fn add(&self, value: &IN, acc: &mut Self::Acc);
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// A value per key that aggregates added inputs into an accumulator.
pub struct AggregatingState<IN, F: AggregateFunction<IN>> {
    slot: Slot,
    function: Arc<F>,
    _t: PhantomData<fn() -> IN>,
}

impl<IN, F: AggregateFunction<IN>> Clone for AggregatingState<IN, F> {
    fn clone(&self) -> Self {
        AggregatingState {
            slot: self.slot.clone(),
            function: self.function.clone(),
            _t: PhantomData,
        }
    }
}

impl<IN, F: AggregateFunction<IN>> AggregatingState<IN, F> {
    /// The current key's accumulator, if any.
    pub fn accumulator<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Option<F::Acc>, StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let (group, key) = a.typed::<ValueGroup<F::Acc>>(&self.slot)?;
            return Ok(group.get(key).cloned());
        }
        if !a.read_raw(&self.slot)? {
            return Ok(None);
        }
        codec::decode(&self.slot.name, KeyedStateAccess::payload(&self.slot, &a.buf)).map(Some)
    }

    /// The current key's aggregate result, if any input was added.
    pub fn get<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<Option<F::Out>, StateError> {
        if self.slot.typed {
            let (group, key) = ctx.state_access().typed::<ValueGroup<F::Acc>>(&self.slot)?;
            return Ok(group.get(key).map(|acc| self.function.get_result(acc)));
        }
        Ok(self.accumulator(ctx)?.map(|acc| self.function.get_result(&acc)))
    }

    /// Add one input.
    pub fn add<C: StateContext + ?Sized>(&self, ctx: &mut C, value: &IN) -> Result<(), StateError> {
        self.add_is_first(ctx, value).map(|_| ())
    }

    /// [`add`](Self::add), telling whether the current key had no
    /// accumulator before (see [`ReducingState::add_is_first`]).
    pub fn add_is_first<C: StateContext + ?Sized>(&self, ctx: &mut C, value: &IN) -> Result<bool, StateError> {
        if self.slot.typed {
            let (group, key) = ctx.state_access().typed_mut::<ValueGroup<F::Acc>>(&self.slot)?;
            let mut first = false;
            let acc = group.get_or_insert_with(key, || {
                first = true;
                self.function.create_accumulator()
            });
            self.function.add(value, acc);
            return Ok(first);
        }
        let (mut acc, first) = match self.accumulator(ctx)? {
            Some(acc) => (acc, false),
            None => (self.function.create_accumulator(), true),
        };
        self.function.add(value, &mut acc);
        ctx.state_access().write_value(&self.slot, &acc)?;
        Ok(first)
    }

    /// Replace the accumulator (used when merging session windows).
    pub fn set_accumulator<C: StateContext + ?Sized>(&self, ctx: &mut C, acc: &F::Acc) -> Result<(), StateError> {
        let a = ctx.state_access();
        if self.slot.typed {
            let (group, key) = a.typed_mut::<ValueGroup<F::Acc>>(&self.slot)?;
            group.insert(key, acc.clone());
            return Ok(());
        }
        a.write_value(&self.slot, acc)
    }

    /// The aggregate function.
    pub fn function(&self) -> &F {
        &self.function
    }

    /// Remove the current key's accumulator.
    pub fn clear<C: StateContext + ?Sized>(&self, ctx: &mut C) -> Result<(), StateError> {
        ctx.state_access().clear(&self.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::MapStateDescriptor;
    use crate::keygroup::KeyGroupRange;
    use crate::HeapKeyedStateBackend;

    /// State access over a heap backend of one key group.
    fn heap_access() -> KeyedStateAccess {
        let range = KeyGroupRange {
            start: 0,
            end_exclusive: 1,
        };
        KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(range)))
    }

    /// Map entries are decoded while the backend scans them; one that does
    /// not decode as the map's types fails the read, naming the state,
    /// rather than being skipped.
    #[test]
    fn map_entries_decode_and_a_bad_entry_is_an_error_naming_the_state() {
        let mut a = heap_access();
        let tags = a.map_state(MapStateDescriptor::<String, u32>::new("tags")).unwrap();
        a.set_current_key(b"k", 0);
        tags.put(&mut a, &"b".to_string(), &2).unwrap();
        tags.put(&mut a, &"a".to_string(), &1).unwrap();
        let mut entries = tags.entries(&mut a).unwrap();
        entries.sort();
        assert_eq!(entries, [("a".to_string(), 1), ("b".to_string(), 2)]);

        let id = a
            .backend_mut()
            .registered()
            .iter()
            .position(|m| m.name == "tags")
            .unwrap() as StateId;
        // MessagePack "c" mapped to 0xc1, a byte MessagePack never uses.
        a.backend_mut().map_put(id, 0, b"k", &[0xa1, b'c'], &[0xc1]).unwrap();
        let err = tags.entries(&mut a).unwrap_err().to_string();
        assert!(err.contains("state 'tags'") && err.contains("decoded"), "{err}");
    }

    /// A list kept as objects (the heap backend, no TTL) says whether an
    /// add is the key's first element; the byte path (here: with TTL)
    /// cannot tell without a read and says so.
    #[test]
    fn a_list_add_tells_whether_it_is_the_first_element_where_that_is_free() {
        use crate::descriptor::{ListStateDescriptor, StateTtlConfig};
        let mut a = heap_access();
        let list = a.list_state(ListStateDescriptor::<u32>::new("list")).unwrap();
        let ttl = std::time::Duration::from_secs(60);
        let aged = a
            .list_state(ListStateDescriptor::<u32>::new("aged").with_ttl(StateTtlConfig::new(ttl)))
            .unwrap();
        a.set_current_key(b"k", 0);
        assert_eq!(list.add_is_first(&mut a, &1).unwrap(), Some(true));
        assert_eq!(list.add_is_first(&mut a, &2).unwrap(), Some(false));
        a.set_current_key(b"other", 0);
        assert_eq!(list.add_is_first(&mut a, &3).unwrap(), Some(true));
        a.set_current_key(b"k", 0);
        assert_eq!(list.get(&mut a).unwrap(), [1, 2]);
        list.clear(&mut a).unwrap();
        assert_eq!(list.add_is_first(&mut a, &4).unwrap(), Some(true));
        list.update(&mut a, &[]).unwrap();
        assert_eq!(list.add_is_first(&mut a, &5).unwrap(), Some(true));
        assert_eq!(aged.add_is_first(&mut a, &6).unwrap(), None);
        assert_eq!(aged.add_is_first(&mut a, &7).unwrap(), None);
        assert_eq!(aged.get(&mut a).unwrap(), [6, 7]);
    }

    /// A read-modify-write probes once: the update reuses the slot the read
    /// found. Whatever happens between the two (another key, another state,
    /// a clear, a snapshot sharing the pages), the update lands on the
    /// current key of its own state only.
    #[test]
    fn an_update_after_a_read_writes_the_current_key_of_its_own_state_only() {
        use crate::descriptor::ValueStateDescriptor;
        let mut a = heap_access();
        let count = a.value_state(ValueStateDescriptor::<u64>::new("count")).unwrap();
        let sum = a.value_state(ValueStateDescriptor::<u64>::new("sum")).unwrap();
        let key = |i: u64| i.to_be_bytes();
        for i in 0..100u64 {
            a.set_current_key(&key(i), 0);
            count.update(&mut a, &i).unwrap();
            sum.update(&mut a, &(i * 10)).unwrap();
        }
        // Read key 1, write key 2.
        a.set_current_key(&key(1), 0);
        assert_eq!(count.value(&mut a).unwrap(), Some(1));
        a.set_current_key(&key(2), 0);
        count.update(&mut a, &7).unwrap();
        // Read one state, write the other.
        assert_eq!(count.value(&mut a).unwrap(), Some(7));
        sum.update(&mut a, &70).unwrap();
        // Read, clear, write.
        a.set_current_key(&key(3), 0);
        assert_eq!(count.value(&mut a).unwrap(), Some(3));
        count.clear(&mut a).unwrap();
        count.update(&mut a, &33).unwrap();
        // Read, snapshot (the pages become shared), write: the snapshot keeps
        // the old value.
        a.set_current_key(&key(4), 0);
        assert_eq!(count.value(&mut a).unwrap(), Some(4));
        let snapshot = a
            .backend_mut()
            .snapshot(&crate::backend::SnapshotRequest::checkpoint(1))
            .unwrap();
        count.update(&mut a, &44).unwrap();
        // Read, then write thousands of other keys (the first one is given
        // the read's slot; the table grows and its pages split), then write
        // the key read.
        a.set_current_key(&key(5), 0);
        assert_eq!(count.value(&mut a).unwrap(), Some(5));
        let old_key = key(5);
        for i in 1_000..5_000u64 {
            a.set_current_key(&key(i), 0);
            count.update(&mut a, &i).unwrap();
        }
        a.set_current_key(&old_key, 0);
        count.update(&mut a, &55).unwrap();

        let mut want: Vec<(u64, Option<u64>, Option<u64>)> = (0..100).map(|i| (i, Some(i), Some(i * 10))).collect();
        want[1] = (1, Some(1), Some(10));
        want[2] = (2, Some(7), Some(70));
        want[3] = (3, Some(33), Some(30));
        want[4] = (4, Some(44), Some(40));
        want[5] = (5, Some(55), Some(50));
        for (i, c, s) in want {
            a.set_current_key(&key(i), 0);
            assert_eq!((i, count.value(&mut a).unwrap(), sum.value(&mut a).unwrap()), (i, c, s));
        }
        for i in 1_000..5_000u64 {
            a.set_current_key(&key(i), 0);
            assert_eq!(count.value(&mut a).unwrap(), Some(i));
        }
        // The snapshot holds key 4's count from before the write.
        let mut counts = 0;
        snapshot
            .for_each_group(&mut |meta, _kg, encoded| {
                if &*meta.name == "count" {
                    crate::snapshot_codec::decode_group(&meta.name, meta.kind, encoded, &mut |d| {
                        if let crate::snapshot_codec::Decoded::Entry { key: k, value } = d {
                            counts += 1;
                            if k == key(4) {
                                assert_eq!(crate::codec::decode::<u64>("count", value).unwrap(), 4);
                            }
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(counts, 100);
    }
}
