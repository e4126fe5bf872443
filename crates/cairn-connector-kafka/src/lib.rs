//! Kafka for Cairn: [`KafkaSource`], whose partition offsets live in checkpoints and
//! savepoints, and [`KafkaSink`] with NONE, AT_LEAST_ONCE or EXACTLY_ONCE delivery
//! (Kafka transactions through the two-phase-commit sink contract).
//!
//! Both talk to Kafka through librdkafka (the `rdkafka` crate, built from its bundled
//! sources). The engine core stays free of it: this crate is only built when a job asks
//! for it (`cairn`'s cargo feature `kafka`). See `docs/connectors.md`.

mod client;
pub mod error;
pub mod sink;
pub mod source;

pub use error::KafkaConnectorError;
/// The client library, for what the connectors do not wrap (admin operations, tests).
pub use rdkafka;
pub use sink::{DeliveryGuarantee, KafkaRecord, KafkaSink};
pub use source::{
    DeserializationFailure, KafkaMessage, KafkaPartitionSplit, KafkaSource, OffsetResetStrategy, StartingOffsets,
};

/// The librdkafka version this crate was built with (e.g. `2.12.1`).
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}
