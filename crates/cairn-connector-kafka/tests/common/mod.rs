//! Helpers of the Kafka tests: the broker (from `CAIRN_KAFKA_BOOTSTRAP`, started by
//! `.ci/kafka/broker.sh`), topics, producing and reading records, and running jobs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use cairn::config::{ClaimMode, Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, JobClient, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn_connector_kafka::rdkafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

/// The broker's address, or `None` (test skipped, with a message) when no broker was
/// started. In CI (`CAIRN_REQUIRE_KAFKA=1`) a missing broker fails the test.
pub fn broker() -> Option<String> {
    match std::env::var("CAIRN_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            if std::env::var_os("CAIRN_REQUIRE_KAFKA").is_some() {
                panic!("CAIRN_REQUIRE_KAFKA is set but CAIRN_KAFKA_BOOTSTRAP is not: start a broker with .ci/kafka/broker.sh");
            }
            eprintln!(
                "SKIPPED: no Kafka broker (CAIRN_KAFKA_BOOTSTRAP is not set); run the tests with \
                 `bash .ci/kafka/broker.sh run cargo test -p cairn-connector-kafka`"
            );
            None
        }
    }
}

/// A topic name unique to this test run.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Runs a future to completion on this thread (the admin client's calls are futures;
/// the connectors themselves use no async runtime).
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = pin!(f);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "admin operation did not finish in 60 s");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin = admin(bootstrap);
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = block_on(admin.create_topics(
        [&t],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("create topics");
    for res in r {
        res.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
    // Wait until the topic's metadata is there.
    let consumer = consumer(bootstrap, "read_uncommitted");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if md
                .topics()
                .first()
                .is_some_and(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn add_partitions(bootstrap: &str, topic: &str, total: usize) {
    let admin = admin(bootstrap);
    let p = NewPartitions::new(topic, total);
    let r = block_on(admin.create_partitions([&p], &AdminOptions::new())).expect("create partitions");
    for res in r {
        res.unwrap_or_else(|(t, e)| panic!("cannot add partitions to {t}: {e}"));
    }
}

pub fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        // Retries keep the order and write no record twice (tests compare orders).
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Write `values` to one partition (with the record timestamps given, if any), and wait
/// until they are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, partition: i32, values: &[(String, Option<i64>)]) {
    let p = producer(bootstrap);
    for (v, ts) in values {
        let mut r = BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(v.as_str());
        if let Some(ts) = ts {
            r = r.timestamp(*ts);
        }
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("records acknowledged");
}

pub fn consumer(bootstrap: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("cairn-test-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer")
}

/// A record as read back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: String,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Everything in `topic` now (up to its end offsets), read with `isolation`
/// (`read_committed` or `read_uncommitted`), in partition then offset order.
pub fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Vec<Read> {
    let c = consumer(bootstrap, isolation);
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    for p in &parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        if hi > lo {
            tpl.add_partition_offset(topic, *p, Offset::Offset(lo)).unwrap();
            open.insert(*p, hi);
        }
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return out;
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end: {open:?} left"
        );
        match c.poll(Duration::from_millis(100)) {
            None => {}
            // read_committed stops at the last stable offset, which reaches the end only
            // once the commit markers are written: the broker writes them after the
            // producer's commit returned. So the end is where the position reaches it.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p)))
                if position(&c, topic, p) >= open.get(&p).copied().unwrap_or(0) =>
            {
                open.remove(&p);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    timestamp: m.timestamp().to_millis(),
                    headers,
                });
                if open.get(&m.partition()).is_some_and(|hi| m.offset() + 1 >= *hi) {
                    open.remove(&m.partition());
                }
            }
        }
    }
    out.sort();
    out
}

/// The consumer's position in `topic` partition `p` (-1 if it has none).
fn position(c: &BaseConsumer, topic: &str, p: i32) -> i64 {
    match c
        .position()
        .ok()
        .and_then(|tpl| tpl.find_partition(topic, p).map(|e| e.offset()))
    {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    }
}

pub fn values(reads: &[Read]) -> Vec<String> {
    let mut v: Vec<String> = reads.iter().map(|r| r.value.clone()).collect();
    v.sort();
    v
}

/// The offsets `group` committed for `topic`'s partitions.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    for (k, v) in pairs {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    h
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(&format!("cairn-kafka-{name}")));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A job environment: parallelism, optional restore path, configuration keys.
pub fn env(parallelism: u32, restore: Option<&Path>, config: &[(&str, String)]) -> StreamEnv {
    let mut c = Configuration::new();
    c.set("parallelism.default", &parallelism.to_string()).unwrap();
    for (k, v) in config {
        c.set(k, v).unwrap();
    }
    StreamEnv::with_startup(StartupOptions {
        config: c,
        restore_path: restore.map(Path::to_path_buf),
        allow_non_restored_state: false,
        claim_mode: ClaimMode::NoClaim,
        ..Default::default()
    })
}

/// Wait (with a deadline) until `cond` holds.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn savepoint(client: &JobClient, target: &Path, format: SnapshotFormat, then: AfterSavepoint) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(target.to_path_buf()),
                format,
                then,
            },
            None,
        )
        .expect("savepoint accepted");
    match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

/// Records `"<partition>:<i>"` for `i` in `range`, one partition each.
pub fn numbered(partition: i32, range: std::ops::Range<u32>) -> Vec<(String, Option<i64>)> {
    range.map(|i| (format!("{partition}:{i}"), None)).collect()
}

/// Parse `"<partition>:<i>"`.
pub fn parse(v: &str) -> (i32, u32) {
    let (p, i) = v.split_once(':').expect("p:i");
    (p.parse().unwrap(), i.parse().unwrap())
}
