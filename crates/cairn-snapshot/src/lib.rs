//! cairn-snapshot: where checkpoints and savepoints meet storage.
//!
//! * [`storage`]: the one interface to durable storage, local files, fault injection.
//! * [`location`]: storage chosen from a location's scheme (plain paths, `file://`, URIs).
//! * [`memory`]: in-memory storage for fast protocol tests.
//! * [`checksum`]: CRC-32 helpers.
//! * [`state_file`]: the checksummed, sectioned state-file container.
//! * [`metadata`]: the `_metadata` model and format.
//! * [`parquet`]: a minimal Parquet writer and reader (canonical savepoints).
//! * [`layout`]: directory layout, job ids, savepoint names, latest-checkpoint discovery.
//! * [`fence`]: coordinator epochs and checkpoint claims (zombies cannot commit).
//! * [`commit`]: the checkpoint commit protocol as pure logic, plus a small I/O driver.
//! * [`retention`]: the completed-checkpoint store, reference counting and cleanup.
//! * [`restore`]: loading a snapshot for restore.

pub mod checksum;
pub mod commit;
pub mod dispose;
pub mod error;
pub mod fence;
pub mod layout;
pub mod location;
pub mod memory;
pub mod metadata;
pub mod parquet;
pub mod restore;
pub mod retention;
pub mod state_file;
pub mod storage;

pub use error::{Result, SnapshotError};
pub use layout::{CheckpointLayout, JobId};
pub use location::{normalize_location, StorageRouter};
pub use memory::InMemoryStorage;
pub use metadata::{
    read_metadata, verify_files, write_metadata, FileFormat, OperatorSnapshot, SavepointFormat, SnapshotKind,
    SnapshotMetadata, StateFileRef, SubtaskSnapshot,
};
pub use restore::{load_snapshot, LoadedSnapshot};
pub use retention::{CompletedCheckpointStore, ExternalizedRetention};
pub use state_file::{SectionInfo, StateFileInfo, StateFileReader, StateFileWriter};
pub use storage::{FaultInjectingStorage, LocalFileStorage, Storage, StorageWriter};
