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

impl std::error::Error for CairnError {}

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
