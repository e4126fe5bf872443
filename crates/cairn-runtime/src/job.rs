//! Running a job: wiring channels between subtasks, spawning one thread per
//! task, watching them, and failing the whole job (naming the operator and
//! subtask) when one fails, so that nothing hangs.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use cairn_config::Configuration;
use cairn_graph::{NodeKind, Partitioning, ResolvedGraph};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{BackendContext, KeyedStateAccess, KeyedStateBackend, OperatorStateStore, StateBackendFactory};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::error::{Cancelled, JobError};
use crate::operator::{OpenContext, OperatorLogic, SubtaskInfo};
use crate::output::{EdgeWiring, PortFactory, PortOutput, SendContext, TaskMetrics};
use crate::record::Message;
use crate::source::SourceLogic;
use crate::task::{Head, Task, TaskCommand, TaskEvent, TaskId, TaskSettings};
use crate::upload::SnapshotUploader;

/// The receivers of one subtask, each with the logical input (0/1) it feeds.
type InputChannels = Vec<(usize, Receiver<Message>)>;

/// Creates a fresh operator instance for one subtask.
pub type OperatorFactory = Arc<dyn Fn() -> Box<dyn OperatorLogic> + Send + Sync>;
/// Creates a fresh source instance for one subtask.
pub type SourceFactory = Arc<dyn Fn() -> Box<dyn SourceLogic> + Send + Sync>;

/// The code of one node.
#[derive(Clone)]
pub enum NodeCode {
    Source(SourceFactory),
    Operator(OperatorFactory),
}

/// A node's code and its output ports (index 0 = main output).
#[derive(Clone)]
pub struct NodeLogic {
    pub code: NodeCode,
    pub ports: Vec<PortFactory>,
    /// Keyed nodes: renders the key type as JSON and splits backend keys into
    /// key and namespace (canonical savepoints); `None` for other nodes.
    pub key_codec: Option<cairn_state::canonical::KeyCodec>,
}

/// Everything needed to run a job.
#[derive(Clone)]
pub struct JobSpec {
    pub graph: ResolvedGraph,
    /// By node index.
    pub nodes: Vec<NodeLogic>,
    /// By edge index: the `KeyBytesFn<T>` of key-group edges.
    pub edge_keys: Vec<Option<Arc<dyn Any + Send + Sync>>>,
    pub config: Arc<Configuration>,
    pub job_id: String,
    /// Creates every keyed operator subtask's state backend.
    pub backends: Arc<dyn StateBackendFactory>,
    /// Processing time of every task (the system clock unless a test injects one).
    pub clock: crate::time::SharedClock,
}

/// Runtime knobs read from configuration.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeSettings {
    pub batch_size: usize,
    pub channel_capacity: usize,
    pub exactly_once: bool,
}

impl RuntimeSettings {
    /// Read from the job's configuration.
    pub fn from_config(config: &Configuration) -> Self {
        use cairn_config::options;
        RuntimeSettings {
            batch_size: config.get(&options::RUNTIME_BATCH_SIZE).max(1) as usize,
            channel_capacity: config.get(&options::RUNTIME_CHANNEL_CAPACITY).max(1) as usize,
            exactly_once: config.get(&options::CHECKPOINTING_MODE) == cairn_config::CheckpointingMode::ExactlyOnce,
        }
    }
}

/// A running attempt of a job: its tasks, their command channels and events.
pub struct RunningJob {
    pub tasks: Vec<TaskId>,
    pub commands: HashMap<TaskId, Sender<TaskCommand>>,
    pub events: Receiver<TaskEvent>,
    pub cancel: Arc<AtomicBool>,
    pub metrics: Vec<(TaskId, Arc<TaskMetrics>)>,
    pub handles: Vec<JoinHandle<()>>,
    /// Source tasks, which receive checkpoint triggers.
    pub source_tasks: Vec<TaskId>,
}

/// State to restore a subtask with.
#[derive(Default)]
pub struct SubtaskRestore {
    /// A backend (made by the job's factory) holding the restored keyed state.
    pub keyed: Option<Box<dyn KeyedStateBackend>>,
    pub operator_state: OperatorStateStore,
}

/// Supplies restored state per (node, subtask); `None` = start empty.
pub type RestoreFn<'a> = &'a mut dyn FnMut(usize, u32, KeyGroupRange) -> Result<SubtaskRestore, JobError>;

/// Display name of a chain: its operators' names joined by " -> ".
pub fn chain_name(graph: &ResolvedGraph, chain: usize) -> String {
    graph.chains[chain]
        .iter()
        .map(|n| graph.node(*n).name.as_str())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The context a keyed node's backend is created with.
pub fn backend_context(spec: &JobSpec, node: usize, subtask: u32, attempt: u32) -> BackendContext {
    let n = spec.graph.node(cairn_graph::NodeId(node));
    BackendContext {
        job_id: spec.job_id.clone(),
        operator_id: n.operator_id.clone(),
        uid: n.uid.clone(),
        subtask,
        key_groups: KeyGroupRange::for_subtask(n.max_parallelism, n.parallelism, subtask),
        attempt,
    }
}

/// Wire and start every task of `spec`; tasks upload their snapshots
/// through `uploader`.
pub fn start(
    spec: &JobSpec,
    settings: RuntimeSettings,
    attempt: u32,
    wait_for_release: bool,
    uploader: &Arc<SnapshotUploader>,
    restore: RestoreFn<'_>,
) -> Result<RunningJob, JobError> {
    let g = &spec.graph;
    let chain_of: HashMap<usize, usize> = g
        .chains
        .iter()
        .enumerate()
        .flat_map(|(c, nodes)| nodes.iter().map(move |n| (n.0, c)))
        .collect();
    let is_chain_head = |node: usize| g.chains[chain_of[&node]][0].0 == node;

    // Channels for every edge that crosses tasks: senders per (edge, source
    // subtask), receivers per (target node, target subtask).
    let mut senders: HashMap<(usize, u32), Vec<Sender<Message>>> = HashMap::new();
    let mut receivers: HashMap<(usize, u32), InputChannels> = HashMap::new();
    for (ei, e) in g.edges.iter().enumerate() {
        if !is_chain_head(e.target.0) {
            continue; // chained: records pass by function call
        }
        let (sp, tp) = (g.node(e.source).parallelism, g.node(e.target).parallelism);
        for i in 0..sp {
            let targets: Vec<u32> = match e.partitioning {
                Partitioning::Forward => vec![i],
                _ => (0..tp).collect(),
            };
            let mut txs = Vec::with_capacity(targets.len());
            for j in targets {
                let (tx, rx) = bounded(settings.channel_capacity);
                txs.push(tx);
                receivers.entry((e.target.0, j)).or_default().push((e.target_input, rx));
            }
            senders.insert((ei, i), txs);
        }
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let (ev_tx, ev_rx) = unbounded();
    let mut running = RunningJob {
        tasks: Vec::new(),
        commands: HashMap::new(),
        events: ev_rx,
        cancel: cancel.clone(),
        metrics: Vec::new(),
        handles: Vec::new(),
        source_tasks: Vec::new(),
    };
    let mut tasks = Vec::new();
    for (ci, chain) in g.chains.iter().enumerate() {
        let head = g.node(chain[0]);
        let tail = g.node(*chain.last().expect("non-empty chain"));
        for s in 0..head.parallelism {
            let id = TaskId { chain: ci, subtask: s };
            let metrics = Arc::new(TaskMetrics::for_chain(chain.iter().map(|n| n.0)));
            let info_for = |node: usize| {
                let n = g.node(cairn_graph::NodeId(node));
                SubtaskInfo {
                    job_id: spec.job_id.clone(),
                    operator_name: n.name.clone(),
                    uid: n.uid.clone(),
                    operator_id: n.operator_id.clone(),
                    subtask: s,
                    parallelism: n.parallelism,
                    max_parallelism: n.max_parallelism,
                    attempt,
                    clock: spec.clock.clone(),
                }
            };
            let open_ctx = |node: usize, restore: RestoreFn<'_>| -> Result<OpenContext, JobError> {
                let n = g.node(cairn_graph::NodeId(node));
                let range = KeyGroupRange::for_subtask(n.max_parallelism, n.parallelism, s);
                let restored = restore(node, s, range)?;
                let keyed = if n.keyed {
                    let backend = match restored.keyed {
                        Some(b) => b,
                        None => spec
                            .backends
                            .create(&backend_context(spec, node, s, attempt))
                            .map_err(|e| {
                                let message = format!(
                                    "cannot create the {} state backend of operator '{}' (uid '{}'), subtask {}: {e}",
                                    spec.backends.name(),
                                    n.name,
                                    n.uid,
                                    s + 1
                                );
                                JobError::Setup(
                                    crate::error::SetupError::new(crate::error::SetupErrorKind::StateBackend, message)
                                        .with_source(e),
                                )
                            })?,
                    };
                    Some(KeyedStateAccess::new(backend))
                } else {
                    None
                };
                Ok(OpenContext {
                    info: info_for(node),
                    config: spec.config.clone(),
                    keyed,
                    operator_state: restored.operator_state,
                })
            };
            let task_err = |node: usize, e: crate::error::BoxError| JobError::Task {
                operator: g.node(cairn_graph::NodeId(node)).name.clone(),
                uid: g.node(cairn_graph::NodeId(node)).uid.clone(),
                subtask: s,
                parallelism: g.node(cairn_graph::NodeId(node)).parallelism,
                message: format!("failed to open: {e}"),
                source: Some(e),
            };
            let (head_part, op_nodes): (Head, &[cairn_graph::NodeId]) = match &spec.nodes[head.id.0].code {
                NodeCode::Source(factory) => {
                    let mut src = factory();
                    src.open(open_ctx(head.id.0, restore)?)
                        .map_err(|e| task_err(head.id.0, e))?;
                    running.source_tasks.push(id);
                    (Head::Source(src), &chain[1..])
                }
                NodeCode::Operator(_) => {
                    let inputs = receivers.remove(&(head.id.0, s)).unwrap_or_default();
                    (Head::Inputs(inputs), &chain[..])
                }
            };
            let mut ops = Vec::new();
            for n in op_nodes {
                let NodeCode::Operator(factory) = &spec.nodes[n.0].code else {
                    return Err(JobError::Internal(format!(
                        "source '{}' inside a chain",
                        g.node(*n).name
                    )));
                };
                let mut op = factory();
                op.open(open_ctx(n.0, restore)?).map_err(|e| task_err(n.0, e))?;
                ops.push((n.0, op));
            }
            let send_ctx = SendContext {
                cancel: cancel.clone(),
                metrics: metrics.clone(),
                batch_size: settings.batch_size,
            };
            let mut outputs: Vec<Box<dyn PortOutput>> = Vec::new();
            for (port, factory) in spec.nodes[tail.id.0].ports.iter().enumerate() {
                let mut wirings = Vec::new();
                for (ei, e) in g.outputs_of(tail.id) {
                    if e.source_port != port {
                        continue;
                    }
                    let target = g.node(e.target);
                    wirings.push(EdgeWiring {
                        partitioning: e.partitioning,
                        targets: senders.remove(&(ei, s)).unwrap_or_default(),
                        key_fn: spec.edge_keys.get(ei).cloned().flatten(),
                        target_parallelism: target.parallelism,
                        target_max_parallelism: target.max_parallelism,
                        subtask: s,
                    });
                }
                outputs.push(factory(wirings, send_ctx.clone()));
            }
            let (cmd_tx, cmd_rx) = unbounded();
            running.commands.insert(id, cmd_tx);
            running.tasks.push(id);
            running.metrics.push((id, metrics.clone()));
            let source_node = matches!(head.kind, NodeKind::Source).then_some(head.id.0);
            let snapshot_nodes = chain
                .iter()
                .map(|n| {
                    let node = g.node(*n);
                    (n.0, node.operator_id.clone(), spec.nodes[n.0].key_codec.clone())
                })
                .collect();
            tasks.push((
                format!("{} ({}/{})", chain_name(g, ci), s + 1, head.parallelism),
                Task {
                    id,
                    head: head_part,
                    ops,
                    outputs,
                    commands: cmd_rx,
                    events: ev_tx.clone(),
                    cancel: cancel.clone(),
                    metrics,
                    clock: spec.clock.clone(),
                    settings: TaskSettings {
                        batch_size: settings.batch_size,
                        exactly_once: settings.exactly_once,
                        wait_for_release,
                    },
                    source_node,
                    snapshot_nodes,
                    uploader: uploader.clone(),
                    last_snapshot: None,
                    finished: false,
                    drained: true,
                },
            ));
        }
    }
    for (name, task) in tasks {
        let handle = std::thread::Builder::new()
            .name(name.chars().take(60).collect())
            .spawn(move || task.run())
            .map_err(|e| JobError::Internal(format!("could not start a task thread: {e}")))?;
        running.handles.push(handle);
    }
    Ok(running)
}

impl RunningJob {
    /// Ask every task to stop and wait for all threads.
    pub fn cancel_and_join(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }

    /// Records emitted so far by the source tasks.
    pub fn source_records(&self) -> u64 {
        self.metrics
            .iter()
            .filter(|(id, _)| self.source_tasks.contains(id))
            .map(|(_, m)| m.source_records.load(Ordering::Relaxed))
            .sum()
    }

    /// Send a command to a task (ignored when the task already exited).
    pub fn command(&self, task: TaskId, cmd: TaskCommand) {
        if let Some(tx) = self.commands.get(&task) {
            let _ = tx.send(cmd);
        }
    }
}

/// Describe a task failure as a job error naming the operator and subtask;
/// the error user code returned stays its source.
pub fn task_failure(spec: &JobSpec, task: TaskId, op: Option<usize>, error: crate::error::BoxError) -> JobError {
    let g = &spec.graph;
    let chain = &g.chains[task.chain];
    // `op` indexes the chain's operators after a source head.
    let node = match op {
        Some(i) => {
            let offset = usize::from(g.node(chain[0]).kind == NodeKind::Source);
            chain.get(i + offset).copied().unwrap_or(chain[0])
        }
        None => chain[0],
    };
    let n = g.node(node);
    JobError::Task {
        operator: n.name.clone(),
        uid: n.uid.clone(),
        subtask: task.subtask,
        parallelism: n.parallelism,
        message: error.to_string(),
        source: Some(error),
    }
}

/// Whether an error is only the echo of a cancellation.
pub fn is_cancellation(error: &crate::error::BoxError) -> bool {
    error.downcast_ref::<Cancelled>().is_some()
}
