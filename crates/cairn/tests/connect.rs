//! Two-input operators end to end: co-process joins (plain and keyed), keyed
//! timers over two inputs, the broadcast state pattern (plain and keyed), and
//! the watermark of a two-input operator being the minimum of its inputs.

mod common;
use common::Backend;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::collection::CollectionSource;
use cairn::operators::two_input::{
    BroadcastContext, BroadcastProcessFunction, CoProcessContext, CoProcessFunction, KeyedBroadcastProcessFunction,
    KeyedCoContext, KeyedCoProcessFunction, KeyedReadOnlyBroadcastContext, ReadOnlyBroadcastContext,
};
use cairn::prelude::*;
use cairn::runtime::SubtaskInfo;
use serde::{Deserialize, Serialize};

/// A bounded source (parallelism 1) that emits `before`, then waits until
/// `gate` opens, then emits `after`. It makes the order in which two inputs
/// reach an operator deterministic without relying on timing. The deadline
/// only turns a broken gate into a failing test instead of a hang.
#[derive(Clone)]
struct GatedSource<T> {
    before: Vec<T>,
    after: Vec<T>,
    gate: Arc<dyn Fn() -> bool + Send + Sync>,
    stage: u8,
    started: Option<Instant>,
}

impl<T> GatedSource<T> {
    fn new(before: Vec<T>, after: Vec<T>, gate: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        GatedSource {
            before,
            after,
            gate: Arc::new(gate),
            stage: 0,
            started: None,
        }
    }
}

const GATE_DEADLINE: Duration = Duration::from_secs(60);
const AFTER_CHUNK: usize = 16;

impl<T: Clone + Send + 'static> Source<T> for GatedSource<T> {
    fn open(&mut self, _ctx: &mut SourceContext<'_>) -> OpResult {
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<T>>, max: usize) -> OpResult<SourceStatus> {
        match self.stage {
            0 => {
                out.extend(self.before.iter().cloned().map(StreamRecord::new));
                self.stage = 1;
                self.started = Some(Instant::now());
                Ok(SourceStatus::More)
            }
            1 => {
                let waited = self.started.map(|s| s.elapsed()).unwrap_or_default();
                if (self.gate)() || waited > GATE_DEADLINE {
                    self.stage = 2;
                    Ok(SourceStatus::More)
                } else {
                    Ok(SourceStatus::Pending(Duration::from_millis(1)))
                }
            }
            _ => {
                // Small polls, so that a rebalancing edge spreads the records.
                let n = self.after.len().min(max).min(AFTER_CHUNK);
                out.extend(self.after.drain(..n).map(StreamRecord::new));
                Ok(if self.after.is_empty() {
                    SourceStatus::Finished
                } else {
                    SourceStatus::More
                })
            }
        }
    }

    fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Non-keyed co-process join
// ---------------------------------------------------------------------------

/// Joins names and amounts by id, in whatever order they arrive. Each
/// amount is emitted once, with its name, when both are known.
#[derive(Clone, Default)]
struct NameAmountJoin {
    names: HashMap<u32, String>,
    waiting: HashMap<u32, Vec<i64>>,
}

impl CoProcessFunction<(u32, String), (u32, i64), (u32, String, i64)> for NameAmountJoin {
    fn process_element1(
        &mut self,
        (id, name): (u32, String),
        ctx: &mut CoProcessContext<'_, (u32, String, i64)>,
    ) -> OpResult {
        for amount in self.waiting.remove(&id).unwrap_or_default() {
            ctx.collect((id, name.clone(), amount));
        }
        self.names.insert(id, name);
        Ok(())
    }

    fn process_element2(
        &mut self,
        (id, amount): (u32, i64),
        ctx: &mut CoProcessContext<'_, (u32, String, i64)>,
    ) -> OpResult {
        match self.names.get(&id) {
            Some(name) => ctx.collect((id, name.clone(), amount)),
            None => self.waiting.entry(id).or_default().push(amount),
        }
        Ok(())
    }
}

fn co_process_joins_two_streams(backend: Backend) {
    let env = StreamEnv::new();
    backend.apply(&env);
    env.set_parallelism(1).unwrap();
    let names: Vec<(u32, String)> = (0..50).map(|i| (i, format!("name-{i}"))).collect();
    // Ids 40..60: the last ten have no name and must not appear.
    let amounts: Vec<(u32, i64)> = (0..300).map(|i| (40 + i % 20, i as i64)).collect();
    let (sink, got) = CollectSink::new();
    env.from_collection(names.clone())
        .uid("names")
        .connect(&env.from_collection(amounts.clone()).uid("amounts"))
        .process(NameAmountJoin::default())
        .uid("join")
        .sink(sink);
    env.execute("co-process join").unwrap();

    let by_id: HashMap<u32, String> = names.into_iter().collect();
    let expected: Vec<(u32, String, i64)> = amounts
        .into_iter()
        .filter_map(|(id, a)| by_id.get(&id).map(|n| (id, n.clone(), a)))
        .collect();
    assert_eq!(expected.len(), 150);
    assert_eq!(sorted(got.values()), sorted(expected));
}

#[test]
fn co_process_without_uid_is_refused() {
    let env = StreamEnv::new();
    env.from_collection(vec![(1u32, "a".to_string())])
        .uid("names")
        .connect(&env.from_collection(vec![(1u32, 1i64)]).uid("amounts"))
        .process(NameAmountJoin::default())
        .print();
    let err = env
        .build("no uid", None)
        .err()
        .expect("a stateful co-process needs a uid");
    assert!(err.to_string().contains("CoProcess"), "{err}");
}

// ---------------------------------------------------------------------------
// Keyed co-process: enrichment join with keyed state
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Order {
    id: u64,
    user: u64,
    amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Profile {
    user: u64,
    name: String,
}

/// (order id, user, user's name, amount, subtask that joined it)
type Enriched = (u64, u64, String, u64, u32);

/// Emits each order with its user's name as soon as both are present,
/// buffering orders in ListState until the profile arrives.
#[derive(Clone, Default)]
struct Enrich {
    profile: Option<ValueState<String>>,
    pending: Option<ListState<Order>>,
}

impl Enrich {
    fn states(&self) -> OpResult<(&ValueState<String>, &ListState<Order>)> {
        Ok((
            self.profile.as_ref().ok_or("profile state not registered")?,
            self.pending.as_ref().ok_or("pending state not registered")?,
        ))
    }
}

fn enriched(o: &Order, name: &str, subtask: u32) -> Enriched {
    (o.id, o.user, name.to_string(), o.amount, subtask)
}

impl KeyedCoProcessFunction<u64, Order, Profile, Enriched> for Enrich {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.profile = Some(ctx.value_state(ValueStateDescriptor::new("profile"))?);
        self.pending = Some(ctx.list_state(ListStateDescriptor::new("pending-orders"))?);
        Ok(())
    }

    fn process_element1(&mut self, order: Order, ctx: &mut KeyedCoContext<'_, u64, Enriched>) -> OpResult {
        let (profile, pending) = self.states()?;
        match profile.value(ctx)? {
            Some(name) => {
                let subtask = ctx.info().subtask;
                ctx.collect(enriched(&order, &name, subtask));
            }
            None => pending.add(ctx, &order)?,
        }
        Ok(())
    }

    fn process_element2(&mut self, p: Profile, ctx: &mut KeyedCoContext<'_, u64, Enriched>) -> OpResult {
        if p.user != *ctx.key() {
            return Err(format!("profile of user {} under key {}", p.user, ctx.key()).into());
        }
        let (profile, pending) = self.states()?;
        profile.update(ctx, &p.name)?;
        let subtask = ctx.info().subtask;
        for order in pending.get(ctx)? {
            ctx.collect(enriched(&order, &p.name, subtask));
        }
        pending.clear(ctx)?;
        Ok(())
    }
}

fn run_enrichment(parallelism: u32, orders: &[Order], profiles: &[Profile]) -> Vec<Enriched> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism).unwrap();
    let (sink, got) = CollectSink::new();
    let orders = env.from_collection(orders.to_vec()).uid("orders");
    let profiles = env.from_collection(profiles.to_vec()).uid("profiles");
    orders
        .connect(&profiles)
        .key_by(|o: &Order| o.user, |p: &Profile| p.user)
        .process(Enrich::default())
        .uid("enrich")
        .sink(sink);
    env.execute("enrichment join").unwrap();
    got.values()
}

#[test]
fn keyed_co_process_enrichment_join_is_equal_at_parallelism_1_and_3() {
    let orders: Vec<Order> = (0..400)
        .map(|i| Order {
            id: i,
            user: (i * 7) % 30,
            amount: i * 3 + 1,
        })
        .collect();
    // Users 25..30 have no profile: their orders stay pending forever.
    let profiles: Vec<Profile> = (0..25)
        .rev()
        .map(|u| Profile {
            user: u,
            name: format!("user-{u}"),
        })
        .collect();
    let oracle: Vec<(u64, u64, String, u64)> = sorted(
        orders
            .iter()
            .filter(|o| o.user < 25)
            .map(|o| (o.id, o.user, format!("user-{}", o.user), o.amount))
            .collect(),
    );

    let mut results = Vec::new();
    for p in [1u32, 3] {
        let got = run_enrichment(p, &orders, &profiles);
        // Both inputs of a key meet in one subtask.
        let mut subtask_of: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
        for r in &got {
            subtask_of.entry(r.1).or_default().insert(r.4);
        }
        assert!(
            subtask_of.values().all(|s| s.len() == 1),
            "a user was joined on several subtasks: {subtask_of:?}"
        );
        if p == 3 {
            let used: BTreeSet<u32> = subtask_of.values().flatten().copied().collect();
            assert!(used.len() > 1, "all keys on one subtask: {used:?}");
        }
        let without_subtask: Vec<(u64, u64, String, u64)> =
            sorted(got.into_iter().map(|(a, b, c, d, _)| (a, b, c, d)).collect());
        assert_eq!(without_subtask, oracle, "parallelism {p}");
        results.push(without_subtask);
    }
    assert_eq!(results[0], results[1]);
}

fn keyed_streams_connect_directly(backend: Backend) {
    let env = StreamEnv::new();
    backend.apply(&env);
    env.set_parallelism(2).unwrap();
    let orders = vec![
        Order {
            id: 1,
            user: 7,
            amount: 10,
        },
        Order {
            id: 2,
            user: 8,
            amount: 20,
        },
    ];
    let profiles = vec![Profile {
        user: 7,
        name: "seven".into(),
    }];
    let (sink, got) = CollectSink::new();
    let o = env.from_collection(orders).uid("orders").key_by(|o: &Order| o.user);
    let p = env
        .from_collection(profiles)
        .uid("profiles")
        .key_by(|p: &Profile| p.user);
    o.connect(&p).process(Enrich::default()).uid("enrich").sink(sink);
    env.execute("keyed connect").unwrap();
    let got: Vec<(u64, String)> = got.values().into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(got, vec![(1, "seven".to_string())]);
}

// ---------------------------------------------------------------------------
// Keyed co-process timers
// ---------------------------------------------------------------------------

/// Each first-input record (key, ts) sets a timer at ts + 100; when it fires
/// it reports how many second-input records of the key had timestamps up to
/// the timer. Timers fire only when both inputs' watermarks passed, so the
/// count is exact.
#[derive(Clone, Default)]
struct CountUntilTimer {
    seen: Option<ListState<i64>>,
}

const TIMER_DELAY: i64 = 100;

impl KeyedCoProcessFunction<u32, (u32, i64), (u32, i64), (u32, i64, usize)> for CountUntilTimer {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.seen = Some(ctx.list_state(ListStateDescriptor::new("seen"))?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        (_, ts): (u32, i64),
        ctx: &mut KeyedCoContext<'_, u32, (u32, i64, usize)>,
    ) -> OpResult {
        if ctx.timestamp() != Some(ts) {
            return Err(format!("record timestamp {:?} != {ts}", ctx.timestamp()).into());
        }
        ctx.register_event_time_timer(ts + TIMER_DELAY)
    }

    fn process_element2(
        &mut self,
        (_, ts): (u32, i64),
        ctx: &mut KeyedCoContext<'_, u32, (u32, i64, usize)>,
    ) -> OpResult {
        let seen = self.seen.as_ref().ok_or("seen state not registered")?;
        seen.add(ctx, &ts)?;
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedCoContext<'_, u32, (u32, i64, usize)>) -> OpResult {
        if ctx.time_domain() != Some(TimeDomain::EventTime) {
            return Err("expected an event-time timer".into());
        }
        if ctx.current_watermark() < timestamp {
            return Err("timer fired before the watermark reached it".into());
        }
        let seen = self.seen.as_ref().ok_or("seen state not registered")?;
        let n = seen.get(ctx)?.into_iter().filter(|t| *t <= timestamp).count();
        let key = *ctx.key();
        ctx.collect((key, timestamp, n));
        Ok(())
    }
}

fn keyed_co_process_timers_fire_per_key_when_both_inputs_pass_them(backend: Backend) {
    let env = StreamEnv::new();
    backend.apply(&env);
    env.set_parallelism(2).unwrap();
    let strategy = || WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(u32, i64), _| e.1);
    // Both inputs in ascending time; keys 0..5.
    let firsts: Vec<(u32, i64)> = (0..60).map(|i| ((i % 5) as u32, i * 10)).collect();
    let seconds: Vec<(u32, i64)> = (0..200).map(|i| ((i % 5) as u32, i * 4)).collect();
    let (sink, got) = CollectSink::new();
    let a = env
        .source_with_watermarks(CollectionSource::new(firsts.clone()), strategy())
        .set_parallelism(1)
        .uid("firsts");
    let b = env
        .source_with_watermarks(CollectionSource::new(seconds.clone()), strategy())
        .set_parallelism(1)
        .uid("seconds");
    a.connect(&b)
        .key_by(|e: &(u32, i64)| e.0, |e: &(u32, i64)| e.0)
        .process(CountUntilTimer::default())
        .uid("timers")
        .sink(sink);
    env.execute("keyed co-process timers").unwrap();

    let expected: Vec<(u32, i64, usize)> = firsts
        .iter()
        .map(|&(k, ts)| {
            let t = ts + TIMER_DELAY;
            let n = seconds.iter().filter(|s| s.0 == k && s.1 <= t).count();
            (k, t, n)
        })
        .collect();
    let records = got.records();
    for r in &records {
        assert_eq!(r.timestamp, r.value.1, "timer output carries the timer's time");
    }
    assert_eq!(sorted(got.values()), sorted(expected));
}

// ---------------------------------------------------------------------------
// Watermark of a two-input operator
// ---------------------------------------------------------------------------

/// All records share one key. First-input records set a timer at their
/// timestamp; the last one opens the second source's gate. Second-input
/// records report the watermark they see.
#[derive(Clone)]
struct WatermarkProbe {
    last_first: i64,
    gate: Arc<AtomicBool>,
    second_seen: usize,
}

/// ("timer", time, second-input records seen) or ("second", ts, watermark)
type Probe = (String, i64, i64);

impl KeyedCoProcessFunction<u8, (u8, i64), (u8, i64), Probe> for WatermarkProbe {
    fn process_element1(&mut self, (_, ts): (u8, i64), ctx: &mut KeyedCoContext<'_, u8, Probe>) -> OpResult {
        ctx.register_event_time_timer(ts)?;
        if ts == self.last_first {
            self.gate.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn process_element2(&mut self, (_, ts): (u8, i64), ctx: &mut KeyedCoContext<'_, u8, Probe>) -> OpResult {
        self.second_seen += 1;
        let wm = ctx.current_watermark();
        ctx.collect(("second".into(), ts, wm));
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedCoContext<'_, u8, Probe>) -> OpResult {
        let seen = self.second_seen as i64;
        ctx.collect(("timer".into(), timestamp, seen));
        Ok(())
    }
}

#[test]
fn two_input_watermark_is_the_minimum_of_both_inputs() {
    let env = StreamEnv::new();
    env.set_parallelism(1).unwrap();
    let gate = Arc::new(AtomicBool::new(false));
    let strategy = || WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(u8, i64), _| e.1);
    // The first input runs ahead to 100 and ends (its watermark goes to the end of time).
    let firsts: Vec<(u8, i64)> = (1..=10).map(|i| (0, i * 10)).collect();
    let a = env
        .source_with_watermarks(CollectionSource::new(firsts), strategy())
        .uid("fast");
    // The second input stays at 0 until the operator has seen all of the
    // first input, then jumps to 1000.
    let g = gate.clone();
    let b = env
        .source_with_watermarks(
            GatedSource::new(vec![(0u8, 0i64)], vec![(0u8, 1000i64)], move || {
                g.load(Ordering::SeqCst)
            }),
            strategy(),
        )
        .uid("slow");
    let (sink, got) = CollectSink::new();
    a.connect(&b)
        .key_by(|e: &(u8, i64)| e.0, |e: &(u8, i64)| e.0)
        .process(WatermarkProbe {
            last_first: 100,
            gate: gate.clone(),
            second_seen: 0,
        })
        .uid("probe")
        .sink(sink);
    env.execute("two-input watermark").unwrap();

    let out = got.values();
    let timers: Vec<(i64, i64)> = out.iter().filter(|r| r.0 == "timer").map(|r| (r.1, r.2)).collect();
    // Every timer waited for the slow input: none fired while it was at 0,
    // although the fast input was long past them.
    assert_eq!(timers, (1..=10).map(|i| (i * 10, 2)).collect::<Vec<_>>());
    let seconds: Vec<(i64, i64)> = out.iter().filter(|r| r.0 == "second").map(|r| (r.1, r.2)).collect();
    assert_eq!(seconds.len(), 2, "{out:?}");
    assert_eq!(seconds[1].0, 1000);
    assert!(
        seconds[1].1 < 10,
        "the operator's watermark ran ahead of the slow input: {}",
        seconds[1].1
    );
}

// ---------------------------------------------------------------------------
// Broadcast state (non-keyed): rules filter events
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Rule {
    /// Events of this category pass when their amount is at least this.
    Min(String, u64),
    /// Events of this category no longer pass.
    Drop(String),
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    id: u64,
    user: u64,
    category: String,
    amount: u64,
}

const RULES: &str = "rules";

fn apply_rule<O: Send + 'static>(rule: &Rule, ctx: &mut BroadcastContext<'_, O>) -> OpResult {
    match rule {
        Rule::Min(cat, min) => ctx.broadcast_put(RULES, cat, min)?,
        Rule::Drop(cat) => ctx.broadcast_remove(RULES, cat)?,
    }
    Ok(())
}

fn rules() -> Vec<Rule> {
    vec![
        Rule::Min("books".into(), 50),
        Rule::Min("games".into(), 10),
        Rule::Min("food".into(), 5),
        Rule::Min("books".into(), 80), // the latest rule wins
        Rule::Drop("food".into()),
    ]
}

/// The final rules, as the oracle sees them.
fn final_rules() -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for r in rules() {
        match r {
            Rule::Min(c, v) => {
                m.insert(c, v);
            }
            Rule::Drop(c) => {
                m.remove(&c);
            }
        }
    }
    m
}

fn events(n: u64) -> Vec<Event> {
    let cats = ["books", "games", "food", "toys"];
    (0..n)
        .map(|i| Event {
            id: i,
            user: i % 13,
            category: cats[(i % 4) as usize].to_string(),
            amount: (i * 37) % 120,
        })
        .collect()
}

fn passes(e: &Event, rules: &HashMap<String, u64>) -> bool {
    rules.get(&e.category).is_some_and(|min| e.amount >= *min)
}

/// Filters events by the rules in broadcast state. Once a subtask has applied
/// every rule it says so through `ready`, which gates the events source.
#[derive(Clone)]
struct RuleFilter {
    total_rules: usize,
    applied: usize,
    ready: Arc<AtomicUsize>,
}

impl BroadcastProcessFunction<Event, Rule, (Event, u32)> for RuleFilter {
    fn open(&mut self, _info: &SubtaskInfo) -> OpResult {
        self.applied = 0;
        Ok(())
    }

    fn process_element(&mut self, e: Event, ctx: &mut ReadOnlyBroadcastContext<'_, (Event, u32)>) -> OpResult {
        let min: Option<u64> = ctx.broadcast_get(RULES, &e.category)?;
        if min.is_some_and(|m| e.amount >= m) {
            let subtask = ctx.info().subtask;
            ctx.collect((e, subtask));
        }
        Ok(())
    }

    fn process_broadcast_element(&mut self, rule: Rule, ctx: &mut BroadcastContext<'_, (Event, u32)>) -> OpResult {
        apply_rule(&rule, ctx)?;
        self.applied += 1;
        if self.applied == self.total_rules {
            self.ready.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn broadcast_rules_filter_events_on_every_subtask(backend: Backend) {
    const P: usize = 3;
    let env = StreamEnv::new();
    backend.apply(&env);
    env.set_parallelism(P as u32).unwrap();
    let ready = Arc::new(AtomicUsize::new(0));
    let all = events(600);
    let r = ready.clone();
    // Events start only when every filter subtask has applied every rule.
    let events_stream = env
        .source(GatedSource::new(Vec::new(), all.clone(), move || {
            r.load(Ordering::SeqCst) == P
        }))
        .set_parallelism(1)
        .uid("events")
        .rebalance();
    let rules_stream = env.from_collection(rules()).uid("rules").broadcast_to_all();
    let (sink, got) = CollectSink::new();
    events_stream
        .connect_broadcast(&rules_stream)
        .process(RuleFilter {
            total_rules: rules().len(),
            applied: 0,
            ready: ready.clone(),
        })
        .uid("rule-filter")
        .sink(sink);
    env.execute("broadcast rules").unwrap();

    assert_eq!(ready.load(Ordering::SeqCst), P, "every subtask got every rule");
    let out = got.values();
    let subtasks: BTreeSet<u32> = out.iter().map(|(_, s)| *s).collect();
    assert_eq!(subtasks.len(), P, "events were filtered on every subtask");
    let rules = final_rules();
    let expected: Vec<Event> = all.into_iter().filter(|e| passes(e, &rules)).collect();
    assert!(!expected.is_empty() && expected.len() < 600);
    assert_eq!(sorted(out.into_iter().map(|(e, _)| e).collect()), sorted(expected));
}

// ---------------------------------------------------------------------------
// Keyed broadcast: buffer events until the rules are complete
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
enum RuleUpdate {
    Rule(Rule),
    /// All rules have been sent.
    End,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BufferedEvent {
    id: u64,
    user: u64,
    category: String,
    amount: u64,
}

impl From<&Event> for BufferedEvent {
    fn from(e: &Event) -> Self {
        BufferedEvent {
            id: e.id,
            user: e.user,
            category: e.category.clone(),
            amount: e.amount,
        }
    }
}

impl From<BufferedEvent> for Event {
    fn from(e: BufferedEvent) -> Self {
        Event {
            id: e.id,
            user: e.user,
            category: e.category,
            amount: e.amount,
        }
    }
}

const META: &str = "rules-meta";

/// Events of a user are evaluated against the complete rules; events that
/// arrive before the rules are complete wait in keyed ListState and are
/// evaluated by an event-time timer at the end of input. Rejected events go
/// to a side output.
#[derive(Clone)]
struct KeyedRuleFilter {
    buffer: Option<ListState<BufferedEvent>>,
    rejected: OutputTag<u64>,
}

impl KeyedRuleFilter {
    fn evaluate(&self, e: Event, ctx: &mut KeyedReadOnlyBroadcastContext<'_, u64, Event>) -> OpResult {
        if e.user != *ctx.key() {
            return Err(format!("event of user {} under key {}", e.user, ctx.key()).into());
        }
        let min: Option<u64> = ctx.broadcast_get(RULES, &e.category)?;
        if min.is_some_and(|m| e.amount >= m) {
            ctx.collect(e);
        } else {
            let tag = self.rejected.clone();
            ctx.output(&tag, e.id);
        }
        Ok(())
    }
}

impl KeyedBroadcastProcessFunction<u64, Event, RuleUpdate, Event> for KeyedRuleFilter {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.buffer = Some(ctx.list_state(ListStateDescriptor::new("waiting-for-rules"))?);
        Ok(())
    }

    fn process_element(&mut self, e: Event, ctx: &mut KeyedReadOnlyBroadcastContext<'_, u64, Event>) -> OpResult {
        let complete: Option<bool> = ctx.broadcast_get(META, &"complete")?;
        if complete == Some(true) {
            self.evaluate(e, ctx)
        } else {
            let buffer = self.buffer.as_ref().ok_or("buffer not registered")?;
            buffer.add(ctx, &BufferedEvent::from(&e))?;
            ctx.register_event_time_timer(i64::MAX)
        }
    }

    fn process_broadcast_element(&mut self, update: RuleUpdate, ctx: &mut BroadcastContext<'_, Event>) -> OpResult {
        match update {
            RuleUpdate::Rule(r) => apply_rule(&r, ctx),
            RuleUpdate::End => Ok(ctx.broadcast_put(META, &"complete", &true)?),
        }
    }

    fn on_timer(&mut self, _timestamp: i64, ctx: &mut KeyedReadOnlyBroadcastContext<'_, u64, Event>) -> OpResult {
        let complete: Option<bool> = ctx.broadcast_get(META, &"complete")?;
        if complete != Some(true) {
            return Err("input ended before the rules were complete".into());
        }
        let buffer = self.buffer.as_ref().ok_or("buffer not registered")?;
        let waiting = buffer.get(ctx)?;
        buffer.clear(ctx)?;
        for e in waiting {
            self.evaluate(e.into(), ctx)?;
        }
        Ok(())
    }
}

fn run_keyed_rules(parallelism: u32, all: &[Event]) -> (Vec<Event>, Vec<u64>) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism).unwrap();
    let mut updates: Vec<RuleUpdate> = rules().into_iter().map(RuleUpdate::Rule).collect();
    updates.push(RuleUpdate::End);
    let rules_stream = env.from_collection(updates).uid("rules").broadcast_to_all();
    let rejected = OutputTag::<u64>::new("rejected");
    let (sink, got) = CollectSink::new();
    let (rsink, rejected_got) = CollectSink::new();
    let filtered = env
        .from_collection(all.to_vec())
        .uid("events")
        .key_by(|e: &Event| e.user)
        .connect_broadcast(&rules_stream)
        .process(KeyedRuleFilter {
            buffer: None,
            rejected: rejected.clone(),
        })
        .uid("keyed-rule-filter");
    filtered.side_output(&rejected).sink(rsink);
    filtered.sink(sink);
    env.execute("keyed broadcast rules").unwrap();
    (sorted(got.values()), sorted(rejected_got.values()))
}

#[test]
fn keyed_broadcast_buffers_events_until_rules_are_complete() {
    let all = events(800);
    let rules = final_rules();
    let expected: Vec<Event> = sorted(all.iter().filter(|e| passes(e, &rules)).cloned().collect());
    let expected_rejected: Vec<u64> = sorted(all.iter().filter(|e| !passes(e, &rules)).map(|e| e.id).collect());
    for p in [1u32, 3] {
        let (passed, rejected) = run_keyed_rules(p, &all);
        assert_eq!(passed, expected, "parallelism {p}");
        assert_eq!(rejected, expected_rejected, "parallelism {p}");
    }
}

// ---------------------------------------------------------------------------
// Two-input state across a restore with a new parallelism
// ---------------------------------------------------------------------------

/// One job with a keyed broadcast filter and a keyed enrichment join. The
/// first run (parallelism 2) gets the rules and the profiles; the second run,
/// restored from the first run's final checkpoint at parallelism 3, gets only
/// new events and the orders. It can only produce the expected output if
/// broadcast state reached every new subtask and keyed state followed its
/// key groups.
fn rules_and_enrichment_job(
    env: &StreamEnv,
    events: Vec<Event>,
    orders: Vec<Order>,
    profiles: Vec<Profile>,
) -> (Collected<Event>, Collected<Enriched>) {
    let mut updates: Vec<RuleUpdate> = rules().into_iter().map(RuleUpdate::Rule).collect();
    updates.push(RuleUpdate::End);
    let rules_stream = env.from_collection(updates).uid("rules").broadcast_to_all();
    let (esink, passed) = CollectSink::new();
    env.from_collection(events)
        .uid("events")
        .key_by(|e: &Event| e.user)
        .connect_broadcast(&rules_stream)
        .process(KeyedRuleFilter {
            buffer: None,
            rejected: OutputTag::new("rejected"),
        })
        .uid("keyed-rule-filter")
        .sink(esink);
    let (jsink, joined) = CollectSink::new();
    env.from_collection(orders)
        .uid("orders")
        .connect(&env.from_collection(profiles).uid("profiles"))
        .key_by(|o: &Order| o.user, |p: &Profile| p.user)
        .process(Enrich::default())
        .uid("enrich")
        .sink(jsink);
    (passed, joined)
}

#[test]
fn two_input_state_survives_restore_with_new_parallelism() {
    let dir = std::env::temp_dir().join(format!(
        "cairn-connect-restore-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let config = |p: u32| {
        let env_config = StreamEnv::new();
        env_config.set_parallelism(p).unwrap();
        env_config.set_config("execution.checkpointing.interval", "1h").unwrap();
        env_config
            .set_config("execution.checkpointing.dir", dir.to_str().unwrap())
            .unwrap();
        env_config.config()
    };
    let all_events = events(600);
    let profiles: Vec<Profile> = (0..20)
        .map(|u| Profile {
            user: u,
            name: format!("user-{u}"),
        })
        .collect();
    let orders: Vec<Order> = (0..300)
        .map(|i| Order {
            id: i,
            user: i % 20,
            amount: i,
        })
        .collect();

    // First run: rules, profiles and the first half of the events; no orders.
    let env = StreamEnv::with_config(config(2));
    let (passed1, joined1) = rules_and_enrichment_job(&env, all_events[..300].to_vec(), Vec::new(), profiles.clone());
    let first = env.execute("two-input state, first run").unwrap();
    assert!(joined1.values().is_empty());
    let last = first
        .checkpoints
        .iter()
        .rfind(|c| c.status == cairn::coordinator::control::SnapshotStatus::Completed)
        .expect("a final checkpoint")
        .id;
    let chk = dir.join(&first.job_id).join(format!("chk-{last}"));
    assert!(chk.join("_metadata").exists(), "{}", chk.display());

    // Second run, restored at parallelism 3: the sources resume where they
    // stopped, so only new events and the orders flow.
    let startup = cairn::config::StartupOptions {
        config: config(3),
        restore_path: Some(chk),
        ..Default::default()
    };
    let env = StreamEnv::with_startup(startup);
    let (passed2, joined2) = rules_and_enrichment_job(&env, all_events.clone(), orders.clone(), profiles);
    env.execute("two-input state, restored").unwrap();

    let rules = final_rules();
    let expected =
        |evs: &[Event]| -> Vec<Event> { sorted(evs.iter().filter(|e| passes(e, &rules)).cloned().collect()) };
    assert_eq!(sorted(passed1.values()), expected(&all_events[..300]));
    assert_eq!(sorted(passed2.values()), expected(&all_events[300..]));
    let joined: Vec<(u64, String)> = sorted(
        joined2
            .values()
            .into_iter()
            .map(|(id, _, name, _, _)| (id, name))
            .collect(),
    );
    let expected_joined: Vec<(u64, String)> = orders.iter().map(|o| (o.id, format!("user-{}", o.user))).collect();
    assert_eq!(joined, expected_joined);
    let _ = std::fs::remove_dir_all(&dir);
}

on_every_backend!(
    co_process_joins_two_streams,
    keyed_streams_connect_directly,
    keyed_co_process_timers_fire_per_key_when_both_inputs_pass_them,
    broadcast_rules_filter_events_on_every_subtask,
);
