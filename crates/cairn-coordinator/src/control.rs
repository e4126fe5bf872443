//! The control surface of a running job. A cloneable [`JobClient`] lets the
//! REST server, the job's own code and tests read status and checkpoint
//! statistics and ask for savepoints, checkpoints, stop and cancel. Requests
//! travel to the job's control loop over a channel; the loop publishes status
//! into shared state, so reads never wait for the job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_runtime::query::QueryRoutes;
pub use cairn_runtime::query::{QueryError, StateAnswer};
use crossbeam_channel::{unbounded, Receiver, Sender};
use serde::Serialize;

/// A job's lifecycle state, with Flink's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Initializing,
    Running,
    Restarting,
    Cancelling,
    #[serde(rename = "CANCELED")]
    Cancelled,
    Failed,
    Finished,
}

impl JobStatus {
    /// Whether the job has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Cancelled | JobStatus::Failed | JobStatus::Finished)
    }
}

/// One operator of the job as the control plane shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VertexInfo {
    /// The operator id (hash of the uid), as in snapshots.
    pub id: String,
    pub uid: String,
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// The chain (one task per subtask) the operator runs in, counted in
    /// topological order.
    pub chain: usize,
}

/// Status of the job, refreshed by the control loop.
#[derive(Clone, Debug, Serialize)]
pub struct JobInfo {
    pub job_id: String,
    pub name: String,
    pub status: JobStatus,
    pub start_time_ms: u64,
    /// Set once the job reached a terminal status.
    pub end_time_ms: Option<u64>,
    /// How many times the job restarted after a failure.
    pub restarts: u32,
    /// The last failure (the job may have restarted since).
    pub last_failure: Option<String>,
    /// The stable code of the last failure (`docs/errors.md`).
    pub last_failure_code: Option<&'static str>,
    /// The snapshot the job was started from, if any.
    pub restored_from: Option<PathBuf>,
    pub vertices: Vec<VertexInfo>,
}

/// Throughput and backpressure counters for metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobMetrics {
    /// Records emitted by sources since the job started (all attempts).
    pub source_records: u64,
    /// Records received by non-source tasks (current attempt).
    pub records_in: u64,
    /// Records sent by all tasks (current attempt).
    pub records_out: u64,
    /// Total time tasks waited for room in full output channels (current attempt).
    pub backpressure_ms: u64,
    /// Source records per second over the last second or so.
    pub source_records_per_second: f64,
    /// Per operator and subtask (current attempt), in graph order.
    pub subtasks: Vec<SubtaskMetrics>,
}

/// Metrics of one operator in one subtask. Busy, idle and backpressured
/// time belong to the task (the chain) the operator runs in, as in Flink.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SubtaskMetrics {
    /// The operator id (hash of the uid).
    pub operator_id: String,
    pub subtask: u32,
    pub records_in: u64,
    pub records_out: u64,
    /// Over the last second or so.
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    /// Milliseconds since the task started: processing, waiting for input,
    /// waiting for room downstream.
    pub busy_ms: u64,
    pub idle_ms: u64,
    pub backpressured_ms: u64,
    /// Each per second of wall time, over the last second or so (0-1000).
    pub busy_ms_per_second: f64,
    pub idle_ms_per_second: f64,
    pub backpressured_ms_per_second: f64,
    /// The task's current input watermark, once it has one.
    pub watermark: Option<i64>,
    /// Chain heads with inputs: the batches their input channels may have
    /// in flight now (the channels' capacity, or less with buffer debloating).
    pub in_flight_limit: Option<u64>,
    /// The records they may have in flight (batches times their size).
    pub in_flight_records_limit: Option<u64>,
}

pub use cairn_runtime::upload::SnapshotFormat;

/// How a checkpoint or savepoint ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SnapshotStatus {
    InProgress,
    Completed,
    Failed,
}

/// Statistics of one checkpoint or savepoint.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointStats {
    pub id: u64,
    /// `true` for savepoints.
    pub is_savepoint: bool,
    pub status: SnapshotStatus,
    pub trigger_timestamp_ms: u64,
    /// Set once completed or failed.
    pub end_timestamp_ms: Option<u64>,
    /// From trigger to completion (or failure).
    pub duration_ms: u64,
    /// The longest synchronous snapshot part of any task.
    pub sync_duration_ms: u64,
    /// The longest asynchronous (writing) part of any task.
    pub async_duration_ms: u64,
    /// The longest barrier alignment of any task (for unaligned tasks: the
    /// wait before they switched, if any).
    pub alignment_duration_ms: u64,
    /// Some task snapshotted unaligned (before all its barriers arrived).
    pub is_unaligned: bool,
    /// Bytes of channel state (in-flight records) persisted with it.
    pub persisted_data_bytes: u64,
    /// Bytes of state written.
    pub state_size_bytes: u64,
    /// Task snapshots acknowledged so far, out of `num_subtasks`.
    pub num_acknowledged_subtasks: u32,
    pub num_subtasks: u32,
    /// Where the snapshot lives (its directory), once completed.
    pub external_path: Option<PathBuf>,
    pub failure_message: Option<String>,
}

/// Counts, history and the latest snapshots, as `GET /jobs/:id/checkpoints` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointsOverview {
    pub counts: CheckpointCounts,
    /// Newest last; bounded by `web.checkpoints.history` (default 10).
    pub history: Vec<CheckpointStats>,
    pub latest_completed: Option<CheckpointStats>,
    pub latest_savepoint: Option<CheckpointStats>,
    pub latest_failed: Option<CheckpointStats>,
    /// The snapshot restored at start or after the last restart.
    pub latest_restored: Option<RestoredInfo>,
}

/// Checkpoint counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointCounts {
    pub restored: u64,
    pub total: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
}

/// A restore event.
#[derive(Clone, Debug, Serialize)]
pub struct RestoredInfo {
    pub id: u64,
    pub restore_timestamp_ms: u64,
    pub is_savepoint: bool,
    pub external_path: PathBuf,
}

/// The checkpointing configuration in effect.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointConfigView {
    /// "exactly_once" or "at_least_once".
    pub mode: String,
    /// 0 when periodic checkpoints are off.
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub min_pause_ms: u64,
    pub max_concurrent: u32,
    pub tolerable_failed_checkpoints: u32,
    /// `RETAIN_ON_CANCELLATION`, `DELETE_ON_CANCELLATION` or `NO_EXTERNALIZED_CHECKPOINTS`.
    pub externalization: String,
    pub checkpoint_storage: Option<PathBuf>,
    pub savepoint_dir: Option<PathBuf>,
    pub num_retained: u32,
    /// `execution.checkpointing.unaligned.enabled` (in exactly-once mode).
    pub unaligned: bool,
    /// `execution.checkpointing.aligned-checkpoint-timeout` in ms.
    pub aligned_checkpoint_timeout_ms: u64,
}

/// What happens to the job once a requested savepoint completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSavepoint {
    KeepRunning,
    /// Cancel the job (`cancel-job: true`, `cairn cancel -s`).
    Cancel,
    /// Stop atomically: sources stop, sinks commit, the job finishes.
    /// `drain` first advances event time to the end so all timers fire.
    Stop {
        drain: bool,
    },
}

/// A savepoint request.
#[derive(Clone, Debug)]
pub struct SavepointRequest {
    /// Parent directory; `None` = `execution.checkpointing.savepoint-dir`.
    pub target_directory: Option<PathBuf>,
    pub format: SnapshotFormat,
    pub then: AfterSavepoint,
}

/// A manual checkpoint request (`POST /jobs/:id/checkpoints`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointRequestKind {
    /// As configured.
    Configured,
    /// A full (non-incremental) checkpoint; the same for the heap backend.
    Full,
}

/// The state of an asynchronous operation started by a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    InProgress,
    /// A savepoint completed at `location`, or checkpoint `checkpoint_id` completed.
    Completed {
        location: Option<PathBuf>,
        checkpoint_id: Option<u64>,
    },
    Failed {
        message: String,
    },
}

/// Why a request was refused. `code` is stable for clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControlError {
    pub code: ControlErrorCode,
    pub message: String,
}

/// Stable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ControlErrorCode {
    /// The request cannot be served as asked (no savepoint directory, …).
    BadRequest,
    /// The job is not running (finished, cancelled, failed, restarting).
    JobNotRunning,
    /// An operation id is already in use.
    Conflict,
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ControlError {}

impl ControlError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ControlError {
            code: ControlErrorCode::BadRequest,
            message: message.into(),
        }
    }

    pub fn not_running(status: JobStatus) -> Self {
        ControlError {
            code: ControlErrorCode::JobNotRunning,
            message: format!("the job is {status:?}, not running"),
        }
    }
}

/// A request to the control loop.
#[derive(Debug)]
pub enum ControlRequest {
    Savepoint {
        operation: String,
        request: SavepointRequest,
    },
    Checkpoint {
        operation: String,
        kind: CheckpointRequestKind,
    },
    Cancel,
}

/// State the control loop publishes.
#[derive(Debug)]
pub struct Published {
    pub info: JobInfo,
    pub metrics: JobMetrics,
    pub checkpoints: CheckpointsOverview,
    pub checkpoint_config: CheckpointConfigView,
    /// The effective configuration, flattened (`GET /config`).
    pub config: BTreeMap<String, String>,
    pub operations: BTreeMap<String, OperationStatus>,
    /// Where live state queries go while an attempt runs; `None` otherwise.
    pub queries: Option<Arc<QueryRoutes>>,
    /// How long a live state query waits for the owning subtask
    /// (`cairn.queryable-state.timeout`).
    pub query_timeout: Duration,
}

/// The control loop's end of the control surface.
pub struct ControlPort {
    pub requests: Receiver<ControlRequest>,
    pub published: Arc<Mutex<Published>>,
}

impl ControlPort {
    /// Lock the published state for an update.
    pub fn publish(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle on a running job, cheap to clone and safe to share across threads.
#[derive(Clone)]
pub struct JobClient {
    requests: Sender<ControlRequest>,
    published: Arc<Mutex<Published>>,
}

/// Create a connected client and port from the initial published state.
pub fn control_channel(initial: Published) -> (JobClient, ControlPort) {
    let (tx, rx) = unbounded();
    let published = Arc::new(Mutex::new(initial));
    (
        JobClient {
            requests: tx,
            published: published.clone(),
        },
        ControlPort {
            requests: rx,
            published,
        },
    )
}

fn random_operation_id() -> String {
    cairn_snapshot::layout::IdGenerator::from_entropy().hex(32)
}

impl JobClient {
    fn read(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job's status and operators.
    pub fn info(&self) -> JobInfo {
        self.read().info.clone()
    }

    /// Throughput and backpressure counters.
    pub fn metrics(&self) -> JobMetrics {
        self.read().metrics.clone()
    }

    /// Checkpoint counts, history and latest snapshots.
    pub fn checkpoints(&self) -> CheckpointsOverview {
        self.read().checkpoints.clone()
    }

    /// One checkpoint's statistics, if still in the history.
    pub fn checkpoint(&self, id: u64) -> Option<CheckpointStats> {
        self.read().checkpoints.history.iter().find(|c| c.id == id).cloned()
    }

    /// The checkpointing configuration.
    pub fn checkpoint_config(&self) -> CheckpointConfigView {
        self.read().checkpoint_config.clone()
    }

    /// The effective configuration as key/value pairs.
    pub fn config(&self) -> BTreeMap<String, String> {
        self.read().config.clone()
    }

    /// The state of an operation started by [`Self::trigger_savepoint`] or
    /// [`Self::trigger_checkpoint`]; `None` for an unknown id.
    pub fn operation(&self, operation: &str) -> Option<OperationStatus> {
        self.read().operations.get(operation).cloned()
    }

    fn submit(
        &self,
        operation: Option<String>,
        make: impl FnOnce(String) -> ControlRequest,
    ) -> Result<String, ControlError> {
        let mut p = self.read();
        if p.info.status != JobStatus::Running {
            return Err(ControlError::not_running(p.info.status));
        }
        let id = operation.unwrap_or_else(random_operation_id);
        if p.operations.contains_key(&id) {
            return Err(ControlError {
                code: ControlErrorCode::Conflict,
                message: format!("an operation with trigger id {id} already exists; use another id"),
            });
        }
        p.operations.insert(id.clone(), OperationStatus::InProgress);
        drop(p);
        if self.requests.send(make(id.clone())).is_err() {
            let mut p = self.read();
            p.operations.remove(&id);
            return Err(ControlError::not_running(p.info.status));
        }
        Ok(id)
    }

    /// Ask for a savepoint; returns the operation (trigger) id to poll.
    /// `operation` lets a client choose the id (Flink's `triggerId`).
    pub fn trigger_savepoint(
        &self,
        request: SavepointRequest,
        operation: Option<String>,
    ) -> Result<String, ControlError> {
        if request.target_directory.is_none() && self.read().checkpoint_config.savepoint_dir.is_none() {
            return Err(ControlError::bad_request(
                "no savepoint directory: give a target directory, or set execution.checkpointing.savepoint-dir (alias state.savepoints.dir)",
            ));
        }
        self.submit(operation, |operation| ControlRequest::Savepoint { operation, request })
    }

    /// Ask for a checkpoint now; returns the operation id to poll.
    pub fn trigger_checkpoint(
        &self,
        kind: CheckpointRequestKind,
        operation: Option<String>,
    ) -> Result<String, ControlError> {
        if self.read().checkpoint_config.checkpoint_storage.is_none() {
            return Err(ControlError::bad_request(
                "checkpoints need a directory: set execution.checkpointing.dir (alias state.checkpoints.dir)",
            ));
        }
        self.submit(operation, |operation| ControlRequest::Checkpoint { operation, kind })
    }

    /// Cancel the job (checkpoint retention then follows
    /// `execution.checkpointing.externalized-checkpoint-retention`).
    pub fn cancel(&self) -> Result<(), ControlError> {
        let status = self.read().info.status;
        if status.is_terminal() {
            return Err(ControlError::not_running(status));
        }
        self.requests
            .send(ControlRequest::Cancel)
            .map_err(|_| ControlError::not_running(status))
    }

    /// A live state query: the current value of the key written as JSON
    /// (`key_json`) in the state that operator `uid` made queryable as
    /// `state`, read by the subtask that owns the key between two batches.
    pub fn query_state(&self, uid: &str, state: &str, key_json: &str) -> Result<StateAnswer, QueryError> {
        let (routes, timeout, status) = {
            let p = self.read();
            (p.queries.clone(), p.query_timeout, p.info.status)
        };
        match routes {
            Some(routes) if status == JobStatus::Running => routes.query(uid, state, key_json, timeout),
            _ => Err(QueryError::NotRunning(format!(
                "the job is {status:?}, not running; live state can be queried while it runs"
            ))),
        }
    }

    /// Live state queries waiting for subtask `subtask` (0-based) of operator
    /// `uid`; `None` when it serves none (not queryable, or not running).
    pub fn state_queries_waiting(&self, uid: &str, subtask: u32) -> Option<usize> {
        let routes = self.read().queries.clone()?;
        routes.waiting(uid, subtask)
    }

    /// Wait until an operation is no longer in progress (or `timeout` passes).
    pub fn wait_operation(&self, operation: &str, timeout: Duration) -> Option<OperationStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.operation(operation) {
                Some(OperationStatus::InProgress) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => return other,
            }
        }
    }
}
