//! Live state queries (Queryable State) against running jobs through the
//! job's control surface: every key answered by the subtask that owns it
//! with its current value, a query never answered in the middle of a batch
//! and never later than the batch in progress, queries hammering a job that
//! processes flat out (valid, monotonic answers; processing goes on), clear
//! errors for unknown operators, states and malformed keys, and queries
//! following the job across a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::coordinator::control::{JobClient, JobStatus, QueryError};
use cairn::prelude::*;
use cairn::state::keygroup::{key_group_for_key, subtask_for_key_group};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_running(client: &JobClient) {
    wait_until("the job to run", || client.info().status == JobStatus::Running);
}

/// Emits its records from subtask 0 in polls of up to `max` records, then
/// stays alive (no data) until `release` is set, so the job keeps running
/// while it is queried. Sets `emitted` once every record was handed on.
#[derive(Clone)]
struct HeldSource {
    records: Arc<Vec<(String, u64)>>,
    next: usize,
    mine: bool,
    emitted: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    started: Option<Instant>,
}

impl HeldSource {
    fn new(records: Vec<(String, u64)>) -> (Self, Arc<AtomicBool>, Arc<AtomicBool>) {
        let emitted = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        (
            HeldSource {
                records: Arc::new(records),
                next: 0,
                mine: false,
                emitted: emitted.clone(),
                release: release.clone(),
                started: None,
            },
            emitted,
            release,
        )
    }
}

impl Source<(String, u64)> for HeldSource {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        self.mine = ctx.info.subtask == 0;
        self.started = Some(Instant::now());
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<(String, u64)>>, max: usize) -> OpResult<SourceStatus> {
        let held = !self.release.load(Ordering::SeqCst) && self.started.is_some_and(|s| s.elapsed() < DEADLINE);
        if !self.mine || self.next == self.records.len() {
            if self.mine {
                self.emitted.store(true, Ordering::SeqCst);
            }
            return Ok(if held {
                SourceStatus::Pending(Duration::from_millis(2))
            } else {
                SourceStatus::Finished
            });
        }
        let end = (self.next + max).min(self.records.len());
        for r in &self.records[self.next..end] {
            out.push(StreamRecord {
                value: r.clone(),
                timestamp: NO_TIMESTAMP,
            });
        }
        self.next = end;
        Ok(SourceStatus::More)
    }

    fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

const NO_TIMESTAMP: i64 = i64::MIN;

/// Per key: a count, the last three values, sums per parity, and a state
/// that is not queryable. Bumps `processed` after each record.
#[derive(Clone)]
struct Tally {
    processed: Arc<AtomicUsize>,
    count: Option<ValueState<u64>>,
    recent: Option<ListState<u64>>,
    sums: Option<MapState<String, u64>>,
    secret: Option<ValueState<u64>>,
}

impl Tally {
    fn new(processed: Arc<AtomicUsize>) -> Self {
        Tally {
            processed,
            count: None,
            recent: None,
            sums: None,
            secret: None,
        }
    }
}

impl KeyedProcessFunction<String, (String, u64), ()> for Tally {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("count"))?);
        self.recent = Some(ctx.list_state(ListStateDescriptor::new("recent-values").queryable("recent"))?);
        self.sums = Some(ctx.map_state(MapStateDescriptor::new("sums").queryable("sums"))?);
        self.secret = Some(ctx.value_state(ValueStateDescriptor::new("secret"))?);
        Ok(())
    }

    fn process_element(&mut self, (_, v): (String, u64), ctx: &mut KeyedContext<'_, String, ()>) -> OpResult {
        let (count, recent, sums, secret) = (
            self.count.as_ref().ok_or("not opened")?,
            self.recent.as_ref().ok_or("not opened")?,
            self.sums.as_ref().ok_or("not opened")?,
            self.secret.as_ref().ok_or("not opened")?,
        );
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        let mut last = recent.get(ctx)?;
        last.push(v);
        if last.len() > 3 {
            last.remove(0);
        }
        recent.update(ctx, &last)?;
        let parity = if v % 2 == 0 { "even" } else { "odd" }.to_string();
        let sum = sums.get(ctx, &parity)?.unwrap_or(0) + v;
        sums.put(ctx, &parity, &sum)?;
        secret.update(ctx, &v)?;
        self.processed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn records(n: u64, keys: u64) -> Vec<(String, u64)> {
    (0..n).map(|i| (format!("user-{}", i * 7 % keys), i)).collect()
}

#[test]
fn every_key_is_answered_by_its_owning_subtask_with_its_current_value() {
    let input = records(600, 40);
    let env = StreamEnv::new();
    env.set_parallelism(3).unwrap();
    let processed = Arc::new(AtomicUsize::new(0));
    let (source, _, release) = HeldSource::new(input.clone());
    env.source(source)
        .uid("events")
        .key_by(|r: &(String, u64)| r.0.clone())
        .process(Tally::new(processed.clone()))
        .uid("tally")
        .sink(DiscardSink)
        .uid("discard");
    let handle = env.execute_async("queryable").unwrap();
    let client = handle.client();
    wait_running(&client);
    wait_until("every record processed", || {
        processed.load(Ordering::SeqCst) == input.len()
    });

    // The oracle, key by key.
    let mut count: BTreeMap<String, u64> = BTreeMap::new();
    let mut recent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sums: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (k, v) in &input {
        *count.entry(k.clone()).or_default() += 1;
        let r = recent.entry(k.clone()).or_default();
        r.push(*v);
        if r.len() > 3 {
            r.remove(0);
        }
        let parity = if v % 2 == 0 { "even" } else { "odd" };
        *sums.entry(k.clone()).or_default().entry(parity.into()).or_default() += v;
    }
    let mut owners = std::collections::BTreeSet::new();
    for (key, n) in &count {
        let key_json = serde_json::to_string(key).unwrap();
        let a = client.query_state("tally", "count", &key_json).unwrap();
        let kg = key_group_for_key(key, 128).unwrap();
        assert_eq!(a.key_group, kg, "{key}");
        assert_eq!(
            a.subtask,
            subtask_for_key_group(128, 3, kg),
            "{key}: answered by the owner"
        );
        owners.insert(a.subtask);
        assert_eq!(a.value, Some(json!(n)), "{key}");
        assert_eq!((a.state_name.as_str(), a.uid.as_str()), ("count", "tally"));
        let a = client.query_state("tally", "recent", &key_json).unwrap();
        assert_eq!(a.value, Some(json!(recent[key])), "{key}");
        assert_eq!(a.state_name, "recent-values");
        let a = client.query_state("tally", "sums", &key_json).unwrap();
        let pairs: Vec<Value> = sums[key].iter().map(|(p, s)| json!([p, s])).collect();
        assert_eq!(a.value, Some(Value::Array(pairs)), "{key}");
    }
    assert_eq!(owners.len(), 3, "the keys spread over all three subtasks");
    // A key that never came has no value; that is an answer, not an error.
    for state in ["count", "recent", "sums"] {
        let a = client.query_state("tally", state, r#""nobody""#).unwrap();
        assert_eq!(a.value, None, "{state}");
    }

    // What cannot be answered says why.
    let err = |uid: &str, state: &str, key: &str| client.query_state(uid, state, key).unwrap_err();
    let e = err("nope", "count", r#""user-1""#);
    assert!(
        matches!(&e, QueryError::UnknownOperator(m) if m.contains("no operator with uid 'nope'") && m.contains("'tally'")),
        "{e}"
    );
    let e = err("events", "count", r#""user-1""#);
    assert!(
        matches!(&e, QueryError::UnknownOperator(m) if m.contains("operator 'events' has no queryable state")),
        "{e}"
    );
    let e = err("tally", "secret", r#""user-1""#);
    assert!(
        matches!(&e, QueryError::UnknownState(m) if m.contains("no state queryable as 'secret'") && m.contains("'count', 'recent', 'sums'")),
        "{e}"
    );
    let e = err("tally", "recent-values", r#""user-1""#);
    assert!(
        matches!(&e, QueryError::UnknownState(m) if m.contains("is queryable as 'recent'")),
        "{e}"
    );
    let e = err("tally", "count", "user-1");
    assert!(
        matches!(&e, QueryError::InvalidKey(m) if m.contains("is not JSON") && m.contains("in quotes")),
        "{e}"
    );
    let e = err("tally", "count", "42");
    assert!(
        matches!(&e, QueryError::InvalidKey(m) if m.contains("not a key of operator 'tally'") && m.contains("String")),
        "{e}"
    );

    release.store(true, Ordering::SeqCst);
    handle.wait().unwrap();
    let e = client.query_state("tally", "count", r#""user-1""#).unwrap_err();
    assert!(matches!(&e, QueryError::NotRunning(m) if m.contains("Finished")), "{e}");
}

/// Counts records; blocks at the first record of every fifth batch (count
/// `n` with `n % GATE_EVERY == 1`) until `gate` reaches `n`.
#[derive(Clone)]
struct Gated {
    blocked_at: Arc<AtomicU64>,
    gate: Arc<AtomicU64>,
    count: Option<ValueState<u64>>,
}

const GATE_EVERY: u64 = 40;

impl KeyedProcessFunction<String, (String, u64), ()> for Gated {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _r: (String, u64), ctx: &mut KeyedContext<'_, String, ()>) -> OpResult {
        let count = self.count.as_ref().ok_or("not opened")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        if n % GATE_EVERY == 1 {
            self.blocked_at.store(n, Ordering::SeqCst);
            let deadline = Instant::now() + DEADLINE;
            while self.gate.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }
}

#[test]
fn a_query_is_answered_after_the_batch_in_progress_never_inside_it_nor_later() {
    const BATCH: u64 = 8;
    const ROUNDS: u64 = 8;
    let env = StreamEnv::new();
    env.set_parallelism(1).unwrap();
    env.set_config("cairn.runtime.batch-size", &BATCH.to_string()).unwrap();
    env.set_config("cairn.runtime.channel-capacity", "100").unwrap();
    let (blocked_at, gate) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let input: Vec<(String, u64)> = (0..400).map(|i| ("k".to_string(), i)).collect();
    let (source, emitted, release) = HeldSource::new(input);
    env.source(source)
        .uid("events")
        .key_by(|r: &(String, u64)| r.0.clone())
        .process(Gated {
            blocked_at: blocked_at.clone(),
            gate: gate.clone(),
            count: None,
        })
        .uid("gated")
        .sink(DiscardSink)
        .uid("discard");
    let handle = env.execute_async("batch bound").unwrap();
    let client = handle.client();
    wait_running(&client);
    wait_until("every record queued", || emitted.load(Ordering::SeqCst));
    // Each round: the operator is inside a batch (more batches wait in its
    // input) when a query arrives.
    for round in 0..ROUNDS {
        let n = round * GATE_EVERY + 1;
        wait_until("the operator to block inside a batch", || {
            blocked_at.load(Ordering::SeqCst) == n
        });
        let asker = client.clone();
        let query = std::thread::spawn(move || asker.query_state("gated", "count", r#""k""#));
        wait_until("the query in the mailbox", || {
            client.state_queries_waiting("gated", 0) == Some(1)
        });
        // No answer while the operator is in the middle of a batch.
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !query.is_finished(),
            "round {round}: a query was answered in the middle of a batch"
        );
        gate.store(n, Ordering::SeqCst);
        let answer = query.join().unwrap().unwrap();
        // The state right after the batch in progress, before the next one.
        assert_eq!(answer.value, Some(json!(n - 1 + BATCH)), "round {round}");
    }
    gate.store(u64::MAX, Ordering::SeqCst);
    release.store(true, Ordering::SeqCst);
    handle.wait().unwrap();
}

#[test]
fn queries_hammering_a_busy_job_get_valid_rising_answers_and_processing_goes_on() {
    const KEYS: u64 = 16;
    const RECORDS: u64 = 300_000;
    let env = StreamEnv::new();
    env.set_parallelism(2).unwrap();
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(RECORDS, KEYS).seed(5))
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Counting { count: None })
        .uid("counting")
        .sink(sink)
        .uid("collect");
    let handle = env.execute_async("hammered").unwrap();
    let client = handle.client();
    wait_running(&client);
    let done = Arc::new(AtomicBool::new(false));
    let askers: Vec<_> = (0..4)
        .map(|t| {
            let (client, done) = (client.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last: BTreeMap<u64, u64> = BTreeMap::new();
                let (mut answered, mut busy) = (0u64, 0u64);
                let mut i = t;
                while !done.load(Ordering::SeqCst) {
                    let key = i % KEYS;
                    i += 7;
                    match client.query_state("counting", "count", &key.to_string()) {
                        Ok(a) => {
                            let n = a.value.map(|v| v.as_u64().expect("a count")).unwrap_or(0);
                            let before = last.insert(key, n).unwrap_or(0);
                            assert!(n >= before, "key {key}: count went back from {before} to {n}");
                            answered += 1;
                        }
                        Err(QueryError::Unavailable(_)) => busy += 1,
                        // The job finished between two queries.
                        Err(QueryError::NotRunning(_)) => break,
                        Err(e) => panic!("query failed: {e}"),
                    }
                }
                (answered, busy, last)
            })
        })
        .collect();
    let result = handle.wait();
    done.store(true, Ordering::SeqCst);
    result.unwrap();
    let mut answered = 0;
    let mut final_count: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, n) in out.values() {
        let c = final_count.entry(k).or_default();
        *c = (*c).max(n);
    }
    assert_eq!(final_count.values().sum::<u64>(), RECORDS, "every record processed");
    for a in askers {
        let (n, _busy, last) = a.join().unwrap();
        answered += n;
        for (k, seen) in last {
            assert!(
                seen <= final_count[&k],
                "key {k}: a query saw {seen}, more than the final count"
            );
        }
    }
    assert!(answered > 0, "no query was answered while the job ran");
}

/// Emits (key, count so far) with its count queryable.
#[derive(Clone)]
struct Counting {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for Counting {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("not opened")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        let k = *ctx.key();
        ctx.collect((k, n));
        Ok(())
    }
}

/// Fails once, at the first record after `fail` is set.
#[derive(Clone)]
struct FailOnce {
    fail: Arc<AtomicBool>,
    processed: Arc<AtomicUsize>,
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<String, (String, u64), ()> for FailOnce {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _r: (String, u64), ctx: &mut KeyedContext<'_, String, ()>) -> OpResult {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err("injected failure".into());
        }
        let count = self.count.as_ref().ok_or("not opened")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        self.processed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn after_a_restart_queries_reach_the_new_attempt() {
    let tmp = std::env::temp_dir().join(format!("cairn-queryable-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let env = StreamEnv::new();
    env.set_parallelism(2).unwrap();
    env.set_config("restart-strategy.type", "fixed-delay").unwrap();
    env.set_config("restart-strategy.fixed-delay.attempts", "3").unwrap();
    env.set_config("restart-strategy.fixed-delay.delay", "10 ms").unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let processed = Arc::new(AtomicUsize::new(0));
    // The source is replayed from the start after the restart (no checkpoint).
    let (source, _, release) = HeldSource::new(records(50, 5));
    env.source(source)
        .uid("events")
        .key_by(|r: &(String, u64)| r.0.clone())
        .process(FailOnce {
            fail: fail.clone(),
            processed: processed.clone(),
            count: None,
        })
        .uid("counts")
        .sink(DiscardSink)
        .uid("discard");
    let handle = env.execute_async("restarted").unwrap();
    let client = handle.client();
    wait_until("the restart", || client.info().restarts == 1);
    wait_running(&client);
    // The new attempt starts empty and replays the source: each key ends at 10,
    // and the queries see it.
    wait_until("the new attempt's counts", || {
        (0..5).all(|k| {
            client
                .query_state("counts", "count", &format!("\"user-{k}\""))
                .is_ok_and(|a| a.value == Some(json!(10)))
        })
    });
    assert!(processed.load(Ordering::SeqCst) >= 50);
    release.store(true, Ordering::SeqCst);
    handle.wait().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}
