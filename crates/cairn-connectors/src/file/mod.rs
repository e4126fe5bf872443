//! File connectors: [`FileSource`] reads the lines of the files in a
//! directory (bounded, or watching for new files), and [`FileSink`] writes
//! records as lines into part files with an exactly-once two-phase commit.
//! See `docs/connectors.md` for the protocol.

mod sink;
mod source;

pub use sink::FileSink;
pub use source::{file_owner, FileSource, OPEN_FILES};
