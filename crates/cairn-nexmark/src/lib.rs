//! Nexmark on Cairn: the auction-site event generator, queries q0-q8, q11
//! (session windows) and q12 (processing-time windows) as DataStream jobs,
//! plain-Rust oracles that compute each query's result without an engine,
//! and record checksums shared with the Flink versions of the queries in
//! `benches/nexmark-flink`.
//!
//! ```no_run
//! use cairn::prelude::*;
//! use cairn_nexmark::{generator::NexmarkConfig, queries, signature::ChecksumSink};
//!
//! let env = StreamEnv::new();
//! let events = queries::events(&env, NexmarkConfig::with_events(1_000_000));
//! let streams = queries::split(&events);
//! let (sink, checksum) = ChecksumSink::new();
//! queries::q5(&streams.bids).sink(sink).uid("sink");
//! env.execute("nexmark q5").unwrap();
//! println!("{} results", checksum.records());
//! ```

pub mod generator;
pub mod model;
pub mod oracle;
pub mod queries;
pub mod signature;
