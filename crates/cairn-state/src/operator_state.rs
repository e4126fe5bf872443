//! Operator (non-keyed) state: named lists of elements per subtask, and
//! broadcast state (a map every subtask holds in full). On restore with a new
//! parallelism, lists are split evenly, union lists go whole to every subtask
//! and broadcast state is copied to every subtask.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::StateError;

/// How an operator state is redistributed when parallelism changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistributionMode {
    /// Elements of all subtasks are pooled and split evenly (Flink's ListState).
    SplitEvenly,
    /// Every subtask gets all elements of all subtasks (UnionListState).
    Union,
    /// One map, identical in every subtask, copied to every subtask.
    Broadcast,
}

/// One named operator state as stored in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateEntry {
    pub name: String,
    pub mode: DistributionMode,
    /// Encoded elements; for broadcast state, encoded `(key, value)` pairs.
    pub elements: Vec<Vec<u8>>,
}

/// A subtask's operator states.
#[derive(Clone, Debug, Default)]
pub struct OperatorStateStore {
    lists: BTreeMap<String, (DistributionMode, Vec<Vec<u8>>)>,
    broadcast: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl OperatorStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The elements of list state `name` (empty when absent).
    pub fn list<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>, StateError> {
        match self.lists.get(name) {
            Some((_, elems)) => elems.iter().map(|e| codec::decode(name, e)).collect(),
            None => Ok(Vec::new()),
        }
    }

    /// Replace list state `name` with `values`, redistributed by `mode` on rescale.
    pub fn set_list<T: Serialize>(
        &mut self,
        name: &str,
        mode: DistributionMode,
        values: &[T],
    ) -> Result<(), StateError> {
        if mode == DistributionMode::Broadcast {
            return Err(StateError::Usage(format!(
                "operator state '{name}': broadcast state is a map; use the broadcast state methods"
            )));
        }
        let mut elems = Vec::with_capacity(values.len());
        for v in values {
            let mut b = Vec::new();
            codec::encode_into(name, v, &mut b)?;
            elems.push(b);
        }
        self.lists.insert(name.to_string(), (mode, elems));
        Ok(())
    }

    /// The value under `key` in broadcast state `name`.
    pub fn broadcast_get<K: Serialize, V: DeserializeOwned>(
        &self,
        name: &str,
        key: &K,
    ) -> Result<Option<V>, StateError> {
        let mut k = Vec::new();
        codec::encode_into(name, key, &mut k)?;
        match self.broadcast.get(name).and_then(|m| m.get(&k)) {
            Some(v) => codec::decode(name, v).map(Some),
            None => Ok(None),
        }
    }

    /// Set `key` in broadcast state `name`.
    pub fn broadcast_put<K: Serialize, V: Serialize>(
        &mut self,
        name: &str,
        key: &K,
        value: &V,
    ) -> Result<(), StateError> {
        let mut k = Vec::new();
        codec::encode_into(name, key, &mut k)?;
        let mut v = Vec::new();
        codec::encode_into(name, value, &mut v)?;
        self.broadcast.entry(name.to_string()).or_default().insert(k, v);
        Ok(())
    }

    /// Remove `key` from broadcast state `name`.
    pub fn broadcast_remove<K: Serialize>(&mut self, name: &str, key: &K) -> Result<(), StateError> {
        let mut k = Vec::new();
        codec::encode_into(name, key, &mut k)?;
        if let Some(m) = self.broadcast.get_mut(name) {
            m.remove(&k);
        }
        Ok(())
    }

    /// All entries of broadcast state `name`, in key byte order.
    pub fn broadcast_entries<K: DeserializeOwned, V: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Vec<(K, V)>, StateError> {
        let Some(m) = self.broadcast.get(name) else {
            return Ok(Vec::new());
        };
        m.iter()
            .map(|(k, v)| Ok((codec::decode(name, k)?, codec::decode(name, v)?)))
            .collect()
    }

    /// Whether list state `name` exists (possibly empty: a restored subtask
    /// may get no elements after a rescale).
    pub fn has_list(&self, name: &str) -> bool {
        self.lists.contains_key(name)
    }

    /// Drop list state `name` (absent from later snapshots), e.g. a state an
    /// operator migrated to another name or encoding.
    pub fn remove_list(&mut self, name: &str) {
        self.lists.remove(name);
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.broadcast.is_empty()
    }

    /// The store as snapshot entries.
    pub fn to_entries(&self) -> Vec<OperatorStateEntry> {
        let mut out: Vec<OperatorStateEntry> = self
            .lists
            .iter()
            .map(|(name, (mode, elems))| OperatorStateEntry {
                name: name.clone(),
                mode: *mode,
                elements: elems.clone(),
            })
            .collect();
        for (name, map) in &self.broadcast {
            let elements = map
                .iter()
                .map(|(k, v)| {
                    let mut b = Vec::with_capacity(k.len() + v.len() + 4);
                    codec::put_bytes(&mut b, k);
                    codec::put_bytes(&mut b, v);
                    b
                })
                .collect();
            out.push(OperatorStateEntry {
                name: name.clone(),
                mode: DistributionMode::Broadcast,
                elements,
            });
        }
        out
    }

    /// Rebuild a store from snapshot entries (already redistributed).
    pub fn from_entries(entries: Vec<OperatorStateEntry>) -> Result<Self, StateError> {
        let mut store = OperatorStateStore::new();
        for e in entries {
            match e.mode {
                DistributionMode::Broadcast => {
                    let map = store.broadcast.entry(e.name.clone()).or_default();
                    for el in e.elements {
                        let (k, rest) = codec::get_bytes(&el).ok_or_else(|| corrupt(&e.name))?;
                        let (v, _) = codec::get_bytes(rest).ok_or_else(|| corrupt(&e.name))?;
                        map.insert(k.to_vec(), v.to_vec());
                    }
                }
                mode => {
                    let slot = store.lists.entry(e.name).or_insert((mode, Vec::new()));
                    slot.1.extend(e.elements);
                }
            }
        }
        Ok(store)
    }
}

fn corrupt(name: &str) -> StateError {
    StateError::Restore(format!("broadcast state '{name}': snapshot entry is corrupt"))
}

/// Redistribute the operator states of `old` subtasks (in subtask order) onto
/// `new_parallelism` subtasks.
pub fn redistribute(old: &[Vec<OperatorStateEntry>], new_parallelism: usize) -> Vec<Vec<OperatorStateEntry>> {
    let mut out: Vec<Vec<OperatorStateEntry>> = vec![Vec::new(); new_parallelism];
    let mut names: Vec<(String, DistributionMode)> = Vec::new();
    for e in old.iter().flatten() {
        if !names.iter().any(|(n, _)| n == &e.name) {
            names.push((e.name.clone(), e.mode));
        }
    }
    for (name, mode) in names {
        let of_name = || old.iter().flatten().filter(|e| e.name == name);
        match mode {
            DistributionMode::SplitEvenly => {
                let all: Vec<Vec<u8>> = of_name().flat_map(|e| e.elements.clone()).collect();
                let n = all.len();
                let mut iter = all.into_iter();
                for (i, target) in out.iter_mut().enumerate() {
                    // Subtask i gets elements [i*n/p, (i+1)*n/p): sizes differ by at most one.
                    let take = (i + 1) * n / new_parallelism - i * n / new_parallelism;
                    let elements: Vec<Vec<u8>> = iter.by_ref().take(take).collect();
                    target.push(OperatorStateEntry {
                        name: name.clone(),
                        mode,
                        elements,
                    });
                }
            }
            DistributionMode::Union => {
                let all: Vec<Vec<u8>> = of_name().flat_map(|e| e.elements.clone()).collect();
                for target in out.iter_mut() {
                    target.push(OperatorStateEntry {
                        name: name.clone(),
                        mode,
                        elements: all.clone(),
                    });
                }
            }
            DistributionMode::Broadcast => {
                let first = of_name().next().map(|e| e.elements.clone()).unwrap_or_default();
                for target in out.iter_mut() {
                    target.push(OperatorStateEntry {
                        name: name.clone(),
                        mode,
                        elements: first.clone(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(values: &[u32], mode: DistributionMode) -> Vec<OperatorStateEntry> {
        let mut s = OperatorStateStore::new();
        s.set_list("offsets", mode, values).unwrap();
        s.to_entries()
    }

    #[test]
    fn split_evenly_pools_and_splits_with_sizes_differing_by_at_most_one() {
        let old = vec![
            store_with(&[1, 2, 3, 4], DistributionMode::SplitEvenly),
            store_with(&[5, 6, 7], DistributionMode::SplitEvenly),
        ];
        let new = redistribute(&old, 3);
        let lists: Vec<Vec<u32>> = new
            .into_iter()
            .map(|e| OperatorStateStore::from_entries(e).unwrap().list("offsets").unwrap())
            .collect();
        assert_eq!(lists, vec![vec![1, 2], vec![3, 4], vec![5, 6, 7]]);
    }

    #[test]
    fn union_goes_whole_to_every_subtask() {
        let old = vec![
            store_with(&[1], DistributionMode::Union),
            store_with(&[2], DistributionMode::Union),
        ];
        for e in redistribute(&old, 3) {
            let l: Vec<u32> = OperatorStateStore::from_entries(e).unwrap().list("offsets").unwrap();
            assert_eq!(l, vec![1, 2]);
        }
    }

    #[test]
    fn broadcast_state_is_copied_to_every_subtask() {
        let mut s = OperatorStateStore::new();
        s.broadcast_put("rules", &"a".to_string(), &1u32).unwrap();
        s.broadcast_put("rules", &"b".to_string(), &2u32).unwrap();
        let old = vec![s.to_entries(), s.to_entries()];
        for e in redistribute(&old, 4) {
            let r = OperatorStateStore::from_entries(e).unwrap();
            let got: Vec<(String, u32)> = r.broadcast_entries("rules").unwrap();
            assert_eq!(got, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
        }
    }
}
