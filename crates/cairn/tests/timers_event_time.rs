//! Timers and event time end to end: event-time timers (order, de-duplication,
//! deletion), processing-time timers, watermark generation and idleness.
// `x % n == 0` reads plainly and keeps the workspace MSRV (1.80).
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::collection::CollectionSource;
use cairn::prelude::*;
use common::{env_with_parallelism, Backend, PacedSource};

/// Records are (key, event time).
type Ev = (u64, i64);

fn by_event_time() -> WatermarkStrategy<Ev> {
    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(3)).with_timestamp_assigner(|e: &Ev, _| e.1)
}

/// Per record at time t: registers t+5 twice (de-duplicated), registers t+7
/// and deletes it again (never fires). Each firing emits
/// (key, timer time, watermark at firing, whether the timer was still due).
#[derive(Clone)]
struct TimerProbe;

impl KeyedProcessFunction<u64, Ev, (u64, i64, i64)> for TimerProbe {
    fn process_element(&mut self, e: Ev, ctx: &mut KeyedContext<'_, u64, (u64, i64, i64)>) -> OpResult {
        ctx.register_event_time_timer(e.1 + 5)?;
        ctx.register_event_time_timer(e.1 + 5)?;
        ctx.register_event_time_timer(e.1 + 7)?;
        ctx.delete_event_time_timer(e.1 + 7)?;
        Ok(())
    }

    fn on_timer(&mut self, ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, i64, i64)>) -> OpResult {
        if ctx.time_domain() != Some(TimeDomain::EventTime) {
            return Err("event-time timer reported another domain".into());
        }
        if ctx.timestamp() != Some(ts) {
            return Err(format!("timer {ts} fired with timestamp {:?}", ctx.timestamp()).into());
        }
        let k = *ctx.key();
        let wm = ctx.current_watermark();
        ctx.collect((k, ts, wm));
        Ok(())
    }
}

fn event_time_timers_fire_in_order_once_and_not_when_deleted(backend: Backend) {
    let env = env_with_parallelism(2);
    backend.apply(&env);
    // Small batches so watermarks advance many times during the input.
    env.set_config("cairn.runtime.batch-size", "4").unwrap();
    // Out-of-order times within the bound, repeated (key, time) pairs, and
    // records whose deleted t+7 is another record's pending t+5.
    let mut events: Vec<Ev> = Vec::new();
    for i in 0..400i64 {
        let key = (i % 5) as u64;
        let t = 10 * (i / 5) + [0, 2, 1, 2, 0][(i % 5) as usize];
        events.push((key, t));
        if i % 7 == 0 {
            events.push((key, t)); // duplicate registration from another record
        }
        if i % 11 == 0 {
            // Registers and deletes t+5: deletes the pending timer of the
            // record above (event time is still below t+5 here).
            events.push((key, t - 2));
        }
    }
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(CollectionSource::new(events.clone()), by_event_time())
        .uid("src")
        .set_parallelism(1)
        .key_by(|e: &Ev| e.0)
        .process(TimerProbe)
        .uid("timers")
        .sink(sink);
    env.execute("event-time timers").unwrap();

    // Oracle: replay registrations and deletions in input order; a timer
    // fires once per distinct time. (No timer here fires before a later
    // record deletes or re-registers it, so the replay is exact.)
    let mut pending: BTreeMap<u64, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for (k, t) in &events {
        let s = pending.entry(*k).or_default();
        s.insert(t + 5);
        s.insert(t + 7);
        s.remove(&(t + 7));
    }
    let got = out.values();
    let mut fired: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for (k, ts, wm) in &got {
        assert!(*ts <= *wm, "timer {ts} of key {k} fired at watermark {wm}");
        fired.entry(*k).or_default().push(*ts);
    }
    for (k, times) in &fired {
        let mut sorted_times = times.clone();
        sorted_times.sort();
        sorted_times.dedup();
        assert_eq!(times, &sorted_times, "key {k}: timers out of order or twice");
    }
    let expected: BTreeMap<u64, Vec<i64>> = pending.into_iter().map(|(k, s)| (k, s.into_iter().collect())).collect();
    assert_eq!(fired, expected);
    // Most timers fired before the end of input (the final watermark is MAX).
    let early = got.iter().filter(|(_, _, wm)| *wm < i64::MAX).count();
    assert!(early > got.len() / 2, "{early} of {} fired early", got.len());
}

/// Registers one processing-time timer per key (50 ms ahead) on the first
/// record of the key and counts records in `seen_records`; on firing emits
/// (key, timer time, processing time at firing) and, once every key's timer
/// fired, opens the gate that keeps the source alive.
#[derive(Clone)]
struct ProcTimer {
    fired: Arc<AtomicBool>,
    keys: usize,
    seen: Option<ValueState<bool>>,
    seen_records: common::Ack,
    fired_keys: Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>,
}

impl KeyedProcessFunction<u64, u64, (u64, i64, i64)> for ProcTimer {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.seen = Some(ctx.value_state(ValueStateDescriptor::new("seen"))?);
        Ok(())
    }

    fn process_element(&mut self, _v: u64, ctx: &mut KeyedContext<'_, u64, (u64, i64, i64)>) -> OpResult {
        let seen = self.seen.as_ref().ok_or("not opened")?;
        if seen.value(ctx)?.is_none() {
            seen.update(ctx, &true)?;
            let at = ctx.current_processing_time() + 50;
            ctx.register_processing_time_timer(at)?;
        }
        self.seen_records.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn on_timer(&mut self, ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, i64, i64)>) -> OpResult {
        if ctx.time_domain() != Some(TimeDomain::ProcessingTime) {
            return Err("processing-time timer reported another domain".into());
        }
        let k = *ctx.key();
        let now = ctx.current_processing_time();
        ctx.collect((k, ts, now));
        let mut keys = self.fired_keys.lock().map_err(|_| "poisoned")?;
        keys.insert(k);
        if keys.len() == self.keys {
            self.fired.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// On a manual clock: every timer is registered at exactly `T0 + 50`, none
/// fires while the clock stands before that, all fire once it gets there,
/// seeing exactly that processing time.
fn processing_time_timers_fire_when_the_clock_reaches_them(backend: Backend) {
    const T0: i64 = 5_000_000;
    let env = env_with_parallelism(2);
    backend.apply(&env);
    let clock = common::ManualClock::new(T0);
    env.set_clock(clock.shared());
    let fired = Arc::new(AtomicBool::new(false));
    let seen_records = common::Ack::default();
    let (sink, out) = CollectSink::new();
    // The source stays alive until every key's timer fired (or a deadline far
    // away, which only a broken timer service reaches).
    env.source(PacedSource::new((0..40u64).collect()).hold_until(fired.clone()))
        .uid("src")
        .key_by(|v: &u64| v % 4)
        .process(ProcTimer {
            fired: fired.clone(),
            keys: 4,
            seen: None,
            seen_records: seen_records.clone(),
            fired_keys: Arc::default(),
        })
        .uid("proc-timers")
        .sink(sink);
    let job = env.execute_async("processing-time timers").unwrap();
    common::wait_until("all records processed", common::GATE_DEADLINE, || {
        seen_records.load(Ordering::SeqCst) == 40
    });
    clock.advance_to(T0 + 49);
    // One ms before the timers: the job may look at the clock as often as it
    // likes, nothing is due. (Timers read from the wall clock would have fired.)
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        out.values().is_empty(),
        "a timer fired before its time: {:?}",
        out.values()
    );
    clock.advance_to(T0 + 50);
    job.wait().unwrap();

    assert!(fired.load(Ordering::SeqCst), "not every processing-time timer fired");
    let mut got = out.values();
    got.sort();
    let expected: Vec<(u64, i64, i64)> = (0..4).map(|k| (k, T0 + 50, T0 + 50)).collect();
    assert_eq!(got, expected, "each key's timer fires exactly once, at its time");
}

/// Emits (index, timestamp, watermark seen) per record.
#[derive(Clone)]
struct SeeWatermark;

impl ProcessFunction<Ev, (usize, i64, i64)> for SeeWatermark {
    fn process_element(&mut self, e: Ev, ctx: &mut ProcessContext<'_, (usize, i64, i64)>) -> OpResult {
        let wm = ctx.current_watermark();
        ctx.collect((e.0 as usize, e.1, wm));
        Ok(())
    }
}

#[test]
fn bounded_out_of_orderness_watermarks_follow_max_ts_minus_bound_minus_one() {
    let env = env_with_parallelism(1);
    // One record per batch: a watermark follows every record.
    env.set_config("cairn.runtime.batch-size", "1").unwrap();
    let times: Vec<i64> = vec![100, 103, 101, 110, 104, 109, 120, 115, 121, 90, 130, 125];
    let events: Vec<Ev> = times.iter().enumerate().map(|(i, t)| (i as u64, *t)).collect();
    let bound = 5;
    let (sink, out) = CollectSink::new();
    let (sink2, out2) = CollectSink::new();
    let stream = env
        .source_with_watermarks(
            CollectionSource::new(events),
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(bound))
                .with_timestamp_assigner(|e: &Ev, _| e.1),
        )
        .uid("src")
        .set_parallelism(1);
    // Two consumers in their own tasks: they see watermarks that can only lag.
    stream.process(SeeWatermark).uid("first").sink(sink);
    stream.process(SeeWatermark).uid("second").sink(sink2);
    env.execute("watermarks").unwrap();

    let exact = |i: usize| -> i64 {
        if i == 0 {
            i64::MIN
        } else {
            times[..i].iter().max().unwrap() - bound as i64 - 1
        }
    };
    let first = out.values();
    let second = out2.values();
    assert_eq!(first.len(), times.len());
    assert_eq!(second.len(), times.len());
    for (name, seen) in [("first", &first), ("second", &second)] {
        let mut last = i64::MIN;
        for (i, ts, wm) in seen.iter() {
            assert_eq!(*ts, times[*i]);
            assert!(*wm >= last, "{name}: watermark went back from {last} to {wm}");
            assert!(
                *wm <= exact(*i),
                "{name}: record {i} saw watermark {wm} > {}",
                exact(*i)
            );
            last = *wm;
        }
    }
    // The record timestamps are the assigned event times.
    let recs = out.records();
    for r in &recs {
        assert_eq!(r.timestamp, r.value.1);
    }
}

#[test]
fn a_chained_operator_sees_exactly_the_watermark_of_the_records_before() {
    let env = env_with_parallelism(1);
    env.set_config("cairn.runtime.batch-size", "1").unwrap();
    let times: Vec<i64> = vec![100, 103, 101, 110, 104, 109, 120, 115, 121, 90, 130, 125];
    let events: Vec<Ev> = times.iter().enumerate().map(|(i, t)| (i as u64, *t)).collect();
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(
        CollectionSource::new(events),
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(5))
            .with_timestamp_assigner(|e: &Ev, _| e.1),
    )
    .uid("src")
    .set_parallelism(1)
    .process(SeeWatermark)
    .uid("chained")
    .sink(sink);
    env.execute("exact watermarks").unwrap();

    let got = out.values();
    let seen: Vec<i64> = got.iter().map(|r| r.2).collect();
    let expected: Vec<i64> = (0..times.len())
        .map(|i| {
            if i == 0 {
                i64::MIN
            } else {
                times[..i].iter().max().unwrap() - 6
            }
        })
        .collect();
    assert_eq!(seen, expected);
}

/// Registers an event-time timer at each record's time; on firing emits
/// (key, timer time, watermark) and, once `want` timers fired before the end
/// of input, releases the source.
#[derive(Clone)]
struct EarlyTimers {
    want: usize,
    early: Arc<std::sync::atomic::AtomicUsize>,
    release: Arc<AtomicBool>,
}

impl KeyedProcessFunction<u64, Ev, (u64, i64, i64)> for EarlyTimers {
    fn process_element(&mut self, e: Ev, ctx: &mut KeyedContext<'_, u64, (u64, i64, i64)>) -> OpResult {
        ctx.register_event_time_timer(e.1)?;
        Ok(())
    }

    fn on_timer(&mut self, ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, i64, i64)>) -> OpResult {
        let wm = ctx.current_watermark();
        let k = *ctx.key();
        ctx.collect((k, ts, wm));
        if wm < i64::MAX && self.early.fetch_add(1, Ordering::SeqCst) + 1 >= self.want {
            self.release.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[test]
fn an_idle_source_subtask_does_not_hold_back_event_time() {
    let env = env_with_parallelism(2);
    let release = Arc::new(AtomicBool::new(false));
    let early = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let events: Vec<(Ev, i64)> = (0..20i64).map(|i| (((i % 2) as u64, i * 10), i * 10)).collect();
    let (sink, out) = CollectSink::new();
    // Subtask 0 emits 20 records, then stays alive until timers fired early;
    // subtask 1 never emits and stays alive as long as subtask 0: only
    // idleness lets the downstream watermark advance before the end.
    env.source_with_watermarks(
        PacedSource::with_timestamps(events)
            .hold_until(release.clone())
            .idle_other_subtasks(),
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::ZERO).with_idleness(Duration::from_millis(50)),
    )
    .uid("src")
    .key_by(|e: &Ev| e.0)
    .process(EarlyTimers {
        want: 10,
        early: early.clone(),
        release: release.clone(),
    })
    .uid("early-timers")
    .sink(sink);
    env.execute("idleness").unwrap();

    assert!(
        release.load(Ordering::SeqCst),
        "event-time timers did not fire before the end of input although one source subtask was idle"
    );
    let got = out.values();
    assert_eq!(got.len(), 20, "every timer fires exactly once");
    let mut per_key: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for (k, ts, wm) in &got {
        assert!(ts <= wm);
        per_key.entry(*k).or_default().push(*ts);
    }
    for (k, times) in per_key {
        let expected: Vec<i64> = (0..20i64).filter(|i| (i % 2) as u64 == k).map(|i| i * 10).collect();
        assert_eq!(times, expected, "key {k}: in order");
    }
}

on_every_backend!(
    event_time_timers_fire_in_order_once_and_not_when_deleted,
    processing_time_timers_fire_when_the_clock_reaches_them,
);
