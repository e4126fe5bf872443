//! Routing and handlers: one [`Api`] per served job turns a
//! [`Request`] into a [`Response`] without touching sockets, so every
//! endpoint and every error case is testable in-process.
//!
//! Flink's endpoints answer in Flink's exact shapes (`flink`); Cairn's own
//! additions are under `/jobs/:jobid/cairn`. Errors are Flink's
//! `{"errors": [message]}` with Cairn's stable code in the
//! `cairn-error-code` header.
//!
//! Trust: a request over the job's owner-only Unix socket
//! ([`Peer::Local`]) may name any savepoint directory and dispose of any
//! Cairn savepoint; TCP requests must name paths inside the allowed roots,
//! and with a token configured their mutating calls must carry it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_config::Configuration;
use cairn_coordinator::control::{
    AfterSavepoint, CheckpointRequestKind, ControlError, ControlErrorCode, JobClient, JobInfo, OperationStatus,
    QueryError, SavepointRequest, SnapshotFormat, SnapshotStatus,
};
use cairn_http::{error_response, Handler, Request, Response};
use cairn_rest_client::auth::{check_bearer, configured_token, is_mutating};
use cairn_rest_client::paths::{check_trusted, AllowedRoots, Existence};
use cairn_rest_client::registry::is_job_id;
use cairn_rest_client::ApiError;
use cairn_snapshot::{LocalFileStorage, SnapshotError, Storage};
use serde_json::{json, Map, Value};

use crate::flink::{self, OpKind, PlanEdge, Vertex};
use crate::metrics::{self, status_name};

#[derive(Default)]
struct Book {
    kinds: HashMap<String, OpKind>,
    /// Savepoint disposals: `None` = succeeded, `Some(message)` = failed.
    disposals: BTreeMap<String, Option<String>>,
    /// Stop/cancel-with-savepoint operations whose final status no client
    /// has read yet (the server lingers for them when the job ends).
    unread_final: HashSet<String>,
    /// A client cancelled the job and has not read how it ended yet (the
    /// server lingers for it, as for `unread_final`).
    cancel_unread: bool,
}

/// The REST API of one job.
pub struct Api {
    client: JobClient,
    roots: AllowedRoots,
    token: Option<String>,
    storage: Arc<dyn Storage>,
    book: Mutex<Book>,
    topology: Topology,
}

/// The job graph as the plan shows it: edges between operators (with
/// Flink's partitioning names) and the chains operators run in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub edges: Vec<PlanEdge>,
    /// Operator ids per chain (one task per chain and subtask), in order.
    pub chains: Vec<Vec<String>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn control_error(e: ControlError) -> ApiError {
    match e.code {
        ControlErrorCode::BadRequest => ApiError::new(400, "BAD_REQUEST", e.message),
        ControlErrorCode::JobNotRunning => ApiError::new(409, "JOB_NOT_RUNNING", e.message),
        ControlErrorCode::Conflict => ApiError::new(409, "DUPLICATE_TRIGGER_ID", e.message),
    }
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::UnknownOperator(m) => ApiError::new(404, "UNKNOWN_OPERATOR", m),
        QueryError::UnknownState(m) => ApiError::new(404, "UNKNOWN_STATE", m),
        QueryError::InvalidKey(m) => ApiError::new(400, "INVALID_KEY", m),
        QueryError::NotRunning(m) => ApiError::new(409, "JOB_NOT_RUNNING", m),
        QueryError::Unavailable(m) | QueryError::NotHere(m) => ApiError::new(503, "STATE_UNAVAILABLE", m),
        QueryError::Failed(m) => ApiError::new(500, "STATE_READ_FAILED", m),
    }
}

/// The routes; ids are still raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Ui(&'a str),
    DashboardConfig,
    ClusterConfig,
    Overview,
    Prometheus,
    Jobs,
    JobsOverview,
    JobsMetrics,
    Job(&'a str),
    JobCairn(&'a str),
    JobStatus(&'a str),
    JobResult(&'a str),
    JobExceptions(&'a str),
    JobPlan(&'a str),
    JobConfig(&'a str),
    JobMetrics(&'a str),
    Vertex(&'a str, &'a str),
    VertexMetrics(&'a str, &'a str),
    VertexSubtasksMetrics(&'a str, &'a str),
    SubtaskMetrics(&'a str, &'a str, &'a str),
    VertexWatermarks(&'a str, &'a str),
    VertexBackpressure(&'a str, &'a str),
    Savepoints(&'a str),
    SavepointStatus(&'a str, &'a str),
    Stop(&'a str),
    Checkpoints(&'a str),
    CheckpointConfig(&'a str),
    CheckpointDetails(&'a str, &'a str),
    CheckpointStatus(&'a str, &'a str),
    State(&'a str, &'a str, &'a str),
    Disposal,
    DisposalStatus(&'a str),
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];

fn route<'a>(segs: &[&'a str]) -> Option<(Route<'a>, &'static [&'static str])> {
    Some(match segs {
        [] => (Route::Ui(""), GET),
        [f] if cairn_http::ui::asset(f).is_some() => (Route::Ui(f), GET),
        ["config"] => (Route::DashboardConfig, GET),
        ["jobmanager", "config"] => (Route::ClusterConfig, GET),
        ["overview"] => (Route::Overview, GET),
        ["metrics"] => (Route::Prometheus, GET),
        ["jobs"] => (Route::Jobs, GET),
        ["jobs", "overview"] => (Route::JobsOverview, GET),
        ["jobs", "metrics"] => (Route::JobsMetrics, GET),
        ["jobs", j] => (Route::Job(j), &["GET", "PATCH"]),
        ["jobs", j, "cairn"] => (Route::JobCairn(j), GET),
        ["jobs", j, "status"] => (Route::JobStatus(j), GET),
        ["jobs", j, "execution-result"] => (Route::JobResult(j), GET),
        ["jobs", j, "exceptions"] => (Route::JobExceptions(j), GET),
        ["jobs", j, "plan"] => (Route::JobPlan(j), GET),
        ["jobs", j, "config"] => (Route::JobConfig(j), GET),
        ["jobs", j, "metrics"] => (Route::JobMetrics(j), GET),
        ["jobs", j, "vertices", v] => (Route::Vertex(j, v), GET),
        ["jobs", j, "vertices", v, "metrics"] => (Route::VertexMetrics(j, v), GET),
        ["jobs", j, "vertices", v, "subtasks", "metrics"] => (Route::VertexSubtasksMetrics(j, v), GET),
        ["jobs", j, "vertices", v, "subtasks", s, "metrics"] => (Route::SubtaskMetrics(j, v, s), GET),
        ["jobs", j, "vertices", v, "watermarks"] => (Route::VertexWatermarks(j, v), GET),
        ["jobs", j, "vertices", v, "backpressure"] => (Route::VertexBackpressure(j, v), GET),
        ["jobs", j, "savepoints"] => (Route::Savepoints(j), POST),
        ["jobs", j, "savepoints", t] => (Route::SavepointStatus(j, t), GET),
        ["jobs", j, "stop"] => (Route::Stop(j), POST),
        ["jobs", j, "checkpoints"] => (Route::Checkpoints(j), &["GET", "POST"]),
        ["jobs", j, "checkpoints", "config"] => (Route::CheckpointConfig(j), GET),
        ["jobs", j, "checkpoints", "details", c] => (Route::CheckpointDetails(j, c), GET),
        ["jobs", j, "checkpoints", t] => (Route::CheckpointStatus(j, t), GET),
        ["jobs", j, "state", uid, name] => (Route::State(j, uid, name), GET),
        ["savepoint-disposal"] => (Route::Disposal, POST),
        ["savepoint-disposal", t] => (Route::DisposalStatus(t), GET),
        _ => return None,
    })
}

/// The endpoints (for `GET /` with `Accept: application/json`).
pub const ENDPOINTS: &[&str] = &[
    "GET /  (the web UI)",
    "GET /config",
    "GET /overview",
    "GET /jobmanager/config",
    "GET /metrics  (Prometheus)",
    "GET /jobs",
    "GET /jobs/overview",
    "GET /jobs/metrics",
    "GET /jobs/:jobid",
    "PATCH /jobs/:jobid?mode=cancel",
    "GET /jobs/:jobid/cairn",
    "GET /jobs/:jobid/status",
    "GET /jobs/:jobid/execution-result",
    "GET /jobs/:jobid/exceptions",
    "GET /jobs/:jobid/plan",
    "GET /jobs/:jobid/config",
    "GET /jobs/:jobid/metrics",
    "GET /jobs/:jobid/vertices/:vertexid",
    "GET /jobs/:jobid/vertices/:vertexid/metrics",
    "GET /jobs/:jobid/vertices/:vertexid/subtasks/metrics",
    "GET /jobs/:jobid/vertices/:vertexid/subtasks/:subtaskindex/metrics",
    "GET /jobs/:jobid/vertices/:vertexid/watermarks",
    "GET /jobs/:jobid/vertices/:vertexid/backpressure",
    "POST /jobs/:jobid/savepoints",
    "GET /jobs/:jobid/savepoints/:triggerid",
    "POST /jobs/:jobid/stop",
    "POST /jobs/:jobid/checkpoints",
    "GET /jobs/:jobid/checkpoints",
    "GET /jobs/:jobid/checkpoints/:triggerid",
    "GET /jobs/:jobid/checkpoints/config",
    "GET /jobs/:jobid/checkpoints/details/:checkpointid",
    "GET /jobs/:jobid/state/:uid/:name?key=<key as JSON>  (live state query)",
    "POST /savepoint-disposal",
    "GET /savepoint-disposal/:triggerid",
];

impl Handler for Api {
    fn handle(&self, request: &Request) -> Response {
        let response = match self.dispatch(request) {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        // Calls that change the job are worth a line at the default level;
        // reads only when debugging.
        if is_mutating(&request.method) {
            tracing::info!(
                method = %request.method,
                path = %request.path(),
                local_socket = request.peer.is_trusted(),
                status = response.status,
                "REST request"
            );
        } else {
            tracing::debug!(
                method = %request.method,
                path = %request.path(),
                local_socket = request.peer.is_trusted(),
                status = response.status,
                "REST request"
            );
        }
        response
    }
}

impl Api {
    /// The API of the job behind `client`, configured by the job's
    /// configuration (allowed path roots, token), showing `topology` as its
    /// plan.
    pub fn new(client: JobClient, config: &Configuration, topology: Topology) -> Api {
        Api {
            client,
            roots: AllowedRoots::from_config(config),
            token: configured_token(config),
            storage: Arc::new(LocalFileStorage::new()),
            book: Mutex::new(Book::default()),
            topology,
        }
    }

    /// Dispose of savepoints through `storage` (the job's, so savepoints on
    /// object storage can be disposed of too) instead of local files.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Api {
        self.storage = storage;
        self
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
        if self.book().cancel_unread {
            return true;
        }
        let ids: Vec<String> = self.book().unread_final.iter().cloned().collect();
        ids.iter().any(|id| {
            self.client
                .operation(id)
                .is_some_and(|s| !matches!(s, OperationStatus::InProgress))
        })
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
                format!(
                    "no endpoint {} {}; GET / with 'Accept: application/json' lists the endpoints",
                    req.method,
                    req.path()
                ),
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
            return Ok(error_response(&e).with_header("Allow", &allowed.join(", ")));
        }
        // State values are the job's data: reading them needs the token too.
        let guarded = is_mutating(method) || matches!(route, Route::State(..));
        if guarded && !req.peer.is_trusted() {
            if let Some(token) = &self.token {
                check_bearer(token, req.header("authorization"))?;
            }
        }
        let now = now_ms();
        let ok = |v: Value| Ok(Response::json(200, &v));
        match (route, method) {
            (Route::Ui(path), _) => {
                let wants_json = req
                    .header("accept")
                    .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
                if path.is_empty() && wants_json {
                    return ok(json!({ "cairn-version": env!("CARGO_PKG_VERSION"), "endpoints": ENDPOINTS }));
                }
                cairn_http::ui::response(path).ok_or_else(|| ApiError::new(404, "NOT_FOUND", format!("no file {path}")))
            }
            (Route::DashboardConfig, _) => ok(dashboard_config()),
            (Route::ClusterConfig, _) => ok(self.config_list()),
            (Route::Overview, _) => ok(self.cluster_overview()),
            (Route::Prometheus, _) => Ok(Response::bytes(
                200,
                metrics::CONTENT_TYPE,
                metrics::render(
                    &self.client.info(),
                    &self.client.metrics(),
                    &self.client.checkpoints(),
                    now,
                )
                .into_bytes(),
            )),
            (Route::Jobs, _) => {
                let info = self.client.info();
                ok(json!({ "jobs": [{ "id": info.job_id, "status": status_name(info.status) }] }))
            }
            (Route::JobsOverview, _) => ok(json!({ "jobs": [flink::job_overview(&self.client.info(), now)] })),
            (Route::JobsMetrics, _) => self.aggregated_job_metrics(req),
            (Route::Job(j), "GET") => {
                let info = self.job(j)?;
                let metrics = self.client.metrics();
                ok(flink::job_details(
                    &info,
                    &metrics,
                    now,
                    flink::plan(&info, &self.topology.edges),
                ))
            }
            (Route::Job(j), _) => self.cancel(j, req),
            (Route::JobCairn(j), _) => ok(self.cairn_info(&self.job(j)?)),
            (Route::JobStatus(j), _) => ok(flink::job_status(&self.job(j)?)),
            (Route::JobResult(j), _) => ok(flink::execution_result(&self.job(j)?, now)),
            (Route::JobExceptions(j), _) => ok(flink::exceptions(&self.job(j)?, now)),
            (Route::JobPlan(j), _) => {
                let info = self.job(j)?;
                ok(json!({ "plan": flink::plan(&info, &self.topology.edges) }))
            }
            (Route::JobConfig(j), _) => ok(self.job_config(&self.job(j)?)),
            (Route::JobMetrics(j), _) => {
                let info = self.job(j)?;
                ok(select_metrics(req, &self.job_metric_values(&info)))
            }
            (Route::Vertex(j, v), _) => {
                let info = self.job(j)?;
                let vertex = find_vertex(&info, v)?;
                ok(self.vertex_details(&info, &vertex, now))
            }
            (Route::VertexMetrics(j, v), _) => {
                let info = self.job(j)?;
                let vertex = find_vertex(&info, v)?;
                ok(select_metrics(req, &self.vertex_metric_values(&vertex)))
            }
            (Route::VertexSubtasksMetrics(j, v), _) => {
                let info = self.job(j)?;
                let vertex = find_vertex(&info, v)?;
                let per: Vec<Vec<(String, f64)>> = (0..vertex.parallelism)
                    .map(|s| self.subtask_metric_values(&vertex, s))
                    .collect();
                aggregate(req, &per)
            }
            (Route::SubtaskMetrics(j, v, s), _) => {
                let info = self.job(j)?;
                let vertex = find_vertex(&info, v)?;
                let index: u32 = s.parse().ok().filter(|i| *i < vertex.parallelism).ok_or_else(|| {
                    ApiError::new(
                        404,
                        "SUBTASK_NOT_FOUND",
                        format!(
                            "vertex {} has subtasks 0 to {}; '{s}' is not one of them",
                            vertex.id,
                            vertex.parallelism.saturating_sub(1)
                        ),
                    )
                })?;
                ok(select_metrics(req, &self.subtask_metric_values(&vertex, index)))
            }
            (Route::VertexWatermarks(j, v), _) => {
                let info = self.job(j)?;
                let vertex = find_vertex(&info, v)?;
                let list: Vec<Value> = (0..vertex.parallelism)
                    .map(|s| {
                        json!({
                            "id": format!("{s}.currentInputWatermark"),
                            "value": self.subtask_watermark(&vertex, s).to_string(),
                        })
                    })
                    .collect();
                ok(Value::Array(list))
            }
            (Route::VertexBackpressure(j, v), _) => {
                let info = self.job(j)?;
                let vertex = find_vertex(&info, v)?;
                ok(self.backpressure(&vertex, now))
            }
            (Route::Savepoints(j), _) => self.trigger_savepoint(j, req, false),
            (Route::Stop(j), _) => self.trigger_savepoint(j, req, true),
            (Route::SavepointStatus(j, t), _) => self.operation_status(j, t, OpKind::Savepoint),
            (Route::Checkpoints(j), "GET") => {
                self.job(j)?;
                ok(flink::checkpoints(&self.client.checkpoints()))
            }
            (Route::Checkpoints(j), _) => self.trigger_checkpoint(j, req),
            (Route::CheckpointStatus(j, t), _) => self.operation_status(j, t, OpKind::Checkpoint),
            (Route::CheckpointConfig(j), _) => {
                self.job(j)?;
                let config = self.client.config();
                let backend = config.get("state.backend.type").map_or("hashmap", String::as_str);
                ok(flink::checkpoint_config(&self.client.checkpoint_config(), backend))
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
                    Some(s) => ok(flink::checkpoint(&s)),
                    None => Err(ApiError::new(
                        404,
                        "CHECKPOINT_NOT_FOUND",
                        format!(
                            "checkpoint {id} is not in the job's checkpoint history (it keeps the latest ones; see GET /jobs/{j}/checkpoints)"
                        ),
                    )),
                }
            }
            (Route::State(j, uid, name), _) => self.query_state(j, uid, name, req),
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
        if info.status.is_terminal() {
            // Whoever cancelled now can learn how the job ended.
            self.book().cancel_unread = false;
        }
        if info.job_id != jid {
            return Err(ApiError::new(
                404,
                "JOB_NOT_FOUND",
                format!("Job {jid} not found (this server serves job {})", info.job_id),
            ));
        }
        Ok(info)
    }

    /// `GET /jobs/:jobid/state/:uid/:name?key=<JSON>`: a live state query,
    /// answered by the subtask that owns the key.
    fn query_state(&self, jid: &str, uid: &str, name: &str, req: &Request) -> Result<Response, ApiError> {
        self.job(jid)?;
        let key = req.query_param("key").ok_or_else(|| {
            ApiError::bad_request(
                "MISSING_KEY",
                "give the key as JSON in the query parameter 'key', URL-encoded: ?key=%22alice%22 for the string \
                 \"alice\", ?key=42 for a number",
            )
        })?;
        let a = self.client.query_state(uid, name, key).map_err(query_error)?;
        Ok(Response::json(
            200,
            &json!({
                "job-id": jid,
                "uid": a.uid,
                "operator": a.operator,
                "state": a.state,
                "state-name": a.state_name,
                "kind": a.kind,
                "value-type": a.value_type,
                "key": a.key,
                "key-group": a.key_group,
                "subtask": a.subtask,
                "value": a.value,
            }),
        ))
    }

    fn cancel(&self, jid: &str, req: &Request) -> Result<Response, ApiError> {
        self.job(jid)?;
        match req.query_param("mode") {
            None => {}
            Some(m) if m.eq_ignore_ascii_case("cancel") => {}
            Some(m) if m.eq_ignore_ascii_case("stop") => {
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
        self.client.cancel().map_err(control_error)?;
        self.book().cancel_unread = true;
        Ok(Response::json(202, &json!({})))
    }

    /// A path from a request: anywhere for the trusted socket, inside the
    /// allowed roots over TCP.
    fn check_path(
        &self,
        req: &Request,
        field: &str,
        raw: &str,
        existence: Existence,
    ) -> Result<std::path::PathBuf, ApiError> {
        if req.peer.is_trusted() {
            check_trusted(field, raw, existence)
        } else {
            self.roots.check(field, raw, existence)
        }
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
            Some(raw) => Some(self.check_path(req, dir_field, raw, Existence::MayBeMissing)?),
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
        let id = self
            .client
            .trigger_savepoint(
                SavepointRequest {
                    target_directory: target,
                    format,
                    then,
                },
                trigger,
            )
            .map_err(control_error)?;
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
        let id = self.client.trigger_checkpoint(kind, trigger).map_err(control_error)?;
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
        Ok(Response::json(200, &flink::operation(&status, kind)))
    }

    fn dispose(&self, req: &Request) -> Result<Response, ApiError> {
        let body = body_object(req, &["savepoint-path"])?;
        let Some(raw) = opt_str(&body, "savepoint-path")? else {
            return Err(ApiError::bad_request(
                "MISSING_FIELD",
                "field 'savepoint-path' is required: the savepoint directory to dispose of",
            ));
        };
        let path = self.check_path(req, "savepoint-path", raw, Existence::MustExist)?;
        if !req.peer.is_trusted() && self.roots.is_root(&path) {
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
        let id = cairn_rest_client::random_hex(32);
        self.book().disposals.insert(id.clone(), None);
        Ok(Response::json(200, &json!({ "request-id": id })))
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
            Some(message) => json!({ "failure-cause": flink::failure_cause(message) }),
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

    fn cluster_overview(&self) -> Value {
        let info = self.client.info();
        let slots: u32 = flink::vertices(&info).iter().map(|v| v.parallelism).max().unwrap_or(0);
        let count = |s: cairn_coordinator::control::JobStatus| u32::from(info.status == s);
        json!({
            "taskmanagers": 1,
            "slots-total": slots,
            "slots-available": 0,
            "jobs-running": u32::from(!info.status.is_terminal()),
            "jobs-finished": count(cairn_coordinator::control::JobStatus::Finished),
            "jobs-cancelled": count(cairn_coordinator::control::JobStatus::Cancelled),
            "jobs-failed": count(cairn_coordinator::control::JobStatus::Failed),
            "flink-version": flink::FLINK_API_VERSION,
            "flink-commit": format!("cairn-{}", env!("CARGO_PKG_VERSION")),
        })
    }

    fn job_config(&self, info: &JobInfo) -> Value {
        let config = self.client.config();
        let parallelism: u64 = config
            .get("parallelism.default")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let restart = config
            .get("restart-strategy.type")
            .cloned()
            .unwrap_or_else(|| "fixed-delay".to_string());
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
                "restart-strategy": restart,
                "job-parallelism": parallelism,
                "object-reuse-mode": false,
                "user-config": user,
            }
        })
    }

    /// `GET /jobs/:jobid/cairn`: what Flink's shapes have no room for.
    fn cairn_info(&self, info: &JobInfo) -> Value {
        let cps = self.client.checkpoints();
        let metrics = self.client.metrics();
        let vertices = flink::vertices(info);
        let cc = self.client.checkpoint_config();
        let phases: Vec<Value> = cps
            .history
            .iter()
            .rev()
            .map(|s| {
                json!({
                    "id": s.id,
                    "sync_duration": s.sync_duration_ms,
                    "async_duration": s.async_duration_ms,
                    "alignment_duration": s.alignment_duration_ms,
                    "unaligned": s.is_unaligned,
                    "persisted_data": s.persisted_data_bytes,
                })
            })
            .collect();
        let completed: Vec<_> = cps
            .history
            .iter()
            .filter(|s| s.status == SnapshotStatus::Completed)
            .collect();
        json!({
            "jid": info.job_id,
            "cairn-version": env!("CARGO_PKG_VERSION"),
            "restarts": info.restarts,
            "failure-cause": info.last_failure,
            "failure-code": info.last_failure_code,
            "restored-from": info.restored_from.as_ref().map(|p| p.display().to_string()),
            "operators": info.vertices.iter().map(|v| {
                let subtasks: Vec<&cairn_coordinator::control::SubtaskMetrics> =
                    metrics.subtasks.iter().filter(|s| s.operator_id == v.id).collect();
                let sum = |f: &dyn Fn(&cairn_coordinator::control::SubtaskMetrics) -> f64| subtasks.iter().map(|s| f(s)).sum::<f64>();
                let n = subtasks.len().max(1) as f64;
                json!({
                    "id": v.id,
                    "uid": v.uid,
                    "name": v.name,
                    "parallelism": v.parallelism,
                    "maxParallelism": v.max_parallelism,
                    "vertex": vertices.iter().find(|x| x.operators.iter().any(|o| o.id == v.id)).map(|x| x.id.clone()),
                    "records-in": sum(&|s| s.records_in as f64),
                    "records-out": sum(&|s| s.records_out as f64),
                    "records-in-per-second": sum(&|s| s.records_in_per_second),
                    "records-out-per-second": sum(&|s| s.records_out_per_second),
                    "busy-ms-per-second": sum(&|s| s.busy_ms_per_second) / n,
                    "backpressured-ms-per-second": sum(&|s| s.backpressured_ms_per_second) / n,
                    "idle-ms-per-second": sum(&|s| s.idle_ms_per_second) / n,
                    "watermark": subtasks.iter().filter_map(|s| s.watermark).min(),
                    "subtasks": subtasks.iter().map(|s| json!({
                        "subtask": s.subtask,
                        "records-in": s.records_in,
                        "records-out": s.records_out,
                        "records-in-per-second": s.records_in_per_second,
                        "records-out-per-second": s.records_out_per_second,
                        "busy-ms-per-second": s.busy_ms_per_second,
                        "backpressured-ms-per-second": s.backpressured_ms_per_second,
                        "idle-ms-per-second": s.idle_ms_per_second,
                        "watermark": s.watermark,
                        "in-flight-batches-limit": s.in_flight_limit,
                        "in-flight-records-limit": s.in_flight_records_limit,
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
            "edges": self.topology.edges.iter().map(|e| json!({
                "source": e.source, "target": e.target, "partitioning": e.ship_strategy,
            })).collect::<Vec<_>>(),
            "chains": self.topology.chains,
            "checkpoint-phases": phases,
            "checkpoint-phase-summary": {
                "sync_duration": flink::summary(completed.iter().map(|s| s.sync_duration_ms)),
                "async_duration": flink::summary(completed.iter().map(|s| s.async_duration_ms)),
                "alignment_duration": flink::summary(completed.iter().map(|s| s.alignment_duration_ms)),
            },
            "checkpoint-config": {
                "externalization": cc.externalization,
                "savepoint-dir": cc.savepoint_dir.as_ref().map(|p| p.display().to_string()),
                "checkpoint-dir": cc.checkpoint_storage.as_ref().map(|p| p.display().to_string()),
                "num-retained": cc.num_retained,
                "unaligned": cc.unaligned,
                "aligned-checkpoint-timeout": cc.aligned_checkpoint_timeout_ms,
            },
            "savepoints": cps.history.iter().rev().filter(|s| s.is_savepoint && s.status == SnapshotStatus::Completed).map(|s| json!({
                "id": s.id,
                "path": s.external_path.as_ref().map(|p| p.display().to_string()),
                "trigger_timestamp": s.trigger_timestamp_ms,
                "state_size": s.state_size_bytes,
            })).collect::<Vec<_>>(),
        })
    }

    /// Job-level metrics, Flink's names.
    fn job_metric_values(&self, info: &JobInfo) -> Vec<(String, f64)> {
        let m = self.client.metrics();
        let c = self.client.checkpoints();
        let now = now_ms();
        let mut v = vec![
            ("numRestarts".to_string(), info.restarts as f64),
            (
                "uptime".to_string(),
                info.end_time_ms.unwrap_or(now).saturating_sub(info.start_time_ms) as f64,
            ),
            ("numberOfCompletedCheckpoints".to_string(), c.counts.completed as f64),
            ("numberOfFailedCheckpoints".to_string(), c.counts.failed as f64),
            ("numberOfInProgressCheckpoints".to_string(), c.counts.in_progress as f64),
            ("totalNumberOfCheckpoints".to_string(), c.counts.total as f64),
            ("numRecordsInSources".to_string(), m.source_records as f64),
            ("numRecordsInSourcesPerSecond".to_string(), m.source_records_per_second),
        ];
        if let Some(l) = &c.latest_completed {
            v.push(("lastCheckpointDuration".into(), l.duration_ms as f64));
            v.push(("lastCheckpointSize".into(), l.state_size_bytes as f64));
            v.push(("lastCheckpointFullSize".into(), l.state_size_bytes as f64));
        }
        if let Some(r) = &c.latest_restored {
            v.push(("lastCheckpointRestoreTimestamp".into(), r.restore_timestamp_ms as f64));
            v.push(("restoredCheckpointId".into(), r.id as f64));
        }
        v
    }

    /// Flink's per-subtask metrics of a vertex, named as Flink names them
    /// (`numRecordsIn`, `busyTimeMsPerSecond`, ...), plus each operator's
    /// own (`<operator name>.numRecordsIn`).
    fn subtask_metric_values(&self, vertex: &Vertex, subtask: u32) -> Vec<(String, f64)> {
        let m = self.client.metrics();
        let find = |id: &str| {
            m.subtasks
                .iter()
                .find(|s| s.operator_id == id && s.subtask == subtask)
                .cloned()
        };
        let head = vertex.operators.first().and_then(|o| find(&o.id)).unwrap_or_default();
        let tail = vertex.operators.last().and_then(|o| find(&o.id)).unwrap_or_default();
        let mut v = vec![
            ("numRecordsIn".to_string(), head.records_in as f64),
            ("numRecordsOut".to_string(), tail.records_out as f64),
            ("numRecordsInPerSecond".to_string(), head.records_in_per_second),
            ("numRecordsOutPerSecond".to_string(), tail.records_out_per_second),
            ("busyTimeMsPerSecond".to_string(), head.busy_ms_per_second),
            ("idleTimeMsPerSecond".to_string(), head.idle_ms_per_second),
            (
                "backPressuredTimeMsPerSecond".to_string(),
                head.backpressured_ms_per_second,
            ),
            ("accumulatedBusyTime".to_string(), head.busy_ms as f64),
            ("accumulatedIdleTime".to_string(), head.idle_ms as f64),
            ("accumulatedBackPressuredTime".to_string(), head.backpressured_ms as f64),
            (
                "currentInputWatermark".to_string(),
                head.watermark.unwrap_or(i64::MIN) as f64,
            ),
        ];
        // Cairn debloats batches (credits and their size), not buffers of bytes.
        if let Some(limit) = head.in_flight_limit {
            v.push(("inFlightBatchesLimit".to_string(), limit as f64));
        }
        if let Some(limit) = head.in_flight_records_limit {
            v.push(("inFlightRecordsLimit".to_string(), limit as f64));
        }
        for op in &vertex.operators {
            let s = find(&op.id).unwrap_or_default();
            v.push((format!("{}.numRecordsIn", op.name), s.records_in as f64));
            v.push((format!("{}.numRecordsOut", op.name), s.records_out as f64));
            v.push((format!("{}.numRecordsInPerSecond", op.name), s.records_in_per_second));
            v.push((format!("{}.numRecordsOutPerSecond", op.name), s.records_out_per_second));
            v.push((
                format!("{}.currentInputWatermark", op.name),
                s.watermark.unwrap_or(i64::MIN) as f64,
            ));
        }
        v
    }

    /// A vertex's metrics: every subtask's, prefixed `<subtask>.` as in Flink.
    fn vertex_metric_values(&self, vertex: &Vertex) -> Vec<(String, f64)> {
        (0..vertex.parallelism)
            .flat_map(|s| {
                self.subtask_metric_values(vertex, s)
                    .into_iter()
                    .map(move |(n, v)| (format!("{s}.{n}"), v))
            })
            .collect()
    }

    fn subtask_watermark(&self, vertex: &Vertex, subtask: u32) -> i64 {
        let m = self.client.metrics();
        vertex
            .operators
            .first()
            .and_then(|o| {
                m.subtasks
                    .iter()
                    .find(|s| s.operator_id == o.id && s.subtask == subtask)
            })
            .and_then(|s| s.watermark)
            .unwrap_or(i64::MIN)
    }

    fn vertex_details(&self, info: &JobInfo, vertex: &Vertex, now: u64) -> Value {
        let state = flink::execution_state(info.status);
        let end = info.end_time_ms.map_or(-1, |e| e as i64);
        let duration = info.end_time_ms.unwrap_or(now).saturating_sub(info.start_time_ms);
        let metrics = self.client.metrics();
        let subtasks: Vec<Value> = (0..vertex.parallelism)
            .map(|s| {
                json!({
                    "subtask": s,
                    "status": state,
                    "attempt": info.restarts,
                    "endpoint": "localhost",
                    "start-time": info.start_time_ms,
                    "end-time": end,
                    "duration": duration,
                    "metrics": flink::io_metrics(&flink::subtask_io(vertex, &metrics, s)),
                    "taskmanager-id": "cairn",
                    "status-duration": {},
                })
            })
            .collect();
        json!({
            "id": vertex.id,
            "name": vertex.name,
            "parallelism": vertex.parallelism,
            "maxParallelism": vertex.max_parallelism,
            "now": now,
            "subtasks": subtasks,
        })
    }

    fn backpressure(&self, vertex: &Vertex, now: u64) -> Value {
        let metrics = self.client.metrics();
        let level_of = |ratio: f64| {
            if ratio > 0.5 {
                "high"
            } else if ratio > 0.1 {
                "low"
            } else {
                "ok"
            }
        };
        let mut worst = 0.0f64;
        let subtasks: Vec<Value> = (0..vertex.parallelism)
            .map(|s| {
                let head = vertex
                    .operators
                    .first()
                    .and_then(|o| {
                        metrics
                            .subtasks
                            .iter()
                            .find(|x| x.operator_id == o.id && x.subtask == s)
                    })
                    .cloned()
                    .unwrap_or_default();
                let ratio = (head.backpressured_ms_per_second / 1000.0).clamp(0.0, 1.0);
                worst = worst.max(ratio);
                json!({
                    "subtask": s,
                    "attempt-number": 0,
                    "backpressureLevel": level_of(ratio),
                    "ratio": ratio,
                    "idleRatio": (head.idle_ms_per_second / 1000.0).clamp(0.0, 1.0),
                    "busyRatio": (head.busy_ms_per_second / 1000.0).clamp(0.0, 1.0),
                })
            })
            .collect();
        json!({
            "status": "ok",
            "backpressureLevel": level_of(worst),
            "end-timestamp": now,
            "subtasks": subtasks,
        })
    }

    /// `GET /jobs/metrics`: metrics aggregated over the jobs (here: one).
    fn aggregated_job_metrics(&self, req: &Request) -> Result<Response, ApiError> {
        let info = self.client.info();
        if let Some(jobs) = req.query_param("jobs") {
            for j in jobs.split(',').map(str::trim).filter(|j| !j.is_empty()) {
                if !is_job_id(j) {
                    return Err(ApiError::bad_request(
                        "INVALID_JOB_ID",
                        format!("'{j}' in 'jobs' is not a job id"),
                    ));
                }
                if j != info.job_id {
                    return Ok(Response::json(200, &json!([])));
                }
            }
        }
        aggregate(req, &[self.job_metric_values(&info)])
    }
}

fn find_vertex(info: &JobInfo, id: &str) -> Result<Vertex, ApiError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "INVALID_VERTEX_ID",
            format!("'{id}' is not a vertex id; vertex ids are 32 hexadecimal digits (see GET /jobs/:jobid)"),
        ));
    }
    flink::vertices(info)
        .into_iter()
        .find(|v| v.id.eq_ignore_ascii_case(id))
        .ok_or_else(|| {
            ApiError::new(
                404,
                "VERTEX_NOT_FOUND",
                format!(
                    "job {} has no vertex {id}; GET /jobs/{} lists them",
                    info.job_id, info.job_id
                ),
            )
        })
}

fn fmt_metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Flink's metric listing: without `get`, the names (`[{"id"}]`); with
/// `get=a,b`, those metrics' values (`[{"id", "value"}]`, unknown ones left
/// out).
fn select_metrics(req: &Request, values: &[(String, f64)]) -> Value {
    match req.query_param("get") {
        None => Value::Array(values.iter().map(|(n, _)| json!({ "id": n })).collect()),
        Some(names) => {
            let wanted: Vec<&str> = names.split(',').map(str::trim).collect();
            Value::Array(
                values
                    .iter()
                    .filter(|(n, _)| wanted.contains(&n.as_str()))
                    .map(|(n, v)| json!({ "id": n, "value": fmt_metric(*v) }))
                    .collect(),
            )
        }
    }
}

/// Flink's aggregated metrics (`[{"id", "min", "max", "avg", "sum"}]`) over
/// several sources of the same metrics; `agg` picks the aggregations.
fn aggregate(req: &Request, per: &[Vec<(String, f64)>]) -> Result<Response, ApiError> {
    let names: Vec<String> = per
        .first()
        .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let Some(get) = req.query_param("get") else {
        return Ok(Response::json(
            200,
            &Value::Array(names.iter().map(|n| json!({ "id": n })).collect()),
        ));
    };
    let aggs: Vec<String> = match req.query_param("agg") {
        None => vec!["min".into(), "max".into(), "avg".into(), "sum".into()],
        Some(a) => {
            let mut out = Vec::new();
            for x in a.split(',').map(|s| s.trim().to_ascii_lowercase()) {
                if !["min", "max", "avg", "sum", "skew"].contains(&x.as_str()) {
                    return Err(ApiError::bad_request(
                        "INVALID_PARAMETER",
                        format!("aggregation '{x}' is not one of min, max, sum, avg, skew"),
                    ));
                }
                out.push(x);
            }
            out
        }
    };
    let wanted: Vec<&str> = get.split(',').map(str::trim).collect();
    let mut out = Vec::new();
    for name in names.iter().filter(|n| wanted.contains(&n.as_str())) {
        let vals: Vec<f64> = per
            .iter()
            .filter_map(|v| v.iter().find(|(n, _)| n == name).map(|(_, x)| *x))
            .collect();
        if vals.is_empty() {
            continue;
        }
        let sum: f64 = vals.iter().sum();
        let avg = sum / vals.len() as f64;
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut o = Map::new();
        o.insert("id".into(), json!(name));
        for a in &aggs {
            let v = match a.as_str() {
                "min" => min,
                "max" => max,
                "avg" => avg,
                "sum" => sum,
                _ => {
                    if avg == 0.0 {
                        0.0
                    } else {
                        (max - avg) / avg * 100.0
                    }
                }
            };
            o.insert(a.clone(), json!(v));
        }
        out.push(Value::Object(o));
    }
    Ok(Response::json(200, &Value::Array(out)))
}

/// Flink's web UI configuration (`DashboardConfiguration`).
fn dashboard_config() -> Value {
    json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": flink::FLINK_API_VERSION,
        "flink-revision": format!("cairn {}", env!("CARGO_PKG_VERSION")),
        "features": {
            "web-submit": false,
            "web-cancel": true,
            "web-rescale": false,
            "web-history": false,
        },
    })
}

/// Hides values of keys that look secret.
pub fn redact(key: &str, value: String) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let j = "0123456789abcdef0123456789abcdef";
        assert_eq!(route(&["jobs", "overview"]).unwrap().0, Route::JobsOverview);
        assert_eq!(route(&["jobs", "metrics"]).unwrap().0, Route::JobsMetrics);
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
        assert_eq!(route(&["jobmanager", "config"]).unwrap().0, Route::ClusterConfig);
        assert_eq!(route(&["config"]).unwrap().0, Route::DashboardConfig);
        assert_eq!(route(&["app.js"]).unwrap().0, Route::Ui("app.js"));
        assert_eq!(
            route(&["jobs", j, "vertices", "v", "subtasks", "2", "metrics"])
                .unwrap()
                .0,
            Route::SubtaskMetrics(j, "v", "2")
        );
        assert!(route(&["jobs", j, "nope"]).is_none());
        assert!(route(&["favicon.ico"]).is_none());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("rest.auth-token", "x".into()), "******");
        assert_eq!(redact("rest.port", "1".into()), "1");
    }

    #[test]
    fn metric_selection_and_aggregation() {
        let r = |t: &str| Request::new("GET", t, b"").unwrap();
        let vals = vec![("a".to_string(), 1.0), ("b".to_string(), 2.5)];
        assert_eq!(select_metrics(&r("/x"), &vals), json!([{ "id": "a" }, { "id": "b" }]));
        assert_eq!(
            select_metrics(&r("/x?get=b,zz"), &vals),
            json!([{ "id": "b", "value": "2.5" }])
        );
        let per = vec![vec![("a".to_string(), 1.0)], vec![("a".to_string(), 3.0)]];
        let out = aggregate(&r("/x?get=a&agg=min,max,sum"), &per).unwrap().body_json();
        assert_eq!(out, json!([{ "id": "a", "min": 1.0, "max": 3.0, "sum": 4.0 }]));
        assert_eq!(
            aggregate(&r("/x?get=a&agg=median"), &per).unwrap_err().code,
            "INVALID_PARAMETER"
        );
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
