//! Routing and handlers: one [`Api`] per served job turns a [`Request`] into
//! a [`Response`] without touching sockets, so every endpoint and every
//! error case is testable in-process.
//!
//! Shapes follow Flink's REST API where the concept exists (`jid`, `state`,
//! `request-id`, `status: {id}`, `operation: {location | failure-cause}`,
//! checkpoint statistics with `counts`/`summary`/`latest`/`history`).
//! Errors are `{"errors": [message], "code": "STABLE_CODE"}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_config::Configuration;
use cairn_coordinator::control::{
    AfterSavepoint, CheckpointConfigView, CheckpointRequestKind, CheckpointStats, CheckpointsOverview, JobClient,
    JobInfo, OperationStatus, SavepointRequest, SnapshotFormat, SnapshotStatus,
};
use cairn_snapshot::{LocalFileStorage, SnapshotError, Storage};
use serde_json::{json, Map, Value};

use crate::auth::{check_bearer, configured_token, is_mutating};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::metrics::{self, status_name};
use crate::paths::{AllowedRoots, Existence};
use crate::registry::is_job_id;

/// What an operation id was created for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Savepoint,
    Checkpoint,
}

#[derive(Default)]
struct Book {
    kinds: HashMap<String, OpKind>,
    /// Savepoint disposals: `None` = succeeded, `Some(message)` = failed.
    disposals: BTreeMap<String, Option<String>>,
    /// Stop/cancel-with-savepoint operations whose final status no client
    /// has read yet (the server lingers for them when the job ends).
    unread_final: HashSet<String>,
}

/// The REST API of one job.
pub struct Api {
    client: JobClient,
    roots: AllowedRoots,
    token: Option<String>,
    storage: Arc<dyn Storage>,
    book: Mutex<Book>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The routes; job and trigger ids are still raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Index,
    Config,
    Metrics,
    Jobs,
    JobsOverview,
    Job(&'a str),
    JobConfig(&'a str),
    Savepoints(&'a str),
    SavepointStatus(&'a str, &'a str),
    Stop(&'a str),
    Checkpoints(&'a str),
    CheckpointConfig(&'a str),
    CheckpointDetails(&'a str, &'a str),
    CheckpointStatus(&'a str, &'a str),
    Disposal,
    DisposalStatus(&'a str),
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];

fn route<'a>(segs: &[&'a str]) -> Option<(Route<'a>, &'static [&'static str])> {
    Some(match segs {
        [] => (Route::Index, GET),
        ["config"] | ["jobmanager", "config"] => (Route::Config, GET),
        ["metrics"] => (Route::Metrics, GET),
        ["jobs"] => (Route::Jobs, GET),
        ["jobs", "overview"] => (Route::JobsOverview, GET),
        ["jobs", j] => (Route::Job(j), &["GET", "PATCH"]),
        ["jobs", j, "config"] => (Route::JobConfig(j), GET),
        ["jobs", j, "savepoints"] => (Route::Savepoints(j), POST),
        ["jobs", j, "savepoints", t] => (Route::SavepointStatus(j, t), GET),
        ["jobs", j, "stop"] => (Route::Stop(j), POST),
        ["jobs", j, "checkpoints"] => (Route::Checkpoints(j), &["GET", "POST"]),
        ["jobs", j, "checkpoints", "config"] => (Route::CheckpointConfig(j), GET),
        ["jobs", j, "checkpoints", "details", c] => (Route::CheckpointDetails(j, c), GET),
        ["jobs", j, "checkpoints", t] => (Route::CheckpointStatus(j, t), GET),
        ["savepoint-disposal"] => (Route::Disposal, POST),
        ["savepoint-disposal", t] => (Route::DisposalStatus(t), GET),
        _ => return None,
    })
}

/// The endpoints, for `GET /` and for "not found" hints.
pub const ENDPOINTS: &[&str] = &[
    "GET /config",
    "GET /metrics",
    "GET /jobs",
    "GET /jobs/overview",
    "GET /jobs/:jobid",
    "PATCH /jobs/:jobid?mode=cancel",
    "GET /jobs/:jobid/config",
    "POST /jobs/:jobid/savepoints",
    "GET /jobs/:jobid/savepoints/:triggerid",
    "POST /jobs/:jobid/stop",
    "POST /jobs/:jobid/checkpoints",
    "GET /jobs/:jobid/checkpoints",
    "GET /jobs/:jobid/checkpoints/:triggerid",
    "GET /jobs/:jobid/checkpoints/config",
    "GET /jobs/:jobid/checkpoints/details/:checkpointid",
    "POST /savepoint-disposal",
    "GET /savepoint-disposal/:triggerid",
];

impl Api {
    /// The API of the job behind `client`, configured by the job's configuration
    /// (allowed path roots, token).
    pub fn new(client: JobClient, config: &Configuration) -> Api {
        Api {
            client,
            roots: AllowedRoots::from_config(config),
            token: configured_token(config),
            storage: Arc::new(LocalFileStorage::new()),
            book: Mutex::new(Book::default()),
        }
    }

    /// Whether mutating calls need a token.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The job client.
    pub fn client(&self) -> &JobClient {
        &self.client
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a stop/cancel-with-savepoint reached its final status and no
    /// client has read it yet.
    pub fn has_unread_final_status(&self) -> bool {
        let ids: Vec<String> = self.book().unread_final.iter().cloned().collect();
        ids.iter().any(|id| {
            self.client
                .operation(id)
                .is_some_and(|s| !matches!(s, OperationStatus::InProgress))
        })
    }

    /// Answers a request. Never panics on bad input.
    pub fn handle(&self, req: &Request) -> Response {
        match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => e.response(),
        }
    }

    fn dispatch(&self, req: &Request) -> Result<Response, ApiError> {
        let mut segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        if segs.first() == Some(&"v1") {
            segs.remove(0);
        }
        let Some((route, allowed)) = route(&segs) else {
            return Err(ApiError::new(
                404,
                "NOT_FOUND",
                format!("no endpoint {} {}; GET / lists the endpoints", req.method, req.path()),
            ));
        };
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method.as_str()
        };
        if !allowed.contains(&method) {
            let e = ApiError::new(
                405,
                "METHOD_NOT_ALLOWED",
                format!(
                    "{} is not allowed on {}; use {}",
                    req.method,
                    req.path(),
                    allowed.join(" or ")
                ),
            );
            return Ok(e.response().with_header("Allow", &allowed.join(", ")));
        }
        if is_mutating(method) {
            if let Some(token) = &self.token {
                check_bearer(token, req.header("authorization"))?;
            }
        }
        match (route, method) {
            (Route::Index, _) => Ok(Response::json(
                200,
                &json!({ "cairn-version": env!("CARGO_PKG_VERSION"), "endpoints": ENDPOINTS }),
            )),
            (Route::Config, _) => Ok(Response::json(200, &self.config_list())),
            (Route::Metrics, _) => Ok(Response::prometheus(metrics::render(
                &self.client.info(),
                &self.client.metrics(),
                &self.client.checkpoints(),
                now_ms(),
            ))),
            (Route::Jobs, _) => {
                let info = self.client.info();
                Ok(Response::json(
                    200,
                    &json!({ "jobs": [{ "id": info.job_id, "status": status_name(info.status) }] }),
                ))
            }
            (Route::JobsOverview, _) => {
                let info = self.client.info();
                Ok(Response::json(200, &json!({ "jobs": [job_overview(&info, now_ms())] })))
            }
            (Route::Job(j), "GET") => {
                let info = self.job(j)?;
                Ok(Response::json(200, &job_details(&info, now_ms())))
            }
            (Route::Job(j), _) => self.cancel(j, req),
            (Route::JobConfig(j), _) => {
                let info = self.job(j)?;
                Ok(Response::json(200, &self.job_config(&info)))
            }
            (Route::Savepoints(j), _) => self.trigger_savepoint(j, req, false),
            (Route::Stop(j), _) => self.trigger_savepoint(j, req, true),
            (Route::SavepointStatus(j, t), _) => self.operation_status(j, t, OpKind::Savepoint),
            (Route::Checkpoints(j), "GET") => {
                self.job(j)?;
                Ok(Response::json(200, &checkpoints_json(&self.client.checkpoints())))
            }
            (Route::Checkpoints(j), _) => self.trigger_checkpoint(j, req),
            (Route::CheckpointStatus(j, t), _) => self.operation_status(j, t, OpKind::Checkpoint),
            (Route::CheckpointConfig(j), _) => {
                self.job(j)?;
                Ok(Response::json(
                    200,
                    &checkpoint_config_json(&self.client.checkpoint_config(), &self.client.config()),
                ))
            }
            (Route::CheckpointDetails(j, c), _) => {
                self.job(j)?;
                let id: u64 = c.parse().map_err(|_| {
                    ApiError::bad_request(
                        "INVALID_CHECKPOINT_ID",
                        format!("'{c}' is not a checkpoint id; use the number of a checkpoint"),
                    )
                })?;
                match self.client.checkpoint(id) {
                    Some(s) => Ok(Response::json(200, &checkpoint_json(&s))),
                    None => Err(ApiError::new(
                        404,
                        "CHECKPOINT_NOT_FOUND",
                        format!(
                            "checkpoint {id} is not in the job's checkpoint history (it keeps the latest ones; see GET /jobs/{j}/checkpoints)"
                        ),
                    )),
                }
            }
            (Route::Disposal, _) => self.dispose(req),
            (Route::DisposalStatus(t), _) => self.disposal_status(t),
        }
    }

    /// The job's info if `jid` is its id.
    fn job(&self, jid: &str) -> Result<JobInfo, ApiError> {
        if !is_job_id(jid) {
            return Err(ApiError::bad_request(
                "INVALID_JOB_ID",
                format!("'{jid}' is not a job id; job ids are 32 lowercase hexadecimal digits"),
            ));
        }
        let info = self.client.info();
        if info.job_id != jid {
            return Err(ApiError::new(
                404,
                "JOB_NOT_FOUND",
                format!("job {jid} is not served here (this server serves job {})", info.job_id),
            ));
        }
        Ok(info)
    }

    fn cancel(&self, jid: &str, req: &Request) -> Result<Response, ApiError> {
        self.job(jid)?;
        match req.query_param("mode") {
            None | Some("cancel") => {}
            Some("stop") => {
                return Err(ApiError::bad_request(
                    "INVALID_PARAMETER",
                    "mode=stop is not supported; stop with a savepoint through POST /jobs/:jobid/stop",
                ))
            }
            Some(other) => {
                return Err(ApiError::bad_request(
                    "INVALID_PARAMETER",
                    format!("query parameter 'mode' is '{other}'; the only accepted value is 'cancel'"),
                ))
            }
        }
        self.client.cancel()?;
        Ok(Response::json(202, &json!({})))
    }

    fn trigger_savepoint(&self, jid: &str, req: &Request, stop: bool) -> Result<Response, ApiError> {
        self.job(jid)?;
        let (dir_field, fields): (&str, &[&str]) = if stop {
            (
                "targetDirectory",
                &["targetDirectory", "drain", "formatType", "triggerId"],
            )
        } else {
            (
                "target-directory",
                &["target-directory", "cancel-job", "formatType", "triggerId"],
            )
        };
        let body = body_object(req, fields)?;
        let target = match opt_str(&body, dir_field)? {
            Some(raw) => Some(self.roots.check(dir_field, raw, Existence::MayBeMissing)?),
            None => None,
        };
        let format = match opt_str(&body, "formatType")? {
            None => SnapshotFormat::Canonical,
            Some(f) if f.eq_ignore_ascii_case("canonical") => SnapshotFormat::Canonical,
            Some(f) if f.eq_ignore_ascii_case("native") => SnapshotFormat::Native,
            Some(f) => {
                return Err(ApiError::invalid_field(
                    "formatType",
                    format!("is '{f}'; use CANONICAL or NATIVE"),
                ))
            }
        };
        let then = if stop {
            AfterSavepoint::Stop {
                drain: opt_bool(&body, "drain")?.unwrap_or(false),
            }
        } else if opt_bool(&body, "cancel-job")?.unwrap_or(false) {
            AfterSavepoint::Cancel
        } else {
            AfterSavepoint::KeepRunning
        };
        let trigger = trigger_id(&body)?;
        let id = self.client.trigger_savepoint(
            SavepointRequest {
                target_directory: target,
                format,
                then,
            },
            trigger,
        )?;
        let mut book = self.book();
        book.kinds.insert(id.clone(), OpKind::Savepoint);
        if then != AfterSavepoint::KeepRunning {
            book.unread_final.insert(id.clone());
        }
        Ok(Response::json(202, &json!({ "request-id": id })))
    }

    fn trigger_checkpoint(&self, jid: &str, req: &Request) -> Result<Response, ApiError> {
        self.job(jid)?;
        let body = body_object(req, &["checkpointType", "triggerId"])?;
        let kind = match opt_str(&body, "checkpointType")? {
            None => CheckpointRequestKind::Configured,
            Some(t) if t.eq_ignore_ascii_case("configured") => CheckpointRequestKind::Configured,
            Some(t) if t.eq_ignore_ascii_case("full") => CheckpointRequestKind::Full,
            Some(t) if t.eq_ignore_ascii_case("incremental") => {
                return Err(ApiError::invalid_field(
                    "checkpointType",
                    "is INCREMENTAL, which cannot be forced; use CONFIGURED (incremental if execution.checkpointing.incremental is set) or FULL",
                ))
            }
            Some(t) => {
                return Err(ApiError::invalid_field(
                    "checkpointType",
                    format!("is '{t}'; use CONFIGURED or FULL"),
                ))
            }
        };
        let trigger = trigger_id(&body)?;
        let id = self.client.trigger_checkpoint(kind, trigger)?;
        self.book().kinds.insert(id.clone(), OpKind::Checkpoint);
        Ok(Response::json(202, &json!({ "request-id": id })))
    }

    fn operation_status(&self, jid: &str, tid: &str, kind: OpKind) -> Result<Response, ApiError> {
        self.job(jid)?;
        let recorded = self.book().kinds.get(tid).copied();
        let status = match (self.client.operation(tid), recorded) {
            (Some(_), Some(k)) if k != kind => None,
            (s, _) => s,
        };
        let what = match kind {
            OpKind::Savepoint => "savepoint",
            OpKind::Checkpoint => "checkpoint",
        };
        let Some(status) = status else {
            return Err(ApiError::new(
                404,
                "TRIGGER_NOT_FOUND",
                format!("no {what} operation with trigger id '{tid}' for job {jid}"),
            ));
        };
        if !matches!(status, OperationStatus::InProgress) {
            self.book().unread_final.remove(tid);
        }
        Ok(Response::json(200, &operation_json(&status, kind)))
    }

    fn dispose(&self, req: &Request) -> Result<Response, ApiError> {
        let body = body_object(req, &["savepoint-path"])?;
        let Some(raw) = opt_str(&body, "savepoint-path")? else {
            return Err(ApiError::bad_request(
                "MISSING_FIELD",
                "field 'savepoint-path' is required: the savepoint directory to dispose of",
            ));
        };
        let path = self.roots.check("savepoint-path", raw, Existence::MustExist)?;
        if self.roots.is_root(&path) {
            return Err(ApiError::bad_request(
                "NOT_A_SAVEPOINT",
                format!(
                    "'{}' is a configured directory, not a savepoint inside it; give the savepoint's own directory",
                    path.display()
                ),
            ));
        }
        // Checked and deleted right away, so problems are a 4xx/5xx of this
        // call; the trigger id keeps Flink's asynchronous protocol working.
        cairn_snapshot::dispose::dispose_savepoint(self.storage.as_ref(), &path).map_err(disposal_error)?;
        let id = cairn_snapshot::layout::IdGenerator::from_entropy().hex(32);
        self.book().disposals.insert(id.clone(), None);
        Ok(Response::json(202, &json!({ "request-id": id })))
    }

    fn disposal_status(&self, tid: &str) -> Result<Response, ApiError> {
        let book = self.book();
        let Some(outcome) = book.disposals.get(tid) else {
            return Err(ApiError::new(
                404,
                "TRIGGER_NOT_FOUND",
                format!("no savepoint disposal with trigger id '{tid}'"),
            ));
        };
        let operation = match outcome {
            None => json!({}),
            Some(message) => json!({ "failure-cause": failure_cause(message) }),
        };
        Ok(Response::json(
            200,
            &json!({ "status": { "id": "COMPLETED" }, "operation": operation }),
        ))
    }

    fn config_list(&self) -> Value {
        Value::Array(
            self.client
                .config()
                .into_iter()
                .map(|(k, v)| {
                    let v = redact(&k, v);
                    json!({ "key": k, "value": v })
                })
                .collect(),
        )
    }

    fn job_config(&self, info: &JobInfo) -> Value {
        let config = self.client.config();
        let parallelism: u64 = config
            .get("parallelism.default")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let user: Map<String, Value> = config
            .into_iter()
            .map(|(k, v)| {
                let v = redact(&k, v);
                (k, Value::String(v))
            })
            .collect();
        json!({
            "jid": info.job_id,
            "name": info.name,
            "execution-config": {
                "execution-mode": "PIPELINED",
                "job-parallelism": parallelism,
                "object-reuse-mode": false,
                "user-config": user,
            }
        })
    }
}

/// Hides values of keys that look secret.
fn redact(key: &str, value: String) -> String {
    let k = key.to_ascii_lowercase();
    if ["token", "password", "secret"].iter().any(|s| k.contains(s)) {
        "******".to_string()
    } else {
        value
    }
}

fn disposal_error(e: SnapshotError) -> ApiError {
    match e {
        SnapshotError::MissingFile { .. } => ApiError::new(404, "PATH_NOT_FOUND", e.to_string()),
        SnapshotError::Io { .. } => ApiError::new(500, "STORAGE_ERROR", e.to_string()),
        _ => ApiError::bad_request("NOT_A_SAVEPOINT", e.to_string()),
    }
}

/// The body as a JSON object with only `accepted` fields (an empty body is `{}`).
fn body_object(req: &Request, accepted: &[&str]) -> Result<Map<String, Value>, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "INVALID_JSON",
            format!("the request body must be a JSON object, not {}", type_name(&value)),
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !accepted.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "UNKNOWN_FIELD",
            format!("unknown field '{unknown}'; accepted fields: {}", accepted.join(", ")),
        ));
    }
    Ok(map)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt_str<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("must be a string, not {}", type_name(other)),
        )),
    }
}

fn opt_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("must be true or false, not {}", type_name(other)),
        )),
    }
}

fn trigger_id(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match opt_str(body, "triggerId")? {
        None => Ok(None),
        Some(t @ ("config" | "details")) => Err(ApiError::invalid_field(
            "triggerId",
            format!("'{t}' is reserved (it names an endpoint); choose another id"),
        )),
        Some(t)
            if !t.is_empty()
                && t.len() <= 64
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(Some(t.to_string()))
        }
        Some(t) => Err(ApiError::invalid_field(
            "triggerId",
            format!("is '{t}'; use 1 to 64 letters, digits, '-' or '_' (Flink uses 32 hex digits)"),
        )),
    }
}

fn failure_cause(message: &str) -> Value {
    json!({ "class": "cairn.OperationFailed", "message": message, "stack-trace": message })
}

fn operation_json(status: &OperationStatus, kind: OpKind) -> Value {
    match status {
        OperationStatus::InProgress => json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }),
        OperationStatus::Completed {
            location,
            checkpoint_id,
        } => {
            let operation = match kind {
                OpKind::Savepoint => json!({
                    "location": location.as_ref().map(|p| p.display().to_string()),
                    "checkpointId": checkpoint_id,
                }),
                OpKind::Checkpoint => json!({ "checkpointId": checkpoint_id }),
            };
            json!({ "status": { "id": "COMPLETED" }, "operation": operation })
        }
        OperationStatus::Failed { message } => {
            let cause = failure_cause(message);
            let operation = match kind {
                OpKind::Savepoint => json!({ "failure-cause": cause }),
                // Flink's checkpoint trigger info spells it `failureCause`.
                OpKind::Checkpoint => json!({ "failure-cause": cause, "failureCause": cause }),
            };
            json!({ "status": { "id": "COMPLETED" }, "operation": operation })
        }
    }
}

fn job_overview(info: &JobInfo, now: u64) -> Value {
    let end = info.end_time_ms.map_or(-1, |e| e as i64);
    let duration = info.end_time_ms.unwrap_or(now).saturating_sub(info.start_time_ms);
    json!({
        "jid": info.job_id,
        "name": info.name,
        "state": status_name(info.status),
        "start-time": info.start_time_ms,
        "end-time": end,
        "duration": duration,
        "last-modification": info.end_time_ms.unwrap_or(info.start_time_ms),
    })
}

fn job_details(info: &JobInfo, now: u64) -> Value {
    let mut v = job_overview(info, now);
    let obj = v.as_object_mut().expect("an object");
    let state = status_name(info.status);
    obj.insert("isStoppable".into(), json!(true));
    obj.insert("job-type".into(), json!("STREAMING"));
    obj.insert("now".into(), json!(now));
    obj.insert(
        "maxParallelism".into(),
        json!(info.vertices.iter().map(|v| v.max_parallelism).max().unwrap_or(0)),
    );
    obj.insert(
        "vertices".into(),
        Value::Array(
            info.vertices
                .iter()
                .map(|v| {
                    json!({
                        "id": v.id,
                        "uid": v.uid,
                        "name": v.name,
                        "parallelism": v.parallelism,
                        "maxParallelism": v.max_parallelism,
                        "status": state,
                    })
                })
                .collect(),
        ),
    );
    obj.insert("restarts".into(), json!(info.restarts));
    obj.insert("failure-cause".into(), json!(info.last_failure));
    obj.insert(
        "restored-from".into(),
        json!(info.restored_from.as_ref().map(|p| p.display().to_string())),
    );
    v
}

/// One checkpoint's statistics, Flink's `CheckpointStatistics` shape plus
/// Cairn's per-phase durations.
pub fn checkpoint_json(s: &CheckpointStats) -> Value {
    let (class, status) = match s.status {
        SnapshotStatus::InProgress => ("in_progress", "IN_PROGRESS"),
        SnapshotStatus::Completed => ("completed", "COMPLETED"),
        SnapshotStatus::Failed => ("failed", "FAILED"),
    };
    let mut v = json!({
        "className": class,
        "id": s.id,
        "status": status,
        "is_savepoint": s.is_savepoint,
        "checkpoint_type": if s.is_savepoint { "SAVEPOINT" } else { "CHECKPOINT" },
        "trigger_timestamp": s.trigger_timestamp_ms,
        "latest_ack_timestamp": s.end_timestamp_ms.map_or(-1, |t| t as i64),
        "state_size": s.state_size_bytes,
        "checkpointed_size": s.state_size_bytes,
        "end_to_end_duration": s.duration_ms,
        "sync_duration": s.sync_duration_ms,
        "async_duration": s.async_duration_ms,
        "alignment_duration": s.alignment_duration_ms,
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": 0,
        "num_subtasks": s.num_subtasks,
        "num_acknowledged_subtasks": s.num_acknowledged_subtasks,
        "tasks": {},
    });
    let obj = v.as_object_mut().expect("an object");
    match s.status {
        SnapshotStatus::Completed => {
            obj.insert(
                "external_path".into(),
                json!(s.external_path.as_ref().map(|p| p.display().to_string())),
            );
            obj.insert("discarded".into(), json!(false));
        }
        SnapshotStatus::Failed => {
            obj.insert("failure_timestamp".into(), json!(s.end_timestamp_ms.unwrap_or(0)));
            obj.insert("failure_message".into(), json!(s.failure_message));
        }
        SnapshotStatus::InProgress => {}
    }
    v
}

/// Nearest-rank quantile of sorted values (0 for none).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(values: impl Iterator<Item = u64>) -> Value {
    let mut v: Vec<f64> = values.map(|x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let avg = if v.is_empty() {
        0
    } else {
        (v.iter().sum::<f64>() / v.len() as f64).round() as u64
    };
    let q = |p| quantile(&v, p) as u64;
    json!({
        "min": v.first().copied().unwrap_or(0.0) as u64,
        "max": v.last().copied().unwrap_or(0.0) as u64,
        "avg": avg,
        "p50": q(0.5),
        "p90": q(0.9),
        "p95": q(0.95),
        "p99": q(0.99),
        "p999": q(0.999),
    })
}

/// `GET /jobs/:jobid/checkpoints`: counts, a summary over the completed
/// checkpoints of the history, the latest ones, and the history newest first.
pub fn checkpoints_json(o: &CheckpointsOverview) -> Value {
    let completed: Vec<&CheckpointStats> = o
        .history
        .iter()
        .filter(|s| s.status == SnapshotStatus::Completed)
        .collect();
    let sizes = || completed.iter().map(|s| s.state_size_bytes);
    json!({
        "counts": {
            "restored": o.counts.restored,
            "total": o.counts.total,
            "in_progress": o.counts.in_progress,
            "completed": o.counts.completed,
            "failed": o.counts.failed,
        },
        "summary": {
            "state_size": summary(sizes()),
            "checkpointed_size": summary(sizes()),
            "end_to_end_duration": summary(completed.iter().map(|s| s.duration_ms)),
            "sync_duration": summary(completed.iter().map(|s| s.sync_duration_ms)),
            "async_duration": summary(completed.iter().map(|s| s.async_duration_ms)),
            "alignment_duration": summary(completed.iter().map(|s| s.alignment_duration_ms)),
        },
        "latest": {
            "completed": o.latest_completed.as_ref().map(checkpoint_json),
            "savepoint": o.latest_savepoint.as_ref().map(checkpoint_json),
            "failed": o.latest_failed.as_ref().map(checkpoint_json),
            "restored": o.latest_restored.as_ref().map(|r| json!({
                "id": r.id,
                "restore_timestamp": r.restore_timestamp_ms,
                "is_savepoint": r.is_savepoint,
                "external_path": r.external_path.display().to_string(),
            })),
        },
        "history": o.history.iter().rev().map(checkpoint_json).collect::<Vec<_>>(),
    })
}

/// `GET /jobs/:jobid/checkpoints/config`, Flink's shape.
pub fn checkpoint_config_json(c: &CheckpointConfigView, config: &BTreeMap<String, String>) -> Value {
    let (enabled, delete) = match c.externalization.as_str() {
        "RETAIN_ON_CANCELLATION" => (true, false),
        "DELETE_ON_CANCELLATION" => (true, true),
        _ => (false, true),
    };
    json!({
        "mode": c.mode,
        "interval": c.interval_ms,
        "timeout": c.timeout_ms,
        "min_pause": c.min_pause_ms,
        "max_concurrent": c.max_concurrent,
        "tolerable_failed_checkpoints": c.tolerable_failed_checkpoints,
        "externalization": { "enabled": enabled, "delete_on_cancellation": delete },
        "externalized_checkpoint_retention": c.externalization,
        "state_backend": config.get("state.backend.type").map_or("hashmap", String::as_str),
        "checkpoint_storage": c.checkpoint_storage.as_ref().map(|p| p.display().to_string()),
        "savepoint_dir": c.savepoint_dir.as_ref().map(|p| p.display().to_string()),
        "num_retained": c.num_retained,
        "unaligned_checkpoints": false,
        "checkpoints_after_tasks_finish": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let j = "0123456789abcdef0123456789abcdef";
        assert_eq!(route(&["jobs", "overview"]).unwrap().0, Route::JobsOverview);
        assert_eq!(route(&["jobs", j]).unwrap().0, Route::Job(j));
        assert_eq!(
            route(&["jobs", j, "checkpoints", "config"]).unwrap().0,
            Route::CheckpointConfig(j)
        );
        assert_eq!(
            route(&["jobs", j, "checkpoints", "details", "4"]).unwrap().0,
            Route::CheckpointDetails(j, "4")
        );
        assert_eq!(
            route(&["jobs", j, "checkpoints", "abc"]).unwrap().0,
            Route::CheckpointStatus(j, "abc")
        );
        assert_eq!(
            route(&["savepoint-disposal", "x"]).unwrap().0,
            Route::DisposalStatus("x")
        );
        assert_eq!(route(&["jobmanager", "config"]).unwrap().0, Route::Config);
        assert!(route(&["jobs", j, "nope"]).is_none());
        assert!(route(&["favicon.ico"]).is_none());
    }

    #[test]
    fn quantiles_and_summaries() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.99), 4.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        let s = summary([30u64, 10, 20].into_iter());
        assert_eq!(s["min"], 10);
        assert_eq!(s["max"], 30);
        assert_eq!(s["avg"], 20);
        assert_eq!(s["p50"], 20);
        let s = summary(std::iter::empty());
        assert_eq!(s["max"], 0);
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("rest.auth-token", "x".into()), "******");
        assert_eq!(redact("rest.port", "1".into()), "1");
    }

    #[test]
    fn body_parsing() {
        let r = |b: &str| Request::new("POST", "/x", b.as_bytes()).unwrap();
        assert!(body_object(&r(""), &["a"]).unwrap().is_empty());
        assert!(body_object(&r("  \n"), &["a"]).unwrap().is_empty());
        assert_eq!(body_object(&r("{"), &["a"]).unwrap_err().code, "INVALID_JSON");
        assert_eq!(body_object(&r("[1]"), &["a"]).unwrap_err().code, "INVALID_JSON");
        let e = body_object(&r("{\"b\":1}"), &["a", "c"]).unwrap_err();
        assert_eq!(e.code, "UNKNOWN_FIELD");
        assert!(e.message.contains("'b'") && e.message.contains("a, c"), "{}", e.message);
        let m = body_object(&r("{\"a\":\"x\",\"c\":true}"), &["a", "c"]).unwrap();
        assert_eq!(opt_str(&m, "a").unwrap(), Some("x"));
        assert_eq!(opt_bool(&m, "c").unwrap(), Some(true));
        assert_eq!(opt_bool(&m, "a").unwrap_err().code, "INVALID_FIELD");
        assert_eq!(opt_str(&m, "c").unwrap_err().code, "INVALID_FIELD");
        let m = body_object(&r("{\"triggerId\":\"../x\"}"), &["triggerId"]).unwrap();
        assert_eq!(trigger_id(&m).unwrap_err().code, "INVALID_FIELD");
        let m = body_object(&r("{\"triggerId\":\"config\"}"), &["triggerId"]).unwrap();
        assert!(trigger_id(&m).unwrap_err().message.contains("reserved"));
    }
}
