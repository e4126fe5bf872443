//! Recovery end to end: each restart strategy, in-process restarts from the
//! latest checkpoint with exactly-once file output, falling back to an older
//! retained checkpoint when the latest is corrupt, checkpoint layout and
//! retention count, and each retention mode on cancel.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::config::Configuration;
use cairn::coordinator::control::{JobClient, JobStatus, SnapshotStatus};
use cairn::prelude::*;
use cairn::runtime::JobError;
use common::{assert_contains_all, Backend};

const KEYS: u64 = 20;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-recovery-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn env(dir: &Path, extra: &[(&str, &str)]) -> StreamEnv {
    let mut config = Configuration::new();
    config.set("parallelism.default", "2").unwrap();
    config.set("execution.checkpointing.interval", "20ms").unwrap();
    config
        .set("execution.checkpointing.dir", dir.join("checkpoints").to_str().unwrap())
        .unwrap();
    for (k, v) in extra {
        config.set(k, v).unwrap();
    }
    StreamEnv::with_config(config)
}

/// Per-key running totals written exactly once to files; `fail` decides, per
/// event index and attempt, whether the counter fails on that event.
fn job(
    env: &StreamEnv,
    out: &Path,
    n: u64,
    rate: u64,
    fail: impl Fn(u64, u32) -> bool + Clone + Send + Sync + 'static,
) {
    env.source(GeneratorSource::new(n, KEYS).seed(3).splits(4).rate(rate))
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Totals {
            state: None,
            fail: Arc::new(fail),
        })
        .uid("totals")
        .sink(FileSink::new(out, |t: &Line| {
            format!("{} {} {} {}", t.0, t.1, t.2, t.3)
        }))
        .uid("files");
}

/// (key, event index, running count, running sum) after each event.
type Line = (u64, u64, u64, u64);

type FailRule = Arc<dyn Fn(u64, u32) -> bool + Send + Sync>;

#[derive(Clone)]
struct Totals {
    state: Option<ValueState<(u64, u64)>>,
    fail: FailRule,
}

impl KeyedProcessFunction<u64, GeneratedEvent, Line> for Totals {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.state = Some(ctx.value_state(ValueStateDescriptor::new("totals"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, Line>) -> OpResult {
        if (self.fail)(e.index, ctx.info().attempt) {
            return Err(format!("injected failure at event {} (attempt {})", e.index, ctx.info().attempt).into());
        }
        let s = self.state.as_ref().ok_or("not opened")?;
        let (count, sum) = s.value(ctx)?.unwrap_or((0, 0));
        let next = (count + 1, sum + e.value % 100);
        s.update(ctx, &next)?;
        let k = *ctx.key();
        ctx.collect((k, e.index, next.0, next.1));
        Ok(())
    }
}

/// The committed lines, sorted.
fn committed(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("part-") {
            lines.extend(std::fs::read_to_string(&p).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// Committed output is exactly once: every event appears once, each key's
/// counts run 1..=n without gaps or repeats, and each key's last line holds
/// the failure-free totals (the order of a key's events across source splits
/// may vary between runs, so intermediate sums are not compared).
fn assert_exactly_once(out: &Path, n: u64) {
    check_output(out, n, true)
}

/// `exact`: also require that nothing was committed twice.
fn check_output(out: &Path, n: u64, exact: bool) {
    let g = GeneratorSource::new(n, KEYS).seed(3);
    let mut want: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for i in 0..n {
        let e = g.event(i);
        let t = want.entry(e.key).or_default();
        t.0 += 1;
        t.1 += e.value % 100;
    }
    let lines = committed(out);
    let mut indices = vec![0u32; n as usize];
    let mut counts: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for l in &lines {
        let f: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
        let (key, index, count, sum) = (f[0], f[1], f[2], f[3]);
        indices[index as usize] += 1;
        counts.entry(key).or_default().push(count);
        let e = last.entry(key).or_default();
        if count > e.0 {
            *e = (count, sum);
        }
    }
    let lost: Vec<usize> = (0..n as usize).filter(|i| indices[*i] == 0).take(5).collect();
    let doubled: Vec<usize> = (0..n as usize).filter(|i| indices[*i] > 1).take(5).collect();
    assert!(lost.is_empty(), "events lost: {lost:?}…");
    assert!(!exact || doubled.is_empty(), "events committed twice: {doubled:?}…");
    for (key, mut c) in counts.into_iter().filter(|_| exact) {
        c.sort();
        assert!(
            c.iter().copied().eq(1..=c.len() as u64),
            "key {key}: counts are not 1..=n once each"
        );
    }
    assert_eq!(last, want, "final per-key totals");
}

fn fixed_delay_restarts_from_the_latest_checkpoint_exactly_once(backend: Backend) {
    let dir = temp_dir("fixed");
    let n = 12_000;
    let env = env(
        &dir,
        &[
            ("restart-strategy.type", "fixed-delay"),
            ("restart-strategy.fixed-delay.attempts", "3"),
            ("restart-strategy.fixed-delay.delay", "10ms"),
        ],
    );
    backend.apply(&env);
    // Two failures in different attempts, after checkpoints completed.
    job(&env, &dir.join("out"), n, 8_000, |i, attempt| {
        (i == 3_000 && attempt == 0) || (i == 8_000 && attempt == 1)
    });
    let result = env.execute("fixed-delay").unwrap();
    assert_eq!(result.restarts, 2);
    assert_exactly_once(&dir.join("out"), n);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fixed_delay_gives_up_after_its_attempts() {
    let dir = temp_dir("fixed-gives-up");
    let env = env(
        &dir,
        &[
            ("restart-strategy.type", "fixed-delay"),
            ("restart-strategy.fixed-delay.attempts", "2"),
            ("restart-strategy.fixed-delay.delay", "1ms"),
        ],
    );
    job(&env, &dir.join("out"), 5_000, 50_000, |i, _| i == 1_000);
    let err = env.execute("always fails").unwrap_err().to_string();
    assert_contains_all(&err, &["Totals", "injected failure at event 1000 (attempt 2)"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_restart_strategy_fails_the_job_at_the_first_failure() {
    let dir = temp_dir("none");
    let env = env(&dir, &[("restart-strategy.type", "none")]);
    job(&env, &dir.join("out"), 5_000, 50_000, |i, _| i == 100);
    let err = env.execute("no restarts").unwrap_err().to_string();
    assert_contains_all(&err, &["injected failure at event 100 (attempt 0)"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failure_rate_restarts_until_too_many_failures_fall_in_its_interval() {
    let dir = temp_dir("rate");
    let env = env(
        &dir,
        &[
            ("restart-strategy.type", "failure-rate"),
            ("restart-strategy.failure-rate.max-failures-per-interval", "3"),
            ("restart-strategy.failure-rate.failure-rate-interval", "1min"),
            ("restart-strategy.failure-rate.delay", "1ms"),
        ],
    );
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    job(&env, &dir.join("out"), 5_000, 50_000, move |i, attempt| {
        seen.fetch_max(attempt, Ordering::Relaxed);
        i == 500
    });
    let err = env.execute("failure rate").unwrap_err().to_string();
    assert_contains_all(&err, &["injected failure"]);
    // Three restarts were allowed; the fourth failure within the minute failed the job.
    assert_eq!(attempts.load(Ordering::Relaxed), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exponential_delay_is_the_default_with_checkpointing() {
    let dir = temp_dir("exp");
    let n = 8_000;
    let env = env(
        &dir,
        &[
            ("restart-strategy.exponential-delay.initial-backoff", "5ms"),
            ("restart-strategy.exponential-delay.max-backoff", "50ms"),
        ],
    );
    job(&env, &dir.join("out"), n, 8_000, |i, attempt| i == 2_000 && attempt < 3);
    let result = env.execute("exponential-delay").unwrap();
    assert_eq!(result.restarts, 3);
    assert_exactly_once(&dir.join("out"), n);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newest complete checkpoint directory of the only job under `checkpoints`.
fn newest_checkpoint(checkpoints: &Path) -> Option<PathBuf> {
    let job_dir = std::fs::read_dir(checkpoints).ok()?.next()?.ok()?.path();
    std::fs::read_dir(job_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("_metadata").exists())
        .max_by_key(|p| {
            p.file_name().unwrap().to_str().unwrap()[4..]
                .parse::<u64>()
                .unwrap_or(0)
        })
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_retained_one() {
    let dir = temp_dir("fallback");
    let n = 12_000;
    let checkpoints = dir.join("checkpoints");
    let env = env(
        &dir,
        &[
            ("execution.checkpointing.num-retained", "3"),
            ("restart-strategy.type", "fixed-delay"),
            ("restart-strategy.fixed-delay.delay", "1ms"),
        ],
    );
    // At event 5999 (the last of split 1 of 4, so read late: the source's
    // splits are read interleaved) the first attempt corrupts its newest
    // checkpoint's state files (flipping a byte in each) and fails.
    let corrupted = Arc::new(std::sync::Mutex::new(None::<PathBuf>));
    let record = corrupted.clone();
    job(&env, &dir.join("out"), n, 8_000, move |i, attempt| {
        if i != 5_999 || attempt != 0 {
            return false;
        }
        let chk = newest_checkpoint(&checkpoints).expect("a checkpoint before event 5999");
        for e in std::fs::read_dir(&chk).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "state") {
                let mut bytes = std::fs::read(&p).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x5a;
                std::fs::write(&p, bytes).unwrap();
            }
        }
        *record.lock().unwrap() = Some(chk);
        true
    });
    let result = env.execute("fallback").unwrap();
    assert_eq!(result.restarts, 1);
    assert!(corrupted.lock().unwrap().is_some());
    // Nothing is lost and the state is right. Output that the corrupt
    // checkpoint had already committed is written again after the fallback
    // (which the log says): a fallback cannot undo a commit.
    check_output(&dir.join("out"), n, false);
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_for_checkpoints(client: &JobClient, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.checkpoints().counts.completed < n {
        assert!(
            Instant::now() < deadline,
            "no checkpoints: {:?}",
            client.checkpoints().latest_failed
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Run an endless job with `retention`, cancel it after a few checkpoints,
/// and return its job directory.
fn cancel_with_retention(retention: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(&retention.to_lowercase());
    let env = env(
        &dir,
        &[
            ("execution.checkpointing.externalized-checkpoint-retention", retention),
            ("execution.checkpointing.num-retained", "2"),
        ],
    );
    job(&env, &dir.join("out"), 1 << 40, 5_000, |_, _| false);
    let handle = env.execute_async("cancel me").unwrap();
    let client = handle.client();
    wait_for_checkpoints(&client, 4);
    client.cancel().unwrap();
    assert!(matches!(handle.wait(), Err(CairnError::Job(JobError::Cancelled))));
    assert_eq!(client.info().status, JobStatus::Cancelled);
    let job_dir = dir.join("checkpoints").join(client.info().job_id);
    (dir, job_dir)
}

#[test]
fn retain_on_cancellation_keeps_the_retained_checkpoints_in_flink_layout() {
    let (dir, job_dir) = cancel_with_retention("RETAIN_ON_CANCELLATION");
    let names = entries(&job_dir);
    let chk: Vec<&String> = names.iter().filter(|n| n.starts_with("chk-")).collect();
    assert_eq!(chk.len(), 2, "num-retained 2: {names:?}");
    assert!(
        names.contains(&"shared".to_string()) && names.contains(&"taskowned".to_string()),
        "{names:?}"
    );
    for c in chk {
        assert!(job_dir.join(c).join("_metadata").is_file());
        // Each retained checkpoint restores on its own.
        assert!(cairn::snapshot::load_snapshot(&cairn::snapshot::LocalFileStorage::new(), &job_dir.join(c)).is_ok());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_on_cancellation_and_no_externalized_checkpoints_leave_nothing() {
    for mode in ["DELETE_ON_CANCELLATION", "NO_EXTERNALIZED_CHECKPOINTS"] {
        let (dir, job_dir) = cancel_with_retention(mode);
        assert!(!job_dir.exists(), "{mode}: {:?}", entries(&job_dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn checkpoint_statistics_describe_each_checkpoint() {
    let dir = temp_dir("stats");
    let env = env(&dir, &[]);
    job(&env, &dir.join("out"), 5_000, 20_000, |_, _| false);
    let result = env.execute("stats").unwrap();
    let completed: Vec<_> = result
        .checkpoints
        .iter()
        .filter(|c| c.status == SnapshotStatus::Completed)
        .collect();
    assert!(!completed.is_empty());
    let mut last = 0;
    for c in completed {
        assert!(c.id > last, "ids increase");
        last = c.id;
        assert!(!c.is_savepoint);
        assert_eq!(c.num_acknowledged_subtasks, c.num_subtasks);
        assert!(c.state_size_bytes > 0);
        assert!(c.end_timestamp_ms.unwrap() >= c.trigger_timestamp_ms);
        let path = c.external_path.as_ref().unwrap();
        assert!(path.ends_with(format!("chk-{}", c.id)), "{}", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoints_go_on_after_a_bounded_source_finishes_and_restore_exactly_once() {
    let dir = temp_dir("finished-source");
    let n = 16_000;
    let env = env(
        &dir,
        &[
            ("restart-strategy.type", "fixed-delay"),
            ("restart-strategy.fixed-delay.delay", "1ms"),
        ],
    );
    // A short bounded source beside a long one: once the short one ended,
    // checkpoints must still complete (its finished tasks snapshot directly).
    let short = env
        .source(GeneratorSource::new(100, KEYS).seed(11).splits(2))
        .uid("short")
        .map(|mut e: GeneratedEvent| {
            e.index += 1 << 40;
            e
        });
    let events = env
        .source(GeneratorSource::new(n, KEYS).seed(3).splits(4).rate(4_000))
        .uid("events")
        .union(&[short]);
    let finished_short = Arc::new(AtomicU32::new(0));
    let seen = finished_short.clone();
    events
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Totals {
            state: None,
            fail: Arc::new(move |i, attempt| {
                // Fail once, late, when only checkpoints taken after the short
                // source ended can restore the job without replaying it all.
                if i >= 1 << 40 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                // Event 11999 ends split 2 of 4: read late however splits interleave.
                i == 11_999 && attempt == 0
            }),
        })
        .uid("totals")
        .filter(|l: &Line| l.1 < 1 << 40)
        .sink(FileSink::new(dir.join("out"), |t: &Line| {
            format!("{} {} {} {}", t.0, t.1, t.2, t.3)
        }))
        .uid("files");
    let result = env.execute("finished source").unwrap();
    assert_eq!(result.restarts, 1);
    // The short source's 100 events were processed once: the restart
    // restored a checkpoint taken after it had finished.
    assert_eq!(finished_short.load(Ordering::Relaxed), 100);
    let failed: Vec<_> = result
        .checkpoints
        .iter()
        .filter(|c| c.status == SnapshotStatus::Failed)
        // Abandoned when the attempt ended, or subsumed by a newer checkpoint
        // (as Flink's CHECKPOINT_SUBSUMED): neither is a failure to write one.
        .filter(|c| {
            let why = c.failure_message.as_deref().unwrap_or("");
            !why.contains("attempt ended") && !why.contains("subsumed by")
        })
        .collect();
    assert!(failed.is_empty(), "checkpoints failed: {failed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

on_every_backend!(fixed_delay_restarts_from_the_latest_checkpoint_exactly_once,);
