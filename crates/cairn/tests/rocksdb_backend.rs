//! The RocksDB state backend in real jobs: its local directory lives exactly
//! as long as the job (finished, failed or cancelled), a bad or full local
//! directory fails the job with an error naming it, and state far larger
//! than the configured memory stays exact.
#![cfg(feature = "rocksdb")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::prelude::*;
use cairn::runtime::JobError;
use common::{assert_contains_all, PacedSource};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-rocksdb-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `cairn-rocksdb-*` job directories under `local`.
fn job_dirs(local: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(local)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("cairn-rocksdb-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rocksdb_env(local: &Path, p: u32) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(p).unwrap();
    env.set_config("state.backend.type", "rocksdb").unwrap();
    env.set_config("state.backend.rocksdb.localdir", local.to_str().unwrap())
        .unwrap();
    env
}

/// Counts per key; fails on the record `(fail_key, fail_at)` when set.
#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
    fail_on: Option<u64>,
}

impl KeyedProcessFunction<u64, u64, (u64, u64)> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        if self.fail_on == Some(v) {
            return Err(format!("failing on purpose at {v}").into());
        }
        let s = self.count.as_ref().ok_or("not opened")?;
        let n = s.value(ctx)?.unwrap_or(0) + 1;
        s.update(ctx, &n)?;
        ctx.collect((*ctx.key(), n));
        Ok(())
    }
}

fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_local_directory_lives_while_the_job_runs_and_is_removed_when_it_finishes() {
    let local = temp_dir("finish");
    let env = rocksdb_env(&local, 2);
    let release = Arc::new(AtomicBool::new(false));
    let (sink, out) = CollectSink::new();
    env.source(PacedSource::new((0..500u64).collect()).hold_until(release.clone()))
        .uid("src")
        .key_by(|v: &u64| v % 17)
        .process(Count::default())
        .uid("count")
        .sink(sink);
    let job = env.execute_async("rocksdb dir lifecycle").unwrap();
    wait_for("the job's RocksDB directory", Duration::from_secs(20), || {
        job_dirs(&local).len() == 1
    });
    let dir = job_dirs(&local).remove(0);
    assert!(
        dir.file_name().unwrap().to_string_lossy().contains(job.job_id()),
        "{dir:?} is named after job {}",
        job.job_id()
    );
    let instances: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("op-"))
        .collect();
    assert_eq!(instances.len(), 2, "one RocksDB instance per keyed subtask");
    release.store(true, Ordering::SeqCst);
    job.wait().unwrap();
    assert!(
        job_dirs(&local).is_empty(),
        "removed when the job finished: {:?}",
        job_dirs(&local)
    );
    assert_eq!(out.values().len(), 500);
    std::fs::remove_dir_all(&local).unwrap();
}

#[test]
fn the_local_directory_is_removed_when_the_job_fails() {
    let local = temp_dir("fail");
    let env = rocksdb_env(&local, 2);
    env.set_config("restart-strategy.type", "none").unwrap();
    let (sink, _) = CollectSink::new();
    env.from_collection((0..2000u64).collect())
        .uid("src")
        .key_by(|v: &u64| v % 13)
        .process(Count {
            fail_on: Some(1500),
            ..Count::default()
        })
        .uid("count")
        .sink(sink);
    let err = env.execute("fails").unwrap_err().to_string();
    assert!(err.contains("failing on purpose"), "{err}");
    assert!(
        job_dirs(&local).is_empty(),
        "removed after the failure: {:?}",
        job_dirs(&local)
    );
    std::fs::remove_dir_all(&local).unwrap();
}

#[test]
fn the_local_directory_is_removed_when_the_job_is_cancelled() {
    let local = temp_dir("cancel");
    let env = rocksdb_env(&local, 2);
    let release = Arc::new(AtomicBool::new(false));
    let (sink, _) = CollectSink::new();
    env.source(PacedSource::new((0..100u64).collect()).hold_until(release))
        .uid("src")
        .key_by(|v: &u64| v % 5)
        .process(Count::default())
        .uid("count")
        .sink(sink);
    let job = env.execute_async("cancelled").unwrap();
    wait_for("the job's RocksDB directory", Duration::from_secs(20), || {
        job_dirs(&local).len() == 1
    });
    job.client().cancel().unwrap();
    assert!(matches!(job.wait(), Err(CairnError::Job(JobError::Cancelled))));
    assert!(
        job_dirs(&local).is_empty(),
        "removed after cancel: {:?}",
        job_dirs(&local)
    );
    std::fs::remove_dir_all(&local).unwrap();
}

#[test]
fn a_local_directory_that_cannot_be_created_fails_at_startup_naming_it() {
    let base = temp_dir("bad");
    let file = base.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let local = file.join("state");
    let env = rocksdb_env(&local, 1);
    let (sink, _) = CollectSink::new();
    env.from_collection(vec![1u64])
        .uid("src")
        .key_by(|v: &u64| *v)
        .process(Count::default())
        .uid("count")
        .sink(sink);
    let err = env.execute("bad dir").unwrap_err().to_string();
    assert_contains_all(&err, &[&local.display().to_string(), "state.backend.rocksdb.localdir"]);
    std::fs::remove_dir_all(&base).unwrap();
}

/// Per-key counts of `n` records over `keys` keys, checked exactly, with a
/// memory budget far below the state's size (the write cache, memtables
/// and block cache all overflow to disk many times).
#[test]
fn state_many_times_larger_than_its_memory_budget_stays_exact() {
    let local = temp_dir("large");
    let env = rocksdb_env(&local, 2);
    env.set_config("taskmanager.memory.managed.size", "2 mb").unwrap();
    let (n, keys) = (120_000u64, 40_000u64);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(n, keys))
        .uid("src")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(LastCount::default())
        .uid("count")
        .sink(sink);
    env.execute("large state").unwrap();
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..n {
        *expected.entry(i % keys).or_default() += 1;
    }
    let mut got: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, c) in out.values() {
        let e = got.entry(k).or_default();
        *e = (*e).max(c);
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "per-key counts differ from the oracle");
    std::fs::remove_dir_all(&local).unwrap();
}

/// Counts per key and emits the count every 4th record of the key.
#[derive(Clone, Default)]
struct LastCount {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for LastCount {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let s = self.count.as_ref().ok_or("not opened")?;
        let n = s.value(ctx)?.unwrap_or(0) + 1;
        s.update(ctx, &n)?;
        ctx.register_event_time_timer(i64::MAX)?;
        if n % 4 == 0 {
            ctx.collect((e.key, n));
        }
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let s = self.count.as_ref().ok_or("not opened")?;
        let n = s.value(ctx)?.ok_or("a key with a timer has a count")?;
        ctx.collect((*ctx.key(), n));
        Ok(())
    }
}

/// Set by [`a_full_local_disk_fails_the_job_naming_the_directory`] for the
/// job it runs in a private mount namespace.
const FULL_DISK_ENV: &str = "CAIRN_TEST_FULL_DISK_DIR";

/// A local directory on a 4 MiB file system (a tmpfs in a private mount
/// namespace made with `unshare`, so nothing outside the test sees it): a
/// job writing far more state fails with an error naming the directory and
/// the full disk, instead of hanging or losing data silently.
#[test]
fn a_full_local_disk_fails_the_job_naming_the_directory() {
    let dir = temp_dir("full-disk");
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m cairn-full '{}' && exec '{}' --exact job_on_a_full_disk --ignored --nocapture",
        dir.display(),
        exe.display()
    );
    // As root (CI) a mount namespace suffices; otherwise a user namespace maps
    // the test's user to root inside it. /proc/self belongs to the effective user.
    let mut args = vec!["--mount"];
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        args.splice(0..0, ["--user", "--map-root-user"]);
    }
    let out = std::process::Command::new("unshare")
        .args(&args)
        .args(["sh", "-c", &script])
        .env(FULL_DISK_ENV, &dir)
        .output()
        .expect("unshare (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the job on a full disk did not behave:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "run by a_full_local_disk_fails_the_job_naming_the_directory inside a mount namespace"]
fn job_on_a_full_disk() {
    let dir = PathBuf::from(std::env::var_os(FULL_DISK_ENV).expect("run by the full-disk test"));
    let env = rocksdb_env(&dir, 1);
    env.set_config("restart-strategy.type", "none").unwrap();
    env.set_config("taskmanager.memory.managed.size", "2 mb").unwrap();
    let (sink, _) = CollectSink::new();
    env.source(GeneratorSource::new(200_000, 200_000))
        .uid("src")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Payload::default())
        .uid("payload")
        .sink(sink);
    let started = Instant::now();
    let err = env.execute("full disk").unwrap_err().to_string();
    eprintln!("job on a full disk failed after {:?}: {err}", started.elapsed());
    assert_contains_all(&err, &[&dir.display().to_string(), "state.backend.rocksdb.localdir"]);
    assert!(err.contains("No space left") || err.contains("disk is full"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the failure took {:?}",
        started.elapsed()
    );
}

/// Stores 1 KiB of random bytes per key.
#[derive(Clone, Default)]
struct Payload {
    data: Option<ValueState<Vec<u8>>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, ()> for Payload {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.data = Some(ctx.value_state(ValueStateDescriptor::new("data"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, ()>) -> OpResult {
        let s = self.data.as_ref().ok_or("not opened")?;
        // Incompressible (RocksDB compresses with LZ4), so the disk fills fast.
        let mut x = e.index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let bytes: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.update(ctx, &bytes)?;
        Ok(())
    }
}
