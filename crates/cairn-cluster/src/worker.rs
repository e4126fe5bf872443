//! A worker's life. It offers its task slots to the coordinator at
//! `jobmanager.rpc.address:jobmanager.rpc.port` (retrying until one
//! answers), builds the job graph from the coordinator's configuration, and
//! runs the subtasks each deployment gives it: restoring their state from
//! the snapshot named in the deployment (tasks read checkpoint storage
//! themselves), exchanging records with the other workers through
//! [`crate::transport`], and uploading its tasks' snapshots straight to
//! checkpoint storage; the coordinator only receives the acknowledgements.
//! When the coordinator goes away (its session ends, or no heartbeat for
//! `heartbeat.timeout`), the worker cancels its tasks and registers again,
//! with the same coordinator address: a restarted coordinator (a rescale,
//! an upgrade) finds its workers that way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_config::Configuration;
use cairn_coordinator::restore::RestorePlan;
use cairn_runtime::error::JobError;
use cairn_runtime::job::{start_tasks, JobSpec, RunningJob, RuntimeSettings, SubtaskRestore};
use cairn_runtime::output::TaskMetrics;
use cairn_runtime::query::QueryError;
use cairn_runtime::task::{TaskEvent, TaskId};
use cairn_runtime::upload::{SnapshotDestination, SnapshotFormat, SnapshotUploader};
use cairn_snapshot::{load_snapshot, LoadedSnapshot, Storage};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use tokio::sync::mpsc::UnboundedSender;

use crate::cluster_error;
use crate::placement::{first_difference, graph_fingerprint, Placement};
use crate::proto::coordinator_message::Body as In;
use crate::proto::worker_message::Body as Out;
use crate::proto::{self, WorkerMessage};
use crate::settings::ClusterSettings;
use crate::transport::{wire_stats, DataServer, Failures, NetTransport};
use crate::wire;

/// What a worker needs from the job binary: its graph, built with the
/// coordinator's configuration, and the storage that configuration names.
pub trait JobBuilder {
    fn storage(&self, config: &Configuration) -> Result<Arc<dyn Storage>, JobError>;
    fn build(
        &self,
        config: &Configuration,
        job_id: &str,
        snapshot: Option<&LoadedSnapshot>,
    ) -> Result<JobSpec, JobError>;
}

type Outbox = UnboundedSender<WorkerMessage>;

fn send(tx: &Outbox, body: Out) {
    let _ = tx.send(WorkerMessage { body: Some(body) });
}

/// The attempt this worker runs.
struct Running {
    attempt: u32,
    job: RunningJob,
    cancelled: Arc<AtomicBool>,
}

/// Metrics of the running attempt, for the heartbeat thread.
type Published = Arc<Mutex<Option<(u32, Vec<(TaskId, Arc<TaskMetrics>)>)>>>;

/// Run as a worker until the process is stopped. Returns only when the
/// worker cannot work at all (its data port cannot be opened).
pub fn run_worker(settings: ClusterSettings, builder: &dyn JobBuilder, log: bool) -> Result<(), JobError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cairn-worker-control")
        .enable_all()
        .build()
        .map_err(|e| cluster_error(format!("cannot start the worker's control runtime: {e}")))?;
    let server = DataServer::bind(&settings.data_bind_host, settings.data_port).map_err(|e| {
        cluster_error(format!(
            "cannot open the worker's data port on {}:{} (taskmanager.bind-host, taskmanager.data.port): {e}",
            settings.data_bind_host, settings.data_port
        ))
    })?;
    let name = format!(
        "{}-{}",
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into()),
        std::process::id()
    );
    let mut worker = WorkerLoop {
        settings,
        builder,
        log,
        server,
        name,
        runtime,
        running: None,
        published: Arc::default(),
    };
    worker.run_forever()
}

struct WorkerLoop<'a> {
    settings: ClusterSettings,
    builder: &'a dyn JobBuilder,
    log: bool,
    server: Arc<DataServer>,
    name: String,
    runtime: tokio::runtime::Runtime,
    running: Option<Running>,
    published: Published,
}

/// What the coordinator said when the worker registered.
struct Session {
    worker_id: String,
    job_id: String,
    config: Configuration,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    storage: Option<Arc<dyn Storage>>,
    uploader: Option<Arc<SnapshotUploader>>,
}

impl WorkerLoop<'_> {
    /// Sessions with the coordinator, one after the other, until the process is stopped.
    fn run_forever(&mut self) -> ! {
        let mut quiet_until = Instant::now();
        loop {
            if let Err(why) = self.session() {
                if self.log && Instant::now() >= quiet_until {
                    tracing::info!(
                        "Worker: no session with the coordinator at {} ({why}); retrying",
                        self.settings.coordinator_authority()
                    );
                    quiet_until = Instant::now() + Duration::from_secs(30);
                }
            }
            self.stop_running();
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The address other workers reach this one's data port at.
    fn data_address(&self) -> String {
        let port = self.server.address().port();
        let host = self.settings.data_host.clone().unwrap_or_else(|| {
            // The local address of a route to the coordinator (no packet is sent).
            std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| {
                    s.connect(self.settings.coordinator_authority())?;
                    s.local_addr()
                })
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|_| "127.0.0.1".into())
        });
        crate::settings::authority(&host, port)
    }

    /// One session with the coordinator, until it ends.
    fn session(&mut self) -> Result<(), String> {
        let url = format!("http://{}", self.settings.coordinator_authority());
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerMessage>();
        let (in_tx, in_rx) = unbounded::<Option<proto::CoordinatorMessage>>();
        send(
            &out_tx,
            Out::Register(proto::Register {
                protocol_version: crate::PROTOCOL_VERSION,
                worker_name: self.name.clone(),
                slots: self.settings.slots,
                data_address: self.data_address(),
            }),
        );
        let connected = self.runtime.block_on(async move {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| format!("{url} is not a valid address: {e}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let mut client = proto::coordinator_client::CoordinatorClient::new(channel);
            let response = client
                .session(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx))
                .await
                .map_err(|e| e.message().to_string())?;
            Ok::<_, String>(response.into_inner())
        })?;
        let mut stream = connected;
        self.runtime.spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        if in_tx.send(Some(m)).is_err() {
                            return;
                        }
                    }
                    _ => {
                        let _ = in_tx.send(None);
                        return;
                    }
                }
            }
        });
        let first = in_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the coordinator did not answer the registration".to_string())?
            .ok_or("the coordinator closed the session")?;
        let mut session = match first.body {
            Some(In::Registered(r)) => {
                let mut config = Configuration::new();
                for (k, v) in &r.config {
                    config
                        .set(k, v)
                        .map_err(|e| format!("the coordinator's configuration does not parse here: {e}"))?;
                }
                Session {
                    worker_id: r.worker_id,
                    job_id: r.job_id,
                    config,
                    heartbeat_interval: Duration::from_millis(r.heartbeat_interval_ms.max(10)),
                    heartbeat_timeout: Duration::from_millis(r.heartbeat_timeout_ms.max(100)),
                    storage: None,
                    uploader: None,
                }
            }
            Some(In::Refused(r)) => {
                tracing::error!("Worker: the coordinator refused this worker: {}", r.reason);
                return Err(r.reason);
            }
            _ => return Err("the coordinator answered the registration with something else".into()),
        };
        if self.log {
            tracing::info!(
                "Worker {} registered with the coordinator of job {} ({} slot(s))",
                session.worker_id,
                session.job_id,
                self.settings.slots
            );
        }
        // Heartbeats (with the running attempt's metrics) go out from a
        // thread of their own, so a long deployment does not silence them.
        let stop_heartbeats = Arc::new(AtomicBool::new(false));
        {
            let (tx, published, stop) = (out_tx.clone(), self.published.clone(), stop_heartbeats.clone());
            let interval = session.heartbeat_interval;
            let _ = std::thread::Builder::new()
                .name("cairn-heartbeat".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let hb = match &*published.lock().unwrap_or_else(|p| p.into_inner()) {
                            Some((attempt, metrics)) => proto::Heartbeat {
                                attempt: *attempt,
                                metrics: metrics.iter().map(|(t, m)| wire::metrics_msg(*t, m)).collect(),
                            },
                            None => proto::Heartbeat::default(),
                        };
                        send(&tx, Out::Heartbeat(hb));
                        std::thread::sleep(interval.min(Duration::from_secs(1)));
                    }
                });
        }
        let result = self.serve(&mut session, &out_tx, &in_rx);
        stop_heartbeats.store(true, Ordering::Relaxed);
        if let Err(why) = &result {
            // Said every time (unlike failures to connect): the tasks stop here.
            tracing::warn!(
                "Worker {}: the session with the coordinator ended ({why}); cancelling its tasks and registering again",
                session.worker_id
            );
        }
        Ok(())
    }

    fn serve(
        &mut self,
        session: &mut Session,
        out: &Outbox,
        incoming: &Receiver<Option<proto::CoordinatorMessage>>,
    ) -> Result<(), String> {
        let mut last_heard = Instant::now();
        loop {
            let msg = match incoming.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(m)) => m,
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    return Err("the coordinator closed the session".into());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if last_heard.elapsed() > session.heartbeat_timeout {
                        return Err(format!(
                            "no heartbeat from the coordinator for heartbeat.timeout ({:?})",
                            session.heartbeat_timeout
                        ));
                    }
                    continue;
                }
            };
            last_heard = Instant::now();
            match msg.body {
                Some(In::Heartbeat(_)) | None => {}
                Some(In::Deploy(d)) => {
                    let attempt = d.attempt;
                    let error = match self.deploy(session, &d, out) {
                        Ok(()) => String::new(),
                        Err(e) => {
                            tracing::warn!("Worker: attempt {attempt} could not start here: {e}");
                            e
                        }
                    };
                    send(out, Out::Deployed(proto::Deployed { attempt, error }));
                }
                Some(In::Command(c)) => {
                    if let (Some(r), Ok((task, cmd))) = (&self.running, wire::command(&c)) {
                        if r.attempt == c.attempt {
                            r.job.command(task, cmd);
                        }
                    }
                }
                Some(In::Cancel(c)) => {
                    if let Some(r) = self.running.as_ref().filter(|r| r.attempt == c.attempt) {
                        r.cancelled.store(true, Ordering::Relaxed);
                        r.job.cancel.store(true, Ordering::Relaxed);
                    } else {
                        // Nothing of it runs here (any more): it ended.
                        send(out, Out::AttemptEnded(proto::AttemptEnded { attempt: c.attempt }));
                    }
                }
                Some(In::Destination(d)) => {
                    if let Some(uploader) = &session.uploader {
                        uploader.register(Arc::new(destination(&d)));
                    }
                    send(
                        out,
                        Out::DestinationReady(proto::DestinationReady {
                            checkpoint_id: d.checkpoint_id,
                        }),
                    );
                }
                Some(In::DestinationEnd(e)) => {
                    if let Some(uploader) = &session.uploader {
                        if e.aborted {
                            uploader.abort(e.checkpoint_id);
                        } else {
                            uploader.completed(e.checkpoint_id);
                        }
                    }
                }
                Some(In::Query(q)) => self.answer_query(q, out),
                Some(In::Registered(_)) | Some(In::Refused(_)) => {}
            }
        }
    }

    /// Answer a live state query from this worker's subtasks, on a thread
    /// of its own: the owning subtask answers between two batches, and the
    /// session keeps serving the coordinator meanwhile.
    fn answer_query(&self, q: proto::StateQuery, out: &Outbox) {
        let routes = match &self.running {
            Some(r) if r.attempt == q.attempt => r.job.queries.clone(),
            _ => {
                let why = QueryError::NotRunning(format!("attempt {} does not run on this worker", q.attempt));
                send(out, Out::QueryReply(wire::query_reply(q.request_id, &Err(why), &[])));
                return;
            }
        };
        let out = out.clone();
        let spawned = std::thread::Builder::new().name("cairn-query".into()).spawn(move || {
            let timeout = Duration::from_millis(q.timeout_ms);
            let result = routes.query(&q.uid, &q.state, &q.key_json, timeout);
            let reply = wire::query_reply(q.request_id, &result, &routes.queryable_uids());
            send(&out, Out::QueryReply(reply));
        });
        if let Err(e) = spawned {
            tracing::warn!("Worker: no thread for a state query: {e}");
        }
    }

    /// Cancel the running attempt, if any, and wait for its tasks.
    fn stop_running(&mut self) {
        if let Some(mut r) = self.running.take() {
            r.cancelled.store(true, Ordering::Relaxed);
            r.job.cancel_and_join();
        }
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn deploy(&mut self, session: &mut Session, d: &proto::Deploy, out: &Outbox) -> Result<(), String> {
        self.stop_running();
        let storage = match &session.storage {
            Some(s) => s.clone(),
            None => {
                let s = self.builder.storage(&session.config).map_err(|e| e.to_string())?;
                session.storage = Some(s.clone());
                s
            }
        };
        let uploader = session
            .uploader
            .get_or_insert_with(|| SnapshotUploader::new(storage.clone()))
            .clone();
        let snapshot = if d.restore_path.is_empty() {
            None
        } else {
            let path = PathBuf::from(&d.restore_path);
            Some(load_snapshot(&*storage, &path).map_err(|e| format!("cannot restore from {}: {e}", path.display()))?)
        };
        let mut spec = self
            .builder
            .build(&session.config, &session.job_id, snapshot.as_ref())
            .map_err(|e| e.to_string())?;
        let ours = graph_fingerprint(&spec.graph);
        if ours != d.graph_fingerprint {
            return Err(format!(
                "this worker's job graph differs from the coordinator's ({}): start the workers with the same job \
                 binary and the same job arguments as the coordinator",
                first_difference(&ours, &d.graph_fingerprint)
            ));
        }
        let me = d
            .workers
            .iter()
            .position(|w| w.worker_id == session.worker_id)
            .ok_or("the deployment does not name this worker")?;
        let placement = Placement {
            slot_owner: d
                .workers
                .iter()
                .enumerate()
                .flat_map(|(i, w)| w.slots.iter().map(move |s| (*s, i)))
                .collect(),
        };
        let peers: Vec<String> = d.workers.iter().map(|w| w.data_address.clone()).collect();
        let cancelled = Arc::new(AtomicBool::new(false));
        let (fail_tx, fail_rx) = unbounded::<String>();
        let net = Arc::new(NetTransport::new(
            &session.job_id,
            d.attempt,
            me,
            peers,
            placement,
            &spec.graph,
            self.server.clone(),
            Failures::new(fail_tx, cancelled.clone()),
        ));
        spec.transport = net.clone();
        let settings = RuntimeSettings::from_config(&spec.config);
        let plan = match &snapshot {
            Some(s) => {
                Some(RestorePlan::new(s, &*storage, &spec, d.allow_non_restored_state).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let graph = spec.graph.clone();
        let attempt = d.attempt;
        let local = |t: TaskId| net.is_local(t);
        let mut job = start_tasks(
            &spec,
            settings,
            attempt,
            true,
            &uploader,
            &mut |node, subtask, range| match &plan {
                Some(p) => p.subtask(node, subtask, range, graph.nodes[node].keyed, attempt),
                None => Ok(SubtaskRestore::default()),
            },
            &local,
        )
        .map_err(|e| e.to_string())?;
        net.start_links();
        let local_tasks = job.tasks.len();
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Some((attempt, job.metrics.clone()));
        // Events go to the coordinator; when every task exited and its
        // uploads ended, the attempt ended here.
        let events = std::mem::replace(&mut job.events, crossbeam_channel::never());
        let (tx, up, log, metrics) = (out.clone(), uploader.clone(), self.log, job.metrics.clone());
        let _ = std::thread::Builder::new().name("cairn-events".into()).spawn(move || {
            let mut exited = 0;
            while exited < local_tasks {
                let Ok(ev) = events.recv() else { break };
                if matches!(ev, TaskEvent::Exited { .. }) {
                    exited += 1;
                    if exited == local_tasks {
                        // Before the last exit: uploads ended, and the final
                        // counters, so the coordinator's totals are exact.
                        up.wait_idle();
                        send(
                            &tx,
                            Out::Heartbeat(proto::Heartbeat {
                                attempt,
                                metrics: metrics.iter().map(|(t, m)| wire::metrics_msg(*t, m)).collect(),
                            }),
                        );
                    }
                }
                send(&tx, Out::Event(wire::event_msg(attempt, &ev)));
            }
            up.wait_idle();
            if log {
                let s = wire_stats();
                let (bytes, records) = (s.bytes.load(Ordering::Relaxed), s.records.load(Ordering::Relaxed));
                tracing::info!(
                    "Worker: attempt {attempt} ended here; sent {records} records in {bytes} bytes to other workers{}",
                    if records > 0 {
                        format!(" ({:.1} bytes/record)", bytes as f64 / records as f64)
                    } else {
                        String::new()
                    }
                );
            }
            send(&tx, Out::AttemptEnded(proto::AttemptEnded { attempt }));
        });
        let tx = out.clone();
        let _ = std::thread::Builder::new()
            .name("cairn-failures".into())
            .spawn(move || {
                // The first failure matters; the coordinator ignores the rest.
                if let Ok(message) = fail_rx.recv() {
                    send(&tx, Out::Failure(proto::AttemptFailure { attempt, message }));
                }
            });
        if self.log {
            tracing::info!("Worker: attempt {attempt} runs {local_tasks} task(s) here");
        }
        self.running = Some(Running {
            attempt,
            job,
            cancelled,
        });
        Ok(())
    }
}

/// A snapshot destination as the coordinator described it.
fn destination(d: &proto::Destination) -> SnapshotDestination {
    let dir = PathBuf::from(&d.dir);
    match d.kind {
        0 | 1 => SnapshotDestination::checkpoint(d.checkpoint_id, dir, PathBuf::from(&d.shared_dir), d.kind == 1),
        2 => SnapshotDestination::savepoint(d.checkpoint_id, dir, SnapshotFormat::Native),
        _ => SnapshotDestination::savepoint(d.checkpoint_id, dir, SnapshotFormat::Canonical),
    }
}

/// Configuration entries as the coordinator sends them.
pub fn config_entries(config: &Configuration) -> HashMap<String, String> {
    config.entries().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
