//! Directory layout, identifiers and path helpers.
//!
//! ```text
//! <checkpoint-dir>/<job-id>/chk-<n>/_metadata     a completed checkpoint (+ its exclusive files)
//! <checkpoint-dir>/<job-id>/shared/                files shared by several checkpoints
//! <checkpoint-dir>/<job-id>/taskowned/             files owned by tasks, never deleted by the coordinator
//! <savepoint-dir>/savepoint-<6 hex>-<12 hex>/_metadata
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SnapshotError};
use crate::metadata::{read_metadata, SnapshotMetadata, METADATA_FILE_NAME};
use crate::storage::Storage;

/// Name of the directory for files shared between checkpoints.
pub const SHARED_DIR: &str = "shared";
/// Name of the directory for task-owned files.
pub const TASKOWNED_DIR: &str = "taskowned";
/// Prefix of checkpoint directory names.
pub const CHECKPOINT_DIR_PREFIX: &str = "chk-";
/// Prefix of savepoint directory names.
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// Checks that `s` is exactly 32 lowercase hex digits.
pub fn validate_hex32(what: &'static str, s: &str) -> Result<()> {
    if s.len() != 32 {
        return Err(SnapshotError::InvalidId {
            what,
            value: s.to_string(),
            reason: format!("it has {} characters", s.len()),
        });
    }
    if let Some(c) = s.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(SnapshotError::InvalidId {
            what,
            value: s.to_string(),
            reason: format!("'{c}' is not a lowercase hexadecimal digit"),
        });
    }
    Ok(())
}

/// A small non-cryptographic generator (SplitMix64) for ids and directory
/// names. Seeded from the clock, the process id and a process-wide counter, so
/// two generators created at the same instant still differ.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    state: u64,
}

static GENERATOR_COUNTER: AtomicU64 = AtomicU64::new(0);

impl IdGenerator {
    /// A generator with a fixed seed (deterministic; for tests).
    pub fn with_seed(seed: u64) -> Self {
        IdGenerator { state: seed }
    }

    /// A generator seeded from time, pid and a counter.
    pub fn from_entropy() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pid = u64::from(std::process::id());
        let count = GENERATOR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut g = IdGenerator {
            state: nanos ^ pid.rotate_left(32) ^ count.wrapping_mul(0xA24B_AED4_963E_E407),
        };
        g.next_u64();
        g
    }

    /// Next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` random lowercase hex digits.
    pub fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let v = self.next_u64();
            let chunk = format!("{v:016x}");
            s.push_str(&chunk[..(n - s.len()).min(16)]);
        }
        s
    }
}

/// A job id: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// A fresh random job id.
    pub fn generate() -> Self {
        JobId(IdGenerator::from_entropy().hex(32))
    }

    /// Parses and validates a job id.
    pub fn parse(s: &str) -> Result<Self> {
        validate_hex32("job id", s)?;
        Ok(JobId(s.to_string()))
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = SnapshotError;
    fn from_str(s: &str) -> Result<Self> {
        JobId::parse(s)
    }
}

impl TryFrom<String> for JobId {
    type Error = SnapshotError;
    fn try_from(s: String) -> Result<Self> {
        JobId::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(j: JobId) -> String {
        j.0
    }
}

/// `chk-<n>`.
pub fn checkpoint_dir_name(checkpoint_id: u64) -> String {
    format!("{CHECKPOINT_DIR_PREFIX}{checkpoint_id}")
}

/// Parses `chk-<n>` (decimal, no sign, no leading zeros except "0").
pub fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// `savepoint-<first 6 hex of job id>-<12 random hex>`.
pub fn savepoint_dir_name(job_id: &JobId, rng: &mut IdGenerator) -> String {
    format!("{SAVEPOINT_DIR_PREFIX}{}-{}", &job_id.as_str()[..6], rng.hex(12))
}

/// Paths of one job's checkpoint area: `<checkpoint-dir>/<job-id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointLayout {
    root: PathBuf,
    job_id: JobId,
}

impl CheckpointLayout {
    /// Layout under the configured checkpoint directory for `job_id`.
    pub fn new(checkpoint_dir: impl Into<PathBuf>, job_id: JobId) -> Self {
        CheckpointLayout {
            root: checkpoint_dir.into(),
            job_id,
        }
    }
    /// The job id.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }
    /// `<checkpoint-dir>/<job-id>`.
    pub fn job_dir(&self) -> PathBuf {
        self.root.join(self.job_id.as_str())
    }
    /// `<checkpoint-dir>/<job-id>/chk-<n>`.
    pub fn checkpoint_dir(&self, checkpoint_id: u64) -> PathBuf {
        self.job_dir().join(checkpoint_dir_name(checkpoint_id))
    }
    /// `<checkpoint-dir>/<job-id>/shared`.
    pub fn shared_dir(&self) -> PathBuf {
        self.job_dir().join(SHARED_DIR)
    }
    /// `<checkpoint-dir>/<job-id>/taskowned`.
    pub fn taskowned_dir(&self) -> PathBuf {
        self.job_dir().join(TASKOWNED_DIR)
    }
    /// Creates the job, shared and taskowned directories.
    pub fn create_dirs(&self, storage: &dyn Storage) -> Result<()> {
        storage.create_dir_all(&self.shared_dir())?;
        storage.create_dir_all(&self.taskowned_dir())
    }
}

/// Path of the `_metadata` file in a snapshot directory.
pub fn metadata_path(snapshot_dir: &Path) -> PathBuf {
    snapshot_dir.join(METADATA_FILE_NAME)
}

/// Validates a file path as stored in `_metadata`: relative, forward slashes,
/// non-empty components, no `.`; `..` allowed only as leading components.
pub fn validate_ref_path(path: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(SnapshotError::InvalidPath {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("the path is empty");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return bad("paths in _metadata must be relative and use forward slashes");
    }
    let mut seen_normal = false;
    for c in path.split('/') {
        match c {
            "" | "." => return bad("empty or '.' path components are not allowed"),
            ".." if seen_normal => return bad("'..' may only appear at the start"),
            ".." => {}
            _ => seen_normal = true,
        }
    }
    if !seen_normal {
        return bad("the path names no file");
    }
    Ok(())
}

/// Resolves a `_metadata` file reference against the snapshot directory's
/// path relative to the job directory (e.g. `chk-5`), producing a
/// job-directory-relative path with forward slashes (e.g. `shared/ab.sst`).
/// Fails if the result would leave the job directory.
pub fn resolve_in_job(snapshot_dir_in_job: &str, ref_path: &str) -> Result<String> {
    validate_ref_path(ref_path)?;
    let mut parts: Vec<&str> = snapshot_dir_in_job
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for c in ref_path.split('/') {
        if c == ".." {
            if parts.pop().is_none() {
                return Err(SnapshotError::InvalidPath {
                    path: ref_path.to_string(),
                    reason: format!("it leaves the job directory when resolved from '{snapshot_dir_in_job}'"),
                });
            }
        } else {
            parts.push(c);
        }
    }
    Ok(parts.join("/"))
}

/// Joins a `_metadata` reference onto the snapshot directory.
pub fn resolve_ref(snapshot_dir: &Path, ref_path: &str) -> Result<PathBuf> {
    validate_ref_path(ref_path)?;
    let mut p = snapshot_dir.to_path_buf();
    for c in ref_path.split('/') {
        if c == ".." {
            // Lexical: pop when possible so paths stay tidy; otherwise keep "..".
            if !matches!(p.components().next_back(), Some(std::path::Component::Normal(_))) || !p.pop() {
                p.push("..");
            }
        } else {
            p.push(c);
        }
    }
    Ok(p)
}

/// A checkpoint directory that was skipped while looking for the latest one.
#[derive(Debug)]
pub struct IgnoredCheckpoint {
    /// The `chk-<n>` directory.
    pub dir: PathBuf,
    /// Why it was skipped (no `_metadata`, unreadable, corrupt...).
    pub reason: String,
}

/// Result of [`find_latest_checkpoint`].
#[derive(Debug)]
pub struct CheckpointScan {
    /// The completed checkpoint with the highest id, if any.
    pub latest: Option<FoundCheckpoint>,
    /// Completed checkpoint ids found, ascending.
    pub completed: Vec<u64>,
    /// `chk-<n>` directories that are not complete, with the reason.
    pub ignored: Vec<IgnoredCheckpoint>,
}

/// A completed checkpoint found on storage.
#[derive(Debug)]
pub struct FoundCheckpoint {
    pub checkpoint_id: u64,
    pub dir: PathBuf,
    pub metadata: SnapshotMetadata,
}

/// Scans `job_dir` for `chk-<n>` directories. Only those with a readable,
/// checksum-valid `_metadata` count as completed; others are reported in
/// `ignored`. A missing job directory yields an empty scan.
pub fn find_latest_checkpoint(storage: &dyn Storage, job_dir: &Path) -> Result<CheckpointScan> {
    let mut scan = CheckpointScan {
        latest: None,
        completed: Vec::new(),
        ignored: Vec::new(),
    };
    let entries = match storage.list(job_dir) {
        Ok(e) => e,
        Err(SnapshotError::MissingFile { .. }) => return Ok(scan),
        Err(e) => return Err(e),
    };
    let mut candidates: Vec<(u64, PathBuf)> = entries
        .into_iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| parse_checkpoint_dir_name(&e.name).map(|n| (n, job_dir.join(&e.name))))
        .collect();
    candidates.sort();
    for (n, dir) in candidates {
        let mp = metadata_path(&dir);
        match storage.exists(&mp)? {
            false => scan.ignored.push(IgnoredCheckpoint {
                dir,
                reason: "no _metadata (checkpoint never completed or was being deleted)".into(),
            }),
            true => match read_metadata(storage, &mp) {
                Ok(meta) if meta.checkpoint_id == n => {
                    scan.completed.push(n);
                    scan.latest = Some(FoundCheckpoint {
                        checkpoint_id: n,
                        dir,
                        metadata: meta,
                    });
                }
                Ok(meta) => scan.ignored.push(IgnoredCheckpoint {
                    dir,
                    reason: format!(
                        "_metadata is for checkpoint {} but the directory is chk-{n}",
                        meta.checkpoint_id
                    ),
                }),
                Err(e) if e.is_user_error() => scan.ignored.push(IgnoredCheckpoint {
                    dir,
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            },
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_validation() {
        let id = JobId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(JobId::parse(id.as_str()).unwrap(), id);
        assert!(JobId::parse("ABCDEF0123456789abcdef0123456789").is_err());
        assert!(JobId::parse("abc").is_err());
        assert!(JobId::parse("g0000000000000000000000000000000").is_err());
        assert_ne!(JobId::generate(), JobId::generate());
    }

    #[test]
    fn checkpoint_names() {
        assert_eq!(checkpoint_dir_name(860), "chk-860");
        assert_eq!(parse_checkpoint_dir_name("chk-860"), Some(860));
        assert_eq!(parse_checkpoint_dir_name("chk-0"), Some(0));
        for bad in ["chk-", "chk-01", "chk--1", "chk-1a", "ck-1", "chk-+1"] {
            assert_eq!(parse_checkpoint_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn savepoint_names() {
        let job = JobId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let mut g = IdGenerator::with_seed(7);
        let name = savepoint_dir_name(&job, &mut g);
        assert!(name.starts_with("savepoint-012345-"));
        assert_eq!(name.len(), "savepoint-012345-".len() + 12);
        assert_ne!(name, savepoint_dir_name(&job, &mut g));
    }

    #[test]
    fn ref_paths() {
        assert_eq!(resolve_in_job("chk-5", "a/b.state").unwrap(), "chk-5/a/b.state");
        assert_eq!(resolve_in_job("chk-5", "../shared/x").unwrap(), "shared/x");
        assert!(resolve_in_job("chk-5", "../../x").is_err());
        for bad in ["", "/abs", "a\\b", "a/../b", "a//b", "./a", "..", "c:/x"] {
            assert!(validate_ref_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            resolve_ref(Path::new("/r/job/chk-5"), "../shared/x").unwrap(),
            PathBuf::from("/r/job/shared/x")
        );
    }
}
