//! Errors of the Kafka connectors: each names what it was doing (the topic, partition,
//! offset or transactional id) and what the user can do about it.

use std::fmt;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Why a Kafka source or sink failed.
#[derive(Debug)]
pub enum KafkaConnectorError {
    /// A setting is missing or wrong.
    Config { what: String, fix: String },
    /// No broker answered within the timeout.
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        cause: String,
    },
    /// A topic the job names does not exist.
    UnknownTopic { topic: String, bootstrap: String },
    /// The broker refused an operation (ACLs).
    NotAuthorized {
        resource: String,
        operation: String,
        cause: String,
    },
    /// A record could not be deserialised (and the policy is to fail).
    Deserialize {
        topic: String,
        partition: i32,
        offset: i64,
        cause: String,
    },
    /// Any other client error, with what the connector was doing.
    Client { doing: String, cause: KafkaError },
}

impl fmt::Display for KafkaConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaConnectorError::Config { what, fix } => write!(f, "kafka: {what}; {fix}"),
            KafkaConnectorError::Unreachable {
                bootstrap,
                timeout,
                cause,
            } => write!(
                f,
                "kafka: no broker of bootstrap.servers '{bootstrap}' answered within {} ms ({cause}); \
                 check that the brokers run and the address is right, or raise the connector's timeout",
                timeout.as_millis()
            ),
            KafkaConnectorError::UnknownTopic { topic, bootstrap } => write!(
                f,
                "kafka: topic '{topic}' does not exist on the cluster at '{bootstrap}'; create it or fix the topic name"
            ),
            KafkaConnectorError::NotAuthorized {
                resource,
                operation,
                cause,
            } => write!(
                f,
                "kafka: not authorized to {operation} {resource} ({cause}); grant the permission (ACL) to the job's principal"
            ),
            KafkaConnectorError::Deserialize {
                topic,
                partition,
                offset,
                cause,
            } => write!(
                f,
                "kafka source: cannot deserialize the record at topic '{topic}' partition {partition} offset {offset}: \
                 {cause}; fix the data or the deserializer, or skip such records with \
                 `.on_deserialization_failure(DeserializationFailure::Skip)`"
            ),
            KafkaConnectorError::Client { doing, cause } => write!(f, "kafka: {doing}: {cause}"),
        }
    }
}

impl std::error::Error for KafkaConnectorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KafkaConnectorError::Client { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// The broker-side error code of a client error, if it has one.
pub(crate) fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// Whether the error means no broker could be reached.
pub(crate) fn is_unreachable(e: &KafkaError) -> bool {
    matches!(
        code(e),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::CoordinatorNotAvailable
        )
    )
}

/// Whether the error is an authorization failure.
pub(crate) fn is_authorization(e: &KafkaError) -> bool {
    matches!(
        code(e),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        )
    )
}
