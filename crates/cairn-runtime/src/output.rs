//! Sending records to the next tasks: partitioners (forward, key groups,
//! rebalance, broadcast) with per-target batch buffers feeding the targets'
//! channels (`channel.rs`), which queue what credits do not yet allow.

use std::any::Any;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_graph::Partitioning;
use cairn_state::keygroup::KeyGroupRouter;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::OutputChannel;
use crate::codec::{batch_codec, BatchCodec};
use crate::error::{BoxError, OpResult};
use crate::operator::downcast_batch;
use crate::record::{AnyBatch, Barrier, BatchKeys, Message, StreamRecord};

/// Writes a record's key bytes (the canonical key encoding) for `key_by` edges.
pub struct KeyBytesFn<T>(pub Box<WriteKeyBytes<T>>);

/// Writes the key bytes of a record into a buffer.
pub type WriteKeyBytes<T> = dyn Fn(&T, &mut Vec<u8>) -> OpResult + Send + Sync;

/// Shared per-task counters, read by progress reporting and metrics. The
/// task updates them once per batch (relaxed atomics), never per record.
#[derive(Default, Debug)]
pub struct TaskMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records a source head produced (before any chained operator).
    pub source_records: AtomicU64,
    /// Nanoseconds spent waiting for credits of output channels.
    pub backpressure_ns: AtomicU64,
    /// Nanoseconds spent waiting for input (or, for a source, for data).
    pub idle_ns: AtomicU64,
    /// When the task started (ms since the epoch); busy time is the rest.
    pub started_ms: AtomicU64,
    /// The task's current input watermark (`i64::MIN` before the first).
    pub watermark: AtomicI64,
    /// Batches the task's input channels may have in flight towards it now
    /// (their capacity, or less with buffer debloating); 0 for sources.
    pub in_flight_limit: AtomicU64,
    /// Records they may have in flight: per channel its credits times the
    /// batch size, or the smaller batch it asks for (debloating).
    pub in_flight_records_limit: AtomicU64,
    /// Per operator of the chain, in chain order (a source head first).
    pub operators: Vec<OperatorMetrics>,
}

/// Counters of one operator of a chain in one subtask.
#[derive(Debug)]
pub struct OperatorMetrics {
    /// The operator's node index in the job graph.
    pub node: usize,
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
}

impl TaskMetrics {
    /// Counters for a task running `nodes` (in chain order).
    pub fn for_chain(nodes: impl IntoIterator<Item = usize>) -> TaskMetrics {
        TaskMetrics {
            watermark: AtomicI64::new(i64::MIN),
            operators: nodes
                .into_iter()
                .map(|node| OperatorMetrics {
                    node,
                    records_in: AtomicU64::new(0),
                    records_out: AtomicU64::new(0),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Adds to chain position `i`'s records in (no-op past the chain).
    pub fn add_in(&self, i: usize, n: u64) {
        if let Some(o) = self.operators.get(i) {
            o.records_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds to chain position `i`'s records out (no-op past the chain).
    pub fn add_out(&self, i: usize, n: u64) {
        if let Some(o) = self.operators.get(i) {
            o.records_out.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Everything a port needs to write to one edge's targets.
pub struct EdgeWiring {
    pub partitioning: Partitioning,
    /// One channel per target subtask this subtask sends to (one for forward).
    pub targets: Vec<OutputChannel>,
    /// For key-group edges: a `KeyBytesFn<T>`.
    pub key_fn: Option<Arc<dyn Any + Send + Sync>>,
    pub target_parallelism: u32,
    pub target_max_parallelism: u32,
    /// This subtask's index, to spread round-robin starts.
    pub subtask: u32,
}

/// Context shared by all ports of a task.
#[derive(Clone)]
pub struct SendContext {
    pub metrics: Arc<TaskMetrics>,
    pub batch_size: usize,
}

/// Queue `records` on `ch` as messages of at most `max` records.
fn enqueue_in_batches<T: Send + 'static>(
    ch: &mut OutputChannel,
    records: Vec<StreamRecord<T>>,
    max: usize,
) -> OpResult {
    let max = max.max(1);
    if records.len() <= max {
        return ch.enqueue(records_message(records, None));
    }
    let mut it = records.into_iter();
    loop {
        let chunk: Vec<StreamRecord<T>> = it.by_ref().take(max).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        ch.enqueue(records_message(chunk, None))?;
    }
}

/// A batch as a message, with its record count (and keys, if known).
fn records_message<T: Send + 'static>(records: Vec<StreamRecord<T>>, keys: Option<BatchKeys>) -> Message {
    let n = records.len() as u64;
    Message::Records(Box::new(records), n, keys.map(Box::new))
}

/// One output port of a task's last operator, with all the edges it feeds.
/// Nothing here blocks: messages wait in their channel's queue until the
/// receiver grants credits, and the task loop waits for those between
/// batches (where it still sees barriers and commands).
pub trait PortOutput: Send {
    /// Partition a batch of this port's record type into the targets' buffers.
    fn send_batch(&mut self, batch: AnyBatch) -> OpResult;
    /// Queue every non-empty buffer.
    fn flush(&mut self) -> OpResult;
    /// Whether some records wait in a partly filled buffer (not yet queued).
    fn buffered(&self) -> bool;
    /// Flush, then queue a control message (made fresh per target) to every target.
    fn control(&mut self, make: &dyn Fn() -> Message) -> OpResult;
    /// Flush, then announce `barrier` to every target and queue it in line.
    fn barrier(&mut self, barrier: Barrier) -> OpResult;
    /// How many records of input the port's receivers take at once when
    /// some of them ask for smaller batches (buffer debloating): per
    /// key-group edge the sum of its targets' limits, per other edge the
    /// smallest; the least over the edges. `None` when nobody limits.
    fn input_budget(&mut self) -> Option<u64>;
    /// The port's channels (every edge's targets).
    fn channels(&self) -> &[OutputChannel];
    /// The port's channels, to send what credits allow.
    fn channels_mut(&mut self) -> &mut [OutputChannel];
}

/// Builds a port's output from its edges' wiring, and knows how to encode
/// the port's records (channel state, remote edges).
#[derive(Clone)]
pub struct PortFactory {
    pub make: Arc<dyn Fn(Vec<EdgeWiring>, SendContext) -> Box<dyn PortOutput> + Send + Sync>,
    pub codec: Arc<dyn BatchCodec>,
}

/// The port factory for records of type `T`.
pub fn port_factory<T: Clone + Send + Serialize + DeserializeOwned + 'static>() -> PortFactory {
    PortFactory {
        make: Arc::new(|edges, ctx| Box::new(TypedPort::<T>::new(edges, ctx)) as Box<dyn PortOutput>),
        codec: batch_codec::<T>(),
    }
}

/// One edge of a port: its partitioner and a batch buffer per target; the
/// targets are `channels[first..first + buffers.len()]` of the port.
struct EdgeWriter<T> {
    partitioning: Partitioning,
    first: usize,
    buffers: Vec<Vec<StreamRecord<T>>>,
    /// Key-group edges: per target, the keys of the records in its buffer.
    keys: Vec<BatchKeys>,
    key_fn: Option<Arc<KeyBytesFn<T>>>,
    /// Per target, the records per message now (reused buffer).
    limits: Vec<usize>,
    /// Key-group edges: the key group and target subtask of a key.
    router: Option<KeyGroupRouter>,
    next: usize,
    key_buf: Vec<u8>,
}

struct TypedPort<T> {
    edges: Vec<EdgeWriter<T>>,
    channels: Vec<OutputChannel>,
    ctx: SendContext,
}

impl<T: Clone + Send + 'static> TypedPort<T> {
    fn new(wirings: Vec<EdgeWiring>, ctx: SendContext) -> Self {
        let mut channels = Vec::new();
        let edges = wirings
            .into_iter()
            .map(|w| {
                let key_fn = w.key_fn.map(|k| {
                    k.downcast::<KeyBytesFn<T>>()
                        .unwrap_or_else(|_| panic!("key_by function of the wrong record type: a Cairn wiring bug"))
                });
                let first = channels.len();
                let n = w.targets.len();
                channels.extend(w.targets);
                EdgeWriter {
                    partitioning: w.partitioning,
                    first,
                    buffers: (0..n).map(|_| Vec::new()).collect(),
                    keys: (0..n).map(|_| BatchKeys::default()).collect(),
                    next: w.subtask as usize % n.max(1),
                    key_fn,
                    limits: Vec::with_capacity(n),
                    router: (w.partitioning == Partitioning::KeyGroups)
                        .then(|| KeyGroupRouter::new(w.target_max_parallelism, w.target_parallelism)),
                    key_buf: Vec::with_capacity(32),
                }
            })
            .collect();
        TypedPort { edges, channels, ctx }
    }
}

impl<T: Clone + Send + 'static> EdgeWriter<T> {
    fn write(
        &mut self,
        mut records: Vec<StreamRecord<T>>,
        channels: &mut [OutputChannel],
        ctx: &SendContext,
    ) -> OpResult {
        let targets = &mut channels[self.first..self.first + self.buffers.len()];
        // What each target takes per message: the batch size, or less when
        // its receiver asks for smaller batches (buffer debloating).
        let limit = |ch: &mut OutputChannel| {
            ch.batch_limit()
                .map_or(ctx.batch_size, |l| (l as usize).min(ctx.batch_size))
        };
        match self.partitioning {
            Partitioning::KeyGroups => {
                let key_fn = self
                    .key_fn
                    .as_ref()
                    .ok_or_else(|| -> BoxError { "key_by edge without key function".into() })?;
                let router = self
                    .router
                    .as_ref()
                    .ok_or_else(|| -> BoxError { "key_by edge without key-group router".into() })?;
                self.limits.clear();
                self.limits.extend(targets.iter_mut().map(limit));
                for rec in records.drain(..) {
                    (key_fn.0)(&rec.value, &mut self.key_buf)?;
                    let kg = router.key_group(&self.key_buf);
                    let t = router.subtask(kg);
                    self.buffers[t].push(rec);
                    self.keys[t].push(&self.key_buf, kg);
                    if self.buffers[t].len() >= self.limits[t] {
                        let full = std::mem::replace(&mut self.buffers[t], Vec::with_capacity(self.limits[t]));
                        let keys = std::mem::replace(&mut self.keys[t], BatchKeys::with_capacity(self.limits[t]));
                        targets[t].enqueue(records_message(full, Some(keys)))?;
                    }
                }
                Ok(())
            }
            Partitioning::Broadcast => {
                let n = targets.len();
                for (i, ch) in targets.iter_mut().enumerate() {
                    let batch = if i + 1 == n {
                        std::mem::take(&mut records)
                    } else {
                        records.clone()
                    };
                    let max = limit(ch);
                    enqueue_in_batches(ch, batch, max)?;
                }
                Ok(())
            }
            Partitioning::Rebalance => {
                let t = self.next;
                self.next = (self.next + 1) % targets.len();
                let max = limit(&mut targets[t]);
                enqueue_in_batches(&mut targets[t], records, max)
            }
            Partitioning::Forward | Partitioning::Auto => {
                let max = limit(&mut targets[0]);
                enqueue_in_batches(&mut targets[0], records, max)
            }
        }
    }

    fn flush(&mut self, channels: &mut [OutputChannel]) -> OpResult {
        let keyed = self.key_fn.is_some();
        for (t, buf) in self.buffers.iter_mut().enumerate() {
            if !buf.is_empty() {
                let full = std::mem::take(buf);
                let keys = keyed.then(|| std::mem::take(&mut self.keys[t]));
                channels[self.first + t].enqueue(records_message(full, keys))?;
            }
        }
        Ok(())
    }
}

impl<T: Clone + Send + 'static> PortOutput for TypedPort<T> {
    fn send_batch(&mut self, batch: AnyBatch) -> OpResult {
        let records = *downcast_batch::<T>(batch, "output")?;
        let n = records.len() as u64;
        self.ctx.metrics.records_out.fetch_add(n, Ordering::Relaxed);
        let last = self.edges.len().saturating_sub(1);
        let mut records = Some(records);
        for i in 0..self.edges.len() {
            let batch = if i == last {
                records.take().expect("records present for the last edge")
            } else {
                records.as_ref().expect("records present").clone()
            };
            self.edges[i].write(batch, &mut self.channels, &self.ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> OpResult {
        for e in &mut self.edges {
            e.flush(&mut self.channels)?;
        }
        Ok(())
    }

    fn buffered(&self) -> bool {
        self.edges.iter().any(|e| e.buffers.iter().any(|b| !b.is_empty()))
    }

    fn control(&mut self, make: &dyn Fn() -> Message) -> OpResult {
        self.flush()?;
        for ch in &mut self.channels {
            ch.enqueue(make())?;
        }
        Ok(())
    }

    fn barrier(&mut self, barrier: Barrier) -> OpResult {
        self.flush()?;
        for ch in &mut self.channels {
            ch.emit_barrier(barrier)?;
        }
        Ok(())
    }

    fn input_budget(&mut self) -> Option<u64> {
        let batch = self.ctx.batch_size as u64;
        let mut budget: Option<u64> = None;
        for e in &self.edges {
            let targets = &mut self.channels[e.first..e.first + e.buffers.len()];
            let limits: Vec<Option<u32>> = targets.iter_mut().map(|c| c.batch_limit()).collect();
            if limits.iter().all(Option::is_none) {
                continue;
            }
            let each = limits.iter().map(|l| l.map_or(batch, u64::from).min(batch));
            let edge = match e.partitioning {
                Partitioning::KeyGroups => each.sum(),
                _ => each.min().unwrap_or(batch),
            };
            budget = Some(budget.map_or(edge, |b: u64| b.min(edge)));
        }
        budget
    }

    fn channels(&self) -> &[OutputChannel] {
        &self.channels
    }

    fn channels_mut(&mut self) -> &mut [OutputChannel] {
        &mut self.channels
    }
}
