//! The State Processor API: savepoints (and retained checkpoints) as data,
//! read, bootstrapped and rewritten offline, with the names Flink users know.
//!
//! * [`SavepointReader`]: list operators and states; read operator list,
//!   union and broadcast state; read keyed state key by key with a
//!   [`KeyedStateReaderFunction`] that sees every state of the key and its
//!   timers. Works on canonical and native savepoints and on checkpoints, for
//!   any state backend that can restore them (the heap backend by default;
//!   pass another [`cairn_state::StateBackendFactory`] in [`Options`]).
//! * [`SavepointWriter`]: a new savepoint from data
//!   ([`OperatorTransformation::bootstrap_with`] then `key_by` and a
//!   [`KeyedStateBootstrapFunction`], or a broadcast or operator-state
//!   bootstrap function), or a modified copy of an existing one
//!   ([`SavepointWriter::from_existing`]: remove, add or replace operators,
//!   rename uids, change the max parallelism). Output is a self-contained
//!   canonical savepoint.
//!
//! Work runs in parallel over key groups and streams: keyed state is
//! restored, read or rewritten a range of key groups at a time, sized so
//! that the ranges in flight stay within [`Options::memory_bytes`].

mod backends;
mod chunks;
pub mod progress;
mod reader;
mod spill;
pub mod tools;
mod writer;

use std::fmt;
use std::sync::Arc;

pub use progress::{Progress, ProgressFn};
pub use reader::{
    Collector, KeyedStateReaderFunction, OperatorInfo, ReaderContext, SavepointReader, StateInfo, StateStats,
};
pub use writer::{
    BootstrapContext, BootstrapInput, BootstrapTransformation, BroadcastBootstrapContext,
    BroadcastStateBootstrapFunction, KeyedBootstrapInput, KeyedStateBootstrapFunction, OperatorBootstrapContext,
    OperatorTransformation, SavepointWriter, StateBootstrapFunction,
};

/// What went wrong, and with what.
#[derive(Debug)]
pub enum SpaError {
    /// The request does not fit the savepoint (unknown uid or state, wrong kind).
    Usage(String),
    /// The savepoint could not be read or written (missing, corrupt, storage).
    Snapshot(String),
    /// A user function failed.
    Function(String),
    /// The snapshot's keyed state is in a state backend's own files
    /// (a native savepoint or checkpoint of that backend), which only that
    /// backend can restore, and it is not available here.
    NativeBackend {
        /// The snapshot (directory).
        path: std::path::PathBuf,
        /// The backend whose files the snapshot holds ("rocksdb").
        backend: String,
        /// Why it cannot be read, and what to do.
        reason: String,
    },
}

/// Check that a path a user named exists, before anything reads it (a
/// missing one is a wrong path, not a snapshot missing a file).
pub(crate) fn must_exist(storage: &dyn cairn_snapshot::Storage, path: &std::path::Path) -> Result<(), SpaError> {
    match storage.exists(path) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SpaError::Usage(format!(
            "{} does not exist; check the path",
            path.display()
        ))),
        Err(e) => Err(SpaError::Snapshot(e.to_string())),
    }
}

impl fmt::Display for SpaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaError::Usage(m) => write!(f, "{m}"),
            SpaError::Snapshot(m) => write!(f, "savepoint: {m}"),
            SpaError::Function(m) => write!(f, "user function failed: {m}"),
            SpaError::NativeBackend { path, backend, reason } => write!(
                f,
                "savepoint: {} holds the native files of the '{backend}' state backend: {reason}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SpaError {}

impl From<cairn_runtime::JobError> for SpaError {
    fn from(e: cairn_runtime::JobError) -> Self {
        match e {
            // Offline, no job starts: the cause alone ("cannot restore from ...").
            cairn_runtime::JobError::Setup(cause) => SpaError::Snapshot(cause.to_string()),
            other => SpaError::Snapshot(other.to_string()),
        }
    }
}

impl From<cairn_snapshot::SnapshotError> for SpaError {
    fn from(e: cairn_snapshot::SnapshotError) -> Self {
        SpaError::Snapshot(e.to_string())
    }
}

impl From<cairn_runtime::snapshot_io::SnapshotIoError> for SpaError {
    fn from(e: cairn_runtime::snapshot_io::SnapshotIoError) -> Self {
        SpaError::Snapshot(e.to_string())
    }
}

impl From<cairn_state::StateError> for SpaError {
    fn from(e: cairn_state::StateError) -> Self {
        SpaError::Snapshot(e.to_string())
    }
}

/// How offline work runs.
#[derive(Clone)]
pub struct Options {
    /// About how much memory keyed state in flight may take (all workers together).
    pub memory_bytes: u64,
    /// Worker threads.
    pub parallelism: usize,
    /// Creates the backends keyed state is restored into (heap by default;
    /// a RocksDB factory reads RocksDB's native files).
    pub backends: Arc<dyn cairn_state::StateBackendFactory>,
    /// Where spill files go while keys are regrouped (a temporary directory).
    pub spill_dir: std::path::PathBuf,
    /// How canonical output files are written.
    pub write: cairn_canonical::WriteOptions,
    /// Told after every file or range of key groups of long work (`None`: nobody watches).
    pub progress: Option<progress::ProgressFn>,
}

impl Options {
    /// Each worker's share of [`Options::memory_bytes`].
    pub fn budget_per_worker(&self) -> u64 {
        self.memory_bytes / self.parallelism.max(1) as u64
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memory_bytes: 512 << 20,
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            backends: Arc::new(cairn_state::HeapBackendFactory),
            spill_dir: std::env::temp_dir(),
            write: cairn_canonical::WriteOptions::default(),
            progress: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("memory_bytes", &self.memory_bytes)
            .field("parallelism", &self.parallelism)
            .field("backend", &self.backends.name())
            .field("spill_dir", &self.spill_dir)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}
