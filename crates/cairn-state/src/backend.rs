//! The keyed state backend trait. Every backend (in-memory heap, on-disk LSM)
//! stores opaque bytes addressed by (state, key group, key); the key already
//! contains the namespace (a window, for example) when one is used.
//!
//! A snapshot is either *logical key groups* (the heap backend; the runtime
//! encodes them into a state file or canonical Parquet) or *a set of files*
//! the backend produced itself (an LSM checkpoint: new files to upload,
//! files of an earlier completed checkpoint to reference). Either way the
//! task uploads it, and the backend is told when the checkpoint completed or
//! was aborted, so an incremental backend knows which files it may reuse.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;
use crate::typed::{StoredObject, TypedGroup, TypedKind};

/// Index of a registered state within one backend.
pub type StateId = u32;

/// Storage of keyed state for the key groups one subtask owns. (`Any`: the
/// state access recognises the heap backend and calls its typed groups
/// without a virtual call per access.)
pub trait KeyedStateBackend: Any + Send {
    /// A short name for logs and errors ("hashmap", "lsm").
    fn kind(&self) -> &'static str;
    /// The key groups this backend holds.
    fn key_group_range(&self) -> KeyGroupRange;
    /// Register a state (idempotent for the same name and kind); a name reused
    /// with another kind is an error.
    fn register(&mut self, meta: &StateMeta) -> Result<StateId, StateError>;
    /// The registered states, indexed by [`StateId`].
    fn registered(&self) -> &[StateMeta];

    /// Keep the values of `state` (registered, no TTL) as Rust objects of
    /// `kind` from now on, instead of bytes: the typed handles then reach
    /// them through [`KeyedStateBackend::typed_group`] and the backend
    /// encodes them only when a snapshot is written, in the bytes the byte
    /// path would have stored. False (the default): the backend keeps bytes
    /// and the handles encode every access. Registering again with the same
    /// kind is a no-op; with another value type, an error.
    fn register_typed(&mut self, _state: StateId, _kind: Arc<dyn TypedKind>) -> Result<bool, StateError> {
        Ok(false)
    }

    /// The objects of (state, key group) of a state registered typed.
    fn typed_group(&mut self, state: StateId, _kg: u32) -> Result<&dyn TypedGroup, StateError> {
        Err(StateError::Usage(format!(
            "the '{}' state backend keeps bytes; state id {state} has no typed values",
            self.kind()
        )))
    }

    /// [`KeyedStateBackend::typed_group`] for writing.
    fn typed_group_mut(&mut self, state: StateId, _kg: u32) -> Result<&mut dyn TypedGroup, StateError> {
        Err(StateError::Usage(format!(
            "the '{}' state backend keeps bytes; state id {state} has no typed values",
            self.kind()
        )))
    }

    /// A hint: the caller will soon access `key` (no namespace) in key group
    /// `kg` of the states it reads per record. An in-memory backend looks
    /// the key up now, so that the cache misses of several keys overlap
    /// instead of stalling one record after another. No effect on state.
    fn prefetch(&mut self, _kg: u32, _key: &[u8]) {}

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

    /// The synchronous part of a snapshot: must be short (copy-on-write, a
    /// consistent view, or hard links), so that processing resumes at once;
    /// the returned snapshot is uploaded on another thread.
    fn snapshot(&mut self, request: &SnapshotRequest) -> Result<BackendSnapshot, StateError>;

    /// Checkpoint `checkpoint_id` completed: its uploaded files (reported
    /// through [`FileSetSnapshot::uploaded`]) may now be referenced by later
    /// incremental checkpoints.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), StateError> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` was aborted: forget what it uploaded.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> Result<(), StateError> {
        Ok(())
    }

    /// Load one key group of one state from its snapshot encoding
    /// ([`crate::snapshot_codec`]). Registers the state if needed.
    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError>;

    /// [`KeyedStateBackend::restore_group`] when the caller knows how many
    /// keys the group holds (a canonical reader counted them while
    /// collecting the rows), so a backend that sizes its tables first need
    /// not walk the encoding to count.
    fn restore_group_of(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8], keys: usize) -> Result<(), StateError> {
        let _ = keys;
        self.restore_group(meta, kg, encoded)
    }

    /// Restore from file sets this kind of backend snapshotted earlier (one
    /// per old subtask whose key groups overlap this backend's range; keys
    /// outside the range must be dropped). Backends whose snapshots are
    /// logical key groups cannot read another backend's files.
    fn restore_files(&mut self, parts: &[FileSetRestore], _fetch: &FileFetcher<'_>) -> Result<(), StateError> {
        let backend = parts.first().map_or("another backend", |p| p.backend.as_str());
        Err(StateError::Restore(format!(
            "this snapshot holds the native files of the '{backend}' state backend, which the '{}' backend cannot read; \
             restore it with state.backend.type: {backend}, or take a canonical savepoint (cairn savepoint --type canonical), \
             which every backend restores",
            self.kind()
        )))
    }

    /// Whether keys of a state can be scanned in byte order within a key
    /// group ([`KeyedStateBackend::scan_from`]); timers of such backends are
    /// kept in the backend instead of in memory.
    fn supports_ordered_scan(&self) -> bool {
        false
    }

    /// Visit keys of `state` in key group `kg` in byte order, starting at the
    /// first key `>= from`, until `visit` returns false.
    fn scan_from(
        &mut self,
        _state: StateId,
        _kg: u32,
        _from: &[u8],
        _visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        Err(StateError::Usage(format!(
            "the '{}' state backend cannot scan keys in order",
            self.kind()
        )))
    }
}

/// Who a keyed backend is created for.
#[derive(Clone, Debug)]
pub struct BackendContext {
    pub job_id: String,
    pub operator_id: String,
    pub uid: String,
    /// 0-based subtask index.
    pub subtask: u32,
    pub key_groups: KeyGroupRange,
    /// How many times the job restarted (each attempt starts fresh backends).
    pub attempt: u32,
}

/// Creates the keyed state backend of each keyed operator subtask; the job
/// picks one from `state.backend.type`.
pub trait StateBackendFactory: Send + Sync {
    /// The backend's name ("hashmap", "rocksdb").
    fn name(&self) -> &str;
    /// An empty backend for one subtask.
    fn create(&self, ctx: &BackendContext) -> Result<Box<dyn KeyedStateBackend>, StateError>;
    /// Whether the backend holds its state in memory. Offline tools cut
    /// work into key-group ranges that fit their memory budget when it
    /// does; a backend on local disk bounds its own memory, and restores
    /// fastest from a snapshot subtask's files whole.
    fn state_in_memory(&self) -> bool {
        true
    }
}

/// What a snapshot is for; backends with file snapshots answer differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub checkpoint_id: u64,
    pub kind: SnapshotRequestKind,
}

/// The kinds of snapshot a backend is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotRequestKind {
    /// A checkpoint; `incremental` lets a file backend reference files of
    /// the last completed checkpoint instead of uploading them again.
    Checkpoint { incremental: bool },
    /// A native savepoint: self-contained, in the backend's own format.
    NativeSavepoint,
    /// A canonical savepoint: logical key groups every backend restores.
    CanonicalSavepoint,
}

impl SnapshotRequest {
    /// A full (non-incremental) checkpoint request, as tests and tools use.
    pub fn checkpoint(checkpoint_id: u64) -> Self {
        SnapshotRequest {
            checkpoint_id,
            kind: SnapshotRequestKind::Checkpoint { incremental: false },
        }
    }
}

/// The synchronous result of [`KeyedStateBackend::snapshot`].
pub enum BackendSnapshot {
    /// Logical key groups, encoded by the runtime.
    KeyGroups(Box<dyn KeyedStateSnapshot>),
    /// Files the backend wrote itself.
    Files(Box<dyn FileSetSnapshot>),
}

impl BackendSnapshot {
    /// Visit the logical key groups ([`KeyedStateSnapshot::for_each_group`]);
    /// a file snapshot has no logical view and gives an error.
    pub fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        match self {
            BackendSnapshot::KeyGroups(k) => k.for_each_group(visit),
            BackendSnapshot::Files(s) => Err(StateError::Usage(format!(
                "the '{}' backend's snapshot is a set of files, not key groups",
                s.backend()
            ))),
        }
    }

    /// The logical view, when the snapshot is one.
    pub fn key_groups(&self) -> Option<&dyn KeyedStateSnapshot> {
        match self {
            BackendSnapshot::KeyGroups(k) => Some(&**k),
            BackendSnapshot::Files(_) => None,
        }
    }
}

impl std::fmt::Debug for BackendSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendSnapshot::KeyGroups(_) => f.write_str("BackendSnapshot::KeyGroups"),
            BackendSnapshot::Files(s) => write!(f, "BackendSnapshot::Files({} files)", s.files().len()),
        }
    }
}

/// Receives one (state, key group) of a snapshot with its encoded entries.
pub type GroupVisitor<'a> = dyn FnMut(&StateMeta, u32, &[u8]) -> Result<(), StateError> + 'a;

/// Receives one entry of a value state kept as an object: the state, the
/// key group, the key and the value ([`KeyedStateSnapshot::for_each_group_or_object`]).
pub type ObjectVisitor<'a> = dyn FnMut(&StateMeta, u32, &[u8], &dyn StoredObject) -> Result<(), StateError> + 'a;

/// A consistent, immutable view of a backend's state, written asynchronously.
pub trait KeyedStateSnapshot: Send {
    /// Visit every non-empty (state, key group) with its encoded entries, in
    /// state then key-group order.
    fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError>;

    /// [`KeyedStateSnapshot::for_each_group`], except that a (state, key
    /// group) of value objects (the heap backend's typed value states) goes
    /// to `objects` entry by entry, never encoded: a writer with typed
    /// columns skips encoding and decoding every value. The order is the
    /// same; by default every group is encoded.
    fn for_each_group_or_object(
        &self,
        groups: &mut GroupVisitor<'_>,
        objects: &mut ObjectVisitor<'_>,
    ) -> Result<(), StateError> {
        let _ = objects;
        self.for_each_group(groups)
    }

    /// [`KeyedStateSnapshot::for_each_group`] for the key groups in `range`
    /// only. A snapshot ordered by key group (RocksDB's) seeks to the range
    /// instead of reading past the others.
    fn for_each_group_in(&self, range: KeyGroupRange, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        self.for_each_group(&mut |meta, kg, encoded| {
            if range.contains(kg) {
                visit(meta, kg, encoded)
            } else {
                Ok(())
            }
        })
    }
}

/// A snapshot made of files, uploaded by the runtime.
pub trait FileSetSnapshot: Send {
    /// The backend that wrote the files ("rocksdb"); restore checks it.
    fn backend(&self) -> &str;
    /// The registered states, recorded with the snapshot.
    fn states(&self) -> &[StateMeta];
    /// The files making up the snapshot.
    fn files(&self) -> &[SnapshotFile];
    /// The upload finished: `uploaded` holds where each new file went, in the
    /// order of [`FileSetSnapshot::files`]' `Upload` entries. The backend may
    /// reuse them once the checkpoint completed. Releases local resources.
    fn uploaded(self: Box<Self>, uploaded: Vec<UploadedFile>);
    /// The upload failed or was abandoned: release local resources.
    fn discard(self: Box<Self>);
}

/// One file of a [`FileSetSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotFile {
    /// A new local file to upload; `name` is its name when restored.
    /// `shared` files may be referenced by later checkpoints (they go to
    /// the job's `shared/` directory); the others belong to this snapshot.
    Upload {
        local_path: PathBuf,
        name: String,
        shared: bool,
    },
    /// A file an earlier completed checkpoint uploaded: reference it.
    Reuse(UploadedFile),
}

/// Where an uploaded file lives, as the snapshot's metadata references it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedFile {
    /// The file's name when restored (e.g. `000123.sst`).
    pub name: String,
    /// The reference path relative to the snapshot directory (for shared
    /// files `../shared/...`).
    pub path: String,
    pub size: u64,
    pub crc32: u32,
}

/// The files of one old subtask to restore from.
#[derive(Clone, Debug)]
pub struct FileSetRestore {
    /// The backend that wrote them.
    pub backend: String,
    /// The states recorded with the snapshot.
    pub states: Vec<StateMeta>,
    /// The key groups the old subtask held.
    pub key_groups: KeyGroupRange,
    /// The files, with their reference paths.
    pub files: Vec<UploadedFile>,
}

/// Copies a snapshot file (by its [`UploadedFile`] reference) to a local
/// path, verifying its size and checksum; errors name the file.
pub type FileFetcher<'a> = dyn Fn(&UploadedFile, &Path) -> Result<(), StateError> + Sync + 'a;
