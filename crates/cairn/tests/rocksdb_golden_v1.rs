//! Golden fixture of a whole job's RocksDB snapshots, layout version 1
//! (`docs/formats/rocksdb-snapshot.md`): a native savepoint (self-contained,
//! paths relative to the savepoint) and a retained incremental checkpoint
//! (SSTs in the job's `shared/` directory, referenced as `../shared/…`),
//! both with `_metadata` version 2. Current code must keep restoring them,
//! at the old and at other parallelisms, to the per-key oracle.
//!
//! The fixture under `tests/golden/rocksdb-v1/` is never rewritten (a new
//! layout gets a new fixture beside it). `write_golden_rocksdb_v1_fixture`
//! (ignored) creates it only when it is missing:
//!
//!     cargo test -p cairn --features rocksdb --test rocksdb_golden_v1 -- --ignored
#![cfg(feature = "rocksdb")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn::snapshot::{load_snapshot, FileFormat, LocalFileStorage};

/// Events of the fixture job over its whole input, and their keys.
const EVENTS: u64 = 6_000;
const KEYS: u64 = 40;
/// Parallelism the fixture was written at.
const FIXTURE_PARALLELISM: u32 = 2;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rocksdb-v1")
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "cairn-rocksdb-golden-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn env(p: u32, work: &Path, restore: Option<&Path>, incremental: bool) -> StreamEnv {
    let mut config = Configuration::new();
    for (k, v) in [
        ("parallelism.default", p.to_string()),
        ("state.backend.type", "rocksdb".to_string()),
        ("execution.checkpointing.incremental", incremental.to_string()),
        ("execution.checkpointing.interval", "50 ms".to_string()),
        (
            "execution.checkpointing.dir",
            work.join("checkpoints").display().to_string(),
        ),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION".to_string(),
        ),
        (
            "state.backend.rocksdb.localdir",
            work.join("local").display().to_string(),
        ),
    ] {
        config.set(k, &v).unwrap();
    }
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore.map(Path::to_path_buf),
        ..Default::default()
    })
}

/// (key, count, sum, final): running totals; `final` marks the end-of-time
/// timer's output.
type Update = (u64, u64, u64, bool);

/// Per key a value state of (count, sum), a list state of the last few
/// event indices and a map state of counts by `value % 3`: every kind of
/// RocksDB row, and an end-of-time timer per key (timer rows).
#[derive(Clone, Default)]
struct Totals {
    totals: Option<ValueState<(u64, u64)>>,
    recent: Option<ListState<u64>>,
    by_residue: Option<MapState<u64, u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, Update> for Totals {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.totals = Some(ctx.value_state(ValueStateDescriptor::new("totals"))?);
        self.recent = Some(ctx.list_state(ListStateDescriptor::new("recent"))?);
        self.by_residue = Some(ctx.map_state(MapStateDescriptor::new("by-residue"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, Update>) -> OpResult {
        let s = self.totals.as_ref().ok_or("not opened")?;
        let (count, sum) = s.value(ctx)?.unwrap_or((0, 0));
        let next = (count + 1, sum + e.value % 1000);
        s.update(ctx, &next)?;
        let recent = self.recent.as_ref().ok_or("not opened")?;
        recent.add(ctx, &e.index)?;
        if recent.get(ctx)?.len() > 4 {
            let keep: Vec<u64> = recent.get(ctx)?.into_iter().rev().take(4).rev().collect();
            recent.update(ctx, &keep)?;
        }
        let m = self.by_residue.as_ref().ok_or("not opened")?;
        let r = e.value % 3;
        let c = m.get(ctx, &r)?.unwrap_or(0);
        m.put(ctx, &r, &(c + 1))?;
        ctx.register_event_time_timer(i64::MAX - 1)?;
        ctx.collect((*ctx.key(), next.0, next.1, false));
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, Update>) -> OpResult {
        let (count, sum) = self.totals.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or((0, 0));
        // The map's counts add up to the key's count, and the list holds the
        // key's last (up to) four events: the restored list and map states
        // are checked through the output.
        let by_residue: u64 = self
            .by_residue
            .as_ref()
            .ok_or("not opened")?
            .entries(ctx)?
            .into_iter()
            .map(|(_, c)| c)
            .sum();
        let recent = self.recent.as_ref().ok_or("not opened")?.get(ctx)?;
        if by_residue != count || recent.len() as u64 != count.min(4) {
            return Err(format!(
                "key {}: map counts {by_residue} and list {recent:?} disagree with count {count}",
                ctx.key()
            )
            .into());
        }
        ctx.collect((*ctx.key(), count, sum, true));
        Ok(())
    }
}

fn generator(rate: Option<u64>) -> GeneratorSource {
    let g = GeneratorSource::new(EVENTS, KEYS).seed(23).splits(4);
    match rate {
        Some(r) => g.rate(r),
        None => g,
    }
}

fn oracle() -> BTreeMap<u64, (u64, u64)> {
    let g = generator(None);
    let mut m = BTreeMap::new();
    for i in 0..EVENTS {
        let e = g.event(i);
        let t = m.entry(e.key).or_insert((0, 0));
        t.0 += 1;
        t.1 += e.value % 1000;
    }
    m
}

fn job(env: &StreamEnv, rate: Option<u64>) -> Collected<Update> {
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(generator(rate), WatermarkStrategy::for_monotonous_timestamps())
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Totals::default())
        .uid("totals")
        .sink(sink);
    out
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
#[ignore = "writes the golden fixture once; never rerun over an existing one"]
fn write_golden_rocksdb_v1_fixture() {
    let dir = golden();
    assert!(
        !dir.exists(),
        "{} exists: golden fixtures are never rewritten",
        dir.display()
    );
    // A native savepoint, taken by stop-with-savepoint part-way through the input.
    let work = temp_dir("write-savepoint");
    let e = env(FIXTURE_PARALLELISM, &work, None, true);
    let _out = job(&e, Some(2_000));
    let running = e.execute_async("golden rocksdb v1").unwrap();
    let client = running.client();
    wait_until("some input", || client.metrics().source_records >= 1_500);
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(work.join("savepoints")),
                format: SnapshotFormat::Native,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .unwrap();
    let location = match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed { location: Some(l), .. }) => l,
        other => panic!("savepoint did not complete: {other:?}"),
    };
    running.wait().unwrap();
    copy_tree(&location, &dir.join("savepoint-native"));
    let _ = std::fs::remove_dir_all(&work);

    // A retained incremental checkpoint: run until several checkpoints
    // completed (later ones reuse earlier SSTs), cancel, keep the job's
    // latest checkpoint and its shared directory.
    let work = temp_dir("write-checkpoint");
    let e = env(FIXTURE_PARALLELISM, &work, None, true);
    let _out = job(&e, Some(150));
    let running = e.execute_async("golden rocksdb v1").unwrap();
    let client = running.client();
    let job_id = running.job_id().to_string();
    wait_until("checkpoints", || client.checkpoints().counts.completed >= 3);
    client.cancel().unwrap();
    let read = client.metrics().source_records;
    assert!(
        read < EVENTS / 2,
        "the retained checkpoint is from part-way through the input ({read} of {EVENTS} read)"
    );
    let _ = running.wait();
    let job_dir = work.join("checkpoints").join(job_id);
    let target = dir.join("checkpoint");
    for e in std::fs::read_dir(&job_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "shared" || (name.starts_with("chk-") && e.path().join("_metadata").exists()) {
            copy_tree(&e.path(), &target.join(&name));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The fixture's single retained checkpoint directory.
fn fixture_checkpoint(root: &Path) -> PathBuf {
    let mut chk: Vec<PathBuf> = std::fs::read_dir(root.join("checkpoint"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("chk-")))
        .collect();
    assert_eq!(chk.len(), 1, "one retained checkpoint in the fixture: {chk:?}");
    chk.pop().unwrap()
}

/// Restore a copy of the fixture snapshot at `rel` at parallelism `p`, run
/// to the end of the input, and compare with the oracle; the restored job
/// must not have read its input from the start (its state came back).
fn restores_to_the_oracle(rel: &str, p: u32) {
    let work = temp_dir("restore");
    copy_tree(&golden(), &work.join("fixture"));
    let snapshot = if rel == "checkpoint" {
        fixture_checkpoint(&work.join("fixture"))
    } else {
        work.join("fixture").join(rel)
    };
    let e = env(p, &work, Some(&snapshot), true);
    let out = job(&e, None);
    e.execute("from the golden fixture").unwrap();
    let values = out.values();
    let finals: BTreeMap<u64, (u64, u64)> = values.iter().filter(|u| u.3).map(|u| (u.0, (u.1, u.2))).collect();
    assert_eq!(finals, oracle(), "{rel} at parallelism {p}: final totals per key");
    let updates = values.iter().filter(|u| !u.3).count() as u64;
    assert!(
        updates < EVENTS && updates > 0,
        "{rel}: {updates} of {EVENTS} events processed after the restore (the source and state were restored)"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_fixture_is_rocksdb_layout_v1_under_metadata_v2() {
    let root = golden();
    for snap in [root.join("savepoint-native"), fixture_checkpoint(&root)] {
        let loaded = load_snapshot(&LocalFileStorage::new(), &snap).unwrap();
        assert_eq!(loaded.metadata.format_version, 2, "{}", snap.display());
        let files: Vec<_> = loaded.metadata.files().collect();
        let ssts: Vec<_> = files
            .iter()
            .filter(|(_, _, f)| f.format == FileFormat::BackendFile && f.path.ends_with(".sst"))
            .collect();
        assert!(!ssts.is_empty(), "{}: RocksDB SSTs", snap.display());
        let descriptors = files
            .iter()
            .filter(|(_, _, f)| f.path.ends_with("CAIRN-ROCKSDB"))
            .count();
        assert_eq!(descriptors, FIXTURE_PARALLELISM as usize, "one descriptor per subtask");
        let shared = ssts.iter().filter(|(_, _, f)| f.path.starts_with("../shared/")).count();
        if snap.ends_with("savepoint-native") {
            assert_eq!(shared, 0, "a native savepoint is self-contained");
        } else {
            assert_eq!(shared, ssts.len(), "an incremental checkpoint's SSTs are shared");
        }
    }
}

#[test]
fn the_golden_native_savepoint_restores_at_its_parallelism() {
    restores_to_the_oracle("savepoint-native", FIXTURE_PARALLELISM);
}

#[test]
fn the_golden_native_savepoint_restores_at_parallelism_3() {
    restores_to_the_oracle("savepoint-native", 3);
}

#[test]
fn the_golden_incremental_checkpoint_restores_at_parallelism_1() {
    restores_to_the_oracle("checkpoint", 1);
}

#[test]
fn the_golden_incremental_checkpoint_restores_at_parallelism_3() {
    restores_to_the_oracle("checkpoint", 3);
}
