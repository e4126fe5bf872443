//! [`ApiError`]: what a request gets back when it fails: an HTTP status, a
//! stable code and a message.
//!
//! On the wire the body is Flink's `{"errors": ["<message>"]}` (Flink's
//! client rejects any other field), and the stable code travels in the
//! [`ERROR_CODE_HEADER`] header, so Cairn's clients can branch on it without
//! parsing messages.

use std::fmt;

use serde_json::json;

/// The response header that carries an error's stable code.
pub const ERROR_CODE_HEADER: &str = "cairn-error-code";

/// An error answered to a client. Codes are stable; messages may improve.
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

    /// The JSON body, Flink's `ErrorResponseBody`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "errors": [self.message] })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}
