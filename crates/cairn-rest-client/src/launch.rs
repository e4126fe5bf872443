//! Starting a job binary in the background, as `cairn run` and the
//! dashboard's "restore" do: its own process group, output to
//! `<home>/logs/<binary>-<time>-<random>.log`, then wait for the outcome of
//! its start (it runs, or why it could not start).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_config::Configuration;

use crate::auth::TOKEN_ENV;
use crate::client::HttpClient;
use crate::registry::{Registry, RegistryEntry, HOME_ENV};

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub program: PathBuf,
    /// Startup flags for the binary (`-s`, `-n`, `-p`, `-D`, ...).
    pub flags: Vec<String>,
    /// The job's own arguments (passed after `--`).
    pub job_args: Vec<String>,
    /// Working directory; `None`: the caller's.
    pub cwd: Option<PathBuf>,
    /// How long to wait for the job to run.
    pub timeout: Duration,
}

/// A started job.
#[derive(Debug, Clone)]
pub struct Launched {
    pub entry: RegistryEntry,
    pub log: PathBuf,
}

/// Why a job did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// The flags are wrong (a usage error; names the flag).
    Flags(String),
    /// Something else failed; the message says what and where to look.
    Failed(String),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Flags(m) | LaunchError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LaunchError {}

/// Whether the configuration asks for a REST server: some `rest.*` key is set
/// explicitly (`-Drest.port=0`, `rest.address`, ...).
pub fn rest_requested(config: &Configuration) -> bool {
    config.entries().any(|(k, _)| k.starts_with("rest."))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `YYYYMMDD-HHMMSS` (UTC) of milliseconds since the epoch.
pub fn utc_compact(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Validates the flags as the job will (so mistakes are reported before
/// anything starts), makes sure the job serves REST (so it registers), and
/// checks a restore path exists. Returns the flags to pass.
pub fn prepare_flags(mut flags: Vec<String>) -> Result<Vec<String>, LaunchError> {
    let opts = cairn_config::parse_startup_args(flags.clone()).map_err(|e| LaunchError::Flags(e.to_string()))?;
    if let Some(r) = &opts.restore_path {
        // Object-store locations (`s3://...`) are checked by the job itself.
        let remote = r
            .to_str()
            .is_some_and(|p| p.contains("://") && !p.starts_with("file://"));
        if !remote && !r.exists() {
            return Err(LaunchError::Failed(format!(
                "cannot restore from '{}': it does not exist; give a savepoint directory, a retained checkpoint \
                 directory, or the _metadata file inside one",
                r.display()
            )));
        }
    }
    if !rest_requested(&opts.config) {
        flags.extend(["-D".to_string(), "rest.port=8081".to_string()]);
    }
    Ok(flags)
}

/// Starts `spec`, waits until it registered in `registry` and then until it
/// runs; a job that could not start is an error with its cause.
pub fn launch(registry: &Registry, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
    let flags = prepare_flags(spec.flags.clone())?;
    let logs = registry.logs_dir();
    std::fs::create_dir_all(&logs)
        .map_err(|e| LaunchError::Failed(format!("cannot create the log directory {}: {e}", logs.display())))?;
    let stem = spec
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".into());
    let log_path = logs.join(format!("{stem}-{}-{}.log", utc_compact(now_ms()), crate::random_hex(6)));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| LaunchError::Failed(format!("cannot create the log file {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| LaunchError::Failed(format!("cannot use the log file {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&flags);
    if !spec.job_args.is_empty() {
        cmd.arg("--").args(&spec.job_args);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.env(HOME_ENV, registry.home())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| LaunchError::Failed(format!("cannot start '{}': {e}", spec.program.display())))?;
    let pid = child.id();
    // A timeout too long for the clock means: no deadline that matters.
    let now = Instant::now();
    let deadline = now
        .checked_add(spec.timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    // The job registers as soon as its REST API listens, before it has set up
    // checkpoint storage or restored state. Wait for the outcome of the start,
    // as `flink run` does: it runs, it could not start, or it exited.
    let mut registered: Option<RegistryEntry> = None;
    loop {
        if registered.is_none() {
            registered = registry.list().into_iter().find(|e| e.pid == pid);
        }
        if let Some(entry) = &registered {
            match start_outcome(entry) {
                StartOutcome::Pending => {}
                StartOutcome::Started => {
                    // Reap the child when it ends, so it never lingers as a zombie.
                    std::thread::spawn(move || {
                        let _ = child.wait();
                    });
                    let entry = entry.clone();
                    return Ok(Launched { entry, log: log_path });
                }
                StartOutcome::Failed(cause) => {
                    std::thread::spawn(move || {
                        let _ = child.wait();
                    });
                    return Err(LaunchError::Failed(format!(
                        "job {} failed: {cause}\nIts log: {}",
                        entry.jid,
                        log_path.display()
                    )));
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            if let (true, Some(entry)) = (status.success(), &registered) {
                // It ran and finished before its state could be read.
                let entry = entry.clone();
                return Ok(Launched { entry, log: log_path });
            }
            // (It may have registered and left again between two looks.)
            return Err(LaunchError::Failed(format!(
                "the job exited ({status}) before it ran; the end of its log {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            )));
        }
        if Instant::now() >= deadline {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            let what = if registered.is_some() {
                "start running"
            } else {
                "register"
            };
            return Err(LaunchError::Failed(format!(
                "the job (pid {pid}) did not {what} within {}s; it is still running, see its log {}",
                spec.timeout.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where a registered job's start stands, as its REST API says.
enum StartOutcome {
    /// Still initializing (or not answering yet).
    Pending,
    /// It runs, or already ran and ended.
    Started,
    /// It could not start; the cause.
    Failed(String),
}

/// Asks the job how its start went: over its trusted control socket when it
/// has one, else over TCP (with `$CAIRN_REST_TOKEN`, if set).
fn start_outcome(entry: &RegistryEntry) -> StartOutcome {
    let client = match &entry.socket {
        Some(s) if s.exists() => HttpClient::unix(s),
        _ => HttpClient::new(entry.authority()).with_token(
            std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        ),
    }
    .with_timeout(Duration::from_secs(5));
    let get = |path: String| match client.get(&path) {
        Ok(r) if r.status == 200 => Some(r.json()),
        _ => None,
    };
    // Flink's job details say the state; Cairn's additions say the restarts
    // and the cause.
    let Some(details) = get(format!("/jobs/{}", entry.jid)) else {
        return StartOutcome::Pending;
    };
    tracing::debug!(job_id = %entry.jid, state = %details["state"], "waiting for the job to start");
    match details["state"].as_str().unwrap_or_default() {
        "" | "INITIALIZING" | "CREATED" => StartOutcome::Pending,
        "FAILED" => {
            let Some(cairn) = get(format!("/jobs/{}/cairn", entry.jid)) else {
                return StartOutcome::Pending;
            };
            // Failed without ever restarting: it never ran.
            if cairn["restarts"].as_u64().unwrap_or(0) > 0 {
                return StartOutcome::Started;
            }
            let cause = cairn["failure-cause"]
                .as_str()
                .unwrap_or("no cause was reported; see the job's log");
            StartOutcome::Failed(match cairn["failure-code"].as_str() {
                Some(code) => format!("{cause} (error code {code})"),
                None => cause.to_string(),
            })
        }
        _ => StartOutcome::Started,
    }
}

/// The last `lines` lines of a file, indented.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A registered job's arguments without its restore flags (`-s`, `-n`,
/// `--claim-mode`, `-p` and `-D execution.state-recovery.*`), split into
/// startup flags and the job's own arguments, so that it can be started
/// again from another snapshot with another parallelism. Mirrors
/// `cairn_config::parse_startup_args`.
pub fn without_restore_flags(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut job = Vec::new();
    let mut it = args.iter().cloned();
    let recovery = |kv: &str| {
        kv.trim_start().starts_with("execution.state-recovery.") || kv.trim_start().starts_with("execution.savepoint.")
    };
    while let Some(arg) = it.next() {
        if arg == "--" {
            job.extend(it.by_ref());
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-s" | "--fromSavepoint" | "--from-savepoint" | "--claim-mode" | "--claimMode" | "-cm" | "-rm"
            | "--restoreMode" | "-p" | "--parallelism" => {
                if inline.is_none() {
                    it.next();
                }
            }
            "-n" | "--allowNonRestoredState" | "--allow-non-restored-state" => {}
            "-D" => {
                if let Some(kv) = it.next() {
                    if !recovery(&kv) {
                        flags.extend(["-D".to_string(), kv]);
                    }
                }
            }
            "--config" | "--mode" | "--coordinator" => {
                flags.push(arg.clone());
                if inline.is_none() {
                    flags.extend(it.next());
                }
            }
            _ if arg.starts_with("-D") && arg.len() > 2 => {
                if !recovery(&arg[2..]) {
                    flags.push(arg);
                }
            }
            _ => job.push(arg),
        }
    }
    (flags, job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn restore_flags_are_removed() {
        let (flags, job) = without_restore_flags(&v(&[
            "-s",
            "/sp/a",
            "-p",
            "2",
            "-n",
            "--claim-mode=CLAIM",
            "-D",
            "rest.port=0",
            "-Dexecution.state-recovery.path=/x",
            "-Dstate.backend.type=hashmap",
            "--config",
            "/c.yaml",
            "--mode",
            "coordinator",
            "--coordinator=c:6123",
            "out-dir",
            "--",
            "-s",
            "user",
        ]));
        assert_eq!(
            flags,
            v(&[
                "-D",
                "rest.port=0",
                "-Dstate.backend.type=hashmap",
                "--config",
                "/c.yaml",
                "--mode",
                "coordinator",
                "--coordinator=c:6123"
            ])
        );
        assert_eq!(job, v(&["out-dir", "-s", "user"]));
    }

    #[test]
    fn dates_and_flags() {
        assert_eq!(utc_compact(1_777_464_245_123), "20260429-120405");
        assert!(matches!(prepare_flags(v(&["-p", "0"])), Err(LaunchError::Flags(_))));
        let f = prepare_flags(v(&["-p", "2"])).unwrap();
        assert_eq!(f, v(&["-p", "2", "-D", "rest.port=8081"]));
        let f = prepare_flags(v(&["-Drest.port=0"])).unwrap();
        assert_eq!(f, v(&["-Drest.port=0"]));
        assert!(matches!(
            prepare_flags(v(&["-s", "/definitely/not/here"])),
            Err(LaunchError::Failed(m)) if m.contains("does not exist")
        ));
        // The job reads object-store locations itself.
        assert!(prepare_flags(v(&["-s", "s3://bucket/savepoint-1"])).is_ok());
    }
}
