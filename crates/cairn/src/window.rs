//! Windows (in progress).
