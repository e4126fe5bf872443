//! A scripted stand-in for a job's control loop: it answers `ControlPort`
//! requests the way the engine does (savepoints written as real Cairn
//! snapshots, checkpoints counted, cancel and stop ending the job), so the
//! REST layer can be tested on every path, including failures the engine
//! rarely produces.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_coordinator::control::{
    control_channel, AfterSavepoint, CheckpointConfigView, CheckpointStats, CheckpointsOverview, ControlPort,
    ControlRequest, JobClient, JobInfo, JobMetrics, JobStatus, OperationStatus, Published, SnapshotStatus,
    SubtaskMetrics, VertexInfo,
};
use cairn_snapshot::metadata::{write_metadata, SavepointFormat, SnapshotKind, SnapshotMetadata, METADATA_VERSION};
use cairn_snapshot::LocalFileStorage;
use cairn_snapshot::Storage;

pub const JOB_ID: &str = "c0ffee00112233445566778899aabbcc";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cairn-rest-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(std::fs::canonicalize(p).unwrap())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Writes a minimal savepoint (or checkpoint) with a valid `_metadata`.
pub fn write_snapshot(dir: &Path, job_id: &str, id: u64, savepoint: bool) {
    let s = LocalFileStorage::new();
    s.create_dir_all(dir).unwrap();
    let meta = SnapshotMetadata {
        format_version: METADATA_VERSION,
        kind: if savepoint {
            SnapshotKind::Savepoint {
                format: SavepointFormat::Canonical,
            }
        } else {
            SnapshotKind::Checkpoint
        },
        job_id: job_id.into(),
        checkpoint_id: id,
        trigger_timestamp_ms: 1,
        completion_timestamp_ms: 2,
        cairn_version: "test".into(),
        operators: vec![],
    };
    write_metadata(&s, dir, &meta).unwrap();
}

fn stats(
    id: u64,
    savepoint: bool,
    status: SnapshotStatus,
    path: Option<PathBuf>,
    failure: Option<String>,
) -> CheckpointStats {
    let now = now_ms();
    CheckpointStats {
        id,
        is_savepoint: savepoint,
        status,
        trigger_timestamp_ms: now - 5,
        end_timestamp_ms: Some(now),
        duration_ms: 5 + id,
        sync_duration_ms: 1,
        async_duration_ms: 2,
        alignment_duration_ms: 0,
        is_unaligned: false,
        persisted_data_bytes: 0,
        state_size_bytes: 100 * id,
        num_acknowledged_subtasks: 3,
        num_subtasks: 3,
        external_path: path,
        failure_message: failure,
    }
}

pub struct Scripted {
    pub client: JobClient,
    handle: Option<JoinHandle<()>>,
}

pub struct ScriptConfig {
    pub checkpoint_dir: Option<PathBuf>,
    pub savepoint_dir: Option<PathBuf>,
    /// Savepoints whose target directory contains this fail.
    pub fail_marker: &'static str,
    /// Operations stay in progress this long.
    pub delay: Duration,
}

impl Scripted {
    pub fn start(sc: ScriptConfig) -> Scripted {
        let mut config = BTreeMap::new();
        config.insert("parallelism.default".to_string(), "3".to_string());
        config.insert("rest.auth-token".to_string(), "hidden".to_string());
        if let Some(d) = &sc.checkpoint_dir {
            config.insert("execution.checkpointing.dir".into(), d.display().to_string());
        }
        let initial = Published {
            info: JobInfo {
                job_id: JOB_ID.into(),
                name: "scripted job".into(),
                status: JobStatus::Running,
                start_time_ms: now_ms(),
                end_time_ms: None,
                restarts: 0,
                last_failure: None,
                last_failure_code: None,
                restored_from: None,
                vertices: vec![VertexInfo {
                    id: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
                    uid: "counter".into(),
                    name: "count per user".into(),
                    parallelism: 3,
                    max_parallelism: 128,
                    chain: 0,
                }],
            },
            metrics: JobMetrics {
                source_records: 42,
                records_in: 40,
                records_out: 80,
                backpressure_ms: 250,
                source_records_per_second: 10.0,
                subtasks: (0..3)
                    .map(|s| SubtaskMetrics {
                        operator_id: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
                        subtask: s,
                        records_in: 10 + u64::from(s),
                        records_out: 20,
                        records_in_per_second: 1.0,
                        watermark: Some(1000),
                        ..Default::default()
                    })
                    .collect(),
            },
            checkpoints: CheckpointsOverview::default(),
            checkpoint_config: CheckpointConfigView {
                mode: "exactly_once".into(),
                interval_ms: 1000,
                timeout_ms: 600_000,
                min_pause_ms: 0,
                max_concurrent: 1,
                tolerable_failed_checkpoints: 0,
                externalization: "RETAIN_ON_CANCELLATION".into(),
                checkpoint_storage: sc.checkpoint_dir.clone(),
                savepoint_dir: sc.savepoint_dir.clone(),
                num_retained: 1,
                unaligned: false,
                aligned_checkpoint_timeout_ms: 0,
            },
            config,
            operations: BTreeMap::new(),
            queries: None,
            query_timeout: Duration::from_secs(10),
        };
        let (client, port) = control_channel(initial);
        let handle = std::thread::spawn(move || run(port, sc));
        Scripted {
            client,
            handle: Some(handle),
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.client.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn finish(port: &ControlPort, status: JobStatus) {
    let mut p = port.publish();
    p.info.status = status;
    p.info.end_time_ms = Some(now_ms());
}

fn run(port: ControlPort, sc: ScriptConfig) {
    let mut next_id = 1u64;
    let mut n = 0u32;
    loop {
        let req = match port.requests.recv_timeout(Duration::from_millis(50)) {
            Ok(req) => req,
            Err(e) if e.is_timeout() => continue,
            // Every client is gone: the test is over.
            Err(_) => return,
        };
        std::thread::sleep(sc.delay);
        match req {
            ControlRequest::Cancel => {
                finish(&port, JobStatus::Cancelled);
                return;
            }
            ControlRequest::Checkpoint { operation, .. } => {
                let id = next_id;
                next_id += 1;
                let dir = sc
                    .checkpoint_dir
                    .as_ref()
                    .unwrap()
                    .join(JOB_ID)
                    .join(format!("chk-{id}"));
                write_snapshot(&dir, JOB_ID, id, false);
                let mut s = stats(id, false, SnapshotStatus::Completed, Some(dir), None);
                // Even checkpoints are unaligned, with in-flight records.
                if id % 2 == 0 {
                    s.is_unaligned = true;
                    s.persisted_data_bytes = 10 * id;
                }
                let mut p = port.publish();
                p.checkpoints.counts.total += 1;
                p.checkpoints.counts.completed += 1;
                p.checkpoints.history.push(s.clone());
                p.checkpoints.latest_completed = Some(s);
                p.operations.insert(
                    operation,
                    OperationStatus::Completed {
                        location: None,
                        checkpoint_id: Some(id),
                    },
                );
            }
            ControlRequest::Savepoint { operation, request } => {
                let id = next_id;
                next_id += 1;
                let parent = request
                    .target_directory
                    .clone()
                    .or_else(|| sc.savepoint_dir.clone())
                    .unwrap();
                if parent.display().to_string().contains(sc.fail_marker) {
                    let msg = format!("cannot write savepoint under {}", parent.display());
                    let s = stats(id, true, SnapshotStatus::Failed, None, Some(msg.clone()));
                    let mut p = port.publish();
                    p.checkpoints.counts.total += 1;
                    p.checkpoints.counts.failed += 1;
                    p.checkpoints.history.push(s.clone());
                    p.checkpoints.latest_failed = Some(s);
                    p.operations.insert(operation, OperationStatus::Failed { message: msg });
                    continue;
                }
                n += 1;
                let dir = parent.join(format!("savepoint-{}-{:012x}", &JOB_ID[..6], n));
                write_snapshot(&dir, JOB_ID, id, true);
                let s = stats(id, true, SnapshotStatus::Completed, Some(dir.clone()), None);
                {
                    let mut p = port.publish();
                    p.checkpoints.counts.total += 1;
                    p.checkpoints.counts.completed += 1;
                    p.checkpoints.history.push(s.clone());
                    p.checkpoints.latest_savepoint = Some(s);
                    p.operations.insert(
                        operation,
                        OperationStatus::Completed {
                            location: Some(dir),
                            checkpoint_id: Some(id),
                        },
                    );
                }
                match request.then {
                    AfterSavepoint::KeepRunning => {}
                    AfterSavepoint::Cancel => {
                        finish(&port, JobStatus::Cancelled);
                        return;
                    }
                    AfterSavepoint::Stop { .. } => {
                        finish(&port, JobStatus::Finished);
                        return;
                    }
                }
            }
        }
    }
}
