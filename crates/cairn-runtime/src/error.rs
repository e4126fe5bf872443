//! Errors of a running job, split like `SnapshotError`'s: failures of the
//! user's job, configuration or input ([`JobError::is_user_error`]) and
//! failures of Cairn or the machine under it. Every variant has a stable
//! code ([`JobError::code`], listed in `docs/errors.md`) and, where a cause
//! exists, keeps it as the error's [`source`](std::error::Error::source), so
//! a failed restore still carries its [`SnapshotError`].
//!
//! Messages (`Display`) are complete sentences that already include the
//! cause's text; the source chain is there for programs, not for printing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cairn_snapshot::SnapshotError;

/// Boxed user error: user functions return `Result<_, BoxError>` so that any
/// error type can be used with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of user functions and operators.
pub type OpResult<T = ()> = Result<T, BoxError>;

/// Why a job failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum JobError {
    /// User code returned an error or panicked.
    Task {
        operator: String,
        /// The operator's uid (what snapshots match state by).
        uid: String,
        subtask: u32,
        parallelism: u32,
        message: String,
        /// The error user code returned (none for a panic).
        source: Option<BoxError>,
    },
    /// The job was cancelled.
    Cancelled,
    /// The job could not start (configuration, checkpoint storage, restore).
    Setup(SetupError),
    /// Checkpoints kept failing: more consecutive failures than
    /// `execution.checkpointing.tolerable-failed-checkpoints` allows.
    Checkpointing(CheckpointingError),
    /// The final savepoint of a stop-with-savepoint could not be written.
    StopWithSavepoint {
        savepoint_id: u64,
        cause: CheckpointFailure,
    },
    /// A newer coordinator took over the job's checkpoints (its fence is
    /// newer), so this one stops.
    Fenced(CheckpointFailure),
    /// A failure of the runtime itself (a bug, or the OS refusing threads).
    Internal(String),
}

/// Every code [`JobError::code`] returns (listed in `docs/errors.md`).
pub const JOB_ERROR_CODES: &[&str] = &[
    "TASK_FAILED",
    "JOB_CANCELLED",
    "INVALID_CONFIGURATION",
    "CHECKPOINT_STORAGE_UNUSABLE",
    "RESTORE_FAILED",
    "RESTORE_UNCLAIMED_STATE",
    "RESTORE_INCOMPATIBLE_STATE",
    "OPERATOR_OPEN_FAILED",
    "STATE_BACKEND_UNAVAILABLE",
    "REST_UNAVAILABLE",
    "CLUSTER_UNAVAILABLE",
    "STORAGE_FULL",
    "CHECKPOINT_STORAGE_FAILED",
    "CHECKPOINT_EXPIRED",
    "CHECKPOINT_DECLINED",
    "CHECKPOINT_FAILED",
    "STOP_WITH_SAVEPOINT_FAILED",
    "COORDINATOR_FENCED",
    "INTERNAL",
];

impl JobError {
    /// A setup error of `kind` without a typed cause.
    pub fn setup(kind: SetupErrorKind, message: impl Into<String>) -> JobError {
        JobError::Setup(SetupError::new(kind, message))
    }

    /// The stable code of this failure (see `docs/errors.md`).
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Task { .. } => "TASK_FAILED",
            JobError::Cancelled => "JOB_CANCELLED",
            JobError::Setup(e) => e.code(),
            JobError::Checkpointing(e) => e.cause.code(),
            JobError::StopWithSavepoint { .. } => "STOP_WITH_SAVEPOINT_FAILED",
            JobError::Fenced(_) => "COORDINATOR_FENCED",
            JobError::Internal(_) => "INTERNAL",
        }
    }

    /// True when the job, its configuration or its input is at fault (fix
    /// them and start again); false for failures of Cairn or of the machine
    /// (storage, threads), which may succeed on retry.
    pub fn is_user_error(&self) -> bool {
        match self {
            JobError::Task { .. } | JobError::Cancelled => true,
            JobError::Setup(e) => e.is_user_error(),
            JobError::Checkpointing(e) => e.cause.is_user_error(),
            JobError::StopWithSavepoint { cause, .. } => cause.is_user_error(),
            // Two coordinators for one job: how it was deployed, not Cairn.
            JobError::Fenced(_) => true,
            JobError::Internal(_) => false,
        }
    }

    /// The snapshot error this failure comes from, if any.
    pub fn snapshot_error(&self) -> Option<&SnapshotError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            if let Some(s) = e.downcast_ref::<SnapshotError>() {
                return Some(s);
            }
            cur = e.source();
        }
        None
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Task {
                operator,
                uid,
                subtask,
                parallelism,
                message,
                ..
            } => {
                write!(
                    f,
                    "operator '{operator}' (uid '{uid}', subtask {}/{parallelism}) failed: {message}",
                    subtask + 1
                )
            }
            JobError::Cancelled => write!(f, "the job was cancelled"),
            JobError::Setup(e) => write!(f, "the job could not start: {e}"),
            JobError::Checkpointing(e) => write!(f, "{e}"),
            JobError::StopWithSavepoint { savepoint_id, cause } => write!(
                f,
                "stop with savepoint failed: savepoint {savepoint_id} could not be written ({cause}); the job restarts from its latest checkpoint as its restart strategy allows"
            ),
            JobError::Fenced(cause) => write!(f, "{cause}"),
            JobError::Internal(m) => write!(f, "internal error in the Cairn runtime: {m}"),
        }
    }
}

impl std::error::Error for JobError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JobError::Task { source, .. } => source.as_deref().map(|e| e as &(dyn std::error::Error + 'static)),
            JobError::Setup(e) => Some(e),
            JobError::Checkpointing(e) => Some(e),
            JobError::StopWithSavepoint { cause, .. } | JobError::Fenced(cause) => Some(cause),
            JobError::Cancelled | JobError::Internal(_) => None,
        }
    }
}

/// What kind of setup failed, for the stable code and the user/internal split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SetupErrorKind {
    /// The configuration is inconsistent (e.g. an interval without a directory).
    Config,
    /// The checkpoint or savepoint directory cannot be used.
    CheckpointStorage,
    /// The snapshot to restore from cannot be read (missing, corrupt, unsupported).
    Restore,
    /// The snapshot holds state that maps to no operator (and `-n` was not given).
    UnclaimedState,
    /// The snapshot's state does not fit the job (max parallelism, state types).
    IncompatibleState,
    /// A source or operator failed (or panicked) in `open`.
    OperatorOpen,
    /// The keyed state backend could not be created (`state.backend.*`).
    StateBackend,
    /// The REST API could not be served.
    Rest,
    /// Distributed execution could not start: not enough task slots, a
    /// worker could not start its tasks, a control or data port is busy.
    Cluster,
}

/// Why a job could not start: what failed, in words, and the typed cause.
#[derive(Debug)]
pub struct SetupError {
    kind: SetupErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl SetupError {
    /// A setup error without a typed cause.
    pub fn new(kind: SetupErrorKind, message: impl Into<String>) -> Self {
        SetupError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the cause; its text should already be part of the message.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What failed.
    pub fn kind(&self) -> SetupErrorKind {
        self.kind
    }

    /// The message without the "could not start" prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        if let Some(s) = self.snapshot_source() {
            if s.is_storage_full() {
                return "STORAGE_FULL";
            }
        }
        match self.kind {
            SetupErrorKind::Config => "INVALID_CONFIGURATION",
            SetupErrorKind::CheckpointStorage => "CHECKPOINT_STORAGE_UNUSABLE",
            SetupErrorKind::Restore => "RESTORE_FAILED",
            SetupErrorKind::UnclaimedState => "RESTORE_UNCLAIMED_STATE",
            SetupErrorKind::IncompatibleState => "RESTORE_INCOMPATIBLE_STATE",
            SetupErrorKind::OperatorOpen => "OPERATOR_OPEN_FAILED",
            SetupErrorKind::StateBackend => "STATE_BACKEND_UNAVAILABLE",
            SetupErrorKind::Rest => "REST_UNAVAILABLE",
            SetupErrorKind::Cluster => "CLUSTER_UNAVAILABLE",
        }
    }

    /// User error unless the cause is a storage failure (I/O) underneath.
    pub fn is_user_error(&self) -> bool {
        match self.snapshot_source() {
            Some(s) => s.is_user_error(),
            None => true,
        }
    }

    fn snapshot_source(&self) -> Option<&SnapshotError> {
        self.source.as_deref().and_then(|e| e.downcast_ref::<SnapshotError>())
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Why one checkpoint or savepoint failed. Cheap to clone: statistics,
/// operations and the job's failure all keep it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CheckpointFailure {
    /// Writing or committing it failed in storage.
    Storage(Arc<SnapshotError>),
    /// Not complete within `execution.checkpointing.timeout`.
    Expired(Duration),
    /// A task declined it (its reason).
    Declined(String),
    /// Any other reason, in words.
    Other(String),
}

impl CheckpointFailure {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointFailure::Storage(e) if e.is_storage_full() => "STORAGE_FULL",
            CheckpointFailure::Storage(_) => "CHECKPOINT_STORAGE_FAILED",
            CheckpointFailure::Expired(_) => "CHECKPOINT_EXPIRED",
            CheckpointFailure::Declined(_) => "CHECKPOINT_DECLINED",
            CheckpointFailure::Other(_) => "CHECKPOINT_FAILED",
        }
    }

    /// Storage trouble and timeouts are not the user's input.
    pub fn is_user_error(&self) -> bool {
        match self {
            CheckpointFailure::Storage(e) => e.is_user_error(),
            CheckpointFailure::Expired(_) | CheckpointFailure::Other(_) => false,
            CheckpointFailure::Declined(_) => true,
        }
    }
}

impl fmt::Display for CheckpointFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointFailure::Storage(e) => write!(f, "{e}"),
            CheckpointFailure::Expired(timeout) => write!(
                f,
                "not complete within execution.checkpointing.timeout ({})",
                cairn_config::format_duration(*timeout)
            ),
            CheckpointFailure::Declined(why) => write!(f, "declined by a task: {why}"),
            CheckpointFailure::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CheckpointFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointFailure::Storage(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<String> for CheckpointFailure {
    fn from(why: String) -> Self {
        CheckpointFailure::Other(why)
    }
}

impl From<&str> for CheckpointFailure {
    fn from(why: &str) -> Self {
        CheckpointFailure::Other(why.to_string())
    }
}

impl From<SnapshotError> for CheckpointFailure {
    fn from(e: SnapshotError) -> Self {
        CheckpointFailure::Storage(Arc::new(e))
    }
}

/// More consecutive checkpoint failures than tolerated; the last one's cause.
#[derive(Debug)]
pub struct CheckpointingError {
    /// The checkpoint whose failure crossed the threshold.
    pub checkpoint_id: u64,
    /// Consecutive failures counted (one more than tolerated).
    pub consecutive: u32,
    /// `execution.checkpointing.tolerable-failed-checkpoints`.
    pub tolerable: u32,
    /// Why the last one failed.
    pub cause: CheckpointFailure,
}

impl fmt::Display for CheckpointingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.cause {
            CheckpointFailure::Storage(e) if e.is_storage_full() => "checkpoint storage is full",
            CheckpointFailure::Storage(_) => "checkpoint storage failed",
            _ => "checkpoints keep failing",
        };
        write!(
            f,
            "{what}: checkpoint {} failed, {} consecutive failures exceed execution.checkpointing.tolerable-failed-checkpoints ({}): {}",
            self.checkpoint_id, self.consecutive, self.tolerable, self.cause
        )
    }
}

impl std::error::Error for CheckpointingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// Turn a panic payload into a message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// The error a task returns when it stops because the job is being cancelled
/// or a neighbour failed; never reported as the job's cause.
#[derive(Debug)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cancelled")
    }
}

impl std::error::Error for Cancelled {}
