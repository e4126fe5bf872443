//! `cairn dashboard`: one web UI over every job registered on this machine.
//!
//! A poller reads each live job's overview, details, checkpoints and Cairn
//! information over its trusted control socket once a second; reads are
//! answered from that cache, so a slow job never slows the page. Requests
//! for one job's other endpoints are passed through to it. Ended jobs come
//! from the registry's history (each job records how it ended), and so do
//! the job binaries the dashboard offers to restore: `POST /cairn/run` starts
//! one of them from a savepoint or retained checkpoint exactly as
//! `cairn run -s` does.
//!
//! The dashboard listens on loopback. Everything that changes a job, or
//! starts one, needs the session token printed at start (in the URL's
//! fragment, which the page keeps and sends as a bearer token).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_http::server::Options;
use cairn_http::{error_response, Handler, HttpServer, Request, Response};
use cairn_rest_client::auth::{check_bearer, is_loopback_host, is_mutating};
use cairn_rest_client::launch::{launch, without_restore_flags, LaunchError, LaunchSpec};
use cairn_rest_client::registry::{is_job_id, EndedJob};
use cairn_rest_client::{ApiError, HttpClient, Registry, RegistryEntry};
use serde_json::{json, Map, Value};

use crate::commands::endpoint_of;
use crate::CliError;

/// What the dashboard knows of one live job.
#[derive(Clone, Default)]
struct Live {
    entry: Option<RegistryEntry>,
    overview: Value,
    details: Value,
    checkpoints: Value,
    cairn: Value,
}

/// A job binary the dashboard can start again.
#[derive(Clone, Debug, PartialEq)]
struct Program {
    name: String,
    program: PathBuf,
    flags: Vec<String>,
    job_args: Vec<String>,
    cwd: Option<PathBuf>,
    last_job: String,
}

#[derive(Default)]
struct State {
    live: BTreeMap<String, Live>,
    /// What was last seen of jobs that have ended (their pages stay).
    gone: BTreeMap<String, Live>,
}

struct Dashboard {
    registry: Registry,
    token: String,
    state: Mutex<State>,
}

fn client_of(entry: &RegistryEntry, timeout: Duration) -> HttpClient {
    HttpClient::at(endpoint_of(entry)).with_timeout(timeout)
}

impl Dashboard {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every live job once.
    fn poll(&self) {
        let entries = self.registry.list();
        let mut fresh = BTreeMap::new();
        for entry in entries {
            let c = client_of(&entry, Duration::from_secs(2));
            let get = |p: &str| match c.get(p) {
                Ok(r) if r.status == 200 => r.json(),
                _ => Value::Null,
            };
            let base = format!("/jobs/{}", entry.jid);
            let overview = get("/jobs/overview")["jobs"]
                .as_array()
                .and_then(|a| a.iter().find(|j| j["jid"] == entry.jid.as_str()).cloned())
                .unwrap_or(Value::Null);
            if overview.is_null() {
                continue;
            }
            let live = Live {
                overview,
                details: get(&base),
                checkpoints: get(&format!("{base}/checkpoints")),
                cairn: get(&format!("{base}/cairn")),
                entry: Some(entry.clone()),
            };
            fresh.insert(entry.jid.clone(), live);
        }
        let mut st = self.state();
        let old = std::mem::replace(&mut st.live, fresh);
        for (jid, l) in old {
            if !st.live.contains_key(&jid) {
                st.gone.insert(jid, l);
            }
        }
        while st.gone.len() > cairn_rest_client::registry::HISTORY_LIMIT {
            let first = st.gone.keys().next().cloned();
            if let Some(k) = first {
                st.gone.remove(&k);
            }
        }
    }

    fn ended(&self) -> Vec<EndedJob> {
        let live: Vec<String> = self.state().live.keys().cloned().collect();
        self.registry
            .history()
            .into_iter()
            .filter(|e| !live.contains(&e.entry.jid))
            .collect()
    }

    fn ended_overview(e: &EndedJob) -> Value {
        json!({
            "jid": e.entry.jid,
            "name": e.entry.name,
            "state": e.state,
            "start-time": e.entry.start_time_ms,
            "end-time": e.end_time_ms,
            "duration": e.end_time_ms.saturating_sub(e.entry.start_time_ms),
            "last-modification": e.end_time_ms,
            "tasks": {},
        })
    }

    /// The binaries seen (live and ended jobs), newest first, one per
    /// distinct binary and arguments.
    fn programs(&self) -> Vec<Program> {
        let mut entries: Vec<(u64, RegistryEntry)> = self
            .state()
            .live
            .values()
            .filter_map(|l| l.entry.clone())
            .map(|e| (e.start_time_ms, e))
            .collect();
        entries.extend(
            self.registry
                .history()
                .into_iter()
                .map(|e| (e.entry.start_time_ms, e.entry)),
        );
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut out: Vec<Program> = Vec::new();
        for (_, e) in entries {
            let Some(program) = e.program.clone() else { continue };
            let (flags, job_args) = without_restore_flags(&e.args);
            if out
                .iter()
                .any(|p| p.program == program && p.flags == flags && p.job_args == job_args)
            {
                continue;
            }
            out.push(Program {
                name: e.name.clone(),
                program,
                flags,
                job_args,
                cwd: e.cwd.clone(),
                last_job: e.jid.clone(),
            });
        }
        out
    }

    /// Savepoints and retained checkpoints known from the jobs.
    fn snapshots(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut push = |path: &str, kind: &str, job: &str, name: &str| {
            if !path.is_empty() && !out.iter().any(|s| s["path"] == path) {
                out.push(json!({ "path": path, "kind": kind, "job": job, "name": name }));
            }
        };
        for e in self.registry.history() {
            if let Some(p) = &e.last_savepoint {
                push(&p.display().to_string(), "savepoint", &e.entry.jid, &e.entry.name);
            }
            if let Some(p) = &e.last_checkpoint {
                push(&p.display().to_string(), "checkpoint", &e.entry.jid, &e.entry.name);
            }
        }
        for (jid, l) in self.state().live.iter() {
            let name = l.overview["name"].as_str().unwrap_or_default().to_string();
            for s in l.cairn["savepoints"].as_array().cloned().unwrap_or_default() {
                push(s["path"].as_str().unwrap_or_default(), "savepoint", jid, &name);
            }
            if let Some(p) = l.checkpoints["latest"]["completed"]["external_path"].as_str() {
                push(p, "checkpoint", jid, &name);
            }
        }
        out
    }

    fn dispatch(&self, req: &Request) -> Result<Response, ApiError> {
        let mut segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        if segs.first() == Some(&"v1") {
            segs.remove(0);
        }
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method.as_str()
        };
        if is_mutating(method) {
            check_bearer(&self.token, req.header("authorization")).map_err(|mut e| {
                e.message = format!(
                    "{}; the dashboard's token is in the address it printed at start",
                    e.message
                );
                e
            })?;
        }
        let get_only = |ok: Result<Response, ApiError>| {
            if method == "GET" {
                ok
            } else {
                Err(ApiError::new(
                    405,
                    "METHOD_NOT_ALLOWED",
                    format!("{} is not allowed on {}; use GET", req.method, req.path()),
                ))
            }
        };
        match segs.as_slice() {
            [] => get_only(ui("")),
            [f] if cairn_http::ui::asset(f).is_some() => get_only(ui(f)),
            ["config"] => get_only(Ok(Response::json(
                200,
                &json!({
                    "refresh-interval": 1000,
                    "timezone-name": "Coordinated Universal Time",
                    "timezone-offset": 0,
                    "flink-version": "2.3",
                    "flink-revision": format!("cairn dashboard {}", env!("CARGO_PKG_VERSION")),
                    "features": { "web-submit": false, "web-cancel": true, "web-rescale": false, "web-history": true },
                }),
            ))),
            ["jobs", "overview"] => {
                let mut jobs: Vec<Value> = self.state().live.values().map(|l| l.overview.clone()).collect();
                jobs.extend(self.ended().iter().map(Self::ended_overview));
                get_only(Ok(Response::json(200, &json!({ "jobs": jobs }))))
            }
            ["jobs"] => {
                let mut jobs: Vec<Value> = self
                    .state()
                    .live
                    .values()
                    .map(|l| json!({ "id": l.overview["jid"], "status": l.overview["state"] }))
                    .collect();
                jobs.extend(
                    self.ended()
                        .iter()
                        .map(|e| json!({ "id": e.entry.jid, "status": e.state })),
                );
                get_only(Ok(Response::json(200, &json!({ "jobs": jobs }))))
            }
            ["cairn", "dashboard"] => get_only(Ok(Response::json(200, &self.overview_of_programs()))),
            ["cairn", "run"] => {
                if method != "POST" {
                    return Err(ApiError::new(405, "METHOD_NOT_ALLOWED", "use POST /cairn/run"));
                }
                self.restore(req)
            }
            ["jobs", jid, rest @ ..] => self.job_request(req, jid, rest, method),
            _ => Err(ApiError::new(
                404,
                "NOT_FOUND",
                format!("no endpoint {} {}", req.method, req.path()),
            )),
        }
    }

    fn overview_of_programs(&self) -> Value {
        let programs: Vec<Value> = self
            .programs()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({
                    "index": i,
                    "name": p.name,
                    "program": p.program.display().to_string(),
                    "flags": p.flags,
                    "args": p.job_args,
                    "cwd": p.cwd.as_ref().map(|c| c.display().to_string()),
                    "last-job": p.last_job,
                })
            })
            .collect();
        json!({ "dashboard": true, "programs": programs, "snapshots": self.snapshots() })
    }

    /// Answers or forwards a request about one job.
    fn job_request(&self, req: &Request, jid: &str, rest: &[&str], method: &str) -> Result<Response, ApiError> {
        if !is_job_id(jid) {
            return Err(ApiError::bad_request(
                "INVALID_JOB_ID",
                format!("'{jid}' is not a job id; job ids are 32 lowercase hexadecimal digits"),
            ));
        }
        let live = self.state().live.get(jid).cloned();
        let Some(live) = live else {
            // An ended job: its server may still linger (a stop's outcome is
            // read there), else what the dashboard last saw and the record
            // the job left.
            let Some(e) = self.ended().into_iter().find(|e| e.entry.jid == jid) else {
                return Err(ApiError::new(404, "JOB_NOT_FOUND", format!("Job {jid} not found")));
            };
            // Only over its socket: a TCP port may already serve another job.
            if e.entry.socket.as_ref().is_some_and(|p| p.exists()) {
                if let Ok(r) = self.forward(&e.entry, req) {
                    return Ok(r);
                }
            }
            let seen = self.state().gone.get(jid).cloned().unwrap_or_default();
            let cached = match (rest, method) {
                ([], "GET") => Some(if seen.details.is_null() {
                    Self::ended_overview(&e)
                } else {
                    let mut d = seen.details.clone();
                    d["state"] = json!(e.state);
                    d["end-time"] = json!(e.end_time_ms);
                    d
                }),
                (["status"], "GET") => Some(json!({ "status": e.state })),
                (["checkpoints"], "GET") if !seen.checkpoints.is_null() => Some(seen.checkpoints.clone()),
                (["cairn"], "GET") if !seen.cairn.is_null() => Some(seen.cairn.clone()),
                _ => None,
            };
            return cached.map(|v| Response::json(200, &v)).ok_or_else(|| {
                ApiError::new(
                    409,
                    "JOB_NOT_RUNNING",
                    format!("job {jid} ended ({}); only its last view is kept", e.state),
                )
            });
        };
        if method == "GET" && req.query.is_empty() {
            let cached = match rest {
                [] => Some(&live.details),
                ["checkpoints"] => Some(&live.checkpoints),
                ["cairn"] => Some(&live.cairn),
                _ => None,
            };
            if let Some(v) = cached.filter(|v| !v.is_null()) {
                return Ok(Response::json(200, v));
            }
        }
        let Some(entry) = live.entry else {
            return Err(ApiError::new(404, "JOB_NOT_FOUND", format!("Job {jid} not found")));
        };
        self.forward(&entry, req)
            .map_err(|e| ApiError::new(502, "JOB_UNREACHABLE", format!("cannot reach job {jid}: {e}")))
    }

    /// Passes a request to the job's own server (over its socket).
    fn forward(&self, entry: &RegistryEntry, req: &Request) -> std::io::Result<Response> {
        let target = req.target.strip_prefix("/v1").unwrap_or(&req.target);
        let body = if req.body.is_empty() {
            None
        } else {
            Some(req.body.clone())
        };
        let r = client_of(entry, Duration::from_secs(10)).request_bytes(&req.method, target, body)?;
        let content_type = if r
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics"))
        {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "application/json; charset=utf-8"
        };
        let mut out = Response::bytes(r.status, content_type, r.body.clone());
        if let Some(code) = r.error_code() {
            out = out.with_header(cairn_rest_client::ERROR_CODE_HEADER, code);
        }
        Ok(out)
    }

    /// `POST /cairn/run`: start a known binary from a snapshot.
    fn restore(&self, req: &Request) -> Result<Response, ApiError> {
        let body: Map<String, Value> = match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(ApiError::bad_request(
                    "INVALID_JSON",
                    "the body must be a JSON object: {\"program\": <index>, \"savepointPath\": \"...\", \"parallelism\": n, \"allowNonRestoredState\": false}",
                ))
            }
        };
        let accepted = [
            "program",
            "savepointPath",
            "parallelism",
            "allowNonRestoredState",
            "claimMode",
        ];
        if let Some(k) = body.keys().find(|k| !accepted.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                "UNKNOWN_FIELD",
                format!("unknown field '{k}'; accepted fields: {}", accepted.join(", ")),
            ));
        }
        let programs = self.programs();
        let index = body.get("program").and_then(Value::as_u64).ok_or_else(|| {
            ApiError::invalid_field(
                "program",
                "must be the index of a program listed by GET /cairn/dashboard",
            )
        })?;
        let program = programs.get(index as usize).cloned().ok_or_else(|| {
            ApiError::invalid_field(
                "program",
                format!("is {index}, but {} programs are known", programs.len()),
            )
        })?;
        let mut flags = program.flags.clone();
        match body.get("savepointPath") {
            None | Some(Value::Null) => {}
            Some(Value::String(p)) if p.trim().is_empty() => {}
            Some(Value::String(p)) => {
                let checked = cairn_rest_client::paths::check_trusted(
                    "savepointPath",
                    p.trim(),
                    cairn_rest_client::paths::Existence::MustExist,
                )?;
                flags.extend(["-s".to_string(), checked.display().to_string()]);
            }
            Some(_) => return Err(ApiError::invalid_field("savepointPath", "must be a string")),
        }
        match body.get("parallelism") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let n = v
                    .as_u64()
                    .filter(|n| *n >= 1 && *n <= 32768)
                    .ok_or_else(|| ApiError::invalid_field("parallelism", "must be a whole number from 1 to 32768"))?;
                flags.extend(["-p".to_string(), n.to_string()]);
            }
        }
        if body
            .get("allowNonRestoredState")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            flags.push("-n".into());
        }
        if let Some(m) = body.get("claimMode").and_then(Value::as_str) {
            flags.extend(["--claim-mode".to_string(), m.to_string()]);
        }
        let spec = LaunchSpec {
            program: program.program.clone(),
            flags,
            job_args: program.job_args.clone(),
            cwd: program.cwd.clone(),
            timeout: Duration::from_secs(60),
        };
        let launched = launch(&self.registry, &spec).map_err(|e| match e {
            LaunchError::Flags(m) => ApiError::bad_request("INVALID_FIELD", m),
            LaunchError::Failed(m) => ApiError::new(500, "START_FAILED", m),
        })?;
        self.poll();
        Ok(Response::json(
            200,
            &json!({ "jobid": launched.entry.jid, "log": launched.log.display().to_string() }),
        ))
    }
}

fn ui(path: &str) -> Result<Response, ApiError> {
    cairn_http::ui::response(path).ok_or_else(|| ApiError::new(404, "NOT_FOUND", format!("no file {path}")))
}

impl Handler for Dashboard {
    fn handle(&self, request: &Request) -> Response {
        match self.dispatch(request) {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    }
}

/// Runs the dashboard until the process is interrupted (Ctrl-C, a signal).
#[allow(
    clippy::infinite_loop,
    reason = "the dashboard serves until the process is interrupted"
)]
pub fn run(bind: &str, port: u16, token: Option<String>) -> Result<(), CliError> {
    let registry = crate::commands::registry()?;
    let token = token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| cairn_rest_client::random_hex(32));
    let loopback = is_loopback_host(bind);
    let listener =
        std::net::TcpListener::bind((bind.trim_start_matches('[').trim_end_matches(']'), port)).map_err(|e| {
            CliError::Failed(format!(
                "cannot listen on {bind}:{port}: {e}; choose another --port (0: any free port)"
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("cannot read the bound address: {e}")))?;
    let dashboard = Arc::new(Dashboard {
        registry,
        token: token.clone(),
        state: Mutex::new(State::default()),
    });
    dashboard.poll();
    let options = Options {
        local_hosts_only: loopback,
        ..Options::default()
    };
    let _server = HttpServer::start(dashboard.clone(), Some(listener), None, options)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let shown = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    println!(
        "Cairn dashboard for the jobs under {}",
        dashboard.registry.home().display()
    );
    println!("  open http://{shown}/#token={token}");
    println!("  (the token is needed for actions; Ctrl-C stops the dashboard)");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        dashboard.poll();
    }
}
