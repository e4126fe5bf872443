//! Failures end to end: panics and errors in user code, graph and
//! configuration errors before start, and backpressure bounding memory.
// `x % n == 0` reads plainly and keeps the workspace MSRV (1.80).
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::prelude::*;
use common::{assert_contains_all, env_with_parallelism, execute_with_hang_detector};

/// Far above any expected run time; only a hang reaches it.
const HANG: Duration = Duration::from_secs(120);

fn boom(e: GeneratedEvent) -> GeneratedEvent {
    if e.index == 1234 {
        panic!("boom at index {}", e.index);
    }
    e
}

#[test]
fn a_panic_in_an_unchained_operator_fails_the_job_naming_operator_and_subtask() {
    let err = execute_with_hang_detector(HANG, || {
        let env = env_with_parallelism(2);
        env.source(GeneratorSource::new(100_000, 10))
            .uid("gen")
            .map(boom)
            .name("exploding-map")
            .start_new_chain()
            .sink(DiscardSink);
        env.execute("panic").map(|_| ()).map_err(|e| e.to_string())
    })
    .unwrap_err();
    assert_contains_all(
        &err,
        &[
            "operator 'exploding-map' (uid '",
            "subtask ",
            "/2) failed",
            "panicked",
            "boom at index 1234",
        ],
    );
}

#[test]
fn a_panic_in_a_chained_operator_names_that_operator_not_the_chain_head() {
    let err = execute_with_hang_detector(HANG, || {
        let env = env_with_parallelism(2);
        env.source(GeneratorSource::new(100_000, 10))
            .uid("gen")
            .map(boom)
            .name("exploding-map")
            .sink(DiscardSink);
        env.execute("panic chained").map(|_| ()).map_err(|e| e.to_string())
    })
    .unwrap_err();
    assert_contains_all(
        &err,
        &[
            "operator 'exploding-map' (uid '",
            "subtask ",
            "/2) failed",
            "panicked",
            "boom at index 1234",
        ],
    );
}

/// A sink that sleeps for every batch: a slow consumer that backpressures.
#[derive(Clone)]
struct SlowSink {
    per_batch: Duration,
    seen: Arc<AtomicU64>,
}

impl<T: Send + 'static> Sink<T> for SlowSink {
    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        self.seen.fetch_add(batch.len() as u64, Ordering::SeqCst);
        std::thread::sleep(self.per_batch);
        Ok(())
    }
}

#[test]
fn a_panic_while_a_slow_sink_backpressures_still_returns() {
    let seen = Arc::new(AtomicU64::new(0));
    let sink_seen = seen.clone();
    let err = execute_with_hang_detector(HANG, move || {
        let env = env_with_parallelism(1);
        env.set_config("cairn.runtime.channel-capacity", "2").unwrap();
        env.set_config("cairn.runtime.batch-size", "64").unwrap();
        env.source(GeneratorSource::new(10_000_000, 10))
            .uid("gen")
            .map(|e: GeneratedEvent| {
                if e.index == 20_000 {
                    panic!("late boom");
                }
                e.index
            })
            .name("late-panic")
            .start_new_chain()
            .sink(SlowSink {
                per_batch: Duration::from_millis(1),
                seen: sink_seen,
            })
            .start_new_chain();
        env.execute("panic under backpressure")
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap_err();
    assert_contains_all(
        &err,
        &["operator 'late-panic' (uid '", "subtask 1/1) failed", "late boom"],
    );
    assert!(seen.load(Ordering::SeqCst) < 20_000);
}

/// Fails on one value with a descriptive error.
#[derive(Clone)]
struct Validate;

impl ProcessFunction<u64, u64> for Validate {
    fn process_element(&mut self, v: u64, ctx: &mut ProcessContext<'_, u64>) -> OpResult {
        if v == 42 {
            return Err(format!("record {v}: amount must not be negative").into());
        }
        ctx.collect(v);
        Ok(())
    }
}

#[test]
fn a_user_error_fails_the_job_with_its_message() {
    let env = env_with_parallelism(1);
    env.from_collection((0..100u64).collect())
        .uid("src")
        .process(Validate)
        .uid("validate")
        .name("validator")
        .sink(DiscardSink);
    let err = env.execute("user error").unwrap_err().to_string();
    assert_contains_all(
        &err,
        &[
            "operator 'validator' (uid '",
            "subtask 1/1) failed",
            "record 42: amount must not be negative",
        ],
    );
}

/// A source that fails after a few records.
#[derive(Clone)]
struct FailingSource {
    polls: u32,
}

impl Source<u64> for FailingSource {
    fn open(&mut self, _ctx: &mut SourceContext<'_>) -> OpResult {
        Ok(())
    }
    fn poll(&mut self, out: &mut Vec<StreamRecord<u64>>, _max: usize) -> OpResult<SourceStatus> {
        self.polls += 1;
        if self.polls > 3 {
            return Err("upstream connection reset".into());
        }
        out.push(StreamRecord::new(self.polls as u64));
        Ok(SourceStatus::More)
    }
    fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _id: u64) -> OpResult {
        Ok(())
    }
}

#[test]
fn a_source_error_fails_the_job_naming_the_source() {
    let env = env_with_parallelism(1);
    env.source(FailingSource { polls: 0 })
        .uid("failing")
        .name("flaky-source")
        .sink(DiscardSink);
    let err = env.execute("source error").unwrap_err().to_string();
    assert_contains_all(
        &err,
        &[
            "operator 'flaky-source' (uid '",
            "subtask 1/1) failed",
            "upstream connection reset",
        ],
    );
}

#[test]
fn duplicate_uids_fail_before_start_naming_both_operators() {
    let env = env_with_parallelism(1);
    let touched = Arc::new(AtomicU64::new(0));
    let t = touched.clone();
    env.from_collection((0..10u64).collect())
        .uid("src")
        .map(move |v| {
            t.fetch_add(1, Ordering::SeqCst);
            v
        })
        .key_by(|v: &u64| *v)
        .reduce(|a, b| a + b)
        .uid("same")
        .name("first-reduce")
        .key_by(|v: &u64| *v)
        .reduce(|a, b| a.max(b))
        .uid("same")
        .name("second-reduce")
        .sink(DiscardSink);
    let err = env.execute("dup uids").unwrap_err().to_string();
    assert_contains_all(&err, &["'first-reduce'", "'second-reduce'", "uid 'same'"]);
    assert_eq!(touched.load(Ordering::SeqCst), 0, "no record was processed");
}

#[test]
fn a_stateful_operator_without_uid_fails_with_the_fix() {
    let env = env_with_parallelism(1);
    env.from_collection((0..10u64).collect())
        .uid("src")
        .key_by(|v: &u64| *v % 2)
        .reduce(|a, b| a + b)
        .name("uid-less-reduce")
        .sink(DiscardSink);
    let err = env.execute("no uid").unwrap_err().to_string();
    assert_contains_all(&err, &["'uid-less-reduce'", ".uid(", "pipeline.auto-generate-uids"]);
}

#[test]
fn auto_generated_uids_are_opt_in() {
    let env = env_with_parallelism(1);
    env.set_config("pipeline.auto-generate-uids", "true").unwrap();
    let (sink, out) = CollectSink::new();
    env.from_collection((0..10u64).collect())
        .key_by(|v: &u64| *v % 2)
        .reduce(|a, b| a + b)
        .sink(sink);
    env.execute("auto uids").unwrap();
    let mut got = out.values();
    got.sort();
    // Rolling sums of evens (0,2,4,6,8) and odds (1,3,5,7,9).
    assert_eq!(got, common::sorted(vec![0, 2, 6, 12, 20, 1, 4, 9, 16, 25]));
}

#[test]
fn an_unknown_config_key_names_the_key() {
    let env = StreamEnv::new();
    let err = env.set_config("pipeline.max-paralelism", "4").unwrap_err().to_string();
    assert_contains_all(&err, &["pipeline.max-paralelism"]);
}

#[test]
fn a_bad_config_value_names_the_key_and_the_value() {
    let env = StreamEnv::new();
    let err = env
        .set_config("cairn.runtime.channel-capacity", "lots")
        .unwrap_err()
        .to_string();
    assert_contains_all(&err, &["cairn.runtime.channel-capacity", "lots"]);
}

#[test]
fn parallelism_above_max_parallelism_is_refused_explaining_the_limit() {
    let env = env_with_parallelism(8);
    env.set_max_parallelism(4).unwrap();
    env.from_collection((0..10u64).collect())
        .uid("src")
        .key_by(|v: &u64| *v)
        .reduce(|a, b| a + b)
        .uid("sum")
        .name("too-wide")
        .sink(DiscardSink);
    let err = env.execute("too wide").unwrap_err().to_string();
    assert_contains_all(
        &err,
        &[
            "'too-wide'",
            "parallelism 8",
            "max parallelism 4",
            "pipeline.max-parallelism",
        ],
    );
}

/// Tracks records emitted right after the source against records the sink
/// has seen, keeping the largest difference observed.
#[derive(Clone, Default)]
struct InFlight {
    emitted: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    max_ahead: Arc<AtomicU64>,
}

#[test]
fn backpressure_keeps_the_source_within_the_channel_buffers() {
    const EVENTS: u64 = 2_000_000;
    const CAPACITY: u64 = 2;
    const BATCH: u64 = 100;
    let track = InFlight::default();
    let t = track.clone();
    let result = execute_with_hang_detector(Duration::from_secs(600), move || {
        let env = env_with_parallelism(1);
        env.set_config("cairn.runtime.channel-capacity", &CAPACITY.to_string())
            .unwrap();
        env.set_config("cairn.runtime.batch-size", &BATCH.to_string()).unwrap();
        let m = t.clone();
        env.source(GeneratorSource::new(EVENTS, 10))
            .uid("gen")
            // Chained to the source: counts what the source produced.
            .map(move |e: GeneratedEvent| {
                let emitted = m.emitted.fetch_add(1, Ordering::SeqCst) + 1;
                let ahead = emitted.saturating_sub(m.seen.load(Ordering::SeqCst));
                m.max_ahead.fetch_max(ahead, Ordering::SeqCst);
                e.index
            })
            .sink(SlowSink {
                per_batch: Duration::from_micros(50),
                seen: t.seen.clone(),
            })
            .start_new_chain();
        env.execute("backpressure").map(|r| r.source_records)
    });
    assert_eq!(result.unwrap(), EVENTS);
    assert_eq!(
        track.seen.load(Ordering::SeqCst),
        EVENTS,
        "every record reached the sink"
    );
    // In flight at most: the batch being mapped, CAPACITY batches queued in
    // the one channel, and the batch the sink holds. Allow a factor of 4.
    let channels = 1;
    let bound = 4 * (CAPACITY + 2) * BATCH * channels;
    let max_ahead = track.max_ahead.load(Ordering::SeqCst);
    assert!(
        max_ahead <= bound,
        "the source ran {max_ahead} records ahead of the sink (bound {bound})"
    );
}
