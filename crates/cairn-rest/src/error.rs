//! Errors: [`ApiError`] is what a request gets back (a status, a stable code
//! and a message); [`RestError`] is why the server could not start.

use std::fmt;

use cairn_coordinator::control::{ControlError, ControlErrorCode};
use serde_json::json;

use crate::http::Response;

/// An error answered to a client as
/// `{"errors": ["<message>"], "code": "<STABLE_CODE>"}`.
///
/// `errors` is Flink's shape; `code` is Cairn's addition so clients can
/// branch without parsing messages. Codes are stable; messages may improve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    /// A 400 `INVALID_FIELD` naming the field.
    pub fn invalid_field(field: &str, why: impl fmt::Display) -> ApiError {
        ApiError::new(400, "INVALID_FIELD", format!("field '{field}' {why}"))
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "errors": [self.message], "code": self.code })
    }

    /// The response.
    pub fn response(&self) -> Response {
        let r = Response::json(self.status, &self.to_json());
        if self.status == 401 {
            r.with_header("WWW-Authenticate", "Bearer realm=\"cairn\"")
        } else {
            r
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e.code {
            ControlErrorCode::BadRequest => ApiError::new(400, "BAD_REQUEST", e.message),
            ControlErrorCode::JobNotRunning => ApiError::new(409, "JOB_NOT_RUNNING", e.message),
            ControlErrorCode::Conflict => ApiError::new(409, "DUPLICATE_TRIGGER_ID", e.message),
        }
    }
}

/// Why [`crate::serve`] could not start a server.
#[derive(Debug)]
pub enum RestError {
    /// The REST configuration is unusable (names the key and what to do).
    Config(String),
    /// No port could be bound.
    Bind(String),
    /// Another I/O failure (registry, threads).
    Io(String),
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestError::Config(m) => write!(f, "REST configuration error: {m}"),
            RestError::Bind(m) => write!(f, "cannot start the REST server: {m}"),
            RestError::Io(m) => write!(f, "REST server failure: {m}"),
        }
    }
}

impl std::error::Error for RestError {}
