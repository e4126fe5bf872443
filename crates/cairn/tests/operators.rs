//! Stateless and keyed operators end to end: every test runs a real job through
//! `StreamEnv::execute` and compares what a `CollectSink` gathered with an
//! oracle computed here.
// `x % n == 0` reads plainly and keeps the workspace MSRV (1.80).
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cairn::prelude::*;
use common::{env_with_parallelism, sorted};

const COUNT: u64 = 10_000;
const KEYS: u64 = 17;

/// The events a `GeneratorSource::new(count, keys)` emits, in index order.
fn oracle_events(count: u64, keys: u64) -> Vec<GeneratedEvent> {
    let g = GeneratorSource::new(count, keys);
    (0..count).map(|i| g.event(i)).collect()
}

#[test]
fn map_filter_flat_map_match_the_oracle() {
    let env = env_with_parallelism(2);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(COUNT, KEYS))
        .uid("gen")
        .map(|e: GeneratedEvent| (e.index, e.value % 1000))
        .filter(|(_, v)| v % 2 == 0)
        .flat_map(|(i, v)| vec![(i, v), (i, v + 1)])
        .sink(sink);
    env.execute("map filter flat_map").unwrap();

    let expected: Vec<(u64, u64)> = oracle_events(COUNT, KEYS)
        .into_iter()
        .map(|e| (e.index, e.value % 1000))
        .filter(|(_, v)| v % 2 == 0)
        .flat_map(|(i, v)| [(i, v), (i, v + 1)])
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(sorted(out.values()), sorted(expected));
}

#[test]
fn union_of_three_streams_keeps_every_record_once() {
    let env = env_with_parallelism(2);
    let a = env.from_collection((0..100u32).collect()).uid("a");
    let b = env.from_collection((1000..1050u32).collect()).uid("b");
    let c = env
        .source(GeneratorSource::new(300, 3))
        .uid("c")
        .map(|e: GeneratedEvent| 5000 + e.index as u32);
    let (sink, out) = CollectSink::new();
    a.union(&[b, c]).sink(sink);
    env.execute("union").unwrap();

    let expected: Vec<u32> = (0..100).chain(1000..1050).chain(5000..5300).collect();
    assert_eq!(sorted(out.values()), expected);
}

/// Routes evens to the main output, odds to "odd", and multiples of 3 also to
/// "three" (a record can go to several outputs).
#[derive(Clone)]
struct Router {
    odd: OutputTag<u64>,
    three: OutputTag<String>,
}

impl ProcessFunction<u64, u64> for Router {
    fn process_element(&mut self, v: u64, ctx: &mut ProcessContext<'_, u64>) -> OpResult {
        if v % 2 == 0 {
            ctx.collect(v);
        } else {
            ctx.output(&self.odd, v);
        }
        if v % 3 == 0 {
            ctx.output(&self.three, format!("three:{v}"));
        }
        Ok(())
    }
}

#[test]
fn process_function_side_outputs_reach_their_consumers() {
    let env = env_with_parallelism(2);
    let odd = OutputTag::<u64>::new("odd");
    let three = OutputTag::<String>::new("three");
    let routed = env
        .source(GeneratorSource::new(1000, 1))
        .uid("gen")
        .map(|e: GeneratedEvent| e.index)
        .process(Router {
            odd: odd.clone(),
            three: three.clone(),
        })
        .uid("router");
    let (main_sink, main) = CollectSink::new();
    let (odd_sink, odds) = CollectSink::new();
    let (three_sink, threes) = CollectSink::new();
    routed.sink(main_sink);
    routed.side_output(&odd).sink(odd_sink);
    routed.side_output(&three).sink(three_sink);
    env.execute("side outputs").unwrap();

    assert_eq!(
        sorted(main.values()),
        (0..1000).filter(|v| v % 2 == 0).collect::<Vec<u64>>()
    );
    assert_eq!(
        sorted(odds.values()),
        (0..1000).filter(|v| v % 2 == 1).collect::<Vec<u64>>()
    );
    assert_eq!(
        sorted(threes.values()),
        sorted(
            (0..1000u64)
                .filter(|v| v % 3 == 0)
                .map(|v| format!("three:{v}"))
                .collect::<Vec<_>>()
        )
    );
}

/// Tags each record with the subtask that processed it.
#[derive(Clone)]
struct TagSubtask;

impl<T: Data> ProcessFunction<T, (u32, T)> for TagSubtask {
    fn process_element(&mut self, v: T, ctx: &mut ProcessContext<'_, (u32, T)>) -> OpResult {
        let s = ctx.info.subtask;
        ctx.collect((s, v));
        Ok(())
    }
}

#[test]
fn broadcast_sends_every_record_to_every_subtask() {
    let env = env_with_parallelism(1);
    let (sink, out) = CollectSink::new();
    env.from_collection((0..200u32).collect())
        .uid("src")
        .broadcast()
        .process(TagSubtask)
        .uid("tag")
        .set_parallelism(3)
        .sink(sink)
        .set_parallelism(3);
    env.execute("broadcast").unwrap();

    let got = out.values();
    assert_eq!(got.len(), 600, "each of 200 records reaches 3 subtasks");
    let expected: Vec<(u32, u32)> = (0..3).flat_map(|s| (0..200).map(move |v| (s, v))).collect();
    assert_eq!(sorted(got), expected);
}

#[test]
fn rebalance_spreads_batches_over_all_subtasks_without_loss() {
    let env = env_with_parallelism(1);
    // Small batches so round-robin (per batch) has something to spread.
    env.set_config("cairn.runtime.batch-size", "10").unwrap();
    let (sink, out) = CollectSink::new();
    env.from_collection((0..300u32).collect())
        .uid("src")
        .rebalance()
        .process(TagSubtask)
        .uid("tag")
        .set_parallelism(3)
        .sink(sink)
        .set_parallelism(3);
    env.execute("rebalance").unwrap();

    let got = out.values();
    assert_eq!(
        sorted(got.iter().map(|(_, v)| *v).collect()),
        (0..300).collect::<Vec<u32>>()
    );
    let per_subtask = got.iter().fold(BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(*s).or_insert(0usize) += 1;
        m
    });
    assert_eq!(
        per_subtask.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "every subtask gets records: {per_subtask:?}"
    );
}

#[test]
fn forward_keeps_records_in_the_same_subtask_index() {
    let env = env_with_parallelism(3);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(3000, 5))
        .uid("gen")
        .forward()
        .process(TagSubtask)
        .uid("tag")
        .start_new_chain()
        .sink(sink);
    env.execute("forward").unwrap();

    // The generator gives subtask s the indices [s * 1000, (s + 1) * 1000).
    let got = out.values();
    assert_eq!(got.len(), 3000);
    for (s, e) in got {
        assert_eq!(s as u64, e.index / 1000, "event {} crossed subtasks", e.index);
    }
}

#[test]
fn forward_with_different_parallelism_is_refused() {
    let env = env_with_parallelism(2);
    env.source(GeneratorSource::new(10, 1))
        .uid("gen")
        .forward()
        .map(|e: GeneratedEvent| e.index)
        .name("narrow map")
        .set_parallelism(1)
        .sink(DiscardSink);
    let err = env.execute("bad forward").unwrap_err().to_string();
    common::assert_contains_all(&err, &["forward", "narrow map", "rebalance"]);
}

/// (key, sum of values, count) rolled per key.
type Roll = (u64, u64, u64);

fn roll(a: Roll, b: Roll) -> Roll {
    (a.0, a.1.wrapping_add(b.1), a.2 + b.2)
}

fn oracle_rolls(count: u64, keys: u64) -> BTreeMap<u64, Roll> {
    let mut m = BTreeMap::new();
    for e in oracle_events(count, keys) {
        let r = m.entry(e.key).or_insert((e.key, 0u64, 0u64));
        *r = roll(*r, (e.key, e.value, 1));
    }
    m
}

#[test]
fn key_by_reduce_last_value_per_key_equals_the_oracle() {
    let env = env_with_parallelism(2);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(COUNT, KEYS))
        .uid("gen")
        .map(|e: GeneratedEvent| (e.key, e.value, 1u64))
        .key_by(|r: &Roll| r.0)
        .reduce(roll)
        .uid("sum")
        .sink(sink);
    env.execute("reduce").unwrap();

    let got = out.values();
    // A rolling reduce emits once per input record.
    assert_eq!(got.len() as u64, COUNT);
    // Each key is reduced in one subtask and its sink is chained to it, so the
    // arrival order per key is the emission order: the last one is final.
    let mut last = BTreeMap::new();
    for r in &got {
        last.insert(r.0, *r);
    }
    assert_eq!(last, oracle_rolls(COUNT, KEYS));
    // Counts per key rise 1, 2, ..., n without gaps or repeats.
    for (k, (_, _, n)) in oracle_rolls(COUNT, KEYS) {
        let counts: Vec<u64> = got.iter().filter(|r| r.0 == k).map(|r| r.2).collect();
        assert_eq!(counts, (1..=n).collect::<Vec<_>>(), "key {k}");
    }
}

/// Average of values per key; the accumulator carries the key so the result
/// names it.
#[derive(Clone)]
struct Average;

impl AggregateFunction<(u64, u64)> for Average {
    type Acc = (u64, u128, u64);
    type Out = (u64, f64, u64);
    fn create_accumulator(&self) -> Self::Acc {
        (0, 0, 0)
    }
    fn add(&self, value: &(u64, u64), acc: &mut Self::Acc) {
        acc.0 = value.0;
        acc.1 += value.1 as u128;
        acc.2 += 1;
    }
    fn get_result(&self, acc: &Self::Acc) -> Self::Out {
        (acc.0, acc.1 as f64 / acc.2 as f64, acc.2)
    }
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (a.0, a.1 + b.1, a.2 + b.2)
    }
}

#[test]
fn key_by_aggregate_computes_the_average_per_key() {
    let env = env_with_parallelism(2);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(COUNT, KEYS))
        .uid("gen")
        .map(|e: GeneratedEvent| (e.key, e.value % 10_000))
        .key_by(|r: &(u64, u64)| r.0)
        .aggregate(Average)
        .uid("avg")
        .sink(sink);
    env.execute("aggregate").unwrap();

    let mut oracle: BTreeMap<u64, (u128, u64)> = BTreeMap::new();
    for e in oracle_events(COUNT, KEYS) {
        let a = oracle.entry(e.key).or_default();
        a.0 += (e.value % 10_000) as u128;
        a.1 += 1;
    }
    let got = out.values();
    assert_eq!(got.len() as u64, COUNT);
    // The final result per key is the one that saw all its records.
    let finals: BTreeMap<u64, (f64, u64)> = got
        .iter()
        .filter(|(k, _, n)| oracle[k].1 == *n)
        .map(|(k, avg, n)| (*k, (*avg, *n)))
        .collect();
    assert_eq!(finals.len() as u64, KEYS);
    for (k, (sum, n)) in oracle {
        let (avg, seen) = finals[&k];
        assert_eq!(seen, n);
        assert!(
            (avg - sum as f64 / n as f64).abs() < 1e-9,
            "key {k}: {avg} vs {}",
            sum as f64 / n as f64
        );
    }
}

/// Counts records and sums values per key; emits (key, count, sum) once, when
/// event time ends with the bounded input.
#[derive(Clone, Default)]
struct CountAtEnd {
    count: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, u64)> for CountAtEnd {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, v: (u64, u64), ctx: &mut KeyedContext<'_, u64, (u64, u64, u64)>) -> OpResult {
        let s = self.count.as_ref().ok_or("not opened")?;
        let (n, sum) = s.value(ctx)?.unwrap_or((0, 0));
        s.update(ctx, &(n + 1, sum.wrapping_add(v.1)))?;
        ctx.register_event_time_timer(i64::MAX)?;
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, u64, u64)>) -> OpResult {
        let s = self.count.as_ref().ok_or("not opened")?;
        let (n, sum) = s.value(ctx)?.unwrap_or((0, 0));
        let k = *ctx.key();
        ctx.collect((k, n, sum));
        Ok(())
    }
}

/// A job with stateless operators, a keyed operator and a final map; the
/// output does not depend on ordering, so it can be compared across runs.
fn pipeline(env: &StreamEnv, new_chains: bool) -> Collected<(u64, u64, u64)> {
    let (sink, out) = CollectSink::new();
    let mut s = env
        .source(GeneratorSource::new(COUNT, KEYS))
        .uid("gen")
        .map(|e: GeneratedEvent| (e.key, e.value % 997));
    if new_chains {
        s = s.start_new_chain();
    }
    let mut f = s.filter(|(_, v)| v % 5 != 0);
    if new_chains {
        f = f.start_new_chain();
    }
    let mut m = f
        .key_by(|r: &(u64, u64)| r.0)
        .process(CountAtEnd::default())
        .uid("count")
        .map(|(k, n, sum)| (k * 10, n, sum));
    if new_chains {
        m = m.start_new_chain();
    }
    m.sink(sink);
    out
}

fn pipeline_oracle() -> Vec<(u64, u64, u64)> {
    let mut m: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for e in oracle_events(COUNT, KEYS) {
        let v = e.value % 997;
        if v % 5 != 0 {
            let a = m.entry(e.key).or_default();
            a.0 += 1;
            a.1 = a.1.wrapping_add(v);
        }
    }
    m.into_iter().map(|(k, (n, s))| (k * 10, n, s)).collect()
}

#[test]
fn chaining_does_not_change_results() {
    let chained = {
        let env = env_with_parallelism(2);
        let out = pipeline(&env, false);
        env.execute("chained").unwrap();
        sorted(out.values())
    };
    let unchained = {
        let env = env_with_parallelism(2);
        let out = pipeline(&env, true);
        env.execute("unchained").unwrap();
        sorted(out.values())
    };
    assert_eq!(chained, pipeline_oracle());
    assert_eq!(unchained, chained);
}

#[test]
fn parallelism_1_2_4_give_the_same_results() {
    let mut results = Vec::new();
    for p in [1, 2, 4] {
        let env = env_with_parallelism(p);
        let out = pipeline(&env, false);
        env.execute(&format!("p{p}")).unwrap();
        results.push((p, sorted(out.values())));
    }
    for (p, r) in &results {
        assert_eq!(*r, pipeline_oracle(), "parallelism {p}");
    }
}

#[test]
fn a_bounded_job_ends_by_itself() {
    let n = common::execute_with_hang_detector(std::time::Duration::from_secs(120), || {
        let env = env_with_parallelism(2);
        let (sink, out) = CollectSink::new();
        env.source(GeneratorSource::new(5000, 3)).uid("gen").sink(sink);
        env.execute("bounded").map_err(|e| e.to_string())?;
        Ok::<_, String>(out.values().len())
    });
    assert_eq!(n.unwrap(), 5000);
}

/// `JobResult::source_records` counts what the sources emitted, whatever is
/// chained after them (a filter, a sink) or not.
#[test]
fn job_result_counts_the_records_the_sources_emitted() {
    for chain in ["sink", "filter", "none"] {
        let env = env_with_parallelism(2);
        let s = env.source(GeneratorSource::new(5000, 3)).uid("gen");
        match chain {
            "sink" => {
                s.sink(DiscardSink);
            }
            "filter" => {
                s.filter(|e| e.index % 10 == 0).sink(DiscardSink);
            }
            _ => {
                s.rebalance().sink(DiscardSink).start_new_chain();
            }
        }
        let r = env.execute("source records").unwrap();
        assert_eq!(r.source_records, 5000, "source chained to: {chain}");
    }
}

#[test]
fn generator_emits_each_index_once_at_any_parallelism() {
    let count = 1001;
    let mut runs = Vec::new();
    for p in [1, 3] {
        let env = env_with_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.source(GeneratorSource::new(count, 7).seed(42))
            .uid("gen")
            .sink(sink);
        env.execute("generator").unwrap();
        let events = out.records();
        let indices: Vec<u64> = sorted(events.iter().map(|r| r.value.index).collect());
        assert_eq!(indices, (0..count).collect::<Vec<_>>(), "parallelism {p}");
        let g = GeneratorSource::new(count, 7).seed(42);
        for r in &events {
            assert_eq!(r.value, g.event(r.value.index));
            assert_eq!(r.timestamp, r.value.timestamp, "record timestamp is event time");
        }
        let by_index: BTreeSet<(u64, u64)> = events.iter().map(|r| (r.value.index, r.value.value)).collect();
        runs.push(by_index);
    }
    assert_eq!(runs[0], runs[1], "same events at parallelism 1 and 3");
}

/// Emits each value on the main output and, for late-numbered ones, to a side
/// output from inside a keyed function.
#[derive(Clone)]
struct KeyedSplit {
    big: OutputTag<(u64, u64)>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for KeyedSplit {
    fn process_element(&mut self, v: (u64, u64), ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        if v.1 >= 500 {
            ctx.output(&self.big, v);
        } else {
            ctx.collect(v);
        }
        Ok(())
    }
}

#[test]
fn keyed_process_function_side_outputs_reach_their_consumer() {
    let env = env_with_parallelism(2);
    let big = OutputTag::<(u64, u64)>::new("big");
    let split = env
        .source(GeneratorSource::new(1000, 5))
        .uid("gen")
        .map(|e: GeneratedEvent| (e.key, e.index))
        .key_by(|r: &(u64, u64)| r.0)
        .process(KeyedSplit { big: big.clone() })
        .uid("split");
    let (main_sink, main) = CollectSink::new();
    let (big_sink, bigs) = CollectSink::new();
    split.sink(main_sink);
    split.side_output(&big).sink(big_sink);
    env.execute("keyed side output").unwrap();

    let all: Vec<(u64, u64)> = (0..1000).map(|i| (i % 5, i)).collect();
    assert_eq!(
        sorted(main.values()),
        sorted(all.iter().copied().filter(|r| r.1 < 500).collect())
    );
    assert_eq!(
        sorted(bigs.values()),
        sorted(all.into_iter().filter(|r| r.1 >= 500).collect())
    );
}
