//! Event time with several splits per subtask: a subtask reads its splits
//! interleaved, and their event times differ (each generator split is a range
//! of indices far from the others'). Watermarks are generated per split, so
//! no record of a slower split becomes late: event-time windows count every
//! event, at any parallelism, also after a rescale.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::prelude::*;

const EVENTS: u64 = 24_000;
const WINDOW_MS: u64 = 1_000;

#[derive(Clone)]
struct Count;

impl AggregateFunction<GeneratedEvent> for Count {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _value: &GeneratedEvent, acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Window end timestamp -> events in it, for a job at `parallelism` over `splits` splits.
fn window_counts(parallelism: u32, splits: u32, rate: Option<u64>) -> BTreeMap<i64, u64> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism).unwrap();
    let mut generator = GeneratorSource::new(EVENTS, 1).splits(splits);
    if let Some(r) = rate {
        generator = generator.rate(r);
    }
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(generator, WatermarkStrategy::for_monotonous_timestamps())
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(WINDOW_MS)))
        .aggregate(Count)
        .uid("counts")
        .sink(sink);
    env.execute("windows over splits").unwrap();
    let mut m = BTreeMap::new();
    for r in out.records() {
        *m.entry(r.timestamp).or_default() += r.value;
    }
    m
}

fn expected() -> BTreeMap<i64, u64> {
    (0..EVENTS / WINDOW_MS)
        .map(|w| (((w + 1) * WINDOW_MS) as i64 - 1, WINDOW_MS))
        .collect()
}

#[test]
fn four_splits_in_one_subtask_lose_no_event_to_lateness() {
    assert_eq!(window_counts(1, 4, None), expected());
}

#[test]
fn a_rate_limit_of_a_few_records_per_poll_keeps_every_split_on_time() {
    assert_eq!(window_counts(2, 6, Some(20_000)), expected());
}
