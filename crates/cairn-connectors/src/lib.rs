//! Sources and sinks: the deterministic generator, collecting, printing and
//! discarding sinks. (File source and file sink live in [`file`].)

pub mod collect;
pub mod file;
pub mod generator;
pub mod print;
pub mod split;

pub use collect::{CollectSink, Collected};
pub use file::{FileSink, FileSource};
pub use generator::{GeneratedEvent, GeneratorSource};
pub use print::{DiscardSink, PrintSink};
pub use split::{SourceSplit, SplitPoll, SplitSet};
