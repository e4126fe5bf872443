//! Errors of the state layer.

use std::fmt;

/// An error raised by state access, registration, encoding or restore.
#[derive(Debug)]
pub enum StateError {
    /// A value could not be encoded or decoded with the state's codec.
    Codec { state: String, detail: String },
    /// A state name was registered twice with different kinds or types.
    Conflict { state: String, detail: String },
    /// State was used outside a keyed context, or before registration.
    Usage(String),
    /// The backend failed (I/O for disk backends).
    Backend(String),
    /// A snapshot could not be restored.
    Restore(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Codec { state, detail } => {
                write!(f, "state '{state}': value could not be encoded or decoded: {detail}")
            }
            StateError::Conflict { state, detail } => write!(f, "state '{state}': {detail}"),
            StateError::Usage(m) => write!(f, "state used incorrectly: {m}"),
            StateError::Backend(m) => write!(f, "state backend failed: {m}"),
            StateError::Restore(m) => write!(f, "state could not be restored: {m}"),
        }
    }
}

impl std::error::Error for StateError {}
