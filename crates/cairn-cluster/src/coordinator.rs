//! The coordinator's side: the gRPC control endpoint workers register with,
//! and [`RemoteLauncher`], which the job controller uses instead of starting
//! tasks in this process. The controller keeps doing what it does for a
//! local job (checkpoints, savepoints, stop, restarts from the latest
//! checkpoint); the launcher gives it a `RunningJob` whose command channels
//! lead to the workers and whose events come from them. A lost worker
//! (its session broke, or no heartbeat for `heartbeat.timeout`) shows up as
//! a task failure, so the controller's restart strategy fails the job over
//! globally, and the next attempt waits for enough slots on the remaining
//! or replacement workers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_coordinator::controller::AttemptLauncher;
use cairn_graph::NodeKind;
use cairn_runtime::error::JobError;
use cairn_runtime::job::{JobSpec, RunningJob};
use cairn_runtime::output::TaskMetrics;
use cairn_runtime::query::{self, QueryError, QueryRoutes, RemoteQueries, StateAnswer};
use cairn_runtime::task::{TaskCommand, TaskEvent, TaskId};
use cairn_runtime::upload::{DestinationListener, SnapshotDestination, SnapshotUploader};
use cairn_snapshot::LoadedSnapshot;
use cairn_state::SnapshotRequestKind;
use crossbeam_channel::{unbounded, Receiver, Select, Sender};
use tokio::sync::mpsc::UnboundedSender;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster_error;
use crate::placement::{all_tasks, graph_fingerprint, slots_needed, Placement};
use crate::proto::coordinator_message::Body as Out;
use crate::proto::worker_message::Body as In;
use crate::proto::{self, CoordinatorMessage};
use crate::settings::ClusterSettings;
use crate::wire;

/// How long a worker may take to start its tasks (restoring state included).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a checkpoint's trigger waits for every worker to know its destination.
const DESTINATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a state query waits for the workers' replies beyond its own timeout.
const QUERY_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

type Outbox = UnboundedSender<Result<CoordinatorMessage, Status>>;

struct Worker {
    id: String,
    name: String,
    slots: u32,
    data_address: String,
    tx: Outbox,
    last_seen: Instant,
}

/// The attempt running on the workers.
struct Attempt {
    number: u32,
    /// Worker ids by placement index.
    workers: Vec<String>,
    tasks: HashMap<String, Vec<TaskId>>,
    events: Sender<TaskEvent>,
    metrics: HashMap<TaskId, Arc<TaskMetrics>>,
    exited: HashSet<TaskId>,
    /// Workers whose tasks all exited (or that are lost).
    ended: HashSet<String>,
    deployed: HashMap<String, Result<(), String>>,
    /// Destinations each worker confirmed.
    ready: HashMap<u64, HashSet<String>>,
    /// A failure was reported to the controller already.
    failed: bool,
}

#[derive(Default)]
struct State {
    workers: Vec<Worker>,
    next_worker: u64,
    attempt: Option<Attempt>,
    /// Live state queries waiting for the workers' answers, by request id.
    queries: HashMap<u64, Sender<wire::WorkerAnswer>>,
    next_query: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    settings: ClusterSettings,
    job_id: String,
    job_name: String,
    config: HashMap<String, String>,
    log: bool,
}

fn send(tx: &Outbox, body: Out) {
    let _ = tx.send(Ok(CoordinatorMessage { body: Some(body) }));
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send_to(&self, st: &State, worker: &str, body: Out) {
        if let Some(w) = st.workers.iter().find(|w| w.id == worker) {
            send(&w.tx, body);
        }
    }

    fn register(&self, reg: &proto::Register, tx: Outbox) -> String {
        let mut st = self.lock();
        st.next_worker += 1;
        let id = format!("worker-{}", st.next_worker);
        if self.log {
            tracing::info!(
                "Worker {id} ({}) registered with {} slot(s), data port {}",
                reg.worker_name,
                reg.slots,
                reg.data_address
            );
        }
        send(
            &tx,
            Out::Registered(proto::Registered {
                worker_id: id.clone(),
                job_id: self.job_id.clone(),
                job_name: self.job_name.clone(),
                config: self.config.clone(),
                heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u64,
                heartbeat_timeout_ms: self.settings.heartbeat_timeout.as_millis() as u64,
            }),
        );
        st.workers.push(Worker {
            id: id.clone(),
            name: reg.worker_name.clone(),
            slots: reg.slots.max(1),
            data_address: reg.data_address.clone(),
            tx,
            last_seen: Instant::now(),
        });
        self.changed.notify_all();
        id
    }

    fn on_message(&self, worker: &str, msg: proto::WorkerMessage) {
        let mut st = self.lock();
        if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker) {
            w.last_seen = Instant::now();
        }
        let Some(body) = msg.body else { return };
        if let In::QueryReply(r) = &body {
            if let Some(waiting) = st.queries.get(&r.request_id) {
                let _ = waiting.send(wire::query_result(r));
            }
            return;
        }
        let Some(a) = st.attempt.as_mut() else { return };
        match body {
            In::Heartbeat(h) if h.attempt == a.number => {
                for m in &h.metrics {
                    if let Ok(t) = wire::task_id(m.task.as_ref()) {
                        if let Some(mine) = a.metrics.get(&t) {
                            wire::apply_metrics(m, mine);
                        }
                    }
                }
            }
            In::Event(e) if e.attempt == a.number => match wire::event(&e) {
                Ok(ev) => {
                    if let TaskEvent::Exited { task } = &ev {
                        a.exited.insert(*task);
                    }
                    if matches!(&ev, TaskEvent::Failed { error, .. } if !cairn_runtime::job::is_cancellation(error)) {
                        a.failed = true;
                    }
                    let _ = a.events.send(ev);
                }
                Err(why) => {
                    let task = a.tasks.get(worker).and_then(|t| t.first().copied());
                    if let Some(task) = task {
                        let _ = a.events.send(TaskEvent::Failed {
                            task,
                            op: None,
                            error: format!("worker {worker} sent an event that cannot be read: {why}").into(),
                        });
                    }
                }
            },
            In::Deployed(d) if d.attempt == a.number => {
                let r = if d.error.is_empty() { Ok(()) } else { Err(d.error) };
                a.deployed.insert(worker.to_string(), r);
            }
            In::DestinationReady(r) => {
                a.ready.entry(r.checkpoint_id).or_default().insert(worker.to_string());
            }
            In::AttemptEnded(e) if e.attempt == a.number => {
                a.ended.insert(worker.to_string());
            }
            In::Failure(f) if f.attempt == a.number && !a.failed => {
                if let Some(task) = a.tasks.get(worker).and_then(|t| t.first().copied()) {
                    a.failed = true;
                    let _ = a.events.send(TaskEvent::Failed {
                        task,
                        op: None,
                        error: format!("on worker {worker}: {}", f.message).into(),
                    });
                }
            }
            _ => {}
        }
        self.changed.notify_all();
    }

    /// `worker` is gone: its tasks fail (once) and count as exited.
    fn worker_lost(&self, worker: &str, why: &str) {
        let mut st = self.lock();
        let Some(pos) = st.workers.iter().position(|w| w.id == worker) else {
            return;
        };
        let w = st.workers.remove(pos);
        if self.log {
            tracing::warn!("Worker {} ({}) is lost: {why}", w.id, w.name);
        }
        if let Some(a) = st.attempt.as_mut() {
            if a.workers.iter().any(|x| x == worker) && !a.ended.contains(worker) {
                let tasks = a.tasks.get(worker).cloned().unwrap_or_default();
                let mut first = true;
                for t in tasks {
                    if a.exited.contains(&t) {
                        continue;
                    }
                    if first && !a.failed {
                        let _ = a.events.send(TaskEvent::Failed {
                            task: t,
                            op: None,
                            error: format!("worker {} ({}) was lost: {why}", w.id, w.name).into(),
                        });
                        a.failed = true;
                    }
                    first = false;
                    a.exited.insert(t);
                    let _ = a.events.send(TaskEvent::Exited { task: t });
                }
                a.ended.insert(worker.to_string());
                a.deployed
                    .entry(worker.to_string())
                    .or_insert_with(|| Err(format!("the worker was lost: {why}")));
            }
        }
        self.changed.notify_all();
    }

    /// Heartbeats to every worker; those silent too long are lost.
    fn heartbeat_round(&self) {
        let timeout = self.settings.heartbeat_timeout;
        let lost: Vec<String> = {
            let st = self.lock();
            for w in &st.workers {
                send(&w.tx, Out::Heartbeat(proto::Heartbeat::default()));
            }
            st.workers
                .iter()
                .filter(|w| w.last_seen.elapsed() > timeout)
                .map(|w| w.id.clone())
                .collect()
        };
        for id in lost {
            self.worker_lost(&id, &format!("no heartbeat for heartbeat.timeout ({timeout:?})"));
        }
    }
}

/// The control endpoint's service.
struct Service {
    shared: Arc<Shared>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl proto::coordinator_server::Coordinator for Service {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<proto::WorkerMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the session ended before the worker registered"))?;
        let Some(In::Register(reg)) = first.body else {
            return Err(Status::invalid_argument("a session starts with Register"));
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream: SessionStream = Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        if reg.protocol_version != crate::PROTOCOL_VERSION {
            send(
                &tx,
                Out::Refused(proto::Refused {
                    reason: format!(
                        "the worker speaks control protocol {} but this coordinator speaks {}: run the same Cairn \
                         version (the same job binary) on both",
                        reg.protocol_version,
                        crate::PROTOCOL_VERSION
                    ),
                }),
            );
            return Ok(Response::new(stream));
        }
        let id = self.shared.register(&reg, tx);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => shared.on_message(&id, m),
                    Ok(None) => {
                        shared.worker_lost(&id, "its session ended");
                        break;
                    }
                    Err(e) => {
                        shared.worker_lost(&id, &format!("its session broke ({})", e.message()));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// Deploys a job's attempts onto the workers registered with this
/// coordinator's control endpoint (which it serves while it lives).
pub struct RemoteLauncher {
    shared: Arc<Shared>,
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RemoteLauncher {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl RemoteLauncher {
    /// Serve the control endpoint of job `job_id` on
    /// `jobmanager.bind-host:jobmanager.rpc.port`; workers are sent `config`.
    pub fn start(
        settings: ClusterSettings,
        job_id: &str,
        job_name: &str,
        config: HashMap<String, String>,
        log: bool,
    ) -> Result<Arc<RemoteLauncher>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-control")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the control runtime: {e}"))?;
        let bind = crate::settings::authority(&settings.coordinator_bind_host, settings.coordinator_port);
        let listener = std::net::TcpListener::bind(&bind).map_err(|e| {
            format!(
                "cannot listen for workers on {bind} (jobmanager.bind-host, jobmanager.rpc.port): {e}; choose a free \
                 port with -D jobmanager.rpc.port=..."
            )
        })?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            settings: settings.clone(),
            job_id: job_id.to_string(),
            job_name: job_name.to_string(),
            config,
            log,
        });
        let service = proto::coordinator_server::CoordinatorServer::new(Service { shared: shared.clone() });
        {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            runtime.spawn(async move {
                // One gRPC service: served without a router (unknown methods
                // are answered `Unimplemented` by the generated service).
                let r = tonic::transport::Server::builder()
                    .serve_with_incoming(service, incoming)
                    .await;
                if let Err(e) = r {
                    tracing::error!("the coordinator's control endpoint stopped: {e}");
                }
            });
            let hb = shared.clone();
            let interval = settings.heartbeat_interval;
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
                loop {
                    tick.tick().await;
                    let hb = hb.clone();
                    let _ = tokio::task::spawn_blocking(move || hb.heartbeat_round()).await;
                }
            });
        }
        if log {
            tracing::info!("Coordinator of job {job_id} waits for workers on {address}");
        }
        Ok(Arc::new(RemoteLauncher {
            shared,
            address,
            runtime: Some(runtime),
        }))
    }

    /// Where the control endpoint listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Workers registered now: (id, name, slots).
    pub fn workers(&self) -> Vec<(String, String, u32)> {
        self.shared
            .lock()
            .workers
            .iter()
            .map(|w| (w.id.clone(), w.name.clone(), w.slots))
            .collect()
    }

    /// Wait until `needed` slots are registered; returns the chosen workers
    /// with their slots.
    fn wait_for_slots(&self, needed: u32) -> Result<Vec<(String, String, Vec<u32>)>, JobError> {
        let timeout = self.shared.settings.slot_request_timeout;
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let mut told = false;
        loop {
            let total: u32 = st.workers.iter().map(|w| w.slots).sum();
            if total >= needed {
                break;
            }
            if !told && self.shared.log {
                tracing::info!(
                    "Waiting for task slots: the job needs {needed}, {} worker(s) offer {total}",
                    st.workers.len()
                );
                told = true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(cluster_error(format!(
                    "not enough task slots: the job needs {needed} (its largest parallelism) but {} worker(s) offer \
                     {total} after slot.request.timeout ({timeout:?}); start more workers (the job binary with \
                     --mode worker --coordinator <host>:{}), give them more slots (taskmanager.numberOfTaskSlots), or \
                     lower the parallelism",
                    st.workers.len(),
                    self.address.port()
                )));
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut chosen = Vec::new();
        let mut next = 0u32;
        for w in &st.workers {
            if next >= needed {
                break;
            }
            let n = w.slots.min(needed - next);
            chosen.push((w.id.clone(), w.data_address.clone(), (next..next + n).collect()));
            next += n;
        }
        Ok(chosen)
    }

    /// Cancel the current attempt on its workers and wait (bounded) until
    /// they ended it.
    fn abandon(&self, number: u32) {
        let deadline = Instant::now() + self.shared.settings.heartbeat_timeout;
        let mut st = self.shared.lock();
        let workers = match &st.attempt {
            Some(a) if a.number == number => a.workers.clone(),
            _ => return,
        };
        for w in &workers {
            self.shared
                .send_to(&st, w, Out::Cancel(proto::CancelAttempt { attempt: number }));
        }
        loop {
            let done = match &st.attempt {
                Some(a) if a.number == number => workers.iter().all(|w| a.ended.contains(w)),
                _ => true,
            };
            if done || Instant::now() >= deadline {
                break;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl AttemptLauncher for RemoteLauncher {
    fn launch(
        &self,
        spec: &JobSpec,
        attempt: u32,
        uploader: &Arc<SnapshotUploader>,
        snapshot: Option<&LoadedSnapshot>,
        allow_non_restored_state: bool,
    ) -> Result<RunningJob, JobError> {
        let graph = &spec.graph;
        let needed = slots_needed(graph);
        let chosen = self.wait_for_slots(needed)?;
        let placement = Placement {
            slot_owner: chosen
                .iter()
                .enumerate()
                .flat_map(|(i, (_, _, slots))| slots.iter().map(move |s| (*s, i)))
                .collect(),
        };
        let tasks = all_tasks(graph);
        let mut per_worker: HashMap<String, Vec<TaskId>> = HashMap::new();
        for t in &tasks {
            let w = placement
                .worker_of(*t)
                .ok_or_else(|| JobError::Internal(format!("subtask {} has no slot (a Cairn bug)", t.subtask + 1)))?;
            per_worker.entry(chosen[w].0.clone()).or_default().push(*t);
        }
        let metrics: HashMap<TaskId, Arc<TaskMetrics>> = tasks
            .iter()
            .map(|t| {
                let nodes = graph.chains[t.chain].iter().map(|n| n.0);
                (*t, Arc::new(TaskMetrics::for_chain(nodes)))
            })
            .collect();
        let (ev_tx, ev_rx) = unbounded();
        let worker_ids: Vec<String> = chosen.iter().map(|c| c.0.clone()).collect();
        let deploy = proto::Deploy {
            attempt,
            restore_path: snapshot
                .map(|s| s.dir.to_string_lossy().into_owned())
                .unwrap_or_default(),
            allow_non_restored_state,
            workers: chosen
                .iter()
                .map(|(id, addr, slots)| proto::Placement {
                    worker_id: id.clone(),
                    data_address: addr.clone(),
                    slots: slots.clone(),
                })
                .collect(),
            graph_fingerprint: graph_fingerprint(graph),
            worker_id: String::new(),
        };
        {
            let mut st = self.shared.lock();
            st.attempt = Some(Attempt {
                number: attempt,
                workers: worker_ids.clone(),
                tasks: per_worker.clone(),
                events: ev_tx,
                metrics: metrics.clone(),
                exited: HashSet::new(),
                ended: HashSet::new(),
                deployed: HashMap::new(),
                ready: HashMap::new(),
                failed: false,
            });
            for id in &worker_ids {
                let mut d = deploy.clone();
                d.worker_id = id.clone();
                self.shared.send_to(&st, id, Out::Deploy(d));
            }
            if self.shared.log {
                tracing::info!(
                    "Deployed attempt {attempt} ({} tasks) to {}",
                    tasks.len(),
                    chosen
                        .iter()
                        .map(|(id, _, slots)| format!("{id} (slots {slots:?})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        // Every worker starts its tasks (restoring their state) or says why not.
        let deadline = Instant::now() + DEPLOY_TIMEOUT;
        let failure = {
            let mut st = self.shared.lock();
            loop {
                let a = st.attempt.as_ref().expect("attempt set above");
                if let Some((w, e)) = a
                    .deployed
                    .iter()
                    .find_map(|(w, r)| r.as_ref().err().map(|e| (w.clone(), e.clone())))
                {
                    // A lost worker fails the attempt through its events (restartable);
                    // a worker that could not start its tasks fails the start.
                    break if a.failed {
                        None
                    } else {
                        Some(format!("worker {w} could not start its tasks: {e}"))
                    };
                }
                if worker_ids.iter().all(|w| a.deployed.contains_key(w)) {
                    break None;
                }
                if Instant::now() >= deadline {
                    break Some(format!(
                        "the workers did not start their tasks within {DEPLOY_TIMEOUT:?}"
                    ));
                }
                st = self
                    .shared
                    .changed
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        if let Some(why) = failure {
            self.abandon(attempt);
            return Err(cluster_error(why));
        }
        uploader.set_listener(Some(Arc::new(Destinations {
            shared: self.shared.clone(),
            attempt,
        })));
        Ok(self.running_job(spec, attempt, &placement, &chosen, tasks, metrics, ev_rx))
    }
}

impl RemoteLauncher {
    #[allow(clippy::too_many_arguments)]
    fn running_job(
        &self,
        spec: &JobSpec,
        attempt: u32,
        placement: &Placement,
        chosen: &[(String, String, Vec<u32>)],
        tasks: Vec<TaskId>,
        metrics: HashMap<TaskId, Arc<TaskMetrics>>,
        events: Receiver<TaskEvent>,
    ) -> RunningJob {
        let graph = &spec.graph;
        let cancel = Arc::new(AtomicBool::new(false));
        let mut commands = HashMap::new();
        let mut routes: Vec<(TaskId, String, Receiver<TaskCommand>)> = Vec::new();
        for t in &tasks {
            let (tx, rx) = unbounded();
            commands.insert(*t, tx);
            let w = placement.worker_of(*t).map(|i| chosen[i].0.clone()).unwrap_or_default();
            routes.push((*t, w, rx));
        }
        // Commands go to the worker running the task, in order.
        let shared = self.shared.clone();
        let _ = std::thread::Builder::new()
            .name("cairn-commands".into())
            .spawn(move || {
                let mut live: Vec<bool> = vec![true; routes.len()];
                while live.iter().any(|l| *l) {
                    let mut sel = Select::new();
                    let mut which = Vec::new();
                    for (i, (_, _, rx)) in routes.iter().enumerate() {
                        if live[i] {
                            sel.recv(rx);
                            which.push(i);
                        }
                    }
                    let op = sel.select();
                    let i = which[op.index()];
                    let (task, worker, rx) = &routes[i];
                    match op.recv(rx) {
                        Ok(cmd) => {
                            let st = shared.lock();
                            shared.send_to(&st, worker, Out::Command(wire::command_msg(attempt, *task, &cmd)));
                        }
                        Err(_) => live[i] = false,
                    }
                }
            });
        // The attempt's end: every worker ended it (or is lost); a cancel is
        // passed on to them.
        let shared = self.shared.clone();
        let flag = cancel.clone();
        let workers: Vec<String> = chosen.iter().map(|c| c.0.clone()).collect();
        let watcher = std::thread::Builder::new()
            .name("cairn-attempt".into())
            .spawn(move || {
                let mut cancel_sent: Option<Instant> = None;
                let mut st = shared.lock();
                loop {
                    let Some(a) = st.attempt.as_ref().filter(|a| a.number == attempt) else {
                        return;
                    };
                    if workers.iter().all(|w| a.ended.contains(w)) {
                        return;
                    }
                    if flag.load(Ordering::Relaxed) {
                        match cancel_sent {
                            None => {
                                for w in &workers {
                                    shared.send_to(&st, w, Out::Cancel(proto::CancelAttempt { attempt }));
                                }
                                cancel_sent = Some(Instant::now());
                            }
                            Some(at) if at.elapsed() > shared.settings.heartbeat_timeout => {
                                // A worker that does not end its tasks is treated as lost.
                                let stuck: Vec<String> =
                                    workers.iter().filter(|w| !a.ended.contains(*w)).cloned().collect();
                                drop(st);
                                for w in stuck {
                                    shared.worker_lost(&w, "it did not end its tasks after a cancel");
                                }
                                st = shared.lock();
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    st = shared
                        .changed
                        .wait_timeout(st, Duration::from_millis(20))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            })
            .ok();
        let source_tasks = tasks
            .iter()
            .copied()
            .filter(|t| graph.node(graph.chains[t.chain][0]).kind == NodeKind::Source)
            .collect();
        RunningJob {
            metrics: tasks.iter().map(|t| (*t, metrics[t].clone())).collect(),
            tasks,
            commands,
            events,
            cancel,
            handles: watcher.into_iter().collect(),
            source_tasks,
            queries: Arc::new(QueryRoutes {
                remote: Some(Arc::new(WorkerQueries {
                    shared: self.shared.clone(),
                    attempt,
                })),
                ..QueryRoutes::default()
            }),
        }
    }
}

/// The live state queries of an attempt: asked of every worker running it;
/// the one whose subtask owns the key answers, the others say it is not
/// theirs ([`QueryError::NotHere`]).
struct WorkerQueries {
    shared: Arc<Shared>,
    attempt: u32,
}

impl RemoteQueries for WorkerQueries {
    fn query(&self, uid: &str, state: &str, key_json: &str, timeout: Duration) -> Result<StateAnswer, QueryError> {
        let (tx, rx) = unbounded();
        let (id, asked) = {
            let mut st = self.shared.lock();
            let workers: Vec<String> = match &st.attempt {
                Some(a) if a.number == self.attempt => {
                    a.workers.iter().filter(|w| !a.ended.contains(*w)).cloned().collect()
                }
                _ => Vec::new(),
            };
            if workers.is_empty() {
                return Err(QueryError::NotRunning(
                    "the job's attempt no longer runs on any worker (it is restarting or ending); try again".into(),
                ));
            }
            st.next_query += 1;
            let id = st.next_query;
            st.queries.insert(id, tx);
            for w in &workers {
                let query = proto::StateQuery {
                    attempt: self.attempt,
                    request_id: id,
                    uid: uid.to_string(),
                    state: state.to_string(),
                    key_json: key_json.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                };
                self.shared.send_to(&st, w, Out::Query(query));
            }
            (id, workers.len())
        };
        // A worker waits for its subtask at most `timeout`; then the reply's trip.
        let deadline = Instant::now() + timeout + QUERY_REPLY_TIMEOUT;
        let mut replies = QueryReplies::default();
        while replies.answered < asked {
            match rx.recv_deadline(deadline) {
                Ok(answer) => {
                    if replies.add(answer) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        self.shared.lock().queries.remove(&id);
        replies.outcome(uid, asked, timeout)
    }
}

/// The workers' replies to one query, merged: the owner's answer, else the
/// first failure that is not "not here" (an unknown uid names the
/// queryable operators of every worker that answered).
#[derive(Default)]
struct QueryReplies {
    answered: usize,
    result: Option<StateAnswer>,
    failure: Option<QueryError>,
    queryable: std::collections::BTreeSet<String>,
}

impl QueryReplies {
    /// Count one reply; true when it is the answer (no need to wait for more).
    fn add(&mut self, reply: wire::WorkerAnswer) -> bool {
        self.answered += 1;
        self.queryable.extend(reply.queryable);
        match reply.result {
            Ok(answer) => {
                self.result = Some(answer);
                return true;
            }
            Err(QueryError::NotHere(_)) => {}
            Err(e) => {
                self.failure.get_or_insert(e);
            }
        }
        false
    }

    fn outcome(self, uid: &str, asked: usize, timeout: Duration) -> Result<StateAnswer, QueryError> {
        let queryable: Vec<String> = self.queryable.into_iter().collect();
        if let Some(answer) = self.result {
            return Ok(answer);
        }
        match self.failure {
            // Each worker knows only its own operators.
            Some(QueryError::UnknownOperator(_)) => return Err(query::unknown_operator(uid, false, &queryable)),
            Some(e) => return Err(e),
            None => {}
        }
        if self.answered < asked {
            return Err(QueryError::Unavailable(format!(
                "{} of the job's {asked} workers did not answer within {} ms; try again, or raise \
                 cairn.queryable-state.timeout",
                asked - self.answered,
                timeout.as_millis()
            )));
        }
        // Every worker said the key's subtask is not theirs: the operator
        // has no queryable state, or its owning subtask's worker is gone.
        if queryable.iter().any(|u| u == uid) {
            return Err(QueryError::Unavailable(format!(
                "no worker runs the subtask of operator '{uid}' that owns the key now (the job may be \
                 restarting or rescaling); try again"
            )));
        }
        Err(query::unknown_operator(uid, true, &queryable))
    }
}

/// Tells the workers of an attempt where each snapshot goes, before its
/// barrier is injected.
struct Destinations {
    shared: Arc<Shared>,
    attempt: u32,
}

impl Destinations {
    fn workers(&self, st: &State) -> Vec<String> {
        match &st.attempt {
            Some(a) if a.number == self.attempt => {
                a.workers.iter().filter(|w| !a.ended.contains(*w)).cloned().collect()
            }
            _ => Vec::new(),
        }
    }
}

impl DestinationListener for Destinations {
    fn registered(&self, dest: &SnapshotDestination) {
        let kind = match dest.request.kind {
            SnapshotRequestKind::Checkpoint { incremental: false } => 0,
            SnapshotRequestKind::Checkpoint { incremental: true } => 1,
            SnapshotRequestKind::NativeSavepoint => 2,
            SnapshotRequestKind::CanonicalSavepoint => 3,
        };
        let msg = proto::Destination {
            attempt: self.attempt,
            checkpoint_id: dest.checkpoint_id,
            dir: dest.dir.to_string_lossy().into_owned(),
            shared_dir: dest
                .shared_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind,
        };
        let deadline = Instant::now() + DESTINATION_TIMEOUT;
        let mut st = self.shared.lock();
        let workers = self.workers(&st);
        for w in &workers {
            self.shared.send_to(&st, w, Out::Destination(msg.clone()));
        }
        // A worker that does not confirm in time declines the snapshot
        // when its barrier arrives; that only fails this checkpoint.
        while Instant::now() < deadline {
            let ready = match &st.attempt {
                Some(a) if a.number == self.attempt => {
                    let have = a.ready.get(&dest.checkpoint_id);
                    self.workers(&st).iter().all(|w| have.is_some_and(|h| h.contains(w)))
                }
                _ => true,
            };
            if ready {
                break;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(a) = st.attempt.as_mut() {
            a.ready.remove(&dest.checkpoint_id);
        }
    }

    fn completed(&self, checkpoint_id: u64) {
        self.end(checkpoint_id, false);
    }

    fn aborted(&self, checkpoint_id: u64) {
        self.end(checkpoint_id, true);
    }
}

impl Destinations {
    fn end(&self, checkpoint_id: u64, aborted: bool) {
        let st = self.shared.lock();
        for w in self.workers(&st) {
            self.shared.send_to(
                &st,
                &w,
                Out::DestinationEnd(proto::DestinationEnd { checkpoint_id, aborted }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(e: QueryError, queryable: &[&str]) -> wire::WorkerAnswer {
        wire::WorkerAnswer {
            result: Err(e),
            queryable: queryable.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_unknown_uid_names_the_queryable_operators_of_every_worker() {
        let mut replies = QueryReplies::default();
        let unknown = |ops: &str| QueryError::UnknownOperator(format!("... operators with queryable state: {ops}"));
        assert!(!replies.add(failure(unknown("'tally'"), &["tally"])));
        assert!(!replies.add(failure(unknown("'totals'"), &["totals"])));
        assert!(!replies.add(failure(unknown("none"), &[])));
        let e = replies.outcome("nope", 3, Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the job has no operator with uid 'nope'; operators with queryable state: 'tally', 'totals'"
        );
    }

    #[test]
    fn replies_all_not_here_or_missing_say_why() {
        let not_here = || QueryError::NotHere("elsewhere".into());
        let mut replies = QueryReplies::default();
        replies.add(failure(not_here(), &["totals"]));
        replies.add(failure(not_here(), &[]));
        let e = replies.outcome("events", 2, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&e, QueryError::UnknownOperator(m) if m.contains("operator 'events' has no queryable state") && m.ends_with("'totals'")),
            "{e}"
        );
        // A queryable operator whose owning subtask no worker runs now.
        let mut replies = QueryReplies::default();
        replies.add(failure(not_here(), &["totals"]));
        replies.add(failure(not_here(), &[]));
        let e = replies.outcome("totals", 2, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&e, QueryError::Unavailable(m) if m.contains("no worker runs the subtask of operator 'totals'")),
            "{e}"
        );
        let mut replies = QueryReplies::default();
        replies.add(failure(not_here(), &["totals"]));
        let e = replies.outcome("totals", 2, Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(&e, QueryError::Unavailable(m) if m.starts_with("1 of the job's 2 workers did not answer within 300 ms")),
            "{e}"
        );
    }

    #[test]
    fn the_owners_answer_wins_over_the_others_replies() {
        let answer = StateAnswer {
            uid: "totals".into(),
            operator: "totals".into(),
            state: "totals".into(),
            state_name: "totals".into(),
            kind: cairn_state::StateKind::Value,
            value_type: "u64".into(),
            key: serde_json::json!(1),
            key_group: 0,
            subtask: 1,
            value: Some(serde_json::json!(5)),
        };
        let mut replies = QueryReplies::default();
        replies.add(failure(QueryError::NotHere("elsewhere".into()), &["totals"]));
        assert!(replies.add(wire::WorkerAnswer {
            result: Ok(answer.clone()),
            queryable: Vec::new()
        }));
        assert_eq!(replies.outcome("totals", 2, Duration::from_secs(1)), Ok(answer));
    }
}
