//! Errors of a running job. `User` errors come from user code or bad input and
//! name the operator and subtask; the rest are Cairn's own failures.

use std::fmt;

/// Boxed user error: user functions return `Result<_, BoxError>` so that any
/// error type can be used with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of user functions and operators.
pub type OpResult<T = ()> = Result<T, BoxError>;

/// Why a job failed.
#[derive(Debug)]
pub enum JobError {
    /// User code returned an error or panicked.
    Task {
        operator: String,
        /// The operator's uid (what snapshots match state by).
        uid: String,
        subtask: u32,
        parallelism: u32,
        message: String,
    },
    /// The job was cancelled.
    Cancelled,
    /// The job could not start (bad graph, config, restore).
    Setup(String),
    /// A failure of the runtime itself.
    Internal(String),
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
            } => {
                write!(
                    f,
                    "operator '{operator}' (uid '{uid}', subtask {}/{parallelism}) failed: {message}",
                    subtask + 1
                )
            }
            JobError::Cancelled => write!(f, "the job was cancelled"),
            JobError::Setup(m) => write!(f, "the job could not start: {m}"),
            JobError::Internal(m) => write!(f, "internal error in the Cairn runtime: {m}"),
        }
    }
}

impl std::error::Error for JobError {}

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
