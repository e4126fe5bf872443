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

use crate::backend::{GroupVisitor, KeyedStateBackend, KeyedStateSnapshot, StateId};
use crate::descriptor::{StateKind, StateMeta};
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;
use crate::snapshot_codec::{self, Decoded};

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
type Bytes = Vec<u8>;

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
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                m.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    fn append(&mut self, state: StateId, kg: u32, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        let m = self.values_mut(state, kg)?;
        match m.get_mut(key) {
            Some(v) => v.extend_from_slice(bytes),
            None => {
                m.insert(key.to_vec(), bytes.to_vec());
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
            None => m.entry(key.to_vec()).or_default(),
        };
        map.insert(user_key.to_vec(), value.to_vec());
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

    fn snapshot(&mut self) -> Result<Box<dyn KeyedStateSnapshot>, StateError> {
        let tables = self.tables.iter().map(|t| (t.meta.clone(), t.groups.clone())).collect();
        Ok(Box::new(HeapSnapshot {
            start: self.range.start,
            tables,
        }))
    }

    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError> {
        let id = self.register(meta)?;
        let kind = meta.kind;
        let group = self.group_mut(id, kg)?;
        snapshot_codec::decode_group(&meta.name, kind, encoded, &mut |d| {
            match (d, &mut *group) {
                (Decoded::Entry { key, value }, Group::Values(m)) => {
                    m.insert(key.to_vec(), value.to_vec());
                }
                (Decoded::MapEntry { key, user_key, value }, Group::Maps(m)) => {
                    m.entry(key.to_vec())
                        .or_default()
                        .insert(user_key.to_vec(), value.to_vec());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[test]
    fn heap_backend_passes_the_conformance_suite() {
        conformance::run_all(&|range| Box::new(HeapKeyedStateBackend::new(range)));
    }
}
