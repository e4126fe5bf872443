//! The error a job's `main` sees: bad configuration, a bad job graph, or a
//! failure while running.

use std::fmt;

/// Any error from building or running a job.
#[derive(Debug)]
pub enum CairnError {
    Config(cairn_config::ConfigError),
    Graph(cairn_graph::GraphError),
    Job(cairn_runtime::JobError),
}

impl fmt::Display for CairnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CairnError::Config(e) => write!(f, "configuration error: {e}"),
            CairnError::Graph(e) => write!(f, "invalid job: {e}"),
            CairnError::Job(e) => write!(f, "{e}"),
        }
    }
}

impl CairnError {
    /// The stable code of the failure (`docs/errors.md`).
    pub fn code(&self) -> &'static str {
        match self {
            CairnError::Config(e) => e.code(),
            CairnError::Graph(_) => "INVALID_JOB",
            CairnError::Job(e) => e.code(),
        }
    }

    /// True when the job, its configuration or its input is at fault.
    pub fn is_user_error(&self) -> bool {
        match self {
            CairnError::Config(_) | CairnError::Graph(_) => true,
            CairnError::Job(e) => e.is_user_error(),
        }
    }
}

impl std::error::Error for CairnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CairnError::Config(e) => Some(e),
            CairnError::Graph(e) => Some(e),
            CairnError::Job(e) => Some(e),
        }
    }
}

impl From<cairn_config::ConfigError> for CairnError {
    fn from(e: cairn_config::ConfigError) -> Self {
        CairnError::Config(e)
    }
}

impl From<cairn_graph::GraphError> for CairnError {
    fn from(e: cairn_graph::GraphError) -> Self {
        CairnError::Graph(e)
    }
}

impl From<cairn_runtime::JobError> for CairnError {
    fn from(e: cairn_runtime::JobError) -> Self {
        CairnError::Job(e)
    }
}
