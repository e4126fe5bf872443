//! File source and sink (in progress).
