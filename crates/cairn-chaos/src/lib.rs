//! The kill -9 failure harness of Cairn.
//!
//! [`harness::run`] starts the chaos job ([`job`], the `cairn-chaos-job`
//! binary) as a separate process over bounded, deterministic input
//! ([`workload`]), kills it with SIGKILL at random moments (some aimed at the
//! moment a checkpoint completes, at staged sink files, or at the end of
//! input), restarts it each time from the latest retained complete checkpoint
//! (`-s`), and when the job finally ends by itself compares the committed
//! output of its exactly-once file sinks with the output computed in plain
//! Rust ([`oracle`]): same lines, no line lost, none duplicated.
//!
//! See `docs/failure-testing.md` for the method, the commands and results.

pub mod harness;
pub mod job;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod oracle;
pub mod rng;
pub mod verify;
pub mod workload;

pub use harness::{run, ChaosConfig, JobCommand, Report};
pub use rng::XorShift;
pub use workload::Workload;
