//! The commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_rest_client::auth::TOKEN_ENV;
use cairn_rest_client::launch::{launch, prepare_flags, without_restore_flags, LaunchError, LaunchSpec};
use cairn_rest_client::paths::{check_trusted, Existence};
use cairn_rest_client::registry::resolve_prefix;
use cairn_rest_client::{Endpoint, HttpClient, HttpResponse, Registry, RegistryEntry, ResolveError};
use serde_json::{json, Value};

use crate::progress::Progress;
use crate::{format, Address, CliError, FormatType, RunArgs, SavepointArgs};

const TERMINAL: [&str; 3] = ["FINISHED", "CANCELED", "FAILED"];

fn token() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub fn registry() -> Result<Registry, CliError> {
    Registry::from_env().map_err(CliError::Failed)
}

fn client(endpoint: Endpoint) -> HttpClient {
    let c = HttpClient::at(endpoint.clone()).with_timeout(Duration::from_secs(10));
    match endpoint {
        // The socket is trusted: no token needed (nor sent).
        Endpoint::Unix(_) => c,
        Endpoint::Tcp(_) => c.with_token(token()),
    }
}

/// How the CLI reaches a registered job: its control socket if it has one
/// that exists, else its REST port.
pub fn endpoint_of(entry: &RegistryEntry) -> Endpoint {
    match &entry.socket {
        Some(s) if s.exists() => Endpoint::Unix(s.clone()),
        _ => Endpoint::Tcp(entry.authority()),
    }
}

/// The job a command talks to.
pub struct Target {
    pub http: HttpClient,
    pub jid: String,
}

impl Target {
    fn path(&self, rest: &str) -> String {
        format!("/jobs/{}{rest}", self.jid)
    }
}

/// Finds the job `prefix` names: through the registry, or on the server at `address`.
fn target(command: &'static str, prefix: &str, address: &Address) -> Result<Target, CliError> {
    match &address.address {
        Some(addr) => {
            let c = client(Endpoint::parse(addr));
            let r = c
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
            let jid = resolve_prefix(ids, prefix, |s| s.as_str()).map_err(|e| resolve_error(command, prefix, e))?;
            Ok(Target { http: c, jid })
        }
        None => {
            let entry = registry()?
                .resolve(prefix)
                .map_err(|e| resolve_error(command, prefix, e))?;
            Ok(Target {
                http: client(endpoint_of(&entry)),
                jid: entry.jid,
            })
        }
    }
}

fn resolve_error(command: &'static str, prefix: &str, e: ResolveError) -> CliError {
    match e {
        ResolveError::NotFound => CliError::NotFound(format!(
            "no running job with id '{prefix}'; 'cairn list' shows the running jobs"
        )),
        ResolveError::Ambiguous(ids) => CliError::usage(
            command,
            format!(
                "job id prefix '{prefix}' matches several jobs ({}); give more digits",
                ids.join(", ")
            ),
        ),
    }
}

/// Sends a request; connection failures mean the job is not reachable.
fn send(t: &Target, method: &str, path: &str, body: Option<&Value>) -> Result<HttpResponse, CliError> {
    let r = t.http.request(method, path, body);
    match &r {
        Ok(resp) => tracing::debug!(method, endpoint = %t.http.endpoint(), path, status = resp.status, "REST call"),
        Err(e) => tracing::debug!(method, endpoint = %t.http.endpoint(), path, "REST call failed: {e}"),
    }
    r.map_err(|e| {
        CliError::NotFound(format!(
            "cannot reach job {} at {}: {e} (has it ended? 'cairn list' shows the running jobs)",
            t.jid,
            t.http.endpoint()
        ))
    })
}

/// Turns an error response into the matching CLI error.
fn response_error(r: &HttpResponse) -> CliError {
    let mut msg = r.error_message();
    if r.status == 401 {
        msg.push_str(&format!("; set {TOKEN_ENV} to the job's REST token"));
    }
    match r.error_code() {
        Some("JOB_NOT_FOUND") => CliError::NotFound(msg),
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

/// The in-progress savepoint's acknowledged tasks, total and bytes, from the
/// job's checkpoint statistics.
fn savepoint_progress(t: &Target) -> Option<(u64, u64, u64)> {
    let r = t.http.get(&t.path("/checkpoints")).ok()?;
    let v = r.json();
    let pending = v["history"]
        .as_array()?
        .iter()
        .find(|c| c["status"] == "IN_PROGRESS" && c["is_savepoint"] == true)?
        .clone();
    Some((
        pending["num_acknowledged_subtasks"].as_u64().unwrap_or(0),
        pending["num_subtasks"].as_u64().unwrap_or(0),
        pending["state_size"].as_u64().unwrap_or(0),
    ))
}

/// Polls an operation's status until it is no longer in progress, drawing a
/// progress bar on a terminal; returns its `operation` object.
fn wait_operation(t: &Target, path: &str, what: &str) -> Result<Value, CliError> {
    let mut bar = Progress::new(what);
    let show = crate::progress::enabled() && what == "savepoint";
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
                        t.jid,
                        t.http.endpoint()
                    )));
                }
            }
        }
        if show {
            let (done, total, bytes) = savepoint_progress(t).unwrap_or((0, 0, 0));
            bar.update(done, total, bytes);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if show {
        // The completed savepoint's totals, so even a fast one reports them.
        if let Ok(r) = t.http.get(&t.path("/checkpoints")) {
            let sp = &r.json()["latest"]["savepoint"];
            if sp.is_object() {
                let n = |k: &str| sp[k].as_u64().unwrap_or(0);
                bar.update(n("num_acknowledged_subtasks"), n("num_subtasks"), n("state_size"));
            }
        }
    }
    bar.finish();
    let op = result?;
    if let Some(cause) = op
        .get("failure-cause")
        .or_else(|| op.get("failureCause"))
        .filter(|c| !c.is_null())
    {
        let msg = cause["stack-trace"].as_str().unwrap_or("unknown cause");
        return Err(CliError::Failed(format!("the {what} failed: {msg}")));
    }
    Ok(op)
}

/// Waits until the job reached a terminal state, or its process went away
/// (`None`).
fn wait_terminal(t: &Target, timeout: Duration) -> Result<Option<String>, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match t.http.get(&t.path("/status")) {
            Ok(r) if r.status == 200 => {
                let state = r.json()["status"].as_str().unwrap_or_default().to_string();
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

/// An absolute form of a user-given path (relative to the working
/// directory); object-store URIs (`s3://...`) are passed on as they are.
fn absolute(p: &str) -> String {
    let local = p.strip_prefix("file://").unwrap_or(p);
    let path = Path::new(local);
    if path.is_absolute() || local.contains("://") {
        return local.to_string();
    }
    std::env::current_dir()
        .map(|d| d.join(path).display().to_string())
        .unwrap_or_else(|_| local.to_string())
}

// ---- list ---------------------------------------------------------------------------------

pub fn list(address: Address) -> Result<(), CliError> {
    // (start, jid, name, state, url)
    let mut rows: Vec<(u64, String, String, String, String)> = Vec::new();
    match &address.address {
        Some(addr) => {
            let endpoint = Endpoint::parse(addr);
            let r = client(endpoint.clone())
                .get("/jobs/overview")
                .map_err(|e| CliError::NotFound(format!("cannot reach the REST server at {addr}: {e}")))?;
            if r.status != 200 {
                return Err(response_error(&r));
            }
            for j in r.json()["jobs"].as_array().cloned().unwrap_or_default() {
                rows.push((
                    j["start-time"].as_u64().unwrap_or(0),
                    j["jid"].as_str().unwrap_or_default().to_string(),
                    j["name"].as_str().unwrap_or_default().to_string(),
                    j["state"].as_str().unwrap_or_default().to_string(),
                    endpoint.to_string(),
                ));
            }
        }
        None => {
            for entry in registry()?.list() {
                let c = client(endpoint_of(&entry)).with_timeout(Duration::from_secs(3));
                let state = match c.get(&format!("/jobs/{}/status", entry.jid)) {
                    Ok(r) if r.status == 200 => r.json()["status"].as_str().unwrap_or("UNKNOWN").to_string(),
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

// ---- info ---------------------------------------------------------------------------------

pub fn info(prefix: &str, as_json: bool, address: Address) -> Result<(), CliError> {
    let t = target("info", prefix, &address)?;
    let r = send(&t, "GET", &t.path(""), None)?;
    if r.status != 200 {
        return Err(response_error(&r));
    }
    let job = r.json();
    let extra = send(&t, "GET", &t.path("/cairn"), None)?.json();
    if as_json {
        let mut all = job.clone();
        all["cairn"] = extra;
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
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
    println!("Restarts:    {}", extra["restarts"].as_u64().unwrap_or(0));
    if let Some(f) = extra["failure-cause"].as_str() {
        println!("Last failure: {f}");
    }
    if let Some(p) = extra["restored-from"].as_str() {
        println!("Restored from: {p}");
    }
    println!("Control:     {}", t.http.endpoint());
    println!("Operators:");
    for v in extra["operators"].as_array().cloned().unwrap_or_default() {
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

pub fn savepoint(args: SavepointArgs) -> Result<(), CliError> {
    if let Some(path) = &args.dispose {
        return dispose_savepoint(&args, path);
    }
    if !args.dynamic.is_empty() || args.config.is_some() {
        return Err(CliError::usage(
            "savepoint",
            "-D and --config apply only to --dispose; a savepoint uses the job's own configuration",
        ));
    }
    let Some(prefix) = &args.job else {
        return Err(CliError::usage(
            "savepoint",
            "missing the job id: cairn savepoint <JOB_ID> [TARGET_DIRECTORY]",
        ));
    };
    let t = target("savepoint", prefix, &args.address)?;
    let kind = args.format.unwrap_or(FormatType::Canonical).wire();
    let mut body = json!({ "cancel-job": false, "formatType": kind });
    if let Some(dir) = &args.target {
        body["target-directory"] = json!(absolute(dir));
    }
    println!("Triggering savepoint for job {}.", t.jid);
    let id = trigger(&t, &t.path("/savepoints"), &body)?;
    if args.detached {
        println!("Savepoint triggered for job {}. Trigger id: {id}", t.jid);
        println!("Its status: GET {}", t.path(&format!("/savepoints/{id}")));
        return Ok(());
    }
    println!("Waiting for response...");
    let op = wait_operation(&t, &t.path(&format!("/savepoints/{id}")), "savepoint")?;
    let location = op["location"].as_str().unwrap_or_default();
    println!("Savepoint completed. Path: {location}");
    println!("You can resume your program from this savepoint with the run command.");
    Ok(())
}

fn dispose_savepoint(args: &SavepointArgs, path: &str) -> Result<(), CliError> {
    let abs = absolute(path);
    if !args.dynamic.is_empty() || args.config.is_some() {
        // Accepted for compatibility; validated so mistakes are still reported.
        let mut startup = Vec::new();
        for d in &args.dynamic {
            startup.extend(["-D".to_string(), d.clone()]);
        }
        if let Some(c) = &args.config {
            startup.extend(["--config".to_string(), c.clone()]);
        }
        cairn_config::parse_startup_args(startup).map_err(|e| CliError::usage("savepoint", e.to_string()))?;
    }
    println!("Disposing savepoint '{abs}'.");
    match &args.address.address {
        Some(addr) => {
            let c = client(Endpoint::parse(addr));
            let r = c
                .post("/savepoint-disposal", &json!({ "savepoint-path": abs }))
                .map_err(|e| CliError::NotFound(format!("cannot reach the REST server at {addr}: {e}")))?;
            if r.status != 202 && r.status != 200 {
                return Err(response_error(&r));
            }
            let id = r.json()["request-id"].as_str().unwrap_or_default().to_string();
            let s = c
                .get(&format!("/savepoint-disposal/{id}"))
                .map_err(|e| CliError::Failed(format!("cannot read the disposal's outcome: {e}")))?
                .json();
            if let Some(m) = s["operation"]["failure-cause"]["stack-trace"].as_str() {
                return Err(CliError::Failed(format!("the disposal failed: {m}")));
            }
        }
        None if abs.contains("://") => {
            return Err(CliError::usage(
                "savepoint",
                format!(
                    "'{abs}' is on object storage, which the CLI does not reach itself; dispose of it \
                     through a running job that has the storage configured: add -m <its REST address>"
                ),
            ))
        }
        None => {
            // The CLI runs as the user: like the trusted socket, any Cairn
            // savepoint may be disposed of; nothing else is touched.
            let checked =
                check_trusted("savepoint path", &abs, Existence::MustExist).map_err(|e| CliError::Failed(e.message))?;
            let (files, bytes) = dir_size(&checked);
            let mut bar = Progress::new("dispose");
            bar.update(0, files, bytes);
            cairn_snapshot::dispose::dispose_savepoint(&cairn_snapshot::LocalFileStorage::new(), &checked)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            bar.update(files, files, bytes);
            bar.finish();
        }
    }
    println!("Savepoint '{abs}' disposed.");
    Ok(())
}

/// Files and bytes under a directory.
fn dir_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

// ---- checkpoint ---------------------------------------------------------------------------

pub fn checkpoint(prefix: &str, full: bool, address: Address) -> Result<(), CliError> {
    let t = target("checkpoint", prefix, &address)?;
    let kind = if full { "FULL" } else { "CONFIGURED" };
    println!("Triggering checkpoint for job {}.", t.jid);
    let id = trigger(&t, &t.path("/checkpoints"), &json!({ "checkpointType": kind }))?;
    let op = wait_operation(&t, &t.path(&format!("/checkpoints/{id}")), "checkpoint")?;
    let n = op["checkpointId"].as_u64().map(|n| n.to_string()).unwrap_or("?".into());
    println!("Checkpoint({kind}) {n} for job {} completed.", t.jid);
    Ok(())
}

// ---- stop ---------------------------------------------------------------------------------

pub fn stop(
    prefix: &str,
    dir: Option<String>,
    drain: bool,
    format: FormatType,
    address: Address,
) -> Result<(), CliError> {
    let t = target("stop", prefix, &address)?;
    stop_with_savepoint(&t, dir, drain, format).map(|_| ())
}

/// Stops `t` with a savepoint and waits until it ended; returns the
/// savepoint's location.
fn stop_with_savepoint(t: &Target, dir: Option<String>, drain: bool, format: FormatType) -> Result<String, CliError> {
    let kind = format.wire();
    let mut body = json!({ "drain": drain, "formatType": kind });
    if let Some(d) = &dir {
        body["targetDirectory"] = json!(absolute(d));
    }
    println!(
        "Suspending job \"{}\" with a {kind} savepoint{}.",
        t.jid,
        if drain { ", draining first" } else { "" }
    );
    let id = trigger(t, &t.path("/stop"), &body)?;
    let op = wait_operation(t, &t.path(&format!("/savepoints/{id}")), "savepoint")?;
    let location = op["location"].as_str().unwrap_or_default().to_string();
    println!("Savepoint completed. Path: {location}");
    match wait_terminal(t, Duration::from_secs(120))? {
        Some(state) if state == "FAILED" => Err(CliError::Failed(format!(
            "job {} failed after the savepoint; see its log",
            t.jid
        ))),
        Some(state) => {
            println!("Job {} stopped ({state}).", t.jid);
            Ok(location)
        }
        None => {
            println!("Job {} stopped.", t.jid);
            Ok(location)
        }
    }
}

// ---- rescale ------------------------------------------------------------------------------

/// Stop with a savepoint, then start the registered binary with its
/// arguments again from it at `parallelism`.
pub fn rescale(
    prefix: &str,
    parallelism: u32,
    dir: Option<String>,
    format: FormatType,
    timeout: Duration,
) -> Result<(), CliError> {
    let registry = registry()?;
    let entry = registry
        .resolve(prefix)
        .map_err(|e| resolve_error("rescale", prefix, e))?;
    let program = entry.program.clone().ok_or_else(|| {
        CliError::Failed(format!(
            "job {} did not record the binary it runs, so it cannot be started again; stop it with a savepoint \
             ('cairn stop') and start it yourself with -s <savepoint> -p {parallelism}",
            entry.jid
        ))
    })?;
    if !program.is_file() {
        return Err(CliError::Failed(format!(
            "job {}'s binary {} is no longer there, so it cannot be started again; nothing was stopped",
            entry.jid,
            program.display()
        )));
    }
    let t = Target {
        http: client(endpoint_of(&entry)),
        jid: entry.jid.clone(),
    };
    // Everything that can be refused is refused before the job stops.
    let status = send(&t, "GET", &t.path("/status"), None)?;
    if status.status != 200 {
        return Err(response_error(&status));
    }
    let state = status.json()["status"].as_str().unwrap_or_default().to_string();
    if state != "RUNNING" {
        return Err(CliError::Failed(format!(
            "job {} is {state}, not RUNNING; only a running job can be rescaled",
            t.jid
        )));
    }
    let extra = send(&t, "GET", &t.path("/cairn"), None)?.json();
    for op in extra["operators"].as_array().cloned().unwrap_or_default() {
        let max = op["maxParallelism"].as_u64().unwrap_or(u64::MAX);
        if u64::from(parallelism) > max {
            return Err(CliError::Failed(format!(
                "parallelism {parallelism} is above the max parallelism {max} of operator '{}' (uid '{}'): its \
                 state has {max} key groups and cannot be split further; choose at most {max} (the job keeps \
                 running)",
                op["name"].as_str().unwrap_or_default(),
                op["uid"].as_str().unwrap_or_default()
            )));
        }
    }
    let (mut flags, job_args) = without_restore_flags(&entry.args);
    flags.extend(["-p".to_string(), parallelism.to_string()]);
    prepare_flags(flags.clone()).map_err(|e| {
        CliError::Failed(format!(
            "the job's recorded arguments do not parse any more ({e}); nothing was stopped"
        ))
    })?;
    let location = stop_with_savepoint(&t, dir, false, format)?;
    flags.extend(["-s".to_string(), location.clone()]);
    let spec = LaunchSpec {
        program: program.clone(),
        flags: flags.clone(),
        job_args: job_args.clone(),
        cwd: entry.cwd.clone(),
        timeout,
    };
    let launched = launch(&registry, &spec).map_err(|e| {
        let mut manual = vec!["cairn run".to_string()];
        manual.extend(flags.iter().cloned());
        manual.extend(["--".to_string(), program.display().to_string()]);
        manual.extend(job_args.iter().cloned());
        CliError::Failed(format!(
            "the job stopped with savepoint {location}, but starting it again at parallelism {parallelism} failed: \
             {e}\nStart it yourself with: {}",
            manual.join(" ")
        ))
    })?;
    println!(
        "Job {} rescaled to parallelism {parallelism}: restarted from {location} as JobID {}",
        entry.jid, launched.entry.jid
    );
    println!("  REST: {}", launched.entry.url());
    println!("  log:  {}", launched.log.display());
    Ok(())
}

// ---- cancel -------------------------------------------------------------------------------

pub fn cancel(prefix: &str, dir: Option<String>, format: Option<FormatType>, address: Address) -> Result<(), CliError> {
    let t = target("cancel", prefix, &address)?;
    let mut location = None;
    match &dir {
        Some(d) => {
            let d = absolute(d);
            println!("Cancelling job {} with a savepoint to {d}.", t.jid);
            let kind = format.unwrap_or(FormatType::Canonical).wire();
            let body = json!({ "target-directory": d, "cancel-job": true, "formatType": kind });
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
    if let Some(state) = wait_terminal(&t, Duration::from_secs(120))? {
        if state != "CANCELED" {
            return Err(CliError::Failed(format!(
                "job {} ended as {state}, not CANCELED",
                t.jid
            )));
        }
    }
    match location {
        Some(loc) => println!("Cancelled job {}. Savepoint stored in {loc}.", t.jid),
        None => println!("Cancelled job {}.", t.jid),
    }
    Ok(())
}

// ---- run ----------------------------------------------------------------------------------

pub fn run(args: RunArgs) -> Result<(), CliError> {
    let mut flags: Vec<String> = Vec::new();
    if let Some(s) = &args.from_savepoint {
        flags.extend(["-s".to_string(), absolute(s)]);
    }
    if args.allow_non_restored_state {
        flags.push("-n".into());
    }
    if let Some(m) = &args.claim_mode {
        flags.extend(["--claim-mode".to_string(), m.clone()]);
    }
    if let Some(p) = &args.parallelism {
        flags.extend(["-p".to_string(), p.clone()]);
    }
    for d in &args.dynamic {
        flags.extend(["-D".to_string(), d.clone()]);
    }
    if let Some(c) = &args.config {
        flags.extend(["--config".to_string(), absolute(c)]);
    }
    let mut program = args.program.clone();
    if program.first().map(String::as_str) == Some("--") {
        program.remove(0);
    }
    if program.is_empty() {
        return Err(CliError::usage(
            "run",
            "missing the job binary: cairn run [OPTIONS] -- <BINARY> [ARGS]...",
        ));
    }
    let binary = program.remove(0);
    let mut job_args = program;
    if job_args.first().map(String::as_str) == Some("--") {
        job_args.remove(0);
    }
    let spec = LaunchSpec {
        program: PathBuf::from(&binary),
        flags,
        job_args,
        cwd: None,
        timeout: Duration::from_secs(args.timeout),
    };
    let registry = registry()?;
    let launched = launch(&registry, &spec).map_err(|e| match e {
        LaunchError::Flags(m) => CliError::usage("run", m),
        LaunchError::Failed(m) => CliError::Failed(m),
    })?;
    let entry = launched.entry;
    println!("Job has been submitted with JobID {}", entry.jid);
    println!("  name: {}", entry.name);
    println!("  pid:  {}", entry.pid);
    println!("  REST: {} (web UI at /)", entry.url());
    if let Some(s) = &entry.socket {
        println!("  socket: {}", s.display());
    }
    println!("  log:  {}", launched.log.display());
    Ok(())
}

// ---- state get ----------------------------------------------------------------------------

/// `cairn state get`: one key's current value of a queryable state.
pub fn state_get(args: crate::StateGetArgs) -> Result<(), CliError> {
    const COMMAND: &str = "state get";
    // Checked here too, so a key the shell stripped of its quotes gets a hint.
    if let Err(e) = serde_json::from_str::<Value>(&args.key) {
        let hint = if args.key.starts_with(['"', '[', '{']) || args.key.parse::<f64>().is_ok() {
            String::new()
        } else {
            format!("; a string key is written in quotes: '\"{}\"'", args.key)
        };
        return Err(CliError::usage(
            COMMAND,
            format!("KEY '{}' is not JSON ({e}){hint}", args.key),
        ));
    }
    let t = target(COMMAND, &args.job, &args.address)?;
    let path = t.path(&format!(
        "/state/{}/{}?key={}",
        cairn_rest_client::client::percent_encode(&args.uid),
        cairn_rest_client::client::percent_encode(&args.name),
        cairn_rest_client::client::percent_encode(&args.key)
    ));
    let r = send(&t, "GET", &path, None)?;
    if r.status != 200 {
        return Err(match r.status {
            400 => CliError::usage(COMMAND, r.error_message()),
            _ => response_error(&r),
        });
    }
    let answer = r.json();
    let shown = if args.json { &answer } else { &answer["value"] };
    println!("{}", serde_json::to_string_pretty(shown).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths() {
        assert_eq!(absolute("/a/b"), "/a/b");
        assert_eq!(absolute("file:///a/b"), "/a/b");
        assert_eq!(absolute("s3://bucket/sp"), "s3://bucket/sp");
        assert!(Path::new(&absolute("rel")).is_absolute());
    }
}
