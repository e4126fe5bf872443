//! The commands.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_rest::auth::TOKEN_ENV;
use cairn_rest::paths::{AllowedRoots, Existence};
use cairn_rest::registry::resolve_prefix;
use cairn_rest::{HttpClient, HttpResponse, Registry, ResolveError};
use serde_json::{json, Value};

use crate::args::{Arg, Args};
use crate::format;
use crate::CliError;

pub const LIST_HELP: &str = "\
Usage: cairn list [-m <host:port>]

Lists the jobs running on this machine (registered under $CAIRN_HOME/jobs,
default ~/.cairn/jobs) with their start time, id, name, state and REST address.

Options:
  -m, --address <host:port>  List the jobs of this REST server instead
  -h, --help                 Show this help
";

pub const INFO_HELP: &str = "\
Usage: cairn info <jobId> [--json] [-m <host:port>]

Shows a job's state, operators, restarts and checkpoints.

Options:
  --json                     Print the REST API's job details as JSON
  -m, --address <host:port>  Talk to this REST server instead of looking the job up
  -h, --help                 Show this help
";

pub const RUN_HELP: &str = "\
Usage: cairn run [options] [--] <job binary> [job arguments...]

Starts a job binary in the background (its own process group, output to
$CAIRN_HOME/logs/), waits until it registers, and prints its job id.
The options are passed to the job binary, which understands them itself.

Options:
  -s, --fromSavepoint <path>     Restore from a savepoint or retained checkpoint
  -n, --allowNonRestoredState    Allow state that maps to no operator to be dropped
  --claim-mode <CLAIM|NO_CLAIM>  Who owns the restored snapshot (default NO_CLAIM)
  -p, --parallelism <n>          Default parallelism
  -D <key>=<value>               Set a configuration option (repeatable)
  --config <file.yaml>           Read this configuration file
  --timeout <seconds>            How long to wait for the job to register (default 60)
  -h, --help                     Show this help

Without -D rest.port=..., the job's REST API takes port 8081 or the next free one.
";

pub const SAVEPOINT_HELP: &str = "\
Usage: cairn savepoint <jobId> [targetDirectory] [--type canonical|native] [--detached]
       cairn savepoint --dispose <savepointPath> [-D <key>=<value>]... [--config <file>]

Triggers a savepoint and waits for it, printing its path. Without a target
directory the job's execution.checkpointing.savepoint-dir is used.

With --dispose, deletes a savepoint directory (only a directory holding a Cairn
_metadata of a savepoint, inside an allowed directory: the configured
execution.checkpointing.savepoint-dir, execution.checkpointing.dir or
rest.allowed-path-roots). Without -m this needs no running job: the allowed
directories come from -D, --config, or $CAIRN_CONF_DIR/config.yaml.

Options:
  -t, --type <canonical|native>  Savepoint format (default canonical)
  --detached                     Print the trigger id and return without waiting
  -d, --dispose <path>           Dispose of the savepoint at <path>
  -D <key>=<value>               With --dispose: a configuration option (repeatable)
  --config <file.yaml>           With --dispose: read this configuration file
  -m, --address <host:port>      Talk to this REST server
  -h, --help                     Show this help
";

pub const CHECKPOINT_HELP: &str = "\
Usage: cairn checkpoint <jobId> [--full]

Triggers a checkpoint now and waits until it completes.

Options:
  --full                     A full checkpoint, even if checkpoints are incremental
  -m, --address <host:port>  Talk to this REST server
  -h, --help                 Show this help
";

pub const STOP_HELP: &str = "\
Usage: cairn stop <jobId> [--savepoint-path <dir>] [--drain] [--type canonical|native]

Stops a job atomically with a savepoint: no record is processed after the
savepoint, sinks commit, the job finishes. Without --savepoint-path the job's
execution.checkpointing.savepoint-dir is used.

Options:
  -p, --savepoint-path <dir>     Parent directory of the savepoint
  -d, --drain                    Advance event time to the end first, so all timers fire
  -t, --type <canonical|native>  Savepoint format (default canonical)
  -m, --address <host:port>      Talk to this REST server
  -h, --help                     Show this help
";

pub const CANCEL_HELP: &str = "\
Usage: cairn cancel <jobId> [-s <targetDirectory> [--type canonical|native]]

Cancels a job. With -s, takes a savepoint first and cancels once it completed.

Options:
  -s, --with-savepoint <dir>     Take a savepoint into <dir>, then cancel
  -t, --type <canonical|native>  With -s: savepoint format (default canonical)
  -m, --address <host:port>      Talk to this REST server
  -h, --help                     Show this help
";

const TERMINAL: [&str; 3] = ["FINISHED", "CANCELED", "FAILED"];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn token() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn registry() -> Result<Registry, CliError> {
    Registry::from_env().map_err(CliError::Failed)
}

fn http(authority: &str) -> HttpClient {
    HttpClient::new(authority)
        .with_token(token())
        .with_timeout(Duration::from_secs(10))
}

/// The job a command talks to.
struct Target {
    http: HttpClient,
    jid: String,
    url: String,
}

impl Target {
    fn path(&self, rest: &str) -> String {
        format!("/jobs/{}{rest}", self.jid)
    }
}

fn check_prefix(args: &Args, prefix: &str) -> Result<(), CliError> {
    if prefix.is_empty() || prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(args.usage(format!(
            "'{prefix}' is not a job id; give the job id (32 hex digits) or a unique prefix of it, as 'cairn list' shows"
        )));
    }
    Ok(())
}

/// Finds the job `prefix` names: through the registry, or on the server at `address`.
fn target(args: &Args, prefix: &str, address: Option<&str>) -> Result<Target, CliError> {
    check_prefix(args, prefix)?;
    match address {
        Some(addr) => {
            let client = http(addr);
            let r = client
                .get("/jobs")
                .map_err(|e| CliError::NotFound(format!("cannot reach the REST server at {addr}: {e}")))?;
            if r.status != 200 {
                return Err(CliError::NotFound(format!(
                    "the REST server at {addr} did not list its jobs: {}",
                    r.error_message()
                )));
            }
            let ids: Vec<String> = r.json()["jobs"]
                .as_array()
                .map(|a| a.iter().filter_map(|j| j["id"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            let jid = resolve_prefix(ids, prefix, |s| s.as_str()).map_err(|e| resolve_error(args, prefix, e))?;
            Ok(Target {
                http: client,
                jid,
                url: format!("http://{addr}"),
            })
        }
        None => {
            let entry = registry()?
                .resolve(prefix)
                .map_err(|e| resolve_error(args, prefix, e))?;
            Ok(Target {
                http: http(&entry.authority()),
                url: entry.url(),
                jid: entry.jid,
            })
        }
    }
}

fn resolve_error(args: &Args, prefix: &str, e: ResolveError) -> CliError {
    match e {
        ResolveError::NotFound => CliError::NotFound(format!(
            "no running job with id '{prefix}'; 'cairn list' shows the running jobs"
        )),
        ResolveError::Ambiguous(ids) => args.usage(format!(
            "job id prefix '{prefix}' matches several jobs ({}); give more digits",
            ids.join(", ")
        )),
    }
}

/// Sends a request; connection failures mean the job is not reachable.
fn send(t: &Target, method: &str, path: &str, body: Option<&Value>) -> Result<HttpResponse, CliError> {
    t.http.request(method, path, body).map_err(|e| {
        CliError::NotFound(format!(
            "cannot reach job {} at {}: {e} (has it ended? 'cairn list' shows the running jobs)",
            t.jid, t.url
        ))
    })
}

/// Turns an error response into the matching CLI error.
fn response_error(r: &HttpResponse) -> CliError {
    let code = r.json()["code"].as_str().unwrap_or_default().to_string();
    let mut msg = r.error_message();
    if r.status == 401 {
        msg.push_str(&format!("; set {TOKEN_ENV} to the job's REST token"));
    }
    match code.as_str() {
        "JOB_NOT_FOUND" => CliError::NotFound(msg),
        _ => CliError::Failed(msg),
    }
}

/// POSTs a trigger and returns its request id.
fn trigger(t: &Target, path: &str, body: &Value) -> Result<String, CliError> {
    let r = send(t, "POST", path, Some(body))?;
    if r.status != 202 && r.status != 200 {
        return Err(response_error(&r));
    }
    r.json()["request-id"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| CliError::Failed(format!("the server answered without a request id: {}", r.text())))
}

/// Polls an operation's status until it is no longer in progress, showing
/// progress on stderr; returns its `operation` object.
fn wait_operation(t: &Target, path: &str, what: &str) -> Result<Value, CliError> {
    let start = Instant::now();
    let mut announced = false;
    let mut last_dot = start;
    let mut misses = 0;
    let result = loop {
        match t.http.get(path) {
            Ok(r) if r.status == 200 => {
                misses = 0;
                let v = r.json();
                if v["status"]["id"] != "IN_PROGRESS" {
                    break Ok(v["operation"].clone());
                }
            }
            Ok(r) => break Err(response_error(&r)),
            Err(e) => {
                misses += 1;
                if misses >= 20 {
                    break Err(CliError::Failed(format!(
                        "lost contact with job {} at {} while waiting for the {what}: {e}; the job may have ended \
                         ('cairn list'); check its log",
                        t.jid, t.url
                    )));
                }
            }
        }
        if start.elapsed() >= Duration::from_secs(1) && last_dot.elapsed() >= Duration::from_secs(1) {
            if !announced {
                eprint!("Waiting for the {what} to complete");
                announced = true;
            }
            eprint!(".");
            let _ = std::io::stderr().flush();
            last_dot = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if announced {
        eprintln!(" ({:.1}s)", start.elapsed().as_secs_f64());
    }
    let op = result?;
    if let Some(cause) = op.get("failure-cause").filter(|c| !c.is_null()) {
        let msg = cause["message"]
            .as_str()
            .or_else(|| cause["stack-trace"].as_str())
            .unwrap_or("unknown cause");
        return Err(CliError::Failed(format!("the {what} failed: {msg}")));
    }
    Ok(op)
}

/// Waits until the job reached a terminal state, or its process went away
/// (`None`).
fn wait_terminal(t: &Target, timeout: Duration) -> Result<Option<String>, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match t.http.get(&t.path("")) {
            Ok(r) if r.status == 200 => {
                let state = r.json()["state"].as_str().unwrap_or_default().to_string();
                if TERMINAL.contains(&state.as_str()) {
                    return Ok(Some(state));
                }
                state
            }
            Ok(r) => return Err(response_error(&r)),
            Err(_) => return Ok(None),
        };
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "job {} did not end within {}s (state {last})",
                t.jid,
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An absolute form of a user-given path (relative to the working directory).
fn absolute(p: &str) -> String {
    let local = p.strip_prefix("file://").unwrap_or(p);
    let path = Path::new(local);
    if path.is_absolute() {
        return local.to_string();
    }
    std::env::current_dir()
        .map(|d| d.join(path).display().to_string())
        .unwrap_or_else(|_| local.to_string())
}

fn format_type(args: &Args, v: &str) -> Result<&'static str, CliError> {
    if v.eq_ignore_ascii_case("canonical") {
        Ok("CANONICAL")
    } else if v.eq_ignore_ascii_case("native") {
        Ok("NATIVE")
    } else {
        Err(args.usage(format!("--type is '{v}'; use canonical or native")))
    }
}

/// The one or two positionals of a job command.
fn positionals(args: &Args, pos: Vec<String>, max: usize, usage: &str) -> Result<Vec<String>, CliError> {
    if pos.is_empty() {
        return Err(args.usage(format!("missing the job id: {usage}")));
    }
    if pos.len() > max {
        return Err(args.usage(format!("unexpected argument '{}': {usage}", pos[max])));
    }
    Ok(pos)
}

// ---- list ---------------------------------------------------------------------------------

pub fn list(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "list");
    let mut address = None;
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{LIST_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-m" || name == "--address" => {
                address = Some(args.value(&name, inline, "<host:port>")?)
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => return Err(args.usage(format!("unexpected argument '{p}'"))),
            Arg::Separator => {}
        }
    }
    // (start, jid, name, state, url)
    let mut rows: Vec<(u64, String, String, String, String)> = Vec::new();
    match address {
        Some(addr) => {
            let r = http(&addr)
                .get("/jobs/overview")
                .map_err(|e| CliError::NotFound(format!("cannot reach the REST server at {addr}: {e}")))?;
            if r.status != 200 {
                return Err(response_error(&r));
            }
            for j in r.json()["jobs"].as_array().cloned().unwrap_or_default() {
                rows.push(overview_row(&j, &format!("http://{addr}")));
            }
        }
        None => {
            for entry in registry()?.list() {
                let client = http(&entry.authority()).with_timeout(Duration::from_secs(3));
                let state = match client.get("/jobs/overview") {
                    Ok(r) if r.status == 200 => r.json()["jobs"]
                        .as_array()
                        .and_then(|a| a.iter().find(|j| j["jid"] == entry.jid.as_str()).cloned())
                        .and_then(|j| j["state"].as_str().map(String::from))
                        .unwrap_or_else(|| "UNKNOWN".into()),
                    _ => "UNREACHABLE".into(),
                };
                rows.push((
                    entry.start_time_ms,
                    entry.jid.clone(),
                    entry.name.clone(),
                    state,
                    entry.url(),
                ));
            }
        }
    }
    let (ended, running): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| TERMINAL.contains(&r.3.as_str()));
    let line = |r: &(u64, String, String, String, String)| {
        println!("{} : {} : {} ({}) {}", format::utc(r.0), r.1, r.2, r.3, r.4);
    };
    if running.is_empty() {
        println!("No running jobs.");
    } else {
        println!("------------------ Running/Restarting Jobs -------------------");
        running.iter().for_each(line);
        println!("--------------------------------------------------------------");
    }
    if !ended.is_empty() {
        println!("---------------------- Terminated Jobs -----------------------");
        ended.iter().for_each(line);
        println!("--------------------------------------------------------------");
    }
    Ok(())
}

fn overview_row(j: &Value, url: &str) -> (u64, String, String, String, String) {
    (
        j["start-time"].as_u64().unwrap_or(0),
        j["jid"].as_str().unwrap_or_default().to_string(),
        j["name"].as_str().unwrap_or_default().to_string(),
        j["state"].as_str().unwrap_or_default().to_string(),
        url.to_string(),
    )
}

// ---- info ---------------------------------------------------------------------------------

pub fn info(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "info");
    let (mut address, mut as_json, mut pos) = (None, false, Vec::new());
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{INFO_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-m" || name == "--address" => {
                address = Some(args.value(&name, inline, "<host:port>")?)
            }
            Arg::Flag { name, inline } if name == "--json" => {
                args.no_value(&name, &inline)?;
                as_json = true
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => pos.push(p),
            Arg::Separator => {}
        }
    }
    let pos = positionals(&args, pos, 1, "cairn info <jobId>")?;
    let t = target(&args, &pos[0], address.as_deref())?;
    let r = send(&t, "GET", &t.path(""), None)?;
    if r.status != 200 {
        return Err(response_error(&r));
    }
    let job = r.json();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        return Ok(());
    }
    let cps = send(&t, "GET", &t.path("/checkpoints"), None)?.json();
    let start = job["start-time"].as_u64().unwrap_or(0);
    println!("Job:         {}", job["name"].as_str().unwrap_or_default());
    println!("JobID:       {}", t.jid);
    println!("State:       {}", job["state"].as_str().unwrap_or_default());
    println!(
        "Started:     {} UTC (running for {})",
        format::utc(start),
        format::duration_ms(job["duration"].as_u64().unwrap_or(0))
    );
    println!("Restarts:    {}", job["restarts"].as_u64().unwrap_or(0));
    if let Some(f) = job["failure-cause"].as_str() {
        println!("Last failure: {f}");
    }
    if let Some(p) = job["restored-from"].as_str() {
        println!("Restored from: {p}");
    }
    println!("REST API:    {}", t.url);
    println!("Operators:");
    for v in job["vertices"].as_array().cloned().unwrap_or_default() {
        println!(
            "  {:<24} {:<28} parallelism {}/{}  id {}",
            v["uid"].as_str().unwrap_or_default(),
            v["name"].as_str().unwrap_or_default(),
            v["parallelism"],
            v["maxParallelism"],
            v["id"].as_str().unwrap_or_default()
        );
    }
    let c = &cps["counts"];
    println!(
        "Checkpoints: {} completed, {} failed, {} in progress, {} restored",
        c["completed"], c["failed"], c["in_progress"], c["restored"]
    );
    for (label, key) in [("Latest checkpoint:", "completed"), ("Latest savepoint: ", "savepoint")] {
        let l = &cps["latest"][key];
        if l.is_object() {
            println!(
                "{label} {} at {} ({}, {})",
                l["id"],
                l["external_path"].as_str().unwrap_or("?"),
                format::duration_ms(l["end_to_end_duration"].as_u64().unwrap_or(0)),
                format::bytes(l["state_size"].as_u64().unwrap_or(0))
            );
        }
    }
    let failed = &cps["latest"]["failed"];
    if failed.is_object() {
        println!(
            "Latest failure:    {} ({})",
            failed["id"],
            failed["failure_message"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

// ---- savepoint ----------------------------------------------------------------------------

pub fn savepoint(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "savepoint");
    let (mut address, mut kind, mut detached, mut dispose) = (None, None, false, None);
    let mut startup: Vec<String> = Vec::new();
    let mut pos = Vec::new();
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{SAVEPOINT_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-m" || name == "--address" => {
                address = Some(args.value(&name, inline, "<host:port>")?)
            }
            Arg::Flag { name, inline } if name == "-t" || name == "--type" => {
                let v = args.value(&name, inline, "canonical|native")?;
                kind = Some(format_type(&args, &v)?);
            }
            Arg::Flag { name, inline } if name == "--detached" || name == "-dcp" => {
                args.no_value(&name, &inline)?;
                detached = true
            }
            Arg::Flag { name, inline } if name == "-d" || name == "--dispose" => {
                dispose = Some(args.value(&name, inline, "<savepointPath>")?)
            }
            Arg::Flag { name, inline } if name == "--config" => {
                let v = args.value(&name, inline, "<file.yaml>")?;
                startup.extend(["--config".to_string(), v]);
            }
            Arg::Flag { name, inline } if name.starts_with("-D") => {
                let v = if name == "-D" {
                    args.value(&name, inline, "<key>=<value>")?
                } else {
                    name[2..].to_string()
                };
                startup.extend(["-D".to_string(), v]);
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => pos.push(p),
            Arg::Separator => {}
        }
    }
    if let Some(path) = dispose {
        if !pos.is_empty() {
            return Err(args.usage(format!(
                "unexpected argument '{}': cairn savepoint --dispose <savepointPath>",
                pos[0]
            )));
        }
        if kind.is_some() || detached {
            return Err(args.usage("--type and --detached do not apply to --dispose"));
        }
        return dispose_savepoint(&args, &path, address.as_deref(), startup);
    }
    if !startup.is_empty() {
        return Err(args.usage("-D and --config apply only to --dispose; the job's own configuration is used"));
    }
    let pos = positionals(&args, pos, 2, "cairn savepoint <jobId> [targetDirectory]")?;
    let t = target(&args, &pos[0], address.as_deref())?;
    let mut body = json!({ "cancel-job": false, "formatType": kind.unwrap_or("CANONICAL") });
    if let Some(dir) = pos.get(1) {
        body["target-directory"] = json!(absolute(dir));
    }
    println!("Triggering savepoint for job {}.", t.jid);
    let id = trigger(&t, &t.path("/savepoints"), &body)?;
    if detached {
        println!("Savepoint triggered for job {}. Trigger id: {id}", t.jid);
        println!("Its status: GET {}{}", t.url, t.path(&format!("/savepoints/{id}")));
        return Ok(());
    }
    println!("Waiting for response...");
    let op = wait_operation(&t, &t.path(&format!("/savepoints/{id}")), "savepoint")?;
    let location = op["location"].as_str().unwrap_or_default();
    println!("Savepoint completed. Path: {location}");
    println!("You can resume your program from this savepoint with the run command.");
    Ok(())
}

fn dispose_savepoint(args: &Args, path: &str, address: Option<&str>, startup: Vec<String>) -> Result<(), CliError> {
    let abs = absolute(path);
    println!("Disposing savepoint '{abs}'.");
    if let Some(addr) = address {
        if !startup.is_empty() {
            return Err(args.usage("-D and --config do not apply with -m: the server's configuration is used"));
        }
        let client = http(addr);
        let r = client
            .post("/savepoint-disposal", &json!({ "savepoint-path": abs }))
            .map_err(|e| CliError::NotFound(format!("cannot reach the REST server at {addr}: {e}")))?;
        if r.status != 202 && r.status != 200 {
            return Err(response_error(&r));
        }
        let id = r.json()["request-id"].as_str().unwrap_or_default().to_string();
        let s = client
            .get(&format!("/savepoint-disposal/{id}"))
            .map_err(|e| CliError::Failed(format!("cannot read the disposal's outcome: {e}")))?
            .json();
        if let Some(m) = s["operation"]["failure-cause"]["message"].as_str() {
            return Err(CliError::Failed(format!("the disposal failed: {m}")));
        }
    } else {
        let opts = cairn_config::parse_startup_args(startup).map_err(|e| args.usage(e.to_string()))?;
        let roots = AllowedRoots::from_config(&opts.config);
        let checked = roots
            .check("savepoint path", &abs, Existence::MustExist)
            .map_err(|e| CliError::Failed(e.message))?;
        if roots.is_root(&checked) {
            return Err(CliError::Failed(format!(
                "'{}' is a configured directory, not a savepoint inside it; give the savepoint's own directory",
                checked.display()
            )));
        }
        cairn_snapshot::dispose::dispose_savepoint(&cairn_snapshot::LocalFileStorage::new(), &checked)
            .map_err(|e| CliError::Failed(e.to_string()))?;
    }
    println!("Savepoint '{abs}' disposed.");
    Ok(())
}

// ---- checkpoint ---------------------------------------------------------------------------

pub fn checkpoint(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "checkpoint");
    let (mut address, mut full, mut pos) = (None, false, Vec::new());
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{CHECKPOINT_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-m" || name == "--address" => {
                address = Some(args.value(&name, inline, "<host:port>")?)
            }
            Arg::Flag { name, inline } if name == "--full" || name == "-full" => {
                args.no_value(&name, &inline)?;
                full = true
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => pos.push(p),
            Arg::Separator => {}
        }
    }
    let pos = positionals(&args, pos, 1, "cairn checkpoint <jobId> [--full]")?;
    let t = target(&args, &pos[0], address.as_deref())?;
    let kind = if full { "FULL" } else { "CONFIGURED" };
    println!("Triggering checkpoint for job {}.", t.jid);
    let id = trigger(&t, &t.path("/checkpoints"), &json!({ "checkpointType": kind }))?;
    let op = wait_operation(&t, &t.path(&format!("/checkpoints/{id}")), "checkpoint")?;
    let n = op["checkpointId"].as_u64().map(|n| n.to_string()).unwrap_or("?".into());
    println!("Checkpoint({kind}) {n} for job {} completed.", t.jid);
    Ok(())
}

// ---- stop ---------------------------------------------------------------------------------

pub fn stop(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "stop");
    let (mut address, mut dir, mut drain, mut kind, mut pos) = (None, None, false, None, Vec::new());
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{STOP_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-m" || name == "--address" => {
                address = Some(args.value(&name, inline, "<host:port>")?)
            }
            Arg::Flag { name, inline } if name == "-p" || name == "--savepoint-path" || name == "--savepointPath" => {
                dir = Some(args.value(&name, inline, "<dir>")?)
            }
            Arg::Flag { name, inline } if name == "-d" || name == "--drain" => {
                args.no_value(&name, &inline)?;
                drain = true
            }
            Arg::Flag { name, inline } if name == "-t" || name == "--type" => {
                let v = args.value(&name, inline, "canonical|native")?;
                kind = Some(format_type(&args, &v)?);
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => pos.push(p),
            Arg::Separator => {}
        }
    }
    let pos = positionals(&args, pos, 1, "cairn stop <jobId> [--savepoint-path <dir>] [--drain]")?;
    let t = target(&args, &pos[0], address.as_deref())?;
    let kind = kind.unwrap_or("CANONICAL");
    let mut body = json!({ "drain": drain, "formatType": kind });
    if let Some(d) = &dir {
        body["targetDirectory"] = json!(absolute(d));
    }
    println!(
        "Suspending job \"{}\" with a {kind} savepoint{}.",
        t.jid,
        if drain { ", draining first" } else { "" }
    );
    let id = trigger(&t, &t.path("/stop"), &body)?;
    let op = wait_operation(&t, &t.path(&format!("/savepoints/{id}")), "savepoint")?;
    println!(
        "Savepoint completed. Path: {}",
        op["location"].as_str().unwrap_or_default()
    );
    match wait_terminal(&t, Duration::from_secs(120))? {
        Some(state) if state == "FAILED" => Err(CliError::Failed(format!(
            "job {} failed after the savepoint; see its log",
            t.jid
        ))),
        Some(state) => {
            println!("Job {} stopped ({state}).", t.jid);
            Ok(())
        }
        None => {
            println!("Job {} stopped.", t.jid);
            Ok(())
        }
    }
}

// ---- cancel -------------------------------------------------------------------------------

pub fn cancel(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "cancel");
    let (mut address, mut dir, mut kind, mut pos) = (None, None, None, Vec::new());
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{CANCEL_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-t" || name == "--type" => {
                let v = args.value(&name, inline, "canonical|native")?;
                kind = Some(format_type(&args, &v)?);
            }
            Arg::Flag { name, inline } if name == "-m" || name == "--address" => {
                address = Some(args.value(&name, inline, "<host:port>")?)
            }
            Arg::Flag { name, inline } if name == "-s" || name == "--with-savepoint" || name == "--withSavepoint" => {
                dir = Some(args.value(&name, inline, "<targetDirectory>")?)
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => pos.push(p),
            Arg::Separator => {}
        }
    }
    let pos = positionals(&args, pos, 1, "cairn cancel <jobId> [-s <targetDirectory>]")?;
    if kind.is_some() && dir.is_none() {
        return Err(args.usage("--type applies only with -s <targetDirectory>"));
    }
    let t = target(&args, &pos[0], address.as_deref())?;
    let mut location = None;
    match &dir {
        Some(d) => {
            let d = absolute(d);
            println!("Cancelling job {} with a savepoint to {d}.", t.jid);
            let body = json!({ "target-directory": d, "cancel-job": true, "formatType": kind.unwrap_or("CANONICAL") });
            let id = trigger(&t, &t.path("/savepoints"), &body)?;
            let op = wait_operation(&t, &t.path(&format!("/savepoints/{id}")), "savepoint")?;
            let loc = op["location"].as_str().unwrap_or_default().to_string();
            println!("Savepoint completed. Path: {loc}");
            location = Some(loc);
        }
        None => {
            println!("Cancelling job {}.", t.jid);
            let r = send(&t, "PATCH", &t.path("?mode=cancel"), None)?;
            if r.status != 202 && r.status != 200 {
                return Err(response_error(&r));
            }
        }
    }
    match wait_terminal(&t, Duration::from_secs(120))? {
        Some(state) if state != "CANCELED" => {
            return Err(CliError::Failed(format!(
                "job {} ended as {state}, not CANCELED",
                t.jid
            )))
        }
        _ => {}
    }
    match location {
        Some(loc) => println!("Cancelled job {}. Savepoint stored in {loc}.", t.jid),
        None => println!("Cancelled job {}.", t.jid),
    }
    Ok(())
}

// ---- run ----------------------------------------------------------------------------------

pub fn run(argv: Vec<String>) -> Result<(), CliError> {
    let mut args = Args::new(argv, "run");
    let mut flags: Vec<String> = Vec::new();
    let mut timeout = Duration::from_secs(60);
    let mut restore: Option<String> = None;
    let mut program: Option<String> = None;
    while let Some(a) = args.next_arg() {
        match a {
            Arg::Flag { name, .. } if name == "-h" || name == "--help" => {
                print!("{RUN_HELP}");
                return Ok(());
            }
            Arg::Flag { name, inline } if name == "-s" || name == "--fromSavepoint" || name == "--from-savepoint" => {
                let v = args.value(&name, inline, "<savepointPath>")?;
                restore = Some(v.clone());
                flags.extend(["-s".to_string(), v]);
            }
            Arg::Flag { name, inline }
                if name == "-n" || name == "--allowNonRestoredState" || name == "--allow-non-restored-state" =>
            {
                args.no_value(&name, &inline)?;
                flags.push("-n".into());
            }
            Arg::Flag { name, inline }
                if ["--claim-mode", "--claimMode", "-cm", "-rm", "--restoreMode"].contains(&name.as_str()) =>
            {
                let v = args.value(&name, inline, "CLAIM|NO_CLAIM")?;
                flags.extend(["--claim-mode".to_string(), v]);
            }
            Arg::Flag { name, inline } if name == "-p" || name == "--parallelism" => {
                let v = args.value(&name, inline, "<n>")?;
                flags.extend(["-p".to_string(), v]);
            }
            Arg::Flag { name, inline } if name == "--config" => {
                let v = args.value(&name, inline, "<file.yaml>")?;
                flags.extend(["--config".to_string(), absolute(&v)]);
            }
            Arg::Flag { name, inline } if name.starts_with("-D") => {
                let v = if name == "-D" {
                    args.value(&name, inline, "<key>=<value>")?
                } else {
                    name[2..].to_string()
                };
                flags.extend(["-D".to_string(), v]);
            }
            Arg::Flag { name, inline } if name == "--timeout" => {
                let v = args.value(&name, inline, "<seconds>")?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| args.usage(format!("--timeout is '{v}'; give a number of seconds")))?;
                timeout = Duration::from_secs(secs);
            }
            Arg::Flag { name, .. } => return Err(args.unknown(&name)),
            Arg::Positional(p) => {
                program = Some(p);
                break;
            }
            Arg::Separator => {
                program = match args.next_arg() {
                    Some(Arg::Positional(p)) => Some(p),
                    _ => None,
                };
                break;
            }
        }
    }
    let Some(program) = program else {
        return Err(args.usage("missing the job binary: cairn run [options] -- <job binary> [args]"));
    };
    let job_args = args.rest();
    // Validate the flags as the job will, so mistakes are usage errors here.
    let opts = cairn_config::parse_startup_args(flags.clone()).map_err(|e| args.usage(e.to_string()))?;
    if let Some(r) = &restore {
        let p = absolute(r);
        if !Path::new(&p).exists() {
            return Err(CliError::Failed(format!(
                "cannot restore from '{r}': it does not exist; give a savepoint directory, a retained checkpoint \
                 directory, or the _metadata file inside one"
            )));
        }
    }
    if !cairn_rest::rest_requested(&opts.config) {
        // Make sure the job serves its REST API (and so registers).
        flags.extend(["-D".to_string(), "rest.port=8081".to_string()]);
    }
    let registry = registry()?;
    let logs = registry.logs_dir();
    std::fs::create_dir_all(&logs)
        .map_err(|e| CliError::Failed(format!("cannot create the log directory {}: {e}", logs.display())))?;
    let stem = Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".into());
    let log_path = logs.join(format!(
        "{stem}-{}-{}.log",
        format::utc_compact(now_ms()),
        cairn_snapshot::layout::IdGenerator::from_entropy().hex(6)
    ));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| CliError::Failed(format!("cannot create the log file {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| CliError::Failed(format!("cannot use the log file {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(&program);
    cmd.args(&flags);
    if !job_args.is_empty() {
        cmd.arg("--").args(&job_args);
    }
    cmd.env(cairn_rest::registry::HOME_ENV, registry.home())
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
        .map_err(|e| CliError::Failed(format!("cannot start '{program}': {e}")))?;
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(entry) = registry.list().into_iter().find(|e| e.pid == pid) {
            println!("Job has been submitted with JobID {}", entry.jid);
            println!("  name: {}", entry.name);
            println!("  pid:  {pid}");
            println!("  REST: {}", entry.url());
            println!("  log:  {}", log_path.display());
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Failed(format!(
                "the job exited ({status}) before it registered; the end of its log {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            )));
        }
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "the job (pid {pid}) did not register within {}s; it is still running, see its log {}",
                timeout.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a file.
fn tail(path: &PathBuf, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_prefixes_are_checked() {
        let a = Args::new(Vec::<String>::new(), "info");
        assert!(check_prefix(&a, "abc123").is_ok());
        assert!(check_prefix(&a, "").is_err());
        assert!(check_prefix(&a, "xyz").is_err());
        assert!(check_prefix(&a, &"a".repeat(33)).is_err());
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(absolute("/a/b"), "/a/b");
        assert_eq!(absolute("file:///a/b"), "/a/b");
        assert!(Path::new(&absolute("rel")).is_absolute());
    }
}
