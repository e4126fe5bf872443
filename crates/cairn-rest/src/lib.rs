//! cairn-rest: the control plane of a running Cairn job.
//!
//! * [`serve`] starts a small HTTP/1.1 server (std only, no async runtime)
//!   with Flink's REST shapes for jobs, checkpoints, savepoints, stop,
//!   cancel, savepoint disposal, configuration and Prometheus metrics. It
//!   drives the job through a [`cairn_coordinator::control::JobClient`].
//! * [`api`] routes and answers requests without sockets (testable).
//! * [`paths`] validates paths named in requests against allowed roots;
//!   [`auth`] checks bearer tokens.
//! * [`registry`] is job discovery on one machine: `<CAIRN_HOME>/jobs/<id>.json`.
//! * [`client`] is the HTTP client the `cairn` CLI uses.
//!
//! The endpoint reference is `docs/operations.md`.

pub mod api;
pub mod auth;
pub mod client;
pub mod error;
pub mod http;
pub mod metrics;
pub mod paths;
pub mod registry;
pub mod server;

pub use client::{HttpClient, HttpResponse};
pub use error::{ApiError, RestError};
pub use registry::{Registry, RegistryEntry, ResolveError};
pub use server::{rest_requested, serve, serve_with, RestServer, ServeOptions};
