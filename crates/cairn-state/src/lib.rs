//! Cairn's state layer: key groups and stable hashes, the byte-oriented
//! [`KeyedStateBackend`] trait every state backend implements, the in-memory
//! heap backend, operator (non-keyed) state, the typed state handles user
//! functions use.
//! Every backend passes the suite in `cairn-state-conformance`.
//!
//! Backends store bytes so that snapshots, restores and rescaling work the same
//! way for every backend; the typed layer ([`handles`]) turns user values into
//! bytes with the value codec ([`codec`]: self-describing MessagePack for
//! values, [`key_encoding`] for keys). A backend that holds state in memory
//! may keep values as objects instead ([`typed`]) and encode them only when a
//! snapshot is written, in the same bytes. [`canonical`] turns snapshot groups into the
//! rows of canonical (portable) savepoints and back.

pub mod backend;
pub mod canonical;
pub mod codec;
pub mod descriptor;
pub mod error;
pub mod handles;
pub mod hash;
pub mod heap;
pub mod key_encoding;
pub mod keygroup;
pub mod operator_state;
mod page_table;
mod paged;
pub mod query;
pub mod shape;
pub mod snapshot_codec;
pub mod table_hash;
pub mod typed;

pub use backend::{
    BackendContext, BackendSnapshot, FileSetRestore, FileSetSnapshot, KeyedStateBackend, KeyedStateSnapshot,
    ObjectVisitor, SnapshotFile, SnapshotRequest, SnapshotRequestKind, StateBackendFactory, StateId, UploadedFile,
};
pub use descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, StateKind, StateMeta,
    StateTtlConfig, TtlUpdateType, ValueStateDescriptor,
};
pub use error::StateError;
pub use handles::{
    AggregateFunction, AggregatingState, KeyedStateAccess, ListState, MapState, ReducingState, StateContext, ValueState,
};
pub use heap::{HeapBackendFactory, HeapKeyedStateBackend};
pub use keygroup::KeyGroupRange;
pub use operator_state::{DistributionMode, OperatorStateStore};
pub use query::QueryableState;
pub use typed::{StateValue, StoredObject, TypedGroup, TypedKind};
