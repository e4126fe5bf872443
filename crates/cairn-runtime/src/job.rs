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
use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::barrier::BarrierSettings;
use crate::channel::{ChannelId, InputChannel, LaneId, OutputChannel, PriorityEvent, Transport};
use crate::channel_state::{decode_channel_messages, ChannelDescriptor};
use crate::debloat::DebloatSettings;
use crate::error::{Cancelled, JobError};
use crate::operator::{OpenContext, OperatorLogic, SubtaskInfo};
use crate::output::{EdgeWiring, PortFactory, PortOutput, SendContext, TaskMetrics};
use crate::query::{QueryRoutes, QueryableOperator};
use crate::record::Message;
use crate::source::SourceLogic;
use crate::task::{Head, Task, TaskCommand, TaskEvent, TaskId, TaskInput, TaskInputs, TaskSettings};
use crate::upload::SnapshotUploader;

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
    /// Connects the tasks (in-process channels; a network transport later).
    pub transport: Arc<dyn Transport>,
}

/// Runtime knobs read from configuration.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeSettings {
    pub batch_size: usize,
    pub channel_capacity: usize,
    pub exactly_once: bool,
    /// Aligned or unaligned checkpoints, and the aligned-checkpoint timeout.
    pub barriers: BarrierSettings,
    /// Buffer debloating, when enabled.
    pub debloat: Option<DebloatSettings>,
    /// How long a partly filled output batch may wait (`None`: until full).
    pub buffer_timeout: Option<std::time::Duration>,
}

impl RuntimeSettings {
    /// Read from the job's configuration.
    pub fn from_config(config: &Configuration) -> Self {
        use cairn_config::options;
        let exactly_once = config.get(&options::CHECKPOINTING_MODE) == cairn_config::CheckpointingMode::ExactlyOnce;
        RuntimeSettings {
            batch_size: config.get(&options::RUNTIME_BATCH_SIZE).max(1) as usize,
            channel_capacity: config.get(&options::RUNTIME_CHANNEL_CAPACITY).max(1) as usize,
            exactly_once,
            barriers: BarrierSettings {
                exactly_once,
                // As in Flink, unaligned checkpoints exist only in exactly-once mode.
                unaligned: exactly_once && config.get(&options::CHECKPOINTING_UNALIGNED),
                aligned_timeout_ms: config.get(&options::CHECKPOINTING_ALIGNED_TIMEOUT).as_millis() as u64,
            },
            debloat: config.get(&options::BUFFER_DEBLOAT_ENABLED).then(|| DebloatSettings {
                target: config.get(&options::BUFFER_DEBLOAT_TARGET),
                period: config.get(&options::BUFFER_DEBLOAT_PERIOD),
                samples: config.get(&options::BUFFER_DEBLOAT_SAMPLES),
                threshold_percent: config.get(&options::BUFFER_DEBLOAT_THRESHOLD_PERCENTAGES),
            }),
            buffer_timeout: config
                .get(&options::BUFFER_TIMEOUT_ENABLED)
                .then(|| config.get(&options::BUFFER_TIMEOUT_INTERVAL)),
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
    /// Where live state queries for this attempt go.
    pub queries: Arc<QueryRoutes>,
}

/// State to restore a subtask with.
#[derive(Default)]
pub struct SubtaskRestore {
    /// A backend (made by the job's factory) holding the restored keyed state.
    pub keyed: Option<Box<dyn KeyedStateBackend>>,
    pub operator_state: OperatorStateStore,
    /// Unaligned checkpoints: the in-flight messages of input channels,
    /// replayed before any new input.
    pub channel_state: Vec<RestoredChannelState>,
}

/// The channel state of one input channel of the old job, for one subtask.
#[derive(Clone, Debug)]
pub struct RestoredChannelState {
    /// The channel it was captured on.
    pub channel: ChannelDescriptor,
    /// Its messages, encoded as in the channel-state file.
    pub messages: Vec<u8>,
    /// The restore changed the parallelism of the channel's edge (either
    /// end): it is replayed on a channel of the same edge.
    pub rescaled: bool,
    /// Keyed edges restored at another parallelism: only the records of
    /// these key groups belong to this subtask.
    pub key_groups: Option<KeyGroupRange>,
    /// Replay order across channels (`channel_state::ChannelIndexEntry::tier`):
    /// higher tiers first.
    pub tier: u32,
}

/// Which of the edges between the same two nodes' ports edge `ei` is (0
/// unless one stream feeds one input twice): part of a channel's name.
pub fn edge_ordinal(g: &ResolvedGraph, ei: usize) -> u32 {
    let e = &g.edges[ei];
    g.edges[..ei]
        .iter()
        .filter(|o| o.source == e.source && o.target == e.target && o.target_input == e.target_input)
        .count() as u32
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
    start_tasks(spec, settings, attempt, wait_for_release, uploader, restore, &|_| true)
}

/// [`start`] for the tasks `local` selects: a worker of a distributed job
/// runs its share of the subtasks. Every channel is still asked of the
/// transport (in the same order on every process, so channel indices agree);
/// a network transport connects the ends of local tasks to remote ones.
pub fn start_tasks(
    spec: &JobSpec,
    settings: RuntimeSettings,
    attempt: u32,
    wait_for_release: bool,
    uploader: &Arc<SnapshotUploader>,
    restore: RestoreFn<'_>,
    local: &dyn Fn(TaskId) -> bool,
) -> Result<RunningJob, JobError> {
    let g = &spec.graph;
    let chain_of: HashMap<usize, usize> = g
        .chains
        .iter()
        .enumerate()
        .flat_map(|(c, nodes)| nodes.iter().map(move |n| (n.0, c)))
        .collect();
    let is_chain_head = |node: usize| g.chains[chain_of[&node]][0].0 == node;

    // Channels for every edge that crosses tasks, through the job's
    // transport: output channels per (edge, source subtask), input channels
    // per (target node, target subtask), and one priority lane per receiving
    // task for barrier announcements.
    let mut senders: HashMap<(usize, u32), Vec<OutputChannel>> = HashMap::new();
    let mut receivers: HashMap<(usize, u32), Vec<TaskInput>> = HashMap::new();
    let mut lanes: HashMap<(usize, u32), (Sender<PriorityEvent>, Receiver<PriorityEvent>)> = HashMap::new();
    let capacity = u32::try_from(settings.channel_capacity).unwrap_or(u32::MAX);
    // Debloating starts low (two batches in flight) and raises the credits
    // of fast receivers at its first period; starting at the capacity
    // would fill every channel before the first measurement.
    let initial_credits = if settings.debloat.is_some() {
        capacity.min(2)
    } else {
        capacity
    };
    for (ei, e) in g.edges.iter().enumerate() {
        if !is_chain_head(e.target.0) {
            continue; // chained: records pass by function call
        }
        let (sp, tp) = (g.node(e.source).parallelism, g.node(e.target).parallelism);
        let codec = spec.nodes[e.source.0]
            .ports
            .get(e.source_port)
            .map(|p| p.codec.clone())
            .ok_or_else(|| JobError::Internal(format!("edge {ei} leaves a port its node does not have")))?;
        let edge_ordinal = edge_ordinal(g, ei);
        for i in 0..sp {
            let targets: Vec<u32> = match e.partitioning {
                Partitioning::Forward => vec![i],
                _ => (0..tp).collect(),
            };
            let mut txs = Vec::with_capacity(targets.len());
            for j in targets {
                let id = ChannelId {
                    edge: ei,
                    source_subtask: i,
                    target_subtask: j,
                };
                let (s_ends, r_ends) = spec.transport.channel(id, capacity, initial_credits, &codec);
                let lane = lanes.entry((e.target.0, j)).or_insert_with(|| {
                    spec.transport.priority_lane(LaneId {
                        chain: chain_of[&e.target.0],
                        subtask: j,
                    })
                });
                let inputs = receivers.entry((e.target.0, j)).or_default();
                txs.push(OutputChannel::new(s_ends, lane.0.clone(), inputs.len()));
                inputs.push(TaskInput {
                    edge: ei,
                    input: e.target_input,
                    channel: InputChannel::new(r_ends),
                    codec: codec.clone(),
                    descriptor: ChannelDescriptor {
                        input: e.target_input,
                        source_operator_id: g.node(e.source).operator_id.clone(),
                        edge_ordinal,
                        source_subtask: i,
                    },
                    inbox: Default::default(),
                    restored: Default::default(),
                });
            }
            senders.insert((ei, i), txs);
        }
    }
    // Only the senders keep a lane open: it disconnects when all are gone.
    let mut lanes: HashMap<(usize, u32), Receiver<PriorityEvent>> =
        lanes.into_iter().map(|(k, (_, rx))| (k, rx)).collect();

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
        queries: Arc::new(QueryRoutes::default()),
    };
    let mut routes = QueryRoutes {
        operators: Vec::new(),
        uids: g.nodes.iter().map(|n| n.uid.clone()).collect(),
        partial: false,
        remote: None,
    };
    let mut tasks = Vec::new();
    for (ci, chain) in g.chains.iter().enumerate() {
        let head = g.node(chain[0]);
        let tail = g.node(*chain.last().expect("non-empty chain"));
        for s in 0..head.parallelism {
            let id = TaskId { chain: ci, subtask: s };
            if !local(id) {
                routes.partial = true;
                continue; // another process runs it
            }
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
            let open_ctx = |node: usize,
                            restore: RestoreFn<'_>|
             -> Result<(OpenContext, Vec<RestoredChannelState>), JobError> {
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
                Ok((
                    OpenContext {
                        info: info_for(node),
                        config: spec.config.clone(),
                        keyed,
                        operator_state: restored.operator_state,
                    },
                    restored.channel_state,
                ))
            };
            let task_err = |node: usize, e: crate::error::BoxError| JobError::Task {
                operator: g.node(cairn_graph::NodeId(node)).name.clone(),
                uid: g.node(cairn_graph::NodeId(node)).uid.clone(),
                subtask: s,
                parallelism: g.node(cairn_graph::NodeId(node)).parallelism,
                message: format!("failed to open: {e}"),
                source: Some(e),
            };
            let (mut head_part, op_nodes): (Head, &[cairn_graph::NodeId]) = match &spec.nodes[head.id.0].code {
                NodeCode::Source(factory) => {
                    let mut src = factory();
                    let (ctx, _) = open_ctx(head.id.0, restore)?;
                    src.open(ctx).map_err(|e| task_err(head.id.0, e))?;
                    running.source_tasks.push(id);
                    (Head::Source(src), &chain[1..])
                }
                NodeCode::Operator(_) => {
                    let channels = receivers.remove(&(head.id.0, s)).unwrap_or_default();
                    let priority = lanes.remove(&(head.id.0, s)).unwrap_or_else(crossbeam_channel::never);
                    (Head::Inputs(TaskInputs { channels, priority }), &chain[..])
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
                let (ctx, channel_state) = open_ctx(n.0, restore)?;
                op.open(ctx).map_err(|e| task_err(n.0, e))?;
                if let Head::Inputs(inputs) = &mut head_part {
                    replay_channel_state(spec, n.0, s, channel_state, &mut inputs.channels)?;
                }
                ops.push((n.0, op));
            }
            let mut queries = None;
            for (node, op) in &mut ops {
                let states = op.keyed_state().map(|s| s.queryable_states()).unwrap_or_default();
                if states.is_empty() {
                    continue;
                }
                let n = g.node(cairn_graph::NodeId(*node));
                let tx = queries.get_or_insert_with(crate::query::mailbox).0.clone();
                let entry = match routes.operators.iter().position(|o| o.node == *node) {
                    Some(i) => &mut routes.operators[i],
                    None => {
                        routes.operators.push(QueryableOperator {
                            node: *node,
                            uid: n.uid.clone(),
                            name: n.name.clone(),
                            parallelism: n.parallelism,
                            max_parallelism: n.max_parallelism,
                            key_codec: spec.nodes[*node].key_codec.clone(),
                            states: Vec::new(),
                            mailboxes: vec![None; n.parallelism as usize],
                        });
                        routes.operators.last_mut().expect("just pushed")
                    }
                };
                for st in states {
                    if !entry.states.iter().any(|x| x.name == st.name) {
                        entry.states.push(st);
                    }
                }
                if let Some(slot) = entry.mailboxes.get_mut(s as usize) {
                    *slot = Some(tx);
                }
            }
            let send_ctx = SendContext {
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
                outputs.push((factory.make)(wirings, send_ctx.clone()));
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
                        barriers: settings.barriers,
                        debloat: settings.debloat,
                        buffer_timeout: settings.buffer_timeout,
                        wait_for_release,
                    },
                    source_node,
                    snapshot_nodes,
                    uploader: uploader.clone(),
                    last_snapshot: None,
                    finished: false,
                    drained: true,
                    queries: queries.map(|(_, rx)| rx),
                    flush_due: None,
                },
            ));
        }
    }
    running.queries = Arc::new(routes);
    for (name, task) in tasks {
        let handle = std::thread::Builder::new()
            .name(name.chars().take(60).collect())
            .spawn(move || task.run())
            .map_err(|e| JobError::Internal(format!("could not start a task thread: {e}")))?;
        running.handles.push(handle);
    }
    Ok(running)
}

/// Put the restored channel state of node `node`, subtask `s` into its input
/// channels' inboxes, to be processed before anything new: on the channel it
/// was captured on, or (rescaled) on a channel of the same edge, filtered to
/// the subtask's key groups for keyed edges. State of an edge that no longer
/// reaches this task fails the start.
fn replay_channel_state(
    spec: &JobSpec,
    node: usize,
    s: u32,
    mut channel_state: Vec<RestoredChannelState>,
    inputs: &mut [TaskInput],
) -> Result<(), JobError> {
    // Higher tiers first, each channel's messages in their order.
    channel_state.sort_by_key(|c| std::cmp::Reverse(c.tier));
    let g = &spec.graph;
    let n = g.node(cairn_graph::NodeId(node));
    let named = |descriptor: &ChannelDescriptor, what: String| {
        JobError::Setup(crate::error::SetupError::new(
            crate::error::SetupErrorKind::IncompatibleState,
            format!(
                "the channel state of operator '{}' (uid '{}'), subtask {}, {descriptor}: {what}",
                n.name,
                n.uid,
                s + 1
            ),
        ))
    };
    for restored in channel_state {
        let d = &restored.channel;
        let exact = inputs.iter().position(|i| i.descriptor == *d);
        let at = match exact {
            Some(at) => Some(at),
            None if restored.rescaled => {
                let same_edge: Vec<usize> = (0..inputs.len())
                    .filter(|&i| {
                        let o = &inputs[i].descriptor;
                        o.input == d.input
                            && o.source_operator_id == d.source_operator_id
                            && o.edge_ordinal == d.edge_ordinal
                    })
                    .collect();
                (!same_edge.is_empty()).then(|| same_edge[d.source_subtask as usize % same_edge.len()])
            }
            None => None,
        };
        let Some(at) = at else {
            return Err(named(
                d,
                "this job has no such input channel any more (its topology changed). In-flight records of an \
                 unaligned checkpoint restore only into the job's same edges: restore the old job, take a \
                 savepoint (savepoints are always aligned) and change the job from that"
                    .into(),
            ));
        };
        let inp = &mut inputs[at];
        let messages = decode_channel_messages(&restored.messages, &*inp.codec)
            .map_err(|e| named(d, format!("it does not decode as {}: {e}", inp.codec.record_type())))?;
        let key_fn = spec.edge_keys.get(inp.edge).cloned().flatten();
        for msg in messages {
            let msg = match msg {
                Message::Records(mut batch, count, _) => match (restored.key_groups, &key_fn) {
                    (Some(range), Some(key_fn)) => {
                        let kept = inp
                            .codec
                            .retain_key_groups(&mut batch, &**key_fn, n.max_parallelism, range)
                            .map_err(|e| named(d, format!("its records' keys cannot be computed: {e}")))?;
                        if kept == 0 {
                            continue;
                        }
                        Message::Records(batch, kept, None)
                    }
                    _ => Message::Records(batch, count, None),
                },
                // Watermarks and idleness described the upstream subtask as it
                // was; after a restore it starts over (and its source splits
                // may have been dealt to another subtask), so replaying them
                // could end event time on a channel that still gets records
                // (timers would fire early). The restarted upstream sends its own.
                Message::Watermark(_) | Message::Idle(_) => continue,
                other => other,
            };
            inp.push_restored(restored.tier, msg);
        }
    }
    Ok(())
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
