//! Keyed state end to end: every state kind through a KeyedProcessFunction
//! with a per-key oracle, isolation between keys, TTL semantics, misuse
//! errors, and the key-group placement of keys on subtasks.
// `x % n == 0` reads plainly and keeps the workspace MSRV (1.80).
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn::prelude::*;
use cairn::runtime::time::Clock;
use cairn::state::keygroup::{key_group_for_key, subtask_for_key_group};
use cairn::state::TtlUpdateType;
use common::{assert_contains_all, env_with_parallelism, sorted, Ack, Backend, ManualClock, PacedSource};

const KEYS: u64 = 7;

/// (key, value) pairs in a fixed order, with repeated keys.
fn input(n: u64) -> Vec<(u64, u64)> {
    (0..n).map(|i| (i * 5 % KEYS, i)).collect()
}

// ---- ValueState ---------------------------------------------------------------------------------

/// Emits (key, count before this record, count after).
#[derive(Clone, Default)]
struct Counter {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, u64)> for Counter {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _v: (u64, u64), ctx: &mut KeyedContext<'_, u64, (u64, u64, u64)>) -> OpResult {
        let s = self.count.as_ref().ok_or("not opened")?;
        let before = s.value(ctx)?.unwrap_or(0);
        s.update(ctx, &(before + 1))?;
        let after = s.value(ctx)?.ok_or("value vanished after update")?;
        let k = *ctx.key();
        ctx.collect((k, before, after));
        Ok(())
    }
}

fn value_state_counts_per_key_in_isolation(backend: Backend) {
    let env = env_with_parallelism(3);
    backend.apply(&env);
    let (sink, out) = CollectSink::new();
    env.from_collection(input(2000))
        .uid("src")
        .key_by(|r: &(u64, u64)| r.0)
        .process(Counter::default())
        .uid("counter")
        .sink(sink);
    env.execute("value state").unwrap();

    let mut per_key: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, _) in input(2000) {
        *per_key.entry(k).or_default() += 1;
    }
    let got = out.values();
    assert_eq!(got.len(), 2000);
    for (k, n) in per_key {
        // Each key sees its own counter only: 0..n before, 1..=n after.
        let mut mine: Vec<(u64, u64)> = got.iter().filter(|r| r.0 == k).map(|r| (r.1, r.2)).collect();
        mine.sort();
        let expected: Vec<(u64, u64)> = (0..n).map(|i| (i, i + 1)).collect();
        assert_eq!(mine, expected, "key {k}");
    }
}

// ---- ListState ----------------------------------------------------------------------------------

/// Appends each value; at the end emits the list, then checks `update` and
/// `clear` on it.
#[derive(Clone, Default)]
struct Lister {
    list: Option<ListState<u64>>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ListOut {
    Len(u64, usize),
    Final(u64, Vec<u64>),
    AfterUpdate(u64, Vec<u64>),
    AfterClear(u64, usize),
}

impl KeyedProcessFunction<u64, (u64, u64), ListOut> for Lister {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.list = Some(ctx.list_state(ListStateDescriptor::new("items"))?);
        Ok(())
    }

    fn process_element(&mut self, v: (u64, u64), ctx: &mut KeyedContext<'_, u64, ListOut>) -> OpResult {
        let l = self.list.as_ref().ok_or("not opened")?;
        l.add(ctx, &v.1)?;
        let len = l.get(ctx)?.len();
        ctx.collect(ListOut::Len(v.0, len));
        ctx.register_event_time_timer(i64::MAX)?;
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, ListOut>) -> OpResult {
        let l = self.list.as_ref().ok_or("not opened")?;
        let k = *ctx.key();
        let all = l.get(ctx)?;
        ctx.collect(ListOut::Final(k, all.clone()));
        let sum: u64 = all.iter().sum();
        l.update(ctx, &[sum, k])?;
        let updated = l.get(ctx)?;
        ctx.collect(ListOut::AfterUpdate(k, updated));
        l.clear(ctx)?;
        let cleared = l.get(ctx)?.len();
        ctx.collect(ListOut::AfterClear(k, cleared));
        Ok(())
    }
}

fn list_state_appends_in_order_and_updates_and_clears(backend: Backend) {
    let env = env_with_parallelism(2);
    backend.apply(&env);
    let (sink, out) = CollectSink::new();
    // One source subtask feeding each key's subtask through one channel keeps
    // each key's order, so the lists can be compared exactly.
    env.from_collection(input(700))
        .uid("src")
        .key_by(|r: &(u64, u64)| r.0)
        .process(Lister::default())
        .uid("lister")
        .sink(sink);
    env.execute("list state").unwrap();

    let mut oracle: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (k, v) in input(700) {
        oracle.entry(k).or_default().push(v);
    }
    let got = out.values();
    let mut expected = Vec::new();
    for (k, list) in &oracle {
        for i in 1..=list.len() {
            expected.push(ListOut::Len(*k, i));
        }
        expected.push(ListOut::Final(*k, list.clone()));
        expected.push(ListOut::AfterUpdate(*k, vec![list.iter().sum(), *k]));
        expected.push(ListOut::AfterClear(*k, 0));
    }
    assert_eq!(sorted(got), sorted(expected));
}

// ---- MapState -----------------------------------------------------------------------------------

/// Word counts per key in a MapState: every record adds one to its word; a
/// word that reaches 3 is removed. At the end emits what the map holds.
#[derive(Clone, Default)]
struct WordCounts {
    words: Option<MapState<String, u64>>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MapReport {
    key: u64,
    entries: Vec<(String, u64)>,
    keys: Vec<String>,
    contains_w0: bool,
    contains_missing: bool,
    is_empty: bool,
    empty_after_removing_all: bool,
}

fn word_of(v: u64) -> String {
    format!("w{}", v % 4)
}

impl KeyedProcessFunction<u64, (u64, u64), MapReport> for WordCounts {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.words = Some(ctx.map_state(MapStateDescriptor::new("words"))?);
        Ok(())
    }

    fn process_element(&mut self, v: (u64, u64), ctx: &mut KeyedContext<'_, u64, MapReport>) -> OpResult {
        let m = self.words.as_ref().ok_or("not opened")?;
        let w = word_of(v.1 / KEYS);
        let n = m.get(ctx, &w)?.unwrap_or(0) + 1;
        if n == 3 {
            m.remove(ctx, &w)?;
            if m.contains(ctx, &w)? {
                return Err(format!("'{w}' still present after remove").into());
            }
        } else {
            m.put(ctx, &w, &n)?;
        }
        ctx.register_event_time_timer(i64::MAX)?;
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, MapReport>) -> OpResult {
        let m = self.words.as_ref().ok_or("not opened")?;
        let entries = sorted(m.entries(ctx)?);
        let keys = sorted(m.keys(ctx)?);
        let contains_w0 = m.contains(ctx, &"w0".to_string())?;
        let contains_missing = m.contains(ctx, &"never".to_string())?;
        let is_empty = m.is_empty(ctx)?;
        for k in &keys {
            m.remove(ctx, k)?;
        }
        let empty_after_removing_all = m.is_empty(ctx)?;
        let key = *ctx.key();
        ctx.collect(MapReport {
            key,
            entries,
            keys,
            contains_w0,
            contains_missing,
            is_empty,
            empty_after_removing_all,
        });
        Ok(())
    }
}

fn map_state_put_get_remove_entries_keys_contains_is_empty(backend: Backend) {
    let env = env_with_parallelism(2);
    backend.apply(&env);
    let (sink, out) = CollectSink::new();
    let records = input(7 * 9 + 3);
    env.from_collection(records.clone())
        .uid("src")
        .key_by(|r: &(u64, u64)| r.0)
        .process(WordCounts::default())
        .uid("words")
        .sink(sink);
    env.execute("map state").unwrap();

    let mut oracle: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for (k, v) in records {
        let m = oracle.entry(k).or_default();
        let w = word_of(v / KEYS);
        let n = m.get(&w).copied().unwrap_or(0) + 1;
        if n == 3 {
            m.remove(&w);
        } else {
            m.insert(w, n);
        }
    }
    let expected: Vec<MapReport> = oracle
        .into_iter()
        .map(|(key, m)| MapReport {
            key,
            keys: m.keys().cloned().collect(),
            contains_w0: m.contains_key("w0"),
            contains_missing: false,
            is_empty: m.is_empty(),
            entries: m.into_iter().collect(),
            empty_after_removing_all: true,
        })
        .collect();
    // The oracle must exercise both outcomes of the removal rule.
    assert!(expected.iter().any(|r| r.entries.len() < 4));
    assert!(expected.iter().any(|r| !r.entries.is_empty()));
    assert_eq!(sorted(out.values()), expected);
}

// ---- ReducingState and AggregatingState ---------------------------------------------------------

/// Max via ReducingState and (sum, count) via AggregatingState, emitted at the end.
#[derive(Clone)]
struct MaxAndMean {
    max: Option<ReducingState<u64>>,
    mean: Option<AggregatingState<(u64, u64), Mean>>,
}

#[derive(Clone)]
struct Mean;

impl AggregateFunction<(u64, u64)> for Mean {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, v: &(u64, u64), acc: &mut (u64, u64)) {
        acc.0 += v.1;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, u64, u64)> for MaxAndMean {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.max = Some(ctx.reducing_state(ReducingStateDescriptor::new("max"), |a: u64, b| a.max(b))?);
        self.mean = Some(ctx.aggregating_state(AggregatingStateDescriptor::new("mean"), Mean)?);
        Ok(())
    }

    fn process_element(&mut self, v: (u64, u64), ctx: &mut KeyedContext<'_, u64, (u64, u64, u64, u64)>) -> OpResult {
        self.max.as_ref().ok_or("not opened")?.add(ctx, v.1 * 7 % 1000)?;
        self.mean.as_ref().ok_or("not opened")?.add(ctx, &v)?;
        ctx.register_event_time_timer(i64::MAX)?;
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, u64, u64, u64)>) -> OpResult {
        let max = self.max.as_ref().ok_or("not opened")?.get(ctx)?.ok_or("no max")?;
        let (sum, n) = self.mean.as_ref().ok_or("not opened")?.get(ctx)?.ok_or("no mean")?;
        let k = *ctx.key();
        ctx.collect((k, max, sum, n));
        Ok(())
    }
}

fn reducing_and_aggregating_state_fold_per_key(backend: Backend) {
    let env = env_with_parallelism(3);
    backend.apply(&env);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(5000, KEYS))
        .uid("gen")
        .map(|e: GeneratedEvent| (e.key, e.index))
        .key_by(|r: &(u64, u64)| r.0)
        .process(MaxAndMean { max: None, mean: None })
        .uid("fold")
        .sink(sink);
    env.execute("reducing and aggregating").unwrap();

    let mut oracle: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for i in 0..5000u64 {
        let e = oracle.entry(i % KEYS).or_default();
        e.0 = e.0.max(i * 7 % 1000);
        e.1 += i;
        e.2 += 1;
    }
    let expected: Vec<(u64, u64, u64, u64)> = oracle.into_iter().map(|(k, (m, s, n))| (k, m, s, n)).collect();
    assert_eq!(sorted(out.values()), expected);
}

// ---- TTL ----------------------------------------------------------------------------------------

/// Reads then writes a TTL'd value per record; emits whether the read found
/// a value. Bumps `ack` so the source emits the next record only after this
/// one was handled.
#[derive(Clone)]
struct TtlProbe {
    ttl: StateTtlConfig,
    write_every_record: bool,
    ack: Ack,
    state: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, u64, (u64, bool)> for TtlProbe {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.state = Some(ctx.value_state(ValueStateDescriptor::new("ttl-value").with_ttl(self.ttl))?);
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut KeyedContext<'_, u64, (u64, bool)>) -> OpResult {
        let s = self.state.as_ref().ok_or("not opened")?;
        let found = s.value(ctx)?.is_some();
        if self.write_every_record || v == 0 {
            s.update(ctx, &v)?;
        }
        ctx.collect((v, found));
        self.ack.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Processing time at which the TTL tests' clock starts.
const T0: i64 = 1_000_000;

/// Runs `n` records of one key, record `i` processed at exactly
/// `T0 + i * step_ms` of processing time (a manual clock the source moves
/// forward, each record emitted only after the previous one was processed);
/// returns, per record, whether its read found a value.
fn run_ttl(ttl: StateTtlConfig, write_every_record: bool, n: u64, step_ms: i64) -> Vec<bool> {
    let env = env_with_parallelism(1);
    let clock = ManualClock::new(T0);
    env.set_clock(clock.shared());
    let ack: Ack = Arc::default();
    let (sink, out) = CollectSink::new();
    env.source(
        PacedSource::new((0..n).collect())
            .clock_step(clock.clone(), step_ms)
            .ack(ack.clone()),
    )
    .uid("paced")
    .key_by(|_: &u64| 1u64)
    .process(TtlProbe {
        ttl,
        write_every_record,
        ack,
        state: None,
    })
    .uid("ttl")
    .sink(sink);
    env.execute("ttl").unwrap();
    assert_eq!(
        clock.now_ms(),
        T0 + (n as i64 - 1) * step_ms,
        "the job moved only the manual clock"
    );
    let got = out.values();
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
    got.into_iter().map(|r| r.1).collect()
}

/// `true` for records `1..first_miss`, `false` for record 0 and from
/// `first_miss` on.
fn visible_until(n: usize, first_miss: usize) -> Vec<bool> {
    (0..n).map(|i| i >= 1 && i < first_miss).collect()
}

#[test]
fn ttl_expires_values_between_records() {
    // TTL 1 ms, records 20 ms apart: nothing written survives to the next record.
    let ttl = StateTtlConfig::new(Duration::from_millis(1));
    assert_eq!(run_ttl(ttl, true, 6, 20), vec![false; 6]);
}

#[test]
fn ttl_longer_than_the_job_keeps_values() {
    // The control for the test above: a TTL of an hour keeps every value
    // written by the previous record.
    let ttl = StateTtlConfig::new(Duration::from_secs(3600));
    assert_eq!(run_ttl(ttl, true, 6, 20), vec![false, true, true, true, true, true]);
}

#[test]
fn ttl_on_create_and_write_expires_despite_reads() {
    // Written once at T0 (record 0), then only read every 40 ms. Reads do
    // not restart the clock: records 1..=7 (up to T0 + 280) see the value,
    // record 8 (T0 + 320 >= T0 + 300) and every later one do not.
    let ttl = StateTtlConfig::new(Duration::from_millis(300)).with_update_type(TtlUpdateType::OnCreateAndWrite);
    assert_eq!(run_ttl(ttl, false, 20, 40), visible_until(20, 8));
}

#[test]
fn ttl_expires_exactly_when_the_ttl_has_passed() {
    // Written at T0, read every 50 ms: at T0 + 250 still visible, at
    // T0 + 300 (write time + TTL) expired.
    let ttl = StateTtlConfig::new(Duration::from_millis(300)).with_update_type(TtlUpdateType::OnCreateAndWrite);
    assert_eq!(run_ttl(ttl, false, 10, 50), visible_until(10, 6));
}

#[test]
fn ttl_on_read_and_write_is_refreshed_by_reads() {
    // Same job with OnReadAndWrite: every read, 40 ms after the previous
    // one, restarts the 300 ms clock, so the value never expires.
    let ttl = StateTtlConfig::new(Duration::from_millis(300)).with_update_type(TtlUpdateType::OnReadAndWrite);
    assert_eq!(run_ttl(ttl, false, 20, 40), visible_until(20, 20));
}

#[test]
fn ttl_on_read_and_write_does_not_revive_an_expired_value() {
    // Reads 299 ms apart keep refreshing a 300 ms TTL; reads 300 ms apart
    // come too late: the first read misses, and so does every later one.
    let ttl = StateTtlConfig::new(Duration::from_millis(300)).with_update_type(TtlUpdateType::OnReadAndWrite);
    assert_eq!(run_ttl(ttl, false, 8, 299), visible_until(8, 8));
    assert_eq!(run_ttl(ttl, false, 8, 300), vec![false; 8]);
}

/// Like [`TtlProbe`] for map and list state: writes once (record 0), then only
/// reads. Emits (record, found).
#[derive(Clone)]
struct TtlCollectionProbe {
    ttl: StateTtlConfig,
    ack: Ack,
    map: Option<MapState<String, u64>>,
    list: Option<ListState<u64>>,
    use_map: bool,
}

impl KeyedProcessFunction<u64, u64, (u64, bool)> for TtlCollectionProbe {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.map = Some(ctx.map_state(MapStateDescriptor::new("ttl-map").with_ttl(self.ttl))?);
        self.list = Some(ctx.list_state(ListStateDescriptor::new("ttl-list").with_ttl(self.ttl))?);
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut KeyedContext<'_, u64, (u64, bool)>) -> OpResult {
        let map = self.map.as_ref().ok_or("not opened")?;
        let list = self.list.as_ref().ok_or("not opened")?;
        let found = if self.use_map {
            map.get(ctx, &"a".to_string())?.is_some()
        } else {
            !list.get(ctx)?.is_empty()
        };
        if v == 0 {
            map.put(ctx, &"a".to_string(), &v)?;
            list.add(ctx, &v)?;
        }
        ctx.collect((v, found));
        self.ack.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// 20 records 40 ms of processing time apart (manual clock); TTL 300 ms.
fn run_collection_ttl(use_map: bool, update: TtlUpdateType) -> Vec<bool> {
    let env = env_with_parallelism(1);
    let clock = ManualClock::new(T0);
    env.set_clock(clock.shared());
    let ack: Ack = Arc::default();
    let (sink, out) = CollectSink::new();
    let ttl = StateTtlConfig::new(Duration::from_millis(300)).with_update_type(update);
    env.source(
        PacedSource::new((0..20u64).collect())
            .clock_step(clock, 40)
            .ack(ack.clone()),
    )
    .uid("paced")
    .key_by(|_: &u64| 1u64)
    .process(TtlCollectionProbe {
        ttl,
        ack,
        map: None,
        list: None,
        use_map,
    })
    .uid("ttl")
    .sink(sink);
    env.execute("collection ttl").unwrap();
    out.values().into_iter().map(|r| r.1).collect()
}

#[test]
fn ttl_on_create_and_write_expires_map_and_list_entries() {
    // Only record 0 writes; reads up to T0 + 280 see it, from T0 + 320 not.
    for use_map in [true, false] {
        let found = run_collection_ttl(use_map, TtlUpdateType::OnCreateAndWrite);
        assert_eq!(found, visible_until(20, 8), "map={use_map}");
    }
}

#[test]
fn ttl_on_read_and_write_refreshes_map_and_list_entries_on_read() {
    // Reads 40 ms apart, each restarting the 300 ms clock: the entry written
    // by record 0 stays visible, as for ValueState.
    for use_map in [true, false] {
        let found = run_collection_ttl(use_map, TtlUpdateType::OnReadAndWrite);
        assert_eq!(
            found,
            visible_until(20, 20),
            "{}",
            if use_map { "map state" } else { "list state" }
        );
    }
}

// ---- Misuse -------------------------------------------------------------------------------------

/// Reads keyed state in `open`, where no key is current.
#[derive(Clone, Default)]
struct ReadsInOpen;

impl KeyedProcessFunction<u64, u64, u64> for ReadsInOpen {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        let s: ValueState<u64> = ctx.value_state(ValueStateDescriptor::new("early"))?;
        s.value(&mut *ctx.state)?;
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut KeyedContext<'_, u64, u64>) -> OpResult {
        ctx.collect(v);
        Ok(())
    }
}

#[test]
fn keyed_state_without_a_current_key_errors_clearly() {
    let env = env_with_parallelism(1);
    env.from_collection(vec![1u64, 2, 3])
        .uid("src")
        .key_by(|v: &u64| *v)
        .process(ReadsInOpen)
        .uid("early")
        .name("reads-in-open")
        .sink(DiscardSink);
    let err = env.execute("no key").unwrap_err().to_string();
    assert_contains_all(&err, &["reads-in-open", "'early'", "no current key"]);
}

/// Registers one state name as a value state and again as a list state.
#[derive(Clone, Default)]
struct TwoKinds;

impl KeyedProcessFunction<u64, u64, u64> for TwoKinds {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        let _v: ValueState<u64> = ctx.value_state(ValueStateDescriptor::new("shared-name"))?;
        let _l: ListState<u64> = ctx.list_state(ListStateDescriptor::new("shared-name"))?;
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut KeyedContext<'_, u64, u64>) -> OpResult {
        ctx.collect(v);
        Ok(())
    }
}

#[test]
fn a_state_name_registered_with_two_kinds_fails_naming_state_and_operator() {
    let env = env_with_parallelism(2);
    let (sink, out) = CollectSink::new();
    env.from_collection(vec![1u64, 2, 3])
        .uid("src")
        .key_by(|v: &u64| *v)
        .process(TwoKinds)
        .uid("two-kinds")
        .name("two-kinds-op")
        .sink(sink);
    let err = env.execute("two kinds").unwrap_err().to_string();
    assert_contains_all(&err, &["two-kinds-op", "'shared-name'", "Value", "List"]);
    assert!(out.values().is_empty());
}

// ---- Key groups ---------------------------------------------------------------------------------

/// Emits (key, subtask, parallelism, max parallelism) of the subtask that got the key.
#[derive(Clone)]
struct WhereAmI;

impl KeyedProcessFunction<u64, u64, (u64, u32, u32, u32)> for WhereAmI {
    fn process_element(&mut self, _v: u64, ctx: &mut KeyedContext<'_, u64, (u64, u32, u32, u32)>) -> OpResult {
        let k = *ctx.key();
        let i = ctx.info();
        let row = (k, i.subtask, i.parallelism, i.max_parallelism);
        ctx.collect(row);
        Ok(())
    }
}

#[test]
fn each_key_is_processed_by_the_subtask_its_key_group_names() {
    for p in [2u32, 3] {
        for max_p in [128u32, 7] {
            let env = env_with_parallelism(p);
            let (sink, out) = CollectSink::new();
            env.source(GeneratorSource::new(2000, 200))
                .uid("gen")
                .map(|e: GeneratedEvent| e.key)
                .key_by(|k: &u64| *k)
                .process(WhereAmI)
                .uid("where")
                .set_max_parallelism(max_p)
                .sink(sink);
            env.execute("key groups").unwrap();

            let got = out.values();
            assert_eq!(got.len(), 2000);
            let mut used = BTreeSet::new();
            for (k, subtask, par, mp) in got {
                assert_eq!((par, mp), (p, max_p));
                let kg = key_group_for_key(&k, max_p).unwrap();
                assert_eq!(
                    subtask,
                    subtask_for_key_group(max_p, p, kg),
                    "key {k} (group {kg}) at p={p}, max_p={max_p}"
                );
                used.insert(subtask);
            }
            assert_eq!(used.len() as u32, p, "200 keys reach every subtask");
        }
    }
}

on_every_backend!(
    value_state_counts_per_key_in_isolation,
    list_state_appends_in_order_and_updates_and_clears,
    map_state_put_get_remove_entries_keys_contains_is_empty,
    reducing_and_aggregating_state_fold_per_key,
);
