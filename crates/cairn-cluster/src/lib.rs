//! cairn-cluster: one job binary running as a coordinator and workers.
//!
//! * [`settings`]: the cluster keys (`cairn.cluster.mode`, Flink's
//!   `jobmanager.*`, `taskmanager.*`, `heartbeat.*`, `slot.request.timeout`).
//! * [`coordinator`]: the coordinator's gRPC control endpoint (registration,
//!   heartbeats, deployment, task commands and events, snapshot
//!   destinations) and [`coordinator::RemoteLauncher`], which deploys the
//!   controller's attempts onto the workers' task slots.
//! * [`worker`]: a worker's life: register, run the subtasks it is given,
//!   report their events and metrics, register again when its coordinator
//!   goes away.
//! * [`transport`]: records between workers, an implementation of the
//!   runtime's transport seam over framed TCP with per-channel credits, so
//!   backpressure crosses hosts; barriers and watermarks stay in line.
//! * [`wire`]: the protocol's messages to and from the runtime's types.
//!
//! Control is gRPC (tonic, prost) on a tokio runtime of this crate's own;
//! the engine core stays free of async code: tasks see crossbeam channels.

pub mod coordinator;
pub mod placement;
pub mod settings;
pub mod transport;
pub mod wire;
pub mod worker;

/// The generated gRPC code of `proto/cluster.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all, unused_qualifications)]
    tonic::include_proto!("cairn.cluster.v1");
}

pub use settings::{ClusterMode, ClusterSettings};

/// Version of the control protocol; a worker of another version is refused.
/// 2: live state queries (`StateQuery`, `StateQueryReply`).
pub const PROTOCOL_VERSION: u32 = 2;

/// A setup error of distributed execution (code `CLUSTER_UNAVAILABLE`).
pub fn cluster_error(message: impl Into<String>) -> cairn_runtime::error::JobError {
    use cairn_runtime::error::{JobError, SetupError, SetupErrorKind};
    JobError::Setup(SetupError::new(SetupErrorKind::Cluster, message))
}
