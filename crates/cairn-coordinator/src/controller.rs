//! The job controller: runs a job from start to its end across attempts. It
//! drives the checkpoint coordinator, serves control requests (savepoints,
//! manual checkpoints, stop, cancel), publishes status for the control plane,
//! and after a task failure restarts the job in the same process from its
//! latest completed checkpoint, as the restart strategy allows, falling back
//! to an older retained checkpoint when the latest cannot be read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_config::effective_restart_strategy;
use cairn_snapshot::{load_snapshot, LoadedSnapshot, Storage};

use crate::checkpoint::{inject, CheckpointSettings, Coordinator, SnapshotOutcome, SnapshotTarget};
use crate::control::{
    AfterSavepoint, CheckpointStats, ControlPort, ControlRequest, JobInfo, JobMetrics, JobStatus, OperationStatus,
    Published, SubtaskMetrics, VertexInfo,
};
use crate::restart::{RestartDecision, RestartPolicy};
use crate::restore::RestorePlan;
use cairn_runtime::error::{JobError, SetupError, SetupErrorKind};
use cairn_runtime::job::{is_cancellation, start, task_failure, JobSpec, RunningJob, RuntimeSettings, SubtaskRestore};
use cairn_runtime::task::{TaskCommand, TaskEvent, TaskId};
use cairn_runtime::time::now_ms;
use cairn_runtime::upload::SnapshotUploader;

/// How often status is published and progress reported.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How many times a failed final savepoint of a stop is retried.
const STOP_SAVEPOINT_RETRIES: u32 = 2;
/// Checkpoints shown in the published history (Flink's `web.checkpoints.history`).
const PUBLISHED_HISTORY: usize = 10;

/// How a job is to be run.
pub struct JobRun<'a> {
    pub spec: &'a JobSpec,
    pub settings: RuntimeSettings,
    /// The snapshot given at start (`-s`), already loaded.
    pub snapshot: Option<&'a LoadedSnapshot>,
    pub allow_non_restored_state: bool,
    /// `--claim-mode CLAIM`: the job owns the restored snapshot.
    pub claim: bool,
    /// Where checkpoints and savepoints are written and read (chosen from
    /// their locations' schemes).
    pub storage: Arc<dyn Storage>,
    /// Where the tasks run: `None` in this process; a distributed job's
    /// coordinator deploys them to its workers.
    pub launcher: Option<Arc<dyn AttemptLauncher>>,
}

/// Starts the tasks of an attempt somewhere else than in this process. The
/// controller checks a restore (state maps to operators) before it asks;
/// the tasks then read their state from the snapshot themselves.
pub trait AttemptLauncher: Send + Sync {
    /// Start attempt `attempt`, restoring from `snapshot` when given. The
    /// returned job's tasks report through its events as local ones do; an
    /// attempt that started but lost a worker reports a task failure.
    fn launch(
        &self,
        spec: &JobSpec,
        attempt: u32,
        uploader: &Arc<SnapshotUploader>,
        snapshot: Option<&LoadedSnapshot>,
        allow_non_restored_state: bool,
    ) -> Result<RunningJob, JobError>;
}

/// How a job that did not fail ended.
#[derive(Debug)]
pub struct JobOutcome {
    pub status: JobStatus,
    /// Records emitted by sources, over all attempts.
    pub source_records: u64,
    /// Every checkpoint and savepoint, oldest first.
    pub checkpoints: Vec<CheckpointStats>,
    /// The savepoint a stop (or cancel) with savepoint wrote.
    pub savepoint: Option<PathBuf>,
    pub restarts: u32,
    /// The job's checkpoint directory, when checkpoints are configured.
    pub checkpoint_dir: Option<PathBuf>,
}

/// A stop-with-savepoint in progress.
struct StopPlan {
    operation: String,
    dir: PathBuf,
    format: crate::control::SnapshotFormat,
    drain: bool,
    retries: u32,
}

/// How one attempt ended.
enum AttemptEnd {
    Finished { savepoint: Option<PathBuf> },
    Cancelled { savepoint: Option<PathBuf> },
    Failed(JobError),
}

/// Where an attempt restores from.
#[derive(Clone)]
enum RestoreSource {
    Empty,
    Initial,
    Checkpoint(u64, PathBuf),
}

/// Run a job to its end: `Ok` when it finished or was cancelled, `Err` when
/// it failed for good (or could not start).
pub fn run_job(run: JobRun<'_>, port: &ControlPort, tick: &mut dyn FnMut(u64)) -> Result<JobOutcome, JobError> {
    let spec = run.spec;
    let first_id = run.snapshot.map_or(1, |s| s.metadata.checkpoint_id + 1);
    let restart_strategy = effective_restart_strategy(&spec.config);
    let setup = restart_strategy
        .check()
        .map_err(|e| JobError::Setup(SetupError::new(SetupErrorKind::Config, e.to_string()).with_source(e)))
        .and_then(|()| CheckpointSettings::from_config(&spec.config))
        .and_then(|cp| Coordinator::new(spec, cp, first_id, run.storage.clone()));
    let mut coord = match setup {
        Ok(c) => c,
        Err(e) => {
            // The job never started: say so at once, with the cause, to whoever
            // waits for the start (execute_async, the REST API, `cairn run`).
            // (Its message says "the job could not start" itself.)
            tracing::error!(job_id = %spec.job_id, code = e.code(), "{e}");
            let mut p = port.publish();
            p.info.status = JobStatus::Failed;
            p.info.last_failure = Some(e.to_string());
            p.info.last_failure_code = Some(e.code());
            p.info.end_time_ms = Some(now_ms() as u64);
            return Err(e);
        }
    };
    let mut policy = RestartPolicy::new(restart_strategy);
    {
        let mut p = port.publish();
        p.checkpoint_config = coord.settings.view();
    }
    let mut ctl = Controller {
        run: &run,
        port,
        records_before: 0,
        restarts: 0,
        last_failure: None,
        last_failure_code: None,
        last_publish: Instant::now() - PUBLISH_EVERY,
        last_records: (Instant::now(), 0),
        rates: HashMap::new(),
    };
    let mut source = if run.snapshot.is_some() {
        RestoreSource::Initial
    } else {
        RestoreSource::Empty
    };
    let mut attempt = 0u32;
    loop {
        let mut job = match ctl.start_attempt(&mut coord, attempt, &mut source) {
            Ok(job) => job,
            Err(e) => {
                ctl.last_failure = Some(e.to_string());
                ctl.last_failure_code = Some(e.code());
                ctl.set_status(&mut coord, JobStatus::Failed, None);
                return Err(e);
            }
        };
        coord.on_attempt_started();
        ctl.set_status(&mut coord, JobStatus::Running, Some(&job));
        let end = ctl.run_attempt(&mut job, &mut coord, tick);
        job.cancel_and_join();
        ctl.records_before += job.source_records();
        coord.abort_all("the job attempt ended");
        match end {
            AttemptEnd::Finished { savepoint } => {
                ctl.set_status(&mut coord, JobStatus::Finished, None);
                return Ok(ctl.outcome(&coord, JobStatus::Finished, savepoint));
            }
            AttemptEnd::Cancelled { savepoint } => {
                coord.on_cancel();
                ctl.set_status(&mut coord, JobStatus::Cancelled, None);
                return Ok(ctl.outcome(&coord, JobStatus::Cancelled, savepoint));
            }
            AttemptEnd::Failed(error) => {
                ctl.last_failure = Some(error.to_string());
                ctl.last_failure_code = Some(error.code());
                match policy.on_failure(Instant::now()) {
                    RestartDecision::Fail(why) => {
                        tracing::error!(
                            job_id = %spec.job_id,
                            code = error.code(),
                            restarts = ctl.restarts,
                            "job failed: {error} ({why})"
                        );
                        ctl.set_status(&mut coord, JobStatus::Failed, None);
                        return Err(error);
                    }
                    RestartDecision::RestartAfter(delay) => {
                        ctl.restarts += 1;
                        tracing::warn!(
                            job_id = %spec.job_id,
                            code = error.code(),
                            restart = ctl.restarts,
                            delay_ms = delay.as_millis() as u64,
                            strategy = policy.name(),
                            "job failed, restarting: {error}"
                        );
                        ctl.set_status(&mut coord, JobStatus::Restarting, None);
                        if ctl.wait_restart_delay(delay) {
                            coord.on_cancel();
                            ctl.set_status(&mut coord, JobStatus::Cancelled, None);
                            return Ok(ctl.outcome(&coord, JobStatus::Cancelled, None));
                        }
                        source = match coord.retained_checkpoints().first() {
                            Some((id, dir)) => RestoreSource::Checkpoint(*id, dir.clone()),
                            None => source,
                        };
                        attempt += 1;
                    }
                }
            }
        }
    }
}

struct Controller<'r, 'a> {
    run: &'r JobRun<'a>,
    port: &'r ControlPort,
    /// Source records of earlier attempts.
    records_before: u64,
    restarts: u32,
    last_failure: Option<String>,
    last_failure_code: Option<&'static str>,
    last_publish: Instant,
    last_records: (Instant, u64),
    /// Previous counter samples per (node, subtask), for rates.
    rates: HashMap<(usize, u32), RateSample>,
}

/// One operator subtask's counters at a moment, and the rates derived last.
#[derive(Clone, Copy)]
struct RateSample {
    at: Instant,
    counters: [u64; 5],
    /// in, out, busy, idle, backpressured per second.
    rates: [f64; 5],
}

impl Controller<'_, '_> {
    fn outcome(&self, coord: &Coordinator, status: JobStatus, savepoint: Option<PathBuf>) -> JobOutcome {
        JobOutcome {
            status,
            source_records: self.records_before,
            checkpoints: coord.history(),
            savepoint,
            restarts: self.restarts,
            checkpoint_dir: coord.job_dir(),
        }
    }

    /// Start attempt `attempt` from `source`; a retained checkpoint that
    /// cannot be read is reported and the next older one is tried.
    fn start_attempt(
        &mut self,
        coord: &mut Coordinator,
        attempt: u32,
        source: &mut RestoreSource,
    ) -> Result<RunningJob, JobError> {
        // Opening runs user code (sources' and functions' `open`): a panic
        // there fails the start with its message instead of the controller.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.start_attempt_inner(coord, attempt, source)
        }))
        .unwrap_or_else(|payload| {
            Err(JobError::setup(
                SetupErrorKind::OperatorOpen,
                format!(
                    "an operator failed while opening: {}",
                    cairn_runtime::error::panic_message(&*payload)
                ),
            ))
        })
    }

    fn start_attempt_inner(
        &mut self,
        coord: &mut Coordinator,
        attempt: u32,
        source: &mut RestoreSource,
    ) -> Result<RunningJob, JobError> {
        let spec = self.run.spec;
        let uploader = coord.uploader().clone();
        loop {
            let result = match source.clone() {
                RestoreSource::Empty => match &self.run.launcher {
                    Some(l) => l.launch(spec, attempt, &uploader, None, self.run.allow_non_restored_state),
                    None => start(spec, self.run.settings, attempt, true, &uploader, &mut |_, _, _| {
                        Ok(SubtaskRestore::default())
                    }),
                },
                RestoreSource::Initial => {
                    let snap = self.run.snapshot.expect("initial snapshot present");
                    let r = self.start_from(snap, attempt, &uploader);
                    if r.is_ok() {
                        coord.on_restored(
                            snap.metadata.checkpoint_id,
                            &snap.dir,
                            snap.metadata.kind.is_savepoint(),
                            self.run.claim && attempt == 0,
                        );
                    }
                    r
                }
                RestoreSource::Checkpoint(id, dir) => {
                    let r = load_snapshot(&*self.run.storage, &dir)
                        .map_err(|e| {
                            JobError::Setup(
                                SetupError::new(
                                    SetupErrorKind::Restore,
                                    format!("cannot restore from {}: {e}", dir.display()),
                                )
                                .with_source(e),
                            )
                        })
                        .and_then(|snap| self.start_from(&snap, attempt, &uploader));
                    match r {
                        Ok(job) => {
                            coord.on_restored(id, &dir, false, false);
                            tracing::info!(
                                job_id = %self.run.spec.job_id,
                                checkpoint_id = id,
                                path = %dir.display(),
                                "restored the job from a retained checkpoint"
                            );
                            Ok(job)
                        }
                        Err(JobError::Setup(why)) if why.kind() == SetupErrorKind::Restore => {
                            // The checkpoint is unreadable: fall back to the one before.
                            let older = coord.retained_checkpoints().into_iter().find(|(other, _)| *other < id);
                            let next = match older {
                                Some((o, d)) => RestoreSource::Checkpoint(o, d),
                                None if self.run.snapshot.is_some() => RestoreSource::Initial,
                                None => {
                                    let message =
                                        format!("{why}; no older retained checkpoint is left to fall back to");
                                    return Err(JobError::Setup(SetupError::new(why.kind(), message).with_source(why)));
                                }
                            };
                            tracing::warn!(
                                job_id = %self.run.spec.job_id,
                                checkpoint_id = id,
                                "checkpoint {id} cannot be restored ({why}); falling back to {}. Output that \
                                 two-phase-commit sinks committed after it may be written again.",
                                match &next {
                                    RestoreSource::Checkpoint(o, d) => format!("checkpoint {o} ({})", d.display()),
                                    _ => "the snapshot the job was started from".to_string(),
                                }
                            );
                            *source = next;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            return result;
        }
    }

    fn start_from(
        &self,
        snap: &LoadedSnapshot,
        attempt: u32,
        uploader: &Arc<SnapshotUploader>,
    ) -> Result<RunningJob, JobError> {
        let spec = self.run.spec;
        let plan = RestorePlan::new(snap, &*self.run.storage, spec, self.run.allow_non_restored_state)?;
        if attempt == 0 && !plan.dropped.is_empty() {
            tracing::warn!(
                job_id = %spec.job_id,
                path = %snap.dir.display(),
                uids = %plan.dropped.join(", "),
                "restoring without the state of operators that are not in the job (--allow-non-restored-state)"
            );
        }
        if let Some(l) = &self.run.launcher {
            // The plan above checked the restore; the workers read the state.
            return l.launch(spec, attempt, uploader, Some(snap), self.run.allow_non_restored_state);
        }
        let graph = &spec.graph;
        let mut restored = plan.restore_all(attempt);
        start(
            spec,
            self.run.settings,
            attempt,
            true,
            uploader,
            &mut |node, subtask, range| match restored.remove(&(node, subtask)) {
                Some(r) => r,
                None => plan.subtask(node, subtask, range, graph.nodes[node].keyed, attempt),
            },
        )
    }

    /// Wait out a restart delay, serving requests; true when cancelled meanwhile.
    fn wait_restart_delay(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.port.requests.recv_timeout(left.min(PUBLISH_EVERY)) {
                Ok(ControlRequest::Cancel) => return true,
                Ok(ControlRequest::Savepoint { operation, .. } | ControlRequest::Checkpoint { operation, .. }) => {
                    self.fail_operation(
                        &operation,
                        "the job is restarting after a failure; try again when it runs",
                    );
                }
                Err(_) => {}
            }
        }
    }

    fn fail_operation(&self, operation: &str, message: impl Into<String>) {
        self.port.publish().operations.insert(
            operation.to_string(),
            OperationStatus::Failed {
                message: message.into(),
            },
        );
    }

    fn complete_operation(&self, operation: &str, location: Option<PathBuf>, checkpoint_id: Option<u64>) {
        self.port.publish().operations.insert(
            operation.to_string(),
            OperationStatus::Completed {
                location,
                checkpoint_id,
            },
        );
    }

    fn set_status(&mut self, coord: &mut Coordinator, status: JobStatus, job: Option<&RunningJob>) {
        {
            let mut p = self.port.publish();
            p.info.status = status;
            // Queries go to the running attempt's tasks only.
            p.queries = match (status, job) {
                (JobStatus::Running, Some(job)) => Some(job.queries.clone()),
                _ => None,
            };
            p.info.restarts = self.restarts;
            p.info.last_failure = self.last_failure.clone();
            p.info.last_failure_code = self.last_failure_code;
            if status.is_terminal() {
                p.info.end_time_ms = Some(now_ms() as u64);
                // Requests still waiting can no longer be served.
                for op in p.operations.values_mut() {
                    if *op == OperationStatus::InProgress {
                        *op = OperationStatus::Failed {
                            message: format!("the job ended ({status:?}) before the operation completed"),
                        };
                    }
                }
            }
        }
        self.publish(coord, job, true);
    }

    /// Refresh the published metrics and checkpoint statistics.
    fn publish(&mut self, coord: &Coordinator, job: Option<&RunningJob>, force: bool) {
        if !force && self.last_publish.elapsed() < PUBLISH_EVERY {
            return;
        }
        self.last_publish = Instant::now();
        let mut metrics = JobMetrics {
            source_records: self.records_before,
            ..Default::default()
        };
        if let Some(job) = job {
            metrics.source_records += job.source_records();
            for (id, m) in &job.metrics {
                if !job.source_tasks.contains(id) {
                    metrics.records_in += m.records_in.load(Ordering::Relaxed);
                }
                metrics.records_out += m.records_out.load(Ordering::Relaxed);
                metrics.backpressure_ms += m.backpressure_ns.load(Ordering::Relaxed) / 1_000_000;
            }
            metrics.subtasks = self.subtask_metrics(job);
        }
        let (t, n) = self.last_records;
        let secs = t.elapsed().as_secs_f64();
        if secs >= 1.0 {
            let rate = metrics.source_records.saturating_sub(n) as f64 / secs;
            self.last_records = (Instant::now(), metrics.source_records);
            self.port.publish().metrics.source_records_per_second = rate;
        }
        let overview = coord.overview(PUBLISHED_HISTORY);
        let mut p = self.port.publish();
        metrics.source_records_per_second = p.metrics.source_records_per_second;
        p.metrics = metrics;
        p.checkpoints = overview;
    }

    /// Per operator subtask: counters of the task's per-batch atomics, and
    /// rates over the last second or so.
    fn subtask_metrics(&mut self, job: &RunningJob) -> Vec<SubtaskMetrics> {
        let now_wall = now_ms().max(0) as u64;
        let mut out = Vec::new();
        for (id, m) in &job.metrics {
            let started = m.started_ms.load(Ordering::Relaxed);
            let elapsed_ms = if started == 0 {
                0
            } else {
                now_wall.saturating_sub(started)
            };
            let idle = m.idle_ns.load(Ordering::Relaxed) / 1_000_000;
            let bp = m.backpressure_ns.load(Ordering::Relaxed) / 1_000_000;
            let busy = elapsed_ms.saturating_sub(idle + bp);
            let wm = m.watermark.load(Ordering::Relaxed);
            let in_flight = m.in_flight_limit.load(Ordering::Relaxed);
            let in_flight_records = m.in_flight_records_limit.load(Ordering::Relaxed);
            for (i, op) in m.operators.iter().enumerate() {
                let counters = [
                    op.records_in.load(Ordering::Relaxed),
                    op.records_out.load(Ordering::Relaxed),
                    busy,
                    idle,
                    bp,
                ];
                let key = (op.node, id.subtask);
                let now = Instant::now();
                let sample = match self.rates.get(&key) {
                    Some(prev) if now.duration_since(prev.at) >= Duration::from_secs(1) => {
                        let secs = now.duration_since(prev.at).as_secs_f64();
                        let mut rates = [0.0; 5];
                        for i in 0..5 {
                            rates[i] = counters[i].saturating_sub(prev.counters[i]) as f64 / secs;
                        }
                        RateSample {
                            at: now,
                            counters,
                            rates,
                        }
                    }
                    Some(prev) => *prev,
                    None => RateSample {
                        at: now,
                        counters,
                        rates: [0.0; 5],
                    },
                };
                self.rates.insert(key, sample);
                let operator_id = self
                    .run
                    .spec
                    .graph
                    .nodes
                    .get(op.node)
                    .map(|n| n.operator_id.clone())
                    .unwrap_or_default();
                out.push(SubtaskMetrics {
                    operator_id,
                    subtask: id.subtask,
                    records_in: counters[0],
                    records_out: counters[1],
                    records_in_per_second: sample.rates[0],
                    records_out_per_second: sample.rates[1],
                    busy_ms: busy,
                    idle_ms: idle,
                    backpressured_ms: bp,
                    busy_ms_per_second: sample.rates[2].min(1000.0),
                    idle_ms_per_second: sample.rates[3].min(1000.0),
                    backpressured_ms_per_second: sample.rates[4].min(1000.0),
                    watermark: (wm != i64::MIN).then_some(wm),
                    // The task's inputs are its chain head's.
                    in_flight_limit: (i == 0 && in_flight > 0).then_some(in_flight),
                    in_flight_records_limit: (i == 0 && in_flight > 0).then_some(in_flight_records),
                });
            }
        }
        out.sort_by(|a, b| (&a.operator_id, a.subtask).cmp(&(&b.operator_id, b.subtask)));
        out
    }

    /// Run one attempt until it finishes, is cancelled or fails.
    fn run_attempt(&mut self, job: &mut RunningJob, coord: &mut Coordinator, tick: &mut dyn FnMut(u64)) -> AttemptEnd {
        let spec = self.run.spec;
        let mut live = job.tasks.len();
        let mut finished: HashSet<TaskId> = HashSet::new();
        let mut final_snapshot: Option<u64> = None;
        let mut final_done = false;
        let mut released = false;
        let mut failure: Option<JobError> = None;
        let mut cancelled = false;
        let mut cancel_after: Option<String> = None;
        let mut stopping: Option<StopPlan> = None;
        let mut savepoint: Option<PathBuf> = None;
        let mut last_tick = Instant::now();
        while live > 0 {
            match job.events.recv_timeout(Duration::from_millis(10)) {
                Ok(TaskEvent::Exited { .. }) => live -= 1,
                Ok(TaskEvent::Failed { task, op, error }) => {
                    job.cancel.store(true, Ordering::Relaxed);
                    if failure.is_none() && !is_cancellation(&error) {
                        let e = task_failure(spec, task, op, error);
                        if let JobError::Task {
                            operator, uid, subtask, ..
                        } = &e
                        {
                            tracing::warn!(
                                job_id = %spec.job_id,
                                operator = %operator,
                                uid = %uid,
                                subtask = subtask + 1,
                                "a task failed: {e}"
                            );
                        }
                        failure = Some(e);
                    }
                }
                Ok(TaskEvent::Finished { task }) => {
                    finished.insert(task);
                    coord.on_task_finished(job, task);
                }
                Ok(TaskEvent::Snapshotted { task, checkpoint_id }) => coord.on_snapshotted(task, checkpoint_id),
                Ok(ack @ TaskEvent::Acknowledge { .. }) => {
                    if let Err(e) = coord.on_ack(ack, job) {
                        failure.get_or_insert(e);
                        job.cancel.store(true, Ordering::Relaxed);
                    }
                }
                Ok(TaskEvent::Decline {
                    checkpoint_id, reason, ..
                }) => {
                    if let Err(e) = coord.on_decline(checkpoint_id, reason) {
                        failure.get_or_insert(e);
                        job.cancel.store(true, Ordering::Relaxed);
                    }
                }
                Err(_) => {}
            }
            if failure.is_some() || cancelled {
                continue;
            }
            // Control requests.
            while let Ok(req) = self.port.requests.try_recv() {
                let all_finished = finished.len() == job.tasks.len();
                match req {
                    ControlRequest::Cancel => {
                        cancelled = true;
                        job.cancel.store(true, Ordering::Relaxed);
                        self.set_status(coord, JobStatus::Cancelling, Some(job));
                    }
                    ControlRequest::Checkpoint { operation, .. } => {
                        if stopping.is_some() || all_finished {
                            self.fail_operation(&operation, "the job is finishing; no more checkpoints are taken");
                            continue;
                        }
                        match coord.begin(
                            SnapshotTarget::Checkpoint {
                                operation: Some(operation.clone()),
                            },
                            job.tasks.len(),
                        ) {
                            Ok(barrier) => inject(job, barrier, &finished),
                            Err(e) => self.fail_operation(&operation, e.to_string()),
                        }
                    }
                    ControlRequest::Savepoint { operation, request } => {
                        if stopping.is_some() || all_finished || cancel_after.is_some() {
                            self.fail_operation(
                                &operation,
                                "the job is already stopping or finishing; no more savepoints can be taken",
                            );
                            continue;
                        }
                        let dir = match coord.savepoint_dir_for(request.target_directory.as_deref()) {
                            Ok(d) => d,
                            Err(e) => {
                                self.fail_operation(&operation, e);
                                continue;
                            }
                        };
                        match request.then {
                            AfterSavepoint::Stop { drain } => {
                                tracing::info!(job_id = %spec.job_id, drain, "stopping the job with a savepoint");
                                for t in &job.source_tasks {
                                    job.command(*t, TaskCommand::StopSource { drain });
                                }
                                stopping = Some(StopPlan {
                                    operation,
                                    dir,
                                    format: request.format,
                                    drain,
                                    retries: 0,
                                });
                            }
                            then => {
                                let target = SnapshotTarget::Savepoint {
                                    dir,
                                    format: request.format,
                                    operation: operation.clone(),
                                    then,
                                };
                                match coord.begin(target, job.tasks.len()) {
                                    Ok(barrier) => inject(job, barrier, &finished),
                                    Err(e) => self.fail_operation(&operation, e.to_string()),
                                }
                            }
                        }
                    }
                }
            }
            if cancelled {
                continue;
            }
            let step = (|| -> Result<(), JobError> {
                coord.expire()?;
                let outcomes = coord.take_outcomes();
                if !outcomes.is_empty() {
                    // Statistics first, so a client that sees an operation
                    // complete also sees its checkpoint counted.
                    self.publish(coord, Some(job), true);
                }
                for outcome in outcomes {
                    if let SnapshotOutcome::Completed { id, .. } = &outcome {
                        final_done |= final_snapshot == Some(*id);
                    }
                    match outcome {
                        SnapshotOutcome::Completed { id, target, location } => match target {
                            SnapshotTarget::Checkpoint { operation } => {
                                if let Some(op) = operation {
                                    self.complete_operation(&op, Some(location), Some(id));
                                }
                            }
                            SnapshotTarget::Savepoint { operation, then, .. } => {
                                self.complete_operation(&operation, Some(location.clone()), Some(id));
                                match then {
                                    AfterSavepoint::KeepRunning => {}
                                    AfterSavepoint::Cancel => cancel_after = Some(location.display().to_string()),
                                    AfterSavepoint::Stop { .. } => savepoint = Some(location),
                                }
                            }
                        },
                        SnapshotOutcome::Failed { id, target, reason } => match target {
                            SnapshotTarget::Checkpoint { operation } => {
                                if let Some(op) = operation {
                                    self.fail_operation(&op, format!("checkpoint {id} failed: {reason}"));
                                }
                            }
                            SnapshotTarget::Savepoint { operation, then, .. } => {
                                let is_stop = matches!(then, AfterSavepoint::Stop { .. });
                                let retry = stopping
                                    .as_mut()
                                    .filter(|s| is_stop && s.retries < STOP_SAVEPOINT_RETRIES);
                                match retry {
                                    Some(plan) => {
                                        // The sources already stopped: try the final savepoint again.
                                        plan.retries += 1;
                                        final_snapshot = None;
                                    }
                                    None if is_stop => {
                                        self.fail_operation(&operation, format!("savepoint {id} failed: {reason}"));
                                        return Err(JobError::StopWithSavepoint {
                                            savepoint_id: id,
                                            cause: reason,
                                        });
                                    }
                                    None => self.fail_operation(&operation, format!("savepoint {id} failed: {reason}")),
                                }
                            }
                        },
                    }
                }
                if cancel_after.is_some() || released {
                    return Ok(());
                }
                if finished.len() == job.tasks.len() {
                    // Everything is processed: take the final snapshot (the
                    // stop's savepoint, or a final checkpoint that commits
                    // the last output), then let the tasks go.
                    let wants_final = stopping.is_some() || coord.periodic();
                    if !wants_final {
                        released = true;
                        for t in &job.tasks {
                            job.command(*t, TaskCommand::Release);
                        }
                        return Ok(());
                    }
                    if final_done {
                        released = true;
                        for t in &job.tasks {
                            job.command(*t, TaskCommand::Release);
                        }
                    } else if final_snapshot.is_none_or(|id| !coord.is_pending(id)) {
                        let target = match &stopping {
                            Some(plan) => SnapshotTarget::Savepoint {
                                dir: plan.dir.clone(),
                                format: plan.format,
                                operation: plan.operation.clone(),
                                then: AfterSavepoint::Stop { drain: plan.drain },
                            },
                            None => SnapshotTarget::Checkpoint { operation: None },
                        };
                        match coord.begin(target, job.tasks.len()) {
                            Ok(barrier) => {
                                final_snapshot = Some(barrier.checkpoint_id);
                                inject(job, barrier, &finished);
                            }
                            // A final checkpoint that cannot start counts as a failed one.
                            Err(failure) if stopping.is_none() => coord.on_trigger_failed(failure)?,
                            // A stop's savepoint that cannot start is a failed outcome:
                            // retried, then the stop fails.
                            Err(_) => {}
                        }
                    }
                } else if stopping.is_none() {
                    coord.maybe_trigger(job, &finished)?;
                }
                Ok(())
            })();
            if let Err(e) = step {
                failure = Some(e);
                job.cancel.store(true, Ordering::Relaxed);
            }
            if cancel_after.is_some() && !cancelled {
                cancelled = true;
                job.cancel.store(true, Ordering::Relaxed);
                self.set_status(coord, JobStatus::Cancelling, Some(job));
            }
            self.publish(coord, Some(job), false);
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                tick(self.records_before + job.source_records());
            }
        }
        if let Some(f) = failure {
            return AttemptEnd::Failed(f);
        }
        if cancelled {
            let savepoint = cancel_after.map(PathBuf::from);
            return AttemptEnd::Cancelled { savepoint };
        }
        AttemptEnd::Finished { savepoint }
    }
}

/// The initial published state of a job about to run.
pub fn initial_published(spec: &JobSpec, job_name: &str, restored_from: Option<&Path>) -> Published {
    Published {
        info: JobInfo {
            job_id: spec.job_id.clone(),
            name: job_name.to_string(),
            status: JobStatus::Initializing,
            start_time_ms: now_ms() as u64,
            end_time_ms: None,
            restarts: 0,
            last_failure: None,
            last_failure_code: None,
            restored_from: restored_from.map(Path::to_path_buf),
            vertices: spec
                .graph
                .nodes
                .iter()
                .map(|n| VertexInfo {
                    id: n.operator_id.clone(),
                    uid: n.uid.clone(),
                    name: n.name.clone(),
                    parallelism: n.parallelism,
                    max_parallelism: n.max_parallelism,
                    chain: spec.graph.chains.iter().position(|c| c.contains(&n.id)).unwrap_or(0),
                })
                .collect(),
        },
        metrics: JobMetrics::default(),
        checkpoints: Default::default(),
        checkpoint_config: CheckpointSettings::from_config(&spec.config)
            .map(|s| s.view())
            .unwrap_or_default(),
        config: spec
            .config
            .entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        operations: Default::default(),
        queries: None,
        query_timeout: spec.config.get(&cairn_config::options::QUERYABLE_STATE_TIMEOUT),
    }
}
