//! The kill -9 failure harness. See `docs/failure-testing.md`.
//!
//! ```text
//! cargo run -p cairn-chaos --release --bin cairn-chaos -- --kills 300
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_chaos::{ChaosConfig, JobCommand, XorShift};

/// Set in the environment of the job processes this binary starts when it
/// runs the job itself (no separate `cairn-chaos-job` binary needed).
const ROLE_ENV: &str = "CAIRN_CHAOS_ROLE";

const HELP: &str = "\
cairn-chaos: runs a Cairn job, kills it with SIGKILL at random moments, restarts it from the
latest retained checkpoint each time, and checks that the committed output equals the
expected output exactly (nothing lost, nothing duplicated).

usage: cairn-chaos [options]

  --kills N           kills in total (default 300; rounds repeat until reached)
  --short             the CI-sized job (about 2 s per round) instead of the long one (about 10 s)
  --seed S            seed of the kill schedule (default: random, printed)
  --work DIR          scratch directory (default: <tmp>/cairn-chaos-<seed>)
  --job PATH          the job binary (default: this binary runs the job itself)
  --keep              keep the directories of rounds that passed
  --no-reference      skip the failure-free reference run
  --parallelism N     parallelism of the job's operators (default 2)
  --interval-ms MS    execution.checkpointing.interval (default 100)
  --retained N        execution.checkpointing.num-retained (default 2)
  --max-delay-ms MS   upper bound of random kill delays (default 1200 short, 1500 long)
  --rate N            generator events/s per source subtask
  --file-rate N       file lines/s per source subtask
  --sink-rate N       throttle the generator pipeline's sink to N lines/s per subtask
                      (backpressure on its keyed edge; 0 = off, the default)
  --unaligned         unaligned checkpoints (-D execution.checkpointing.unaligned.enabled=true)
  --events N --keys N --window-ms N --files N --lines N --file-keys N --data-seed N
                      the workload (see cairn_chaos::workload)
  -D key=value        an extra configuration key for every job start
  --rescale           restart with a random parallelism (1-3) for the keyed operators and sinks
  --restore-previous  self-test: restore the second newest checkpoint; must FAIL with duplicates
  --quiet             no line per kill
  --kafka BOOTSTRAP   run the Kafka-in, Kafka-out job against this broker instead (built with
                      --features kafka); --kafka-events N (default 200000) --kafka-keys N (default 500)
";

fn main() -> ExitCode {
    if std::env::var_os(ROLE_ENV).is_some_and(|r| r == "job") {
        return match cairn_chaos::job::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cairn-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return Ok(true);
    }
    let mut short = false;
    let mut kills = 300;
    let mut seed = None;
    let mut work = None;
    let mut job = None;
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut keep = false;
    let mut reference = true;
    let mut quiet = false;
    let mut rescale = false;
    let mut restore_previous = false;
    let mut kafka: Option<String> = None;
    let mut kafka_events = 200_000u64;
    let mut kafka_keys = 500u64;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--short" => short = true,
            "--keep" => keep = true,
            "--no-reference" => reference = false,
            "--quiet" => quiet = true,
            "--rescale" => rescale = true,
            "--unaligned" => flags.push(("-D".into(), "execution.checkpointing.unaligned.enabled=true".into())),
            "--restore-previous" => restore_previous = true,
            _ => {
                let v = it.next().ok_or_else(|| format!("{a} needs a value (see --help)"))?;
                match a.as_str() {
                    "--kills" => kills = parse(&a, &v)?,
                    "--seed" => seed = Some(parse(&a, &v)?),
                    "--work" => work = Some(PathBuf::from(v)),
                    "--job" => job = Some(PathBuf::from(v)),
                    "--kafka" => kafka = Some(v),
                    "--kafka-events" => kafka_events = parse(&a, &v)?,
                    "--kafka-keys" => kafka_keys = parse(&a, &v)?,
                    _ => flags.push((a, v)),
                }
            }
        }
    }
    let seed = seed.unwrap_or_else(XorShift::seed_from_entropy);
    let work = work.unwrap_or_else(|| std::env::temp_dir().join(format!("cairn-chaos-{seed}")));
    let job = match job {
        Some(path) => JobCommand::new(path),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
            let mut cmd = JobCommand::new(exe);
            cmd.env.push((ROLE_ENV.to_string(), "job".to_string()));
            cmd
        }
    };
    let mut cfg = if short {
        let mut c = ChaosConfig::short(job, work, seed);
        c.kills = kills as u32;
        c
    } else {
        ChaosConfig::long(job, work, seed, kills as u32)
    };
    cfg.keep_work = keep;
    cfg.reference_run = reference;
    cfg.verbose = !quiet;
    cfg.rescale = rescale;
    cfg.restore_previous = restore_previous;
    for (flag, v) in flags {
        match flag.as_str() {
            "--parallelism" => cfg.parallelism = parse(&flag, &v)? as u32,
            "--interval-ms" => cfg.checkpoint_interval_ms = parse(&flag, &v)?,
            "--retained" => cfg.num_retained = parse(&flag, &v)? as u32,
            "--max-delay-ms" => cfg.max_delay_ms = parse(&flag, &v)?,
            "--rate" => cfg.rate = parse(&flag, &v)?,
            "--file-rate" => cfg.file_rate = parse(&flag, &v)?,
            "--sink-rate" => cfg.sink_rate = parse(&flag, &v)?,
            "--part-bytes" => cfg.part_bytes = parse(&flag, &v)?,
            "-D" => {
                cfg.extra_flags.push("-D".into());
                cfg.extra_flags.push(v);
            }
            _ => {
                if !cfg.workload.set_flag(&flag, &v)? {
                    return Err(format!("unknown option {flag} (see --help)"));
                }
            }
        }
    }
    if let Some(bootstrap) = kafka {
        set_kafka(&mut cfg, bootstrap, kafka_events, kafka_keys)?;
    }
    let report = cairn_chaos::run(&cfg)?;
    println!("{report}");
    Ok(report.failure.is_none())
}

fn parse(flag: &str, v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|e| format!("{flag} {v}: not a non-negative integer ({e})"))
}

#[cfg(feature = "kafka")]
fn set_kafka(cfg: &mut ChaosConfig, bootstrap: String, events: u64, keys: u64) -> Result<(), String> {
    cfg.kafka = Some(cairn_chaos::kafka::KafkaWorkload {
        bootstrap,
        input: String::new(),
        output: String::new(),
        prefix: String::new(),
        events,
        keys,
    });
    Ok(())
}

#[cfg(not(feature = "kafka"))]
fn set_kafka(_: &mut ChaosConfig, _: String, _: u64, _: u64) -> Result<(), String> {
    Err("--kafka needs the binary built with --features kafka".into())
}
