//! The Kafka sink, with Flink's three delivery guarantees.
//!
//! - `NONE`: records are handed to the producer and never waited for.
//! - `AT_LEAST_ONCE`: at every barrier the producer is flushed and every record must be
//!   acknowledged before the checkpoint is taken, so a restore can only repeat records.
//! - `EXACTLY_ONCE`: Kafka transactions through the two-phase-commit contract (see
//!   [`transactions`]): a transaction per checkpoint per subtask, pre-committed (flushed)
//!   at the barrier, committed when the checkpoint completes, committed again after a
//!   restore, and lingering transactions of earlier attempts fenced on start.

mod record;
mod transactions;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_operators::{Sink, SinkContext};
use cairn_runtime::{OpResult, StreamRecord, MAX_WATERMARK, NO_TIMESTAMP};
use rdkafka::producer::{BaseProducer, Producer};

use crate::client::{partitions_of, ClientSettings, Context};
use crate::error::KafkaConnectorError;
pub use record::KafkaRecord;
use record::WalRecord;
use transactions::Transactions;

/// What the sink guarantees about its output after failures (Flink's `DeliveryGuarantee`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Nothing: records may be lost or duplicated.
    None,
    /// No record is lost; a restore may write some again (the default).
    AtLeastOnce,
    /// Every record is visible exactly once to `isolation.level=read_committed` readers.
    ExactlyOnce,
}

impl DeliveryGuarantee {
    /// Flink's names: `none`, `at-least-once`, `exactly-once` (any case, `_` or `-`).
    pub fn parse(s: &str) -> Result<Self, KafkaConnectorError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "none" => Ok(DeliveryGuarantee::None),
            "at-least-once" => Ok(DeliveryGuarantee::AtLeastOnce),
            "exactly-once" => Ok(DeliveryGuarantee::ExactlyOnce),
            _ => Err(KafkaConnectorError::Config {
                what: format!("unknown delivery-guarantee '{s}'"),
                fix: "use none, at-least-once or exactly-once".into(),
            }),
        }
    }
}

type Serializer<T> = Arc<dyn Fn(&T) -> KafkaRecord + Send + Sync>;

/// Writes records to Kafka. `serialize` turns each record into a [`KafkaRecord`] (value,
/// key, headers, timestamp, and optionally its topic: the per-record topic selector).
/// Stateful with `EXACTLY_ONCE`: give it a `uid`.
pub struct KafkaSink<T> {
    settings: ClientSettings,
    topic: Option<String>,
    serializer: Serializer<T>,
    guarantee: DeliveryGuarantee,
    transactional_id_prefix: Option<String>,
    run: Option<Box<SinkRun>>,
    /// Topics chosen by the serializer that are known to exist (checked once each).
    checked_topics: BTreeSet<String>,
    /// The client those checks use (made at the first topic chosen by the serializer).
    metadata: Option<BaseProducer<Context>>,
}

impl<T> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        KafkaSink {
            settings: self.settings.clone(),
            topic: self.topic.clone(),
            serializer: self.serializer.clone(),
            guarantee: self.guarantee,
            transactional_id_prefix: self.transactional_id_prefix.clone(),
            run: None,
            checked_topics: BTreeSet::new(),
            metadata: None,
        }
    }
}

impl<T> std::fmt::Debug for KafkaSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("guarantee", &self.guarantee)
            .field("properties", &self.settings.properties)
            .finish_non_exhaustive()
    }
}

impl KafkaSink<String> {
    /// A sink writing each string as a record's value.
    pub fn strings() -> Self {
        KafkaSink::builder(|s: &String| KafkaRecord::value(s.as_bytes()))
    }
}

impl<T> KafkaSink<T> {
    pub fn builder(serialize: impl Fn(&T) -> KafkaRecord + Send + Sync + 'static) -> Self {
        KafkaSink {
            settings: ClientSettings::default(),
            topic: None,
            serializer: Arc::new(serialize),
            guarantee: DeliveryGuarantee::AtLeastOnce,
            transactional_id_prefix: None,
            run: None,
            checked_topics: BTreeSet::new(),
            metadata: None,
        }
    }

    pub fn bootstrap_servers(self, servers: &str) -> Self {
        self.property("bootstrap.servers", servers)
    }

    /// A librdkafka producer property, passed through (`properties.<name>` works too).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.settings.set(key, value);
        self
    }

    pub fn properties<'a>(mut self, props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (k, v) in props {
            self.settings.set(k, v);
        }
        self
    }

    /// The topic of records whose serializer names none.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.to_string());
        self
    }

    pub fn delivery_guarantee(mut self, g: DeliveryGuarantee) -> Self {
        self.guarantee = g;
        self
    }

    /// Prefix of the transactional ids (`<prefix>-<subtask>-<n>`); default
    /// `cairn-<uid>`. Two jobs writing to one cluster must use different prefixes.
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.transactional_id_prefix = Some(prefix.to_string());
        self
    }

    /// How long to wait for the cluster (acknowledgements, transactions, metadata)
    /// before the job fails. Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }
}

/// One subtask's producer(s).
enum SinkRun {
    Plain {
        uid: String,
        producer: BaseProducer<Context>,
        checkpointing: bool,
    },
    Transactional(Box<Transactions>),
}

/// Send one record, waiting while the producer's queue is full (backpressure) but never
/// longer than the timeout.
pub(crate) fn send(
    producer: &BaseProducer<Context>,
    settings: &ClientSettings,
    default_topic: Option<&str>,
    r: &WalRecord,
) -> Result<(), KafkaConnectorError> {
    let topic = r
        .topic
        .as_deref()
        .or(default_topic)
        .ok_or_else(|| KafkaConnectorError::Config {
            what: "a record names no topic and the sink has no default topic".into(),
            fix: "call `.topic(...)` on the sink or set the topic in the serializer".into(),
        })?;
    let headers = r.headers();
    let mut started: Option<Instant> = None;
    loop {
        let mut rec = rdkafka::producer::BaseRecord::<[u8], [u8]>::to(topic);
        if let Some(k) = r.key.as_ref().map(|b| b.0.as_slice()) {
            rec = rec.key(k);
        }
        if let Some(v) = r.value.as_ref().map(|b| b.0.as_slice()) {
            rec = rec.payload(v);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        if let Some(h) = &headers {
            rec = rec.headers(h.clone());
        }
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                let since = *started.get_or_insert_with(Instant::now);
                if since.elapsed() >= settings.timeout {
                    return Err(settings.unreachable(format!(
                        "the producer's queue stayed full for {} ms writing to topic '{topic}'",
                        settings.timeout.as_millis()
                    )));
                }
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(settings.error(format!("writing a record to topic '{topic}'"), e)),
        }
    }
}

/// Wait until every record sent is acknowledged (or fail naming the first that was not).
pub(crate) fn flush(
    producer: &BaseProducer<Context>,
    settings: &ClientSettings,
    uid: &str,
) -> Result<(), KafkaConnectorError> {
    let flushed = producer.flush(settings.timeout);
    // A record that failed meanwhile says more than the flush's timeout.
    producer.poll(Duration::ZERO);
    check_health(producer, settings, uid)?;
    flushed.map_err(|e| {
        if crate::client::reachable(producer.client(), settings) {
            KafkaConnectorError::Client {
                doing: format!(
                    "kafka sink '{uid}': {} records were not acknowledged within {} ms although the brokers answer \
                     (check the broker's log and the topics' partition leaders, or raise the connector's timeout)",
                    producer.in_flight_count(),
                    settings.timeout.as_millis()
                ),
                cause: e,
            }
        } else {
            settings.error(format!("kafka sink '{uid}': waiting for acknowledgements"), e)
        }
    })
}

pub(crate) fn check_health(
    producer: &BaseProducer<Context>,
    settings: &ClientSettings,
    uid: &str,
) -> Result<(), KafkaConnectorError> {
    let health = &producer.context().health;
    if let Some(f) = health.take_failure() {
        return Err(if f.contains("Authorization") || f.contains("authoriz") {
            KafkaConnectorError::NotAuthorized {
                resource: format!("kafka sink '{uid}'"),
                operation: "write".into(),
                cause: f,
            }
        } else {
            KafkaConnectorError::Config {
                what: format!("kafka sink '{uid}': {f}"),
                fix: "check the topic, its permissions and the brokers".into(),
            }
        });
    }
    if let Some(down) = health.down_for() {
        // librdkafka says when brokers go down, not when they come back: ask.
        if down >= settings.timeout && !crate::client::reachable(producer.client(), settings) {
            return Err(settings.unreachable(format!(
                "kafka sink '{uid}' lost every broker {} ms ago",
                down.as_millis()
            )));
        }
    }
    Ok(())
}

impl<T: Send + 'static> KafkaSink<T> {
    fn wal_record(&self, r: &StreamRecord<T>) -> WalRecord {
        let mut rec = (self.serializer)(&r.value);
        // The stream record's event time, unless it has none or is the end of time
        // (records emitted by end-of-input timers), which Kafka would reject.
        if rec.timestamp.is_none() && r.timestamp != NO_TIMESTAMP && (0..MAX_WATERMARK).contains(&r.timestamp) {
            rec.timestamp = Some(r.timestamp);
        }
        WalRecord::from(rec)
    }

    /// A topic the serializer chose must exist: say so at its first record, naming it,
    /// rather than after the delivery timeout.
    fn check_selected_topics(&mut self, records: &[WalRecord], uid: &str) -> OpResult {
        for topic in records.iter().filter_map(|r| r.topic.as_deref()) {
            if self.checked_topics.contains(topic) {
                continue;
            }
            if self.metadata.is_none() {
                let config = self.settings.client_config(&[], &[])?;
                self.metadata = Some(
                    config
                        .create_with_context(Context::default())
                        .map_err(|e| self.settings.error("creating the producer", e))?,
                );
            }
            if let Some(client) = &self.metadata {
                partitions_of(client.client(), &self.settings, topic)
                    .map_err(|e| format!("kafka sink '{uid}' (topic chosen by the serializer): {e}"))?;
            }
            self.checked_topics.insert(topic.to_string());
        }
        Ok(())
    }
}

impl<T: Send + 'static> Sink<T> for KafkaSink<T> {
    fn stateful(&self) -> bool {
        self.guarantee == DeliveryGuarantee::ExactlyOnce
    }

    fn open(&mut self, ctx: &mut SinkContext<'_>) -> OpResult {
        let uid = ctx.info.uid.clone();
        // The default topic must exist and be writable: say so now, not at the first record.
        let probe_config = self.settings.client_config(&[], &[])?;
        if let Some(topic) = &self.topic {
            let probe: BaseProducer<Context> = probe_config
                .create_with_context(Context::default())
                .map_err(|e| self.settings.error("creating the producer", e))?;
            partitions_of(probe.client(), &self.settings, topic).map_err(|e| format!("kafka sink '{uid}': {e}"))?;
        }
        let run = match self.guarantee {
            DeliveryGuarantee::None | DeliveryGuarantee::AtLeastOnce => {
                let config = self.settings.client_config(
                    &[
                        ("client.id", format!("cairn-{uid}-{}", ctx.info.subtask)),
                        ("linger.ms", "5".into()),
                        ("message.timeout.ms", self.settings.timeout.as_millis().to_string()),
                    ],
                    &[],
                )?;
                let producer: BaseProducer<Context> = config
                    .create_with_context(Context::default())
                    .map_err(|e| self.settings.error("creating the producer", e))?;
                SinkRun::Plain {
                    uid: uid.clone(),
                    producer,
                    checkpointing: ctx.checkpointing,
                }
            }
            DeliveryGuarantee::ExactlyOnce => {
                let prefix = self
                    .transactional_id_prefix
                    .clone()
                    .unwrap_or_else(|| format!("cairn-{uid}"));
                let marker_topic = self.topic.clone().ok_or_else(|| KafkaConnectorError::Config {
                    what: format!("kafka sink '{uid}' with exactly-once delivery has no default topic"),
                    fix: "call `.topic(...)`: exactly-once records each transaction's checkpoint in the \
                          consumer group offsets of that topic's partition 0"
                        .into(),
                })?;
                SinkRun::Transactional(Box::new(Transactions::open(
                    &self.settings,
                    ctx,
                    &uid,
                    &prefix,
                    &marker_topic,
                    self.topic.as_deref(),
                )?))
            }
        };
        self.run = Some(Box::new(run));
        Ok(())
    }

    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        let mut run = self.run.take().ok_or("kafka sink: write before open")?;
        let records: Vec<WalRecord> = batch.iter().map(|r| self.wal_record(r)).collect();
        let result = (|| -> OpResult {
            match run.as_mut() {
                SinkRun::Plain { uid, producer, .. } => {
                    self.check_selected_topics(&records, uid)?;
                    for r in &records {
                        send(producer, &self.settings, self.topic.as_deref(), r)?;
                    }
                    producer.poll(Duration::ZERO);
                    check_health(producer, &self.settings, uid)?;
                    Ok(())
                }
                SinkRun::Transactional(txns) => {
                    self.check_selected_topics(&records, txns.uid())?;
                    txns.write(&self.settings, records).map_err(Into::into)
                }
            }
        })();
        self.run = Some(run);
        result
    }

    fn snapshot_state(&mut self, ctx: &mut SinkContext<'_>, checkpoint_id: u64) -> OpResult {
        let uid = ctx.info.uid.clone();
        match self.run.as_deref_mut().ok_or("kafka sink: snapshot before open")? {
            SinkRun::Plain { producer, .. } => {
                if self.guarantee == DeliveryGuarantee::AtLeastOnce {
                    flush(producer, &self.settings, &uid)?;
                }
                Ok(())
            }
            SinkRun::Transactional(txns) => txns.pre_commit(&self.settings, ctx, checkpoint_id).map_err(Into::into),
        }
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        match self.run.as_deref_mut() {
            Some(SinkRun::Transactional(txns)) => txns.commit_up_to(&self.settings, checkpoint_id).map_err(Into::into),
            _ => Ok(()),
        }
    }

    fn end_input(&mut self, ctx: &mut SinkContext<'_>) -> OpResult {
        let uid = ctx.info.uid.clone();
        match self.run.as_deref_mut().ok_or("kafka sink: end of input before open")? {
            SinkRun::Plain {
                producer,
                checkpointing,
                ..
            } => {
                // With checkpoints, at-least-once is kept by the final checkpoint's flush;
                // without, the records are at least handed over before the job ends.
                if !*checkpointing || self.guarantee == DeliveryGuarantee::None {
                    flush(producer, &self.settings, &uid)?;
                }
                Ok(())
            }
            SinkRun::Transactional(txns) => {
                if !ctx.checkpointing {
                    txns.commit_current(&self.settings)?;
                }
                Ok(())
            }
        }
    }

    fn close(&mut self) -> OpResult {
        if let Some(run) = self.run.take() {
            match *run {
                SinkRun::Plain { producer, .. } => {
                    let _ = producer.flush(Duration::from_secs(5).min(self.settings.timeout));
                }
                SinkRun::Transactional(txns) => txns.close(),
            }
        }
        Ok(())
    }
}
