//! cairn-rest-server: the REST API of a running Cairn job.
//!
//! * [`serve`] starts the job's server (on `cairn-http`: hyper on a thread
//!   of its own) on TCP and on an owner-only Unix socket, and registers the
//!   job for `cairn list`. It drives the job through its
//!   [`cairn_coordinator::control::JobClient`].
//! * [`api`] routes and answers requests without sockets: Flink's REST
//!   endpoints in Flink's exact shapes ([`flink`]), Cairn's additions, the
//!   web UI's files.
//! * [`metrics`] renders `GET /metrics` for Prometheus.
//!
//! The endpoint reference is `docs/operations.md`.

pub mod api;
pub mod flink;
pub mod metrics;
pub mod serve;

pub use api::{Api, Topology};
pub use flink::PlanEdge;
pub use serve::{rest_requested, send_raw, serve, serve_with, RestError, RestServer, ServeOptions};
