//! The Kafka source (Flink's `KafkaSource` model): partitions are splits of a
//! [`SplitSet`], so a subtask reads all its partitions fairly, their offsets are union
//! list state `kafka-source-splits` (in checkpoints and savepoints, dealt evenly on
//! rescale), and watermarks are generated per partition.
//!
//! Offsets are the source's own: the consumer never joins a group (partitions are
//! assigned by the source, not by Kafka) and commits offsets back to `group.id` only when a
//! checkpoint completed, for monitoring; recovery always uses the checkpoint.

mod split;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_connectors::split::{SplitPoll, SplitSet, SplitsState};
use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, SplitProgress, StreamRecord, NO_TIMESTAMP};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::client::{matching_topics, partitions_of, ClientSettings, Context};
use crate::error::KafkaConnectorError;
pub use split::KafkaPartitionSplit;

/// Operator state of the source: the split table (topic, partition, next offset, stop offset).
pub const SPLITS_STATE: &str = "kafka-source-splits";
/// Default interval of partition discovery (unbounded sources).
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How long a partition with nothing to read waits before it is polled again.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// Where a partition starts when the job starts without state (Flink's `OffsetsInitializer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The first offset still in the partition (the default).
    Earliest,
    /// The end of the partition at start: only records written later are read.
    Latest,
    /// The first record whose timestamp is at or after this (epoch ms); the end if none.
    Timestamp(i64),
    /// The offsets `group.id` committed; partitions without one start as `reset` says.
    Committed(OffsetResetStrategy),
}

/// Where a partition without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetResetStrategy {
    Earliest,
    Latest,
}

/// What to do with a record the deserializer rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeserializationFailure {
    /// Fail the job with an error naming topic, partition and offset (the default).
    Fail,
    /// Skip the record and count it ([`KafkaSource::skipped_records`]).
    Skip,
}

/// A consumed record, as the deserializer sees it.
pub struct KafkaMessage<'a> {
    message: &'a BorrowedMessage<'a>,
}

impl KafkaMessage<'_> {
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }
    pub fn value(&self) -> Option<&[u8]> {
        self.message.payload()
    }
    /// Create or log-append time (epoch ms), if the record has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.message.timestamp().to_millis()
    }
    /// The record's headers, in order (a header may have no value).
    pub fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        match self.message.headers() {
            None => Vec::new(),
            Some(h) => h.iter().map(|h| (h.key, h.value)).collect(),
        }
    }
}

type Deserializer<T> = Arc<dyn Fn(&KafkaMessage<'_>) -> Result<T, String> + Send + Sync>;

#[derive(Clone, Debug)]
enum Subscription {
    Topics(Vec<String>),
    Pattern(regex::Regex),
}

/// Reads records from Kafka topics. Build with [`KafkaSource::builder`] (any record
/// type, from a deserializer) or [`KafkaSource::strings`] (UTF-8 values). Give it a `uid`:
/// its offsets are state.
pub struct KafkaSource<T> {
    settings: ClientSettings,
    subscription: Option<Subscription>,
    starting: StartingOffsets,
    bounded: bool,
    discovery: Option<Duration>,
    deserializer: Deserializer<T>,
    on_failure: DeserializationFailure,
    skipped: Arc<AtomicU64>,
    run: Option<Box<Running>>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        KafkaSource {
            settings: self.settings.clone(),
            subscription: self.subscription.clone(),
            starting: self.starting,
            bounded: self.bounded,
            discovery: self.discovery,
            deserializer: self.deserializer.clone(),
            on_failure: self.on_failure,
            skipped: self.skipped.clone(),
            // Every subtask opens its own consumer.
            run: None,
        }
    }
}

impl<T> std::fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("properties", &self.settings.properties)
            .field("subscription", &self.subscription)
            .field("starting", &self.starting)
            .field("bounded", &self.bounded)
            .finish_non_exhaustive()
    }
}

impl KafkaSource<String> {
    /// A source of the records' values as UTF-8 strings (a record without a value is
    /// the empty string; invalid UTF-8 is a deserialization failure).
    pub fn strings() -> Self {
        KafkaSource::builder(|m: &KafkaMessage<'_>| {
            let v = m.value().unwrap_or_default();
            String::from_utf8(v.to_vec()).map_err(|e| format!("value is not UTF-8: {e}"))
        })
    }
}

impl<T> KafkaSource<T> {
    /// A source whose records are `deserialize(message)`; an `Err` is a deserialization
    /// failure (see [`KafkaSource::on_deserialization_failure`]).
    pub fn builder(deserialize: impl Fn(&KafkaMessage<'_>) -> Result<T, String> + Send + Sync + 'static) -> Self {
        KafkaSource {
            settings: ClientSettings::default(),
            subscription: None,
            starting: StartingOffsets::Earliest,
            bounded: false,
            discovery: Some(DEFAULT_DISCOVERY_INTERVAL),
            deserializer: Arc::new(deserialize),
            on_failure: DeserializationFailure::Fail,
            skipped: Arc::new(AtomicU64::new(0)),
            run: None,
        }
    }

    pub fn bootstrap_servers(self, servers: &str) -> Self {
        self.property("bootstrap.servers", servers)
    }

    /// A librdkafka client property, passed through (`properties.<name>` works too).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.settings.set(key, value);
        self
    }

    /// Several properties at once (e.g. every `properties.*` key of a configuration).
    pub fn properties<'a>(mut self, props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (k, v) in props {
            self.settings.set(k, v);
        }
        self
    }

    /// The consumer group offsets are committed to when a checkpoint completes (and
    /// read by [`StartingOffsets::Committed`]). Without one, nothing is committed.
    pub fn group_id(self, group: &str) -> Self {
        self.property("group.id", group)
    }

    /// Read these topics.
    pub fn topics<S: AsRef<str>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.subscription = Some(Subscription::Topics(
            topics.into_iter().map(|t| t.as_ref().to_string()).collect(),
        ));
        self
    }

    /// Read every topic whose whole name matches the regular expression (new matching
    /// topics are found by partition discovery). An invalid expression is an error at start.
    pub fn topic_pattern(mut self, pattern: &str) -> Result<Self, KafkaConnectorError> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| KafkaConnectorError::Config {
            what: format!("topic pattern '{pattern}' is not a valid regular expression: {e}"),
            fix: "fix the pattern (Rust regex syntax, matched against the whole topic name)".into(),
        })?;
        self.subscription = Some(Subscription::Pattern(re));
        Ok(self)
    }

    /// Where partitions start when the job starts without state (default earliest).
    /// A restored job always continues from its snapshot.
    pub fn starting_offsets(mut self, s: StartingOffsets) -> Self {
        self.starting = s;
        self
    }

    /// Stop at the end offsets the partitions had when they were first assigned; the job
    /// ends (with a final checkpoint) when every partition is read to there. No
    /// partition discovery.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// How often to look for new partitions and (with a pattern) new topics; `None` turns
    /// discovery off. Default 30 s. Partitions found later start at their earliest offset.
    pub fn partition_discovery(mut self, interval: Option<Duration>) -> Self {
        self.discovery = interval;
        self
    }

    /// How long to wait for the cluster (metadata, offsets, an unreachable cluster while
    /// running) before the job fails. Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    pub fn on_deserialization_failure(mut self, policy: DeserializationFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Records skipped by [`DeserializationFailure::Skip`] so far, over all subtasks of
    /// this source (a handle shared by its clones).
    pub fn skipped_records(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }
}

/// One subtask's running state.
struct Running {
    uid: String,
    subtask: u32,
    parallelism: u32,
    consumer: Arc<BaseConsumer<Context>>,
    splits: SplitSet<KafkaPartitionSplit>,
    /// Each assigned partition's own queue, split off before it is assigned so that no
    /// record of it reaches the consumer's main queue.
    queues: BTreeMap<(String, i32), PartitionQueue<Context>>,
    next_discovery: Option<Instant>,
    /// Offsets of each checkpoint taken and not yet completed, to commit when it completes.
    to_commit: BTreeMap<u64, Vec<(String, i32, i64)>>,
    commit_offsets: bool,
}

/// The subtask that reads a newly found partition: the same on every subtask, so each
/// takes only its own (partitions of one topic go round robin).
pub fn partition_owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let h = u64::from(cairn_state::hash::murmur3_x86_32(topic.as_bytes(), 0));
    ((h + partition.max(0) as u64) % u64::from(parallelism.max(1))) as u32
}

impl<T> KafkaSource<T> {
    fn describe(&self) -> String {
        match &self.subscription {
            Some(Subscription::Topics(t)) => format!("topics {t:?}"),
            Some(Subscription::Pattern(p)) => format!("topic pattern '{}'", p.as_str()),
            None => "no topics".into(),
        }
    }

    /// Every (topic, partition) the subscription covers now.
    fn current_partitions(&self, run: &Running) -> Result<Vec<(String, i32)>, KafkaConnectorError> {
        let client = run.consumer.client();
        let mut out = Vec::new();
        match self.subscription.as_ref() {
            Some(Subscription::Topics(topics)) => {
                for t in topics {
                    for p in partitions_of(client, &self.settings, t)? {
                        out.push((t.clone(), p));
                    }
                }
            }
            Some(Subscription::Pattern(re)) => {
                for (t, parts) in matching_topics(client, &self.settings, re)? {
                    out.extend(parts.into_iter().map(|p| (t.clone(), p)));
                }
            }
            None => {}
        }
        Ok(out)
    }

    /// Add the partitions this subtask owns that no subtask knows yet, starting at
    /// `starting`, and start fetching them.
    fn discover(&self, run: &mut Running, starting: StartingOffsets) -> Result<(), KafkaConnectorError> {
        let found = self.current_partitions(run)?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in found {
            let id = (topic.clone(), partition);
            if run.splits.is_known(&id) || partition_owner(&topic, partition, run.parallelism) != run.subtask {
                continue;
            }
            let (low, high) = run
                .consumer
                .fetch_watermarks(&topic, partition, self.settings.timeout)
                .map_err(|e| {
                    self.settings.error(
                        format!("reading the offsets of topic '{topic}' partition {partition}"),
                        e,
                    )
                })?;
            let start = self.resolve_start(run, &topic, partition, starting, low, high)?;
            let split = KafkaPartitionSplit {
                topic: topic.clone(),
                partition,
                next_offset: start,
                stop_offset: self.bounded.then_some(high),
            };
            let finished = cairn_connectors::split::SourceSplit::is_finished(&split);
            run.splits.add(split);
            if !finished {
                tpl.add_partition_offset(&topic, partition, Offset::Offset(start))
                    .map_err(|e| self.settings.error("assigning partitions", e))?;
            }
        }
        self.assign(run, &tpl)
    }

    /// Split off the partitions' queues, then start fetching them at the offsets given.
    fn assign(&self, run: &mut Running, tpl: &TopicPartitionList) -> Result<(), KafkaConnectorError> {
        if tpl.count() == 0 {
            return Ok(());
        }
        for e in tpl.elements() {
            let queue = run
                .consumer
                .split_partition_queue(e.topic(), e.partition())
                .ok_or_else(|| KafkaConnectorError::Config {
                    what: format!("cannot read topic '{}' partition {}", e.topic(), e.partition()),
                    fix: "check the topic name".into(),
                })?;
            run.queues.insert((e.topic().to_string(), e.partition()), queue);
        }
        run.consumer
            .incremental_assign(tpl)
            .map_err(|e| self.settings.error("assigning partitions", e))
    }

    fn resolve_start(
        &self,
        run: &Running,
        topic: &str,
        partition: i32,
        starting: StartingOffsets,
        low: i64,
        high: i64,
    ) -> Result<i64, KafkaConnectorError> {
        let one = || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            tpl
        };
        let offset_of = |tpl: &TopicPartitionList| tpl.find_partition(topic, partition).map(|e| e.offset());
        Ok(match starting {
            StartingOffsets::Earliest => low,
            StartingOffsets::Latest => high,
            StartingOffsets::Timestamp(ms) => {
                let mut tpl = one();
                tpl.set_all_offsets(Offset::Offset(ms))
                    .map_err(|e| self.settings.error("looking up offsets by timestamp", e))?;
                let got = run
                    .consumer
                    .offsets_for_times(tpl, self.settings.timeout)
                    .map_err(|e| {
                        self.settings
                            .error(format!("looking up offsets by timestamp in topic '{topic}'"), e)
                    })?;
                match offset_of(&got) {
                    Some(Offset::Offset(o)) => o.clamp(low, high),
                    _ => high,
                }
            }
            StartingOffsets::Committed(reset) => {
                if !self.settings.properties.contains_key("group.id") {
                    return Err(KafkaConnectorError::Config {
                        what: "starting offsets 'committed' need a consumer group".into(),
                        fix: "set `.group_id(...)`".into(),
                    });
                }
                let got = run
                    .consumer
                    .committed_offsets(one(), self.settings.timeout)
                    .map_err(|e| {
                        self.settings
                            .error(format!("reading the committed offsets of topic '{topic}'"), e)
                    })?;
                match offset_of(&got) {
                    Some(Offset::Offset(o)) => o.clamp(low, high),
                    _ => match reset {
                        OffsetResetStrategy::Earliest => low,
                        OffsetResetStrategy::Latest => high,
                    },
                }
            }
        })
    }

    fn fail_if_unhealthy(&self, run: &Running) -> Result<(), KafkaConnectorError> {
        let health = &run.consumer.context().health;
        if let Some(f) = health.take_failure() {
            return Err(KafkaConnectorError::Config {
                what: format!("kafka source '{}': {f}", run.uid),
                fix: "see the cause above".into(),
            });
        }
        if let Some(down) = health.down_for() {
            // librdkafka says when brokers go down, not when they come back: ask.
            if down >= self.settings.timeout && !crate::client::reachable(run.consumer.client(), &self.settings) {
                return Err(self.settings.unreachable(format!(
                    "kafka source '{}' lost every broker {} ms ago",
                    run.uid,
                    down.as_millis()
                )));
            }
        }
        Ok(())
    }
}

/// Read up to `quota` records of one partition.
#[allow(clippy::too_many_arguments)]
fn read_partition<T>(
    settings: &ClientSettings,
    deserializer: &Deserializer<T>,
    on_failure: DeserializationFailure,
    skipped: &AtomicU64,
    split: &mut KafkaPartitionSplit,
    queue: Option<&PartitionQueue<Context>>,
    out: &mut Vec<StreamRecord<T>>,
    quota: usize,
) -> OpResult<SplitPoll> {
    let Some(queue) = queue else {
        return Err(format!(
            "kafka source: topic '{}' partition {} is held but not assigned (a bug)",
            split.topic, split.partition
        )
        .into());
    };
    let mut n = 0;
    while n < quota {
        let Some(polled) = queue.poll(Duration::ZERO) else {
            return Ok(if n > 0 {
                SplitPoll::More
            } else {
                SplitPoll::Idle(IDLE_POLL)
            });
        };
        let message = match polled {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) => {
                // At the end of the partition: everything before the end offset it had
                // when the split was made (its stop offset) has been read or skipped
                // (transaction markers, aborted records).
                if let Some(stop) = split.stop_offset {
                    split.next_offset = split.next_offset.max(stop);
                    return Ok(SplitPoll::Finished);
                }
                return Ok(if n > 0 {
                    SplitPoll::More
                } else {
                    SplitPoll::Idle(IDLE_POLL)
                });
            }
            Err(e) => {
                return Err(settings
                    .error(
                        format!("reading topic '{}' partition {}", split.topic, split.partition),
                        e,
                    )
                    .into())
            }
        };
        let offset = message.offset();
        if let Some(stop) = split.stop_offset {
            if offset >= stop {
                split.next_offset = stop;
                return Ok(SplitPoll::Finished);
            }
        }
        if offset < split.next_offset {
            continue;
        }
        let view = KafkaMessage { message: &message };
        match deserializer(&view) {
            Ok(value) => {
                out.push(StreamRecord {
                    value,
                    timestamp: view.timestamp().unwrap_or(NO_TIMESTAMP),
                });
                n += 1;
            }
            Err(cause) => match on_failure {
                DeserializationFailure::Skip => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
                DeserializationFailure::Fail => {
                    return Err(KafkaConnectorError::Deserialize {
                        topic: split.topic.clone(),
                        partition: split.partition,
                        offset,
                        cause,
                    }
                    .into())
                }
            },
        }
        split.next_offset = offset + 1;
        if split.stop_offset.is_some_and(|stop| split.next_offset >= stop) {
            return Ok(SplitPoll::Finished);
        }
    }
    Ok(SplitPoll::More)
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        if self.subscription.is_none() {
            return Err(KafkaConnectorError::Config {
                what: format!("kafka source '{}' has no topics", ctx.info.uid),
                fix: "call `.topics([...])` or `.topic_pattern(...)`".into(),
            }
            .into());
        }
        let config = self.settings.client_config(
            &[
                ("client.id", format!("cairn-{}-{}", ctx.info.uid, ctx.info.subtask)),
                // librdkafka needs a group for its assignment even though the source
                // never joins one; offsets are committed only to a group the user set.
                ("group.id", format!("cairn-source-{}", ctx.info.uid)),
                (
                    "socket.connection.setup.timeout.ms",
                    self.settings.timeout.as_millis().to_string(),
                ),
            ],
            &[
                // Offsets are the source's state; commits happen only on checkpoint completion.
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                // The end of a partition is how a bounded split knows it is done.
                ("enable.partition.eof", "true".into()),
            ],
        )?;
        let consumer: BaseConsumer<Context> = config
            .create_with_context(Context::default())
            .map_err(|e| self.settings.error("creating the consumer", e))?;
        let splits = SplitSet::open(SPLITS_STATE, ctx)?;
        let mut run = Running {
            uid: ctx.info.uid.clone(),
            subtask: ctx.info.subtask,
            parallelism: ctx.info.parallelism.max(1),
            consumer: Arc::new(consumer),
            splits,
            queues: BTreeMap::new(),
            next_discovery: None,
            to_commit: BTreeMap::new(),
            commit_offsets: self.settings.properties.contains_key("group.id"),
        };
        if self.bounded {
            // A snapshot of an unbounded run, restored into a bounded source: its partitions
            // stop at the end offsets they have now, as partitions found at start do.
            let timeout = self.settings.timeout;
            let consumer = run.consumer.clone();
            for s in run.splits.active_mut().filter(|s| s.stop_offset.is_none()) {
                let (_, high) = consumer.fetch_watermarks(&s.topic, s.partition, timeout).map_err(|e| {
                    self.settings.error(
                        format!(
                            "reading the end offset of topic '{}' partition {}",
                            s.topic, s.partition
                        ),
                        e,
                    )
                })?;
                s.stop_offset = Some(high.max(s.next_offset));
            }
        }
        // Continue the restored partitions where the snapshot says.
        let mut tpl = TopicPartitionList::new();
        for s in run.splits.active() {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.next_offset))
                .map_err(|e| self.settings.error("assigning partitions", e))?;
        }
        self.assign(&mut run, &tpl)?;
        if !run.splits.restored() {
            self.discover(&mut run, self.starting)
                .map_err(|e| format!("kafka source '{}' ({}): {e}", run.uid, self.describe()))?;
        } else if !self.bounded {
            // Partitions created since the snapshot are new: they start at the earliest offset.
            self.discover(&mut run, StartingOffsets::Earliest)
                .map_err(|e| format!("kafka source '{}' ({}): {e}", run.uid, self.describe()))?;
        } else if let Some(Subscription::Topics(topics)) = &self.subscription {
            // A bounded restored source still checks that its topics exist.
            for t in topics {
                partitions_of(run.consumer.client(), &self.settings, t)?;
            }
        }
        if !self.bounded {
            run.next_discovery = self.discovery.map(|d| Instant::now() + d);
        }
        self.run = Some(Box::new(run));
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<T>>, max: usize) -> OpResult<SourceStatus> {
        let mut run = self.run.take().ok_or("kafka source: poll before open")?;
        let result = self.poll_running(&mut run, out, max);
        self.run = Some(run);
        result
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, checkpoint_id: u64) -> OpResult {
        let run = self.run.as_mut().ok_or("kafka source: snapshot before open")?;
        run.splits.snapshot(ctx.state)?;
        if run.commit_offsets {
            let offsets = run
                .splits
                .active()
                .map(|s| (s.topic.clone(), s.partition, s.next_offset))
                .collect();
            run.to_commit.insert(checkpoint_id, offsets);
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        let Some(run) = self.run.as_mut() else { return Ok(()) };
        let Some(offsets) = run.to_commit.remove(&checkpoint_id) else {
            return Ok(());
        };
        // Older checkpoints are subsumed by this one.
        run.to_commit.retain(|c, _| *c > checkpoint_id);
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| self.settings.error("committing offsets", e))?;
        }
        // For monitoring only (recovery uses the checkpoint), so a failed commit never
        // fails the job; it is reported and the next checkpoint commits again.
        if let Err(e) = run.consumer.commit(&tpl, CommitMode::Async) {
            eprintln!(
                "kafka source '{}': committing offsets of checkpoint {checkpoint_id} to the consumer group failed: {e}",
                run.uid
            );
        }
        Ok(())
    }

    fn split_progress(&mut self) -> Option<&mut SplitProgress> {
        self.run.as_mut().map(|r| r.splits.progress())
    }
}

impl<T: Send + 'static> KafkaSource<T> {
    fn poll_running(&self, run: &mut Running, out: &mut Vec<StreamRecord<T>>, max: usize) -> OpResult<SourceStatus> {
        // Serve the consumer's main queue: errors, commit results.
        if let Some(Err(e)) = run.consumer.poll(Duration::ZERO) {
            return Err(self.settings.error(format!("kafka source '{}'", run.uid), e).into());
        }
        self.fail_if_unhealthy(run)?;
        if run.next_discovery.is_some_and(|t| Instant::now() >= t) {
            self.discover(run, StartingOffsets::Earliest).map_err(|e| {
                format!(
                    "kafka source '{}' ({}): partition discovery: {e}",
                    run.uid,
                    self.describe()
                )
            })?;
            run.next_discovery = self.discovery.map(|d| Instant::now() + d);
        }
        let queues = &run.queues;
        let mut done = Vec::new();
        let polled = run.splits.poll(out, max, |split, _, out, quota| {
            let queue = queues.get(&(split.topic.clone(), split.partition));
            let r = read_partition(
                &self.settings,
                &self.deserializer,
                self.on_failure,
                &self.skipped,
                split,
                queue,
                out,
                quota,
            );
            if matches!(r, Ok(SplitPoll::Finished)) {
                done.push((split.topic.clone(), split.partition));
            }
            r
        })?;
        if polled.records > 0 {
            run.consumer.context().health.ok();
        }
        // A finished partition is fetched no more (a bounded source's topic may go on growing).
        if !done.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &done {
                run.queues.remove(&(t.clone(), *p));
                tpl.add_partition(t, *p);
            }
            run.consumer
                .incremental_unassign(&tpl)
                .map_err(|e| self.settings.error("unassigning finished partitions", e))?;
        }
        Ok(match polled.state {
            SplitsState::Active => SourceStatus::More,
            SplitsState::Idle(d) => SourceStatus::Pending(d.min(self.until_discovery(run))),
            SplitsState::Empty if self.bounded => SourceStatus::Finished,
            // Unbounded: wait for partitions that discovery may find (or stay idle).
            SplitsState::Empty => SourceStatus::Pending(Duration::from_millis(50).min(self.until_discovery(run))),
        })
    }

    fn until_discovery(&self, run: &Running) -> Duration {
        run.next_discovery
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_connectors::split::SourceSplit;

    #[test]
    fn partitions_of_a_topic_go_round_robin_and_every_subtask_agrees() {
        for p in [1u32, 2, 3, 7] {
            let owners: Vec<u32> = (0..14).map(|part| partition_owner("orders", part, p)).collect();
            for w in owners.windows(2) {
                assert_eq!((w[0] + 1) % p, w[1], "consecutive partitions, consecutive subtasks");
            }
            assert!(owners.iter().all(|o| *o < p));
        }
        assert_eq!(partition_owner("t", 5, 0), 0, "parallelism 0 is treated as 1");
    }

    #[test]
    fn a_split_is_finished_only_when_bounded_and_read_to_its_stop_offset() {
        let mut s = KafkaPartitionSplit {
            topic: "t".into(),
            partition: 3,
            next_offset: 5,
            stop_offset: None,
        };
        assert!(!s.is_finished());
        s.stop_offset = Some(6);
        assert!(!s.is_finished());
        s.next_offset = 6;
        assert!(s.is_finished());
        assert_eq!(s.id(), ("t".to_string(), 3));
    }
}
