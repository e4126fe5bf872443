//! Loading a snapshot for restore.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::layout::resolve_ref;
use crate::metadata::{decode_metadata, locate_metadata, verify_files, SnapshotMetadata, StateFileRef};
use crate::state_file::{read_section, SectionInfo, StateFileReader};
use crate::storage::Storage;

/// A snapshot whose `_metadata` and referenced files were verified.
#[derive(Debug, Clone)]
pub struct LoadedSnapshot {
    /// The directory holding `_metadata` (file paths are relative to it).
    pub dir: PathBuf,
    /// The metadata.
    pub metadata: SnapshotMetadata,
}

impl LoadedSnapshot {
    /// Where a referenced file is on storage.
    pub fn resolve(&self, file: &StateFileRef) -> Result<PathBuf> {
        resolve_ref(&self.dir, &file.path)
    }

    /// Opens and verifies a whole state file.
    pub fn open_state_file(&self, storage: &dyn Storage, file: &StateFileRef) -> Result<StateFileReader> {
        StateFileReader::open(storage, &self.resolve(file)?)
    }

    /// Reads one section of a state file by byte range, verified by its CRC
    /// (for restoring only the key groups a subtask owns).
    pub fn read_section(&self, storage: &dyn Storage, file: &StateFileRef, section: &SectionInfo) -> Result<Vec<u8>> {
        read_section(storage, &self.resolve(file)?, section)
    }
}

/// Loads a savepoint directory, a checkpoint directory, or a `_metadata` path:
/// verifies the `_metadata` checksum and the size and CRC of every referenced file.
pub fn load_snapshot(storage: &dyn Storage, path: &Path) -> Result<LoadedSnapshot> {
    let (dir, mp) = locate_metadata(storage, path)?;
    let bytes = storage.read(&mp)?;
    let metadata = decode_metadata(&mp, &bytes)?;
    verify_files(storage, &dir, &metadata)?;
    Ok(LoadedSnapshot { dir, metadata })
}
