//! RocksDB checkpoints and savepoints end to end: incremental checkpoints
//! upload only what changed, retention with shared files never loses a
//! referenced file (random retention and failure sequences), a corrupt or
//! missing shared SST is named and nothing is restored, a checkpoint
//! restores at parallelism 2 -> 3 -> 1 against a per-key oracle, and
//! canonical savepoints move state between RocksDB and the heap backend.
#![cfg(feature = "rocksdb")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{
    AfterSavepoint, CheckpointRequestKind, JobClient, OperationStatus, SavepointRequest, SnapshotFormat,
};
use cairn::prelude::*;
use cairn::snapshot::{load_snapshot, FileFormat, LoadedSnapshot, LocalFileStorage};
use common::Backend;

const KEYS: u64 = 60;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-rocksdb-chk-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A job environment: `backend`, parallelism `p`, checkpoints into
/// `dir/checkpoints`, retained on cancellation, restored from `restore`.
fn env(backend: Backend, p: u32, dir: &Path, restore: Option<&Path>, extra: &[(&str, &str)]) -> StreamEnv {
    let mut config = Configuration::new();
    for (k, v) in [
        ("parallelism.default", p.to_string()),
        ("state.backend.type", backend.name().to_string()),
        ("execution.checkpointing.incremental", "true".to_string()),
        (
            "execution.checkpointing.dir",
            dir.join("checkpoints").display().to_string(),
        ),
        (
            "execution.checkpointing.savepoint-dir",
            dir.join("savepoints").display().to_string(),
        ),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION".to_string(),
        ),
        (
            "state.backend.rocksdb.localdir",
            dir.join("local").display().to_string(),
        ),
    ] {
        config.set(k, &v).unwrap();
    }
    for (k, v) in extra {
        config.set(k, v).unwrap();
    }
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore.map(Path::to_path_buf),
        ..Default::default()
    })
}

/// (key, count, sum, flushed): a key's running totals; `flushed` marks the
/// end-of-time timer's output, the key's final totals.
type Update = (u64, u64, u64, bool);

/// Whether a subtask fails after it processed this many events in this attempt.
type FailRule = Arc<dyn Fn(u64, u32) -> bool + Send + Sync>;

#[derive(Clone)]
struct Totals {
    totals: Option<ValueState<(u64, u64)>>,
    fail: Option<FailRule>,
    /// Events this subtask processed in this attempt.
    seen: u64,
}

impl Totals {
    fn new() -> Self {
        Totals {
            totals: None,
            fail: None,
            seen: 0,
        }
    }
}

impl KeyedProcessFunction<u64, GeneratedEvent, Update> for Totals {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.totals = Some(ctx.value_state(ValueStateDescriptor::new("totals"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, Update>) -> OpResult {
        self.seen += 1;
        if let Some(fail) = &self.fail {
            if fail(self.seen, ctx.info().attempt) {
                return Err(format!("injected failure at event {} (attempt {})", e.index, ctx.info().attempt).into());
            }
        }
        let s = self.totals.as_ref().ok_or("not opened")?;
        let (count, sum) = s.value(ctx)?.unwrap_or((0, 0));
        let next = (count + 1, sum + e.value % 1000);
        s.update(ctx, &next)?;
        ctx.register_event_time_timer(i64::MAX - 1)?;
        ctx.collect((*ctx.key(), next.0, next.1, false));
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, Update>) -> OpResult {
        let (count, sum) = self.totals.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or((0, 0));
        ctx.collect((*ctx.key(), count, sum, true));
        Ok(())
    }
}

fn generator(n: u64, rate: Option<u64>) -> GeneratorSource {
    let g = GeneratorSource::new(n, KEYS).seed(11).splits(6);
    match rate {
        Some(r) => g.rate(r),
        None => g,
    }
}

/// Final (count, sum) per key over all `n` events.
fn oracle(n: u64) -> BTreeMap<u64, (u64, u64)> {
    let g = generator(n, None);
    let mut m = BTreeMap::new();
    for i in 0..n {
        let e = g.event(i);
        let t = m.entry(e.key).or_insert((0, 0));
        t.0 += 1;
        t.1 += e.value % 1000;
    }
    m
}

fn totals_job(env: &StreamEnv, source: GeneratorSource, fail: Option<FailRule>) -> Collected<Update> {
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(source, WatermarkStrategy::for_monotonous_timestamps())
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Totals { fail, ..Totals::new() })
        .uid("totals")
        .sink(sink);
    out
}

/// The final totals the end-of-time timers emitted.
fn flushed(out: &[Update]) -> BTreeMap<u64, (u64, u64)> {
    out.iter().filter(|u| u.3).map(|u| (u.0, (u.1, u.2))).collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn completed_checkpoints(client: &JobClient) -> u64 {
    client.checkpoints().counts.completed
}

/// The job's latest complete checkpoint directory.
fn latest_checkpoint(dir: &Path, job_id: &str) -> PathBuf {
    let job_dir = dir.join("checkpoints").join(job_id);
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(&job_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) {
            if e.path().join("_metadata").exists() && best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, e.path()));
            }
        }
    }
    best.map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no complete checkpoint in {}", job_dir.display()))
}

fn load(path: &Path) -> LoadedSnapshot {
    load_snapshot(&LocalFileStorage::new(), path).unwrap()
}

/// Every file a snapshot references, as (absolute path, size), with its format.
fn referenced(snap: &LoadedSnapshot) -> Vec<(PathBuf, u64, FileFormat)> {
    let mut out = Vec::new();
    for op in &snap.metadata.operators {
        for sub in &op.subtasks {
            for f in &sub.files {
                let p = std::fs::canonicalize(snap.dir.join(&f.path))
                    .unwrap_or_else(|e| panic!("{} references {} which is gone: {e}", snap.dir.display(), f.path));
                out.push((p, f.size, f.format));
            }
        }
    }
    out
}

/// Run 1 of the checkpoint tests: `p` subtasks, cancelled after `checkpoints`
/// completed checkpoints; returns the job id.
fn run_until_checkpoints(env: &StreamEnv, n: u64, rate: u64, checkpoints: u64) -> String {
    let _out = totals_job(env, generator(n, Some(rate)), None);
    let job = env.execute_async("totals").unwrap();
    let client = job.client();
    let id = job.job_id().to_string();
    wait_until("checkpoints", || completed_checkpoints(&client) >= checkpoints);
    client.cancel().unwrap();
    let _ = job.wait();
    id
}

/// Each key's payload: 100 bytes derived from the key and how often it was written.
#[derive(Clone)]
struct Payload {
    data: Option<ValueState<(u32, Vec<u8>)>>,
    processed: Arc<AtomicU64>,
}

fn payload_bytes(key: u64, version: u32) -> Vec<u8> {
    let mut x = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version as u64 | 1;
    (0..100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl KeyedProcessFunction<u64, u64, ()> for Payload {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.data = Some(ctx.value_state(ValueStateDescriptor::new("payload"))?);
        Ok(())
    }

    fn process_element(&mut self, key: u64, ctx: &mut KeyedContext<'_, u64, ()>) -> OpResult {
        let s = self.data.as_ref().ok_or("not opened")?;
        let version = s.value(ctx)?.map_or(0, |(v, _)| v + 1);
        s.update(ctx, &(version, payload_bytes(key, version)))?;
        self.processed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Emits `phases` one after another from subtask 0, each once its gate is
/// open, and stays alive after the last until `end` is set.
#[derive(Clone)]
struct Phases {
    phases: Arc<Vec<(Vec<u64>, Arc<AtomicBool>)>>,
    end: Arc<AtomicBool>,
    phase: usize,
    next: usize,
    mine: bool,
}

impl Source<u64> for Phases {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        self.mine = ctx.info.subtask == 0;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<u64>>, max: usize) -> OpResult<SourceStatus> {
        let wait = SourceStatus::Pending(Duration::from_millis(2));
        if !self.mine {
            return Ok(if self.end.load(Ordering::SeqCst) {
                SourceStatus::Finished
            } else {
                wait
            });
        }
        let Some((items, gate)) = self.phases.get(self.phase) else {
            return Ok(if self.end.load(Ordering::SeqCst) {
                SourceStatus::Finished
            } else {
                wait
            });
        };
        if !gate.load(Ordering::SeqCst) {
            return Ok(wait);
        }
        let upto = (self.next + max).min(items.len());
        for &v in &items[self.next..upto] {
            out.push(StreamRecord {
                value: v,
                timestamp: i64::MIN,
            });
        }
        self.next = upto;
        if self.next == items.len() {
            self.phase += 1;
            self.next = 0;
        }
        Ok(SourceStatus::More)
    }

    fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

fn checkpoint_now(client: &JobClient) -> u64 {
    let op = client
        .trigger_checkpoint(CheckpointRequestKind::Configured, None)
        .unwrap();
    match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed {
            checkpoint_id: Some(id),
            ..
        }) => id,
        other => panic!("checkpoint did not complete: {other:?}"),
    }
}

#[test]
fn an_incremental_checkpoint_after_changing_one_percent_of_the_keys_uploads_about_one_percent() {
    let dir = temp_dir("one-percent");
    let keys = 100_000u64;
    let gates: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::new(AtomicBool::new(false))).collect();
    gates[0].store(true, Ordering::SeqCst);
    let end = Arc::new(AtomicBool::new(false));
    let changed: Vec<u64> = (0..keys).step_by(100).collect();
    let source = Phases {
        phases: Arc::new(vec![
            ((0..keys).collect(), gates[0].clone()),
            (changed.clone(), gates[1].clone()),
        ]),
        end: end.clone(),
        phase: 0,
        next: 0,
        mine: false,
    };
    let processed = Arc::new(AtomicU64::new(0));
    let env = env(
        Backend::RocksDb,
        2,
        &dir,
        None,
        &[
            ("execution.checkpointing.interval", "1 h"),
            ("execution.checkpointing.num-retained", "2"),
        ],
    );
    env.source(source)
        .uid("keys")
        .key_by(|k: &u64| *k)
        .process(Payload {
            data: None,
            processed: processed.clone(),
        })
        .uid("payload")
        .sink(DiscardSink);
    let job = env.execute_async("one percent").unwrap();
    let client = job.client();
    wait_until("every key once", || processed.load(Ordering::SeqCst) == keys);
    let first = checkpoint_now(&client);
    gates[1].store(true, Ordering::SeqCst);
    wait_until("1% of the keys again", || {
        processed.load(Ordering::SeqCst) == keys + changed.len() as u64
    });
    let second = checkpoint_now(&client);
    end.store(true, Ordering::SeqCst);
    client.cancel().unwrap();
    let _ = job.wait();

    let job_dir = dir.join("checkpoints").join(client.info().job_id);
    let a = referenced(&load(&job_dir.join(format!("chk-{first}"))));
    let b = referenced(&load(&job_dir.join(format!("chk-{second}"))));
    let in_a: BTreeSet<&PathBuf> = a.iter().map(|f| &f.0).collect();
    let total: u64 = b.iter().map(|f| f.1).sum();
    let uploaded: u64 = b.iter().filter(|f| !in_a.contains(&f.0)).map(|f| f.1).sum();
    let reused = b.iter().filter(|f| in_a.contains(&f.0)).count();
    assert!(reused > 0, "the second checkpoint references files of the first");
    let share = uploaded as f64 / total as f64;
    eprintln!(
        "1% of {keys} keys changed: uploaded {uploaded} of {total} bytes ({:.2}%), {reused} files reused",
        share * 100.0
    );
    assert!(
        (0.004..=0.03).contains(&share),
        "changing 1% of the keys uploaded {uploaded} of {total} bytes ({:.2}%)",
        share * 100.0
    );
    assert!(
        b.iter().any(|f| f.0.to_string_lossy().contains("/shared/")),
        "SSTs live in the job's shared directory"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restore from `restore` at `p`, run until one new checkpoint completed,
/// cancel; returns the job id.
fn hop(dir: &Path, p: u32, restore: &Path, n: u64) -> String {
    let env = env(
        Backend::RocksDb,
        p,
        dir,
        Some(restore),
        &[("execution.checkpointing.interval", "50 ms")],
    );
    run_until_checkpoints(&env, n, 3_000, 2)
}

#[test]
fn a_rocksdb_checkpoint_restores_at_parallelism_2_then_3_then_1_against_a_per_key_oracle() {
    let dir = temp_dir("rescale");
    let n = 24_000;
    let env1 = env(
        Backend::RocksDb,
        2,
        &dir,
        None,
        &[("execution.checkpointing.interval", "50 ms")],
    );
    let job1 = run_until_checkpoints(&env1, n, 3_000, 3);
    let chk1 = latest_checkpoint(&dir, &job1);
    let job2 = hop(&dir, 3, &chk1, n);
    let chk2 = latest_checkpoint(&dir, &job2);
    let n2 = load(&chk2).metadata.checkpoint_id;
    assert!(n2 > load(&chk1).metadata.checkpoint_id, "checkpoint numbers continue");
    // Last hop: parallelism 1 to the end of the input.
    let env3 = env(
        Backend::RocksDb,
        1,
        &dir,
        Some(&chk2),
        &[("execution.checkpointing.interval", "50 ms")],
    );
    let out = totals_job(&env3, generator(n, None), None);
    env3.execute("totals p=1").unwrap();
    assert_eq!(flushed(&out.values()), oracle(n), "final totals per key");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flip one byte in the middle of `path`.
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_or_missing_shared_sst_is_named_and_nothing_is_restored() {
    let dir = temp_dir("corrupt");
    let n = 200_000;
    let env1 = env(
        Backend::RocksDb,
        2,
        &dir,
        None,
        &[("execution.checkpointing.interval", "50 ms")],
    );
    let job = run_until_checkpoints(&env1, n, 20_000, 2);
    let chk = latest_checkpoint(&dir, &job);
    let ssts: Vec<PathBuf> = referenced(&load(&chk))
        .into_iter()
        .filter(|f| f.2 == FileFormat::BackendFile && f.0.to_string_lossy().ends_with(".sst"))
        .map(|f| f.0)
        .collect();
    assert!(ssts.iter().all(|p| p.to_string_lossy().contains("/shared/")));
    assert!(!ssts.is_empty(), "the checkpoint holds SSTs");
    for (i, damage) in ["corrupt", "missing"].into_iter().enumerate() {
        let victim = &ssts[i % ssts.len()];
        let saved = std::fs::read(victim).unwrap();
        if damage == "corrupt" {
            corrupt(victim);
        } else {
            std::fs::remove_file(victim).unwrap();
        }
        let env2 = env(Backend::RocksDb, 2, &dir, Some(&chk), &[]);
        let out = totals_job(&env2, generator(n, None), None);
        let err = env2.execute("from a damaged checkpoint").unwrap_err().to_string();
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!("{damage} {name}: {err}");
        assert!(err.contains(&name), "{damage}: the error names {name}: {err}");
        if damage == "corrupt" {
            assert!(err.to_lowercase().contains("crc") || err.contains("checksum"), "{err}");
        }
        assert!(out.values().is_empty(), "{damage}: nothing ran");
        std::fs::write(victim, saved).unwrap();
    }
    // Repaired, the checkpoint restores.
    let env3 = env(Backend::RocksDb, 3, &dir, Some(&chk), &[]);
    let out = totals_job(&env3, generator(n, None), None);
    env3.execute("from the repaired checkpoint").unwrap();
    assert_eq!(flushed(&out.values()), oracle(n));
    let _ = std::fs::remove_dir_all(&dir);
}

fn savepoint(client: &JobClient, dir: &Path, format: SnapshotFormat) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(dir.join("savepoints")),
                format,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .unwrap();
    match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed { location: Some(l), .. }) => l,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

/// Run part of the input on `backend` at `p` (restored from `from`), stop
/// with a savepoint of `format`.
fn run_and_savepoint(
    dir: &Path,
    backend: Backend,
    p: u32,
    from: Option<&Path>,
    n: u64,
    format: SnapshotFormat,
) -> PathBuf {
    let env = env(backend, p, dir, from, &[]);
    let _out = totals_job(&env, generator(n, Some(3_000)), None);
    let job = env.execute_async("totals").unwrap();
    let client = job.client();
    let start = client.metrics().source_records;
    wait_until("records", || client.metrics().source_records >= start + 2_000);
    let sp = savepoint(&client, dir, format);
    job.wait().unwrap();
    sp
}

#[test]
fn canonical_savepoints_move_state_from_rocksdb_to_the_heap_and_back() {
    let dir = temp_dir("canonical");
    let n = 20_000;
    // RocksDB (p=2) -> canonical -> heap (p=3) -> the heap's native savepoint
    // (logical key groups, which RocksDB reads) -> RocksDB (p=2) -> canonical
    // -> heap (p=1) to the end of the input.
    let sp1 = run_and_savepoint(&dir, Backend::RocksDb, 2, None, n, SnapshotFormat::Canonical);
    let sp2 = run_and_savepoint(&dir, Backend::Heap, 3, Some(&sp1), n, SnapshotFormat::Native);
    let sp3 = run_and_savepoint(&dir, Backend::RocksDb, 2, Some(&sp2), n, SnapshotFormat::Canonical);
    let env4 = env(Backend::Heap, 1, &dir, Some(&sp3), &[]);
    let out = totals_job(&env4, generator(n, None), None);
    env4.execute("back on the heap").unwrap();
    assert_eq!(flushed(&out.values()), oracle(n));
    // RocksDB's native savepoint holds RocksDB files: the heap refuses it,
    // saying which backend reads it and that canonical savepoints move.
    let native = run_and_savepoint(&dir, Backend::RocksDb, 2, Some(&sp1), n, SnapshotFormat::Native);
    let env5 = env(Backend::Heap, 2, &dir, Some(&native), &[]);
    let _ = totals_job(&env5, generator(n, None), None);
    let err = env5.execute("rocksdb files on the heap").unwrap_err().to_string();
    assert!(
        err.contains("state.backend.type: rocksdb") && err.contains("canonical"),
        "{err}"
    );
    // ... and it restores on RocksDB at another parallelism.
    let env6 = env(Backend::RocksDb, 3, &dir, Some(&native), &[]);
    let out = totals_job(&env6, generator(n, None), None);
    env6.execute("native on rocksdb").unwrap();
    assert_eq!(flushed(&out.values()), oracle(n));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A small deterministic random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Property over random retention counts and failure sequences: with
/// incremental checkpoints, every file any retained checkpoint references
/// exists with its recorded size, shared files no retained checkpoint
/// references are gone, and the latest retained checkpoint restores to the
/// oracle's totals.
#[test]
fn retention_with_shared_files_never_deletes_a_referenced_file() {
    for seed in 1..=4u64 {
        let mut rng = Rng(seed * 0x2545_f491_4f6c_dd1d);
        let dir = temp_dir(&format!("retention-{seed}"));
        let n = 80_000;
        let retained = 1 + rng.below(3);
        // Up to three failures at random events, each in its own attempt.
        // Attempts 0..f fail once one of their subtasks processed a random
        // number of events (so every failure happens, whatever was restored).
        let fails: Vec<u64> = (0..rng.below(4)).map(|_| 300 + rng.below(2_000)).collect();
        let fail_rule: FailRule = {
            let fails = fails.clone();
            Arc::new(move |seen, attempt| fails.get(attempt as usize) == Some(&seen))
        };
        let expected_restarts = fails.len() as u32;
        let retained_s = retained.to_string();
        let env = env(
            Backend::RocksDb,
            1 + rng.below(3) as u32,
            &dir,
            None,
            &[
                ("execution.checkpointing.interval", "30 ms"),
                ("execution.checkpointing.num-retained", &retained_s),
                ("restart-strategy.type", "fixed-delay"),
                ("restart-strategy.fixed-delay.attempts", "5"),
                ("restart-strategy.fixed-delay.delay", "10 ms"),
            ],
        );
        let _ = totals_job(&env, generator(n, Some(2_500)), Some(fail_rule));
        let job = env.execute_async("retention").unwrap();
        let client = job.client();
        let id = job.job_id().to_string();
        // Every injected failure happens, then a few more checkpoints complete.
        let more = 2 + rng.below(4);
        let mut after_restarts = None;
        wait_until(&format!("seed {seed}: failures, then {more} checkpoints"), || {
            let info = client.info();
            assert!(
                !info.status.is_terminal(),
                "seed {seed}: the job ended: {info:?} {:?}",
                client.checkpoints()
            );
            let done = completed_checkpoints(&client);
            if info.restarts < expected_restarts {
                return false;
            }
            done >= *after_restarts.get_or_insert(done) + more
        });
        let restarts = client.info().restarts;
        client.cancel().unwrap();
        let _ = job.wait();
        assert_eq!(
            restarts, expected_restarts,
            "seed {seed}: every injected failure restarted the job"
        );

        let job_dir = dir.join("checkpoints").join(&id);
        let mut complete = Vec::new();
        for e in std::fs::read_dir(&job_dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("chk-") {
                let listing = |d: &Path| -> Vec<String> {
                    walk(d)
                        .into_iter()
                        .map(|p| p.strip_prefix(d).unwrap().display().to_string())
                        .collect()
                };
                assert!(
                    e.path().join("_metadata").exists(),
                    "seed {seed}: {name} is partial: {:?}",
                    listing(&e.path())
                );
                complete.push(e.path());
            }
        }
        assert!(
            !complete.is_empty() && complete.len() as u64 <= retained,
            "seed {seed}: {} retained, at most {retained} wanted",
            complete.len()
        );
        let mut live = BTreeSet::new();
        for chk in &complete {
            for (path, size, _) in referenced(&load(chk)) {
                let actual = std::fs::metadata(&path).map(|m| m.len());
                assert_eq!(
                    actual.ok(),
                    Some(size),
                    "seed {seed}: {} of {}",
                    path.display(),
                    chk.display()
                );
                live.insert(path);
            }
        }
        let shared = job_dir.join("shared");
        for e in std::fs::read_dir(&shared).into_iter().flatten().flatten() {
            let p = std::fs::canonicalize(e.path()).unwrap();
            assert!(
                live.contains(&p),
                "seed {seed}: {} is referenced by no retained checkpoint",
                p.display()
            );
        }
        let latest = latest_checkpoint(&dir, &id);
        let env2 = StreamEnv::with_startup(StartupOptions {
            config: {
                let mut c = Configuration::new();
                c.set("state.backend.type", "rocksdb").unwrap();
                c.set("parallelism.default", "2").unwrap();
                c
            },
            restore_path: Some(latest),
            ..Default::default()
        });
        let out = totals_job(&env2, generator(n, None), None);
        env2.execute("from the latest retained checkpoint").unwrap();
        assert_eq!(flushed(&out.values()), oracle(n), "seed {seed}");
        eprintln!(
            "seed {seed}: {} retained of at most {retained}, {restarts} restarts, {} live files",
            complete.len(),
            live.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
