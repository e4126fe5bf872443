//! Canonical savepoint format, version 2, on the arrow-rs `parquet` and
//! `arrow` crates: state as data that DuckDB, pyarrow or Spark read and
//! rewrite with their defaults, and that every state backend restores.
//!
//! * [`keyed`]: one file per (operator subtask, keyed state), with the key,
//!   user key and value in typed columns derived from the state's types
//!   ([`cairn_state::shape`], mapping in [`columns`]); values that do not fit
//!   the type (written by an older version of it) and types serde cannot
//!   describe are kept as JSON text beside them, so nothing is lost.
//! * [`operator`]: one file per operator subtask with its operator state.
//! * [`io`]: Parquet on Cairn's storage, read one row group at a time.
//!
//! Spec: `docs/formats/savepoint-canonical.md` (version 1 is still read by
//! `cairn_runtime::snapshot_io`).

pub mod columns;
pub mod decode;
pub mod io;
pub mod keyed;
pub mod keys;
pub mod msgpack;
pub mod operator;

use std::path::Path;

use cairn_snapshot::Storage;

pub use io::{ParquetSource, WriteOptions};
pub use keyed::{write_keyed_snapshot, KeyedFile, KeyedFileWriter};
pub use operator::{read_operator_file, write_operator_file};

/// The canonical format version of the files this crate writes.
pub const FORMAT_VERSION: u32 = 2;
/// Key-value metadata: the canonical format version.
pub const KV_VERSION: &str = "cairn.canonical.version";
/// Key-value metadata: what the file holds.
pub const KV_CONTENT: &str = "cairn.canonical.content";
/// Key-value metadata: the Cairn version that wrote the file.
pub const KV_WRITER: &str = "cairn.writer";
/// Key-value metadata of keyed files: the state's metadata (JSON).
pub const KV_STATE: &str = "cairn.state";
/// Key-value metadata of keyed files: the key type's shape (JSON).
pub const KV_KEY_SHAPE: &str = "cairn.key_shape";
/// [`KV_CONTENT`] of keyed-state files.
pub const CONTENT_KEYED: &str = "keyed-state";
/// [`KV_CONTENT`] of operator-state files.
pub const CONTENT_OPERATOR: &str = "operator-state";

pub(crate) fn kv_base(content: &str) -> Vec<(String, String)> {
    vec![
        (KV_VERSION.into(), FORMAT_VERSION.to_string()),
        (KV_CONTENT.into(), content.into()),
        (KV_WRITER.into(), format!("cairn {}", env!("CARGO_PKG_VERSION"))),
    ]
}

/// A canonical v2 file, opened.
pub enum CanonicalFile {
    Keyed(Box<KeyedFile>),
    Operator(Box<ParquetSource>),
}

/// Open a canonical v2 file of `size` bytes. What it holds is told by its
/// columns (`key_group`: keyed state; `mode`: operator state), so files that
/// lost Cairn's key-value metadata in a rewrite still open; a version in the
/// metadata newer than this build reads is refused.
pub fn open(storage: &dyn Storage, path: &Path, size: u64) -> Result<CanonicalFile, String> {
    let source = ParquetSource::open(storage, path, size)?;
    if let Some(v) = source.kv(KV_VERSION) {
        if v != FORMAT_VERSION.to_string() {
            return Err(format!(
                "canonical format version {v} is not supported here: this file is named as version 2 in _metadata (use a newer Cairn)"
            ));
        }
    }
    let has = |n: &str| source.schema().fields().iter().any(|f| f.name() == n);
    if has(keyed::COL_KEY_GROUP) {
        Ok(CanonicalFile::Keyed(Box::new(KeyedFile::new(storage, source)?)))
    } else if has(operator::COL_MODE) {
        Ok(CanonicalFile::Operator(Box::new(source)))
    } else {
        Err(format!(
            "the file has neither a '{}' column (keyed state) nor a '{}' column (operator state)",
            keyed::COL_KEY_GROUP,
            operator::COL_MODE
        ))
    }
}

#[cfg(test)]
mod tests;
