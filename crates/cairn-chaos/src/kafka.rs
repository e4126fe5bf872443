//! The Kafka-in, Kafka-out pipeline of the chaos job (cargo feature `kafka`): a bounded
//! `KafkaSource` over an input topic the harness fills, a throttle, a running count and
//! sum per key in keyed state (with a total per key at the end of input), and an
//! exactly-once `KafkaSink`. The harness reads the output topic with
//! `isolation.level=read_committed` and compares it with [`expected_lines`].
//!
//! Input record `i` of `0..events` is the text `i`, written to partition `i % 2` in index
//! order; its key is `partition * keys + (i / 2) % keys`, so every key lives in one
//! partition and sees its records in offset order: even the running sums are
//! deterministic.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cairn::kafka::rdkafka;
use cairn::kafka::{DeliveryGuarantee, KafkaRecord, KafkaSink, KafkaSource};
use cairn::prelude::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::workload::{splitmix64, VALUE_MOD};

/// Partitions of the input topic (and parallelism of the source).
pub const PARTITIONS: u32 = 2;

/// What the Kafka pipeline reads and where it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaWorkload {
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    /// Prefix of the sink's transactional ids.
    pub prefix: String,
    pub events: u64,
    /// Keys per partition.
    pub keys: u64,
}

impl KafkaWorkload {
    pub fn partition(&self, i: u64) -> i32 {
        (i % u64::from(PARTITIONS)) as i32
    }

    pub fn key(&self, i: u64) -> u64 {
        let p = i % u64::from(PARTITIONS);
        p * self.keys + (i / u64::from(PARTITIONS)) % self.keys
    }

    pub fn value(&self, i: u64) -> u64 {
        splitmix64(i) % VALUE_MOD
    }

    /// The job's flags for this workload.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (k, v) in [
            ("--kafka-bootstrap", self.bootstrap.clone()),
            ("--kafka-input", self.input.clone()),
            ("--kafka-output", self.output.clone()),
            ("--kafka-prefix", self.prefix.clone()),
            ("--kafka-events", self.events.to_string()),
            ("--kafka-keys", self.keys.to_string()),
        ] {
            a.push(k.to_string());
            a.push(v);
        }
        a
    }
}

/// Output line of one input record.
pub fn running_line(key: u64, index: u64, count: u64, sum: u64) -> String {
    format!("k {key} {index} {count} {sum}")
}

/// Output line of a key's total, at the end of input.
pub fn total_line(key: u64, count: u64, sum: u64) -> String {
    format!("K {key} {count} {sum}")
}

/// What the job must commit, sorted (computed in plain Rust).
pub fn expected_lines(w: &KafkaWorkload) -> Vec<String> {
    let mut lines = Vec::with_capacity(w.events as usize);
    let mut totals: HashMap<u64, (u64, u64)> = HashMap::new();
    for i in 0..w.events {
        let t = totals.entry(w.key(i)).or_default();
        t.0 += 1;
        t.1 += w.value(i);
        lines.push(running_line(w.key(i), i, t.0, t.1));
    }
    for (key, (count, sum)) in totals {
        lines.push(total_line(key, count, sum));
    }
    lines.sort_unstable();
    lines
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Create `topic` with `partitions` partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in block_on(admin.create_topics([&t], &opts)).map_err(|e| format!("creating topic {topic}: {e}"))? {
        r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Create the input topic and write the input.
pub fn write_input(w: &KafkaWorkload) -> Result<(), String> {
    create_topic(&w.bootstrap, &w.input, PARTITIONS as i32)?;
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &w.bootstrap)
        .set("linger.ms", "20")
        // A retried batch must not land after the next one: the oracle relies on
        // offset order being index order (and on no record written twice).
        .set("enable.idempotence", "true")
        .create()
        .map_err(|e| format!("kafka producer: {e}"))?;
    for i in 0..w.events {
        let v = i.to_string();
        let mut r = BaseRecord::<(), str>::to(&w.input)
            .partition(w.partition(i))
            .payload(v.as_str());
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))
        .map_err(|e| format!("writing the input topic {}: {e}", w.input))?;
    // A record whose delivery failed is dropped silently by the producer: count them.
    let mut written = 0;
    for part in 0..PARTITIONS as i32 {
        let (lo, hi) = p
            .client()
            .fetch_watermarks(&w.input, part, Duration::from_secs(10))
            .map_err(|e| format!("offsets of the input topic {}: {e}", w.input))?;
        written += (hi - lo) as u64;
    }
    if written != w.events {
        return Err(format!(
            "the input topic {} holds {written} records, {} were written",
            w.input, w.events
        ));
    }
    Ok(())
}

/// Every value of `topic` up to its current end, read with `read_committed`.
pub fn read_committed(bootstrap: &str, topic: &str) -> Result<Vec<String>, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("cairn-chaos-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| format!("kafka consumer: {e}"))?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    for p in md.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        let (lo, hi) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .map_err(|e| format!("offsets of {topic}: {e}"))?;
        if hi > lo {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))
                .map_err(|e| e.to_string())?;
            open.insert(p.id(), hi);
        }
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("reading {topic} did not reach its end in 120 s"));
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                // The end of what is readable is the last stable offset, which reaches the
                // end offset only once the broker wrote the commit markers (after the
                // producer's commit returned): read on until the position is there.
                let at = match c
                    .position()
                    .ok()
                    .and_then(|t| t.find_partition(topic, p).map(|e| e.offset()))
                {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                };
                if open.get(&p).is_some_and(|hi| at >= *hi) {
                    open.remove(&p);
                }
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            Some(Ok(m)) => {
                if open.get(&m.partition()).is_some_and(|hi| m.offset() + 1 >= *hi) {
                    open.remove(&m.partition());
                }
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Running count and sum per key; a total at the end of input.
#[derive(Clone, Default)]
struct Running {
    totals: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction<u64, (u64, u64), String> for Running {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.totals = Some(ctx.value_state(ValueStateDescriptor::new("totals"))?);
        Ok(())
    }

    fn process_element(&mut self, (index, value): (u64, u64), ctx: &mut KeyedContext<'_, u64, String>) -> OpResult {
        crate::job::mark_first_record();
        let state = self.totals.as_ref().ok_or("state not registered")?;
        let (mut count, mut sum) = state.value(ctx)?.unwrap_or((0, 0));
        count += 1;
        sum += value;
        state.update(ctx, &(count, sum))?;
        if count == 1 {
            ctx.register_event_time_timer(i64::MAX)?;
        }
        let key = *ctx.key();
        ctx.collect(running_line(key, index, count, sum));
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, String>) -> OpResult {
        crate::job::mark_end_of_input();
        let state = self.totals.as_ref().ok_or("state not registered")?;
        let (count, sum) = state.value(ctx)?.unwrap_or((0, 0));
        let key = *ctx.key();
        ctx.collect(total_line(key, count, sum));
        Ok(())
    }
}

/// Add the Kafka pipeline to the job (`rate`: records per second per source subtask, 0: unlimited).
pub fn build(env: &StreamEnv, w: &KafkaWorkload, rate: u64) {
    let w2 = w.clone();
    let source = KafkaSource::builder(|m: &cairn::kafka::KafkaMessage<'_>| {
        let text = std::str::from_utf8(m.value().unwrap_or_default()).map_err(|e| e.to_string())?;
        text.parse::<u64>().map_err(|e| format!("'{text}': {e}"))
    })
    .bootstrap_servers(&w.bootstrap)
    .topics([&w.input])
    .bounded()
    .timeout(Duration::from_secs(30));
    let sink = KafkaSink::builder(|line: &String| KafkaRecord::value(line.as_bytes()))
        .bootstrap_servers(&w.bootstrap)
        .topic(&w.output)
        .transactional_id_prefix(&w.prefix)
        .delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
        .timeout(Duration::from_secs(30));
    env.source_with_watermarks(source, WatermarkStrategy::no_watermarks())
        .set_parallelism(PARTITIONS)
        .uid("chaos-kafka-in")
        .name("kafka in")
        .process(crate::job::Throttle::new(rate))
        .set_parallelism(PARTITIONS)
        .uid("chaos-kafka-throttle")
        .name("throttle")
        .map(move |i: u64| (i, w2.value(i)))
        .set_parallelism(PARTITIONS)
        .name("value")
        .key_by({
            let w = w.clone();
            move |r: &(u64, u64)| w.key(r.0)
        })
        .process(Running::default())
        .uid("chaos-kafka-running")
        .name("running count (kafka)")
        .sink(sink)
        .uid("chaos-kafka-out")
        .name("kafka out");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_their_partition() {
        let w = KafkaWorkload {
            bootstrap: String::new(),
            input: String::new(),
            output: String::new(),
            prefix: String::new(),
            events: 100,
            keys: 7,
        };
        for i in 0..100 {
            assert_eq!(w.key(i) / w.keys, i % 2);
        }
        assert_eq!(expected_lines(&w).len(), 100 + 14);
    }
}
