//! The checkpoint coordinator and the job loop with checkpoints: periodic
//! triggers at the sources, asynchronous writing of each task's snapshot,
//! completion through the commit protocol of `cairn-snapshot` (`_metadata`
//! last), retention, notifications (two-phase-commit sinks commit then), and
//! a final checkpoint when bounded input ends.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_config::{options, Configuration};
use cairn_snapshot::commit::{
    complete_checkpoint, discard_attempt, CheckpointSpec, CommitReport, ExpectedOperator, PendingCheckpoint,
};
use cairn_snapshot::layout::CheckpointLayout;
use cairn_snapshot::retention::execute_cleanup;
use cairn_snapshot::{
    CompletedCheckpointStore, ExternalizedRetention, JobId, LocalFileStorage, SnapshotKind, StateFileRef, Storage,
};
use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::error::JobError;
use crate::job::{is_cancellation, start, task_failure, JobSpec, RestoreFn, RunningJob, RuntimeSettings};
use crate::record::{Barrier, SnapshotType};
use crate::task::{TaskCommand, TaskEvent, TaskId};
use crate::time::now_ms;

/// Statistics of one checkpoint, kept for logs and (later) the REST API.
#[derive(Clone, Debug)]
pub struct CheckpointStats {
    pub id: u64,
    pub trigger_timestamp_ms: u64,
    pub duration: Duration,
    pub sync_max: Duration,
    pub alignment_max: Duration,
    pub size_bytes: u64,
    pub status: CheckpointStatus,
}

/// How a checkpoint ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointStatus {
    Completed,
    Failed(String),
}

/// Checkpoint settings from configuration.
#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    pub interval: Option<Duration>,
    pub dir: PathBuf,
    pub timeout: Duration,
    pub min_pause: Duration,
    pub max_concurrent: usize,
    pub tolerable_failures: u32,
    pub num_retained: usize,
    pub retention: ExternalizedRetention,
}

impl CheckpointSettings {
    /// Read from configuration; `None` when checkpointing is off.
    pub fn from_config(config: &Configuration) -> Result<Option<Self>, JobError> {
        let Some(interval) = config.checkpoint_interval() else {
            return Ok(None);
        };
        let dir = config.get(&options::CHECKPOINTS_DIR).ok_or_else(|| {
            JobError::Setup(format!(
                "execution.checkpointing.interval is set ({interval:?}) but execution.checkpointing.dir is not: set it (alias state.checkpoints.dir) to a directory for checkpoints"
            ))
        })?;
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
        Ok(Some(CheckpointSettings {
            interval: Some(interval),
            dir,
            timeout: config.get(&options::CHECKPOINTING_TIMEOUT),
            min_pause: config.get(&options::CHECKPOINTING_MIN_PAUSE),
            max_concurrent: config.get(&options::CHECKPOINTING_MAX_CONCURRENT).max(1) as usize,
            tolerable_failures: config.get(&options::CHECKPOINTING_TOLERABLE_FAILURES),
            num_retained: config.get(&options::CHECKPOINTS_NUM_RETAINED).max(1) as usize,
            retention,
        }))
    }
}

/// An acknowledgement produced by an asynchronous writer.
struct Ack {
    checkpoint_id: u64,
    task: TaskId,
    files: Result<Vec<(usize, Option<StateFileRef>)>, String>,
    sync: Duration,
    alignment: Duration,
}

struct Pending {
    pending: PendingCheckpoint,
    started: Instant,
    trigger_ms: u64,
    sync_max: Duration,
    alignment_max: Duration,
    size: u64,
    acked_tasks: HashSet<TaskId>,
}

/// Coordinates checkpoints of one running attempt.
pub struct Coordinator {
    spec: JobSpec,
    settings: CheckpointSettings,
    storage: Arc<LocalFileStorage>,
    layout: CheckpointLayout,
    job_id: JobId,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    pub store: CompletedCheckpointStore,
    last_trigger: Option<Instant>,
    last_completion: Option<Instant>,
    consecutive_failures: u32,
    acks_tx: Sender<Ack>,
    acks_rx: Receiver<Ack>,
    pub history: Vec<CheckpointStats>,
    log: bool,
}

impl Coordinator {
    /// A coordinator whose first checkpoint is `first_id`.
    pub fn new(spec: &JobSpec, settings: CheckpointSettings, first_id: u64, log: bool) -> Result<Self, JobError> {
        let job_id = JobId::parse(&spec.job_id).map_err(|e| JobError::Internal(e.to_string()))?;
        let storage = Arc::new(LocalFileStorage::new());
        let layout = CheckpointLayout::new(settings.dir.clone(), job_id.clone());
        layout.create_dirs(&*storage).map_err(|e| {
            JobError::Setup(format!(
                "cannot create the checkpoint directory {}: {e}",
                layout.job_dir().display()
            ))
        })?;
        let store = CompletedCheckpointStore::new(settings.num_retained).map_err(|e| JobError::Setup(e.to_string()))?;
        let (acks_tx, acks_rx) = unbounded();
        Ok(Coordinator {
            spec: spec.clone(),
            settings,
            storage,
            layout,
            job_id,
            next_id: first_id.max(1),
            pending: BTreeMap::new(),
            store,
            last_trigger: None,
            last_completion: None,
            consecutive_failures: 0,
            acks_tx,
            acks_rx,
            history: Vec::new(),
            log,
        })
    }

    /// The job's checkpoint directory (`<dir>/<job-id>`).
    pub fn job_dir(&self) -> PathBuf {
        self.layout.job_dir()
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
        if self.pending.len() >= self.settings.max_concurrent {
            return false;
        }
        let since_trigger = self.last_trigger.is_none_or(|t| t.elapsed() >= interval);
        let since_completion = self
            .last_completion
            .is_none_or(|t| t.elapsed() >= self.settings.min_pause);
        since_trigger && since_completion
    }

    /// Start checkpoint `next_id`; returns the barrier to inject.
    fn begin(&mut self) -> Result<Barrier, JobError> {
        let id = self.next_id;
        self.next_id += 1;
        let trigger_ms = now_ms() as u64;
        let spec = CheckpointSpec {
            job_id: self.job_id.clone(),
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            trigger_timestamp_ms: trigger_ms,
            operators: self.expected_operators(),
        };
        let pending = PendingCheckpoint::new(spec).map_err(|e| JobError::Internal(e.to_string()))?;
        self.storage
            .create_dir_all(&self.layout.checkpoint_dir(id))
            .map_err(|e| JobError::Internal(format!("cannot create checkpoint {id}'s directory: {e}")))?;
        self.pending.insert(
            id,
            Pending {
                pending,
                started: Instant::now(),
                trigger_ms,
                sync_max: Duration::ZERO,
                alignment_max: Duration::ZERO,
                size: 0,
                acked_tasks: HashSet::new(),
            },
        );
        self.last_trigger = Some(Instant::now());
        Ok(Barrier {
            checkpoint_id: id,
            timestamp_ms: trigger_ms,
            snapshot_type: SnapshotType::Checkpoint,
        })
    }

    /// Trigger at the sources if due.
    pub fn maybe_trigger(&mut self, job: &RunningJob) -> Result<(), JobError> {
        if self.due() {
            let barrier = self.begin()?;
            for t in &job.source_tasks {
                job.command(*t, TaskCommand::TriggerCheckpoint(barrier));
            }
        }
        Ok(())
    }

    /// Trigger a final checkpoint on every (finished) task directly.
    pub fn trigger_final(&mut self, job: &RunningJob) -> Result<u64, JobError> {
        let barrier = self.begin()?;
        for t in &job.tasks {
            job.command(*t, TaskCommand::TriggerCheckpoint(barrier));
        }
        Ok(barrier.checkpoint_id)
    }

    /// Hand a task's synchronous snapshot to a writer thread.
    pub fn on_snapshot(&mut self, event: TaskEvent) {
        let TaskEvent::Snapshot {
            task,
            checkpoint_id,
            states,
            alignment,
            sync,
            ..
        } = event
        else {
            return;
        };
        if !self.pending.contains_key(&checkpoint_id) {
            return; // already expired or declined
        }
        let storage = self.storage.clone();
        let dir = self.layout.checkpoint_dir(checkpoint_id);
        let graph = self.spec.graph.clone();
        let acks = self.acks_tx.clone();
        std::thread::spawn(move || {
            let mut files = Ok(Vec::new());
            for (node, snap) in states {
                let op_id = &graph.nodes[node].operator_id;
                let name = format!("op-{op_id}-{}.state", task.subtask);
                match crate::snapshot_io::write_snapshot_file(&*storage, &dir, &name, snap) {
                    Ok(f) => {
                        if let Ok(v) = files.as_mut() {
                            v.push((node, f));
                        }
                    }
                    Err(e) => {
                        files = Err(format!("writing {}: {e}", dir.join(&name).display()));
                        break;
                    }
                }
            }
            let _ = acks.send(Ack {
                checkpoint_id,
                task,
                files,
                sync,
                alignment,
            });
        });
    }

    /// A task declined a checkpoint.
    pub fn on_decline(&mut self, checkpoint_id: u64, reason: String) -> Result<(), JobError> {
        self.abort(checkpoint_id, reason)
    }

    fn abort(&mut self, checkpoint_id: u64, reason: String) -> Result<(), JobError> {
        self.abort_with(checkpoint_id, reason, true)
    }

    /// Abandon a pending checkpoint; `failure` = whether it counts toward
    /// `tolerable-failed-checkpoints` (a subsumed one does not).
    fn abort_with(&mut self, checkpoint_id: u64, reason: String, failure: bool) -> Result<(), JobError> {
        let Some(mut p) = self.pending.remove(&checkpoint_id) else {
            return Ok(());
        };
        if let Ok(aborted) = p.pending.decline(reason.clone()) {
            discard_attempt(&*self.storage, &self.layout.job_dir(), &aborted, Some(&self.store));
        }
        self.history.push(CheckpointStats {
            id: checkpoint_id,
            trigger_timestamp_ms: p.trigger_ms,
            duration: p.started.elapsed(),
            sync_max: p.sync_max,
            alignment_max: p.alignment_max,
            size_bytes: p.size,
            status: CheckpointStatus::Failed(reason.clone()),
        });
        if !failure {
            return Ok(());
        }
        if self.log {
            eprintln!("Checkpoint {checkpoint_id} failed: {reason}");
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.settings.tolerable_failures {
            return Err(JobError::Internal(format!(
                "{} consecutive checkpoint failures exceed execution.checkpointing.tolerable-failed-checkpoints ({}); last: {reason}",
                self.consecutive_failures, self.settings.tolerable_failures
            )));
        }
        Ok(())
    }

    /// Expire checkpoints older than the timeout.
    pub fn expire(&mut self) -> Result<(), JobError> {
        let timeout = self.settings.timeout;
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.started.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.abort(
                id,
                format!("checkpoint expired after execution.checkpointing.timeout ({timeout:?})"),
            )?;
        }
        Ok(())
    }

    /// Process finished writes; completes checkpoints whose acks are all in.
    /// Returns the ids completed.
    pub fn drain_acks(&mut self, job: &RunningJob) -> Result<Vec<u64>, JobError> {
        let mut completed = Vec::new();
        while let Ok(ack) = self.acks_rx.try_recv() {
            let Some(p) = self.pending.get_mut(&ack.checkpoint_id) else {
                continue;
            };
            let files = match ack.files {
                Ok(f) => f,
                Err(reason) => {
                    self.abort(ack.checkpoint_id, reason)?;
                    continue;
                }
            };
            p.sync_max = p.sync_max.max(ack.sync);
            p.alignment_max = p.alignment_max.max(ack.alignment);
            p.acked_tasks.insert(ack.task);
            // Every operator of the task's chain acknowledges, with or without a file.
            let chain = &self.spec.graph.chains[ack.task.chain];
            let mut by_node: BTreeMap<usize, Vec<StateFileRef>> = chain.iter().map(|n| (n.0, Vec::new())).collect();
            for (node, f) in files {
                if let Some(f) = f {
                    p.size += f.size;
                    by_node.entry(node).or_default().push(f);
                }
            }
            let mut failure = None;
            for (node, files) in by_node {
                let op_id = self.spec.graph.nodes[node].operator_id.clone();
                if let Err(e) = p.pending.acknowledge(&op_id, ack.task.subtask, files) {
                    failure = Some(e.to_string());
                    break;
                }
            }
            if let Some(reason) = failure {
                self.abort(ack.checkpoint_id, reason)?;
                continue;
            }
            if p.pending.is_fully_acknowledged() {
                let p = self.pending.remove(&ack.checkpoint_id).expect("pending present");
                self.complete(p, job)?;
                completed.push(ack.checkpoint_id);
            }
        }
        Ok(completed)
    }

    fn complete(&mut self, p: Pending, job: &RunningJob) -> Result<(), JobError> {
        let id = p.pending.checkpoint_id();
        let completing = match p.pending.finalize(now_ms() as u64) {
            Ok(c) => c,
            Err(e) => return self.abort_completed_attempt(id, p.trigger_ms, e.to_string()),
        };
        let mut notify = |cid: u64| {
            for t in &job.tasks {
                job.command(*t, TaskCommand::NotifyCheckpointComplete(cid));
            }
            Ok(())
        };
        let report = complete_checkpoint(
            &*self.storage,
            &self.layout.job_dir(),
            completing,
            Some(&mut self.store),
            &mut notify,
        );
        match report {
            CommitReport::Completed { warnings, .. } => {
                self.consecutive_failures = 0;
                self.last_completion = Some(Instant::now());
                let stats = CheckpointStats {
                    id,
                    trigger_timestamp_ms: p.trigger_ms,
                    duration: p.started.elapsed(),
                    sync_max: p.sync_max,
                    alignment_max: p.alignment_max,
                    size_bytes: p.size,
                    status: CheckpointStatus::Completed,
                };
                if self.log {
                    eprintln!(
                        "Checkpoint {id} completed in {} ms ({} bytes, sync {} ms, alignment {} ms){}",
                        stats.duration.as_millis(),
                        stats.size_bytes,
                        stats.sync_max.as_millis(),
                        stats.alignment_max.as_millis(),
                        if warnings.is_empty() {
                            String::new()
                        } else {
                            format!("; warnings: {warnings:?}")
                        }
                    );
                }
                self.history.push(stats);
                // Checkpoints older than this one that are still pending can never be needed.
                let older: Vec<u64> = self.pending.range(..id).map(|(k, _)| *k).collect();
                for o in older {
                    self.abort_with(o, format!("subsumed by checkpoint {id}"), false)?;
                }
                Ok(())
            }
            CommitReport::Discarded { error, .. } => self.abort_completed_attempt(id, p.trigger_ms, error.to_string()),
        }
    }

    fn abort_completed_attempt(&mut self, id: u64, trigger_ms: u64, reason: String) -> Result<(), JobError> {
        self.history.push(CheckpointStats {
            id,
            trigger_timestamp_ms: trigger_ms,
            duration: Duration::ZERO,
            sync_max: Duration::ZERO,
            alignment_max: Duration::ZERO,
            size_bytes: 0,
            status: CheckpointStatus::Failed(reason.clone()),
        });
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.settings.tolerable_failures {
            return Err(JobError::Internal(format!(
                "checkpoint {id} could not be completed: {reason}"
            )));
        }
        Ok(())
    }

    /// Discard every pending checkpoint (the job is over).
    pub fn abort_all(&mut self, reason: &str) {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let _ = self.abort_with(id, reason.to_string(), false);
        }
    }

    /// Whether a checkpoint is still pending.
    pub fn is_pending(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Apply the retention policy when the job is cancelled.
    pub fn on_cancel(&mut self) {
        let plan = self.store.on_cancel(self.settings.retention);
        execute_cleanup(&*self.storage, &self.layout.job_dir(), &plan);
    }
}

/// How a run with checkpoints ended.
pub struct RunOutcome {
    pub source_records: u64,
    pub checkpoints: Vec<CheckpointStats>,
    pub job_dir: PathBuf,
}

/// Run a job with periodic checkpoints to its end. `first_checkpoint_id`
/// continues the numbering of a restored snapshot.
pub fn run_with_checkpoints(
    spec: &JobSpec,
    settings: RuntimeSettings,
    checkpoints: CheckpointSettings,
    first_checkpoint_id: u64,
    restore: RestoreFn<'_>,
    log: bool,
    tick: &mut dyn FnMut(u64),
) -> Result<RunOutcome, JobError> {
    let mut coordinator = Coordinator::new(spec, checkpoints, first_checkpoint_id, log)?;
    let mut job = start(spec, settings, 0, true, restore)?;
    let mut live = job.tasks.len();
    let mut finished: HashSet<TaskId> = HashSet::new();
    let mut final_checkpoint: Option<u64> = None;
    let mut released = false;
    let mut failure: Option<JobError> = None;
    let mut last_tick = Instant::now();
    while live > 0 {
        match job.events.recv_timeout(Duration::from_millis(10)) {
            Ok(TaskEvent::Exited { .. }) => live -= 1,
            Ok(TaskEvent::Failed { task, op, error }) => {
                job.cancel.store(true, Ordering::Relaxed);
                if failure.is_none() && !is_cancellation(&error) {
                    failure = Some(task_failure(spec, task, op, &error));
                }
            }
            Ok(TaskEvent::Finished { task }) => {
                finished.insert(task);
            }
            Ok(e @ TaskEvent::Snapshot { .. }) => coordinator.on_snapshot(e),
            Ok(TaskEvent::Decline {
                checkpoint_id, reason, ..
            }) => {
                if let Err(e) = coordinator.on_decline(checkpoint_id, reason) {
                    failure.get_or_insert(e);
                    job.cancel.store(true, Ordering::Relaxed);
                }
            }
            Err(_) => {}
        }
        if failure.is_some() {
            continue;
        }
        let step = (|| -> Result<(), JobError> {
            coordinator.expire()?;
            let completed = coordinator.drain_acks(&job)?;
            if released {
                return Ok(());
            }
            if finished.len() == job.tasks.len() {
                match final_checkpoint {
                    None => final_checkpoint = Some(coordinator.trigger_final(&job)?),
                    Some(id) if completed.contains(&id) => {
                        released = true;
                        for t in &job.tasks {
                            job.command(*t, TaskCommand::Release);
                        }
                    }
                    Some(id) if !coordinator.is_pending(id) => {
                        // The final checkpoint failed: try again.
                        final_checkpoint = Some(coordinator.trigger_final(&job)?);
                    }
                    Some(_) => {}
                }
            } else if !job.source_tasks.iter().any(|t| finished.contains(t)) {
                // Once a source has finished it can inject no barrier; the
                // final checkpoint covers the rest.
                coordinator.maybe_trigger(&job)?;
            }
            Ok(())
        })();
        if let Err(e) = step {
            failure = Some(e);
            job.cancel.store(true, Ordering::Relaxed);
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            tick(job.source_records());
        }
    }
    job.cancel_and_join();
    coordinator.abort_all("the job ended");
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(RunOutcome {
        source_records: job.source_records(),
        checkpoints: coordinator.history.clone(),
        job_dir: coordinator.job_dir(),
    })
}
