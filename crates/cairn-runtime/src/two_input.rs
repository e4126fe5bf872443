//! Two-input operators (in progress).
