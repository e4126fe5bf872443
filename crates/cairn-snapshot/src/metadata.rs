//! The `_metadata` model and file format (spec: `docs/formats/metadata.md`).
//! Version 2 adds files of a state backend's own snapshot
//! ([`FileFormat::BackendFile`], e.g. RocksDB SST files, possibly shared
//! between incremental checkpoints); version 3 adds the canonical savepoint
//! format's typed Parquet files ([`FileFormat::ParquetV2`]); version 4 adds
//! the channel state of unaligned checkpoints ([`FileFormat::ChannelStateV1`]:
//! the in-flight records a subtask had not processed at its snapshot);
//! everything else is unchanged. A writer puts the lowest version that can hold the file's content
//! ([`SnapshotMetadata::version_needed`]), so snapshots without channel state
//! stay readable by releases that predate them.
//!
//! ```text
//! CAIRN-METADATA 1\n
//! <JSON object>\n
//! CRC32 <8 lowercase hex digits>\n
//! ```
//! The CRC-32 covers every byte before the `CRC32 ` line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::crc32;
use crate::error::{Result, SnapshotError};
use crate::layout::{resolve_ref, validate_hex32, validate_ref_path};
use crate::state_file::SectionInfo;
use crate::storage::Storage;

/// File name of the metadata file in every snapshot directory.
pub const METADATA_FILE_NAME: &str = "_metadata";
/// The newest `_metadata` format version this build writes (a file gets the
/// lowest version that can hold its content, see [`SnapshotMetadata::version_needed`]).
pub const METADATA_VERSION: u32 = 4;
/// The first `_metadata` version that may name canonical v2 Parquet files.
pub const CANONICAL_V2_METADATA_VERSION: u32 = 3;
/// The first `_metadata` version that may hold channel state.
pub const CHANNEL_STATE_METADATA_VERSION: u32 = 4;
/// The oldest `_metadata` format version this build reads.
pub const OLDEST_METADATA_VERSION: u32 = 1;
/// First line prefix of a `_metadata` file (followed by the version and `\n`).
pub const METADATA_MAGIC: &str = "CAIRN-METADATA ";
/// Prefix of the last line of a `_metadata` file.
pub const METADATA_CRC_PREFIX: &str = "CRC32 ";
/// Version of this crate, recorded in `cairn_version`.
pub const CAIRN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Checkpoint or savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Owned by the engine; retained and deleted according to retention.
    Checkpoint,
    /// Owned by the user; never deleted by Cairn; relocatable.
    Savepoint { format: SavepointFormat },
}

impl SnapshotKind {
    /// True for savepoints.
    pub fn is_savepoint(&self) -> bool {
        matches!(self, SnapshotKind::Savepoint { .. })
    }
}

/// How a savepoint's state is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointFormat {
    /// Backend-independent format, readable by any state backend and tools.
    Canonical,
    /// The state backend's own format (faster, tied to the backend).
    Native,
}

/// The content of a `_metadata` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    pub format_version: u32,
    pub kind: SnapshotKind,
    /// 32 lowercase hex digits.
    pub job_id: String,
    pub checkpoint_id: u64,
    pub trigger_timestamp_ms: u64,
    pub completion_timestamp_ms: u64,
    pub cairn_version: String,
    pub operators: Vec<OperatorSnapshot>,
}

/// State of one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// 32 lowercase hex digits (hash of the uid).
    pub operator_id: String,
    pub uid: String,
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub subtasks: Vec<SubtaskSnapshot>,
}

/// State of one subtask: zero or more files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskSnapshot {
    pub subtask_index: u32,
    pub files: Vec<StateFileRef>,
}

/// A reference to a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileRef {
    /// Relative to the directory holding `_metadata`, forward slashes; may
    /// start with `../shared/` for checkpoint files shared between checkpoints.
    pub path: String,
    pub size: u64,
    pub crc32: u32,
    pub sections: Vec<SectionInfo>,
    /// How the file is encoded. Absent in files written before the field
    /// existed (and omitted when it is the default), so `_metadata` v1 files
    /// keep their exact bytes.
    #[serde(default, skip_serializing_if = "FileFormat::is_default")]
    pub format: FileFormat,
}

/// The encoding of a referenced state file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Cairn's sectioned state-file container (`docs/formats/state-file.md`),
    /// used by checkpoints and native savepoints.
    #[default]
    CairnStateV1,
    /// A Parquet file of the canonical savepoint format, version 1
    /// (`docs/formats/savepoint-canonical.md`); `sections` is empty.
    ParquetV1,
    /// A Parquet file of the canonical savepoint format, version 2: one
    /// state per file, typed columns (`docs/formats/savepoint-canonical.md`);
    /// `sections` is empty. `_metadata` v3 and later.
    ParquetV2,
    /// A file of a state backend's own snapshot (a RocksDB SST, MANIFEST,
    /// ...), opaque to Cairn but for its size and CRC-32; the subtask's state
    /// file lists which backend files it consists of. `_metadata` v2 and later.
    BackendFile,
    /// The channel state of an unaligned checkpoint: the in-flight messages
    /// one subtask had not processed when it snapshotted, per input channel,
    /// in the state-file container (`docs/formats/channel-state.md`).
    /// `_metadata` v4 and later; never in savepoints.
    ChannelStateV1,
}

impl FileFormat {
    /// True for [`FileFormat::CairnStateV1`] (not written to `_metadata`).
    pub fn is_default(&self) -> bool {
        *self == FileFormat::CairnStateV1
    }
}

impl SnapshotMetadata {
    /// The lowest format version that can hold this metadata's files: 4
    /// with channel state, 3 with canonical v2 files, else 2 (what writers
    /// put in `format_version`).
    pub fn version_needed(&self) -> u32 {
        if self.has_channel_state() {
            CHANNEL_STATE_METADATA_VERSION
        } else if self.files().any(|(_, _, f)| f.format == FileFormat::ParquetV2) {
            CANONICAL_V2_METADATA_VERSION
        } else {
            2
        }
    }

    /// Whether this is an unaligned checkpoint: some subtask stored channel state.
    pub fn has_channel_state(&self) -> bool {
        self.files().any(|(_, _, f)| f.format == FileFormat::ChannelStateV1)
    }

    /// Every file reference with its operator and subtask.
    pub fn files(&self) -> impl Iterator<Item = (&OperatorSnapshot, &SubtaskSnapshot, &StateFileRef)> {
        self.operators.iter().flat_map(|op| {
            op.subtasks
                .iter()
                .flat_map(move |st| st.files.iter().map(move |f| (op, st, f)))
        })
    }

    /// Finds an operator by id.
    pub fn operator(&self, operator_id: &str) -> Option<&OperatorSnapshot> {
        self.operators.iter().find(|o| o.operator_id == operator_id)
    }

    /// Checks internal consistency: version, ids, parallelism, subtask
    /// indexes, key groups and file paths. Savepoints may not reference files
    /// outside their directory (they must be relocatable).
    pub fn validate(&self) -> Result<()> {
        let ctx = |what: String| SnapshotError::protocol("invalid snapshot metadata", what);
        if !(OLDEST_METADATA_VERSION..=METADATA_VERSION).contains(&self.format_version) {
            return Err(ctx(format!(
                "format_version is {} but this build reads versions {OLDEST_METADATA_VERSION} to {METADATA_VERSION}",
                self.format_version
            )));
        }
        if self.format_version < 2 {
            if let Some((_, _, f)) = self.files().find(|(_, _, f)| f.format == FileFormat::BackendFile) {
                return Err(ctx(format!(
                    "file '{}' is a backend file, which needs format version 2",
                    f.path
                )));
            }
        }
        if self.format_version < CANONICAL_V2_METADATA_VERSION {
            if let Some((_, _, f)) = self.files().find(|(_, _, f)| f.format == FileFormat::ParquetV2) {
                return Err(ctx(format!(
                    "file '{}' is a canonical v2 Parquet file, which needs format version {CANONICAL_V2_METADATA_VERSION}",
                    f.path
                )));
            }
        }
        if self.format_version < CHANNEL_STATE_METADATA_VERSION {
            if let Some((_, _, f)) = self.files().find(|(_, _, f)| f.format == FileFormat::ChannelStateV1) {
                return Err(ctx(format!(
                    "file '{}' is channel state, which needs format version {CHANNEL_STATE_METADATA_VERSION}",
                    f.path
                )));
            }
        }
        if self.kind.is_savepoint() {
            if let Some((op, _, f)) = self.files().find(|(_, _, f)| f.format == FileFormat::ChannelStateV1) {
                return Err(ctx(format!(
                    "savepoints are aligned and hold no channel state, but operator '{}' references channel-state file '{}'",
                    op.uid, f.path
                )));
            }
        }
        validate_hex32("job id", &self.job_id)?;
        let mut op_ids = BTreeSet::new();
        let mut uids = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for op in &self.operators {
            validate_hex32("operator id", &op.operator_id)?;
            if !op_ids.insert(op.operator_id.as_str()) {
                return Err(ctx(format!("operator id {} appears twice", op.operator_id)));
            }
            if !uids.insert(op.uid.as_str()) {
                return Err(ctx(format!("uid '{}' appears on two operators", op.uid)));
            }
            if op.parallelism == 0 || op.parallelism > op.max_parallelism {
                return Err(ctx(format!(
                    "operator '{}' ({}) has parallelism {} and max parallelism {}; need 1 <= parallelism <= max parallelism",
                    op.uid, op.operator_id, op.parallelism, op.max_parallelism
                )));
            }
            let mut seen = BTreeSet::new();
            for st in &op.subtasks {
                if st.subtask_index >= op.parallelism || !seen.insert(st.subtask_index) {
                    return Err(ctx(format!(
                        "operator '{}' has a duplicate or out-of-range subtask index {}",
                        op.uid, st.subtask_index
                    )));
                }
                for f in &st.files {
                    validate_ref_path(&f.path)?;
                    if self.kind.is_savepoint() && f.path.starts_with("..") {
                        return Err(SnapshotError::InvalidPath {
                            path: f.path.clone(),
                            reason:
                                "savepoints must be self-contained: every file must be inside the savepoint directory"
                                    .into(),
                        });
                    }
                    if !paths.insert(f.path.as_str()) {
                        return Err(ctx(format!("file '{}' is referenced twice", f.path)));
                    }
                    if let Some(s) = f
                        .sections
                        .iter()
                        .find(|s| s.key_group.is_some_and(|kg| kg >= op.max_parallelism))
                    {
                        return Err(ctx(format!(
                            "file '{}' section '{}' has key group {:?}, beyond max parallelism {}",
                            f.path, s.name, s.key_group, op.max_parallelism
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Serializes metadata into the framed v1 byte format.
pub fn encode_metadata(meta: &SnapshotMetadata) -> Result<Vec<u8>> {
    meta.validate()?;
    let json = serde_json::to_string_pretty(meta)
        .map_err(|e| SnapshotError::protocol("encoding _metadata", format!("serialization failed: {e}")))?;
    let mut out = format!("{METADATA_MAGIC}{}\n{json}\n", meta.format_version).into_bytes();
    let crc = crc32(&out);
    out.extend_from_slice(format!("{METADATA_CRC_PREFIX}{crc:08x}\n").as_bytes());
    Ok(out)
}

/// Parses and verifies a framed `_metadata` file; `path` names it in errors.
///
/// Integrity comes before interpretation: the checksum line is verified before the header's
/// version is read, so a damaged version digit is reported as corruption, never as a
/// version from the future. The framing (header line, body, checksum line over every byte
/// before it) is fixed for every format version, which makes that order possible.
pub fn decode_metadata(path: &Path, bytes: &[u8]) -> Result<SnapshotMetadata> {
    let not_ours = || SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        reason: "the file does not start with 'CAIRN-METADATA'".into(),
    };
    let has_magic = bytes.starts_with(METADATA_MAGIC.as_bytes());
    let crc_line_start = bytes
        .strip_suffix(b"\n")
        .and_then(|b| b.iter().rposition(|c| *c == b'\n'))
        .map(|i| i + 1);
    let crc_line = crc_line_start.map(|s| &bytes[s..bytes.len() - 1]);
    let recorded = crc_line
        .and_then(|l| l.strip_prefix(METADATA_CRC_PREFIX.as_bytes()))
        .filter(|h| h.len() == 8 && h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    let (Some(crc_line_start), Some(expected)) = (crc_line_start, recorded) else {
        if !has_magic {
            return Err(not_ours());
        }
        return Err(if bytes.last() != Some(&b'\n') {
            SnapshotError::corrupt(path, "file does not end with a newline (truncated?)")
        } else {
            SnapshotError::corrupt(path, "last line is not 'CRC32 <8 hex digits>' (truncated?)")
        });
    };
    let actual = crc32(&bytes[..crc_line_start]);
    if expected != actual {
        return Err(SnapshotError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    if !has_magic {
        return Err(not_ours());
    }
    let header_end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .filter(|i| *i < crc_line_start)
        .ok_or_else(|| SnapshotError::corrupt(path, "header line missing"))?;
    let header = std::str::from_utf8(&bytes[..header_end]).map_err(|_| not_ours())?;
    let version_str = header.strip_prefix(METADATA_MAGIC).ok_or_else(not_ours)?;
    let version: u32 = version_str
        .parse()
        .map_err(|_| SnapshotError::corrupt(path, format!("bad version '{version_str}' in header line")))?;
    if !(OLDEST_METADATA_VERSION..=METADATA_VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion {
            path: path.to_path_buf(),
            format: "_metadata",
            found: version,
            supported: METADATA_VERSION,
        });
    }
    let body = &bytes[header_end + 1..crc_line_start];
    let meta: SnapshotMetadata = serde_json::from_slice(body)
        .map_err(|e| SnapshotError::corrupt(path, format!("metadata body is not valid: {e}")))?;
    if meta.format_version != version {
        return Err(SnapshotError::corrupt(
            path,
            format!("header says version {version} but body says {}", meta.format_version),
        ));
    }
    meta.validate().map_err(|e| match e {
        SnapshotError::Protocol { reason, .. } => SnapshotError::corrupt(path, reason),
        other => other,
    })?;
    Ok(meta)
}

/// Publishes `dir/_metadata` atomically and only if it does not exist yet (a
/// conditional put: temporary name, fsync, link, fsync directory on local
/// files), so two attempts can never both complete one snapshot. Call only
/// after every file it names is durable (invariant 1).
pub fn write_metadata(storage: &dyn Storage, dir: &Path, meta: &SnapshotMetadata) -> Result<PathBuf> {
    let bytes = encode_metadata(meta)?;
    let path = dir.join(METADATA_FILE_NAME);
    if !storage.put_if_absent(&path, &bytes)? {
        return Err(SnapshotError::protocol(
            format!("snapshot {}", meta.checkpoint_id),
            format!(
                "{} already exists: another attempt completed this snapshot; this attempt must not overwrite it",
                storage.display(&path)
            ),
        ));
    }
    Ok(path)
}

/// Replaces `dir/_metadata` atomically (temporary name, fsync, rename). For
/// offline tools rewriting a snapshot they own; the commit protocol never
/// overwrites and uses [`write_metadata`].
pub fn replace_metadata(storage: &dyn Storage, dir: &Path, meta: &SnapshotMetadata) -> Result<PathBuf> {
    let bytes = encode_metadata(meta)?;
    let path = dir.join(METADATA_FILE_NAME);
    storage.write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Where a user-supplied snapshot path points: (snapshot dir, `_metadata` path).
pub fn locate_metadata(storage: &dyn Storage, path: &Path) -> Result<(PathBuf, PathBuf)> {
    if path.file_name().is_some_and(|n| n == METADATA_FILE_NAME) {
        // `_metadata` alone (run inside the snapshot) is in the current directory.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !storage.exists(path)? {
            return Err(SnapshotError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        return Ok((dir, path.to_path_buf()));
    }
    if !storage.exists(path)? {
        return Err(SnapshotError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let mp = path.join(METADATA_FILE_NAME);
    if storage.exists(&mp)? {
        Ok((path.to_path_buf(), mp))
    } else {
        Err(SnapshotError::NotASnapshot {
            path: path.to_path_buf(),
            reason: "no '_metadata' file was found in it (an incomplete checkpoint, a plain file, or not a snapshot directory)".into(),
        })
    }
}

/// Reads and verifies `_metadata`, given the snapshot directory or the file itself.
pub fn read_metadata(storage: &dyn Storage, path: &Path) -> Result<SnapshotMetadata> {
    let (_, mp) = locate_metadata(storage, path)?;
    let bytes = storage.read(&mp)?;
    decode_metadata(&mp, &bytes)
}

/// Checks one referenced file: exists, recorded size, recorded CRC-32.
pub fn verify_file(storage: &dyn Storage, dir: &Path, file: &StateFileRef) -> Result<()> {
    let path = resolve_ref(dir, &file.path)?;
    let size = storage.size(&path)?;
    if size != file.size {
        return Err(SnapshotError::SizeMismatch {
            path,
            expected: file.size,
            actual: size,
        });
    }
    // In ranges, so verifying a large file needs little memory.
    const CHUNK: u64 = 8 << 20;
    let mut hasher = crc32fast::Hasher::new();
    let mut offset = 0;
    while offset < size {
        let len = CHUNK.min(size - offset);
        hasher.update(&storage.read_range(&path, offset, len)?);
        offset += len;
    }
    let actual = hasher.finalize();
    if actual != file.crc32 {
        return Err(SnapshotError::ChecksumMismatch {
            path,
            expected: file.crc32,
            actual,
        });
    }
    Ok(())
}

/// Checks every file referenced by `meta` (relative to `dir`); fails on the first problem.
pub fn verify_files(storage: &dyn Storage, dir: &Path, meta: &SnapshotMetadata) -> Result<()> {
    for (_, _, f) in meta.files() {
        verify_file(storage, dir, f)?;
    }
    Ok(())
}

/// Checks every file referenced by `meta` and returns all problems found (for fsck-style reports).
pub fn check_files(storage: &dyn Storage, dir: &Path, meta: &SnapshotMetadata) -> Vec<SnapshotError> {
    meta.files()
        .filter_map(|(_, _, f)| verify_file(storage, dir, f).err())
        .collect()
}
