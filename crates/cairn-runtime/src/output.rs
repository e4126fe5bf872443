//! Sending records to the next tasks: partitioners (forward, key groups,
//! rebalance, broadcast) with per-target batch buffers, and a send that gives
//! up when the job is cancelled instead of blocking forever on a full channel.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_graph::Partitioning;
use cairn_state::keygroup::{key_group_for_bytes, subtask_for_key_group};
use crossbeam_channel::{SendTimeoutError, Sender};

use crate::error::{BoxError, Cancelled, OpResult};
use crate::operator::downcast_batch;
use crate::record::{AnyBatch, Message, StreamRecord};

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
    /// Nanoseconds spent waiting for room in full output channels.
    pub backpressure_ns: AtomicU64,
    /// Nanoseconds spent waiting for input (or, for a source, for data).
    pub idle_ns: AtomicU64,
    /// When the task started (ms since the epoch); busy time is the rest.
    pub started_ms: AtomicU64,
    /// The task's current input watermark (`i64::MIN` before the first).
    pub watermark: AtomicI64,
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
    /// One sender per target subtask this subtask sends to (one for forward).
    pub targets: Vec<Sender<Message>>,
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
    pub cancel: Arc<AtomicBool>,
    pub metrics: Arc<TaskMetrics>,
    pub batch_size: usize,
}

/// Send `msg`, waiting while the channel is full unless the job is cancelled.
pub fn send(tx: &Sender<Message>, msg: Message, ctx: &SendContext) -> OpResult {
    // Most sends find room at once; only a full channel starts the clock.
    let mut msg = match tx.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Err(Box::new(Cancelled)),
        Err(crossbeam_channel::TrySendError::Full(m)) => m,
    };
    let waited = Some(Instant::now());
    loop {
        match tx.send_timeout(msg, Duration::from_millis(50)) {
            Ok(()) => break,
            Err(SendTimeoutError::Timeout(m)) => {
                if ctx.cancel.load(Ordering::Relaxed) {
                    return Err(Box::new(Cancelled));
                }
                msg = m;
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(Box::new(Cancelled)),
        }
    }
    if let Some(start) = waited {
        ctx.metrics
            .backpressure_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// One output port of a task's last operator, with all the edges it feeds.
pub trait PortOutput: Send {
    /// Partition a batch of this port's record type into the targets' buffers.
    fn send_batch(&mut self, batch: AnyBatch) -> OpResult;
    /// Send every non-empty buffer.
    fn flush(&mut self) -> OpResult;
    /// Flush, then send a control message (made fresh per target) to every target.
    fn control(&mut self, make: &dyn Fn() -> Message) -> OpResult;
}

/// Builds a port's output from its edges' wiring.
pub type PortFactory = Arc<dyn Fn(Vec<EdgeWiring>, SendContext) -> Box<dyn PortOutput> + Send + Sync>;

/// The port factory for records of type `T`.
pub fn port_factory<T: Clone + Send + 'static>() -> PortFactory {
    Arc::new(|edges, ctx| Box::new(TypedPort::<T>::new(edges, ctx)) as Box<dyn PortOutput>)
}

struct EdgeWriter<T> {
    partitioning: Partitioning,
    targets: Vec<Sender<Message>>,
    buffers: Vec<Vec<StreamRecord<T>>>,
    key_fn: Option<Arc<KeyBytesFn<T>>>,
    target_parallelism: u32,
    target_max_parallelism: u32,
    next: usize,
    key_buf: Vec<u8>,
}

struct TypedPort<T> {
    edges: Vec<EdgeWriter<T>>,
    ctx: SendContext,
}

impl<T: Clone + Send + 'static> TypedPort<T> {
    fn new(wirings: Vec<EdgeWiring>, ctx: SendContext) -> Self {
        let edges = wirings
            .into_iter()
            .map(|w| {
                let key_fn = w.key_fn.map(|k| {
                    k.downcast::<KeyBytesFn<T>>()
                        .unwrap_or_else(|_| panic!("key_by function of the wrong record type: a Cairn wiring bug"))
                });
                EdgeWriter {
                    partitioning: w.partitioning,
                    buffers: w.targets.iter().map(|_| Vec::new()).collect(),
                    next: w.subtask as usize % w.targets.len().max(1),
                    targets: w.targets,
                    key_fn,
                    target_parallelism: w.target_parallelism,
                    target_max_parallelism: w.target_max_parallelism,
                    key_buf: Vec::with_capacity(32),
                }
            })
            .collect();
        TypedPort { edges, ctx }
    }
}

impl<T: Clone + Send + 'static> EdgeWriter<T> {
    fn write(&mut self, mut records: Vec<StreamRecord<T>>, ctx: &SendContext) -> OpResult {
        match self.partitioning {
            Partitioning::KeyGroups => {
                let key_fn = self
                    .key_fn
                    .as_ref()
                    .ok_or_else(|| -> BoxError { "key_by edge without key function".into() })?;
                for rec in records.drain(..) {
                    (key_fn.0)(&rec.value, &mut self.key_buf)?;
                    let kg = key_group_for_bytes(&self.key_buf, self.target_max_parallelism);
                    let t = subtask_for_key_group(self.target_max_parallelism, self.target_parallelism, kg) as usize;
                    self.buffers[t].push(rec);
                    if self.buffers[t].len() >= ctx.batch_size {
                        let full = std::mem::replace(&mut self.buffers[t], Vec::with_capacity(ctx.batch_size));
                        {
                            let n = full.len() as u64;
                            send(&self.targets[t], Message::Records(Box::new(full), n), ctx)?;
                        }
                    }
                }
                Ok(())
            }
            Partitioning::Broadcast => {
                let n = self.targets.len();
                for (i, tx) in self.targets.iter().enumerate() {
                    let batch = if i + 1 == n {
                        std::mem::take(&mut records)
                    } else {
                        records.clone()
                    };
                    let n = batch.len() as u64;
                    send(tx, Message::Records(Box::new(batch), n), ctx)?;
                }
                Ok(())
            }
            Partitioning::Rebalance => {
                let t = self.next;
                self.next = (self.next + 1) % self.targets.len();
                {
                    let n = records.len() as u64;
                    send(&self.targets[t], Message::Records(Box::new(records), n), ctx)
                }
            }
            Partitioning::Forward | Partitioning::Auto => {
                let n = records.len() as u64;
                send(&self.targets[0], Message::Records(Box::new(records), n), ctx)
            }
        }
    }

    fn flush(&mut self, ctx: &SendContext) -> OpResult {
        for (t, buf) in self.buffers.iter_mut().enumerate() {
            if !buf.is_empty() {
                let full = std::mem::take(buf);
                {
                    let n = full.len() as u64;
                    send(&self.targets[t], Message::Records(Box::new(full), n), ctx)?;
                }
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
            self.edges[i].write(batch, &self.ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> OpResult {
        for e in &mut self.edges {
            e.flush(&self.ctx)?;
        }
        Ok(())
    }

    fn control(&mut self, make: &dyn Fn() -> Message) -> OpResult {
        self.flush()?;
        for e in &self.edges {
            for tx in &e.targets {
                send(tx, make(), &self.ctx)?;
            }
        }
        Ok(())
    }
}
