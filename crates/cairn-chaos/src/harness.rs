//! The harness loop: start the job process, SIGKILL it at a random moment,
//! restart it from the latest retained complete checkpoint, until the job ends
//! by itself; then compare its committed output with the oracle's.
//!
//! A *round* is one bounded job run from scratch (fresh checkpoint and output
//! directories) through any number of kills and restarts to its natural end,
//! followed by the comparison. Rounds repeat until the requested number of
//! kills is reached, so a long run checks the output many times.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_snapshot::layout::{checkpoint_dir_name, find_latest_checkpoint, parse_checkpoint_dir_name, JobId};
use cairn_snapshot::{load_snapshot, LocalFileStorage};

use crate::job::{MARK_END_OF_INPUT, MARK_FIRST_RECORD};
use crate::oracle::{expected_output, Output};
use crate::rng::XorShift;
use crate::verify::{compare_output, list_sink};
use crate::workload::{Workload, SINKS};

/// How to start the job process. `args` come first, then the harness's
/// engine flags (`-p`, `-D`, `-s`), then `--` and the job's flags.
#[derive(Clone, Debug)]
pub struct JobCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl JobCommand {
    /// Run `program` as the job.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        JobCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// Everything a harness run needs.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub job: JobCommand,
    /// Scratch directory (input, checkpoints, outputs, logs). Created; a
    /// previous harness directory there is replaced.
    pub work_dir: PathBuf,
    /// Seed of the kill schedule.
    pub seed: u64,
    /// Kills to perform in total (rounds repeat until reached).
    pub kills: u32,
    pub workload: Workload,
    /// Generator events per second per source subtask.
    pub rate: u64,
    /// Input lines per second per file source subtask.
    pub file_rate: u64,
    /// Lines per second per subtask of the `gen` sink (0: not throttled).
    pub sink_rate: u64,
    /// The `gen` sink also rolls parts at this size (0: off).
    pub part_bytes: u64,
    pub parallelism: u32,
    pub checkpoint_interval_ms: u64,
    pub num_retained: u32,
    /// Upper bound of the random delays before a kill (ms); attempts after ones that
    /// completed no checkpoint wait longer (see `choose_any_plan`).
    pub max_delay_ms: u64,
    /// Run the job once without kills first and compare it with the oracle.
    pub reference_run: bool,
    /// Keep the directories of successful rounds.
    pub keep_work: bool,
    /// Print a line per attempt on stderr.
    pub verbose: bool,
    /// Longest an attempt may run before the harness calls it hung.
    pub attempt_timeout: Duration,
    /// More engine flags for every start (e.g. `-D key=value`).
    pub extra_flags: Vec<String>,
    /// Restart with a random parallelism (1 to 3) for the keyed operators
    /// and sinks each time (the sources keep 2), to check exactly-once
    /// across rescaling too.
    pub rescale: bool,
    /// Self-test of the harness: restore the second newest retained
    /// checkpoint instead of the newest. Records committed after it are
    /// replayed, so the harness must report duplicates.
    pub restore_previous: bool,
    /// Run the Kafka-in, Kafka-out job instead (input, output topics and the
    /// transactional id prefix are chosen by the harness).
    #[cfg(feature = "kafka")]
    pub kafka: Option<crate::kafka::KafkaWorkload>,
}

impl ChaosConfig {
    /// The short run (CI): a few kills over a job of about 2 s.
    pub fn short(job: JobCommand, work_dir: PathBuf, seed: u64) -> Self {
        ChaosConfig {
            job,
            work_dir,
            seed,
            kills: 6,
            workload: Workload::default(),
            rate: 25_000,
            file_rate: 12_500,
            sink_rate: 0,
            part_bytes: 256 * 1024,
            parallelism: 2,
            checkpoint_interval_ms: 100,
            num_retained: 2,
            max_delay_ms: 1_200,
            reference_run: true,
            keep_work: false,
            verbose: true,
            attempt_timeout: Duration::from_secs(300),
            extra_flags: Vec::new(),
            rescale: false,
            restore_previous: false,
            #[cfg(feature = "kafka")]
            kafka: None,
        }
    }

    /// The long run: a job of about 10 s per round, rounds until `kills`.
    pub fn long(job: JobCommand, work_dir: PathBuf, seed: u64, kills: u32) -> Self {
        ChaosConfig {
            kills,
            workload: Workload {
                events: 1_000_000,
                keys: 1_000,
                files: 8,
                lines: 62_500,
                file_keys: 250,
                ..Workload::default()
            },
            rate: 50_000,
            file_rate: 25_000,
            part_bytes: 1024 * 1024,
            max_delay_ms: 1_500,
            ..Self::short(job, work_dir, seed)
        }
    }
}

/// Durations summarised.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
    /// min, median, 90th percentile, max (None when empty).
    pub fn summary(&self) -> Option<(Duration, Duration, Duration, Duration)> {
        let v = self.sorted();
        if v.is_empty() {
            return None;
        }
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((v[0], at(0.5), at(0.9), v[v.len() - 1]))
    }
}

impl fmt::Display for Samples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.summary() {
            None => write!(f, "no samples"),
            Some((min, med, p90, max)) => write!(
                f,
                "min {} ms, median {} ms, p90 {} ms, max {} ms ({} samples)",
                min.as_millis(),
                med.as_millis(),
                p90.as_millis(),
                max.as_millis(),
                self.0.len()
            ),
        }
    }
}

/// What a harness run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    /// Rounds (bounded job runs with kills) completed and compared.
    pub rounds: u32,
    pub kills: u32,
    /// Kills by how their moment was chosen.
    pub kills_by_plan: BTreeMap<String, u32>,
    /// Kills that left a checkpoint directory without `_metadata` (killed
    /// while a checkpoint was in flight).
    pub kills_during_checkpoint: u32,
    /// Kills that left a temporary `_metadata` (between its write and rename).
    pub kills_while_writing_metadata: u32,
    /// Kills that left staged (pending) sink files of a completed checkpoint:
    /// killed after `_metadata` was written, before the sinks committed.
    pub kills_in_commit_window: u32,
    /// Kills after the job printed its end-of-input marker (final checkpoint).
    pub kills_after_end_of_input: u32,
    /// Kills before the attempt processed any record.
    pub kills_before_first_record: u32,
    /// Restarts from a retained checkpoint (`-s`), and from scratch (none yet).
    pub restarts_from_checkpoint: u32,
    pub restarts_fresh: u32,
    /// Restores given the `_metadata` path rather than the directory.
    pub restores_by_metadata_path: u32,
    /// Restores of checkpoints that hold channel state (unaligned
    /// checkpoints taken with records in flight).
    pub restores_with_channel_state: u32,
    /// Kill until the restarted process processed its first record (restores only).
    pub kill_to_processing: Samples,
    /// Size of each checkpoint restored (its directory's files), bytes.
    pub restored_bytes: Vec<u64>,
    /// Kill until the new process was spawned (reaping + finding the checkpoint).
    pub kill_to_spawn: Samples,
    /// Lines each round compared.
    pub expected_lines: usize,
    /// The failure-free run matched the oracle.
    pub reference_matched: Option<bool>,
    /// Rounds whose committed output equals the expected output exactly.
    pub matching_rounds: u32,
    /// Hidden sink files (in-progress or pending) left after rounds ended.
    pub leftover_hidden_files: usize,
    /// The first problem found (mismatch, job failure, broken checkpoint).
    pub failure: Option<String>,
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed:                     {}", self.seed)?;
        writeln!(
            f,
            "result:                   {}",
            match &self.failure {
                None => "PASS (committed output equals the expected output exactly in every round)".to_string(),
                Some(_) => "FAIL".to_string(),
            }
        )?;
        writeln!(
            f,
            "rounds compared:          {} ({} matching)",
            self.rounds, self.matching_rounds
        )?;
        if let Some(m) = self.reference_matched {
            writeln!(f, "failure-free run = oracle: {m}")?;
        }
        writeln!(f, "lines per round:          {}", self.expected_lines)?;
        writeln!(f, "kills (SIGKILL):          {}", self.kills)?;
        let plans: Vec<String> = self.kills_by_plan.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "  chosen as:              {}", plans.join(", "))?;
        writeln!(f, "  during a checkpoint:    {}", self.kills_during_checkpoint)?;
        writeln!(f, "  writing _metadata:      {}", self.kills_while_writing_metadata)?;
        writeln!(f, "  in the commit window:   {}", self.kills_in_commit_window)?;
        writeln!(f, "  after end of input:     {}", self.kills_after_end_of_input)?;
        writeln!(f, "  before the first record: {}", self.kills_before_first_record)?;
        writeln!(
            f,
            "restarts:                 {} from a checkpoint ({} by _metadata path), {} from scratch",
            self.restarts_from_checkpoint, self.restores_by_metadata_path, self.restarts_fresh
        )?;
        writeln!(
            f,
            "  with channel state:     {} (unaligned checkpoints with records in flight)",
            self.restores_with_channel_state
        )?;
        writeln!(f, "kill -> processing again: {}", self.kill_to_processing)?;
        if !self.restored_bytes.is_empty() {
            let mut b = self.restored_bytes.clone();
            b.sort_unstable();
            writeln!(
                f,
                "restored checkpoint size: min {} KiB, median {} KiB, max {} KiB",
                b[0] / 1024,
                b[b.len() / 2] / 1024,
                b[b.len() - 1] / 1024
            )?;
        }
        writeln!(f, "kill -> new process:      {}", self.kill_to_spawn)?;
        writeln!(f, "leftover hidden files:    {}", self.leftover_hidden_files)?;
        writeln!(f, "elapsed:                  {:.1} s", self.elapsed.as_secs_f64())?;
        if let Some(fail) = &self.failure {
            writeln!(f, "FAILURE:\n{fail}")?;
            writeln!(f, "replay the kill schedule with --seed {}", self.seed)?;
        }
        Ok(())
    }
}

/// When to kill an attempt.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Let the job finish.
    Finish,
    /// After a fixed delay from spawn (`startup`, `early` or `random`).
    After(Duration, &'static str),
    /// This long after the attempt's first record (`random`): after attempts that
    /// completed no checkpoint, a delay from spawn can keep landing in a slow start
    /// (a Kafka consumer joining its group), so it counts from the first record.
    AfterFirstRecord(Duration),
    /// As soon as a new checkpoint of this attempt completes (`_metadata`
    /// appears), once `after` has passed: lands in the commit window.
    OnCommit(Duration),
    /// As soon as a sink file is staged (pending), once `after` has passed:
    /// lands between the barrier and the checkpoint's completion or commit.
    OnStaged(Duration),
    /// This long after the end-of-input marker: lands in the final checkpoint.
    AfterEnd(Duration),
}

impl Plan {
    fn name(self) -> &'static str {
        match self {
            Plan::Finish => "none",
            Plan::After(_, name) => name,
            Plan::AfterFirstRecord(_) => "random",
            Plan::OnCommit(_) => "at-commit",
            Plan::OnStaged(_) => "at-staging",
            Plan::AfterEnd(_) => "at-end",
        }
    }
}

/// If an event-triggered plan's event does not come, kill this long after its start.
const GIVE_UP: Duration = Duration::from_secs(4);

fn choose_plan(rng: &mut XorShift, cfg: &ChaosConfig, no_progress: u32) -> Plan {
    let plan = choose_any_plan(rng, cfg, no_progress);
    // The Kafka job stages no files: kill at a random moment instead.
    #[cfg(feature = "kafka")]
    if let (Some(_), Plan::OnStaged(d)) = (&cfg.kafka, plan) {
        return match no_progress {
            0 => Plan::After(d, "random"),
            _ => Plan::AfterFirstRecord(d),
        };
    }
    plan
}

fn choose_any_plan(rng: &mut XorShift, cfg: &ChaosConfig, no_progress: u32) -> Plan {
    // After attempts that completed no checkpoint, wait longer (50 ms doubling, up to
    // 6.4 s), past `max_delay_ms` if need be: on a loaded machine a job can take longer
    // than the usual delays to reach its first record, and every kill would otherwise
    // land before any checkpoint exists. Timed kills then count from the first record.
    let lo = 50u64 << no_progress.min(7);
    let hi = cfg.max_delay_ms.max(lo);
    let r = rng.below(100);
    let startup = rng.millis(0, 60);
    let early = rng.millis(60, 250);
    let delay = rng.millis(lo, hi);
    let end_delay = rng.millis(0, 40);
    match r {
        0..=5 if no_progress == 0 => Plan::After(startup, "startup"),
        6..=13 if no_progress == 0 => Plan::After(early, "early"),
        0..=49 if no_progress == 0 => Plan::After(delay, "random"),
        0..=49 => Plan::AfterFirstRecord(delay),
        50..=71 => Plan::OnCommit(delay),
        72..=89 => Plan::OnStaged(delay),
        _ => Plan::AfterEnd(end_delay),
    }
}

/// A retained complete checkpoint.
#[derive(Clone, Debug)]
pub struct Found {
    pub id: u64,
    pub dir: PathBuf,
    pub job_id: String,
}

/// The complete checkpoint with the highest id in any job directory under
/// `root` (each restart runs under a new job id; ids continue across
/// restores, so the highest id is the newest). A `_metadata` that exists but
/// cannot be read is an error: after a kill there must be none.
pub fn latest_checkpoint(root: &Path) -> Result<Option<Found>, String> {
    Ok(complete_checkpoints(root)?.pop())
}

/// Every retained complete checkpoint under `root`, oldest (lowest id) first.
pub fn complete_checkpoints(root: &Path) -> Result<Vec<Found>, String> {
    let storage = LocalFileStorage::new();
    let mut all = Vec::new();
    for job_dir in job_dirs(root)? {
        let scan = find_latest_checkpoint(&storage, &job_dir)
            .map_err(|e| format!("cannot scan {}: {e}", job_dir.display()))?;
        for ignored in &scan.ignored {
            if !ignored.reason.starts_with("no _metadata") {
                return Err(format!(
                    "checkpoint {} has a _metadata that does not verify: {}",
                    ignored.dir.display(),
                    ignored.reason
                ));
            }
        }
        let job_id = job_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for id in scan.completed {
            all.push(Found {
                id,
                dir: job_dir.join(checkpoint_dir_name(id)),
                job_id: job_id.clone(),
            });
        }
    }
    all.sort_by_key(|f| f.id);
    Ok(all)
}

/// `<root>/<job-id>` directories.
fn job_dirs(root: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", root.display())),
    };
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if JobId::parse(&name).is_ok() && entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// `chk-<n>` ids in a job directory, with whether `_metadata` exists.
fn checkpoint_dirs(job_dir: &Path) -> Vec<(u64, bool)> {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let id = parse_checkpoint_dir_name(&e.file_name().to_string_lossy())?;
            Some((id, e.path().join("_metadata").exists()))
        })
        .collect()
}

/// Highest complete checkpoint id in one job directory (0: none).
fn highest_complete(job_dir: &Path) -> u64 {
    checkpoint_dirs(job_dir)
        .into_iter()
        .filter(|(_, done)| *done)
        .map(|(id, _)| id)
        .max()
        .unwrap_or(0)
}

/// Whether a temporary `_metadata` (written, not yet renamed) is left in a
/// checkpoint directory of `job_dir`.
fn metadata_being_written(job_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return false;
    };
    entries.flatten().any(|chk| {
        std::fs::read_dir(chk.path()).is_ok_and(|files| {
            files
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("._metadata.tmp"))
        })
    })
}

/// Whether any sink holds a staged file of a checkpoint after `after`.
fn staged_after(out: &Path, after: u64) -> bool {
    SINKS.iter().any(|s| {
        std::fs::read_dir(out.join(s)).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(".part-")
                    && name
                        .split_once(".pending-")
                        .and_then(|(_, c)| c.parse::<u64>().ok())
                        .is_some_and(|c| c > after)
            })
        })
    })
}

#[derive(Debug)]
enum Mark {
    FirstRecord,
    EndOfInput,
    JobId(String),
}

/// Copies the child's stderr to a log file and reports markers, timestamped.
fn spawn_reader(stderr: std::process::ChildStderr, mut log: File, tx: Sender<(Instant, Mark)>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(stderr);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let now = Instant::now();
            let text = String::from_utf8_lossy(&line);
            let mark = if text == MARK_FIRST_RECORD {
                Some(Mark::FirstRecord)
            } else if text == MARK_END_OF_INPUT {
                Some(Mark::EndOfInput)
            } else {
                // The job's log events carry `job_id=<32 hex>` (tracing fields).
                text.split_once("job_id=")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(|id| Mark::JobId(id.to_string()))
            };
            if let Some(m) = mark {
                let _ = tx.send((now, m));
            }
            let _ = log.write_all(&line);
            let _ = log.write_all(b"\n");
        }
    })
}

/// Kills the child if the harness unwinds.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How an attempt ended.
enum Ending {
    Exited(ExitStatus),
    Killed { at: Instant, triggered: bool },
    TimedOut,
}

/// What an attempt saw.
struct Attempt {
    spawned: Instant,
    ending: Ending,
    first_record: Option<Instant>,
    end_of_input: Option<Instant>,
    job_id: Option<String>,
    log: PathBuf,
}

/// How to start one attempt.
struct Launch<'a> {
    /// Attempt number in the round.
    n: u32,
    /// Checkpoint to restore (directory or `_metadata`), if any.
    restore: Option<&'a Path>,
    restored_id: u64,
    plan: Plan,
    parallelism: u32,
    /// Generator and file rates per source subtask, and the `gen` sink's.
    rates: (u64, u64, u64),
}

/// One bounded job run's directories.
struct RoundDirs {
    checkpoints: PathBuf,
    out: PathBuf,
    logs: PathBuf,
}

struct Harness<'a> {
    cfg: &'a ChaosConfig,
    rng: XorShift,
    input: PathBuf,
    report: Report,
    /// The Kafka job's topics of the current round.
    #[cfg(feature = "kafka")]
    kafka: Option<crate::kafka::KafkaWorkload>,
}

impl Harness<'_> {
    fn say(&self, msg: &str) {
        if self.cfg.verbose {
            eprintln!("[cairn-chaos] {msg}");
        }
    }

    fn command(&self, dirs: &RoundDirs, restore: Option<&Path>, parallelism: u32, rates: (u64, u64, u64)) -> Command {
        let cfg = self.cfg;
        let mut cmd = Command::new(&cfg.job.program);
        cmd.args(&cfg.job.args);
        // The job registers for `cairn list` under its own home, on a free port.
        cmd.env("CAIRN_HOME", cfg.work_dir.join("cairn-home"));
        for (k, v) in &cfg.job.env {
            cmd.env(k, v);
        }
        cmd.arg("-p").arg(parallelism.to_string());
        for d in [
            "rest.port=0".to_string(),
            format!("execution.checkpointing.interval={}ms", cfg.checkpoint_interval_ms),
            format!("execution.checkpointing.dir={}", dirs.checkpoints.display()),
            format!("execution.checkpointing.num-retained={}", cfg.num_retained),
            "restart-strategy.type=none".to_string(),
        ] {
            cmd.arg("-D").arg(d);
        }
        cmd.args(&cfg.extra_flags);
        if let Some(r) = restore {
            cmd.arg("-s").arg(r);
        }
        cmd.arg("--");
        cmd.arg("--out").arg(&dirs.out);
        cmd.arg("--input").arg(&self.input);
        for (k, v) in [
            ("--rate", rates.0),
            ("--file-rate", rates.1),
            ("--sink-rate", rates.2),
            ("--part-bytes", cfg.part_bytes),
        ] {
            cmd.arg(k).arg(v.to_string());
        }
        cmd.args(cfg.workload.to_args());
        #[cfg(feature = "kafka")]
        if let Some(k) = &self.kafka {
            cmd.args(k.to_args());
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// Start one attempt and supervise it according to its plan.
    fn attempt(&mut self, dirs: &RoundDirs, launch: Launch<'_>) -> Result<Attempt, String> {
        let Launch {
            n,
            restore,
            restored_id,
            plan,
            parallelism,
            rates,
        } = launch;
        let log_path = dirs.logs.join(format!("attempt-{n:04}.log"));
        let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut cmd = self.command(dirs, restore, parallelism, rates);
        // The new run's job directory is the one that is not there yet (also
        // told by the `job_id=` field of the job's log lines).
        let known_jobs = job_dirs(&dirs.checkpoints)?;
        let new_job = |a: &mut Attempt| {
            if a.job_id.is_none() {
                let now = job_dirs(&dirs.checkpoints).unwrap_or_default();
                if let Some(d) = now.iter().find(|d| !known_jobs.contains(d)) {
                    a.job_id = d.file_name().map(|n| n.to_string_lossy().into_owned());
                }
            }
        };
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the job {}: {e}", self.cfg.job.program.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let mut guard = ChildGuard(Some(child));
        let (tx, rx) = channel();
        let reader = spawn_reader(stderr, log, tx);
        let mut a = Attempt {
            spawned,
            ending: Ending::TimedOut,
            first_record: None,
            end_of_input: None,
            job_id: None,
            log: log_path,
        };
        let mut baseline: Option<u64> = None;
        loop {
            drain_marks(&rx, &mut a);
            let child = guard.0.as_mut().expect("child present");
            if let Some(status) = child.try_wait().map_err(|e| format!("cannot wait for the job: {e}"))? {
                a.ending = Ending::Exited(status);
                break;
            }
            let elapsed = spawned.elapsed();
            if elapsed > self.cfg.attempt_timeout {
                a.ending = Ending::TimedOut;
                break;
            }
            if matches!(plan, Plan::OnCommit(after) if elapsed >= after) {
                new_job(&mut a);
            }
            let fire = match plan {
                Plan::Finish => None,
                Plan::After(d, _) => (elapsed >= d).then_some(true),
                Plan::AfterFirstRecord(d) => match a.first_record {
                    Some(t) if t.elapsed() >= d => Some(true),
                    None if elapsed >= d + GIVE_UP * 4 => Some(false),
                    _ => None,
                },
                Plan::OnCommit(after) | Plan::OnStaged(after) if elapsed >= after + GIVE_UP => Some(false),
                Plan::OnCommit(after) if elapsed >= after => match &a.job_id {
                    Some(job) => {
                        let now = highest_complete(&dirs.checkpoints.join(job));
                        let base = *baseline.get_or_insert(now);
                        (now > base).then_some(true)
                    }
                    None => None,
                },
                Plan::OnStaged(after) if elapsed >= after => staged_after(&dirs.out, restored_id).then_some(true),
                Plan::AfterEnd(d) => match a.end_of_input {
                    Some(t) if t.elapsed() >= d => Some(true),
                    None if elapsed >= GIVE_UP * 4 => Some(false),
                    _ => None,
                },
                _ => None,
            };
            if let Some(triggered) = fire {
                let at = Instant::now();
                let _ = child.kill(); // SIGKILL on Unix
                a.ending = match child.wait() {
                    // It ended by itself just before the signal.
                    Ok(status) if status.success() => Ending::Exited(status),
                    _ => Ending::Killed { at, triggered },
                };
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if matches!(a.ending, Ending::TimedOut) {
            drop(guard); // kills
        } else {
            guard.0 = None;
        }
        // Markers still in the pipe were printed before the process ended.
        let _ = reader.join();
        drain_marks(&rx, &mut a);
        new_job(&mut a);
        Ok(a)
    }

    /// Run the job from scratch through kills to its end; returns whether
    /// the round's output matched (a mismatch sets `report.failure`).
    fn round(&mut self, name: &str, expected: &Output, kills_wanted: u32) -> Result<bool, String> {
        let root = self.cfg.work_dir.join(name);
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(|e| format!("cannot clear {}: {e}", root.display()))?;
        }
        let dirs = RoundDirs {
            checkpoints: root.join("checkpoints"),
            out: root.join("out"),
            logs: root.join("logs"),
        };
        for d in [&dirs.checkpoints, &dirs.out, &dirs.logs] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        // A fresh output topic (and transactional ids) per round.
        #[cfg(feature = "kafka")]
        if let Some(k) = self.kafka.as_mut() {
            let tag = format!("{}-{name}-{}", self.cfg.seed, std::process::id());
            k.output = format!("cairn-chaos-out-{tag}");
            k.prefix = format!("cairn-chaos-{tag}");
            crate::kafka::create_topic(&k.bootstrap, &k.output, 2)?;
        }
        let reference = kills_wanted == 0 && name == "reference";
        let rates = if reference {
            (0, 0, 0)
        } else {
            (self.cfg.rate, self.cfg.file_rate, self.cfg.sink_rate)
        };
        let mut kills_here = 0;
        let mut no_progress = 0u32;
        let mut last_kill: Option<Instant> = None;
        let mut highest_seen = 0u64;
        let max_attempts = 100 + 20 * kills_wanted;
        for n in 0.. {
            if n > max_attempts {
                return Err(format!(
                    "round {name}: no end after {n} attempts (the job never gets far enough between kills)"
                ));
            }
            let mut retained = complete_checkpoints(&dirs.checkpoints)?;
            let newest_id = retained.last().map_or(0, |f| f.id);
            if newest_id < highest_seen {
                self.fail(format!(
                    "round {name}: the latest complete checkpoint went back from {highest_seen} to {newest_id}"
                ));
                return Ok(false);
            }
            highest_seen = newest_id;
            if self.cfg.restore_previous && retained.len() >= 2 {
                retained.pop();
            }
            let latest = retained.pop();
            let restored_id = latest.as_ref().map_or(0, |f| f.id);
            let restore = latest.as_ref().map(|f| {
                if self.rng.below(2) == 0 {
                    f.dir.clone()
                } else {
                    self.report.restores_by_metadata_path += 1;
                    f.dir.join("_metadata")
                }
            });
            if n > 0 {
                match &latest {
                    Some(_) => self.report.restarts_from_checkpoint += 1,
                    None => self.report.restarts_fresh += 1,
                }
            }
            if let Some(f) = &latest {
                let snap = load_snapshot(&LocalFileStorage::new(), &f.dir)
                    .map_err(|e| format!("cannot read checkpoint {}: {e}", f.dir.display()))?;
                if snap.metadata.has_channel_state() {
                    self.report.restores_with_channel_state += 1;
                }
            }
            let plan = if kills_here < kills_wanted {
                choose_plan(&mut self.rng, self.cfg, no_progress)
            } else {
                Plan::Finish
            };
            let parallelism = if self.cfg.rescale && n > 0 {
                self.rng.between(1, 3) as u32
            } else {
                self.cfg.parallelism
            };
            let restored_size = latest.as_ref().map(|f| dir_size(&f.dir));
            let a = self.attempt(
                &dirs,
                Launch {
                    n,
                    restore: restore.as_deref(),
                    restored_id,
                    plan,
                    parallelism,
                    rates,
                },
            )?;
            if let Some(k) = last_kill {
                self.report.kill_to_spawn.0.push(a.spawned - k);
                if let (Some(first), Some(_)) = (a.first_record, &latest) {
                    self.report.kill_to_processing.0.push(first - k);
                    if let Some(size) = restored_size {
                        self.report.restored_bytes.push(size);
                    }
                }
            }
            self.check_numbering(&dirs, &a, restored_id, name)?;
            match a.ending {
                Ending::Exited(status) if status.success() => {
                    self.say(&format!(
                        "{name}: attempt {n} finished by itself (restored from {})",
                        describe(&latest)
                    ));
                    break;
                }
                Ending::Exited(status) => {
                    self.fail(format!(
                        "round {name}: attempt {n} (restored from {}) failed with {status}; log {}:\n{}",
                        describe(&latest),
                        a.log.display(),
                        tail(&a.log, 30)
                    ));
                    return Ok(false);
                }
                Ending::TimedOut => {
                    self.fail(format!(
                        "round {name}: attempt {n} ran longer than {:?} (hung?); log {}:\n{}",
                        self.cfg.attempt_timeout,
                        a.log.display(),
                        tail(&a.log, 30)
                    ));
                    return Ok(false);
                }
                Ending::Killed { at, triggered } => {
                    kills_here += 1;
                    self.report.kills += 1;
                    last_kill = Some(at);
                    let plan_name = if triggered {
                        plan.name().to_string()
                    } else {
                        format!("{} (event missed, timed kill)", plan.name())
                    };
                    *self.report.kills_by_plan.entry(plan_name.clone()).or_default() += 1;
                    let retained_now = complete_checkpoints(&dirs.checkpoints)?;
                    // Every checkpoint that looks complete must load: _metadata
                    // and every file it names, sizes and checksums verified.
                    let storage = LocalFileStorage::new();
                    for f in &retained_now {
                        if let Err(e) = load_snapshot(&storage, &f.dir) {
                            self.fail(format!(
                                "round {name}: after kill {}, checkpoint {} has _metadata but does not load: {e}",
                                self.report.kills,
                                f.dir.display()
                            ));
                            return Ok(false);
                        }
                    }
                    let after = retained_now.last().cloned();
                    let after_id = after.as_ref().map_or(0, |f| f.id);
                    let mut what = Vec::new();
                    if let Some(job) = &a.job_id {
                        let job_dir = dirs.checkpoints.join(job);
                        if checkpoint_dirs(&job_dir)
                            .iter()
                            .any(|(id, done)| !done && *id > after_id)
                        {
                            self.report.kills_during_checkpoint += 1;
                            what.push("during a checkpoint");
                        }
                        if metadata_being_written(&job_dir) {
                            self.report.kills_while_writing_metadata += 1;
                            what.push("while writing _metadata");
                        }
                    }
                    let staged_done = SINKS.iter().any(|s| {
                        list_sink(&dirs.out.join(s))
                            .map(|f| f.pending.iter().any(|(_, c)| *c <= after_id))
                            .unwrap_or(false)
                    });
                    if staged_done {
                        self.report.kills_in_commit_window += 1;
                        what.push("in the commit window");
                    }
                    if a.end_of_input.is_some() {
                        self.report.kills_after_end_of_input += 1;
                        what.push("after end of input");
                    }
                    if a.first_record.is_none() {
                        self.report.kills_before_first_record += 1;
                        what.push("before the first record");
                    }
                    if after_id > restored_id {
                        no_progress = 0;
                    } else {
                        no_progress += 1;
                    }
                    self.say(&format!(
                        "{name}: kill {} ({plan_name}) at {} ms of attempt {n} (-p {parallelism}) [{}]; \
                         restored from {}, latest now {}",
                        self.report.kills,
                        (at - a.spawned).as_millis(),
                        what.join(", "),
                        describe(&latest),
                        describe(&after)
                    ));
                }
            }
        }
        // Compare.
        #[cfg(feature = "kafka")]
        let mismatch = match &self.kafka {
            Some(k) => compare_topic(k, expected)?,
            None => compare_output(&dirs.out, expected)?,
        };
        #[cfg(not(feature = "kafka"))]
        let mismatch = compare_output(&dirs.out, expected)?;
        for s in SINKS {
            let files = list_sink(&dirs.out.join(s))?;
            self.report.leftover_hidden_files += files.in_progress.len() + files.pending.len();
        }
        match mismatch {
            None => {
                self.say(&format!(
                    "{name}: committed output equals the expected output ({kills_here} kills)"
                ));
                if !self.cfg.keep_work {
                    let _ = std::fs::remove_dir_all(&root);
                }
                Ok(true)
            }
            Some(diff) => {
                self.fail(format!(
                    "round {name} ({kills_here} kills): committed output differs from the expected output \
                     (directories kept in {}):\n{diff}",
                    root.display()
                ));
                Ok(false)
            }
        }
    }

    /// The restored attempt's checkpoints must be numbered after the restored one.
    fn check_numbering(&mut self, dirs: &RoundDirs, a: &Attempt, restored_id: u64, name: &str) -> Result<(), String> {
        let Some(job) = &a.job_id else { return Ok(()) };
        let ids = checkpoint_dirs(&dirs.checkpoints.join(job));
        if let Some((bad, _)) = ids.iter().find(|(id, _)| *id <= restored_id) {
            self.fail(format!(
                "round {name}: job {job}, restored from checkpoint {restored_id}, wrote chk-{bad} (numbers must continue after the restored one)"
            ));
        }
        Ok(())
    }

    fn fail(&mut self, msg: String) {
        self.say(&format!("FAILURE: {msg}"));
        if self.report.failure.is_none() {
            self.report.failure = Some(msg);
        }
    }
}

fn drain_marks(rx: &Receiver<(Instant, Mark)>, a: &mut Attempt) {
    while let Ok((t, m)) = rx.try_recv() {
        match m {
            Mark::FirstRecord => {
                a.first_record.get_or_insert(t);
            }
            Mark::EndOfInput => {
                a.end_of_input.get_or_insert(t);
            }
            Mark::JobId(id) => a.job_id = Some(id),
        }
    }
}

fn describe(f: &Option<Found>) -> String {
    match f {
        Some(f) => format!("chk-{} of job {}", f.id, &f.job_id[..8.min(f.job_id.len())]),
        None => "scratch".to_string(),
    }
}

/// Total size of the files in a directory (recursive).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Compare the output topic, read with `read_committed`, with the expected lines.
#[cfg(feature = "kafka")]
fn compare_topic(k: &crate::kafka::KafkaWorkload, expected: &Output) -> Result<Option<String>, String> {
    use std::fmt::Write as _;
    let got = crate::kafka::read_committed(&k.bootstrap, &k.output)?;
    let want = expected.get("kafka").cloned().unwrap_or_default();
    let d = crate::verify::diff_sorted(&want, &got);
    if d.is_empty() {
        return Ok(None);
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "topic '{}' (read_committed): {} records, {} expected: {} missing, {} extra or duplicated",
        k.output,
        d.actual,
        d.expected,
        d.missing.len(),
        d.extra.len()
    );
    for l in d.missing.iter().take(8) {
        let _ = writeln!(report, "  missing: {l}");
    }
    for l in d.extra.iter().take(8) {
        let _ = writeln!(report, "  extra:   {l}");
    }
    Ok(Some(report))
}

const WORK_MARKER: &str = ".cairn-chaos-work";

/// Run the harness. `Err` means it could not run at all (setup, I/O);
/// problems it finds in Cairn are in [`Report::failure`].
pub fn run(cfg: &ChaosConfig) -> Result<Report, String> {
    let started = Instant::now();
    let w = cfg.workload.clone().normalized();
    let cfg = &ChaosConfig {
        workload: w.clone(),
        ..cfg.clone()
    };
    let work = &cfg.work_dir;
    if work.exists() {
        let is_ours = work.join(WORK_MARKER).exists();
        let empty = std::fs::read_dir(work).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !is_ours && !empty {
            return Err(format!(
                "{} exists and is not a cairn-chaos work directory; pick another --work directory",
                work.display()
            ));
        }
        for entry in std::fs::read_dir(work).map_err(|e| format!("cannot list {}: {e}", work.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.file_name().to_string_lossy().starts_with("round-") || entry.file_name() == "reference" {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    std::fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    std::fs::write(work.join(WORK_MARKER), b"").map_err(|e| e.to_string())?;
    let input = work.join("input");
    w.write_input(&input)
        .map_err(|e| format!("cannot write the input files into {}: {e}", input.display()))?;

    let mut h = Harness {
        cfg,
        rng: XorShift::new(cfg.seed),
        input,
        report: Report {
            seed: cfg.seed,
            ..Report::default()
        },
        #[cfg(feature = "kafka")]
        kafka: None,
    };
    h.say(&format!(
        "seed {} (replay the same kill schedule with --seed {}), {} kills wanted, work directory {}",
        cfg.seed,
        cfg.seed,
        cfg.kills,
        work.display()
    ));
    #[cfg(feature = "kafka")]
    let expected = match cfg.kafka.clone() {
        Some(mut k) => {
            k.input = format!("cairn-chaos-in-{}-{}", cfg.seed, std::process::id());
            h.say(&format!("writing {} input records to topic {}", k.events, k.input));
            crate::kafka::write_input(&k)?;
            let mut out = Output::new();
            out.insert("kafka".into(), crate::kafka::expected_lines(&k));
            h.kafka = Some(k);
            out
        }
        None => expected_output(&w),
    };
    #[cfg(not(feature = "kafka"))]
    let expected = expected_output(&w);
    h.report.expected_lines = expected.values().map(Vec::len).sum();
    h.say(&format!("oracle: {} expected lines", h.report.expected_lines));

    if cfg.reference_run {
        let ok = h.round("reference", &expected, 0)?;
        h.report.reference_matched = Some(ok);
        if !ok {
            h.report.elapsed = started.elapsed();
            return Ok(h.report);
        }
    }
    let mut round = 0u32;
    while h.report.kills < cfg.kills && h.report.failure.is_none() {
        round += 1;
        let name = format!("round-{round:04}");
        let ok = h.round(&name, &expected, cfg.kills - h.report.kills)?;
        h.report.rounds += 1;
        if ok {
            h.report.matching_rounds += 1;
        }
    }
    h.report.elapsed = started.elapsed();
    Ok(h.report)
}
