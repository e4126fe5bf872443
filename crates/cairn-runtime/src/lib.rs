//! The Cairn engine core: tasks (one thread per subtask of a chain of
//! operators), channels with credit-based flow control behind a transport
//! seam, partitioners, watermarks, aligned and unaligned checkpoint
//! barriers with channel state, record codecs, the type-erased operator and
//! source interfaces, job wiring, and the reading and writing of operator
//! snapshots as state files.
//!
//! Typed operators (keyed process functions, windows, two-input operators,
//! sinks) live in `cairn-operators`; checkpoint coordination, the job
//! controller and restore live in `cairn-coordinator`.

pub mod barrier;
pub mod channel;
pub mod channel_state;
pub mod codec;
pub mod debloat;
pub mod error;
pub mod input;
pub mod job;
pub mod operator;
pub mod output;
pub mod query;
pub mod record;
pub mod snapshot_io;
pub mod source;
pub mod task;
pub mod time;
pub mod upload;

pub use error::{BoxError, CheckpointFailure, JobError, OpResult, SetupError, SetupErrorKind};
pub use operator::{Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
pub use record::{StreamRecord, MAX_WATERMARK, NO_TIMESTAMP};
pub use source::{Source, SourceContext, SourceStatus, SplitProgress, WatermarkStrategy};
