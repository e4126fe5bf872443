//! Savepoints end to end: trigger, stop (with and without drain), cancel with
//! savepoint, restore by uid with changed jobs and parallelism (2 -> 3 -> 1
//! against an oracle, with each key's state checked to sit in the subtask its
//! key group names), relocation, claim modes, and the errors users meet.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::config::{ClaimMode, Configuration, StartupOptions};
use cairn::coordinator::control::{
    AfterSavepoint, ControlErrorCode, JobClient, JobStatus, OperationStatus, SavepointRequest, SnapshotFormat,
};
use cairn::prelude::*;
use cairn::runtime::JobError;
use cairn::state::keygroup::{key_group_for_key, subtask_for_key_group};
use common::{assert_contains_all, Backend};

const KEYS: u64 = 40;

/// One update of a key's running count and sum, with where it was computed.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Update {
    key: u64,
    count: u64,
    sum: u64,
    subtask: u32,
    parallelism: u32,
    max_parallelism: u32,
    /// True for the end-of-time timer's output.
    flushed: bool,
}

#[derive(Clone, Default)]
struct CountAndSum {
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, Update> for CountAndSum {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        self.sum = Some(ctx.value_state(ValueStateDescriptor::new("sum"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, Update>) -> OpResult {
        let (c, s) = (
            self.count.as_ref().ok_or("not opened")?,
            self.sum.as_ref().ok_or("not opened")?,
        );
        let count = c.value(ctx)?.unwrap_or(0) + 1;
        let sum = s.value(ctx)?.unwrap_or(0) + e.value % 1000;
        c.update(ctx, &count)?;
        s.update(ctx, &sum)?;
        // Fires only when event time ends: at the end of input or on a drain.
        ctx.register_event_time_timer(i64::MAX - 1)?;
        let out = self.update(ctx, count, sum, false);
        ctx.collect(out);
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, Update>) -> OpResult {
        let count = self.count.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or(0);
        let sum = self.sum.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or(0);
        let out = self.update(ctx, count, sum, true);
        ctx.collect(out);
        Ok(())
    }
}

impl CountAndSum {
    fn update(&self, ctx: &KeyedContext<'_, u64, Update>, count: u64, sum: u64, flushed: bool) -> Update {
        let info = ctx.info();
        Update {
            key: *ctx.key(),
            count,
            sum,
            subtask: info.subtask,
            parallelism: info.parallelism,
            max_parallelism: info.max_parallelism,
            flushed,
        }
    }
}

fn generator(count: u64, rate: Option<u64>) -> GeneratorSource {
    let g = GeneratorSource::new(count, KEYS).seed(7).splits(6);
    match rate {
        Some(r) => g.rate(r),
        None => g,
    }
}

/// Final (count, sum) per key over all `count` events.
fn oracle(count: u64) -> BTreeMap<u64, (u64, u64)> {
    let g = generator(count, None);
    let mut m = BTreeMap::new();
    for i in 0..count {
        let e = g.event(i);
        let v = m.entry(e.key).or_insert((0, 0));
        v.0 += 1;
        v.1 += e.value % 1000;
    }
    m
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-savepoints-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Run {
    parallelism: u32,
    restore: Option<PathBuf>,
    allow_non_restored: bool,
    claim: ClaimMode,
    config: Vec<(&'static str, String)>,
}

impl Run {
    fn new(parallelism: u32) -> Self {
        Run {
            parallelism,
            restore: None,
            allow_non_restored: false,
            claim: ClaimMode::NoClaim,
            config: Vec::new(),
        }
    }

    fn from(mut self, path: &Path) -> Self {
        self.restore = Some(path.to_path_buf());
        self
    }

    fn set(mut self, key: &'static str, value: impl ToString) -> Self {
        self.config.push((key, value.to_string()));
        self
    }

    fn env(&self) -> StreamEnv {
        let mut config = Configuration::new();
        config
            .set("parallelism.default", &self.parallelism.to_string())
            .unwrap();
        for (k, v) in &self.config {
            config.set(k, v).unwrap();
        }
        StreamEnv::with_startup(StartupOptions {
            config,
            restore_path: self.restore.clone(),
            allow_non_restored_state: self.allow_non_restored,
            claim_mode: self.claim,
            ..Default::default()
        })
    }
}

/// The counting job; returns its output.
fn counting_job(env: &StreamEnv, source: GeneratorSource) -> Collected<Update> {
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(source, WatermarkStrategy::for_monotonous_timestamps())
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(CountAndSum::default())
        .uid("counter")
        .sink(sink);
    out
}

/// Wait until the job's sources emitted at least `n` records.
fn wait_for_records(client: &JobClient, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.metrics().source_records < n {
        assert!(
            Instant::now() < deadline,
            "the job did not reach {n} records: {:?}",
            client.info()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn savepoint(client: &JobClient, target: &Path, format: SnapshotFormat, then: AfterSavepoint) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(target.to_path_buf()),
                format,
                then,
            },
            None,
        )
        .expect("savepoint accepted");
    match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

/// Every update was computed by the subtask that owns its key's key group.
fn assert_key_group_placement(updates: &[Update]) {
    for u in updates {
        let kg = key_group_for_key(&u.key, u.max_parallelism).unwrap();
        let owner = subtask_for_key_group(u.max_parallelism, u.parallelism, kg);
        assert_eq!(
            u.subtask, owner,
            "key {} (key group {kg}) was processed by subtask {} of {}, but its key group belongs to subtask {owner}",
            u.key, u.subtask, u.parallelism
        );
    }
}

fn final_per_key(updates: &[Update]) -> BTreeMap<u64, (u64, u64)> {
    let mut m = BTreeMap::new();
    for u in updates {
        let e = m.entry(u.key).or_insert((0, 0));
        if u.count >= e.0 {
            *e = (u.count, u.sum);
        }
    }
    m
}

fn assert_savepoint_dir(location: &Path, target: &Path, job_id: &str) {
    assert_eq!(location.parent(), Some(target));
    let name = location.file_name().unwrap().to_str().unwrap();
    let prefix = format!("savepoint-{}-", &job_id[..6]);
    assert!(name.starts_with(&prefix), "{name} should start with {prefix}");
    let random = &name[prefix.len()..];
    assert_eq!(random.len(), 12, "{name}");
    assert!(random.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert!(location.join("_metadata").is_file());
}

fn stop_with_savepoint_then_rescale_2_to_3_to_1_loses_and_duplicates_nothing(backend: Backend) {
    let n = 30_000;
    let target = temp_dir("rescale");

    // Run 1: parallelism 2, stopped with a savepoint part-way.
    let env = Run::new(2).env();
    backend.apply(&env);
    let out1 = counting_job(&env, generator(n, Some(4_000)));
    let job = env.execute_async("count, p=2").unwrap();
    let client = job.client();
    wait_for_records(&client, 3_000);
    // The first hop goes through the canonical (Parquet) format, the second native.
    let sp1 = savepoint(
        &client,
        &target,
        SnapshotFormat::Canonical,
        AfterSavepoint::Stop { drain: false },
    );
    let r1 = job.wait().unwrap();
    assert_eq!(client.info().status, JobStatus::Finished);
    assert_eq!(r1.savepoint.as_deref(), Some(sp1.as_path()));
    assert_savepoint_dir(&sp1, &target, &r1.job_id);
    // Canonical format v2: one typed Parquet file per keyed state.
    assert!(std::fs::read_dir(&sp1).unwrap().any(|e| {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        name.ends_with(".parquet") && !name.ends_with(".operator.parquet")
    }));
    assert!(r1.source_records < n, "the job was stopped before its input ended");

    // Run 2: parallelism 3 from the savepoint, stopped again.
    let env = Run::new(3).from(&sp1).env();
    backend.apply(&env);
    let out2 = counting_job(&env, generator(n, Some(4_000)));
    let job = env.execute_async("count, p=3").unwrap();
    let client = job.client();
    wait_for_records(&client, 3_000);
    let sp2 = savepoint(
        &client,
        &target,
        SnapshotFormat::Native,
        AfterSavepoint::Stop { drain: false },
    );
    let r2 = job.wait().unwrap();
    assert_ne!(r2.job_id, r1.job_id, "a restored job gets a new job id");
    assert!(r1.source_records + r2.source_records < n);

    // Run 3: parallelism 1 from its `_metadata`, to the end.
    let env = Run::new(1).from(&sp2.join("_metadata")).env();
    backend.apply(&env);
    let out3 = counting_job(&env, generator(n, None));
    let r3 = env.execute("count, p=1").unwrap();
    assert_eq!(r1.source_records + r2.source_records + r3.source_records, n);

    let (u1, u2, u3) = (out1.values(), out2.values(), out3.values());
    assert!(u1.iter().all(|u| u.parallelism == 2) && u2.iter().all(|u| u.parallelism == 3));
    for u in [&u1, &u2, &u3] {
        assert_key_group_placement(u);
    }
    // Stopped without drain: no end-of-time timer fired before the last run.
    assert!(u1.iter().chain(&u2).all(|u| !u.flushed));
    assert_eq!(u3.iter().filter(|u| u.flushed).count() as u64, KEYS);
    // Each (key, count) is produced exactly once over the three runs: nothing
    // was processed after a savepoint and then again after the restore.
    let mut seen = BTreeSet::new();
    for u in u1.iter().chain(&u2).chain(&u3).filter(|u| !u.flushed) {
        assert!(seen.insert((u.key, u.count)), "update {u:?} was produced twice");
    }
    assert_eq!(seen.len() as u64, n);
    assert_eq!(final_per_key(&u3), oracle(n));
    // The savepoints stay where they are: Cairn never deletes them.
    assert!(sp1.join("_metadata").exists() && sp2.join("_metadata").exists());
    let _ = std::fs::remove_dir_all(&target);
}

fn stop_with_drain_fires_every_event_time_timer_before_the_savepoint(backend: Backend) {
    let n = 20_000;
    let target = temp_dir("drain");
    let env = Run::new(2).env();
    backend.apply(&env);
    let out1 = counting_job(&env, generator(n, Some(3_000)));
    let job = env.execute_async("drain").unwrap();
    let client = job.client();
    wait_for_records(&client, 2_000);
    let sp = savepoint(
        &client,
        &target,
        SnapshotFormat::Native,
        AfterSavepoint::Stop { drain: true },
    );
    job.wait().unwrap();
    let u1 = out1.values();
    let flushed: BTreeMap<u64, (u64, u64)> = u1
        .iter()
        .filter(|u| u.flushed)
        .map(|u| (u.key, (u.count, u.sum)))
        .collect();
    // Every key seen so far was flushed with its final values.
    let seen = final_per_key(&u1.iter().filter(|u| !u.flushed).cloned().collect::<Vec<_>>());
    assert_eq!(flushed, seen);

    // The restored job continues counting from the savepoint's state.
    let env = Run::new(2).from(&sp).env();
    backend.apply(&env);
    let out2 = counting_job(&env, generator(n, None));
    env.execute("after drain").unwrap();
    assert_eq!(final_per_key(&out2.values()), oracle(n));
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn savepoints_while_checkpointing_do_not_count_toward_retention_and_the_job_keeps_running() {
    let n = 40_000;
    let dir = temp_dir("concurrent");
    let (checkpoints, savepoints) = (dir.join("checkpoints"), dir.join("savepoints"));
    let env = Run::new(2)
        .set("execution.checkpointing.interval", "50ms")
        .set("execution.checkpointing.dir", checkpoints.display())
        .set("execution.checkpointing.num-retained", 2)
        // The configured default target, under its Flink 1.x alias.
        .set("state.savepoints.dir", savepoints.display())
        .env();
    let out = counting_job(&env, generator(n, Some(5_000)));
    let job = env.execute_async("savepoints while checkpointing").unwrap();
    let client = job.client();
    let mut locations = Vec::new();
    for i in 1..=3u64 {
        wait_for_records(&client, i * 4_000);
        let op = client
            .trigger_savepoint(
                SavepointRequest {
                    target_directory: None,
                    format: SnapshotFormat::Native,
                    then: AfterSavepoint::KeepRunning,
                },
                Some(format!("my-trigger-{i}")),
            )
            .unwrap();
        assert_eq!(op, format!("my-trigger-{i}"));
        match client.wait_operation(&op, Duration::from_secs(60)) {
            Some(OperationStatus::Completed { location: Some(l), .. }) => locations.push(l),
            other => panic!("{other:?}"),
        }
        assert_eq!(client.info().status, JobStatus::Running);
    }
    // A trigger id can be used once.
    let dup = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: None,
                format: SnapshotFormat::Native,
                then: AfterSavepoint::KeepRunning,
            },
            Some("my-trigger-1".into()),
        )
        .unwrap_err();
    assert_eq!(dup.code, ControlErrorCode::Conflict);
    let result = job.wait().unwrap();
    assert_eq!(final_per_key(&out.values()), oracle(n));
    let overview = client.checkpoints();
    assert!(overview.latest_savepoint.is_some());
    assert!(result.checkpoints.iter().filter(|c| c.is_savepoint).count() == 3);
    assert!(result.checkpoints.iter().filter(|c| !c.is_savepoint).count() >= 2);

    // Retention kept two checkpoints; the savepoints are untouched.
    let job_dir = checkpoints.join(&result.job_id);
    let chk: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    assert_eq!(chk.len(), 2, "{chk:?}");
    for l in &locations {
        assert_savepoint_dir(l, &savepoints, &result.job_id);
    }
    // Every savepoint restores to a job that ends with the oracle's totals.
    let env = Run::new(3).from(&locations[1]).env();
    let out = counting_job(&env, generator(n, None));
    env.execute("from an intermediate savepoint").unwrap();
    assert_eq!(final_per_key(&out.values()), oracle(n));
    let _ = std::fs::remove_dir_all(&dir);
}

fn cancel_with_savepoint_cancels_after_the_savepoint_completes(backend: Backend) {
    let target = temp_dir("cancel");
    let env = Run::new(2).env();
    backend.apply(&env);
    let _out = counting_job(&env, generator(1_000_000, Some(2_000)));
    let job = env.execute_async("cancel with savepoint").unwrap();
    let client = job.client();
    wait_for_records(&client, 1_000);
    let sp = savepoint(&client, &target, SnapshotFormat::Native, AfterSavepoint::Cancel);
    match job.wait() {
        Err(CairnError::Job(JobError::Cancelled)) => {}
        other => panic!("expected a cancelled job, got {other:?}"),
    }
    assert_eq!(client.info().status, JobStatus::Cancelled);
    assert!(sp.join("_metadata").is_file());
    // Requests to an ended job are refused with a stable code.
    let err = client.cancel().unwrap_err();
    assert_eq!(err.code, ControlErrorCode::JobNotRunning);
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn a_savepoint_without_any_directory_is_refused_with_what_to_set() {
    let env = Run::new(1).env();
    let _out = counting_job(&env, generator(1_000_000, Some(1_000)));
    let job = env.execute_async("no savepoint dir").unwrap();
    let client = job.client();
    let err = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: None,
                format: SnapshotFormat::Native,
                then: AfterSavepoint::KeepRunning,
            },
            None,
        )
        .unwrap_err();
    assert_eq!(err.code, ControlErrorCode::BadRequest);
    assert_contains_all(
        &err.message,
        &["execution.checkpointing.savepoint-dir", "state.savepoints.dir"],
    );
    client.cancel().unwrap();
    assert!(matches!(job.wait(), Err(CairnError::Job(JobError::Cancelled))));
}

/// Take a savepoint of the counting job at parallelism 2 after about `at` records.
fn savepoint_of_counting_job(target: &Path, n: u64, at: u64) -> PathBuf {
    let env = Run::new(2).env();
    let _out = counting_job(&env, generator(n, Some(4_000)));
    let job = env.execute_async("counting job").unwrap();
    let client = job.client();
    wait_for_records(&client, at);
    let sp = savepoint(
        &client,
        target,
        SnapshotFormat::Native,
        AfterSavepoint::Stop { drain: false },
    );
    job.wait().unwrap();
    sp
}

#[test]
fn a_relocated_savepoint_restores() {
    let n = 10_000;
    let dir = temp_dir("relocate");
    let sp = savepoint_of_counting_job(&dir.join("a"), n, 1_000);
    let moved = dir.join("elsewhere").join("moved-savepoint");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&sp, &moved).unwrap();
    let env = Run::new(2).from(&moved).env();
    let out = counting_job(&env, generator(n, None));
    env.execute("relocated").unwrap();
    assert_eq!(final_per_key(&out.values()), oracle(n));
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Clone, Default)]
struct Tagger;

impl ProcessFunction<GeneratedEvent, GeneratedEvent> for Tagger {
    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut ProcessContext<'_, GeneratedEvent>) -> OpResult {
        ctx.collect(e);
        Ok(())
    }
}

#[test]
fn a_changed_job_restores_by_uid_and_dropped_state_needs_allow_non_restored_state() {
    let n = 10_000;
    let dir = temp_dir("evolve");
    let sp = savepoint_of_counting_job(&dir, n, 1_000);

    // A stateless operator inserted between the source and the counter, and a
    // new stateful operator after it: both restore (the new one starts empty).
    let env = Run::new(2).from(&sp).env();
    let (sink, out) = CollectSink::new();
    let (sink2, out2) = CollectSink::new();
    let counted = env
        .source_with_watermarks(generator(n, None), WatermarkStrategy::for_monotonous_timestamps())
        .uid("events")
        .process(Tagger)
        .uid("tagger")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(CountAndSum::default())
        .uid("counter");
    counted.sink(sink);
    counted
        .filter(|u: &Update| !u.flushed)
        .key_by(|u: &Update| u.key % 2)
        .process(CountAndSum2::default())
        .uid("new-parity-counter")
        .sink(sink2);
    let r = env.execute("evolved").unwrap();
    assert_eq!(final_per_key(&out.values()), oracle(n));
    // The new operator starts empty: its counts begin at 1 and cover exactly
    // what this run processed.
    let parity = out2.values();
    assert_eq!(
        parity.iter().filter(|p| p.1 == 1).count(),
        2,
        "{:?}",
        &parity[..parity.len().min(5)]
    );
    assert_eq!(parity.len() as u64, r.source_records);
    assert!(r.source_records < n);

    // Without the counter, its state maps to no operator: refused, naming the uid and -n.
    let without_counter = |allow: bool| {
        let mut run = Run::new(2).from(&sp);
        run.allow_non_restored = allow;
        let env = run.env();
        let (sink, out) = CollectSink::new();
        env.source(generator(n, None)).uid("events").sink(sink);
        (env.execute("counter removed"), out)
    };
    match without_counter(false).0 {
        Err(e) => assert_contains_all(&e.to_string(), &["'counter'", "--allow-non-restored-state", "-n"]),
        Ok(_) => panic!("restoring without the counter must fail"),
    }
    let (result, out) = without_counter(true);
    result.unwrap();
    // The source still resumes from its position.
    assert!((out.values().len() as u64) < n);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts records per key (a second, new stateful operator).
#[derive(Clone, Default)]
struct CountAndSum2 {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, Update, (u64, u64)> for CountAndSum2 {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("n"))?);
        Ok(())
    }

    fn process_element(&mut self, _u: Update, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let c = self.count.as_ref().ok_or("not opened")?;
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, &n)?;
        let k = *ctx.key();
        ctx.collect((k, n));
        Ok(())
    }
}

#[test]
fn parallelism_above_the_savepoints_max_parallelism_is_refused_with_the_limit() {
    let dir = temp_dir("maxp");
    let env = Run::new(2).set("pipeline.max-parallelism", 4).env();
    let _out = counting_job(&env, generator(1_000_000, Some(2_000)));
    let job = env.execute_async("max parallelism 4").unwrap();
    let client = job.client();
    wait_for_records(&client, 500);
    let sp = savepoint(
        &client,
        &dir,
        SnapshotFormat::Native,
        AfterSavepoint::Stop { drain: false },
    );
    job.wait().unwrap();

    let env = Run::new(8).from(&sp).env();
    let _out = counting_job(&env, generator(1_000, None));
    let err = env.execute("too wide").unwrap_err().to_string();
    assert_contains_all(
        &err,
        &[
            "parallelism 8 is larger than max parallelism 4",
            "pipeline.max-parallelism",
        ],
    );

    let env = Run::new(2).from(&sp).set("pipeline.max-parallelism", 8).env();
    let _out = counting_job(&env, generator(1_000, None));
    let err = env.execute("changed max parallelism").unwrap_err().to_string();
    assert_contains_all(&err, &["max parallelism 4", "8", "can never change"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn claim_mode_decides_who_owns_the_restored_checkpoint() {
    let n = 20_000;
    let dir = temp_dir("claim");
    let checkpoints = dir.join("checkpoints");
    let run = |claim: ClaimMode, from: Option<&Path>, rate: Option<u64>| {
        let mut r = Run::new(2)
            .set("execution.checkpointing.interval", "30ms")
            .set("execution.checkpointing.dir", checkpoints.display())
            .set("execution.checkpointing.num-retained", 1)
            .set(
                "execution.checkpointing.externalized-checkpoint-retention",
                "RETAIN_ON_CANCELLATION",
            );
        r.claim = claim;
        if let Some(p) = from {
            r = r.from(p);
        }
        let env = r.env();
        let out = counting_job(&env, generator(n, rate));
        (env, out)
    };
    // A first job, cancelled part-way, leaves a retained checkpoint.
    let (env, _) = run(ClaimMode::NoClaim, None, Some(4_000));
    let job = env.execute_async("first").unwrap();
    let client = job.client();
    wait_for_records(&client, 2_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.checkpoints().latest_completed.is_none() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint completed: {:?}",
            client.checkpoints().latest_failed
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_id = job.job_id().to_string();
    client.cancel().unwrap();
    assert!(job.wait().is_err());
    let retained = latest_checkpoint(&checkpoints.join(&first_id));
    let before = dir_fingerprint(&retained);

    // NO_CLAIM: the restored checkpoint is left exactly as it was.
    let (env, out) = run(ClaimMode::NoClaim, Some(&retained), None);
    let r = env.execute("no claim").unwrap();
    assert_eq!(final_per_key(&out.values()), oracle(n));
    assert_eq!(dir_fingerprint(&retained), before);
    // Numbering continues after the restored checkpoint.
    let restored_id: u64 = retained.file_name().unwrap().to_str().unwrap()[4..].parse().unwrap();
    assert!(r.checkpoints.iter().all(|c| c.id > restored_id));
    assert_eq!(r.checkpoints.first().map(|c| c.id), Some(restored_id + 1));

    // CLAIM: the new job owns it and deletes it once a newer checkpoint subsumes it.
    let (env, out) = run(ClaimMode::Claim, Some(&retained), None);
    env.execute("claim").unwrap();
    assert_eq!(final_per_key(&out.values()), oracle(n));
    assert!(
        !retained.exists(),
        "the claimed checkpoint should be deleted once subsumed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn latest_checkpoint(job_dir: &Path) -> PathBuf {
    std::fs::read_dir(job_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("_metadata").exists())
        .max_by_key(|p| p.file_name().unwrap().to_str().unwrap()[4..].parse::<u64>().unwrap())
        .expect("a retained checkpoint")
}

/// Names, sizes and contents of every file under `dir`.
fn dir_fingerprint(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

on_every_backend!(
    stop_with_savepoint_then_rescale_2_to_3_to_1_loses_and_duplicates_nothing,
    stop_with_drain_fires_every_event_time_timer_before_the_savepoint,
    cancel_with_savepoint_cancels_after_the_savepoint_completes,
);
