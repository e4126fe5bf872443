//! The single error type of this crate.
//!
//! Variants are split in two families (see [`SnapshotError::is_user_error`]):
//! problems with what the user pointed us at (a bad path, a directory that is
//! not a snapshot, a corrupt or missing file, an unsupported format version, a
//! protocol misuse by the caller) and failures of the storage underneath (I/O).
//! Every message names the thing involved and says what to do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// Everything that can go wrong in `cairn-snapshot`.
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A path given by the user or found in a snapshot is not acceptable.
    InvalidPath { path: String, reason: String },
    /// The path exists but is not a checkpoint/savepoint directory or `_metadata` file.
    NotASnapshot { path: PathBuf, reason: String },
    /// A file's checksum does not match the recorded one.
    ChecksumMismatch { path: PathBuf, expected: u32, actual: u32 },
    /// A file's size does not match the recorded one.
    SizeMismatch { path: PathBuf, expected: u64, actual: u64 },
    /// A file is structurally damaged (bad magic, truncated, unparsable).
    Corrupt { path: PathBuf, detail: String },
    /// A file that must exist does not.
    MissingFile { path: PathBuf },
    /// A file uses a format version this build cannot read.
    UnsupportedVersion {
        path: PathBuf,
        format: &'static str,
        found: u32,
        supported: u32,
    },
    /// An identifier (job id, operator id) is malformed.
    InvalidId {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The caller used an API out of order or with inconsistent data
    /// (duplicate ack, unknown subtask, section written twice, ...).
    Protocol { context: String, reason: String },
    /// A newer coordinator took over the job directory: this one must stop.
    Fenced { job_dir: PathBuf, epoch: u64, what: String },
    /// The storage layer failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl SnapshotError {
    /// True for errors caused by the input (paths, snapshot contents, API misuse);
    /// false for failures of the storage system, which may succeed on retry.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, SnapshotError::Io { .. })
    }

    /// Every code [`SnapshotError::code`] returns (listed in `docs/errors.md`).
    pub const CODES: &'static [&'static str] = &[
        "INVALID_PATH",
        "NOT_A_SNAPSHOT",
        "SNAPSHOT_CORRUPT",
        "SNAPSHOT_FILE_MISSING",
        "SNAPSHOT_VERSION_UNSUPPORTED",
        "INVALID_ID",
        "SNAPSHOT_PROTOCOL",
        "COORDINATOR_FENCED",
        "STORAGE_FULL",
        "STORAGE_READ_ONLY",
        "STORAGE_FAILED",
    ];

    /// A stable code for programs to branch on (messages may improve).
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::InvalidPath { .. } => "INVALID_PATH",
            SnapshotError::NotASnapshot { .. } => "NOT_A_SNAPSHOT",
            SnapshotError::ChecksumMismatch { .. }
            | SnapshotError::SizeMismatch { .. }
            | SnapshotError::Corrupt { .. } => "SNAPSHOT_CORRUPT",
            SnapshotError::MissingFile { .. } => "SNAPSHOT_FILE_MISSING",
            SnapshotError::UnsupportedVersion { .. } => "SNAPSHOT_VERSION_UNSUPPORTED",
            SnapshotError::InvalidId { .. } => "INVALID_ID",
            SnapshotError::Protocol { .. } => "SNAPSHOT_PROTOCOL",
            SnapshotError::Fenced { .. } => "COORDINATOR_FENCED",
            SnapshotError::Io { source, .. } if is_storage_full(source) => "STORAGE_FULL",
            SnapshotError::Io { source, .. } if source.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                "STORAGE_READ_ONLY"
            }
            SnapshotError::Io { .. } => "STORAGE_FAILED",
        }
    }

    /// True when the storage underneath is full (no space left on the device, or a disk
    /// quota is exhausted): retrying does not help until space is freed.
    pub fn is_storage_full(&self) -> bool {
        match self {
            SnapshotError::Io { source, .. } => is_storage_full(source),
            _ => false,
        }
    }

    /// Builds an [`SnapshotError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        SnapshotError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn protocol(context: impl Into<String>, reason: impl Into<String>) -> Self {
        SnapshotError::Protocol {
            context: context.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::InvalidPath { path, reason } => write!(
                f,
                "invalid path '{path}': {reason}; pass a valid path (relative paths inside a snapshot use forward slashes and stay inside the job directory)"
            ),
            SnapshotError::NotASnapshot { path, reason } => write!(
                f,
                "'{}' is not a checkpoint or savepoint: {reason}; pass a savepoint directory, a retained checkpoint directory (chk-<n>), or the '_metadata' file inside one",
                path.display()
            ),
            SnapshotError::ChecksumMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "file '{}' is corrupt: CRC-32 is {actual:08x} but {expected:08x} was recorded; the snapshot cannot be trusted, restore from an older checkpoint or savepoint",
                path.display()
            ),
            SnapshotError::SizeMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "file '{}' is corrupt: it has {actual} bytes but {expected} were recorded (truncated or overwritten); restore from an older checkpoint or savepoint",
                path.display()
            ),
            SnapshotError::Corrupt { path, detail } => write!(
                f,
                "file '{}' is corrupt: {detail}; restore from an older checkpoint or savepoint",
                path.display()
            ),
            SnapshotError::MissingFile { path } => write!(
                f,
                "file '{}' is missing; it was deleted or the snapshot was copied incompletely — copy the whole snapshot directory (and, for checkpoints, the job's shared/ directory) or use another snapshot",
                path.display()
            ),
            SnapshotError::UnsupportedVersion {
                path,
                format,
                found,
                supported,
            } => write!(
                f,
                "file '{}' uses {format} format version {found}, but this Cairn reads only versions up to {supported}; use a newer Cairn release to read it",
                path.display()
            ),
            SnapshotError::InvalidId {
                what,
                value,
                reason,
            } => write!(
                f,
                "invalid {what} '{value}': {reason}; expected exactly 32 lowercase hexadecimal digits"
            ),
            SnapshotError::Protocol { context, reason } => {
                write!(f, "{context}: {reason}")
            }
            SnapshotError::Fenced { job_dir, epoch, what } => write!(
                f,
                "{what}: a newer coordinator (epoch above {epoch}) took over the checkpoints in '{}', so this one stops; make sure only one coordinator runs per job",
                job_dir.display()
            ),
            SnapshotError::Io { op, path, source } if is_storage_full(source) => write!(
                f,
                "storage is full: {op} of '{}' failed: {source}; free space on that file system (or point the directory at a larger one)",
                path.display()
            ),
            SnapshotError::Io { op, path, source } if source.kind() == io::ErrorKind::ReadOnlyFilesystem => write!(
                f,
                "storage is read-only: {op} of '{}' failed: {source}; use a writable directory",
                path.display()
            ),
            SnapshotError::Io { op, path, source } => write!(
                f,
                "storage failure during {op} of '{}': {source}; check that the path is reachable and writable and retry",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `ENOSPC` (no space left on the device) or `EDQUOT` (disk quota exceeded).
pub fn is_storage_full(e: &io::Error) -> bool {
    const EDQUOT: i32 = 122;
    e.kind() == io::ErrorKind::StorageFull || (cfg!(target_os = "linux") && e.raw_os_error() == Some(EDQUOT))
}
