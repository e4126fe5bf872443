//! The keyed state backend trait. Every backend (in-memory heap, on-disk LSM)
//! stores opaque bytes addressed by (state, key group, key); the key already
//! contains the namespace (a window, for example) when one is used. Snapshots
//! are taken per key group so that rescaling can move whole key groups.

use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;

/// Index of a registered state within one backend.
pub type StateId = u32;

/// Storage of keyed state for the key groups one subtask owns.
pub trait KeyedStateBackend: Send {
    /// A short name for logs and errors ("hashmap", "lsm").
    fn kind(&self) -> &'static str;
    /// The key groups this backend holds.
    fn key_group_range(&self) -> KeyGroupRange;
    /// Register a state (idempotent for the same name and kind); a name reused
    /// with another kind is an error.
    fn register(&mut self, meta: &StateMeta) -> Result<StateId, StateError>;
    /// The registered states, indexed by [`StateId`].
    fn registered(&self) -> &[StateMeta];

    /// Copy the value of `key` into `out` (cleared first); false when absent.
    fn get(&mut self, state: StateId, kg: u32, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError>;
    /// Set the value of `key`.
    fn put(&mut self, state: StateId, kg: u32, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// Append bytes to the value of `key` (list state), creating it if absent.
    fn append(&mut self, state: StateId, kg: u32, key: &[u8], bytes: &[u8]) -> Result<(), StateError>;
    /// Remove `key` (for map state: the whole map of `key`).
    fn remove(&mut self, state: StateId, kg: u32, key: &[u8]) -> Result<(), StateError>;

    /// Copy one map entry's value into `out`; false when absent.
    fn map_get(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        user_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError>;
    /// Set one map entry.
    fn map_put(&mut self, state: StateId, kg: u32, key: &[u8], user_key: &[u8], value: &[u8])
        -> Result<(), StateError>;
    /// Remove one map entry.
    fn map_remove(&mut self, state: StateId, kg: u32, key: &[u8], user_key: &[u8]) -> Result<(), StateError>;
    /// Visit the entries of one key's map in user-key byte order.
    fn map_entries(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError>;

    /// Visit every key that has a value in `state`, with its key group.
    fn for_each_key(&mut self, state: StateId, visit: &mut dyn FnMut(u32, &[u8])) -> Result<(), StateError>;

    /// The synchronous part of a snapshot: must be short (copy-on-write or a
    /// consistent view), so that processing resumes at once; the returned
    /// snapshot is written out on another thread.
    fn snapshot(&mut self) -> Result<Box<dyn KeyedStateSnapshot>, StateError>;

    /// Load one key group of one state from its snapshot encoding
    /// ([`crate::snapshot_codec`]). Registers the state if needed.
    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError>;
}

/// Receives one (state, key group) of a snapshot with its encoded entries.
pub type GroupVisitor<'a> = dyn FnMut(&StateMeta, u32, &[u8]) -> Result<(), StateError> + 'a;

/// A consistent, immutable view of a backend's state, written asynchronously.
pub trait KeyedStateSnapshot: Send {
    /// Visit every non-empty (state, key group) with its encoded entries, in
    /// state then key-group order.
    fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError>;
}
