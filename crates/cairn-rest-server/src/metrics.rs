//! `GET /metrics`: the job's metrics in Prometheus' text exposition format
//! (version 0.0.4). Every metric is prefixed `cairn_`, has `# HELP` and
//! `# TYPE` lines, and carries the labels `job_id` and `job_name`.

use std::fmt::Write as _;

use cairn_coordinator::control::{CheckpointStats, CheckpointsOverview, JobInfo, JobMetrics, JobStatus};

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

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

struct Writer {
    out: String,
    labels: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP cairn_{name} {help}");
        let _ = writeln!(self.out, "# TYPE cairn_{name} {kind}");
    }

    fn sample(&mut self, name: &str, extra: &[(&str, &str)], value: f64) {
        let mut labels = self.labels.clone();
        for (k, v) in extra {
            let _ = write!(labels, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "cairn_{name}{{{labels}}} {}", fmt_f64(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders the metrics page. `now_ms` is the current time (for uptime).
pub fn render(info: &JobInfo, metrics: &JobMetrics, checkpoints: &CheckpointsOverview, now_ms: u64) -> String {
    let mut w = Writer {
        out: String::new(),
        labels: format!(
            "job_id=\"{}\",job_name=\"{}\"",
            escape_label(&info.job_id),
            escape_label(&info.name)
        ),
    };
    w.family(
        "job_status",
        "gauge",
        "1 for the job's current status, 0 for the others.",
    );
    for (s, n) in STATUSES {
        w.sample("job_status", &[("status", n)], if s == info.status { 1.0 } else { 0.0 });
    }
    let end = info.end_time_ms.unwrap_or(now_ms);
    w.one(
        "job_uptime_seconds",
        "gauge",
        "Seconds since the job started (until it ended).",
        end.saturating_sub(info.start_time_ms) as f64 / 1000.0,
    );
    w.one(
        "job_restarts_total",
        "counter",
        "Restarts after failures.",
        info.restarts as f64,
    );
    w.one(
        "source_records_total",
        "counter",
        "Records emitted by the sources since the job started.",
        metrics.source_records as f64,
    );
    w.one(
        "source_records_per_second",
        "gauge",
        "Records emitted by the sources per second, recently.",
        metrics.source_records_per_second,
    );
    w.one(
        "records_in_total",
        "counter",
        "Records received by non-source tasks in the current attempt.",
        metrics.records_in as f64,
    );
    w.one(
        "records_out_total",
        "counter",
        "Records sent by all tasks in the current attempt.",
        metrics.records_out as f64,
    );
    w.one(
        "backpressure_seconds_total",
        "counter",
        "Time tasks waited for room in full output channels (backpressure), current attempt.",
        metrics.backpressure_ms as f64 / 1000.0,
    );

    let c = &checkpoints.counts;
    w.family(
        "checkpoints_total",
        "counter",
        "Checkpoints and savepoints triggered, by outcome.",
    );
    w.sample("checkpoints_total", &[("status", "completed")], c.completed as f64);
    w.sample("checkpoints_total", &[("status", "failed")], c.failed as f64);
    w.one(
        "checkpoints_triggered_total",
        "counter",
        "Checkpoints and savepoints triggered.",
        c.total as f64,
    );
    w.one(
        "checkpoints_in_progress",
        "gauge",
        "Checkpoints and savepoints in progress.",
        c.in_progress as f64,
    );
    w.one(
        "checkpoints_restored_total",
        "counter",
        "Restores from a checkpoint or savepoint.",
        c.restored as f64,
    );
    if let Some(last) = &checkpoints.latest_completed {
        last_checkpoint(&mut w, last);
    }
    let completed: Vec<&CheckpointStats> = checkpoints
        .history
        .iter()
        .filter(|s| s.status == cairn_coordinator::control::SnapshotStatus::Completed)
        .collect();
    if !completed.is_empty() {
        w.family(
            "checkpoint_duration_seconds",
            "summary",
            "End-to-end duration of the completed checkpoints in the history.",
        );
        let mut durations: Vec<f64> = completed.iter().map(|s| s.duration_ms as f64 / 1000.0).collect();
        durations.sort_by(f64::total_cmp);
        for q in ["0.5", "0.9", "0.99"] {
            let v = crate::flink::quantile(&durations, q.parse().unwrap_or(0.5));
            w.sample("checkpoint_duration_seconds", &[("quantile", q)], v);
        }
        w.sample("checkpoint_duration_seconds_sum", &[], durations.iter().sum());
        w.sample("checkpoint_duration_seconds_count", &[], durations.len() as f64);
        w.family(
            "checkpoint_size_bytes_max",
            "gauge",
            "Largest state size among the completed checkpoints in the history.",
        );
        let max = completed.iter().map(|s| s.state_size_bytes).max().unwrap_or(0);
        w.sample("checkpoint_size_bytes_max", &[], max as f64);
    }
    w.out
}

fn last_checkpoint(w: &mut Writer, last: &CheckpointStats) {
    w.one(
        "last_checkpoint_id",
        "gauge",
        "Number of the latest completed checkpoint.",
        last.id as f64,
    );
    w.one(
        "last_checkpoint_duration_seconds",
        "gauge",
        "End-to-end duration of the latest completed checkpoint.",
        last.duration_ms as f64 / 1000.0,
    );
    w.one(
        "last_checkpoint_size_bytes",
        "gauge",
        "State size of the latest completed checkpoint.",
        last.state_size_bytes as f64,
    );
    w.one(
        "last_checkpoint_sync_duration_seconds",
        "gauge",
        "Longest synchronous snapshot part of any task in the latest completed checkpoint.",
        last.sync_duration_ms as f64 / 1000.0,
    );
    w.one(
        "last_checkpoint_async_duration_seconds",
        "gauge",
        "Longest asynchronous (writing) part of any task in the latest completed checkpoint.",
        last.async_duration_ms as f64 / 1000.0,
    );
    w.one(
        "last_checkpoint_alignment_duration_seconds",
        "gauge",
        "Longest barrier alignment of any task in the latest completed checkpoint.",
        last.alignment_duration_ms as f64 / 1000.0,
    );
    w.one(
        "last_checkpoint_completion_timestamp_seconds",
        "gauge",
        "When the latest completed checkpoint completed (Unix time).",
        last.end_timestamp_ms.unwrap_or(0) as f64 / 1000.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_coordinator::control::{CheckpointCounts, SnapshotStatus};

    fn info() -> JobInfo {
        JobInfo {
            job_id: "0123456789abcdef0123456789abcdef".into(),
            name: "my \"job\"\nx\\y".into(),
            status: JobStatus::Running,
            start_time_ms: 1_000,
            end_time_ms: None,
            restarts: 2,
            last_failure: None,
            restored_from: None,
            vertices: vec![],
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
            state_size_bytes: size,
            num_acknowledged_subtasks: 2,
            num_subtasks: 2,
            external_path: None,
            failure_message: None,
        }
    }

    /// Every sample line belongs to a family announced by HELP and TYPE before it.
    fn check_format(text: &str) {
        let mut families: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                families.push(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                assert_eq!(Some(it.next().unwrap()), families.last().map(String::as_str), "{line}");
                assert!(matches!(it.next(), Some("gauge" | "counter" | "summary")), "{line}");
                continue;
            }
            let name = line.split('{').next().unwrap();
            assert!(name.starts_with("cairn_"), "{line}");
            let fam = families.last().expect("a sample before any family");
            assert!(
                name == fam || name == format!("{fam}_sum") || name == format!("{fam}_count"),
                "{line} not in {fam}"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn renders_all_families() {
        let metrics = JobMetrics {
            source_records: 1234,
            records_in: 1000,
            records_out: 2000,
            backpressure_ms: 1500,
            source_records_per_second: 99.5,
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
            ..Default::default()
        };
        let text = render(&info(), &metrics, &cps, 4_000);
        check_format(&text);
        let labels = r#"job_id="0123456789abcdef0123456789abcdef",job_name="my \"job\"\nx\\y""#;
        for want in [
            format!("cairn_job_status{{{labels},status=\"RUNNING\"}} 1"),
            format!("cairn_job_status{{{labels},status=\"FAILED\"}} 0"),
            format!("cairn_job_uptime_seconds{{{labels}}} 3"),
            format!("cairn_job_restarts_total{{{labels}}} 2"),
            format!("cairn_source_records_total{{{labels}}} 1234"),
            format!("cairn_source_records_per_second{{{labels}}} 99.5"),
            format!("cairn_records_in_total{{{labels}}} 1000"),
            format!("cairn_records_out_total{{{labels}}} 2000"),
            format!("cairn_backpressure_seconds_total{{{labels}}} 1.5"),
            format!("cairn_checkpoints_total{{{labels},status=\"completed\"}} 2"),
            format!("cairn_checkpoints_total{{{labels},status=\"failed\"}} 1"),
            format!("cairn_checkpoints_triggered_total{{{labels}}} 4"),
            format!("cairn_checkpoints_in_progress{{{labels}}} 1"),
            format!("cairn_checkpoints_restored_total{{{labels}}} 1"),
            format!("cairn_last_checkpoint_id{{{labels}}} 2"),
            format!("cairn_last_checkpoint_duration_seconds{{{labels}}} 0.3"),
            format!("cairn_last_checkpoint_size_bytes{{{labels}}} 30"),
            format!("cairn_checkpoint_duration_seconds{{{labels},quantile=\"0.5\"}} 0.1"),
            format!("cairn_checkpoint_duration_seconds_sum{{{labels}}} 0.4"),
            format!("cairn_checkpoint_duration_seconds_count{{{labels}}} 2"),
            format!("cairn_checkpoint_size_bytes_max{{{labels}}} 30"),
            "# TYPE cairn_source_records_total counter".to_string(),
            "# HELP cairn_backpressure_seconds_total".to_string(),
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
