//! Runs a built job on its own thread: restores it from a snapshot when asked,
//! drives it through the runtime's controller (checkpoints, savepoints,
//! restarts), and hands back a [`JobHandle`] to control and await it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_config::ClaimMode;
use cairn_coordinator::control::{control_channel, JobClient, JobStatus};
use cairn_coordinator::controller::{initial_published, run_job, JobRun};
use cairn_runtime::job::{JobSpec, RuntimeSettings};
use cairn_runtime::{JobError, SetupError, SetupErrorKind};
use cairn_snapshot::{load_snapshot, LoadedSnapshot, Storage};

use crate::env::JobResult;
use crate::error::CairnError;

/// Load the snapshot to restore from (a directory or its `_metadata`).
pub(crate) fn load(storage: &dyn Storage, path: &Path) -> Result<LoadedSnapshot, CairnError> {
    load_snapshot(storage, path).map_err(|e| {
        CairnError::Job(JobError::Setup(
            SetupError::new(
                SetupErrorKind::Restore,
                format!("cannot restore from {}: {e}", path.display()),
            )
            .with_source(e),
        ))
    })
}

/// A job running in the background.
pub struct JobHandle {
    job_id: String,
    client: JobClient,
    thread: Option<JoinHandle<Result<JobResult, CairnError>>>,
    /// How the job ended, when that was already known while it started.
    ended: Option<Result<JobResult, CairnError>>,
    /// The job's REST endpoint, when it serves one.
    rest: Option<cairn_rest_server::RestServer>,
}

impl JobHandle {
    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The address of the job's REST API, when it serves one.
    pub fn rest_address(&self) -> Option<std::net::SocketAddr> {
        self.rest.as_ref().map(|r| r.address())
    }

    /// A client to read the job's status and to trigger savepoints,
    /// checkpoints, stop and cancel.
    pub fn client(&self) -> JobClient {
        self.client.clone()
    }

    /// Wait for the job to end. A cancelled job gives
    /// `Err(CairnError::Job(JobError::Cancelled))`.
    pub fn wait(mut self) -> Result<JobResult, CairnError> {
        let result = self.join();
        // After the job: the server lets clients read how it ended, then
        // leaves the job registry.
        if let Some(mut rest) = self.rest.take() {
            rest.shutdown();
        }
        result
    }

    fn join(&mut self) -> Result<JobResult, CairnError> {
        if let Some(ended) = self.ended.take() {
            return ended;
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(CairnError::Job(JobError::Internal(
                "the job's controller thread panicked".into(),
            ))),
            None => Err(CairnError::Job(JobError::Internal(
                "the job was already awaited".into(),
            ))),
        }
    }

    /// Wait for the outcome of the start: the job runs (or already ended
    /// after running), or it could not start, which is returned as the error
    /// at once. No timeout is needed: the controller either publishes that
    /// the job runs or ends its thread.
    pub(crate) fn await_start(mut self) -> Result<JobHandle, CairnError> {
        loop {
            let status = self.client.info().status;
            let thread_done = self.thread.as_ref().is_none_or(JoinHandle::is_finished);
            if status != JobStatus::Initializing && status != JobStatus::Failed {
                return Ok(self);
            }
            if status == JobStatus::Failed || thread_done {
                return match self.join() {
                    Err(e) if is_start_failure(&e) => Err(e),
                    // Failed after it ran: `wait` reports it.
                    other => {
                        self.ended = Some(other);
                        Ok(self)
                    }
                };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Errors that mean the job never ran (bad configuration, graph or restore).
fn is_start_failure(e: &CairnError) -> bool {
    matches!(
        e,
        CairnError::Config(_) | CairnError::Graph(_) | CairnError::Job(JobError::Setup(_))
    )
}

/// What [`start`] needs besides the spec.
pub(crate) struct Launch {
    pub job_name: String,
    pub spec: JobSpec,
    pub snapshot: Option<LoadedSnapshot>,
    pub restore_path: Option<PathBuf>,
    pub allow_non_restored_state: bool,
    pub claim_mode: ClaimMode,
    pub progress: bool,
    /// Serve the REST API (and register the job for `cairn list`).
    pub serve_rest: bool,
    /// Where checkpoints and savepoints are written and read.
    pub storage: Arc<dyn Storage>,
    /// A distributed job's coordinator: deploys attempts to its workers.
    pub launcher: Option<Arc<dyn cairn_coordinator::controller::AttemptLauncher>>,
}

/// Start `launch` on a thread of its own; returns once the job runs, or with
/// the error that kept it from starting.
pub(crate) fn start(launch: Launch) -> Result<JobHandle, CairnError> {
    let published = initial_published(&launch.spec, &launch.job_name, launch.restore_path.as_deref());
    let (client, port) = control_channel(published);
    let job_id = launch.spec.job_id.clone();
    let rest = if launch.serve_rest {
        let options = cairn_rest_server::ServeOptions {
            topology: topology(&launch.spec),
            storage: Some(launch.storage.clone()),
            ..Default::default()
        };
        let server = cairn_rest_server::serve_with(client.clone(), &launch.spec.config, options).map_err(|e| {
            CairnError::Job(JobError::Setup(
                SetupError::new(SetupErrorKind::Rest, format!("cannot serve the REST API: {e}")).with_source(e),
            ))
        })?;
        Some(server)
    } else {
        None
    };
    let thread = std::thread::Builder::new()
        .name(format!("cairn-job-{}", &job_id[..8]))
        .spawn(move || {
            let Launch {
                job_name,
                spec,
                snapshot,
                allow_non_restored_state,
                claim_mode,
                progress,
                storage,
                launcher,
                ..
            } = launch;
            let settings = RuntimeSettings::from_config(&spec.config);
            let start = Instant::now();
            tracing::info!(job_id = %spec.job_id, job_name = %job_name, "starting the job");
            let mut last = 0u64;
            // Once a second: at info with `show_progress(true)`, else at debug.
            let mut tick = |records: u64| {
                let per_second = records - last.min(records);
                last = records;
                let seconds = start.elapsed().as_secs_f64();
                if progress {
                    tracing::info!(job_id = %spec.job_id, seconds, records, per_second, "records from sources");
                } else {
                    tracing::debug!(job_id = %spec.job_id, seconds, records, per_second, "records from sources");
                }
            };
            let run = JobRun {
                spec: &spec,
                settings,
                snapshot: snapshot.as_ref(),
                allow_non_restored_state,
                claim: claim_mode == ClaimMode::Claim,
                storage,
                launcher,
            };
            let outcome = run_job(run, &port, &mut tick)?;
            let elapsed = start.elapsed();
            tracing::info!(
                job_id = %spec.job_id,
                job_name = %job_name,
                seconds = elapsed.as_secs_f64(),
                source_records = outcome.source_records,
                per_second = outcome.source_records as f64 / elapsed.as_secs_f64().max(1e-9),
                savepoint = outcome.savepoint.as_ref().map(|p| p.display().to_string()),
                "the job {}",
                match outcome.status {
                    JobStatus::Cancelled => "was cancelled",
                    _ => "finished",
                }
            );
            if outcome.status == JobStatus::Cancelled {
                return Err(CairnError::Job(JobError::Cancelled));
            }
            Ok(JobResult {
                job_id: spec.job_id.clone(),
                job_name,
                elapsed,
                source_records: outcome.source_records,
                checkpoints: outcome.checkpoints,
                savepoint: outcome.savepoint,
                restarts: outcome.restarts,
                checkpoint_dir: outcome.checkpoint_dir,
            })
        })
        .map_err(|e| CairnError::Job(JobError::Internal(format!("cannot start the job's thread: {e}"))))?;
    JobHandle {
        job_id,
        client,
        thread: Some(thread),
        ended: None,
        rest,
    }
    .await_start()
}

/// The job graph as the REST plan shows it.
fn topology(spec: &JobSpec) -> cairn_rest_server::Topology {
    use cairn_graph::Partitioning;
    let graph = &spec.graph;
    let op = |id: cairn_graph::NodeId| graph.nodes.iter().find(|n| n.id == id).map(|n| n.operator_id.clone());
    let edges = graph
        .edges
        .iter()
        .filter_map(|e| {
            Some(cairn_rest_server::PlanEdge {
                source: op(e.source)?,
                target: op(e.target)?,
                ship_strategy: match e.partitioning {
                    Partitioning::Auto | Partitioning::Forward => "FORWARD",
                    Partitioning::KeyGroups => "HASH",
                    Partitioning::Rebalance => "REBALANCE",
                    Partitioning::Broadcast => "BROADCAST",
                }
                .to_string(),
            })
        })
        .collect();
    let chains = graph
        .chains
        .iter()
        .map(|c| c.iter().filter_map(|id| op(*id)).collect())
        .collect();
    cairn_rest_server::Topology { edges, chains }
}
