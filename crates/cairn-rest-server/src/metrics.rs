//! `GET /metrics`: the job's metrics for Prometheus, encoded by
//! `prometheus-client` (OpenMetrics text). Every metric is prefixed
//! `cairn_` and carries `job_id` and `job_name`; per-operator metrics add
//! `operator_uid`, `operator_id`, `operator_name` and `subtask`.
//!
//! The registry is built fresh from the job's published state on every
//! scrape: the engine publishes plain counters, so nothing here is shared
//! with the task threads.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use cairn_coordinator::control::{
    CheckpointStats, CheckpointsOverview, JobInfo, JobMetrics, JobStatus, SnapshotStatus,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of the encoding.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const STATUSES: [(JobStatus, &str); 7] = [
    (JobStatus::Initializing, "INITIALIZING"),
    (JobStatus::Running, "RUNNING"),
    (JobStatus::Restarting, "RESTARTING"),
    (JobStatus::Cancelling, "CANCELLING"),
    (JobStatus::Cancelled, "CANCELED"),
    (JobStatus::Failed, "FAILED"),
    (JobStatus::Finished, "FINISHED"),
];

/// Flink's name of a status.
pub fn status_name(s: JobStatus) -> &'static str {
    STATUSES.iter().find(|(x, _)| *x == s).map_or("UNKNOWN", |(_, n)| n)
}

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;

fn gauge(v: f64) -> FGauge {
    let g = FGauge::default();
    g.set(v);
    g
}

fn counter(v: f64) -> FCounter {
    let c = FCounter::default();
    c.inc_by(v.max(0.0));
    c
}

fn gauge_family(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, samples: Vec<(Labels, f64)>) {
    let f = Family::<Labels, FGauge>::default();
    for (l, v) in samples {
        f.get_or_create(&l).set(v);
    }
    match unit {
        Some(u) => r.register_with_unit(name, help, u, f),
        None => r.register(name, help, f),
    }
}

fn counter_family(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, samples: Vec<(Labels, f64)>) {
    let f = Family::<Labels, FCounter>::default();
    for (l, v) in samples {
        f.get_or_create(&l).inc_by(v.max(0.0));
    }
    match unit {
        Some(u) => r.register_with_unit(name, help, u, f),
        None => r.register(name, help, f),
    }
}

/// Renders the metrics page. `now_ms` is the current time (for uptime).
pub fn render(info: &JobInfo, metrics: &JobMetrics, checkpoints: &CheckpointsOverview, now_ms: u64) -> String {
    let mut r = Registry::with_prefix_and_labels(
        "cairn",
        [
            (Cow::Borrowed("job_id"), Cow::Owned(info.job_id.clone())),
            (Cow::Borrowed("job_name"), Cow::Owned(info.name.clone())),
        ]
        .into_iter(),
    );
    gauge_family(
        &mut r,
        "job_status",
        "1 for the job's current status, 0 for the others",
        None,
        STATUSES
            .iter()
            .map(|(s, n)| {
                (
                    vec![("status".to_string(), n.to_string())],
                    f64::from(u8::from(*s == info.status)),
                )
            })
            .collect(),
    );
    let end = info.end_time_ms.unwrap_or(now_ms);
    r.register_with_unit(
        "job_uptime",
        "Time since the job started (until it ended)",
        Unit::Seconds,
        gauge(end.saturating_sub(info.start_time_ms) as f64 / 1000.0),
    );
    r.register("job_restarts", "Restarts after failures", counter(info.restarts as f64));
    r.register(
        "source_records",
        "Records emitted by the sources since the job started",
        counter(metrics.source_records as f64),
    );
    r.register(
        "source_records_per_second",
        "Records emitted by the sources per second, recently",
        gauge(metrics.source_records_per_second),
    );
    r.register(
        "records_in",
        "Records received over channels by the tasks, current attempt",
        counter(metrics.records_in as f64),
    );
    r.register(
        "records_out",
        "Records sent over channels by the tasks, current attempt",
        counter(metrics.records_out as f64),
    );
    r.register_with_unit(
        "backpressure",
        "Time tasks waited for room in full output channels (backpressure), current attempt",
        Unit::Seconds,
        counter(metrics.backpressure_ms as f64 / 1000.0),
    );

    // Per operator and subtask.
    let op_labels = |operator_id: &str, subtask: u32| -> Labels {
        let v = info.vertices.iter().find(|v| v.id == operator_id);
        vec![
            ("operator_uid".to_string(), v.map(|v| v.uid.clone()).unwrap_or_default()),
            ("operator_id".to_string(), operator_id.to_string()),
            (
                "operator_name".to_string(),
                v.map(|v| v.name.clone()).unwrap_or_default(),
            ),
            ("subtask".to_string(), subtask.to_string()),
        ]
    };
    let per = |f: &dyn Fn(&cairn_coordinator::control::SubtaskMetrics) -> Option<f64>| -> Vec<(Labels, f64)> {
        metrics
            .subtasks
            .iter()
            .filter_map(|s| f(s).map(|v| (op_labels(&s.operator_id, s.subtask), v)))
            .collect()
    };
    counter_family(
        &mut r,
        "operator_records_in",
        "Records into the operator (Flink's numRecordsIn), current attempt",
        None,
        per(&|s| Some(s.records_in as f64)),
    );
    counter_family(
        &mut r,
        "operator_records_out",
        "Records out of the operator (Flink's numRecordsOut), current attempt",
        None,
        per(&|s| Some(s.records_out as f64)),
    );
    gauge_family(
        &mut r,
        "operator_records_in_per_second",
        "Records into the operator per second, recently (numRecordsInPerSecond)",
        None,
        per(&|s| Some(s.records_in_per_second)),
    );
    gauge_family(
        &mut r,
        "operator_records_out_per_second",
        "Records out of the operator per second, recently (numRecordsOutPerSecond)",
        None,
        per(&|s| Some(s.records_out_per_second)),
    );
    counter_family(
        &mut r,
        "task_busy",
        "Time the operator's task spent processing, current attempt",
        Some(Unit::Seconds),
        per(&|s| Some(s.busy_ms as f64 / 1000.0)),
    );
    counter_family(
        &mut r,
        "task_idle",
        "Time the operator's task waited for input, current attempt",
        Some(Unit::Seconds),
        per(&|s| Some(s.idle_ms as f64 / 1000.0)),
    );
    counter_family(
        &mut r,
        "task_backpressured",
        "Time the operator's task waited for room downstream, current attempt",
        Some(Unit::Seconds),
        per(&|s| Some(s.backpressured_ms as f64 / 1000.0)),
    );
    gauge_family(
        &mut r,
        "task_busy_ratio",
        "Share of recent wall time the task was busy (busyTimeMsPerSecond / 1000)",
        None,
        per(&|s| Some(s.busy_ms_per_second / 1000.0)),
    );
    gauge_family(
        &mut r,
        "task_backpressured_ratio",
        "Share of recent wall time the task was backpressured (backPressuredTimeMsPerSecond / 1000)",
        None,
        per(&|s| Some(s.backpressured_ms_per_second / 1000.0)),
    );
    gauge_family(
        &mut r,
        "task_input_in_flight_batches_limit",
        "Batches the task's input channels may have in flight now (their capacity, or less with buffer debloating)",
        None,
        per(&|s| s.in_flight_limit.map(|l| l as f64)),
    );
    gauge_family(
        &mut r,
        "task_input_in_flight_records_limit",
        "Records the task's input channels may have in flight now (batches times their size; less with buffer debloating)",
        None,
        per(&|s| s.in_flight_records_limit.map(|l| l as f64)),
    );
    gauge_family(
        &mut r,
        "operator_watermark_milliseconds",
        "The task's current input watermark (event time, ms since the epoch), once it has one",
        None,
        per(&|s| s.watermark.map(|w| w as f64)),
    );

    // Checkpoints.
    let c = &checkpoints.counts;
    counter_family(
        &mut r,
        "checkpoints",
        "Checkpoints and savepoints, by outcome",
        None,
        vec![
            (
                vec![("status".to_string(), "completed".to_string())],
                c.completed as f64,
            ),
            (vec![("status".to_string(), "failed".to_string())], c.failed as f64),
        ],
    );
    r.register(
        "checkpoints_triggered",
        "Checkpoints and savepoints triggered",
        counter(c.total as f64),
    );
    r.register(
        "checkpoints_in_progress",
        "Checkpoints and savepoints in progress",
        gauge(c.in_progress as f64),
    );
    r.register(
        "checkpoints_restored",
        "Restores from a checkpoint or savepoint",
        counter(c.restored as f64),
    );
    if let Some(restored) = &checkpoints.latest_restored {
        r.register(
            "restored_checkpoint_id",
            "The id of the checkpoint or savepoint the job restored from last",
            gauge(restored.id as f64),
        );
        r.register_with_unit(
            "restored_checkpoint_timestamp",
            "When the job restored from it (Unix time)",
            Unit::Seconds,
            gauge(restored.restore_timestamp_ms as f64 / 1000.0),
        );
    }
    if let Some(last) = &checkpoints.latest_completed {
        last_checkpoint(&mut r, last);
    }
    let completed: Vec<&CheckpointStats> = checkpoints
        .history
        .iter()
        .filter(|s| s.status == SnapshotStatus::Completed)
        .collect();
    if !completed.is_empty() {
        let h = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        for s in &completed {
            h.observe(s.duration_ms as f64 / 1000.0);
        }
        r.register_with_unit(
            "checkpoint_duration",
            "End-to-end duration of the completed checkpoints in the history",
            Unit::Seconds,
            h,
        );
        let max = completed.iter().map(|s| s.state_size_bytes).max().unwrap_or(0);
        r.register_with_unit(
            "checkpoint_size_max",
            "Largest state size among the completed checkpoints in the history",
            Unit::Bytes,
            gauge(max as f64),
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

fn last_checkpoint(r: &mut Registry, last: &CheckpointStats) {
    r.register(
        "last_checkpoint_id",
        "Number of the latest completed checkpoint",
        gauge(last.id as f64),
    );
    let secs = |ms: u64| gauge(ms as f64 / 1000.0);
    r.register_with_unit(
        "last_checkpoint_duration",
        "End-to-end duration of the latest completed checkpoint",
        Unit::Seconds,
        secs(last.duration_ms),
    );
    r.register_with_unit(
        "last_checkpoint_size",
        "State size of the latest completed checkpoint",
        Unit::Bytes,
        gauge(last.state_size_bytes as f64),
    );
    r.register_with_unit(
        "last_checkpoint_sync_duration",
        "Longest synchronous snapshot part of any task in the latest completed checkpoint",
        Unit::Seconds,
        secs(last.sync_duration_ms),
    );
    r.register_with_unit(
        "last_checkpoint_async_duration",
        "Longest asynchronous (writing) part of any task in the latest completed checkpoint",
        Unit::Seconds,
        secs(last.async_duration_ms),
    );
    r.register_with_unit(
        "last_checkpoint_alignment_duration",
        "Longest barrier alignment of any task in the latest completed checkpoint",
        Unit::Seconds,
        secs(last.alignment_duration_ms),
    );
    r.register_with_unit(
        "last_checkpoint_persisted_data",
        "In-flight records (channel state) stored with the latest completed checkpoint; 0 when aligned",
        Unit::Bytes,
        gauge(last.persisted_data_bytes as f64),
    );
    r.register(
        "last_checkpoint_unaligned",
        "1 when some task took the latest completed checkpoint unaligned, else 0",
        gauge(if last.is_unaligned { 1.0 } else { 0.0 }),
    );
    r.register_with_unit(
        "last_checkpoint_completion_timestamp",
        "When the latest completed checkpoint completed (Unix time)",
        Unit::Seconds,
        secs(last.end_timestamp_ms.unwrap_or(0)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_coordinator::control::{CheckpointCounts, RestoredInfo, SubtaskMetrics, VertexInfo};

    fn info() -> JobInfo {
        JobInfo {
            job_id: "0123456789abcdef0123456789abcdef".into(),
            name: "my \"job\"\nx\\y".into(),
            status: JobStatus::Running,
            start_time_ms: 1_000,
            end_time_ms: None,
            restarts: 2,
            last_failure: None,
            last_failure_code: None,
            restored_from: None,
            vertices: vec![VertexInfo {
                id: "aa".repeat(16),
                uid: "counter".into(),
                name: "count".into(),
                parallelism: 2,
                max_parallelism: 128,
                chain: 0,
            }],
        }
    }

    fn stats(id: u64, duration_ms: u64, size: u64) -> CheckpointStats {
        CheckpointStats {
            id,
            is_savepoint: false,
            status: SnapshotStatus::Completed,
            trigger_timestamp_ms: 10,
            end_timestamp_ms: Some(20_000),
            duration_ms,
            sync_duration_ms: 1,
            async_duration_ms: 2,
            alignment_duration_ms: 3,
            is_unaligned: false,
            persisted_data_bytes: 0,
            state_size_bytes: size,
            num_acknowledged_subtasks: 2,
            num_subtasks: 2,
            external_path: None,
            failure_message: None,
        }
    }

    /// Every sample line belongs to a family announced by HELP and TYPE
    /// before it, and the page ends with `# EOF` (OpenMetrics).
    fn check_format(text: &str) {
        let mut family: Option<String> = None;
        for line in text.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = Some(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with("# TYPE ") || line.starts_with("# UNIT ") {
                assert!(line.split(' ').nth(2) == family.as_deref(), "{line}");
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let fam = family.as_deref().expect("a sample before any family");
            assert!(
                name.starts_with("cairn_") && name.starts_with(fam),
                "{line} not in {fam}"
            );
            assert!(line.contains("job_id=\"0123456789abcdef0123456789abcdef\""), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn renders_all_families() {
        let sub = |s: u32, n: u64| SubtaskMetrics {
            operator_id: "aa".repeat(16),
            subtask: s,
            records_in: n,
            records_out: 2 * n,
            records_in_per_second: 5.0,
            records_out_per_second: 10.0,
            busy_ms: 1500,
            idle_ms: 100,
            backpressured_ms: 250,
            busy_ms_per_second: 800.0,
            idle_ms_per_second: 100.0,
            backpressured_ms_per_second: 100.0,
            watermark: Some(42),
            in_flight_limit: Some(16),
            in_flight_records_limit: Some(16_384),
        };
        let metrics = JobMetrics {
            source_records: 1234,
            records_in: 1000,
            records_out: 2000,
            backpressure_ms: 1500,
            source_records_per_second: 99.5,
            subtasks: vec![sub(0, 300), sub(1, 700)],
        };
        let cps = CheckpointsOverview {
            counts: CheckpointCounts {
                restored: 1,
                total: 4,
                in_progress: 1,
                completed: 2,
                failed: 1,
            },
            history: vec![stats(1, 100, 10), stats(2, 300, 30)],
            latest_completed: Some(stats(2, 300, 30)),
            latest_restored: Some(RestoredInfo {
                id: 860,
                restore_timestamp_ms: 5_000,
                is_savepoint: true,
                external_path: "/sp".into(),
            }),
            ..Default::default()
        };
        let text = render(&info(), &metrics, &cps, 4_000);
        check_format(&text);
        let job = r#"job_id="0123456789abcdef0123456789abcdef",job_name="my \"job\"\nx\\y""#;
        let op = format!(
            r#"operator_uid="counter",operator_id="{}",operator_name="count",subtask="1""#,
            "aa".repeat(16)
        );
        for want in [
            format!("cairn_job_status{{{job},status=\"RUNNING\"}} 1.0"),
            format!("cairn_job_status{{{job},status=\"FAILED\"}} 0.0"),
            format!("cairn_job_uptime_seconds{{{job}}} 3.0"),
            format!("cairn_job_restarts_total{{{job}}} 2.0"),
            format!("cairn_source_records_total{{{job}}} 1234.0"),
            format!("cairn_records_in_total{{{job}}} 1000.0"),
            format!("cairn_backpressure_seconds_total{{{job}}} 1.5"),
            format!("cairn_operator_records_in_total{{{job},{op}}} 700.0"),
            format!("cairn_operator_records_out_total{{{job},{op}}} 1400.0"),
            format!("cairn_operator_records_in_per_second{{{job},{op}}} 5.0"),
            format!("cairn_task_busy_seconds_total{{{job},{op}}} 1.5"),
            format!("cairn_task_busy_ratio{{{job},{op}}} 0.8"),
            format!("cairn_operator_watermark_milliseconds{{{job},{op}}} 42.0"),
            format!("cairn_task_input_in_flight_batches_limit{{{job},{op}}} 16.0"),
            format!("cairn_task_input_in_flight_records_limit{{{job},{op}}} 16384.0"),
            format!("cairn_last_checkpoint_persisted_data_bytes{{{job}}} 0.0"),
            format!("cairn_last_checkpoint_unaligned{{{job}}} 0.0"),
            format!("cairn_checkpoints_total{{{job},status=\"completed\"}} 2.0"),
            format!("cairn_restored_checkpoint_id{{{job}}} 860.0"),
            format!("cairn_last_checkpoint_id{{{job}}} 2.0"),
            format!("cairn_last_checkpoint_duration_seconds{{{job}}} 0.3"),
            format!("cairn_checkpoint_duration_seconds_count{{{job}}} 2"),
            format!("cairn_checkpoint_size_max_bytes{{{job}}} 30.0"),
            "# TYPE cairn_source_records counter".to_string(),
            "# HELP cairn_job_restarts Restarts after failures.\n".to_string(),
        ] {
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn without_checkpoints() {
        let text = render(&info(), &JobMetrics::default(), &CheckpointsOverview::default(), 1_000);
        check_format(&text);
        assert!(!text.contains("cairn_last_checkpoint_id"));
        assert!(text.contains("cairn_checkpoints_triggered_total"));
    }
}
