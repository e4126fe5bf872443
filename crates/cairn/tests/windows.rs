//! Windows end to end: real jobs through `StreamEnv::execute`, results gathered
//! by a `CollectSink` and checked against oracles computed here.

mod common;
use common::Backend;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::collection::CollectionSource;
use cairn::prelude::*;
use cairn::window::{
    EventTimeSessionWindows, ProcessWindowFunction, SlidingEventTimeWindows, TimeWindow, TumblingEventTimeWindows,
    TumblingProcessingTimeWindows, WindowCollector,
};

type Event = (u32, i64);

/// A bounded, parallelism-1 source of `(key, timestamp)` events with
/// bounded-out-of-orderness watermarks.
fn timed_events(env: &StreamEnv, events: Vec<Event>, out_of_orderness_ms: u64) -> DataStream<Event> {
    env.source_with_watermarks(
        CollectionSource::new(events),
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(out_of_orderness_ms))
            .with_timestamp_assigner(|e: &Event, _| e.1),
    )
    .set_parallelism(1)
    .uid("events")
}

/// Counts records per window, carrying the key along.
#[derive(Clone)]
struct CountPerKey;

impl AggregateFunction<Event> for CountPerKey {
    type Acc = (u32, u64);
    type Out = (u32, u64);
    fn create_accumulator(&self) -> (u32, u64) {
        (0, 0)
    }
    fn add(&self, value: &Event, acc: &mut (u32, u64)) {
        acc.0 = value.0;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u32, u64)) -> (u32, u64) {
        *acc
    }
    fn merge(&self, a: (u32, u64), b: (u32, u64)) -> (u32, u64) {
        (a.0.max(b.0), a.1 + b.1)
    }
}

/// Emits (key, window start, window end, sorted timestamps of the elements).
#[derive(Clone)]
struct ListWindow;

type Listed = (u32, i64, i64, Vec<i64>);

impl ProcessWindowFunction<u32, Event, Listed> for ListWindow {
    fn process(
        &mut self,
        key: &u32,
        window: &TimeWindow,
        elements: Vec<Event>,
        out: &mut WindowCollector<'_, Listed>,
    ) -> OpResult {
        let mut ts: Vec<i64> = elements.iter().map(|e| e.1).collect();
        ts.sort_unstable();
        out.collect((*key, window.start, window.end, ts));
        Ok(())
    }
}

/// A small deterministic pseudo-random sequence (no external crates).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

/// `n` events over `keys` keys whose timestamps advance ~10 ms per event but
/// arrive up to `jitter` ms out of order.
fn jittered(n: usize, keys: u32, jitter: i64, seed: u64) -> Vec<Event> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            let key = (lcg(&mut s) % keys as u64) as u32;
            let ts = i as i64 * 10 - (lcg(&mut s) % jitter as u64) as i64;
            (key, ts)
        })
        .collect()
}

fn tumbling_event_time_counts_per_key_with_out_of_order_input(backend: Backend) {
    let events = jittered(2_000, 7, 200, 42);
    let size = 250;
    let env = StreamEnv::new();
    backend.apply(&env);
    let (sink, got) = CollectSink::new();
    let dropped = Arc::new(AtomicU64::new(0));
    timed_events(&env, events.clone(), 200)
        .key_by(|e: &Event| e.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(size)))
        .count_dropped_late_data(&dropped)
        .aggregate(CountPerKey)
        .uid("counts")
        .sink(sink);
    env.execute("tumbling").unwrap();

    let mut expected: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    for (k, ts) in &events {
        *expected.entry((*k, ts - ts.rem_euclid(size as i64))).or_default() += 1;
    }
    let mut actual: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    for r in got.records() {
        // Results carry the window's last timestamp.
        let start = r.timestamp + 1 - size as i64;
        assert_eq!(start.rem_euclid(size as i64), 0, "misaligned {r:?}");
        assert!(
            actual.insert((r.value.0, start), r.value.1).is_none(),
            "window fired twice: {r:?}"
        );
    }
    assert_eq!(actual, expected);
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
}

fn sliding_windows_of(ts: i64, size: i64, slide: i64) -> Vec<TimeWindow> {
    let mut out = Vec::new();
    let mut start = ts - ts.rem_euclid(slide);
    while start > ts - size {
        out.push(TimeWindow::new(start, start + size));
        start -= slide;
    }
    out
}

fn sliding_windows_hold_each_element_size_over_slide_times(backend: Backend) {
    let events = jittered(600, 3, 50, 7);
    let (size, slide) = (200i64, 50i64);
    let env = StreamEnv::new();
    backend.apply(&env);
    let (sink, got) = CollectSink::new();
    timed_events(&env, events.clone(), 50)
        .key_by(|e: &Event| e.0)
        .window(SlidingEventTimeWindows::of(
            Duration::from_millis(size as u64),
            Duration::from_millis(slide as u64),
        ))
        .process(ListWindow)
        .uid("sliding")
        .sink(sink);
    env.execute("sliding").unwrap();

    let mut expected: BTreeMap<(u32, i64, i64), Vec<i64>> = BTreeMap::new();
    for (k, ts) in &events {
        let ws = sliding_windows_of(*ts, size, slide);
        assert_eq!(ws.len() as i64, size / slide);
        for w in ws {
            expected.entry((*k, w.start, w.end)).or_default().push(*ts);
        }
    }
    for v in expected.values_mut() {
        v.sort_unstable();
    }
    let records = got.records();
    let mut actual = BTreeMap::new();
    for r in &records {
        let (k, start, end, ts) = r.value.clone();
        assert_eq!(r.timestamp, end - 1);
        assert!(actual.insert((k, start, end), ts).is_none());
    }
    assert_eq!(actual, expected);
    let total: usize = actual.values().map(Vec::len).sum();
    assert_eq!(total, events.len() * (size / slide) as usize);
}

fn session_windows_merge_by_gap_and_a_bridging_element_joins_two_sessions(backend: Backend) {
    // Key 1: sessions [0,15) and [25,45) exist before 15 arrives and touches both.
    // Key 2: two sessions that stay apart.
    let events = vec![(1, 0), (2, 0), (1, 5), (1, 25), (2, 50), (1, 35), (1, 15), (2, 3)];
    for contents in ["process", "aggregate", "reduce"] {
        let env = StreamEnv::new();
        backend.apply(&env);
        let windowed = timed_events(&env, events.clone(), 1_000)
            .key_by(|e: &Event| e.0)
            .window(EventTimeSessionWindows::with_gap(Duration::from_millis(10)));
        let mut actual: Vec<(u32, i64, i64, u64)> = Vec::new();
        match contents {
            "process" => {
                let (sink, got) = CollectSink::new();
                windowed.process(ListWindow).uid("sessions").sink(sink);
                env.execute("sessions").unwrap();
                for r in got.records() {
                    let (k, s, e, ts) = r.value;
                    assert_eq!(r.timestamp, e - 1);
                    if k == 1 {
                        assert_eq!(ts, vec![0, 5, 15, 25, 35]);
                    }
                    actual.push((k, s, e, ts.len() as u64));
                }
            }
            "aggregate" => {
                let (sink, got) = CollectSink::new();
                windowed.aggregate(CountPerKey).uid("sessions").sink(sink);
                env.execute("sessions").unwrap();
                for r in got.records() {
                    actual.push((r.value.0, -1, r.timestamp + 1, r.value.1));
                }
            }
            _ => {
                let (sink, got) = CollectSink::new();
                // Reduce to (key, number of elements) through the timestamp slot.
                windowed
                    .reduce(|a: Event, b: Event| (a.0, a.1.max(b.1)))
                    .uid("sessions")
                    .sink(sink);
                env.execute("sessions").unwrap();
                for r in got.records() {
                    // The reduced value is the latest element of the session.
                    actual.push((r.value.0, -1, r.timestamp + 1, r.value.1 as u64));
                }
            }
        }
        actual.sort();
        let expected: Vec<(u32, i64, i64, u64)> = match contents {
            "process" => vec![(1, 0, 45, 5), (2, 0, 13, 2), (2, 50, 60, 1)],
            "aggregate" => vec![(1, -1, 45, 5), (2, -1, 13, 2), (2, -1, 60, 1)],
            _ => vec![(1, -1, 45, 35), (2, -1, 13, 3), (2, -1, 60, 50)],
        };
        assert_eq!(actual, expected, "{contents}");
    }
}

/// Config with one record per batch, so the watermark advances between records.
fn one_record_per_batch() -> StreamEnv {
    let env = StreamEnv::new();
    env.set_config("cairn.runtime.batch-size", "1").unwrap();
    env
}

fn allowed_lateness_refires_the_window_with_the_updated_result(backend: Backend) {
    // Monotonous watermarks: the watermark is the latest timestamp - 1.
    let events = vec![(1, 1), (1, 2), (1, 3), (1, 15), (1, 5), (1, 25), (1, 7)];
    let env = one_record_per_batch();
    backend.apply(&env);
    let (sink, got) = CollectSink::new();
    let dropped = Arc::new(AtomicU64::new(0));
    timed_events(&env, events, 0)
        .key_by(|e: &Event| e.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(10)))
        .allowed_lateness(Duration::from_millis(10))
        .count_dropped_late_data(&dropped)
        .aggregate(CountPerKey)
        .uid("late-counts")
        .sink(sink);
    env.execute("lateness").unwrap();
    let fired: Vec<(i64, u64)> = got.records().iter().map(|r| (r.timestamp, r.value.1)).collect();
    // [0,10) fires with 3 at watermark 14, again with 4 when 5 arrives (within
    // lateness); 7 arrives at watermark 24 >= 9 + 10 and is dropped.
    assert_eq!(fired, vec![(9, 3), (9, 4), (19, 1), (29, 1)]);
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
}

fn late_data_goes_to_the_side_output(backend: Backend) {
    let events = vec![(1, 1), (2, 4), (1, 12), (1, 3), (2, 9), (1, 21), (2, 11)];
    let env = one_record_per_batch();
    backend.apply(&env);
    let late = OutputTag::<Event>::new("late");
    let (sink, got) = CollectSink::new();
    let (late_sink, late_got) = CollectSink::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let counts = timed_events(&env, events, 0)
        .key_by(|e: &Event| e.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(10)))
        .side_output_late_data(&late)
        .count_dropped_late_data(&dropped)
        .aggregate(CountPerKey)
        .uid("counts");
    counts.sink(sink);
    counts.side_output(&late).sink(late_sink);
    env.execute("late side output").unwrap();

    let mut late_records: Vec<(Event, i64)> = late_got.records().into_iter().map(|r| (r.value, r.timestamp)).collect();
    late_records.sort();
    // 3 and 9 arrive after the watermark (11) passed their window [0,10);
    // 11 arrives after the watermark (20) passed [10,20).
    assert_eq!(late_records, vec![((1, 3), 3), ((2, 9), 9), ((2, 11), 11)]);
    let mut counts: Vec<(u32, i64, u64)> = got
        .records()
        .iter()
        .map(|r| (r.value.0, r.timestamp, r.value.1))
        .collect();
    counts.sort();
    assert_eq!(counts, vec![(1, 9, 1), (1, 19, 1), (1, 29, 1), (2, 9, 1)]);
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
}

/// Counts (key, index) records per key; bumps `ack` per record so the paced
/// source emits the next one only after this one was assigned.
#[derive(Clone)]
struct CountAcked {
    ack: common::Ack,
}

impl AggregateFunction<(u64, u64)> for CountAcked {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: &(u64, u64), acc: &mut (u64, u64)) {
        acc.0 = value.0;
        acc.1 += 1;
        self.ack.fetch_add(1, Ordering::SeqCst);
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0.max(b.0), a.1 + b.1)
    }
}

/// On a manual clock: record `i` arrives at exactly `T0 + 10 i` ms of
/// processing time, so every 50 ms window holds records `5j..5j+5` and each
/// fires once with exactly their per-key counts.
fn processing_time_tumbling_windows_assign_by_the_job_clock(backend: Backend) {
    const T0: i64 = 1_000_000; // a multiple of the window size
    let (n, keys) = (30u64, 3u64);
    let env = StreamEnv::new();
    backend.apply(&env);
    let clock = common::ManualClock::new(T0);
    env.set_clock(clock.shared());
    let ack = common::Ack::default();
    let (sink, got) = CollectSink::new();
    env.source(
        common::PacedSource::new((0..n).map(|i| (i % keys, i)).collect())
            .clock_step(clock, 10)
            .ack(ack.clone()),
    )
    .uid("paced")
    .key_by(|r: &(u64, u64)| r.0)
    .window(TumblingProcessingTimeWindows::of(Duration::from_millis(50)))
    .aggregate(CountAcked { ack })
    .uid("pt-counts")
    .sink(sink);
    env.execute("processing time").unwrap();

    let mut actual: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for r in got.records() {
        assert!(
            actual.insert((r.timestamp, r.value.0), r.value.1).is_none(),
            "window {} of key {} fired twice",
            r.timestamp,
            r.value.0
        );
    }
    let mut expected: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for i in 0..n {
        let window_end = T0 + (i as i64 / 5) * 50 + 49;
        *expected.entry((window_end, i % keys)).or_default() += 1;
    }
    assert_eq!(actual, expected);
}

#[derive(Clone)]
struct CountGenerated;

impl AggregateFunction<GeneratedEvent> for CountGenerated {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: &GeneratedEvent, acc: &mut (u64, u64)) {
        acc.0 = value.key;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0.max(b.0), a.1 + b.1)
    }
}

/// Mean of the values per window, incrementally.
#[derive(Clone)]
struct MeanValue;

impl AggregateFunction<GeneratedEvent> for MeanValue {
    type Acc = (u64, u128, u64);
    type Out = (u64, u64, u64);
    fn create_accumulator(&self) -> Self::Acc {
        (0, 0, 0)
    }
    fn add(&self, e: &GeneratedEvent, acc: &mut Self::Acc) {
        acc.0 = e.key;
        acc.1 += (e.value % 1_000) as u128;
        acc.2 += 1;
    }
    fn get_result(&self, acc: &Self::Acc) -> (u64, u64, u64) {
        (acc.0, (acc.1 / acc.2.max(1) as u128) as u64, acc.2)
    }
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (a.0.max(b.0), a.1 + b.1, a.2 + b.2)
    }
}

/// The same mean, from all elements at once.
#[derive(Clone)]
struct MeanProcess;

impl ProcessWindowFunction<u64, GeneratedEvent, (u64, u64, u64)> for MeanProcess {
    fn process(
        &mut self,
        key: &u64,
        _window: &TimeWindow,
        elements: Vec<GeneratedEvent>,
        out: &mut WindowCollector<'_, (u64, u64, u64)>,
    ) -> OpResult {
        let sum: u128 = elements.iter().map(|e| (e.value % 1_000) as u128).sum();
        let n = elements.len() as u64;
        out.collect((*key, (sum / n as u128) as u64, n));
        Ok(())
    }
}

fn generated(env: &StreamEnv, n: u64, keys: u64) -> DataStream<GeneratedEvent> {
    env.source_with_watermarks(
        GeneratorSource::new(n, keys).seed(3),
        WatermarkStrategy::for_monotonous_timestamps(),
    )
    .uid("gen")
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn aggregate_and_process_window_functions_agree_with_the_oracle(backend: Backend) {
    let (n, keys, size) = (5_000u64, 4u64, 300i64);
    let env = StreamEnv::new();
    backend.apply(&env);
    let (agg_sink, agg) = CollectSink::new();
    let (proc_sink, procd) = CollectSink::new();
    let windowed = generated(&env, n, keys)
        .key_by(|e: &GeneratedEvent| e.key)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(size as u64)));
    windowed.aggregate(MeanValue).uid("mean-agg").sink(agg_sink);
    windowed.process(MeanProcess).uid("mean-proc").sink(proc_sink);
    env.execute("aggregate vs process").unwrap();

    let source = GeneratorSource::new(n, keys).seed(3);
    let mut oracle: BTreeMap<(u64, i64), (u128, u64)> = BTreeMap::new();
    for i in 0..n {
        let e = source.event(i);
        let w = oracle
            .entry((e.key, e.timestamp - e.timestamp.rem_euclid(size) + size - 1))
            .or_default();
        w.0 += (e.value % 1_000) as u128;
        w.1 += 1;
    }
    let expected: Vec<(i64, (u64, u64, u64))> = oracle
        .into_iter()
        .map(|((k, ts), (sum, c))| (ts, (k, (sum / c as u128) as u64, c)))
        .collect();
    let expected = sorted(expected);
    let as_pairs = |v: Vec<StreamRecord<(u64, u64, u64)>>| {
        sorted(v.into_iter().map(|r| (r.timestamp, r.value)).collect::<Vec<_>>())
    };
    assert_eq!(as_pairs(agg.records()), expected);
    assert_eq!(as_pairs(procd.records()), expected);
}

/// Which generated indices the parallel test keeps: runs of 70 are dropped
/// so that sessions have gaps.
fn kept(index: u64) -> bool {
    matches!((index / 70) % 4, 1..=3)
}

/// Runs tumbling, sliding and session windows over a gappy generated stream
/// at `parallelism`; returns each one's sorted (timestamp, key, count).
fn windows_at(parallelism: u32) -> [Vec<(i64, u64, u64)>; 3] {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism).unwrap();
    let events = generated(&env, 6_000, 5).filter(|e: &GeneratedEvent| kept(e.index));
    let keyed = events.key_by(|e: &GeneratedEvent| e.key);
    let (s1, tumbling) = CollectSink::new();
    let (s2, sliding) = CollectSink::new();
    let (s3, sessions) = CollectSink::new();
    keyed
        .window(TumblingEventTimeWindows::of(Duration::from_millis(100)))
        .aggregate(CountGenerated)
        .uid("tumbling")
        .sink(s1);
    keyed
        .window(SlidingEventTimeWindows::of(
            Duration::from_millis(100),
            Duration::from_millis(25),
        ))
        .aggregate(CountGenerated)
        .uid("sliding")
        .sink(s2);
    keyed
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(20)))
        .aggregate(CountGenerated)
        .uid("sessions")
        .sink(s3);
    env.execute("parallel windows").unwrap();
    let flat = |c: Collected<(u64, u64)>| {
        sorted(
            c.records()
                .into_iter()
                .map(|r| (r.timestamp, r.value.0, r.value.1))
                .collect(),
        )
    };
    [flat(tumbling), flat(sliding), flat(sessions)]
}

#[test]
fn parallelism_two_and_three_give_the_same_results_as_one() {
    let one = windows_at(1);
    // Oracle for the sessions: split each key's timestamps where the gap exceeds 20.
    let source = GeneratorSource::new(6_000, 5).seed(3);
    let mut per_key: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for i in (0..6_000).filter(|i| kept(*i)) {
        let e = source.event(i);
        per_key.entry(e.key).or_default().push(e.timestamp);
    }
    let mut sessions = Vec::new();
    let mut tumbling: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for (k, ts) in &per_key {
        let (mut first, mut last, mut count) = (ts[0], ts[0], 0u64);
        for &t in ts {
            *tumbling.entry((t - t % 100 + 99, *k)).or_default() += 1;
            if t - last > 20 {
                sessions.push((last + 20 - 1, *k, count));
                first = t;
                count = 0;
            }
            last = t;
            count += 1;
        }
        let _ = first;
        sessions.push((last + 20 - 1, *k, count));
    }
    let tumbling: Vec<(i64, u64, u64)> = tumbling.into_iter().map(|((t, k), c)| (t, k, c)).collect();
    assert_eq!(one[0], tumbling);
    assert_eq!(one[2], sorted(sessions));
    let total_sliding: u64 = one[1].iter().map(|r| r.2).sum();
    assert_eq!(total_sliding, per_key.values().map(|v| v.len() as u64).sum::<u64>() * 4);
    for p in [2, 3] {
        assert_eq!(windows_at(p), one, "parallelism {p}");
    }
}

#[test]
fn bad_window_parameters_and_missing_timestamps_fail_with_a_clear_error() {
    let env = StreamEnv::new();
    let (sink, _) = CollectSink::new();
    timed_events(&env, vec![(1, 1)], 0)
        .key_by(|e: &Event| e.0)
        .window(TumblingEventTimeWindows::of(Duration::ZERO))
        .aggregate(CountPerKey)
        .uid("zero")
        .sink(sink);
    let err = env.execute("zero size").unwrap_err().to_string();
    assert!(err.contains("size must be at least 1 ms"), "{err}");

    let env = StreamEnv::new();
    let (sink, _) = CollectSink::new();
    env.from_collection(vec![(1u32, 1i64)])
        .uid("no-timestamps")
        .key_by(|e: &Event| e.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(10)))
        .aggregate(CountPerKey)
        .uid("counts")
        .sink(sink);
    let err = env.execute("no timestamps").unwrap_err().to_string();
    assert!(err.contains("without an event timestamp"), "{err}");
}

on_every_backend!(
    tumbling_event_time_counts_per_key_with_out_of_order_input,
    sliding_windows_hold_each_element_size_over_slide_times,
    session_windows_merge_by_gap_and_a_bridging_element_joins_two_sessions,
    allowed_lateness_refires_the_window_with_the_updated_result,
    late_data_goes_to_the_side_output,
    processing_time_tumbling_windows_assign_by_the_job_clock,
    aggregate_and_process_window_functions_agree_with_the_oracle,
);
