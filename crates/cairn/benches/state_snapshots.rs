//! Checkpoint and savepoint cost for large keyed state. A job loads `K` keys
//! (each with a `ValueState<u64>` count and a `ValueState<u64>` sum, as the
//! counting job), then stays idle while this program takes a checkpoint, a
//! native savepoint and a canonical savepoint, and restores a new job from
//! each savepoint. It also measures the disk's sequential write bandwidth
//! (1 GiB with fsync) and read bandwidth (the same file, read with O_DIRECT
//! so the page cache does not answer) in the same run.
//!
//! With `-D key=value` options (e.g. `-D state.backend.type=rocksdb -D
//! execution.checkpointing.incremental=true`, built with `--features rocksdb`)
//! it also changes 1% of the keys after the first checkpoint and takes a
//! second one, reporting the bytes it uploaded against the bytes of state
//! that changed, and restores a job from that checkpoint.
//!
//!     cargo bench -p cairn --bench state_snapshots -- [K] [dir] [--no-read] [-D key=value ...]
//!
//! `--no-read` skips reading every key through the State Processor API (which
//! takes longer than everything else at tens of millions of keys on RocksDB).
//! Reading RocksDB snapshots needs `--features rocksdb,cairn-state-processor/rocksdb`.
//!
//! Prints one line per measurement.

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{
    AfterSavepoint, CheckpointRequestKind, JobClient, OperationStatus, SavepointRequest, SnapshotFormat,
};
use cairn::prelude::*;
use cairn::state::DistributionMode;

/// Emits keys `0..keys` once, then idles (keeping the job alive) until
/// cancelled; when `again` is set, emits every 100th of its keys once more.
#[derive(Clone)]
struct LoadThenIdle {
    keys: u64,
    next: u64,
    again: Arc<AtomicBool>,
    first: u64,
    repeated: bool,
}

const POSITION: &str = "position";

impl Source<u64> for LoadThenIdle {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        let share = |s: u32| self.keys * u64::from(s) / u64::from(ctx.info.parallelism);
        self.next = share(ctx.info.subtask);
        let end = share(ctx.info.subtask + 1);
        self.first = self.next;
        if let Some(p) = ctx.state.list::<(u64, u64)>(POSITION)?.first() {
            (self.next, self.keys) = *p;
            self.repeated = true;
        } else {
            self.keys = end;
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<u64>>, max: usize) -> OpResult<SourceStatus> {
        if self.next >= self.keys {
            if !self.repeated && self.again.load(Ordering::SeqCst) {
                self.repeated = true;
                out.extend((self.first..self.keys).step_by(100).map(StreamRecord::new));
                return Ok(SourceStatus::More);
            }
            return Ok(SourceStatus::Pending(Duration::from_millis(20)));
        }
        let n = (max as u64).min(self.keys - self.next);
        out.extend((self.next..self.next + n).map(StreamRecord::new));
        self.next += n;
        Ok(SourceStatus::More)
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        ctx.state
            .set_list(POSITION, DistributionMode::SplitEvenly, &[(self.next, self.keys)])?;
        Ok(())
    }
}

#[derive(Clone, Default)]
struct CountAndSum {
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
    processed: Arc<AtomicU64>,
}

impl KeyedProcessFunction<u64, u64, ()> for CountAndSum {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        self.sum = Some(ctx.value_state(ValueStateDescriptor::new("sum"))?);
        Ok(())
    }

    fn process_element(&mut self, k: u64, ctx: &mut KeyedContext<'_, u64, ()>) -> OpResult {
        let (c, s) = (self.count.as_ref().ok_or("open")?, self.sum.as_ref().ok_or("open")?);
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, &n)?;
        let v = s.value(ctx)?.unwrap_or(0) + k;
        s.update(ctx, &v)?;
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What the job shares with this program.
#[derive(Clone, Default)]
struct Probe {
    again: Arc<AtomicBool>,
    processed: Arc<AtomicU64>,
}

fn env(dir: &Path, keys: u64, restore: Option<PathBuf>, extra: &[(String, String)], probe: &Probe) -> StreamEnv {
    let mut config = Configuration::new();
    for (k, v) in [
        ("parallelism.default", "2".to_string()),
        (
            "execution.checkpointing.dir",
            dir.join("checkpoints").display().to_string(),
        ),
        ("execution.checkpointing.timeout", "1h".to_string()),
        ("execution.checkpointing.num-retained", "2".to_string()),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION".to_string(),
        ),
    ] {
        config.set(k, &v).expect("valid config");
    }
    for (k, v) in extra {
        config.set(k, v).expect("valid -D option");
    }
    let env = StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore,
        ..Default::default()
    });
    env.source(LoadThenIdle {
        keys,
        next: 0,
        again: probe.again.clone(),
        first: 0,
        repeated: false,
    })
    .uid("keys")
    .key_by(|k: &u64| *k)
    .process(CountAndSum {
        processed: probe.processed.clone(),
        ..Default::default()
    })
    .uid("counter");
    env
}

fn wait(client: &JobClient, op: &str) -> Result<(Option<PathBuf>, Option<u64>), String> {
    match client.wait_operation(op, Duration::from_secs(3600)) {
        Some(OperationStatus::Completed {
            location,
            checkpoint_id,
        }) => Ok((location, checkpoint_id)),
        other => Err(format!("{other:?}")),
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Every file a snapshot's `_metadata` references: (absolute path, size).
fn referenced(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let snap = cairn::snapshot::load_snapshot(&cairn::snapshot::LocalFileStorage::new(), dir).expect("a snapshot");
    snap.metadata
        .files()
        .map(|(_, _, f)| (std::fs::canonicalize(snap.dir.join(&f.path)).expect("a file"), f.size))
        .collect()
}

/// Peak resident memory of this process (VmHWM), MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// CPU seconds (user + system, all threads) this process has used so far,
/// from `/proc/self/stat`; on a shared machine wall time depends on the
/// load, CPU time much less.
fn cpu_seconds() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // (the first field after it is the state letter, field 3).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / ticks
}

/// Whether `location` is a checkpoint directory (`chk-<n>`), not a savepoint.
fn is_checkpoint(location: &Path) -> bool {
    location
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("chk-"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `O_DIRECT` on Linux (reads bypass the page cache).
#[cfg(all(target_os = "linux", any(target_arch = "aarch64", target_arch = "arm")))]
const O_DIRECT: i32 = 0o200000;
#[cfg(not(all(target_os = "linux", any(target_arch = "aarch64", target_arch = "arm"))))]
const O_DIRECT: i32 = 0o40000;

/// Read `path` with O_DIRECT (4 MiB aligned reads); MiB/s, or `None` where
/// the file system refuses O_DIRECT.
fn direct_read_bandwidth(path: &Path) -> Option<f64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(path)
        .ok()?;
    const ALIGN: usize = 4096;
    let mut raw = vec![0u8; (4 << 20) + ALIGN];
    let offset = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[offset..offset + (4 << 20)];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return None,
        }
    }
    Some(mib(total) / start.elapsed().as_secs_f64())
}

/// Sequential write (with fsync) and read bandwidth of `dir`, in MiB/s; the
/// read bypasses the page cache where O_DIRECT works.
fn disk_bandwidth(dir: &Path) -> std::io::Result<(f64, f64)> {
    let path = dir.join("bandwidth.bin");
    let block = vec![0x5au8; 4 << 20];
    let total: u64 = 1 << 30;
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut written = 0;
    while written < total {
        f.write_all(&block)?;
        written += block.len() as u64;
    }
    f.sync_all()?;
    let write = mib(total) / start.elapsed().as_secs_f64();
    drop(f);
    let read = match direct_read_bandwidth(&path) {
        Some(r) => r,
        None => {
            println!("disk: O_DIRECT refused; the read bandwidth comes from the page cache");
            let start = Instant::now();
            let mut f = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; 4 << 20];
            while f.read(&mut buf)? > 0 {}
            mib(total) / start.elapsed().as_secs_f64()
        }
    };
    std::fs::remove_file(&path)?;
    Ok((write, read))
}

/// Reads each key's count and sum.
#[derive(Clone, Default)]
struct ReadCount {
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
}

impl cairn_state_processor::KeyedStateReaderFunction for ReadCount {
    type Key = u64;
    type Out = u64;
    fn open(&mut self, s: &mut cairn::state::KeyedStateAccess) -> Result<(), cairn::state::StateError> {
        self.count = Some(s.value_state(ValueStateDescriptor::new("count"))?);
        self.sum = Some(s.value_state(ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn read_key(
        &mut self,
        _key: &u64,
        ctx: &mut cairn_state_processor::ReaderContext<'_>,
        out: &mut cairn_state_processor::Collector<u64>,
    ) -> OpResult {
        let c = self.count.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or(0);
        let s = self.sum.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or(0);
        out.collect(c + s);
        Ok(())
    }
}

fn load1() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().next().unwrap_or("?").to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut args = Vec::new();
    let mut extra = Vec::new();
    let mut read_keys = true;
    let mut it = raw.into_iter();
    while let Some(a) = it.next() {
        if a == "--no-read" {
            read_keys = false;
        } else if a == "-D" {
            let kv = it.next().ok_or("-D needs key=value")?;
            let (k, v) = kv.split_once('=').ok_or("-D needs key=value")?;
            extra.push((k.to_string(), v.to_string()));
        } else {
            args.push(a);
        }
    }
    let keys: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let base = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-state-snapshots-bench"));
    let backend = extra
        .iter()
        .find(|(k, _)| k == "state.backend.type")
        .map_or("hashmap".to_string(), |(_, v)| v.clone());
    let probe = Probe::default();
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    let load = load1();

    let (write_bw, read_bw) = disk_bandwidth(&base)?;
    println!("disk sequential_write_mib_s={write_bw:.0} sequential_read_mib_s={read_bw:.0} (1 GiB; write with fsync, read with O_DIRECT)");

    // Load the state.
    let started = Instant::now();
    let job = env(&base, keys, None, &extra, &probe).execute_async("state snapshots")?;
    let client = job.client();
    while probe.processed.load(Ordering::SeqCst) < keys {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "load backend={backend} keys={keys} seconds={:.2} peak_rss_mib={}",
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );

    // The configured kind (incremental when so configured).
    let op = client.trigger_checkpoint(CheckpointRequestKind::Configured, None)?;
    let (first_dir, id) = wait(&client, &op)?;
    let stats = client
        .checkpoint(id.ok_or("checkpoint id")?)
        .ok_or("checkpoint stats")?;
    println!(
        "checkpoint backend={backend} keys={keys} duration_ms={} sync_ms={} async_ms={} size_mib={:.1} write_mib_s={:.0} load1={load}",
        stats.duration_ms,
        stats.sync_duration_ms,
        stats.async_duration_ms,
        mib(stats.state_size_bytes),
        mib(stats.state_size_bytes) / (stats.duration_ms.max(1) as f64 / 1000.0),
    );
    // 1% of the keys change; the next checkpoint's new files against that.
    probe.again.store(true, Ordering::SeqCst);
    while probe.processed.load(Ordering::SeqCst) < keys + keys.div_ceil(100) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let op = client.trigger_checkpoint(CheckpointRequestKind::Configured, None)?;
    let (second_dir, id2) = wait(&client, &op)?;
    let stats2 = client
        .checkpoint(id2.ok_or("checkpoint id")?)
        .ok_or("checkpoint stats")?;
    if let (Some(a), Some(b)) = (first_dir, second_dir.clone()) {
        let (in_a, in_b) = (referenced(&a), referenced(&b));
        let total_a: u64 = in_a.iter().map(|f| f.1).sum();
        let new_b: u64 = in_b.iter().filter(|f| !in_a.contains(f)).map(|f| f.1).sum();
        let changed = total_a as f64 / 100.0;
        println!(
            "incremental backend={backend} keys={keys} changed_keys={} uploaded_kib={:.0} changed_state_kib={:.0} ratio={:.2} duration_ms={} sync_ms={}",
            keys.div_ceil(100),
            new_b as f64 / 1024.0,
            changed / 1024.0,
            new_b as f64 / changed,
            stats2.duration_ms,
            stats2.sync_duration_ms,
        );
    }

    let mut savepoints = Vec::new();
    for format in [SnapshotFormat::Native, SnapshotFormat::Canonical] {
        let started = Instant::now();
        let cpu = cpu_seconds();
        let op = client.trigger_savepoint(
            SavepointRequest {
                target_directory: Some(base.join("savepoints")),
                format,
                then: AfterSavepoint::KeepRunning,
            },
            None,
        )?;
        match wait(&client, &op) {
            Ok((Some(location), _)) => {
                let secs = started.elapsed().as_secs_f64();
                let cpu = cpu_seconds() - cpu;
                let size = dir_size(&location);
                println!(
                    "savepoint backend={backend} format={format:?} keys={keys} seconds={secs:.2} cpu_seconds={cpu:.2} size_mib={:.1} write_mib_s={:.0} mib_per_cpu_s={:.0} ratio_to_disk_write={:.2} load1={}",
                    mib(size),
                    mib(size) / secs,
                    mib(size) / cpu.max(0.01),
                    mib(size) / secs / write_bw,
                    load1()
                );
                savepoints.push((format, location, size));
            }
            other => println!("savepoint format={format:?} failed: {other:?}"),
        }
    }
    client.cancel()?;
    let _ = job.wait();

    if let Some(chk) = second_dir {
        let size = dir_size(&chk) + dir_size(&chk.parent().map(|p| p.join("shared")).unwrap_or_default());
        savepoints.push((SnapshotFormat::Native, chk, size));
    }
    // The State Processor API reading every key's state (parallel over key groups).
    for (format, location, _) in savepoints.iter().filter(|_| read_keys) {
        let format = if is_checkpoint(location) {
            "checkpoint".to_string()
        } else {
            format!("{format:?}")
        };
        let started = Instant::now();
        let cpu = cpu_seconds();
        let reader = cairn_state_processor::SavepointReader::read(location)?;
        let rows = reader.read_keyed_state("counter", ReadCount::default())?;
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let sum: u64 = rows.iter().sum();
        println!(
            "read_keyed_state from={format} keys={} seconds={secs:.2} cpu_seconds={cpu:.2} keys_per_s={:.0} keys_per_cpu_s={:.0} load1={} (checksum {sum})",
            rows.len(),
            rows.len() as f64 / secs,
            rows.len() as f64 / cpu.max(0.01),
            load1()
        );
    }

    let saved = |f: SnapshotFormat| {
        savepoints
            .iter()
            .find(|(format, location, _)| *format == f && !is_checkpoint(location))
            .map(|(_, _, size)| *size)
    };
    if let (Some(native), Some(canonical)) = (saved(SnapshotFormat::Native), saved(SnapshotFormat::Canonical)) {
        println!(
            "size canonical_mib={:.1} native_mib={:.1} canonical_to_native={:.2}",
            mib(canonical),
            mib(native),
            canonical as f64 / native.max(1) as f64
        );
    }

    for (format, location, size) in savepoints {
        let what = if is_checkpoint(&location) {
            "checkpoint".to_string()
        } else {
            format!("{format:?}")
        };
        let started = Instant::now();
        let cpu = cpu_seconds();
        let job = env(&base, keys, Some(location), &extra, &Probe::default()).execute_async("restore")?;
        // The job runs once every subtask restored its state.
        let client = job.client();
        let deadline = Instant::now() + Duration::from_secs(3600);
        while client.info().status != cairn::coordinator::control::JobStatus::Running {
            if client.info().status.is_terminal() || Instant::now() > deadline {
                return Err(format!("the restored job did not run: {:?}", client.info().status).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        println!(
            "restore backend={backend} from={what} keys={keys} seconds={secs:.2} cpu_seconds={cpu:.2} read_mib_s={:.0} mib_per_cpu_s={:.0} ratio_to_disk_read={:.2} ratio_to_disk_write={:.2} load1={}",
            mib(size) / secs,
            mib(size) / cpu.max(0.01),
            mib(size) / secs / read_bw,
            mib(size) / secs / write_bw,
            load1()
        );
        job.client().cancel()?;
        let _ = job.wait();
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
