//! What the source and the sink share: client properties (passed through to librdkafka),
//! the timeout after which an unreachable cluster fails the job, a client context that
//! notices broker and delivery failures, and metadata look-ups with clear errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::Message;

use crate::error::{is_authorization, is_unreachable, KafkaConnectorError};

/// Default of [`ClientSettings::timeout`]: how long a connector waits for the cluster
/// before it fails the job.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Client properties and the connector's timeout.
#[derive(Clone, Debug)]
pub(crate) struct ClientSettings {
    /// librdkafka properties, passed through as given (`bootstrap.servers`, `group.id`, ...).
    pub properties: BTreeMap<String, String>,
    pub timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            properties: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ClientSettings {
    pub fn bootstrap(&self) -> &str {
        self.properties.get("bootstrap.servers").map_or("", String::as_str)
    }

    /// Set a property (the builders' `property`), or `properties.<name>` with the prefix
    /// dropped (Flink's SQL option names).
    pub fn set(&mut self, key: &str, value: &str) {
        let key = key.strip_prefix("properties.").unwrap_or(key);
        self.properties.insert(key.to_string(), value.to_string());
    }

    /// The client configuration: the user's properties over `defaults`, then `forced`
    /// (settings the connector's guarantees depend on).
    pub fn client_config(
        &self,
        defaults: &[(&str, String)],
        forced: &[(&str, String)],
    ) -> Result<ClientConfig, KafkaConnectorError> {
        if self.bootstrap().is_empty() {
            return Err(KafkaConnectorError::Config {
                what: "bootstrap.servers is not set".into(),
                fix: "call `.bootstrap_servers(\"host:port\")` or set the property `bootstrap.servers`".into(),
            });
        }
        let mut config = ClientConfig::new();
        for (k, v) in defaults {
            config.set(*k, v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        for (k, v) in forced {
            if let Some(user) = self.properties.get(*k) {
                if user != v {
                    return Err(KafkaConnectorError::Config {
                        what: format!("property '{k}' = '{user}' conflicts with the connector, which needs '{v}'"),
                        fix: format!("remove the property '{k}'"),
                    });
                }
            }
            config.set(*k, v);
        }
        Ok(config)
    }

    pub fn unreachable(&self, cause: impl ToString) -> KafkaConnectorError {
        KafkaConnectorError::Unreachable {
            bootstrap: self.bootstrap().to_string(),
            timeout: self.timeout,
            cause: cause.to_string(),
        }
    }

    /// Turn a client error into a connector error, naming what was being done.
    pub fn error(&self, doing: impl Into<String>, e: KafkaError) -> KafkaConnectorError {
        let doing = doing.into();
        if is_unreachable(&e) {
            self.unreachable(format!("{doing}: {e}"))
        } else if is_authorization(&e) {
            KafkaConnectorError::NotAuthorized {
                resource: doing,
                operation: "access".into(),
                cause: e.to_string(),
            }
        } else {
            KafkaConnectorError::Client { doing, cause: e }
        }
    }
}

/// What the client's background threads noticed.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Whether `all_brokers_down` is set (read on every success without locking).
    down: AtomicBool,
    /// Since when librdkafka reports that every broker is down (cleared by any success).
    all_brokers_down: Mutex<Option<Instant>>,
    /// The first failed delivery or fatal error.
    failure: Mutex<Option<String>>,
}

impl Health {
    /// Something succeeded: the brokers are reachable.
    pub fn ok(&self) {
        if self.down.load(Ordering::Relaxed) {
            if let Ok(mut d) = self.all_brokers_down.lock() {
                *d = None;
                self.down.store(false, Ordering::Relaxed);
            }
        }
    }

    pub fn fail(&self, what: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(what);
        }
    }

    pub fn take_failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    /// How long every broker has been unreachable, if they are.
    pub fn down_for(&self) -> Option<Duration> {
        self.all_brokers_down.lock().ok().and_then(|d| d.map(|t| t.elapsed()))
    }
}

/// The context of every client the connectors create.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    pub health: Arc<Health>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                if let Ok(mut d) = self.health.all_brokers_down.lock() {
                    d.get_or_insert_with(Instant::now);
                    self.health.down.store(true, Ordering::Relaxed);
                }
            }
            Some(RDKafkaErrorCode::Fatal) => self.health.fail(format!("fatal client error: {reason}")),
            _ => {}
        }
    }

    // librdkafka's own log lines (reconnects and the like) are not the job's output.
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _log_message: &str) {}
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.health.ok(),
            Err((e, m)) => self.health.fail(format!(
                "a record for topic '{}' partition {} was not delivered: {e}",
                m.topic(),
                m.partition()
            )),
        }
    }
}

/// Whether a broker answers a metadata request now (clears the brokers-down mark if so).
pub(crate) fn reachable(client: &Client<Context>, settings: &ClientSettings) -> bool {
    let ok = client
        .fetch_metadata(None, settings.timeout.min(Duration::from_secs(5)))
        .is_ok();
    if ok {
        client.context().health.ok();
    }
    ok
}

/// Partitions of `topic`; an unknown topic, a refused one or an unreachable cluster is
/// an error after the timeout.
pub(crate) fn partitions_of<C: ClientContext>(
    client: &Client<C>,
    settings: &ClientSettings,
    topic: &str,
) -> Result<Vec<i32>, KafkaConnectorError> {
    let md = client
        .fetch_metadata(Some(topic), settings.timeout)
        .map_err(|e| settings.error(format!("reading the metadata of topic '{topic}'"), e))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaConnectorError::UnknownTopic {
            topic: topic.to_string(),
            bootstrap: settings.bootstrap().to_string(),
        })?;
    topic_partitions(settings, t)
}

fn topic_partitions(
    settings: &ClientSettings,
    t: &rdkafka::metadata::MetadataTopic,
) -> Result<Vec<i32>, KafkaConnectorError> {
    match t.error() {
        None => {}
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            return Err(KafkaConnectorError::UnknownTopic {
                topic: t.name().to_string(),
                bootstrap: settings.bootstrap().to_string(),
            })
        }
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
            return Err(KafkaConnectorError::NotAuthorized {
                resource: format!("topic '{}'", t.name()),
                operation: "describe".into(),
                cause: "TOPIC_AUTHORIZATION_FAILED".into(),
            })
        }
        Some(other) => {
            return Err(KafkaConnectorError::Client {
                doing: format!("reading the metadata of topic '{}'", t.name()),
                cause: KafkaError::MetadataFetch(other.into()),
            })
        }
    }
    let mut parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    parts.sort_unstable();
    Ok(parts)
}

/// Every topic (and its partitions) whose name matches `pattern`; internal topics
/// (`__consumer_offsets`, ...) never match.
pub(crate) fn matching_topics<C: ClientContext>(
    client: &Client<C>,
    settings: &ClientSettings,
    pattern: &regex::Regex,
) -> Result<Vec<(String, Vec<i32>)>, KafkaConnectorError> {
    let md = client
        .fetch_metadata(None, settings.timeout)
        .map_err(|e| settings.error("listing the cluster's topics", e))?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name().starts_with("__") || !pattern.is_match(t.name()) {
            continue;
        }
        match topic_partitions(settings, t) {
            Ok(p) => out.push((t.name().to_string(), p)),
            // A matching topic we may not read is skipped, as Flink does (it cannot be subscribed).
            Err(KafkaConnectorError::NotAuthorized { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}
