//! The short kill -9 run (CI): the chaos job is killed with SIGKILL at random
//! moments, restarted from the latest retained checkpoint each time, and its
//! committed output must equal the expected output exactly. The long run is
//! `cargo run -p cairn-chaos --release --bin cairn-chaos -- --kills 300`
//! (docs/failure-testing.md).

use std::path::PathBuf;

use cairn_chaos::{ChaosConfig, JobCommand, XorShift};

fn work_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cairn-chaos-test-{name}-{}", std::process::id()))
}

#[test]
fn kill9_short_run_keeps_output_exactly_once() {
    // A new kill schedule each run (the seed is printed on failure);
    // CAIRN_CHAOS_SEED=<seed> replays one.
    let seed = std::env::var("CAIRN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(XorShift::seed_from_entropy);
    let job = JobCommand::new(env!("CARGO_BIN_EXE_cairn-chaos-job"));
    let work = work_dir("short");
    let cfg = ChaosConfig::short(job, work.clone(), seed);
    let report = cairn_chaos::run(&cfg).expect("the harness runs");
    eprintln!("{report}");
    assert!(
        report.failure.is_none(),
        "kill -9 run failed (replay with CAIRN_CHAOS_SEED={seed}):\n{report}"
    );
    assert_eq!(report.reference_matched, Some(true), "failure-free run = oracle");
    assert!(report.kills >= cfg.kills, "{report}");
    assert!(
        report.rounds >= 1 && report.rounds == report.matching_rounds,
        "{report}"
    );
    assert!(
        report.restarts_from_checkpoint >= 1,
        "at least one restart must restore a checkpoint:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The same short run with the job's keyed state in RocksDB and incremental
/// checkpoints (shared SSTs referenced across checkpoints): exactly-once
/// output through kill -9, and the RocksDB working directories of killed
/// processes are removed by the next start.
#[cfg(feature = "rocksdb")]
#[test]
fn kill9_short_run_with_rocksdb_and_incremental_checkpoints_keeps_output_exactly_once() {
    let seed = std::env::var("CAIRN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(XorShift::seed_from_entropy);
    let job = JobCommand::new(env!("CARGO_BIN_EXE_cairn-chaos-job"));
    let work = work_dir("rocksdb");
    let local = std::env::temp_dir().join(format!("cairn-chaos-rocksdb-local-{}", std::process::id()));
    let mut cfg = ChaosConfig::short(job, work.clone(), seed);
    // RocksDB's instances open and its first checkpoint (a memtable flush
    // and file upload) completes later than the heap's: longer random
    // delays, so restarts also restore checkpoints.
    cfg.max_delay_ms = 3_000;
    cfg.kills = 8;
    for flag in [
        "state.backend.type=rocksdb".to_string(),
        "execution.checkpointing.incremental=true".to_string(),
        format!("state.backend.rocksdb.localdir={}", local.display()),
    ] {
        cfg.extra_flags.push("-D".into());
        cfg.extra_flags.push(flag);
    }
    let report = cairn_chaos::run(&cfg).expect("the harness runs");
    eprintln!("{report}");
    assert!(
        report.failure.is_none(),
        "kill -9 run on RocksDB failed (replay with CAIRN_CHAOS_SEED={seed}):\n{report}"
    );
    assert_eq!(report.reference_matched, Some(true), "failure-free run = oracle");
    assert!(
        report.kills >= cfg.kills && report.restarts_from_checkpoint >= 1,
        "{report}"
    );
    let left: Vec<_> = std::fs::read_dir(&local)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "RocksDB directories left behind by killed processes: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&local);
}

/// The same run with unaligned checkpoints under backpressure: the
/// generator pipeline's sink is throttled below what the generator
/// produces, so barriers overtake records queued on the keyed edge and
/// checkpoints carry them as channel state; the job is killed and restored
/// from such checkpoints, and its output is still exactly the expected one.
#[test]
fn kill9_short_run_with_unaligned_checkpoints_and_a_throttled_sink_keeps_output_exactly_once() {
    let seed = std::env::var("CAIRN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(XorShift::seed_from_entropy);
    let job = JobCommand::new(env!("CARGO_BIN_EXE_cairn-chaos-job"));
    let work = work_dir("unaligned");
    let mut cfg = ChaosConfig::short(job, work.clone(), seed);
    cfg.extra_flags = ["-D", "execution.checkpointing.unaligned.enabled=true"]
        .map(String::from)
        .to_vec();
    // About a third of what the generator produces per subtask.
    cfg.sink_rate = cfg.rate / 3;
    // Kills until some restore had channel state (a few rounds at most).
    let mut report = None;
    for kills in [6, 12, 24] {
        cfg.kills = kills;
        let r = cairn_chaos::run(&cfg).expect("the harness runs");
        eprintln!("{r}");
        assert!(
            r.failure.is_none(),
            "kill -9 run with unaligned checkpoints failed (replay with CAIRN_CHAOS_SEED={seed}):\n{r}"
        );
        assert_eq!(r.reference_matched, Some(true), "failure-free run = oracle");
        assert!(r.rounds >= 1 && r.rounds == r.matching_rounds, "{r}");
        let done = r.restores_with_channel_state > 0;
        report = Some(r);
        if done {
            break;
        }
        cfg.seed = XorShift::seed_from_entropy();
    }
    let report = report.unwrap();
    assert!(
        report.restores_with_channel_state >= 1,
        "some restore must replay in-flight records:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The harness is not vacuous: restoring the second newest checkpoint
/// replays records whose output was already committed, and the harness must
/// catch it (as duplicates, or as the sink refusing a part file it lost).
#[test]
fn harness_detects_duplicates_when_restoring_an_older_checkpoint() {
    let seed = XorShift::seed_from_entropy();
    let job = JobCommand::new(env!("CARGO_BIN_EXE_cairn-chaos-job"));
    let work = work_dir("mutant");
    let mut cfg = ChaosConfig::short(job, work.clone(), seed);
    cfg.restore_previous = true;
    cfg.reference_run = false;
    // The harness stops at the first failing round; many kills make sure
    // some restore has an older checkpoint to go back to.
    cfg.kills = 40;
    let report = cairn_chaos::run(&cfg).expect("the harness runs");
    eprintln!("{report}");
    // Usually the comparison finds duplicated lines; sometimes the sink
    // already refuses to open because a newer run reused the part file the
    // older checkpoint staged. Either way the violation is caught.
    let failure = report.failure.as_deref().unwrap_or("");
    assert!(
        failure.contains("extra or duplicated") || failure.contains("the part's records are missing"),
        "restoring an older checkpoint must be caught (seed {seed}):\n{report}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
