//! KafkaSink against a real broker: exactly-once through transactions (failures between
//! pre-commit and commit, restores, rescaling, aborted records), at-least-once, record
//! contents, and errors.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn::prelude::*;
use cairn::state::operator_state::redistribute;
use cairn::state::OperatorStateStore;
use cairn_connector_kafka::{DeliveryGuarantee, KafkaRecord, KafkaSink};
use common::*;

fn info(uid: &str, subtask: u32, parallelism: u32) -> SubtaskInfo {
    SubtaskInfo {
        job_id: "0".repeat(32),
        operator_name: "Sink: KafkaSink".into(),
        uid: uid.into(),
        operator_id: "0".repeat(32),
        subtask,
        parallelism,
        max_parallelism: 128,
        attempt: 0,
        clock: cairn::runtime::time::system_clock(),
    }
}

/// A sink subtask driven by hand through the two-phase-commit contract.
struct Driven {
    sink: KafkaSink<String>,
    info: SubtaskInfo,
    state: OperatorStateStore,
}

impl Driven {
    fn open(b: &str, topic: &str, prefix: &str, info: SubtaskInfo, state: OperatorStateStore) -> Self {
        let mut sink = KafkaSink::strings()
            .bootstrap_servers(b)
            .topic(topic)
            .delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
            .transactional_id_prefix(prefix)
            .timeout(Duration::from_secs(20));
        let mut state = state;
        Sink::<String>::open(
            &mut sink,
            &mut SinkContext {
                info: &info,
                state: &mut state,
                checkpointing: true,
            },
        )
        .unwrap();
        Driven { sink, info, state }
    }

    fn write(&mut self, values: &[&str]) {
        let batch = values
            .iter()
            .map(|v| StreamRecord {
                value: v.to_string(),
                timestamp: i64::MIN,
            })
            .collect();
        self.sink.write_batch(batch).unwrap();
    }

    /// Pre-commit at the barrier of `checkpoint`; returns the snapshot's state.
    fn barrier(&mut self, checkpoint: u64) -> Vec<cairn::state::operator_state::OperatorStateEntry> {
        self.sink
            .snapshot_state(
                &mut SinkContext {
                    info: &self.info,
                    state: &mut self.state,
                    checkpointing: true,
                },
                checkpoint,
            )
            .unwrap();
        self.state.to_entries()
    }

    fn complete(&mut self, checkpoint: u64) {
        Sink::<String>::notify_checkpoint_complete(&mut self.sink, checkpoint).unwrap();
    }
}

fn restored(entries: Vec<cairn::state::operator_state::OperatorStateEntry>) -> OperatorStateStore {
    OperatorStateStore::from_entries(entries).unwrap()
}

fn sorted_strings(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn a_transaction_pre_committed_before_a_crash_is_committed_once_after_the_restore() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-sink-crash");
    create_topic(&b, &topic, 2);
    let prefix = unique("cairn-test-txn");
    let mut s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), OperatorStateStore::new());
    s.write(&["a1", "a2", "a3"]);
    s.barrier(1);
    s.complete(1);
    s.write(&["b1", "b2"]);
    let chk2 = s.barrier(2);
    // Records after the barrier of checkpoint 2, in the next transaction.
    s.write(&["c1", "c2", "c3", "c4"]);
    // Nothing is visible to read_committed readers before the commit but checkpoint 1.
    assert_eq!(
        values(&read_all(&b, &topic, "read_committed")),
        sorted_strings(&["a1", "a2", "a3"])
    );
    // The process dies after checkpoint 2 completed, before the sink committed.
    drop(s);
    let _s2 = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(chk2));
    let committed = read_all(&b, &topic, "read_committed");
    assert_eq!(values(&committed), sorted_strings(&["a1", "a2", "a3", "b1", "b2"]));
    // The aborted attempt's records are in the log: read_uncommitted shows them.
    let uncommitted = values(&read_all(&b, &topic, "read_uncommitted"));
    for v in ["b1", "b2"] {
        assert_eq!(
            uncommitted.iter().filter(|u| u.as_str() == v).count(),
            2,
            "the aborted copy of {v} and the committed one: {uncommitted:?}"
        );
    }
    assert!(uncommitted.len() > committed.len());
}

#[test]
fn a_restore_after_the_commit_does_not_write_the_transaction_again() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-sink-recommit");
    create_topic(&b, &topic, 1);
    let prefix = unique("cairn-test-txn");
    let mut s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), OperatorStateStore::new());
    s.write(&["x1", "x2"]);
    let chk1 = s.barrier(1);
    s.complete(1);
    drop(s);
    // Restored from checkpoint 1, whose transaction is already committed: idempotent.
    let mut s2 = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(chk1.clone()));
    s2.write(&["y1"]);
    s2.barrier(2);
    s2.complete(2);
    drop(s2);
    let _s3 = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(chk1));
    assert_eq!(
        values(&read_all(&b, &topic, "read_committed")),
        sorted_strings(&["x1", "x2", "y1"])
    );
}

/// Checkpoint ids count on from the restored snapshot: a job started afresh with the
/// transactional-id prefix of an earlier run, or restored from an older savepoint, numbers
/// its checkpoints from below what the earlier run committed. Its own pending
/// transactions must still be committed after a crash, and once only.
#[test]
fn a_fresh_run_or_an_older_savepoint_reusing_checkpoint_ids_commits_its_transactions_once() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-sink-lineage");
    create_topic(&b, &topic, 1);
    let prefix = unique("cairn-test-txn");
    // Run 1 commits checkpoints 1 to 3.
    let mut s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), OperatorStateStore::new());
    s.write(&["a"]);
    let savepoint1 = s.barrier(1);
    s.complete(1);
    s.write(&["b"]);
    s.barrier(2);
    s.complete(2);
    s.write(&["c"]);
    s.barrier(3);
    s.complete(3);
    drop(s);
    // Run 2 starts without state, so its first checkpoint is 1 again; it dies after the
    // checkpoint completed and before the sink committed.
    let mut s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), OperatorStateStore::new());
    s.write(&["d"]);
    let chk1 = s.barrier(1);
    drop(s);
    let mut s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(chk1));
    assert_eq!(
        values(&read_all(&b, &topic, "read_committed")),
        sorted_strings(&["a", "b", "c", "d"]),
        "the restored run's pending transaction is committed"
    );
    s.write(&["e"]);
    s.barrier(2);
    s.complete(2);
    drop(s);
    // Run 3 restores run 1's savepoint (its transaction was committed long ago), then
    // dies between the pre-commit and the commit of its checkpoint 2.
    let mut s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(savepoint1.clone()));
    s.write(&["f"]);
    let chk2 = s.barrier(2);
    drop(s);
    let _s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(chk2));
    // And the old savepoint restored once more changes nothing.
    drop(_s);
    let _s = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(savepoint1));
    assert_eq!(
        values(&read_all(&b, &topic, "read_committed")),
        sorted_strings(&["a", "b", "c", "d", "e", "f"])
    );
}

#[test]
fn after_a_rescale_2_to_1_pending_transactions_of_every_old_subtask_are_committed_once() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-sink-rescale");
    create_topic(&b, &topic, 2);
    let prefix = unique("cairn-test-txn");
    let mut s0 = Driven::open(&b, &topic, &prefix, info("out", 0, 2), OperatorStateStore::new());
    let mut s1 = Driven::open(&b, &topic, &prefix, info("out", 1, 2), OperatorStateStore::new());
    s0.write(&["s0-a", "s0-b"]);
    s1.write(&["s1-a"]);
    let e0 = s0.barrier(7);
    let e1 = s1.barrier(7);
    // Subtask 1 opens another transaction and dies with it open: it must not linger.
    s1.write(&["s1-lost"]);
    drop((s0, s1));
    let mut new = redistribute(&[e0, e1], 1);
    let only = Driven::open(&b, &topic, &prefix, info("out", 0, 1), restored(new.remove(0)));
    assert_eq!(
        values(&read_all(&b, &topic, "read_committed")),
        sorted_strings(&["s0-a", "s0-b", "s1-a"])
    );
    drop(only);
}

#[derive(Clone)]
struct FailOnce {
    at: u64,
}

static FAILED: AtomicBool = AtomicBool::new(false);

impl ProcessFunction<GeneratedEvent, String> for FailOnce {
    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut ProcessContext<'_, String>) -> OpResult {
        if e.index == self.at && !FAILED.swap(true, Ordering::SeqCst) {
            return Err("injected failure".into());
        }
        ctx.collect(format!("e{}", e.index));
        Ok(())
    }
}

#[test]
fn an_exactly_once_job_that_fails_and_restarts_writes_every_record_once() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-sink-job");
    create_topic(&b, &topic, 3);
    let dir = temp_dir("sink-job");
    let n = 20_000;
    let env = env(
        2,
        None,
        &[
            ("execution.checkpointing.dir", dir.display().to_string()),
            ("execution.checkpointing.interval", "100ms".to_string()),
            ("restart-strategy.type", "fixed-delay".to_string()),
            ("restart-strategy.fixed-delay.attempts", "3".to_string()),
            ("restart-strategy.fixed-delay.delay", "10ms".to_string()),
        ],
    );
    env.source(GeneratorSource::new(n, 10).splits(2).rate(10_000))
        .uid("gen")
        .process(FailOnce { at: 12_345 })
        .uid("fail-once")
        .sink(
            KafkaSink::strings()
                .bootstrap_servers(&b)
                .topic(&topic)
                .delivery_guarantee(DeliveryGuarantee::ExactlyOnce),
        )
        .uid("kafka-out");
    let r = env.execute("exactly once").unwrap();
    assert_eq!(r.restarts, 1);
    let committed = values(&read_all(&b, &topic, "read_committed"));
    let mut want: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    want.sort();
    if committed != want {
        // Say which records are missing and whether they reached the topic at all.
        let have: BTreeSet<&str> = committed.iter().map(String::as_str).collect();
        let all = values(&read_all(&b, &topic, "read_uncommitted"));
        let written: BTreeSet<&str> = all.iter().map(String::as_str).collect();
        let missing: Vec<&str> = want.iter().map(String::as_str).filter(|v| !have.contains(v)).collect();
        eprintln!(
            "{} records missing ({} of them written but not committed), {} committed twice; first missing: {:?}",
            missing.len(),
            missing.iter().filter(|v| written.contains(*v)).count(),
            committed.len() - have.len(),
            &missing[..missing.len().min(20)]
        );
    }
    assert_eq!(committed.len(), want.len());
    assert!(
        committed == want,
        "read_committed output differs from the failure-free output"
    );
    let uncommitted = read_all(&b, &topic, "read_uncommitted");
    assert!(uncommitted.len() >= committed.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_headers_timestamps_and_a_topic_selector_per_record_at_least_once() {
    let Some(b) = broker() else { return };
    let even = unique("cairn-sink-even");
    let odd = unique("cairn-sink-odd");
    create_topic(&b, &even, 1);
    create_topic(&b, &odd, 1);
    let (e2, o2) = (even.clone(), odd.clone());
    let env = env(1, None, &[]);
    env.from_collection((0u32..10).collect())
        .uid("numbers")
        .sink(
            KafkaSink::builder(move |i: &u32| {
                KafkaRecord::value(format!("v{i}"))
                    .key(format!("k{}", i % 3))
                    .header("n", Some(i.to_string().into_bytes()))
                    .header("empty", None)
                    .timestamp(1_700_000_000_000 + i64::from(*i))
                    .topic(if i % 2 == 0 { e2.clone() } else { o2.clone() })
            })
            .bootstrap_servers(&b)
            .delivery_guarantee(DeliveryGuarantee::AtLeastOnce),
        )
        .uid("kafka-out");
    env.execute("records").unwrap();
    let evens = read_all(&b, &even, "read_committed");
    let odds = read_all(&b, &odd, "read_committed");
    assert_eq!(evens.len(), 5);
    assert_eq!(odds.len(), 5);
    for r in evens.iter().chain(&odds) {
        let i: i64 = r.value[1..].parse().unwrap();
        assert_eq!(r.key.as_deref(), Some(format!("k{}", i % 3).as_bytes()));
        assert_eq!(r.timestamp, Some(1_700_000_000_000 + i));
        assert_eq!(
            r.headers,
            vec![
                ("n".to_string(), Some(i.to_string().into_bytes())),
                ("empty".to_string(), None)
            ]
        );
        assert_eq!(i % 2 == 0, evens.contains(r));
    }
}

#[test]
fn unknown_topics_missing_permissions_and_unreachable_brokers_fail_the_sink_clearly() {
    let Some(b) = broker() else { return };
    let run = |sink: KafkaSink<String>| {
        let env = env(1, None, &[]);
        env.from_collection(vec!["x".to_string()])
            .uid("x")
            .sink(sink)
            .uid("kafka-out");
        env.execute("errors").unwrap_err().to_string()
    };
    let missing = unique("cairn-no-such-topic");
    let err = run(KafkaSink::strings()
        .bootstrap_servers(&b)
        .topic(&missing)
        .timeout(Duration::from_secs(5)));
    assert!(err.contains(&format!("topic '{missing}' does not exist")), "{err}");
    let err = run(KafkaSink::strings()
        .bootstrap_servers(&b)
        .topic("cairn-forbidden")
        .timeout(Duration::from_secs(5)));
    assert!(
        err.contains("not authorized") && err.contains("cairn-forbidden"),
        "{err}"
    );
    let err = run(KafkaSink::strings()
        .bootstrap_servers("127.0.0.1:1")
        .topic("t")
        .timeout(Duration::from_secs(2)));
    assert!(
        err.contains("no broker of bootstrap.servers '127.0.0.1:1' answered within 2000 ms"),
        "{err}"
    );
    let err = run(KafkaSink::strings()
        .bootstrap_servers(&b)
        .delivery_guarantee(DeliveryGuarantee::ExactlyOnce));
    assert!(err.contains("has no default topic"), "{err}");
    let err = run(KafkaSink::strings()
        .bootstrap_servers(&b)
        .topic("t")
        .property("enable.idempotence", "false")
        .delivery_guarantee(DeliveryGuarantee::ExactlyOnce));
    assert!(
        err.contains("does not exist") || err.contains("conflicts with the connector"),
        "{err}"
    );
    assert!(DeliveryGuarantee::parse("exactly_once").is_ok());
    let err = DeliveryGuarantee::parse("twice").unwrap_err().to_string();
    assert!(err.contains("none, at-least-once or exactly-once"), "{err}");
}

#[test]
fn delivery_guarantee_none_hands_every_record_over_and_an_unknown_selected_topic_fails_the_job() {
    let Some(b) = broker() else { return };
    let topic = unique("cairn-sink-none");
    create_topic(&b, &topic, 2);
    let job = env(2, None, &[]);
    job.from_collection((0u32..1000).map(|i| format!("n{i}")).collect())
        .uid("numbers")
        .sink(
            KafkaSink::strings()
                .bootstrap_servers(&b)
                .topic(&topic)
                .delivery_guarantee(DeliveryGuarantee::None),
        )
        .uid("kafka-out");
    job.execute("none").unwrap();
    let mut want: Vec<String> = (0u32..1000).map(|i| format!("n{i}")).collect();
    want.sort();
    // Without failures nothing is lost: the records are flushed at the end of input.
    assert_eq!(values(&read_all(&b, &topic, "read_uncommitted")), want);

    // The topic selector names a topic that does not exist (the default topic does):
    // the job fails at once, naming the topic.
    let missing = unique("cairn-selected-missing");
    let m2 = missing.clone();
    let job = env(1, None, &[]);
    job.from_collection(vec![1u32, 2])
        .uid("numbers")
        .sink(
            KafkaSink::builder(move |i: &u32| KafkaRecord::value(i.to_string()).topic(m2.clone()))
                .bootstrap_servers(&b)
                .topic(&topic)
                .delivery_guarantee(DeliveryGuarantee::None)
                .timeout(Duration::from_secs(3)),
        )
        .uid("kafka-out");
    let err = job.execute("selected topic missing").unwrap_err().to_string();
    assert!(err.contains(&format!("topic '{missing}' does not exist")), "{err}");
}
