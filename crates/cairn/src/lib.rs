//! Cairn: a stateful stream-processing engine with Flink-grade checkpoints and
//! savepoints. A job is an ordinary Rust binary:
//!
//! ```no_run
//! use cairn::prelude::*;
//!
//! fn main() -> Result<(), CairnError> {
//!     let env = StreamEnv::from_args()?;
//!     env.source(GeneratorSource::new(1_000, 10)).uid("source-id")
//!         .key_by(|e: &GeneratedEvent| e.key)
//!         .reduce(|a, b| if a.value > b.value { a } else { b }).uid("max-per-key")
//!         .print();
//!     env.execute("max per key")?;
//!     Ok(())
//! }
//! ```

pub mod alloc;
pub mod collection;
pub mod connect;
pub mod env;
pub mod error;
pub mod execution;
pub mod functions;
pub mod logging;
pub mod plan;
pub mod stream;
pub mod window;
pub mod wiring;

/// Bounds of every record type: cloned when a stream feeds several
/// operators, moved between threads, and serialized (with serde) when records
/// are stored with an unaligned checkpoint or cross to another host. As in
/// Flink, every type that flows through a stream needs a serializer.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot flow through a Cairn stream",
    note = "records are moved between threads and serialized when they are stored with an unaligned checkpoint or sent to another host: derive `Clone`, `serde::Serialize` and `serde::Deserialize` for `{Self}`"
)]
pub trait Data: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static> Data for T {}

pub use cairn_config as config;
/// Kafka source and sink (cargo feature `kafka`).
#[cfg(feature = "kafka")]
pub use cairn_connector_kafka as kafka;
pub use cairn_connectors as connectors;
pub use cairn_coordinator as coordinator;
pub use cairn_operators as operators;
pub use cairn_runtime as runtime;
pub use cairn_snapshot as snapshot;
pub use cairn_state as state;

/// Everything a job usually needs.
pub mod prelude {
    pub use crate::connect::{
        BroadcastConnectedStream, BroadcastStream, ConnectedStreams, KeyedBroadcastConnectedStream,
        KeyedConnectedStreams,
    };
    pub use crate::env::{JobResult, StreamEnv};
    pub use crate::error::CairnError;
    pub use crate::execution::JobHandle;
    pub use crate::stream::{DataStream, KeyedStream};
    pub use crate::window::{
        EventTimeSessionWindows, ProcessWindowFunction, ProcessingTimeSessionWindows, SlidingEventTimeWindows,
        SlidingProcessingTimeWindows, TimeWindow, TumblingEventTimeWindows, TumblingProcessingTimeWindows,
        WindowAssigner, WindowCollector, WindowedStream,
    };
    pub use crate::Data;
    pub use cairn_connectors::{
        CollectSink, Collected, DiscardSink, FileSink, FileSource, GeneratedEvent, GeneratorSource, PrintSink,
    };
    pub use cairn_operators::two_input::{
        BroadcastContext, BroadcastProcessFunction, CoProcessContext, CoProcessFunction, KeyedBroadcastProcessFunction,
        KeyedCoContext, KeyedCoProcessFunction, KeyedReadOnlyBroadcastContext, ReadOnlyBroadcastContext,
    };
    pub use cairn_operators::{
        KeyedContext, KeyedOpenContext, KeyedProcessFunction, OutputTag, ProcessContext, ProcessFunction, Sink,
        SinkContext, TimeDomain,
    };
    pub use cairn_runtime::SubtaskInfo;
    pub use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, StreamRecord, WatermarkStrategy};
    pub use cairn_state::{
        AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState, ListStateDescriptor, MapState,
        MapStateDescriptor, ReducingState, ReducingStateDescriptor, StateTtlConfig, ValueState, ValueStateDescriptor,
    };
}
