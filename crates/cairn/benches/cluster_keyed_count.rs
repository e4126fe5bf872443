//! Keyed counting over several processes of one machine: one process
//! against a coordinator with 2 and with 4 worker processes (loopback
//! TCP between them), the bytes per record the workers send each other,
//! and how long checkpoints take to local files and to an S3-compatible
//! object store (moto).
//!
//!     cargo bench -p cairn --features s3 --bench cluster_keyed_count -- [N] [K]
//!
//! The bench binary is the job too: the driver starts copies of itself
//! with `--mode coordinator` / `--mode worker` (and without a mode for the
//! single process) and reads what they print. With `CAIRN_MOTO_SERVER` set
//! (and the `s3` feature), the checkpoint runs use moto.

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::prelude::*;

#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        ctx.collect((e.key, n));
        Ok(())
    }
}

/// The job every process runs: `N` events over `K` keys, count per key, discard.
fn job() -> Result<(), CairnError> {
    let env = StreamEnv::from_args()?;
    let pos: Vec<u64> = env.user_args().iter().filter_map(|a| a.parse().ok()).collect();
    let (n, k) = (
        pos.first().copied().unwrap_or(4_000_000),
        pos.get(1).copied().unwrap_or(100_000),
    );
    env.show_progress(true);
    env.source(GeneratorSource::new(n, k).splits(12))
        .uid("gen")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Count::default())
        .uid("count")
        .sink(DiscardSink)
        .uid("discard");
    env.execute("cluster keyed count bench")?;
    Ok(())
}

fn spawn(args: &[String], home: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env("CAIRN_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Run {
    seconds: f64,
    records_per_second: f64,
    bytes_per_record: Option<f64>,
    checkpoints_ms: Vec<u64>,
    checkpoint_bytes: u64,
}

/// A `key=value` field of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The job's end ("the job finished", seconds, per_second) and the
/// checkpoint lines ("checkpoint N completed", duration_ms, state_size_bytes).
fn parse(log: &str, workers: &[String]) -> Run {
    let line = log
        .lines()
        .find(|l| l.contains("the job finished"))
        .unwrap_or_else(|| panic!("the job did not finish:\n{log}"));
    let seconds: f64 = field(line, "seconds").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let rps: f64 = field(line, "per_second").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let mut checkpoints_ms = Vec::new();
    let mut checkpoint_bytes = 0;
    for l in log
        .lines()
        .filter(|l| l.contains("checkpoint ") && l.contains(" completed "))
    {
        if let Some(ms) = field(l, "duration_ms").and_then(|v| v.parse().ok()) {
            checkpoints_ms.push(ms);
            checkpoint_bytes = field(l, "state_size_bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    let (mut bytes, mut records) = (0f64, 0f64);
    for w in workers {
        for l in w.lines().filter(|l| l.contains(" to other workers")) {
            let parts: Vec<&str> = l.split_whitespace().collect();
            if let Some(i) = parts.iter().position(|p| *p == "sent") {
                records += parts[i + 1].parse::<f64>().unwrap_or(0.0);
                bytes += parts[i + 4].parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Run {
        seconds,
        records_per_second: rps,
        bytes_per_record: (records > 0.0).then(|| bytes / records),
        checkpoints_ms,
        checkpoint_bytes,
    }
}

/// One process, or a coordinator with `workers` workers, at parallelism `p`.
fn run(workers: usize, p: u32, n: u64, k: u64, keys: &[String], home: &Path, port: u16) -> Run {
    let mut common: Vec<String> = keys.iter().flat_map(|k| ["-D".to_string(), k.clone()]).collect();
    common.extend(["-D".into(), "rest.port=0".into()]);
    let job_args = vec!["--".to_string(), n.to_string(), k.to_string()];
    if workers == 0 {
        let mut args = vec!["-p".to_string(), p.to_string()];
        args.extend(common);
        args.extend(job_args);
        let log = output(spawn(&args, home));
        return parse(&log, &[]);
    }
    let mut args = vec!["--mode".into(), "coordinator".into(), "-p".into(), p.to_string()];
    args.extend(common.clone());
    args.extend(["-D".into(), format!("jobmanager.rpc.port={port}")]);
    args.extend(["-D".into(), "jobmanager.bind-host=127.0.0.1".into()]);
    args.extend(job_args.clone());
    let coordinator = spawn(&args, home);
    let mut ws = Vec::new();
    for _ in 0..workers {
        let mut a = vec![
            "--mode".into(),
            "worker".into(),
            "--coordinator".into(),
            format!("127.0.0.1:{port}"),
            "-D".into(),
            "taskmanager.bind-host=127.0.0.1".into(),
        ];
        a.extend(job_args.clone());
        ws.push(spawn(&a, home));
    }
    let log = output(coordinator);
    // Workers run until stopped; their log has what they sent.
    std::thread::sleep(Duration::from_millis(500));
    let mut worker_logs = Vec::new();
    for mut w in ws {
        let _ = w.kill();
        worker_logs.push(output(w));
    }
    parse(&log, &worker_logs)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.iter().any(|a| a == "--mode") || args.first().is_some_and(|a| a == "-p") {
        if let Err(e) = job() {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let pos: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (n, k) = (
        pos.first().copied().unwrap_or(4_000_000),
        pos.get(1).copied().unwrap_or(100_000),
    );
    let home = std::env::temp_dir().join(format!("cairn-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("cluster keyed count: N={n} K={k}; load before: {}", load.trim());
    let started = Instant::now();
    let mut results = Vec::new();
    for (name, workers, p) in [
        ("1 process, p=2", 0, 2),
        ("coordinator + 2 workers, p=2", 2, 2),
        ("1 process, p=4", 0, 4),
        ("coordinator + 4 workers, p=4", 4, 4),
    ] {
        let r = run(workers, p, n, k, &[], &home, 16200);
        println!(
            "{name:<32} {:>7.2} s  {:>10.0} records/s{}",
            r.seconds,
            r.records_per_second,
            r.bytes_per_record
                .map(|b| format!("  {b:.1} bytes/record between workers"))
                .unwrap_or_default()
        );
        results.push((name, r));
    }
    let base = results[0].1.records_per_second;
    for (name, r) in &results[1..] {
        println!(
            "  {name}: {:.2}x the single process at p=2",
            r.records_per_second / base
        );
    }

    // Checkpoint time: local files, then the object store.
    let local = [
        "execution.checkpointing.interval=1s".to_string(),
        format!("execution.checkpointing.dir={}", home.join("chk").display()),
    ];
    let r = run(2, 2, n * 2, k, &local, &home, 16201);
    println!(
        "checkpoints to local files (2 workers): {} completed, median {} ms, {} bytes each",
        r.checkpoints_ms.len(),
        median(&r.checkpoints_ms),
        r.checkpoint_bytes
    );
    #[cfg(feature = "s3")]
    if let Some(moto) = cairn_storage_s3::test_server::MotoServer::shared() {
        let _ = moto.storage_with_bucket("bench");
        let s3 = [
            "execution.checkpointing.interval=1s".to_string(),
            "execution.checkpointing.dir=s3://bench/chk".to_string(),
            format!("s3.endpoint={}", moto.endpoint()),
            "s3.access-key=testing".into(),
            "s3.secret-key=testing".into(),
            "s3.path.style.access=true".into(),
        ];
        let r = run(2, 2, n * 2, k, &s3, &home, 16202);
        println!(
            "checkpoints to S3 (moto, 2 workers): {} completed, median {} ms, {} bytes each",
            r.checkpoints_ms.len(),
            median(&r.checkpoints_ms),
            r.checkpoint_bytes
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "total {:.0} s; load after: {}",
        started.elapsed().as_secs_f64(),
        load.trim()
    );
    let _ = std::fs::remove_dir_all(&home);
}
