//! KafkaSource against a real broker: offsets in checkpoints and savepoints, rescaling,
//! starting offsets, discovery, bounded mode, watermarks and errors.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn::coordinator::control::{
    AfterSavepoint, CheckpointRequestKind, OperationStatus, SnapshotFormat, SnapshotStatus,
};
use cairn::prelude::*;
use cairn_connector_kafka::{DeserializationFailure, KafkaSource, OffsetResetStrategy, StartingOffsets};
use common::*;

/// Per partition, the record numbers in the order one run emitted them.
fn by_partition(values: &[String]) -> BTreeMap<i32, Vec<u32>> {
    let mut m: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for v in values {
        let (p, i) = parse(v);
        m.entry(p).or_default().push(i);
    }
    m
}

fn source(bootstrap: &str, topic: &str) -> KafkaSource<String> {
    KafkaSource::strings()
        .bootstrap_servers(bootstrap)
        .topics([topic])
        .timeout(Duration::from_secs(20))
}

/// Run an unbounded job until it emitted `want` records, then stop it with a savepoint.
fn run_until(
    bootstrap: &str,
    topic: &str,
    parallelism: u32,
    restore: Option<&std::path::Path>,
    want: usize,
    target: &std::path::Path,
    format: SnapshotFormat,
) -> (Vec<String>, std::path::PathBuf, Vec<u32>) {
    let env = env(parallelism, restore, &[]);
    let (sink, out) = CollectSink::new();
    env.source(source(bootstrap, topic))
        .uid("kafka-in")
        .map(|v: String| v)
        .sink(sink);
    let job = env.execute_async("kafka rescale").unwrap();
    let client = job.client();
    wait_until(&format!("{want} records arrived"), 60, || out.values().len() >= want);
    let sp = savepoint(&client, target, format, AfterSavepoint::Stop { drain: false });
    job.wait().unwrap();
    let parallelisms = vec![parallelism];
    (out.values(), sp, parallelisms)
}

#[test]
fn offsets_survive_savepoints_and_rescaling_2_to_3_to_1() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-rescale");
    create_topic(&b, &topic, 4);
    let target = temp_dir("rescale");
    let batch = |round: u32| {
        for p in 0..4 {
            produce(&b, &topic, p, &numbered(p, round * 500..(round + 1) * 500));
        }
    };
    batch(0);
    let (out1, sp1, _) = run_until(&b, &topic, 2, None, 2000, &target, SnapshotFormat::Canonical);
    batch(1);
    let (out2, sp2, _) = run_until(&b, &topic, 3, Some(&sp1), 2000, &target, SnapshotFormat::Native);
    batch(2);
    let (out3, _sp3, _) = run_until(
        &b,
        &topic,
        1,
        Some(&sp2.join("_metadata")),
        2000,
        &target,
        SnapshotFormat::Native,
    );
    // Each run read exactly the records written after the previous savepoint: the
    // offsets were restored exactly, nothing lost, nothing read twice.
    for (round, out) in [&out1, &out2, &out3].into_iter().enumerate() {
        let round = round as u32;
        let got = by_partition(out);
        assert_eq!(got.len(), 4, "round {round}: every partition was read");
        for (p, seq) in got {
            let want: Vec<u32> = (round * 500..(round + 1) * 500).collect();
            // Per partition in order, every record once.
            assert_eq!(seq, want, "round {round} partition {p}");
        }
    }
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn offsets_survive_a_checkpoint_restore_and_are_committed_to_the_group_when_it_completes() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-chk");
    let group = unique("cairn-src-group");
    create_topic(&b, &topic, 2);
    for p in 0..2 {
        produce(&b, &topic, p, &numbered(p, 0..300));
    }
    let dir = temp_dir("chk");
    let config = [
        ("execution.checkpointing.dir", dir.display().to_string()),
        ("execution.checkpointing.interval", "1h".to_string()),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION".to_string(),
        ),
    ];
    let env1 = env(2, None, &config);
    let (sink, out) = CollectSink::new();
    env1.source(source(&b, &topic).group_id(&group))
        .uid("kafka-in")
        .sink(sink);
    let job = env1.execute_async("kafka checkpoint").unwrap();
    let client = job.client();
    wait_until("600 records arrived", 60, || out.values().len() >= 600);
    let op = client.trigger_checkpoint(CheckpointRequestKind::Full, None).unwrap();
    let chk_id = match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed {
            checkpoint_id: Some(id),
            ..
        }) => id,
        other => panic!("checkpoint did not complete: {other:?}"),
    };
    // Committed back for monitoring once the checkpoint completed.
    wait_until("the offsets were committed to the group", 30, || {
        committed(&b, &group, &topic, 2) == vec![Some(300), Some(300)]
    });
    client.cancel().unwrap();
    let r1 = job.wait();
    assert!(r1.is_err() || r1.is_ok());
    let chk = dir.join(client.info().job_id).join(format!("chk-{chk_id}"));
    assert!(chk.join("_metadata").exists(), "{}", chk.display());
    for p in 0..2 {
        produce(&b, &topic, p, &numbered(p, 300..450));
    }
    let env2 = env(2, Some(&chk), &[]);
    let (sink, out2) = CollectSink::new();
    env2.source(source(&b, &topic)).uid("kafka-in").sink(sink);
    let job = env2.execute_async("kafka restored").unwrap();
    let client = job.client();
    wait_until("300 records arrived", 60, || out2.values().len() >= 300);
    std::thread::sleep(Duration::from_millis(300));
    client.cancel().unwrap();
    let _ = job.wait();
    let got = by_partition(&out2.values());
    for p in 0..2 {
        assert_eq!(
            got[&p],
            (300..450).collect::<Vec<u32>>(),
            "partition {p} continues after the checkpoint"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn starting_offsets_latest_timestamp_and_committed() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-start");
    create_topic(&b, &topic, 1);
    let early: Vec<(String, Option<i64>)> = (0..10)
        .map(|i| (format!("0:{i}"), Some(1_000 + i64::from(i))))
        .collect();
    let late: Vec<(String, Option<i64>)> = (10..20)
        .map(|i| (format!("0:{i}"), Some(5_000 + i64::from(i))))
        .collect();
    produce(&b, &topic, 0, &early);
    produce(&b, &topic, 0, &late);

    let bounded = |s: StartingOffsets, group: Option<&str>| {
        let env = env(1, None, &[]);
        let (sink, out) = CollectSink::new();
        let mut src = source(&b, &topic).starting_offsets(s).bounded();
        if let Some(g) = group {
            src = src.group_id(g);
        }
        env.source(src).uid("kafka-in").sink(sink);
        env.execute("start").unwrap();
        by_partition(&out.values()).remove(&0).unwrap_or_default()
    };
    assert_eq!(bounded(StartingOffsets::Earliest, None), (0..20).collect::<Vec<_>>());
    assert_eq!(bounded(StartingOffsets::Latest, None), Vec::<u32>::new());
    assert_eq!(
        bounded(StartingOffsets::Timestamp(5_000), None),
        (10..20).collect::<Vec<_>>()
    );
    // Committed offsets: none yet, so the reset strategy decides; then from the commit.
    let group = unique("cairn-src-start-group");
    assert_eq!(
        bounded(StartingOffsets::Committed(OffsetResetStrategy::Latest), Some(&group)),
        Vec::<u32>::new()
    );
    {
        let mut tpl = cairn_connector_kafka::rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, cairn_connector_kafka::rdkafka::Offset::Offset(15))
            .unwrap();
        let c: cairn_connector_kafka::rdkafka::consumer::BaseConsumer =
            cairn_connector_kafka::rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", &group)
                .create()
                .unwrap();
        use cairn_connector_kafka::rdkafka::consumer::Consumer;
        c.commit(&tpl, cairn_connector_kafka::rdkafka::consumer::CommitMode::Sync)
            .unwrap();
    }
    assert_eq!(
        bounded(StartingOffsets::Committed(OffsetResetStrategy::Earliest), Some(&group)),
        (15..20).collect::<Vec<_>>()
    );
    // Committed offsets without a group are a clear error.
    let env = env(1, None, &[]);
    env.source(
        source(&b, &topic)
            .starting_offsets(StartingOffsets::Committed(OffsetResetStrategy::Earliest))
            .bounded(),
    )
    .uid("kafka-in")
    .sink(DiscardSink);
    let err = env.execute("no group").unwrap_err().to_string();
    assert!(
        err.contains("need a consumer group") && err.contains("group_id"),
        "{err}"
    );
}

#[test]
fn bounded_mode_ends_the_job_with_a_final_checkpoint() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-bounded");
    create_topic(&b, &topic, 3);
    for p in 0..3 {
        produce(&b, &topic, p, &numbered(p, 0..200));
    }
    let dir = temp_dir("bounded");
    let env = env(
        2,
        None,
        &[
            ("execution.checkpointing.dir", dir.display().to_string()),
            ("execution.checkpointing.interval", "1h".to_string()),
        ],
    );
    let (sink, out) = CollectSink::new();
    env.source(source(&b, &topic).bounded()).uid("kafka-in").sink(sink);
    let r = env.execute("bounded").unwrap();
    // Records written after the start are not read (they are past the stop offsets).
    produce(&b, &topic, 0, &numbered(0, 200..210));
    let got = by_partition(&out.values());
    for p in 0..3 {
        assert_eq!(got[&p], (0..200).collect::<Vec<u32>>());
    }
    assert!(
        r.checkpoints.iter().any(|c| c.status == SnapshotStatus::Completed),
        "a final checkpoint completed: {:?}",
        r.checkpoints
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_savepoint_of_an_unbounded_run_restored_bounded_reads_to_the_end_offsets_and_ends() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-to-bounded");
    create_topic(&b, &topic, 2);
    for p in 0..2 {
        produce(&b, &topic, p, &numbered(p, 0..300));
    }
    let target = temp_dir("to-bounded");
    let (first, sp, _) = run_until(&b, &topic, 2, None, 300, &target, SnapshotFormat::Canonical);
    for p in 0..2 {
        produce(&b, &topic, p, &numbered(p, 300..400));
    }
    // The restored partitions had no end: now they end where they are at the restore.
    let env = env(1, Some(&sp), &[]);
    let (sink, out) = CollectSink::new();
    env.source(source(&b, &topic).bounded())
        .uid("kafka-in")
        .map(|v: String| v)
        .sink(sink);
    let job = env.execute_async("restored bounded").unwrap();
    let client = job.client();
    wait_until("the restored bounded job ended by itself", 120, || {
        client.info().status.is_terminal()
    });
    job.wait().unwrap();
    let mut got = by_partition(&first);
    for (p, seq) in by_partition(&out.values()) {
        got.entry(p).or_default().extend(seq);
    }
    for p in 0..2 {
        assert_eq!(
            got[&p],
            (0..400).collect::<Vec<u32>>(),
            "partition {p}: every record once, in order"
        );
    }
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn a_topic_pattern_picks_up_new_topics_and_new_partitions() {
    let Some(b) = broker() else { return };
    let base = unique("cairn-pat");
    let first = format!("{base}-a");
    create_topic(&b, &first, 1);
    produce(&b, &first, 0, &numbered(0, 0..50));
    let env = env(2, None, &[]);
    let (sink, out) = CollectSink::new();
    let src = KafkaSource::strings()
        .bootstrap_servers(&b)
        .topic_pattern(&format!("{}-.*", regex_escape(&base)))
        .unwrap()
        .partition_discovery(Some(Duration::from_millis(200)));
    env.source(src).uid("kafka-in").sink(sink);
    let job = env.execute_async("pattern").unwrap();
    let client = job.client();
    wait_until("the first topic's records arrived", 60, || out.values().len() >= 50);
    // A new matching topic, a topic that does not match, and a new partition.
    let second = format!("{base}-b");
    create_topic(&b, &second, 2);
    create_topic(&b, &format!("{base}x-c"), 1);
    produce(&b, &second, 0, &numbered(10, 0..30));
    produce(&b, &second, 1, &numbered(11, 0..30));
    produce(&b, &format!("{base}x-c"), 0, &numbered(99, 0..30));
    add_partitions(&b, &first, 2);
    std::thread::sleep(Duration::from_millis(500));
    produce(&b, &first, 1, &numbered(1, 0..20));
    wait_until("the new topic's and partition's records arrived", 60, || {
        out.values().len() >= 130
    });
    std::thread::sleep(Duration::from_millis(500));
    client.cancel().unwrap();
    let _ = job.wait();
    let got = by_partition(&out.values());
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![0, 1, 10, 11], "{got:?}");
    assert_eq!(
        got[&10],
        (0..30).collect::<Vec<u32>>(),
        "new topics start at the earliest offset"
    );
    assert_eq!(
        got[&1],
        (0..20).collect::<Vec<u32>>(),
        "new partitions start at the earliest offset"
    );
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn an_idle_partition_does_not_hold_back_event_time() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-idle");
    create_topic(&b, &topic, 2);
    // Partition 0 advances through event time while it is read; partition 1 stays
    // empty. (Event time starts at 10 s: a record timestamp of 0 means "now".)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (b, topic, stop) = (b.clone(), topic.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) && i < 3_000 {
                produce(&b, &topic, 0, &[(format!("0:{i}"), Some(10_000 + i * 100))]);
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let env = env(1, None, &[]);
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(
        source(&b, &topic),
        WatermarkStrategy::for_monotonous_timestamps().with_idleness(Duration::from_millis(300)),
    )
    .uid("kafka-in")
    .key_by(|_v: &String| 0u8)
    .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
    .process(CountWindow)
    .uid("windows")
    .sink(sink);
    let job = env.execute_async("idle").unwrap();
    let client = job.client();
    // Windows up to 9 s fire while the job runs, although partition 1 never had a record.
    wait_until("windows fired", 60, || out.values().len() >= 3);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    client.cancel().unwrap();
    let _ = job.wait();
    let got = out.values();
    assert_eq!(
        &got[..3],
        &(0..3).map(|w| (10_000 + w * 1000, 10)).collect::<Vec<(i64, usize)>>()[..]
    );
}

#[derive(Clone)]
struct CountWindow;

impl ProcessWindowFunction<u8, String, (i64, usize)> for CountWindow {
    fn process(
        &mut self,
        _key: &u8,
        window: &TimeWindow,
        elements: Vec<String>,
        out: &mut WindowCollector<'_, (i64, usize)>,
    ) -> OpResult {
        out.collect((window.start, elements.len()));
        Ok(())
    }
}

#[test]
fn deserialization_failures_fail_naming_the_record_or_are_skipped_and_counted() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-src-deser");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, 0, &numbered(0, 0..5));
    {
        let p = producer(&b);
        use cairn_connector_kafka::rdkafka::producer::{BaseRecord, Producer};
        p.send(
            BaseRecord::<(), [u8]>::to(&topic)
                .partition(0)
                .payload(&[0xff, 0xfe][..]),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        p.flush(Duration::from_secs(10)).unwrap();
    }
    produce(&b, &topic, 0, &numbered(0, 5..10));
    let env1 = env(1, None, &[]);
    env1.source(source(&b, &topic).bounded())
        .uid("kafka-in")
        .sink(DiscardSink);
    let err = env1.execute("fail").unwrap_err().to_string();
    assert!(
        err.contains(&format!("topic '{topic}' partition 0 offset 5")) && err.contains("not UTF-8"),
        "{err}"
    );
    let env2 = env(1, None, &[]);
    let (sink, out) = CollectSink::new();
    let src = source(&b, &topic)
        .bounded()
        .on_deserialization_failure(DeserializationFailure::Skip);
    let skipped = src.skipped_records();
    env2.source(src).uid("kafka-in").sink(sink);
    env2.execute("skip").unwrap();
    assert_eq!(by_partition(&out.values())[&0], (0..10).collect::<Vec<u32>>());
    assert_eq!(skipped.load(Ordering::Relaxed), 1);
}

#[test]
fn unreachable_brokers_unknown_topics_and_missing_permissions_fail_with_clear_errors() {
    let Some(b) = broker() else { return };
    let run = |src: KafkaSource<String>| {
        let env = env(1, None, &[]);
        env.source(src).uid("kafka-in").sink(DiscardSink);
        env.execute("errors").unwrap_err().to_string()
    };
    let err = run(KafkaSource::strings()
        .bootstrap_servers("127.0.0.1:1")
        .topics(["t"])
        .timeout(Duration::from_secs(2)));
    assert!(
        err.contains("no broker of bootstrap.servers '127.0.0.1:1' answered within 2000 ms"),
        "{err}"
    );
    let missing = unique("cairn-no-such-topic");
    let err = run(source(&b, &missing).timeout(Duration::from_secs(5)));
    assert!(err.contains(&format!("topic '{missing}' does not exist")), "{err}");
    let err = run(source(&b, "cairn-forbidden").timeout(Duration::from_secs(5)));
    assert!(
        err.contains("not authorized") && err.contains("cairn-forbidden"),
        "{err}"
    );
    let err = run(KafkaSource::strings().topics(["x"]));
    assert!(err.contains("bootstrap.servers is not set"), "{err}");
    let err = KafkaSource::strings().topic_pattern("(").unwrap_err().to_string();
    assert!(err.contains("not a valid regular expression"), "{err}");
}
