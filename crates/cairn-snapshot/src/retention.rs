//! Retention of completed checkpoints and cleanup of what no retained
//! checkpoint reaches (invariant 2).
//!
//! The store is pure bookkeeping: it decides, [`execute_cleanup`] deletes.
//! Files are tracked as paths relative to the job directory
//! (`chk-7/op-1-0.state`, `shared/ab12.sst`) and reference counted over the
//! retained checkpoints. Files under `taskowned/` are never deleted by the
//! coordinator. Savepoints are never registered here and never deleted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SnapshotError};
use crate::fence::CLAIM_FILE_NAME;
use crate::layout::{checkpoint_dir_name, resolve_in_job, SHARED_DIR, TASKOWNED_DIR};
use crate::metadata::{SnapshotKind, SnapshotMetadata, METADATA_FILE_NAME};
use crate::storage::Storage;

/// What happens to retained checkpoints when the job is cancelled
/// (`execution.checkpointing.externalized-checkpoint-retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExternalizedRetention {
    /// Keep retained checkpoints on cancel, so the job can be resumed from one.
    RetainOnCancellation,
    /// Delete retained checkpoints on cancel (kept if the job fails).
    DeleteOnCancellation,
    /// Checkpoints are not externalized: deleted whenever the job terminates.
    NoExternalizedCheckpoints,
}

impl FromStr for ExternalizedRetention {
    type Err = SnapshotError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "RETAIN_ON_CANCELLATION" => Ok(Self::RetainOnCancellation),
            "DELETE_ON_CANCELLATION" => Ok(Self::DeleteOnCancellation),
            "NO_EXTERNALIZED_CHECKPOINTS" => Ok(Self::NoExternalizedCheckpoints),
            _ => Err(SnapshotError::protocol(
                "externalized checkpoint retention",
                format!("unknown value '{s}'; use RETAIN_ON_CANCELLATION, DELETE_ON_CANCELLATION or NO_EXTERNALIZED_CHECKPOINTS"),
            )),
        }
    }
}

impl fmt::Display for ExternalizedRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RetainOnCancellation => "RETAIN_ON_CANCELLATION",
            Self::DeleteOnCancellation => "DELETE_ON_CANCELLATION",
            Self::NoExternalizedCheckpoints => "NO_EXTERNALIZED_CHECKPOINTS",
        })
    }
}

/// A checkpoint that completed (its `_metadata` is written), as tracked by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpoint {
    /// Directory relative to the job directory (`chk-<n>`).
    pub dir_in_job: String,
    /// Its metadata.
    pub metadata: SnapshotMetadata,
    /// Every file it references, relative to the job directory.
    pub files: BTreeSet<String>,
}

impl CompletedCheckpoint {
    /// Wraps the metadata of a completed checkpoint. Savepoints are refused.
    pub fn new(metadata: SnapshotMetadata) -> Result<Self> {
        if metadata.kind != SnapshotKind::Checkpoint {
            return Err(SnapshotError::protocol(
                "completed checkpoint store",
                format!(
                    "snapshot {} is a savepoint; savepoints are owned by the user and are never registered for retention",
                    metadata.checkpoint_id
                ),
            ));
        }
        let dir_in_job = checkpoint_dir_name(metadata.checkpoint_id);
        let files = metadata
            .files()
            .map(|(_, _, f)| resolve_in_job(&dir_in_job, &f.path))
            .collect::<Result<BTreeSet<_>>>()?;
        Ok(CompletedCheckpoint {
            dir_in_job,
            metadata,
            files,
        })
    }

    /// The checkpoint id.
    pub fn checkpoint_id(&self) -> u64 {
        self.metadata.checkpoint_id
    }

    /// `chk-<n>/_metadata`, relative to the job directory.
    pub fn metadata_file(&self) -> String {
        format!("{}/{METADATA_FILE_NAME}", self.dir_in_job)
    }
}

/// Deletions to perform, all paths relative to one base directory (the job
/// directory for checkpoints, the savepoint directory for savepoints).
///
/// Execution order matters and is kept by [`execute_cleanup`]: first the
/// `_metadata` files (so a half-deleted checkpoint never looks complete), then
/// the data files, then directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupPlan {
    /// `_metadata` files, deleted first.
    pub metadata_files: Vec<String>,
    /// Data files, deleted only after every metadata file is gone.
    pub files: Vec<String>,
    /// Bookkeeping files in snapshot directories (the coordinator's claim),
    /// deleted with the data files so the directories end up empty.
    pub markers: Vec<String>,
    /// Directories removed if (and only if) they are empty afterwards.
    pub dirs_if_empty: Vec<String>,
    /// Directories removed with everything in them (only directories that
    /// belong wholly to a snapshot that never completed).
    pub dirs_recursive: Vec<String>,
}

impl CleanupPlan {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.metadata_files.is_empty()
            && self.files.is_empty()
            && self.markers.is_empty()
            && self.dirs_if_empty.is_empty()
            && self.dirs_recursive.is_empty()
    }

    fn extend(&mut self, other: CleanupPlan) {
        self.metadata_files.extend(other.metadata_files);
        self.files.extend(other.files);
        self.markers.extend(other.markers);
        self.dirs_if_empty.extend(other.dirs_if_empty);
        self.dirs_recursive.extend(other.dirs_recursive);
    }
}

/// Result of [`CompletedCheckpointStore::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOutcome {
    /// Ids of the checkpoints no longer retained.
    pub subsumed: Vec<u64>,
    /// What to delete: files no retained checkpoint references any more.
    pub cleanup: CleanupPlan,
}

/// Keeps the latest `num_retained` completed checkpoints and reference counts
/// the files they use.
#[derive(Debug, Clone)]
pub struct CompletedCheckpointStore {
    num_retained: usize,
    retained: VecDeque<CompletedCheckpoint>,
    refs: BTreeMap<String, usize>,
}

fn never_deleted(path: &str) -> bool {
    path == TASKOWNED_DIR || path.starts_with(&format!("{TASKOWNED_DIR}/"))
}

impl CompletedCheckpointStore {
    /// A store keeping `num_retained` (>= 1) checkpoints.
    pub fn new(num_retained: usize) -> Result<Self> {
        if num_retained == 0 {
            return Err(SnapshotError::protocol(
                "execution.checkpointing.num-retained",
                "must be at least 1; set it to 1 or more",
            ));
        }
        Ok(CompletedCheckpointStore {
            num_retained,
            retained: VecDeque::new(),
            refs: BTreeMap::new(),
        })
    }

    /// How many checkpoints are kept.
    pub fn num_retained(&self) -> usize {
        self.num_retained
    }

    /// Retained checkpoints, oldest first.
    pub fn retained(&self) -> impl Iterator<Item = &CompletedCheckpoint> {
        self.retained.iter()
    }

    /// The newest retained checkpoint.
    pub fn latest(&self) -> Option<&CompletedCheckpoint> {
        self.retained.back()
    }

    /// Whether a retained checkpoint references `path` (job-relative).
    pub fn is_referenced(&self, path: &str) -> bool {
        self.refs.contains_key(path)
    }

    /// Every job-relative file referenced by a retained checkpoint.
    pub fn referenced_files(&self) -> impl Iterator<Item = &str> {
        self.refs.keys().map(String::as_str)
    }

    /// Registers a completed checkpoint. Its id must be greater than every
    /// retained one. Returns the subsumed checkpoints and exactly the files
    /// that no retained checkpoint references any more.
    pub fn add(&mut self, checkpoint: CompletedCheckpoint) -> Result<AddOutcome> {
        if let Some(latest) = self.latest() {
            if checkpoint.checkpoint_id() <= latest.checkpoint_id() {
                return Err(SnapshotError::protocol(
                    "completed checkpoint store",
                    format!(
                        "checkpoint {} cannot be added after checkpoint {}; checkpoint ids must increase",
                        checkpoint.checkpoint_id(),
                        latest.checkpoint_id()
                    ),
                ));
            }
        }
        for f in &checkpoint.files {
            *self.refs.entry(f.clone()).or_insert(0) += 1;
        }
        self.retained.push_back(checkpoint);
        let mut subsumed = Vec::new();
        let mut cleanup = CleanupPlan::default();
        while self.retained.len() > self.num_retained {
            if let Some(old) = self.retained.pop_front() {
                subsumed.push(old.checkpoint_id());
                cleanup.extend(self.release(&old));
            }
        }
        Ok(AddOutcome { subsumed, cleanup })
    }

    /// Drops one checkpoint's references; returns what became unreferenced.
    fn release(&mut self, cp: &CompletedCheckpoint) -> CleanupPlan {
        // Subdirectories of the checkpoint's own files (a backend's private
        // files, e.g. RocksDB's MANIFEST under `chk-<n>/op-…/`) go before
        // the checkpoint directory, deepest first, so it ends up empty.
        let prefix = format!("{}/", cp.dir_in_job);
        let mut subdirs: BTreeSet<String> = BTreeSet::new();
        for f in cp.files.iter().filter_map(|f| f.strip_prefix(&prefix)) {
            let mut rest = f;
            while let Some((dir, _)) = rest.rsplit_once('/') {
                subdirs.insert(format!("{prefix}{dir}"));
                rest = dir;
            }
        }
        let mut dirs_if_empty: Vec<String> = subdirs.into_iter().collect();
        dirs_if_empty.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs_if_empty.push(cp.dir_in_job.clone());
        let mut plan = CleanupPlan {
            metadata_files: vec![cp.metadata_file()],
            markers: vec![format!("{}/{CLAIM_FILE_NAME}", cp.dir_in_job)],
            dirs_if_empty,
            ..CleanupPlan::default()
        };
        for f in &cp.files {
            if let Some(n) = self.refs.get_mut(f) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(f);
                    if !never_deleted(f) {
                        plan.files.push(f.clone());
                    }
                }
            }
        }
        plan
    }

    /// Removes files still referenced by a retained checkpoint from `plan`
    /// (used when discarding a failed attempt that reused shared files).
    pub fn filter_plan(&self, mut plan: CleanupPlan) -> CleanupPlan {
        plan.files.retain(|f| !self.is_referenced(f) && !never_deleted(f));
        plan.dirs_recursive.retain(|d| {
            let prefix = format!("{d}/");
            !self.refs.keys().any(|r| r.starts_with(&prefix))
        });
        plan
    }

    /// Decides what to delete when the job is cancelled. With
    /// `RetainOnCancellation` nothing is deleted and the store is unchanged;
    /// otherwise every retained checkpoint is released and its files deleted.
    pub fn on_cancel(&mut self, policy: ExternalizedRetention) -> CleanupPlan {
        match policy {
            ExternalizedRetention::RetainOnCancellation => CleanupPlan::default(),
            ExternalizedRetention::DeleteOnCancellation | ExternalizedRetention::NoExternalizedCheckpoints => {
                self.discard_all()
            }
        }
    }

    /// Releases every retained checkpoint; returns the deletions (including
    /// the `shared/` directory and the job directory if they end up empty).
    pub fn discard_all(&mut self) -> CleanupPlan {
        let mut plan = CleanupPlan::default();
        while let Some(cp) = self.retained.pop_front() {
            plan.extend(self.release(&cp));
        }
        plan.dirs_if_empty.push(SHARED_DIR.to_string());
        plan.dirs_if_empty.push(String::new());
        plan
    }
}

/// What [`execute_cleanup`] did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Paths deleted (files and directories).
    pub deleted: Vec<PathBuf>,
    /// Failures, with the path involved.
    pub failures: Vec<SnapshotError>,
    /// What is left to do (retry later); empty when everything succeeded.
    pub remaining: CleanupPlan,
}

impl CleanupReport {
    /// True if the whole plan was carried out.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.remaining.is_empty()
    }
}

fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

/// Carries out a [`CleanupPlan`] under `base_dir` through `storage`.
///
/// If any `_metadata` deletion fails, nothing else is deleted (the rest stays
/// in `remaining`): a snapshot whose `_metadata` still exists must keep all its
/// files. Data-file and directory failures are collected and the rest continues.
pub fn execute_cleanup(storage: &dyn Storage, base_dir: &Path, plan: &CleanupPlan) -> CleanupReport {
    let mut report = CleanupReport::default();
    for (i, m) in plan.metadata_files.iter().enumerate() {
        let p = join_rel(base_dir, m);
        if let Err(e) = storage.delete_file(&p) {
            report.failures.push(e);
            report.remaining = CleanupPlan {
                metadata_files: plan.metadata_files[i..].to_vec(),
                ..plan.clone()
            };
            return report;
        }
        report.deleted.push(p);
    }
    for f in &plan.files {
        let p = join_rel(base_dir, f);
        match storage.delete_file(&p) {
            Ok(()) => report.deleted.push(p),
            Err(e) => {
                report.failures.push(e);
                report.remaining.files.push(f.clone());
            }
        }
    }
    for m in &plan.markers {
        let p = join_rel(base_dir, m);
        if let Err(e) = storage.delete_file(&p) {
            report.failures.push(e);
            report.remaining.markers.push(m.clone());
        }
    }
    for d in &plan.dirs_recursive {
        let p = join_rel(base_dir, d);
        match storage.delete_dir_all(&p) {
            Ok(()) => report.deleted.push(p),
            Err(e) => {
                report.failures.push(e);
                report.remaining.dirs_recursive.push(d.clone());
            }
        }
    }
    for d in &plan.dirs_if_empty {
        let p = join_rel(base_dir, d);
        let empty = match storage.list(&p) {
            Ok(entries) => entries.is_empty(),
            Err(SnapshotError::MissingFile { .. }) => continue,
            Err(e) => {
                report.failures.push(e);
                report.remaining.dirs_if_empty.push(d.clone());
                continue;
            }
        };
        if empty {
            match storage.delete_dir_all(&p) {
                Ok(()) => report.deleted.push(p),
                Err(e) => {
                    report.failures.push(e);
                    report.remaining.dirs_if_empty.push(d.clone());
                }
            }
        }
    }
    report
}
