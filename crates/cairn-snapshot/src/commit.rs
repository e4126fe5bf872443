//! The checkpoint commit protocol as pure logic, and a small driver that runs
//! it against [`Storage`].
//!
//! ```text
//!   PendingCheckpoint ──acknowledge×N──▶ finalize ──▶ CompletingCheckpoint
//!        │ decline / expire                              │
//!        ▼                                               ▼ steps, in order:
//!   AbortedCheckpoint (files to discard)     1 VerifyFiles   (task files durable & present)
//!                                            2 WriteMetadata (atomic; the commit point)
//!                                            3 Register      (CompletedCheckpointStore; checkpoints only)
//!                                            4 Notify        (tell tasks; 2PC sinks commit)
//!                                            5 Cleanup       (subsumed checkpoints)
//! ```
//!
//! A failure at steps 1-3 makes the attempt *not* complete: the caller gets an
//! [`AbortedCheckpoint`] whose plan deletes `_metadata` first (it may exist if
//! the atomic write or registration failed after the rename), then the files.
//! A failure at steps 4-5 does not undo the checkpoint: it is complete and
//! retained; the failure is reported for retry.
//!
//! Paths in plans are relative to a *base directory*: the job directory for
//! checkpoints (the snapshot lives in `chk-<n>/`), the savepoint directory
//! itself for savepoints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotError};
use crate::layout::{checkpoint_dir_name, resolve_in_job, validate_hex32, validate_ref_path, JobId};
use crate::metadata::{
    verify_file, write_metadata, OperatorSnapshot, SnapshotKind, SnapshotMetadata, StateFileRef, SubtaskSnapshot,
    CAIRN_VERSION, METADATA_FILE_NAME, METADATA_VERSION,
};
use crate::retention::{
    execute_cleanup, AddOutcome, CleanupPlan, CleanupReport, CompletedCheckpoint, CompletedCheckpointStore,
};
use crate::storage::Storage;

/// An operator whose subtasks must all acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOperator {
    pub operator_id: String,
    pub uid: String,
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
}

/// Everything known when a checkpoint or savepoint is triggered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSpec {
    pub job_id: JobId,
    pub checkpoint_id: u64,
    pub kind: SnapshotKind,
    pub trigger_timestamp_ms: u64,
    pub operators: Vec<ExpectedOperator>,
}

impl CheckpointSpec {
    /// The snapshot directory relative to the base directory: `chk-<n>` for
    /// checkpoints, empty (the base itself) for savepoints.
    pub fn dir_in_base(&self) -> String {
        match self.kind {
            SnapshotKind::Checkpoint => checkpoint_dir_name(self.checkpoint_id),
            SnapshotKind::Savepoint { .. } => String::new(),
        }
    }
}

/// Why an attempt was abandoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    /// A task declined (e.g. its snapshot failed).
    Declined(String),
    /// The checkpoint timed out.
    Expired,
    /// A completion step failed before the checkpoint became complete.
    CommitFailed { step: CommitStep, error: String },
}

/// An abandoned attempt and what to delete for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortedCheckpoint {
    pub checkpoint_id: u64,
    pub kind: SnapshotKind,
    pub reason: AbortReason,
    /// Deletions relative to the base directory. For checkpoints, pass it
    /// through [`CompletedCheckpointStore::filter_plan`] first so shared files
    /// reused from retained checkpoints survive ([`AbortedCheckpoint::discard_plan`]).
    pub cleanup: CleanupPlan,
}

impl AbortedCheckpoint {
    /// The plan to execute, with files still used by retained checkpoints removed.
    pub fn discard_plan(&self, store: Option<&CompletedCheckpointStore>) -> CleanupPlan {
        match store {
            Some(s) => s.filter_plan(self.cleanup.clone()),
            None => self.cleanup.clone(),
        }
    }
}

/// Progress of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// More acknowledgements are awaited.
    Pending { remaining: usize },
    /// Every expected subtask has acknowledged; call [`PendingCheckpoint::finalize`].
    AllAcknowledged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PendingState {
    InProgress,
    Aborted,
}

/// A triggered checkpoint waiting for acknowledgements. Owned by the coordinator.
#[derive(Debug, Clone)]
pub struct PendingCheckpoint {
    spec: CheckpointSpec,
    acks: BTreeMap<(String, u32), Vec<StateFileRef>>,
    expected: usize,
    state: PendingState,
}

impl PendingCheckpoint {
    /// Starts waiting for every subtask of every operator in `spec`.
    pub fn new(spec: CheckpointSpec) -> Result<Self> {
        let mut ids = BTreeSet::new();
        for op in &spec.operators {
            validate_hex32("operator id", &op.operator_id)?;
            if !ids.insert(op.operator_id.clone()) {
                return Err(SnapshotError::protocol(
                    format!("checkpoint {}", spec.checkpoint_id),
                    format!("operator {} is listed twice", op.operator_id),
                ));
            }
            if op.parallelism == 0 || op.parallelism > op.max_parallelism {
                return Err(SnapshotError::protocol(
                    format!("checkpoint {}", spec.checkpoint_id),
                    format!(
                        "operator '{}' has parallelism {} and max parallelism {}",
                        op.uid, op.parallelism, op.max_parallelism
                    ),
                ));
            }
        }
        let expected = spec.operators.iter().map(|o| o.parallelism as usize).sum();
        Ok(PendingCheckpoint {
            spec,
            acks: BTreeMap::new(),
            expected,
            state: PendingState::InProgress,
        })
    }

    /// The checkpoint id.
    pub fn checkpoint_id(&self) -> u64 {
        self.spec.checkpoint_id
    }

    /// The trigger spec.
    pub fn spec(&self) -> &CheckpointSpec {
        &self.spec
    }

    fn ctx(&self) -> String {
        format!("checkpoint {}", self.spec.checkpoint_id)
    }

    /// Records subtask `subtask` of `operator_id` as done, with the files it
    /// wrote (already durable). Rejects acks after abort, unknown operators or
    /// subtasks, duplicates, and unsafe paths; a rejected ack changes nothing.
    pub fn acknowledge(&mut self, operator_id: &str, subtask: u32, files: Vec<StateFileRef>) -> Result<AckStatus> {
        if self.state != PendingState::InProgress {
            return Err(SnapshotError::protocol(
                self.ctx(),
                format!("late acknowledgement from {operator_id}/{subtask}: the checkpoint was already aborted; discard its files"),
            ));
        }
        let op = self
            .spec
            .operators
            .iter()
            .find(|o| o.operator_id == operator_id)
            .ok_or_else(|| {
                SnapshotError::protocol(
                    self.ctx(),
                    format!("acknowledgement from unknown operator {operator_id}"),
                )
            })?;
        if subtask >= op.parallelism {
            return Err(SnapshotError::protocol(
                self.ctx(),
                format!(
                    "acknowledgement from subtask {subtask} of operator '{}', which has parallelism {}",
                    op.uid, op.parallelism
                ),
            ));
        }
        let key = (operator_id.to_string(), subtask);
        if self.acks.contains_key(&key) {
            return Err(SnapshotError::protocol(
                self.ctx(),
                format!("duplicate acknowledgement from {operator_id}/{subtask}"),
            ));
        }
        let dir = self.spec.dir_in_base();
        for f in &files {
            validate_ref_path(&f.path)?;
            if self.spec.kind.is_savepoint() && f.path.starts_with("..") {
                return Err(SnapshotError::InvalidPath {
                    path: f.path.clone(),
                    reason: "savepoint files must be inside the savepoint directory".into(),
                });
            }
            resolve_in_job(&dir, &f.path)?;
        }
        self.acks.insert(key, files);
        let remaining = self.expected - self.acks.len();
        Ok(if remaining == 0 {
            AckStatus::AllAcknowledged
        } else {
            AckStatus::Pending { remaining }
        })
    }

    /// True when every expected subtask acknowledged.
    pub fn is_fully_acknowledged(&self) -> bool {
        self.acks.len() == self.expected
    }

    /// (operator id, subtask) pairs that have not acknowledged yet.
    pub fn missing_acks(&self) -> Vec<(String, u32)> {
        self.spec
            .operators
            .iter()
            .flat_map(|o| (0..o.parallelism).map(move |s| (o.operator_id.clone(), s)))
            .filter(|k| !self.acks.contains_key(k))
            .collect()
    }

    fn abort(&mut self, reason: AbortReason) -> Result<AbortedCheckpoint> {
        if self.state != PendingState::InProgress {
            return Err(SnapshotError::protocol(self.ctx(), "already aborted"));
        }
        self.state = PendingState::Aborted;
        let files: Vec<StateFileRef> = self.acks.values().flatten().cloned().collect();
        Ok(discard_for(&self.spec, &files, reason))
    }

    /// A task declined: the attempt is abandoned.
    pub fn decline(&mut self, reason: impl Into<String>) -> Result<AbortedCheckpoint> {
        self.abort(AbortReason::Declined(reason.into()))
    }

    /// The checkpoint timed out: the attempt is abandoned.
    pub fn expire(&mut self) -> Result<AbortedCheckpoint> {
        self.abort(AbortReason::Expired)
    }

    /// All acks are in: builds the metadata and starts the completion steps.
    pub fn finalize(self, completion_timestamp_ms: u64) -> Result<CompletingCheckpoint> {
        if self.state != PendingState::InProgress {
            return Err(SnapshotError::protocol(
                self.ctx(),
                "cannot finalize an aborted checkpoint",
            ));
        }
        if !self.is_fully_acknowledged() {
            return Err(SnapshotError::protocol(
                self.ctx(),
                format!("cannot finalize: still waiting for {:?}", self.missing_acks()),
            ));
        }
        let PendingCheckpoint { spec, mut acks, .. } = self;
        let operators = spec
            .operators
            .iter()
            .map(|o| OperatorSnapshot {
                operator_id: o.operator_id.clone(),
                uid: o.uid.clone(),
                name: o.name.clone(),
                parallelism: o.parallelism,
                max_parallelism: o.max_parallelism,
                subtasks: (0..o.parallelism)
                    .map(|s| SubtaskSnapshot {
                        subtask_index: s,
                        files: acks.remove(&(o.operator_id.clone(), s)).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        let mut metadata = SnapshotMetadata {
            format_version: METADATA_VERSION,
            kind: spec.kind,
            job_id: spec.job_id.to_string(),
            checkpoint_id: spec.checkpoint_id,
            trigger_timestamp_ms: spec.trigger_timestamp_ms,
            completion_timestamp_ms,
            cairn_version: CAIRN_VERSION.to_string(),
            operators,
        };
        metadata.format_version = metadata.version_needed();
        metadata.validate()?;
        Ok(CompletingCheckpoint {
            dir_in_base: spec.dir_in_base(),
            spec,
            metadata,
            step: CommitStep::VerifyFiles,
            subsumed: Vec::new(),
            cleanup: CleanupPlan::default(),
        })
    }
}

fn discard_for(spec: &CheckpointSpec, files: &[StateFileRef], reason: AbortReason) -> AbortedCheckpoint {
    let dir = spec.dir_in_base();
    let meta = if dir.is_empty() {
        METADATA_FILE_NAME.to_string()
    } else {
        format!("{dir}/{METADATA_FILE_NAME}")
    };
    let mut resolved: Vec<String> = files
        .iter()
        .filter_map(|f| resolve_in_job(&dir, &f.path).ok())
        .collect();
    resolved.sort();
    resolved.dedup();
    AbortedCheckpoint {
        checkpoint_id: spec.checkpoint_id,
        kind: spec.kind,
        reason,
        cleanup: CleanupPlan {
            metadata_files: vec![meta],
            files: resolved,
            markers: Vec::new(),
            dirs_if_empty: Vec::new(),
            // The attempt's own directory belongs to nobody else (ids increase,
            // and tasks reuse only files of completed checkpoints).
            dirs_recursive: vec![dir],
        },
    }
}

/// The completion steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommitStep {
    /// Check that every referenced file exists with its recorded size.
    VerifyFiles,
    /// Write `_metadata` atomically: the commit point.
    WriteMetadata,
    /// Add to the [`CompletedCheckpointStore`] (skipped for savepoints).
    Register,
    /// Notify tasks of completion.
    Notify,
    /// Delete what subsumed checkpoints no longer need (skipped for savepoints).
    Cleanup,
    /// Nothing left to do.
    Done,
}

impl CommitStep {
    /// All steps in order (without `Done`).
    pub const ALL: [CommitStep; 5] = [
        CommitStep::VerifyFiles,
        CommitStep::WriteMetadata,
        CommitStep::Register,
        CommitStep::Notify,
        CommitStep::Cleanup,
    ];

    /// True once the snapshot counts as complete when this step is the next one.
    pub fn is_after_commit_point(self) -> bool {
        self >= CommitStep::Notify
    }
}

/// What a failed completion step means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepFailure {
    /// The snapshot is not complete; execute the discard plan.
    Aborted(AbortedCheckpoint),
    /// The snapshot is complete and retained; only notification or cleanup
    /// failed and may be retried ([`CompletingCheckpoint::cleanup_plan`]).
    CompletedWithError {
        checkpoint_id: u64,
        step: CommitStep,
        error: String,
    },
}

/// A fully acknowledged checkpoint going through the completion steps.
/// Call [`CompletingCheckpoint::next_step`], perform it, then report success
/// with [`CompletingCheckpoint::step_done`] (or [`CompletingCheckpoint::registered`]
/// for `Register`) or failure with [`CompletingCheckpoint::step_failed`].
#[derive(Debug, Clone)]
pub struct CompletingCheckpoint {
    spec: CheckpointSpec,
    dir_in_base: String,
    metadata: SnapshotMetadata,
    step: CommitStep,
    subsumed: Vec<u64>,
    cleanup: CleanupPlan,
}

impl CompletingCheckpoint {
    /// The metadata to write at `WriteMetadata`.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }
    /// The checkpoint id.
    pub fn checkpoint_id(&self) -> u64 {
        self.metadata.checkpoint_id
    }
    /// Snapshot directory relative to the base directory.
    pub fn dir_in_base(&self) -> &str {
        &self.dir_in_base
    }
    /// The step to perform next.
    pub fn next_step(&self) -> CommitStep {
        self.step
    }
    /// Whether the snapshot is complete (its `_metadata` written and, for
    /// checkpoints, registered).
    pub fn is_complete(&self) -> bool {
        self.step.is_after_commit_point()
    }
    /// Checkpoints subsumed at registration.
    pub fn subsumed(&self) -> &[u64] {
        &self.subsumed
    }
    /// Deletions for the `Cleanup` step.
    pub fn cleanup_plan(&self) -> &CleanupPlan {
        &self.cleanup
    }

    fn advance_from(&mut self, from: CommitStep) -> Result<()> {
        if self.step != from {
            return Err(SnapshotError::protocol(
                format!("checkpoint {}", self.checkpoint_id()),
                format!("step {from:?} reported but the next step is {:?}", self.step),
            ));
        }
        let savepoint = self.spec.kind.is_savepoint();
        self.step = match from {
            CommitStep::VerifyFiles => CommitStep::WriteMetadata,
            CommitStep::WriteMetadata if savepoint => CommitStep::Notify,
            CommitStep::WriteMetadata => CommitStep::Register,
            CommitStep::Register => CommitStep::Notify,
            CommitStep::Notify if savepoint => CommitStep::Done,
            CommitStep::Notify => CommitStep::Cleanup,
            CommitStep::Cleanup | CommitStep::Done => CommitStep::Done,
        };
        Ok(())
    }

    /// Reports success of `step` (any step except `Register`).
    pub fn step_done(&mut self, step: CommitStep) -> Result<()> {
        if step == CommitStep::Register {
            return Err(SnapshotError::protocol(
                format!("checkpoint {}", self.checkpoint_id()),
                "report registration with `registered`, passing the store's outcome",
            ));
        }
        self.advance_from(step)
    }

    /// Reports that the checkpoint was added to the store.
    pub fn registered(&mut self, outcome: AddOutcome) -> Result<()> {
        self.advance_from(CommitStep::Register)?;
        self.subsumed = outcome.subsumed;
        self.cleanup = outcome.cleanup;
        Ok(())
    }

    /// Reports that the next step failed. Before the commit point the attempt
    /// is aborted (discard plan deletes `_metadata` first); after it, the
    /// checkpoint stays complete.
    pub fn step_failed(self, error: impl Into<String>) -> StepFailure {
        let step = self.step;
        let error = error.into();
        if step.is_after_commit_point() {
            StepFailure::CompletedWithError {
                checkpoint_id: self.checkpoint_id(),
                step,
                error,
            }
        } else {
            let files: Vec<StateFileRef> = self.metadata.files().map(|(_, _, f)| f.clone()).collect();
            StepFailure::Aborted(discard_for(
                &self.spec,
                &files,
                AbortReason::CommitFailed { step, error },
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// I/O driver
// ---------------------------------------------------------------------------

/// Step 1: every referenced file exists with its recorded size (cheap; the
/// CRC was computed by the task while writing and is checked on restore).
fn verify_sizes(storage: &dyn Storage, snapshot_dir: &Path, meta: &SnapshotMetadata) -> Result<()> {
    for (_, _, f) in meta.files() {
        let p = crate::layout::resolve_ref(snapshot_dir, &f.path)?;
        let size = storage.size(&p)?;
        if size != f.size {
            return Err(SnapshotError::SizeMismatch {
                path: p,
                expected: f.size,
                actual: size,
            });
        }
    }
    Ok(())
}

/// Outcome of [`complete_checkpoint`].
#[derive(Debug)]
pub enum CommitReport {
    /// The snapshot is complete. `warnings` holds failures of the
    /// notification or cleanup steps (not fatal).
    Completed {
        checkpoint_id: u64,
        metadata_path: PathBuf,
        subsumed: Vec<u64>,
        cleanup: Option<CleanupReport>,
        warnings: Vec<SnapshotError>,
    },
    /// The attempt failed before completing and was discarded.
    Discarded {
        aborted: AbortedCheckpoint,
        error: SnapshotError,
        discard: CleanupReport,
    },
}

/// Runs the completion steps of `completing` through `storage`.
///
/// `base_dir` is the job directory (checkpoints) or the savepoint directory.
/// `store` must be given for checkpoints and is ignored for savepoints.
/// `notify` is called with the checkpoint id at the `Notify` step.
pub fn complete_checkpoint(
    storage: &dyn Storage,
    base_dir: &Path,
    mut completing: CompletingCheckpoint,
    mut store: Option<&mut CompletedCheckpointStore>,
    notify: &mut dyn FnMut(u64) -> Result<()>,
) -> CommitReport {
    let snapshot_dir = if completing.dir_in_base.is_empty() {
        base_dir.to_path_buf()
    } else {
        base_dir.join(&completing.dir_in_base)
    };
    let mut warnings = Vec::new();
    let mut cleanup_report = None;
    loop {
        let step = completing.next_step();
        let result: Result<()> = match step {
            CommitStep::Done => break,
            CommitStep::VerifyFiles => {
                verify_sizes(storage, &snapshot_dir, &completing.metadata).and_then(|()| completing.step_done(step))
            }
            CommitStep::WriteMetadata => {
                write_metadata(storage, &snapshot_dir, &completing.metadata).and_then(|_| completing.step_done(step))
            }
            CommitStep::Register => match store.as_deref_mut() {
                None => Err(SnapshotError::protocol(
                    format!("checkpoint {}", completing.checkpoint_id()),
                    "no completed checkpoint store was given to register the checkpoint in",
                )),
                Some(s) => CompletedCheckpoint::new(completing.metadata.clone())
                    .and_then(|cp| s.add(cp))
                    .and_then(|outcome| completing.registered(outcome)),
            },
            CommitStep::Notify => {
                if let Err(e) = notify(completing.checkpoint_id()) {
                    warnings.push(e);
                }
                completing.step_done(step)
            }
            CommitStep::Cleanup => {
                let report = execute_cleanup(storage, base_dir, completing.cleanup_plan());
                cleanup_report = Some(report);
                completing.step_done(step)
            }
        };
        if let Err(error) = result {
            match completing.clone().step_failed(error.to_string()) {
                StepFailure::Aborted(aborted) => {
                    let plan = aborted.discard_plan(store.as_deref());
                    let discard = execute_cleanup(storage, base_dir, &plan);
                    return CommitReport::Discarded {
                        aborted,
                        error,
                        discard,
                    };
                }
                StepFailure::CompletedWithError { .. } => {
                    warnings.push(error);
                    // Steps after the commit point never block completion.
                    let _ = completing.step_done(step);
                }
            }
        }
    }
    CommitReport::Completed {
        checkpoint_id: completing.checkpoint_id(),
        metadata_path: snapshot_dir.join(METADATA_FILE_NAME),
        subsumed: completing.subsumed,
        cleanup: cleanup_report,
        warnings,
    }
}

/// Discards an aborted attempt (decline/expiry) through `storage`.
pub fn discard_attempt(
    storage: &dyn Storage,
    base_dir: &Path,
    aborted: &AbortedCheckpoint,
    store: Option<&CompletedCheckpointStore>,
) -> CleanupReport {
    execute_cleanup(storage, base_dir, &aborted.discard_plan(store))
}

/// Verifies one acknowledged file fully (size and CRC); tasks may use it as a
/// self-check before acking. Re-exported for convenience.
pub fn verify_acked_file(storage: &dyn Storage, snapshot_dir: &Path, file: &StateFileRef) -> Result<()> {
    verify_file(storage, snapshot_dir, file)
}
