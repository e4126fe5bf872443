//! The Cairn runtime: tasks (one thread per subtask of a chain of operators),
//! bounded channels carrying record batches and in-band control events,
//! watermarks, timers, barrier alignment, and the job runner.

pub mod error;
pub mod input;
pub mod job;
pub mod operator;
pub mod output;
pub mod record;
pub mod source;
pub mod task;
pub mod time;

pub use error::{BoxError, JobError, OpResult};
pub use operator::{Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
pub use record::{StreamRecord, MAX_WATERMARK, NO_TIMESTAMP};
pub use source::{Source, SourceContext, SourceStatus, WatermarkStrategy};
pub mod collector;
pub mod keyed;
pub mod process;
pub mod sink;
pub mod timers;
pub mod two_input;
pub mod window;

pub use collector::OutputTag;
pub use keyed::{Key, KeyedContext, KeyedOpenContext, KeyedProcessFunction};
pub use process::{ProcessContext, ProcessFunction};
pub use sink::{Sink, SinkContext};
pub use timers::TimeDomain;
pub mod checkpoint;
pub mod control;
pub mod controller;
pub mod restart;
pub mod restore;
pub mod snapshot_io;
