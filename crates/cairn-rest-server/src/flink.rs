//! Flink's REST response shapes, built from what the job publishes.
//!
//! Flink's own Java client parses these with a strict Jackson mapper: an
//! unknown field, or a missing primitive one, fails the whole call. So these
//! carry exactly Flink's fields; Cairn's additions live in
//! `GET /jobs/:jobid/cairn` (see `api`).

use cairn_coordinator::control::{
    CheckpointConfigView, CheckpointStats, CheckpointsOverview, JobInfo, JobMetrics, JobStatus, OperationStatus,
    SnapshotStatus, SubtaskMetrics, VertexInfo,
};
use serde_json::{json, Map, Value};

use crate::metrics::status_name;

/// The Flink REST API version Cairn's shapes follow.
pub const FLINK_API_VERSION: &str = "2.3";

/// A job vertex as Flink shows it: one chain of operators (one task per
/// subtask). Its id is the chain head's operator id.
#[derive(Debug, Clone)]
pub struct Vertex {
    pub id: String,
    /// Flink's style: the operators' names joined by ` -> `.
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// In chain order.
    pub operators: Vec<VertexInfo>,
}

/// The job's vertices (chains), in topological order.
pub fn vertices(info: &JobInfo) -> Vec<Vertex> {
    let mut chains: Vec<usize> = info.vertices.iter().map(|v| v.chain).collect();
    chains.sort_unstable();
    chains.dedup();
    chains
        .into_iter()
        .map(|c| {
            let ops: Vec<VertexInfo> = info.vertices.iter().filter(|v| v.chain == c).cloned().collect();
            Vertex {
                id: ops[0].id.clone(),
                name: ops.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(" -> "),
                parallelism: ops[0].parallelism,
                max_parallelism: ops.iter().map(|o| o.max_parallelism).max().unwrap_or(0),
                operators: ops,
            }
        })
        .collect()
}

/// One subtask of a vertex: records into its head, out of its tail, and
/// the task's busy, idle and backpressured time.
pub fn subtask_io(v: &Vertex, m: &JobMetrics, subtask: u32) -> VertexIo {
    let find = |op: &VertexInfo| -> Option<&SubtaskMetrics> {
        m.subtasks
            .iter()
            .find(|s| s.operator_id == op.id && s.subtask == subtask)
    };
    let head = v.operators.first().and_then(find);
    let tail = v.operators.last().and_then(find);
    VertexIo {
        records_in: head.map_or(0, |h| h.records_in),
        records_out: tail.map_or(0, |t| t.records_out),
        backpressured_ms: head.map_or(0, |h| h.backpressured_ms),
        idle_ms: head.map_or(0, |h| h.idle_ms),
        busy_ms: head.map_or(0, |h| h.busy_ms),
    }
}

/// A vertex summed over its subtasks.
pub fn vertex_io(v: &Vertex, m: &JobMetrics) -> VertexIo {
    let mut total = VertexIo::default();
    for s in 0..v.parallelism {
        let io = subtask_io(v, m, s);
        total.records_in += io.records_in;
        total.records_out += io.records_out;
        total.backpressured_ms += io.backpressured_ms;
        total.idle_ms += io.idle_ms;
        total.busy_ms += io.busy_ms;
    }
    total
}

/// Flink's `ExecutionState` of a job's tasks in a given job status.
pub fn execution_state(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Initializing => "INITIALIZING",
        JobStatus::Running => "RUNNING",
        JobStatus::Restarting => "DEPLOYING",
        JobStatus::Cancelling => "CANCELING",
        JobStatus::Cancelled => "CANCELED",
        JobStatus::Failed => "FAILED",
        JobStatus::Finished => "FINISHED",
    }
}

const EXECUTION_STATES: [&str; 11] = [
    "CREATED",
    "SCHEDULED",
    "DEPLOYING",
    "RUNNING",
    "FINISHED",
    "CANCELING",
    "CANCELED",
    "FAILED",
    "RECONCILING",
    "INITIALIZING",
    "PENDING",
];

/// `{state: count}` over every execution state, with `n` tasks in `state`.
pub fn task_counts(state: &str, n: u32) -> Map<String, Value> {
    let mut m = Map::new();
    for s in EXECUTION_STATES.iter().take(10) {
        m.insert(s.to_string(), json!(if *s == state { n } else { 0 }));
    }
    m
}

/// `/jobs/overview`'s lowercase `tasks` map (Flink's `JobDetails`).
pub fn overview_tasks(state: &str, n: u32) -> Value {
    let mut m = Map::new();
    m.insert("total".into(), json!(n));
    for s in EXECUTION_STATES.iter().take(10) {
        m.insert(s.to_ascii_lowercase(), json!(if *s == state { n } else { 0 }));
    }
    // Flink spells the cancelling state `canceling` here too.
    Value::Object(m)
}

fn end_and_duration(info: &JobInfo, now: u64) -> (i64, u64) {
    let end = info.end_time_ms.map_or(-1, |e| e as i64);
    let duration = info.end_time_ms.unwrap_or(now).saturating_sub(info.start_time_ms);
    (end, duration)
}

fn total_tasks(info: &JobInfo) -> u32 {
    vertices(info).iter().map(|v| v.parallelism).sum()
}

/// One job of `/jobs/overview` (`JobDetails`).
pub fn job_overview(info: &JobInfo, now: u64) -> Value {
    let (end, duration) = end_and_duration(info, now);
    json!({
        "jid": info.job_id,
        "name": info.name,
        "state": status_name(info.status),
        "start-time": info.start_time_ms,
        "end-time": end,
        "duration": duration,
        "last-modification": info.end_time_ms.unwrap_or(info.start_time_ms),
        "tasks": overview_tasks(execution_state(info.status), total_tasks(info)),
        "pending-operators": 0,
    })
}

/// Flink's `IOMetricsInfo` of a vertex or subtask.
pub fn io_metrics(m: &VertexIo) -> Value {
    json!({
        "read-bytes": 0,
        "read-bytes-complete": true,
        "write-bytes": 0,
        "write-bytes-complete": true,
        "read-records": m.records_in,
        "read-records-complete": true,
        "write-records": m.records_out,
        "write-records-complete": true,
        "accumulated-backpressured-time": m.backpressured_ms,
        "accumulated-idle-time": m.idle_ms,
        "accumulated-busy-time": m.busy_ms as f64,
    })
}

/// Counters of one vertex (or subtask), as far as the engine publishes them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VertexIo {
    pub records_in: u64,
    pub records_out: u64,
    pub backpressured_ms: u64,
    pub idle_ms: u64,
    pub busy_ms: u64,
}

/// `GET /jobs/:jobid` (`JobDetailsInfo`).
pub fn job_details(info: &JobInfo, metrics: &JobMetrics, now: u64, plan: Value) -> Value {
    let (end, duration) = end_and_duration(info, now);
    let state = execution_state(info.status);
    let mut timestamps = Map::new();
    for s in [
        "INITIALIZING",
        "CREATED",
        "RUNNING",
        "FAILING",
        "FAILED",
        "CANCELLING",
        "CANCELED",
        "FINISHED",
        "RESTARTING",
        "SUSPENDED",
        "RECONCILING",
    ] {
        let t = match s {
            "INITIALIZING" | "CREATED" => info.start_time_ms,
            _ if s == status_name(info.status) => {
                if info.status.is_terminal() {
                    info.end_time_ms.unwrap_or(now)
                } else {
                    info.start_time_ms
                }
            }
            _ => 0,
        };
        timestamps.insert(s.to_string(), json!(t));
    }
    let all = vertices(info);
    let vertex_list: Vec<Value> = all
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "slotSharingGroupId": "00000000000000000000000000000000",
                "name": v.name,
                "maxParallelism": v.max_parallelism,
                "parallelism": v.parallelism,
                "status": state,
                "start-time": info.start_time_ms,
                "end-time": end,
                "duration": duration,
                "tasks": task_counts(state, v.parallelism),
                "metrics": io_metrics(&vertex_io(v, metrics)),
            })
        })
        .collect();
    json!({
        "jid": info.job_id,
        "name": info.name,
        "isStoppable": true,
        "state": status_name(info.status),
        "job-type": "STREAMING",
        "start-time": info.start_time_ms,
        "end-time": end,
        "duration": duration,
        "maxParallelism": info.vertices.iter().map(|v| v.max_parallelism).max().unwrap_or(0),
        "now": now,
        "timestamps": timestamps,
        "vertices": vertex_list,
        "status-counts": task_counts(state, all.len() as u32),
        "plan": plan,
        "pending-operators": 0,
    })
}

/// `GET /jobs/:jobid/status`.
pub fn job_status(info: &JobInfo) -> Value {
    json!({ "status": status_name(info.status) })
}

/// `GET /jobs/:jobid/execution-result` (`JobExecutionResultResponseBody`,
/// with the field names of Flink's `JobResult` serializer).
pub fn execution_result(info: &JobInfo, now: u64) -> Value {
    if !info.status.is_terminal() {
        return json!({ "status": { "id": "IN_PROGRESS" } });
    }
    let application = match info.status {
        JobStatus::Finished => "SUCCEEDED",
        JobStatus::Cancelled => "CANCELED",
        JobStatus::Failed => "FAILED",
        _ => "UNKNOWN",
    };
    let (_, duration) = end_and_duration(info, now);
    json!({
        "status": { "id": "COMPLETED" },
        "job-execution-result": {
            "id": info.job_id,
            "name": info.name,
            "start-time": info.start_time_ms,
            "end-time": info.end_time_ms.unwrap_or(now),
            "application-status": application,
            "accumulator-results": {},
            "net-runtime": duration,
        }
    })
}

/// `GET /jobs/:jobid/exceptions` (`JobExceptionsInfoWithHistory`).
pub fn exceptions(info: &JobInfo, now: u64) -> Value {
    let entries: Vec<Value> = info
        .last_failure
        .iter()
        .map(|f| {
            json!({
                "exceptionName": "cairn.TaskFailure",
                "stacktrace": f,
                "timestamp": info.end_time_ms.unwrap_or(now),
                "taskName": null,
                "endpoint": null,
                "taskManagerId": null,
                "failureLabels": {},
                "concurrentExceptions": [],
            })
        })
        .collect();
    json!({ "exceptionHistory": { "entries": entries, "truncated": false } })
}

/// The failure cause of an operation (Flink's `SerializedThrowable` without
/// its Java-serialized form, which only a JVM could produce).
pub fn failure_cause(message: &str) -> Value {
    json!({ "class": "cairn.OperationFailed", "stack-trace": message })
}

/// What an operation id was created for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Savepoint,
    Checkpoint,
}

/// `GET .../savepoints/:triggerid` and `.../checkpoints/:triggerid`
/// (`AsynchronousOperationResult`).
pub fn operation(status: &OperationStatus, kind: OpKind) -> Value {
    match status {
        OperationStatus::InProgress => json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }),
        OperationStatus::Completed {
            location,
            checkpoint_id,
        } => {
            let operation = match kind {
                OpKind::Savepoint => json!({ "location": location.as_ref().map(|p| p.display().to_string()) }),
                OpKind::Checkpoint => json!({ "checkpointId": checkpoint_id }),
            };
            json!({ "status": { "id": "COMPLETED" }, "operation": operation })
        }
        OperationStatus::Failed { message } => {
            let cause = failure_cause(message);
            let operation = match kind {
                OpKind::Savepoint => json!({ "failure-cause": cause }),
                OpKind::Checkpoint => json!({ "failureCause": cause }),
            };
            json!({ "status": { "id": "COMPLETED" }, "operation": operation })
        }
    }
}

/// One checkpoint (`CheckpointStatistics` and its completed/failed forms).
pub fn checkpoint(s: &CheckpointStats) -> Value {
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
        "savepointFormat": if s.is_savepoint { json!("CANONICAL") } else { Value::Null },
        "trigger_timestamp": s.trigger_timestamp_ms,
        "latest_ack_timestamp": s.end_timestamp_ms.map_or(-1, |t| t as i64),
        "checkpointed_size": s.state_size_bytes,
        "state_size": s.state_size_bytes,
        "end_to_end_duration": s.duration_ms,
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": s.persisted_data_bytes,
        "num_subtasks": s.num_subtasks,
        "num_acknowledged_subtasks": s.num_acknowledged_subtasks,
        "checkpoint_type": match (s.is_savepoint, s.is_unaligned) {
            (true, _) => "SAVEPOINT",
            (false, true) => "UNALIGNED_CHECKPOINT",
            (false, false) => "CHECKPOINT",
        },
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

/// Flink's `StatsSummaryDto` of some values.
pub fn summary(values: impl Iterator<Item = u64>) -> Value {
    let mut v: Vec<f64> = values.map(|x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let avg = if v.is_empty() {
        0
    } else {
        (v.iter().sum::<f64>() / v.len() as f64).round() as u64
    };
    let q = |p| quantile(&v, p);
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

/// `GET /jobs/:jobid/checkpoints` (`CheckpointingStatistics`): counts, a
/// summary over the completed checkpoints of the history, the latest ones,
/// and the history newest first.
pub fn checkpoints(o: &CheckpointsOverview) -> Value {
    let completed: Vec<&CheckpointStats> = o
        .history
        .iter()
        .filter(|s| s.status == SnapshotStatus::Completed)
        .collect();
    let sizes = || completed.iter().map(|s| s.state_size_bytes);
    let zeros = || completed.iter().map(|_| 0u64);
    json!({
        "counts": {
            "restored": o.counts.restored,
            "total": o.counts.total,
            "in_progress": o.counts.in_progress,
            "completed": o.counts.completed,
            "failed": o.counts.failed,
        },
        "summary": {
            "checkpointed_size": summary(sizes()),
            "state_size": summary(sizes()),
            "end_to_end_duration": summary(completed.iter().map(|s| s.duration_ms)),
            "alignment_buffered": summary(zeros()),
            "processed_data": summary(zeros()),
            "persisted_data": summary(completed.iter().map(|s| s.persisted_data_bytes)),
        },
        "latest": {
            "completed": o.latest_completed.as_ref().map(checkpoint),
            "savepoint": o.latest_savepoint.as_ref().map(checkpoint),
            "failed": o.latest_failed.as_ref().map(checkpoint),
            "restored": o.latest_restored.as_ref().map(|r| json!({
                "id": r.id,
                "restore_timestamp": r.restore_timestamp_ms,
                "is_savepoint": r.is_savepoint,
                "external_path": r.external_path.display().to_string(),
            })),
        },
        "history": o.history.iter().rev().map(checkpoint).collect::<Vec<_>>(),
    })
}

/// `GET /jobs/:jobid/checkpoints/config` (`CheckpointConfigInfo`).
pub fn checkpoint_config(c: &CheckpointConfigView, state_backend: &str) -> Value {
    let (enabled, delete) = match c.externalization.as_str() {
        "RETAIN_ON_CANCELLATION" => (true, false),
        "DELETE_ON_CANCELLATION" => (true, true),
        _ => (false, true),
    };
    let mode = if c.mode.eq_ignore_ascii_case("at_least_once") {
        "AT_LEAST_ONCE"
    } else {
        "EXACTLY_ONCE"
    };
    json!({
        "mode": mode,
        "interval": c.interval_ms,
        "timeout": c.timeout_ms,
        "min_pause": c.min_pause_ms,
        "max_concurrent": c.max_concurrent,
        "externalization": { "enabled": enabled, "delete_on_cancellation": delete },
        "state_backend": state_backend,
        "checkpoint_storage": c.checkpoint_storage.as_ref().map_or("JobManagerCheckpointStorage".to_string(), |p| format!("FileSystemCheckpointStorage ({})", p.display())),
        "unaligned_checkpoints": c.unaligned,
        "tolerable_failed_checkpoints": c.tolerable_failed_checkpoints,
        "aligned_checkpoint_timeout": c.aligned_checkpoint_timeout_ms,
        "checkpoints_after_tasks_finish": true,
        "state_changelog_enabled": false,
        "changelog_periodic_materialization_interval": 0,
        "changelog_storage": "memory",
    })
}

/// Flink's job plan (`JobPlanInfo`'s `plan`): one node per vertex (chain),
/// with its inputs and their partitioning.
pub fn plan(info: &JobInfo, edges: &[PlanEdge]) -> Value {
    let all = vertices(info);
    let chain_of = |op: &str| {
        all.iter()
            .find(|v| v.operators.iter().any(|o| o.id == op))
            .map(|v| v.id.clone())
    };
    let nodes: Vec<Value> = all
        .iter()
        .map(|v| {
            let inputs: Vec<Value> = edges
                .iter()
                .filter(|e| chain_of(&e.target).as_deref() == Some(v.id.as_str()))
                .filter_map(|e| {
                    let from = chain_of(&e.source)?;
                    (from != v.id).then_some((from, e))
                })
                .enumerate()
                .map(|(n, (from, e))| json!({ "num": n, "id": from, "ship_strategy": e.ship_strategy, "exchange": "pipelined_bounded" }))
                .collect();
            let mut node = json!({
                "id": v.id,
                "parallelism": v.parallelism,
                "operator": "",
                "operator_strategy": "",
                "description": v.name,
                "optimizer_properties": {},
            });
            if !inputs.is_empty() {
                node["inputs"] = Value::Array(inputs);
            }
            node
        })
        .collect();
    json!({ "jid": info.job_id, "name": info.name, "type": "STREAMING", "nodes": nodes })
}

/// An edge of the plan: from vertex `source` to vertex `target`, with
/// Flink's name of its partitioning (`FORWARD`, `HASH`, `REBALANCE`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEdge {
    pub source: String,
    pub target: String,
    pub ship_strategy: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s["p50"], 20.0);
        let s = summary(std::iter::empty());
        assert_eq!(s["max"], 0);
    }

    #[test]
    fn task_maps_cover_every_state() {
        let t = overview_tasks("RUNNING", 5);
        assert_eq!(t["total"], 5);
        assert_eq!(t["running"], 5);
        assert_eq!(t["failed"], 0);
        assert_eq!(task_counts("FINISHED", 2)["FINISHED"], 2);
    }
}
