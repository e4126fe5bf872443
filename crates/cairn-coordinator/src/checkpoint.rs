//! The checkpoint coordinator: starts checkpoints and savepoints (the barrier
//! to inject), hands each task's synchronous snapshot to a pool of writer
//! threads, completes snapshots through the commit protocol of
//! `cairn-snapshot` (`_metadata` last), applies retention, and keeps the
//! statistics the control plane shows. The job loop that drives it lives in
//! [`crate::controller`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_config::{options, Configuration};
use cairn_snapshot::commit::{
    complete_checkpoint, discard_attempt, CheckpointSpec, CommitReport, ExpectedOperator, PendingCheckpoint,
};
use cairn_snapshot::fence::Fence;
use cairn_snapshot::layout::{savepoint_dir_name, CheckpointLayout, IdGenerator};
use cairn_snapshot::retention::execute_cleanup;
use cairn_snapshot::{
    normalize_location, CompletedCheckpointStore, ExternalizedRetention, JobId, SavepointFormat, SnapshotKind,
    StateFileRef, Storage,
};

use crate::control::{
    AfterSavepoint, CheckpointConfigView, CheckpointStats, CheckpointsOverview, SnapshotFormat, SnapshotStatus,
};
use crate::statistics::CheckpointStatsTracker;
use cairn_runtime::error::{CheckpointFailure, CheckpointingError, JobError, SetupError, SetupErrorKind};
use cairn_runtime::job::{JobSpec, RunningJob};
use cairn_runtime::record::{Barrier, SnapshotType};
use cairn_runtime::task::{TaskCommand, TaskEvent, TaskId};
use cairn_runtime::time::now_ms;
use cairn_runtime::upload::{SnapshotDestination, SnapshotUploader};

/// Checkpoint and savepoint settings from configuration.
#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    /// `None` when periodic checkpoints are off.
    pub interval: Option<Duration>,
    /// `execution.checkpointing.dir`; needed for checkpoints, not for savepoints.
    pub dir: Option<PathBuf>,
    /// `execution.checkpointing.savepoint-dir`: the default savepoint target.
    pub savepoint_dir: Option<PathBuf>,
    pub exactly_once: bool,
    pub timeout: Duration,
    pub min_pause: Duration,
    pub max_concurrent: usize,
    pub tolerable_failures: u32,
    pub num_retained: usize,
    pub retention: ExternalizedRetention,
    /// `execution.checkpointing.incremental`: backends that snapshot into
    /// files upload only what the last completed checkpoint lacks.
    pub incremental: bool,
    /// Unaligned checkpoints (exactly-once only) and their aligned timeout.
    pub unaligned: bool,
    pub aligned_checkpoint_timeout: Duration,
}

impl CheckpointSettings {
    /// Read from configuration.
    pub fn from_config(config: &Configuration) -> Result<Self, JobError> {
        let interval = config.checkpoint_interval();
        // `file://` locations are plain paths; other URIs go to their storage.
        let location = |p: PathBuf| normalize_location(&p.to_string_lossy());
        let dir = config.get(&options::CHECKPOINTS_DIR).map(location);
        if let (Some(interval), None) = (interval, &dir) {
            return Err(JobError::setup(
                SetupErrorKind::Config,
                format!(
                    "execution.checkpointing.interval is set ({}) but execution.checkpointing.dir is not: set it (alias state.checkpoints.dir) to a directory for checkpoints",
                    cairn_config::format_duration(interval)
                ),
            ));
        }
        let retention = match config.get(&options::EXTERNALIZED_CHECKPOINT_RETENTION) {
            cairn_config::ExternalizedCheckpointRetention::RetainOnCancellation => {
                ExternalizedRetention::RetainOnCancellation
            }
            cairn_config::ExternalizedCheckpointRetention::DeleteOnCancellation => {
                ExternalizedRetention::DeleteOnCancellation
            }
            cairn_config::ExternalizedCheckpointRetention::NoExternalizedCheckpoints => {
                ExternalizedRetention::NoExternalizedCheckpoints
            }
        };
        Ok(CheckpointSettings {
            interval,
            dir,
            savepoint_dir: config.get(&options::SAVEPOINT_DIR).map(location),
            exactly_once: config.get(&options::CHECKPOINTING_MODE) == cairn_config::CheckpointingMode::ExactlyOnce,
            timeout: config.get(&options::CHECKPOINTING_TIMEOUT),
            min_pause: config.get(&options::CHECKPOINTING_MIN_PAUSE),
            max_concurrent: config.get(&options::CHECKPOINTING_MAX_CONCURRENT).max(1) as usize,
            tolerable_failures: config.get(&options::CHECKPOINTING_TOLERABLE_FAILURES),
            num_retained: config.get(&options::CHECKPOINTS_NUM_RETAINED).max(1) as usize,
            retention,
            incremental: config.get(&options::CHECKPOINTING_INCREMENTAL),
            unaligned: config.get(&options::CHECKPOINTING_UNALIGNED)
                && config.get(&options::CHECKPOINTING_MODE) == cairn_config::CheckpointingMode::ExactlyOnce,
            aligned_checkpoint_timeout: config.get(&options::CHECKPOINTING_ALIGNED_TIMEOUT),
        })
    }

    /// The configuration as the control plane shows it.
    pub fn view(&self) -> CheckpointConfigView {
        CheckpointConfigView {
            mode: if self.exactly_once {
                "exactly_once"
            } else {
                "at_least_once"
            }
            .into(),
            interval_ms: self.interval.map_or(0, |d| d.as_millis() as u64),
            timeout_ms: self.timeout.as_millis() as u64,
            min_pause_ms: self.min_pause.as_millis() as u64,
            max_concurrent: self.max_concurrent as u32,
            tolerable_failed_checkpoints: self.tolerable_failures,
            externalization: match self.retention {
                ExternalizedRetention::RetainOnCancellation => "RETAIN_ON_CANCELLATION",
                ExternalizedRetention::DeleteOnCancellation => "DELETE_ON_CANCELLATION",
                ExternalizedRetention::NoExternalizedCheckpoints => "NO_EXTERNALIZED_CHECKPOINTS",
            }
            .into(),
            checkpoint_storage: self.dir.clone(),
            savepoint_dir: self.savepoint_dir.clone(),
            num_retained: self.num_retained as u32,
            unaligned: self.unaligned,
            aligned_checkpoint_timeout_ms: self.aligned_checkpoint_timeout.as_millis() as u64,
        }
    }
}

/// A snapshot that could not start: its id (when one was taken) and why.
#[derive(Debug, Clone)]
pub struct TriggerFailure {
    pub checkpoint_id: Option<u64>,
    pub cause: CheckpointFailure,
}

impl std::fmt::Display for TriggerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.checkpoint_id {
            Some(id) => write!(f, "snapshot {id} could not start: {}", self.cause),
            None => write!(f, "{}", self.cause),
        }
    }
}

/// What a snapshot in progress is for.
#[derive(Clone, Debug)]
pub enum SnapshotTarget {
    /// A checkpoint; `operation` when a user asked for it.
    Checkpoint { operation: Option<String> },
    /// A savepoint into `dir` (the `savepoint-…` directory itself).
    Savepoint {
        dir: PathBuf,
        format: SnapshotFormat,
        operation: String,
        then: AfterSavepoint,
    },
}

/// A snapshot that ended, for the job loop to act on.
#[derive(Debug)]
pub enum SnapshotOutcome {
    Completed {
        id: u64,
        target: SnapshotTarget,
        /// The snapshot's directory.
        location: PathBuf,
    },
    Failed {
        id: u64,
        target: SnapshotTarget,
        reason: CheckpointFailure,
    },
}

struct Pending {
    pending: PendingCheckpoint,
    target: SnapshotTarget,
    /// Where the snapshot's files go.
    dir: PathBuf,
    started: Instant,
    stats: CheckpointStats,
    acked_tasks: HashSet<TaskId>,
    /// The barrier, re-sent to tasks that finish before it reached them.
    barrier: Barrier,
    /// Tasks whose synchronous snapshot arrived.
    snapshotted: HashSet<TaskId>,
}

/// Coordinates the checkpoints and savepoints of one job across its attempts.
pub struct Coordinator {
    spec: JobSpec,
    pub settings: CheckpointSettings,
    storage: Arc<dyn Storage>,
    /// Where tasks upload their snapshots; destinations are registered here.
    uploader: Arc<SnapshotUploader>,
    /// `None` when no checkpoint directory is configured.
    layout: Option<CheckpointLayout>,
    /// This coordinator's epoch on the job's checkpoint directory.
    fence: Option<Fence>,
    job_id: JobId,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    pub store: CompletedCheckpointStore,
    last_trigger: Option<Instant>,
    last_completion: Option<Instant>,
    /// Consecutive checkpoint failures that count toward
    /// `tolerable-failed-checkpoints` (Flink's continuous failure counter).
    consecutive_failures: u32,
    /// The newest completed checkpoint; failures of older ones do not count.
    last_completed: u64,
    stats: CheckpointStatsTracker,
    outcomes: Vec<SnapshotOutcome>,
    /// CLAIM mode: the restored snapshot's directory, deleted once this
    /// many more checkpoints completed (it is then subsumed).
    claimed: Option<(PathBuf, usize)>,
    rng: IdGenerator,
}

impl Coordinator {
    /// A coordinator whose first snapshot is `first_id` (or the first id
    /// above every checkpoint already in the job's directory), writing
    /// through `storage`.
    pub fn new(
        spec: &JobSpec,
        settings: CheckpointSettings,
        first_id: u64,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, JobError> {
        let job_id = JobId::parse(&spec.job_id).map_err(|e| JobError::Internal(e.to_string()))?;
        let mut next_id = first_id.max(1);
        let (layout, fence) = match &settings.dir {
            Some(dir) => {
                let layout = CheckpointLayout::new(dir.clone(), job_id.clone());
                let setup = |e: cairn_snapshot::SnapshotError| {
                    JobError::Setup(
                        SetupError::new(
                            SetupErrorKind::CheckpointStorage,
                            format!(
                                "cannot create the checkpoint directory {} (execution.checkpointing.dir): {e}",
                                storage.display(&layout.job_dir())
                            ),
                        )
                        .with_source(e),
                    )
                };
                layout.create_dirs(&*storage).map_err(setup)?;
                let fence = Fence::acquire(&*storage, &layout.job_dir()).map_err(setup)?;
                next_id = fence.next_free_id(&*storage, next_id).map_err(setup)?;
                (Some(layout), Some(fence))
            }
            None => (None, None),
        };
        let store = CompletedCheckpointStore::new(settings.num_retained)
            .map_err(|e| JobError::Setup(SetupError::new(SetupErrorKind::Config, e.to_string()).with_source(e)))?;
        Ok(Coordinator {
            spec: spec.clone(),
            settings,
            uploader: SnapshotUploader::new(storage.clone()),
            storage,
            layout,
            fence,
            job_id,
            next_id,
            pending: BTreeMap::new(),
            store,
            last_trigger: None,
            last_completion: None,
            consecutive_failures: 0,
            last_completed: 0,
            stats: CheckpointStatsTracker::default(),
            outcomes: Vec::new(),
            claimed: None,
            rng: IdGenerator::from_entropy(),
        })
    }

    /// Where the job's tasks upload their snapshots.
    pub fn uploader(&self) -> &Arc<SnapshotUploader> {
        &self.uploader
    }

    /// The storage snapshots are written to and read from.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The job's checkpoint directory (`<dir>/<job-id>`), when configured.
    pub fn job_dir(&self) -> Option<PathBuf> {
        self.layout.as_ref().map(|l| l.job_dir())
    }

    /// Whether periodic checkpoints are configured.
    pub fn periodic(&self) -> bool {
        self.settings.interval.is_some()
    }

    /// Record a restore, for statistics; with `claim`, the restored
    /// snapshot's directory is deleted once newer checkpoints subsume it.
    pub fn on_restored(&mut self, id: u64, dir: &Path, is_savepoint: bool, claim: bool) {
        self.stats.on_restored(id, dir, is_savepoint, now_ms() as u64);
        if claim && self.claimed.is_none() {
            self.claimed = Some((dir.to_path_buf(), self.settings.num_retained));
        }
    }

    fn expected_operators(&self) -> Vec<ExpectedOperator> {
        self.spec
            .graph
            .nodes
            .iter()
            .map(|n| ExpectedOperator {
                operator_id: n.operator_id.clone(),
                uid: n.uid.clone(),
                name: n.name.clone(),
                parallelism: n.parallelism,
                max_parallelism: n.max_parallelism,
            })
            .collect()
    }

    /// Whether a periodic trigger is due now.
    fn due(&self) -> bool {
        let Some(interval) = self.settings.interval else {
            return false;
        };
        // Savepoints count too (Flink's CheckpointRequestDecider): a periodic
        // checkpoint triggered during a savepoint would overtake its aligned
        // barrier at every task and abort it, which unaligned checkpoints
        // (whose barriers overtake at once) would do every time.
        if self.pending.len() >= self.settings.max_concurrent {
            return false;
        }
        let since_trigger = self.last_trigger.is_none_or(|t| t.elapsed() >= interval);
        let since_completion = self
            .last_completion
            .is_none_or(|t| t.elapsed() >= self.settings.min_pause);
        since_trigger && since_completion
    }

    /// Where a savepoint requested with `target` goes: a fresh
    /// `savepoint-<job>-<random>` directory under it or the configured one.
    pub fn savepoint_dir_for(&mut self, target: Option<&Path>) -> Result<PathBuf, String> {
        let parent = target
            .map(Path::to_path_buf)
            .or_else(|| self.settings.savepoint_dir.clone())
            .ok_or_else(|| {
                "no savepoint directory: give a target directory, or set execution.checkpointing.savepoint-dir (alias state.savepoints.dir)"
                    .to_string()
            })?;
        let dir = parent.join(savepoint_dir_name(&self.job_id, &mut self.rng));
        self.storage.create_dir_all(&dir).map_err(|e| {
            format!(
                "cannot create the savepoint directory {}: {e}",
                self.storage.display(&dir)
            )
        })?;
        Ok(dir)
    }

    /// Start snapshot `next_id` for `target`; returns the barrier to inject.
    /// A snapshot that could not even start (its claim or directory could not
    /// be written) is recorded as failed; the caller decides what that means.
    pub fn begin(&mut self, target: SnapshotTarget, num_tasks: usize) -> Result<Barrier, TriggerFailure> {
        let id = self.next_id;
        let (kind, dir, snapshot_type) = match &target {
            SnapshotTarget::Checkpoint { .. } => {
                let layout = self.layout.as_ref().ok_or_else(|| TriggerFailure {
                    checkpoint_id: None,
                    cause:
                        "checkpoints need a directory: set execution.checkpointing.dir (alias state.checkpoints.dir)"
                            .into(),
                })?;
                (
                    SnapshotKind::Checkpoint,
                    layout.checkpoint_dir(id),
                    SnapshotType::Checkpoint,
                )
            }
            SnapshotTarget::Savepoint { dir, format, then, .. } => (
                SnapshotKind::Savepoint {
                    format: match format {
                        SnapshotFormat::Canonical => SavepointFormat::Canonical,
                        SnapshotFormat::Native => SavepointFormat::Native,
                    },
                },
                dir.clone(),
                SnapshotType::Savepoint {
                    terminate: !matches!(then, AfterSavepoint::KeepRunning),
                },
            ),
        };
        self.next_id += 1;
        let trigger_ms = now_ms() as u64;
        let barrier = Barrier {
            checkpoint_id: id,
            timestamp_ms: trigger_ms,
            snapshot_type,
        };
        let spec = CheckpointSpec {
            job_id: self.job_id.clone(),
            checkpoint_id: id,
            kind,
            trigger_timestamp_ms: trigger_ms,
            operators: self.expected_operators(),
        };
        let is_savepoint = matches!(target, SnapshotTarget::Savepoint { .. });
        let stats = CheckpointStats {
            id,
            is_savepoint,
            status: SnapshotStatus::InProgress,
            trigger_timestamp_ms: trigger_ms,
            end_timestamp_ms: None,
            duration_ms: 0,
            sync_duration_ms: 0,
            async_duration_ms: 0,
            alignment_duration_ms: 0,
            is_unaligned: false,
            persisted_data_bytes: 0,
            state_size_bytes: 0,
            num_acknowledged_subtasks: 0,
            num_subtasks: num_tasks as u32,
            external_path: None,
            failure_message: None,
        };
        let started = Instant::now();
        let prepared = PendingCheckpoint::new(spec)
            .map_err(CheckpointFailure::from)
            .and_then(|pending| {
                let destination = match (&target, &self.fence, &self.layout) {
                    (SnapshotTarget::Checkpoint { .. }, Some(fence), Some(layout)) => {
                        fence.claim(&*self.storage, &dir)?;
                        SnapshotDestination::checkpoint(id, dir.clone(), layout.shared_dir(), self.settings.incremental)
                    }
                    (SnapshotTarget::Savepoint { format, .. }, _, _) => {
                        self.storage.create_dir_all(&dir)?;
                        SnapshotDestination::savepoint(id, dir.clone(), *format)
                    }
                    _ => return Err("checkpoints need a directory: set execution.checkpointing.dir".into()),
                };
                Ok((pending, destination))
            });
        if !is_savepoint {
            self.last_trigger = Some(Instant::now());
        }
        self.stats.on_triggered();
        let (pending, destination) = match prepared {
            Ok(p) => p,
            Err(cause) => {
                tracing::warn!(
                    job_id = %self.job_id,
                    checkpoint_id = id,
                    code = cause.code(),
                    "snapshot {id} could not start: {cause}"
                );
                // Not counted here: the caller applies the tolerance rule.
                self.record_failure(target, stats, started, cause.clone(), false)
                    .map_err(|e| TriggerFailure {
                        checkpoint_id: Some(id),
                        cause: CheckpointFailure::Other(e.to_string()),
                    })?;
                return Err(TriggerFailure {
                    checkpoint_id: Some(id),
                    cause,
                });
            }
        };
        self.uploader.register(Arc::new(destination));
        self.pending.insert(
            id,
            Pending {
                pending,
                target,
                dir,
                started,
                stats,
                acked_tasks: HashSet::new(),
                barrier,
                snapshotted: HashSet::new(),
            },
        );
        Ok(barrier)
    }

    /// A checkpoint that failed to start counts toward
    /// `tolerable-failed-checkpoints` like one that failed later.
    pub fn on_trigger_failed(&mut self, failure: TriggerFailure) -> Result<(), JobError> {
        match failure.checkpoint_id {
            Some(id) => self.count_failure(id, failure.cause),
            None => Err(JobError::Internal(failure.cause.to_string())),
        }
    }

    /// An attempt started: the first periodic checkpoint comes one interval later.
    pub fn on_attempt_started(&mut self) {
        self.last_trigger = Some(Instant::now());
    }

    /// Start a periodic checkpoint if one is due.
    pub fn maybe_trigger(&mut self, job: &RunningJob, finished: &HashSet<TaskId>) -> Result<(), JobError> {
        if self.layout.is_some() && self.due() {
            match self.begin(SnapshotTarget::Checkpoint { operation: None }, job.tasks.len()) {
                Ok(barrier) => inject(job, barrier, finished),
                Err(failure) => self.on_trigger_failed(failure)?,
            }
        }
        Ok(())
    }

    /// `task` finished its input: pending snapshots whose barrier it never
    /// got (its inputs ended first) are taken on it directly.
    pub fn on_task_finished(&mut self, job: &RunningJob, task: TaskId) {
        for p in self.pending.values() {
            if !p.snapshotted.contains(&task) {
                job.command(task, TaskCommand::TriggerCheckpoint(p.barrier));
            }
        }
    }

    /// A task took the synchronous part of its snapshot (its upload is
    /// under way); it must not be asked again for this snapshot.
    pub fn on_snapshotted(&mut self, task: TaskId, checkpoint_id: u64) {
        if let Some(p) = self.pending.get_mut(&checkpoint_id) {
            p.snapshotted.insert(task);
        }
    }

    /// A task declined a snapshot.
    pub fn on_decline(&mut self, checkpoint_id: u64, reason: CheckpointFailure) -> Result<(), JobError> {
        self.abort(checkpoint_id, reason)
    }

    fn abort(&mut self, checkpoint_id: u64, reason: impl Into<CheckpointFailure>) -> Result<(), JobError> {
        self.abort_with(checkpoint_id, reason.into(), true)
    }

    fn record(&mut self, stats: CheckpointStats) {
        self.stats.on_ended(stats);
    }

    /// Abandon a pending snapshot; `failure` = whether it counts toward
    /// `tolerable-failed-checkpoints` (a subsumed one or a savepoint does not).
    fn abort_with(&mut self, checkpoint_id: u64, reason: CheckpointFailure, failure: bool) -> Result<(), JobError> {
        let Some(mut p) = self.pending.remove(&checkpoint_id) else {
            return Ok(());
        };
        // Files still being written are deleted when their writes end.
        self.uploader.abort(checkpoint_id);
        if let Ok(aborted) = p.pending.decline(reason.to_string()) {
            let base = self.base_dir(&p);
            discard_attempt(&*self.storage, &base, &aborted, Some(&self.store));
        }
        self.record_failure(p.target, p.stats, p.started, reason, failure)
    }

    /// The directory the commit protocol works in: the job directory for
    /// checkpoints, the savepoint directory itself for savepoints.
    fn base_dir(&self, p: &Pending) -> PathBuf {
        match (&p.target, &self.layout) {
            (SnapshotTarget::Checkpoint { .. }, Some(l)) => l.job_dir(),
            _ => p.dir.clone(),
        }
    }

    /// Expire snapshots older than the timeout.
    pub fn expire(&mut self) -> Result<(), JobError> {
        let timeout = self.settings.timeout;
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.started.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.abort(id, CheckpointFailure::Expired(timeout))?;
        }
        Ok(())
    }

    /// A task's snapshot is durable; completes the snapshot when every
    /// acknowledgement is in.
    pub fn on_ack(&mut self, ack: TaskEvent, job: &RunningJob) -> Result<(), JobError> {
        let TaskEvent::Acknowledge {
            task,
            checkpoint_id,
            files,
            alignment,
            sync,
            write,
            unaligned,
            persisted_bytes,
        } = ack
        else {
            return Ok(());
        };
        let Some(p) = self.pending.get_mut(&checkpoint_id) else {
            return Ok(()); // aborted or expired: its files were deleted with it
        };
        if p.acked_tasks.contains(&task) {
            return Ok(()); // a task snapshots a checkpoint once; a repeat adds nothing
        }
        let s = &mut p.stats;
        s.sync_duration_ms = s.sync_duration_ms.max(sync.as_millis() as u64);
        s.alignment_duration_ms = s.alignment_duration_ms.max(alignment.as_millis() as u64);
        s.async_duration_ms = s.async_duration_ms.max(write.as_millis() as u64);
        s.is_unaligned |= unaligned;
        s.persisted_data_bytes += persisted_bytes;
        p.acked_tasks.insert(task);
        s.num_acknowledged_subtasks += 1;
        // Every operator of the task's chain acknowledges, with or without files.
        let chain = &self.spec.graph.chains[task.chain];
        let mut by_node: BTreeMap<usize, Vec<StateFileRef>> = chain.iter().map(|n| (n.0, Vec::new())).collect();
        for (node, fs) in files {
            for f in fs {
                s.state_size_bytes += f.size;
                by_node.entry(node).or_default().push(f);
            }
        }
        let mut failure = None;
        for (node, files) in by_node {
            let op_id = self.spec.graph.nodes[node].operator_id.clone();
            if let Err(e) = p.pending.acknowledge(&op_id, task.subtask, files) {
                failure = Some(e.to_string());
                break;
            }
        }
        if let Some(reason) = failure {
            return self.abort(checkpoint_id, reason);
        }
        if p.pending.is_fully_acknowledged() {
            let p = self.pending.remove(&checkpoint_id).expect("pending present");
            self.complete(p, job)?;
        }
        Ok(())
    }

    fn complete(&mut self, p: Pending, job: &RunningJob) -> Result<(), JobError> {
        let base = self.base_dir(&p);
        let Pending {
            pending,
            target,
            dir,
            started,
            mut stats,
            ..
        } = p;
        let id = pending.checkpoint_id();
        // The registered destination has done its work either way.
        self.uploader.completed(id);
        if let (SnapshotTarget::Checkpoint { .. }, Some(f)) = (&target, &self.fence) {
            if let Err(e) = f.check(&*self.storage, &format!("completing checkpoint {id}")) {
                // A newer coordinator owns the job: discard this checkpoint and stop.
                let mut pending = pending;
                if let Ok(aborted) = pending.decline(e.to_string()) {
                    discard_attempt(&*self.storage, &base, &aborted, Some(&self.store));
                }
                let cause = CheckpointFailure::from(e);
                self.record_failure(target, stats, started, cause.clone(), false)?;
                return Err(JobError::Fenced(cause));
            }
        }
        let completing = match pending.finalize(now_ms() as u64) {
            Ok(c) => c,
            Err(e) => return self.record_failure(target, stats, started, e.into(), true),
        };
        // Checkpoints commit side effects (two-phase-commit sinks); of the
        // savepoints only a stopping one does, as in Flink: a savepoint taken
        // while running must not commit what a restore from it will redo.
        let notify_tasks = match &target {
            SnapshotTarget::Checkpoint { .. } => true,
            SnapshotTarget::Savepoint { then, .. } => matches!(then, AfterSavepoint::Stop { .. }),
        };
        let mut notify = |cid: u64| {
            if notify_tasks {
                for t in &job.tasks {
                    job.command(*t, TaskCommand::NotifyCheckpointComplete(cid));
                }
            }
            Ok(())
        };
        let store = match target {
            SnapshotTarget::Checkpoint { .. } => Some(&mut self.store),
            SnapshotTarget::Savepoint { .. } => None,
        };
        match complete_checkpoint(&*self.storage, &base, completing, store, &mut notify) {
            CommitReport::Completed { warnings, .. } => {
                let is_savepoint = stats.is_savepoint;
                if !is_savepoint {
                    self.consecutive_failures = 0;
                    self.last_completed = self.last_completed.max(id);
                    self.last_completion = Some(Instant::now());
                }
                stats.status = SnapshotStatus::Completed;
                stats.duration_ms = started.elapsed().as_millis() as u64;
                stats.end_timestamp_ms = Some(now_ms() as u64);
                stats.external_path = Some(dir.clone());
                tracing::info!(
                    job_id = %self.job_id,
                    checkpoint_id = id,
                    savepoint = is_savepoint,
                    duration_ms = stats.duration_ms,
                    state_size_bytes = stats.state_size_bytes,
                    sync_ms = stats.sync_duration_ms,
                    async_ms = stats.async_duration_ms,
                    alignment_ms = stats.alignment_duration_ms,
                    unaligned = stats.is_unaligned,
                    persisted_data_bytes = stats.persisted_data_bytes,
                    path = %dir.display(),
                    "{} {id} completed",
                    if is_savepoint { "savepoint" } else { "checkpoint" }
                );
                for w in &warnings {
                    tracing::warn!(job_id = %self.job_id, checkpoint_id = id, "after completing snapshot {id}: {w}");
                }
                self.record(stats);
                self.outcomes.push(SnapshotOutcome::Completed {
                    id,
                    target,
                    location: dir,
                });
                if !is_savepoint {
                    self.after_checkpoint_completed(id)?;
                }
                Ok(())
            }
            CommitReport::Discarded { error, .. } => self.record_failure(target, stats, started, error.into(), true),
        }
    }

    fn after_checkpoint_completed(&mut self, id: u64) -> Result<(), JobError> {
        // Checkpoints older than this one that are still pending can never be needed.
        let older: Vec<u64> = self
            .pending
            .range(..id)
            .filter(|(_, p)| matches!(p.target, SnapshotTarget::Checkpoint { .. }))
            .map(|(k, _)| *k)
            .collect();
        for o in older {
            self.abort_with(o, format!("subsumed by checkpoint {id}").into(), false)?;
        }
        if let Some((dir, left)) = self.claimed.as_mut() {
            *left -= 1;
            if *left == 0 {
                let dir = dir.clone();
                self.claimed = None;
                self.dispose_claimed(&dir);
            }
        }
        Ok(())
    }

    /// CLAIM mode: the restored snapshot is subsumed; delete it.
    fn dispose_claimed(&self, dir: &Path) {
        let has_metadata = self
            .storage
            .exists(&dir.join(cairn_snapshot::metadata::METADATA_FILE_NAME))
            .unwrap_or(false);
        if !has_metadata {
            return;
        }
        match self.storage.delete_dir_all(dir) {
            Ok(()) => tracing::info!(
                job_id = %self.job_id,
                path = %dir.display(),
                "deleted the claimed snapshot (--claim-mode CLAIM): newer checkpoints subsume it"
            ),
            Err(e) => tracing::warn!(
                job_id = %self.job_id,
                path = %dir.display(),
                "could not delete the claimed snapshot: {e}"
            ),
        }
    }

    /// Record a failed snapshot and tell the job loop; `counts` = whether it
    /// counts toward `tolerable-failed-checkpoints` (savepoints never do).
    ///
    /// Counting follows Flink's checkpoint failure manager: only real
    /// failures count (not a checkpoint subsumed by a newer one or discarded
    /// because the attempt ended), only checkpoints newer than the last
    /// completed one, and the count starts over when it fails the job, so
    /// every attempt after a restart again tolerates as many failures.
    fn record_failure(
        &mut self,
        target: SnapshotTarget,
        mut stats: CheckpointStats,
        started: Instant,
        reason: CheckpointFailure,
        counts: bool,
    ) -> Result<(), JobError> {
        let id = stats.id;
        stats.status = SnapshotStatus::Failed;
        stats.duration_ms = started.elapsed().as_millis() as u64;
        stats.end_timestamp_ms = Some(now_ms() as u64);
        stats.failure_message = Some(reason.to_string());
        let is_savepoint = stats.is_savepoint;
        self.record(stats);
        let what = if is_savepoint { "savepoint" } else { "checkpoint" };
        if counts {
            tracing::warn!(job_id = %self.job_id, checkpoint_id = id, code = reason.code(), "{what} {id} failed: {reason}");
        } else {
            // Subsumed, or discarded because the attempt ended: expected.
            tracing::debug!(job_id = %self.job_id, checkpoint_id = id, "{what} {id} abandoned: {reason}");
        }
        self.outcomes.push(SnapshotOutcome::Failed {
            id,
            target,
            reason: reason.clone(),
        });
        if !counts || is_savepoint {
            return Ok(());
        }
        self.count_failure(id, reason)
    }

    /// Flink's continuous failure counter (see [`Coordinator::record_failure`]).
    fn count_failure(&mut self, id: u64, reason: CheckpointFailure) -> Result<(), JobError> {
        if id <= self.last_completed {
            return Ok(());
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.settings.tolerable_failures {
            let consecutive = std::mem::take(&mut self.consecutive_failures);
            return Err(JobError::Checkpointing(CheckpointingError {
                checkpoint_id: id,
                consecutive,
                tolerable: self.settings.tolerable_failures,
                cause: reason,
            }));
        }
        Ok(())
    }

    /// Snapshots that ended since the last call.
    pub fn take_outcomes(&mut self) -> Vec<SnapshotOutcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// Discard every pending snapshot (the attempt is over).
    pub fn abort_all(&mut self, reason: &str) {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let _ = self.abort_with(id, reason.into(), false);
        }
    }

    /// Whether a snapshot is still pending.
    pub fn is_pending(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Apply the retention policy when the job is cancelled.
    pub fn on_cancel(&mut self) {
        // No write may outlive the cleanup (a late file would be left behind).
        self.uploader.wait_idle();
        if let Some(layout) = &self.layout {
            let plan = self.store.on_cancel(self.settings.retention);
            execute_cleanup(&*self.storage, &layout.job_dir(), &plan);
            if self.settings.retention != ExternalizedRetention::RetainOnCancellation {
                // Nothing is retained: leave no empty job directory behind.
                let _ = self.storage.delete_dir_all(&layout.job_dir());
            }
        }
    }

    /// Retained checkpoints' directories, newest first (restart candidates).
    pub fn retained_checkpoints(&self) -> Vec<(u64, PathBuf)> {
        let Some(layout) = &self.layout else {
            return Vec::new();
        };
        let mut v: Vec<(u64, PathBuf)> = self
            .store
            .retained()
            .map(|c| (c.checkpoint_id(), layout.job_dir().join(&c.dir_in_job)))
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.0));
        v
    }

    /// Counts, history and latest snapshots for the control plane.
    pub fn overview(&self, history: usize) -> CheckpointsOverview {
        let in_progress = self.pending.values().map(|p| {
            let mut s = p.stats.clone();
            s.duration_ms = p.started.elapsed().as_millis() as u64;
            s
        });
        self.stats.overview(history, in_progress)
    }

    /// Every recorded snapshot, oldest first (for the job result).
    pub fn history(&self) -> Vec<CheckpointStats> {
        self.stats.history()
    }
}

/// Send `barrier` to the tasks that start snapshots: the running sources
/// (the barrier then flows with the records) and every finished task (no
/// barrier can reach it any more; it snapshots its final state directly).
pub fn inject(job: &RunningJob, barrier: Barrier, finished: &HashSet<TaskId>) {
    for t in &job.tasks {
        if finished.contains(t) || job.source_tasks.contains(t) {
            job.command(*t, TaskCommand::TriggerCheckpoint(barrier));
        }
    }
}
