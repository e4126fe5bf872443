//! The task: one thread running one subtask of a chain of operators. Its head
//! is a source or a set of input channels; records pass through the chained
//! operators by function call and leave through the last operator's ports.
//!
//! The loop never blocks inside a send: output waits for credits in its
//! channels' queues, and the loop, between batches, either processes input
//! (when no output is backlogged) or waits for whatever can move it on:
//! credits, commands, barrier announcements, or, while an unaligned
//! checkpoint captures channel state, the in-flight data it reads ahead. So
//! a backpressured task still snapshots at once and reacts to commands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};

use crate::barrier::{BarrierAction, BarrierHandler, BarrierSettings};
use crate::channel::{InputChannel, PriorityEvent};
use crate::channel_state::{ChannelDescriptor, ChannelLog, ChannelStateUpload, TierLog};
use crate::codec::BatchCodec;
use crate::debloat::Debloater;
use crate::error::{BoxError, Cancelled};
use crate::input::InputState;
use cairn_snapshot::StateFileRef;
use cairn_state::canonical::KeyCodec;
use cairn_state::BackendSnapshot;

use crate::operator::{Emitter, OperatorLogic, OperatorSnapshot};
use crate::output::{PortOutput, TaskMetrics};
use crate::query::{StateQuery, QUERIES_PER_TURN};
use crate::record::{AnyBatch, Barrier, BatchKeys, Message, MAX_WATERMARK};
use crate::source::{SourceLogic, SourceStatus};
use crate::time::{now_ms, SharedClock};
use crate::upload::{OperatorUpload, SnapshotDestination, SnapshotUploader, UploadJob};

/// Release what an unused snapshot holds (a file snapshot's local files).
fn discard(snapshot: OperatorSnapshot) {
    if let Some(BackendSnapshot::Files(set)) = snapshot.keyed {
        set.discard();
    }
}

/// Identifies a task: (chain index, subtask index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub chain: usize,
    pub subtask: u32,
}

/// Commands from the job coordinator to a task.
#[derive(Debug)]
pub enum TaskCommand {
    /// Sources only: start checkpoint `barrier` (snapshot, emit the barrier).
    TriggerCheckpoint(Barrier),
    NotifyCheckpointComplete(u64),
    NotifyCheckpointAborted(u64),
    /// Stop a finished task that waited for its final checkpoint.
    Release,
    /// Sources only: stop producing and end the input (stop-with-savepoint);
    /// `drain` first advances event time to the end so every timer fires.
    StopSource {
        drain: bool,
    },
}

/// Events from a task (or its snapshot upload) to the job coordinator.
pub enum TaskEvent {
    /// The task took the synchronous part of its snapshot for a checkpoint;
    /// its upload is under way.
    Snapshotted { task: TaskId, checkpoint_id: u64 },
    /// The task's snapshot for a checkpoint is durable: its files per node.
    Acknowledge {
        task: TaskId,
        checkpoint_id: u64,
        files: Vec<(usize, Vec<StateFileRef>)>,
        alignment: Duration,
        sync: Duration,
        /// Time the upload took.
        write: Duration,
        /// The task snapshotted before all barriers arrived (unaligned).
        unaligned: bool,
        /// Bytes of channel state written (in-flight records).
        persisted_bytes: u64,
    },
    /// The task declined a checkpoint (its snapshot failed).
    Decline {
        task: TaskId,
        checkpoint_id: u64,
        reason: crate::error::CheckpointFailure,
    },
    /// All input processed; waiting for release (final checkpoint) or done.
    Finished { task: TaskId },
    /// The task failed in operator `op` (index in the chain; None for the runtime).
    Failed {
        task: TaskId,
        op: Option<usize>,
        error: BoxError,
    },
    /// The thread exited.
    Exited { task: TaskId },
}

/// A failure attributed to a chain position.
struct Fail {
    op: Option<usize>,
    error: BoxError,
}

fn at(op: usize) -> impl FnOnce(BoxError) -> Fail {
    move |error| Fail { op: Some(op), error }
}

/// Call operator `level`, turning an error or a panic into that operator's failure
/// (a panic caught only at the thread would blame the chain's head).
fn guarded<R>(level: usize, f: impl FnOnce() -> crate::error::OpResult<R>) -> Result<R, Fail> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(at(level)),
        Err(payload) => Err(Fail {
            op: Some(level),
            error: crate::error::panic_message(&*payload).into(),
        }),
    }
}

fn runtime(error: BoxError) -> Fail {
    Fail { op: None, error }
}

/// Where records enter the task.
pub enum Head {
    Source(Box<dyn SourceLogic>),
    Inputs(TaskInputs),
}

/// A task's input channels and its priority lane.
pub struct TaskInputs {
    pub channels: Vec<TaskInput>,
    /// Barrier announcements of every input channel.
    pub priority: Receiver<PriorityEvent>,
}

/// One input channel of a task.
pub struct TaskInput {
    /// Index of its edge in the job graph.
    pub edge: usize,
    /// The logical input (0, or 1 for two-input operators) it feeds.
    pub input: usize,
    pub channel: InputChannel,
    /// Encodes its records (channel state).
    pub codec: Arc<dyn BatchCodec>,
    /// Which upstream it comes from (names its channel state).
    pub descriptor: ChannelDescriptor,
    /// Messages read but not processed yet, processed before the data lane:
    /// restored channel state first, then what unaligned captures read ahead.
    pub inbox: VecDeque<Message>,
    /// The restored channel state at the front of `inbox`: runs of
    /// (tier, messages), highest tier first. While any channel has some,
    /// only the channels whose front has the highest tier are processed: a
    /// restore may move a key to another channel (a rescale, a source split
    /// dealt to another subtask), so what was restored goes before anything
    /// that came after it, and a higher tier before a lower one.
    pub restored: VecDeque<(u32, usize)>,
}

impl TaskInput {
    /// Queue a restored message of `tier` (in replay order).
    pub fn push_restored(&mut self, tier: u32, msg: Message) {
        self.inbox.push_back(msg);
        self.channel.hold();
        match self.restored.back_mut() {
            Some((t, n)) if *t == tier => *n += 1,
            _ => self.restored.push_back((tier, 1)),
        }
    }

    /// The tier of the restored message at the front, if the front is one.
    fn front_tier(&self) -> Option<u32> {
        self.restored.front().map(|(t, _)| *t)
    }

    /// Take the front message of the inbox, with its tier if restored.
    fn pop(&mut self) -> Option<(Message, Option<u32>)> {
        let msg = self.inbox.pop_front()?;
        self.channel.release();
        let tier = self.restored.front_mut().map(|(t, n)| {
            *n -= 1;
            *t
        });
        if self.restored.front().is_some_and(|(_, n)| *n == 0) {
            self.restored.pop_front();
        }
        Some((msg, tier))
    }

    /// Put the unprocessed rest of a message back at the front.
    fn push_front(&mut self, msg: Message, tier: Option<u32>) {
        self.inbox.push_front(msg);
        self.channel.hold();
        if let Some(tier) = tier {
            match self.restored.front_mut() {
                Some((t, n)) if *t == tier => *n += 1,
                _ => self.restored.push_front((tier, 1)),
            }
        }
    }

    /// The inbox's messages with the tier they get as channel state: a
    /// restored message of tier t gets t + 1, the others 0.
    fn inbox_tiers(&self) -> impl Iterator<Item = (u32, &Message)> {
        let mut runs = self.restored.iter().flat_map(|&(t, n)| std::iter::repeat_n(t + 1, n));
        self.inbox.iter().map(move |m| (runs.next().unwrap_or(0), m))
    }
}

/// Settings the task loop needs.
#[derive(Clone, Copy)]
pub struct TaskSettings {
    pub batch_size: usize,
    /// How checkpoint barriers are handled at inputs.
    pub barriers: BarrierSettings,
    /// `None` when buffer debloating is off.
    pub debloat: Option<crate::debloat::DebloatSettings>,
    /// How long a partly filled output batch may wait for more records
    /// (`execution.buffer-timeout.*`); `None`: until it is full.
    pub buffer_timeout: Option<Duration>,
    /// Wait for `Release` after finishing (a final checkpoint must commit first).
    pub wait_for_release: bool,
}

/// One running subtask of a chain.
pub struct Task {
    pub id: TaskId,
    pub head: Head,
    /// The chain's operators after the head (for source chains) or including
    /// the head operator (for input chains), with their node indices.
    pub ops: Vec<(usize, Box<dyn OperatorLogic>)>,
    pub outputs: Vec<Box<dyn PortOutput>>,
    pub commands: Receiver<TaskCommand>,
    pub events: Sender<TaskEvent>,
    pub cancel: Arc<AtomicBool>,
    pub metrics: Arc<TaskMetrics>,
    /// Processing time, for processing-time timers.
    pub clock: SharedClock,
    pub settings: TaskSettings,
    /// Node index of the source (for source chains).
    pub source_node: Option<usize>,
    /// Per node of the chain (source first): operator id and key codec, for
    /// the snapshot files.
    pub snapshot_nodes: Vec<(usize, String, Option<KeyCodec>)>,
    /// Where snapshots are uploaded.
    pub uploader: Arc<SnapshotUploader>,
    /// The last snapshot taken (ids increase).
    pub last_snapshot: Option<u64>,
    /// All input is processed; a checkpoint now snapshots final state and
    /// sends no barrier (nobody downstream reads any more).
    pub finished: bool,
    /// False once the input was stopped without draining: operators keep
    /// their state and timers for the savepoint instead of flushing.
    pub drained: bool,
    /// Live state queries for this task's keyed operators; `None` when none
    /// of them registered queryable state.
    pub queries: Option<Receiver<StateQuery>>,
    /// When the records now waiting in partly filled output batches must
    /// leave (the buffer timeout after they were first seen waiting).
    pub(crate) flush_due: Option<Instant>,
}

/// The synchronous part of a snapshot, until it is handed to the uploader.
struct HeldSnapshot {
    destination: Arc<SnapshotDestination>,
    operators: Vec<OperatorUpload>,
    alignment: Duration,
    sync: Duration,
}

impl HeldSnapshot {
    fn discard(self) {
        for op in self.operators {
            discard(op.snapshot);
        }
    }
}

/// An unaligned checkpoint whose channel state is being captured.
struct Capture {
    checkpoint_id: u64,
    /// One log per input channel: what was in flight (tier 0).
    logs: Vec<ChannelLog>,
    /// Per input channel, restored messages still not processed at the
    /// snapshot, by tier (highest first).
    restored: Vec<Vec<(u32, ChannelLog)>>,
    /// `None` when the snapshot was declined: capture for the barrier
    /// bookkeeping, upload nothing.
    held: Option<HeldSnapshot>,
}

/// The input loop's state beside the task.
struct InputLoop {
    inputs: TaskInputs,
    barriers: BarrierHandler,
    watermarks: InputState,
    /// Since the pending checkpoint's first barrier or announcement here.
    align_start: Option<Instant>,
    capture: Option<Capture>,
    /// Where the next round-robin read starts.
    next: usize,
    scratch: Vec<u8>,
    debloat: Option<Debloat>,
    /// Seconds per record of the chain (moving average), to cut batches of
    /// slow operators into slices.
    record_cost: Option<f64>,
}

/// How long a task processes input before it looks at its priority lane,
/// commands and credits again. A batch that would take longer (a slow
/// operator: 1 ms per record makes a batch of 1024 take a second) is
/// processed in slices, so an unaligned checkpoint's snapshot, a command or
/// an alignment timeout waits for one slice at most, not for a whole batch.
const PROCESSING_SLICE: Duration = Duration::from_millis(10);
/// Records of the first slice, before a record's cost is known.
const FIRST_SLICE_RECORDS: u64 = 64;

/// Buffer debloating of a task's inputs, with when its period began.
struct Debloat {
    debloater: Debloater,
    since: Instant,
}

/// What reading one data-lane message gave.
enum Read {
    Nothing,
    /// A barrier (handled by the bookkeeping; nothing to process).
    Barrier,
    Message(Message),
}

impl Task {
    /// Run to completion, reporting the outcome as events.
    pub fn run(mut self) {
        let id = self.id;
        let events = self.events.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_inner()));
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(f)) => Some(f),
            Err(payload) => Some(Fail {
                op: None,
                error: crate::error::panic_message(&*payload).into(),
            }),
        };
        for (_, op) in &mut self.ops {
            let _ = op.close();
        }
        if let Some(f) = failure {
            let _ = events.send(TaskEvent::Failed {
                task: id,
                op: f.op,
                error: f.error,
            });
        }
        let _ = events.send(TaskEvent::Exited { task: id });
    }

    fn run_inner(&mut self) -> Result<(), Fail> {
        self.metrics.started_ms.store(now_ms().max(0) as u64, Ordering::Relaxed);
        let inputs = TaskInputs {
            channels: Vec::new(),
            priority: crossbeam_channel::never(),
        };
        match std::mem::replace(&mut self.head, Head::Inputs(inputs)) {
            Head::Source(source) => self.run_source(source),
            Head::Inputs(inputs) => self.run_inputs(inputs),
        }
    }

    /// The metrics position of chain level `level` (a source head is 0).
    fn metric_index(&self, level: usize) -> usize {
        level + usize::from(self.source_node.is_some())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn check_cancelled(&self) -> Result<(), Fail> {
        if self.cancelled() {
            Err(runtime(Box::new(Cancelled)))
        } else {
            Ok(())
        }
    }

    /// Pass a batch into chain position `level` (== ops.len(): the outputs),
    /// with its records' keys when it came over a key-group edge.
    fn deliver(
        &mut self,
        level: usize,
        input: usize,
        port: usize,
        batch: AnyBatch,
        keys: Option<&BatchKeys>,
    ) -> Result<(), Fail> {
        if level == self.ops.len() {
            return match self.outputs.get_mut(port) {
                Some(out) => out.send_batch(batch).map_err(runtime),
                None => Ok(()), // a port nobody consumes
            };
        }
        let mut em = Emitter::default();
        let op = &mut self.ops[level].1;
        guarded(level, || match keys {
            Some(keys) => op.process_keyed_batch(input, batch, keys, &mut em),
            None => op.process_batch(input, batch, &mut em),
        })?;
        self.forward_emitted(level, em)
    }

    fn forward_emitted(&mut self, level: usize, em: Emitter) -> Result<(), Fail> {
        let n = em.records();
        if n > 0 {
            self.metrics.add_out(self.metric_index(level), n);
            if level + 1 < self.ops.len() {
                self.metrics.add_in(self.metric_index(level + 1), n);
            }
        }
        let last = level + 1 == self.ops.len();
        for (port, b) in em.batches {
            if last || port == 0 {
                self.deliver(level + 1, 0, port, b, None)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Fail> {
        for o in &mut self.outputs {
            o.flush().map_err(runtime)?;
        }
        Ok(())
    }

    /// Send partly filled output batches once the buffer timeout has passed
    /// since records were first seen waiting in them (at once with a zero
    /// timeout, never with none: then only full batches and control messages
    /// send them). Batches stay full across a `key_by` that splits each input
    /// batch over many targets.
    fn flush_if_due(&mut self) -> Result<(), Fail> {
        let Some(timeout) = self.settings.buffer_timeout else {
            return Ok(());
        };
        if timeout.is_zero() {
            return self.flush();
        }
        if !self.outputs.iter().any(|o| o.buffered()) {
            self.flush_due = None;
            return Ok(());
        }
        let now = Instant::now();
        match self.flush_due {
            Some(due) if now >= due => {
                self.flush_due = None;
                self.flush()
            }
            Some(_) => Ok(()),
            None => {
                self.flush_due = Some(now + timeout);
                Ok(())
            }
        }
    }

    /// `cap`, shortened to when waiting output batches must leave.
    fn flush_cap(&self, cap: Duration) -> Duration {
        match self.flush_due {
            Some(due) => cap.min(due.saturating_duration_since(Instant::now())),
            None => cap,
        }
    }

    fn control_all(&mut self, make: &dyn Fn() -> Message) -> Result<(), Fail> {
        for o in &mut self.outputs {
            o.control(make).map_err(runtime)?;
        }
        Ok(())
    }

    /// How much input to take at once so that one step's output fits what
    /// slow receivers ask for per message (buffer debloating); `None`: no limit.
    fn input_budget(&mut self) -> Option<u64> {
        self.outputs.iter_mut().filter_map(|o| o.input_budget()).min()
    }

    /// Send what credits allow; returns whether some output still waits for
    /// credits (the task is backpressured).
    fn pump_outputs(&mut self) -> Result<bool, Fail> {
        let mut backlogged = false;
        for o in &mut self.outputs {
            for c in o.channels_mut() {
                backlogged |= c.pump().map_err(runtime)?;
            }
        }
        Ok(backlogged)
    }

    /// Wait until something may have changed: a command (when `commands`),
    /// credits for a backlogged output, and for an input loop its priority
    /// lane and the data lanes it reads (`want_data`: the ones it processes;
    /// always the ones an unaligned capture reads ahead).
    fn wait(&self, st: Option<&InputLoop>, commands: bool, want_data: bool, timeout: Duration) {
        let mut sel = Select::new();
        if commands {
            sel.recv(&self.commands);
            // An idle task wakes for a state query at once.
            if let Some(queries) = &self.queries {
                sel.recv(queries);
            }
        }
        if let Some(st) = st {
            sel.recv(&st.inputs.priority);
            for (ch, inp) in st.inputs.channels.iter().enumerate() {
                let process = want_data && inp.inbox.is_empty() && st.barriers.readable(ch);
                if process || st.barriers.wants_read_ahead(ch) {
                    sel.recv(inp.channel.data_lane());
                }
            }
        }
        for o in &self.outputs {
            for c in o.channels() {
                if c.backlog() > 0 {
                    sel.recv(c.credit_lane());
                }
            }
        }
        let _ = sel.ready_timeout(timeout);
    }

    /// Send everything queued (before the task reports that it finished).
    fn drain_outputs(&mut self) -> Result<(), Fail> {
        loop {
            let started = Instant::now();
            if !self.pump_outputs()? {
                return Ok(());
            }
            self.check_cancelled()?;
            self.wait(None, false, false, Duration::from_millis(100));
            self.record_backpressure(started);
        }
    }

    fn record_idle(&self, since: Instant) {
        self.metrics
            .idle_ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn record_backpressure(&self, since: Instant) {
        self.metrics
            .backpressure_ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Event time advanced: each operator fires its timers (their output flows
    /// down the chain) before the watermark moves on.
    fn advance_watermark(&mut self, wm: i64) -> Result<(), Fail> {
        self.metrics.watermark.store(wm, Ordering::Relaxed);
        for level in 0..self.ops.len() {
            let mut em = Emitter::default();
            let op = &mut self.ops[level].1;
            guarded(level, || op.on_watermark(wm, &mut em))?;
            self.forward_emitted(level, em)?;
        }
        self.control_all(&|| Message::Watermark(wm))
    }

    fn fire_processing_timers(&mut self) -> Result<(), Fail> {
        let now = self.clock.now_ms();
        for level in 0..self.ops.len() {
            if self.ops[level].1.next_processing_timer().is_some_and(|t| t <= now) {
                let mut em = Emitter::default();
                let op = &mut self.ops[level].1;
                guarded(level, || op.on_processing_time(now, &mut em))?;
                self.forward_emitted(level, em)?;
            }
        }
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.ops.iter().filter_map(|(_, op)| op.next_processing_timer()).min()
    }

    /// How long to wait at most: until the next processing timer, capped at `cap`.
    fn wait_cap(&self, cap: Duration) -> Duration {
        match self.next_processing_timer() {
            Some(t) => cap.min(Duration::from_millis((t - self.clock.now_ms()).max(0) as u64)),
            None => cap,
        }
    }

    /// Answer the queries waiting in the mailbox (at most
    /// [`QUERIES_PER_TURN`], so a flood of queries cannot stall processing).
    /// Called between batches: the state is as of a batch boundary.
    fn serve_queries(&mut self, first: Option<StateQuery>) {
        let mut next = first;
        for _ in 0..QUERIES_PER_TURN {
            let query = match next.take() {
                Some(q) => q,
                None => match self.queries.as_ref().map(Receiver::try_recv) {
                    Some(Ok(q)) => q,
                    // No one can ask any more: stop waiting on the mailbox (a
                    // closed channel is always ready and would spin the waits).
                    Some(Err(crossbeam_channel::TryRecvError::Disconnected)) => {
                        self.queries = None;
                        return;
                    }
                    _ => return,
                },
            };
            self.answer(query);
        }
    }

    fn answer(&mut self, q: StateQuery) {
        let reply = match self.ops.iter_mut().find(|(node, _)| *node == q.node) {
            Some((_, op)) => match op.keyed_state() {
                Some(state) => state.query(&q.state, &q.key, q.key_group).map_err(|e| e.to_string()),
                None => Err("the operator has no keyed state".to_string()),
            },
            None => Err(format!("node {} does not run in this task", q.node)),
        };
        // The asker may have given up waiting; nothing to do then.
        let _ = q.reply.send(reply);
    }

    /// Snapshot the chain (after the source, if any) and forward the barrier
    /// (unless finished). Returns the snapshot to upload, or `None` when it
    /// was declined (reported) or is a repeat.
    fn take_snapshot(
        &mut self,
        barrier: Barrier,
        source: Option<&mut Box<dyn SourceLogic>>,
        alignment: Duration,
    ) -> Result<Option<HeldSnapshot>, Fail> {
        let start = Instant::now();
        let id = barrier.checkpoint_id;
        // A finished task may be asked twice (at trigger and when it
        // finished); ids increase, so a snapshot at or below the last is a repeat.
        if self.last_snapshot.is_some_and(|last| id <= last) {
            return Ok(None);
        }
        self.last_snapshot = Some(id);
        let destination = self.uploader.destination(id);
        let mut states = Vec::new();
        let mut failed: Option<String> = None;
        match &destination {
            None => {
                failed = Some(format!(
                    "snapshot {id} is no longer pending (it was aborted or expired)"
                ))
            }
            Some(dest) => {
                if let (Some(src), Some(node)) = (source, self.source_node) {
                    match src.snapshot(id) {
                        Ok(s) => states.push((node, s)),
                        Err(e) => failed = Some(format!("source snapshot failed: {e}")),
                    }
                }
                for (node, op) in &mut self.ops {
                    if failed.is_some() {
                        break;
                    }
                    match op.snapshot(&dest.request) {
                        Ok(s) => states.push((*node, s)),
                        Err(e) => failed = Some(format!("snapshot of node {node} failed: {e}")),
                    }
                }
            }
        }
        if !self.finished {
            for o in &mut self.outputs {
                o.barrier(barrier).map_err(runtime)?;
            }
        }
        let task = self.id;
        let Some(destination) = destination.filter(|_| failed.is_none()) else {
            for (_, s) in states {
                discard(s);
            }
            let reason = failed.unwrap_or_default();
            let _ = self.events.send(TaskEvent::Decline {
                task,
                checkpoint_id: id,
                reason: crate::error::CheckpointFailure::Declined(reason),
            });
            return Ok(None);
        };
        let _ = self.events.send(TaskEvent::Snapshotted {
            task,
            checkpoint_id: id,
        });
        let operators = states
            .into_iter()
            .map(|(node, snapshot)| {
                let (operator_id, key_codec) = self
                    .snapshot_nodes
                    .iter()
                    .find(|(n, _, _)| *n == node)
                    .map(|(_, id, codec)| (id.clone(), codec.clone()))
                    .unwrap_or_default();
                OperatorUpload {
                    node,
                    operator_id,
                    key_codec,
                    snapshot,
                }
            })
            .collect();
        Ok(Some(HeldSnapshot {
            destination,
            operators,
            alignment,
            sync: start.elapsed(),
        }))
    }

    /// Hand a snapshot to the uploader (processing never waits for it).
    fn submit(&self, held: HeldSnapshot, channel_state: Option<ChannelStateUpload>) {
        let task = self.id;
        self.uploader.submit(UploadJob {
            task,
            subtask: task.subtask,
            destination: held.destination,
            operators: held.operators,
            channel_state,
            alignment: held.alignment,
            sync: held.sync,
            events: self.events.clone(),
        });
    }

    /// An aligned snapshot: take it, forward the barrier, upload.
    fn checkpoint(
        &mut self,
        barrier: Barrier,
        source: Option<&mut Box<dyn SourceLogic>>,
        alignment: Duration,
    ) -> Result<(), Fail> {
        if let Some(held) = self.take_snapshot(barrier, source, alignment)? {
            self.submit(held, None);
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        cmd: TaskCommand,
        source: Option<&mut Box<dyn SourceLogic>>,
        stop_source: &mut Option<bool>,
    ) -> Result<(), Fail> {
        match cmd {
            TaskCommand::TriggerCheckpoint(b) => {
                if source.is_some() || self.finished {
                    self.flush()?;
                    self.checkpoint(b, source, Duration::ZERO)?;
                }
            }
            TaskCommand::NotifyCheckpointComplete(id) => {
                if let Some(src) = source {
                    src.notify_checkpoint_complete(id).map_err(runtime)?;
                }
                for level in 0..self.ops.len() {
                    self.ops[level].1.notify_checkpoint_complete(id).map_err(at(level))?;
                }
            }
            TaskCommand::NotifyCheckpointAborted(id) => {
                for level in 0..self.ops.len() {
                    self.ops[level].1.notify_checkpoint_aborted(id).map_err(at(level))?;
                }
            }
            TaskCommand::StopSource { drain } => *stop_source = Some(drain),
            TaskCommand::Release => {}
        }
        Ok(())
    }

    fn end_of_input(&mut self) -> Result<(), Fail> {
        let drained = self.drained;
        if !drained {
            return self.control_all(&|| Message::EndOfInput { drained });
        }
        for level in 0..self.ops.len() {
            let mut em = Emitter::default();
            let op = &mut self.ops[level].1;
            guarded(level, || op.end_input(&mut em))?;
            self.forward_emitted(level, em)?;
        }
        self.control_all(&|| Message::EndOfInput { drained })
    }

    /// After the input ended and every output was sent: report, then (if
    /// asked) keep serving checkpoint notifications until the coordinator
    /// releases the task.
    fn finish(&mut self, mut source: Option<&mut Box<dyn SourceLogic>>) -> Result<(), Fail> {
        self.finished = true;
        let _ = self.events.send(TaskEvent::Finished { task: self.id });
        if !self.settings.wait_for_release {
            return Ok(());
        }
        let mut ignore = None;
        let commands = self.commands.clone();
        // Final state stays queryable until the task is released.
        let mut queries = self.queries.clone();
        loop {
            let mut sel = Select::new();
            let cmd_idx = sel.recv(&commands);
            let query_idx = queries.as_ref().map(|q| sel.recv(q));
            let Ok(oper) = sel.select_timeout(Duration::from_millis(100)) else {
                if self.cancelled() {
                    return Err(runtime(Box::new(Cancelled)));
                }
                continue;
            };
            if Some(oper.index()) == query_idx {
                match queries.as_ref().map(|q| oper.recv(q)) {
                    Some(Ok(q)) => self.serve_queries(Some(q)),
                    // Closed: no more queries (and no spinning on it).
                    _ => queries = None,
                }
                continue;
            }
            debug_assert_eq!(oper.index(), cmd_idx);
            match oper.recv(&commands) {
                Ok(TaskCommand::Release) => return Ok(()),
                Ok(cmd) => self.handle_command(cmd, source.as_deref_mut(), &mut ignore)?,
                Err(_) => return Ok(()),
            }
        }
    }

    fn run_source(&mut self, mut source: Box<dyn SourceLogic>) -> Result<(), Fail> {
        let batch_size = self.settings.batch_size;
        let mut stop: Option<bool> = None;
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                self.handle_command(cmd, Some(&mut source), &mut stop)?;
            }
            self.check_cancelled()?;
            if stop.is_some() {
                break;
            }
            self.serve_queries(None);
            // Backpressured: wait for credits (or a command), never in a send.
            let started = Instant::now();
            if self.pump_outputs()? {
                self.flush_if_due()?;
                let cap = self.flush_cap(self.wait_cap(Duration::from_millis(100)));
                self.wait(None, true, false, cap);
                self.record_backpressure(started);
                continue;
            }
            let mut em = Emitter::default();
            let budget = self
                .input_budget()
                .map_or(batch_size, |b| (b as usize).clamp(1, batch_size));
            let status = source.poll(budget, &mut em).map_err(runtime)?;
            let n = em.records();
            if n > 0 {
                self.metrics.source_records.fetch_add(n, Ordering::Relaxed);
                self.metrics.add_out(0, n);
                self.metrics.add_in(1, n);
            }
            for (port, b) in em.batches {
                self.deliver(0, 0, port, b, None)?;
            }
            if let Some(idle) = source.take_idle_change() {
                self.control_all(&|| Message::Idle(idle))?;
            }
            if let Some(wm) = source.take_watermark() {
                self.advance_watermark(wm)?;
            }
            self.fire_processing_timers()?;
            self.flush_if_due()?;
            match status {
                SourceStatus::More => {}
                SourceStatus::Finished => break,
                SourceStatus::Pending(d) => {
                    let d = self.flush_cap(self.wait_cap(d));
                    let waiting = Instant::now();
                    let cmd = self.commands.recv_timeout(d);
                    self.record_idle(waiting);
                    if let Ok(cmd) = cmd {
                        self.handle_command(cmd, Some(&mut source), &mut stop)?;
                    }
                }
            }
        }
        // Bounded input ended, or the job stops draining: event time ends
        // too, so every timer fires. Stopped without draining, it does not.
        self.drained = stop.unwrap_or(true);
        if self.drained {
            self.advance_watermark(MAX_WATERMARK)?;
        }
        self.end_of_input()?;
        self.drain_outputs()?;
        self.finish(Some(&mut source))
    }

    fn run_inputs(&mut self, inputs: TaskInputs) -> Result<(), Fail> {
        let n = inputs.channels.len();
        let mut st = InputLoop {
            inputs,
            barriers: BarrierHandler::new(n, self.settings.barriers),
            watermarks: InputState::new(n),
            align_start: None,
            capture: None,
            next: 0,
            scratch: Vec::new(),
            debloat: self.settings.debloat.map(|settings| Debloat {
                debloater: Debloater::new(settings),
                since: Instant::now(),
            }),
            record_cost: None,
        };
        self.publish_in_flight_limit(&st);
        let mut ignore = None;
        let commands = self.commands.clone();
        while !st.barriers.all_ended() {
            self.check_cancelled()?;
            // Commands and barrier announcements never wait behind data.
            while let Ok(cmd) = commands.try_recv() {
                self.handle_command(cmd, None, &mut ignore)?;
            }
            // Between two batches: a query waits for at most the one in progress.
            self.serve_queries(None);
            loop {
                match st.inputs.priority.try_recv() {
                    Ok(PriorityEvent::Announce { channel, barrier, seq }) => {
                        if channel < n {
                            st.barriers.on_announce(channel, barrier, seq, now_ms() as u64);
                            self.drive(&mut st)?;
                        }
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    // Every sender is gone: stop waiting on the lane (a closed
                    // lane is always ready and would spin the wait).
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        st.inputs.priority = crossbeam_channel::never();
                        break;
                    }
                }
            }
            if st.barriers.deadline_ms().is_some() {
                st.barriers.on_time(now_ms() as u64);
                self.drive(&mut st)?;
            }
            let backlogged = self.pump_outputs()?;
            self.read_ahead(&mut st)?;
            self.debloat(&mut st);
            if st.barriers.all_ended() {
                break;
            }
            if let Some(records) = if backlogged { None } else { self.process_next(&mut st)? } {
                if let Some(d) = &mut st.debloat {
                    d.debloater.on_processed(records);
                }
                self.fire_processing_timers()?;
                self.flush_if_due()?;
                continue;
            }
            // Nothing to process now: wait for what can change that.
            self.fire_processing_timers()?;
            self.flush_if_due()?;
            let mut cap = self.flush_cap(Duration::from_millis(100));
            if let Some(d) = st.barriers.deadline_ms() {
                cap = cap.min(Duration::from_millis(d.saturating_sub(now_ms() as u64)));
            }
            if let Some(d) = &st.debloat {
                cap = cap.min(d.debloater.until_due(d.since.elapsed()));
            }
            let cap = self.wait_cap(cap);
            let started = Instant::now();
            let backlogged = self.pump_outputs()?;
            self.wait(Some(&st), true, !backlogged, cap);
            if backlogged {
                self.record_backpressure(started);
            } else {
                self.record_idle(started);
                if let Some(d) = &mut st.debloat {
                    d.debloater.on_idle(started.elapsed());
                }
            }
        }
        self.end_of_input()?;
        self.drain_outputs()?;
        self.finish(None)
    }

    /// Read one data-lane message of channel `ch`, with the barrier
    /// bookkeeping, logging it when it is channel state being captured.
    /// `keep`: the task holds what it read unprocessed (read ahead).
    fn read_one(&mut self, st: &mut InputLoop, ch: usize, keep: bool) -> Result<Read, Fail> {
        let msg = match st.inputs.channels[ch].channel.try_read(keep) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(Read::Nothing),
            // The sender vanished without ending its input: it failed.
            Err(_) => return Err(runtime(Box::new(Cancelled))),
        };
        match &msg {
            Message::Barrier(b) => {
                st.barriers.on_barrier(ch, *b, now_ms() as u64);
                self.drive(st)?;
                return Ok(Read::Barrier);
            }
            Message::EndOfInput { .. } => {}
            Message::Records(..) | Message::Watermark(_) | Message::Idle(_) => {
                if st.barriers.on_data(ch) {
                    if let Some(cap) = &mut st.capture {
                        let codec = &st.inputs.channels[ch].codec;
                        cap.logs[ch].log(&msg, &**codec, &mut st.scratch).map_err(runtime)?;
                    }
                }
                self.drive(st)?;
            }
        }
        Ok(Read::Message(msg))
    }

    /// Read into the inboxes what unaligned captures need, without
    /// processing it. Held messages count against the channel's credits,
    /// except that one credit stays outstanding while a channel's capture
    /// still needs messages in front of its barrier (they may be queued
    /// upstream): the capture completes, and memory stays bounded.
    fn read_ahead(&mut self, st: &mut InputLoop) -> Result<(), Fail> {
        for ch in 0..st.inputs.channels.len() {
            while st.barriers.wants_read_ahead(ch) {
                st.inputs.channels[ch].channel.set_floor(1);
                match self.read_one(st, ch, true)? {
                    Read::Nothing => break,
                    Read::Barrier => {}
                    Read::Message(m) => {
                        let end = matches!(m, Message::EndOfInput { .. });
                        // Counted as held by the read.
                        st.inputs.channels[ch].inbox.push_back(m);
                        if end {
                            break;
                        }
                    }
                }
            }
            if !st.barriers.wants_read_ahead(ch) {
                st.inputs.channels[ch].channel.set_floor(0);
            }
        }
        Ok(())
    }

    /// Process the next message of some readable channel (inbox first),
    /// round robin; false when nothing was there.
    /// Restored channel state goes first: while any channel has some, only
    /// those channels are processed. Returns `None` when nothing was there,
    /// else how many records were processed.
    fn process_next(&mut self, st: &mut InputLoop) -> Result<Option<u64>, Fail> {
        let n = st.inputs.channels.len();
        let top = st.inputs.channels.iter().filter_map(TaskInput::front_tier).max();
        for i in 0..n {
            let ch = (st.next + i) % n;
            if (top.is_some() && st.inputs.channels[ch].front_tier() != top) || !st.barriers.readable(ch) {
                continue;
            }
            let (msg, tier) = match st.inputs.channels[ch].pop() {
                Some(popped) => popped,
                None => match self.read_one(st, ch, false)? {
                    Read::Nothing => continue,
                    Read::Barrier => {
                        st.next = (ch + 1) % n;
                        return Ok(Some(0));
                    }
                    Read::Message(m) => (m, None),
                },
            };
            st.next = (ch + 1) % n;
            return self.process_sliced(st, ch, msg, tier).map(Some);
        }
        Ok(None)
    }

    /// Process `msg`, cutting a batch that would take longer than
    /// [`PROCESSING_SLICE`]: its first slice is processed now and the rest
    /// goes back to the front of the channel's inbox (still unprocessed, so
    /// channel state if a snapshot comes first). Returns how many records
    /// were processed.
    fn process_sliced(&mut self, st: &mut InputLoop, ch: usize, msg: Message, tier: Option<u32>) -> Result<u64, Fail> {
        let Message::Records(mut batch, count, mut keys) = msg else {
            self.process(st, ch, msg)?;
            return Ok(0);
        };
        let by_time = match st.record_cost {
            Some(cost) => ((PROCESSING_SLICE.as_secs_f64() / cost.max(1e-9)).min(u64::MAX as f64) as u64).max(1),
            None => FIRST_SLICE_RECORDS,
        };
        let fits = self.input_budget().map_or(by_time, |b| b.clamp(1, by_time));
        let started = Instant::now();
        let now = if count <= fits {
            count
        } else {
            let inp = &mut st.inputs.channels[ch];
            let rest = inp.codec.split_off(&mut batch, fits as usize).map_err(runtime)?;
            let rest_keys = keys.as_mut().map(|k| Box::new(k.split_off(fits as usize)));
            inp.push_front(Message::Records(rest, count - fits, rest_keys), tier);
            fits
        };
        self.process(st, ch, Message::Records(batch, now, keys))?;
        if now > 0 {
            let cost = started.elapsed().as_secs_f64() / now as f64;
            st.record_cost = Some(match st.record_cost {
                Some(avg) => 0.7 * avg + 0.3 * cost,
                None => cost,
            });
        }
        Ok(now)
    }

    fn process(&mut self, st: &mut InputLoop, ch: usize, msg: Message) -> Result<(), Fail> {
        match msg {
            Message::Records(batch, n, keys) => {
                self.metrics.records_in.fetch_add(n, Ordering::Relaxed);
                self.metrics.add_in(0, n);
                let input = st.inputs.channels[ch].input;
                self.deliver(0, input, 0, batch, keys.as_deref())?;
            }
            Message::Watermark(wm) => {
                if let Some(w) = st.watermarks.on_watermark(ch, wm) {
                    self.advance_watermark(w)?;
                }
            }
            Message::Idle(idle) => {
                let was_idle = st.watermarks.all_idle();
                if let Some(w) = st.watermarks.on_idle(ch, idle) {
                    self.advance_watermark(w)?;
                }
                let now_idle = st.watermarks.all_idle();
                if was_idle != now_idle {
                    self.control_all(&|| Message::Idle(now_idle))?;
                }
            }
            // Barriers are handled when read; none reach processing.
            Message::Barrier(_) => {}
            Message::EndOfInput { drained } => {
                self.drained &= drained;
                st.barriers.on_end(ch);
                self.drive(st)?;
                let wm = st.watermarks.on_end(ch);
                // A stopped (not drained) input holds event time where it was.
                if let Some(w) = wm.filter(|_| self.drained) {
                    self.advance_watermark(w)?;
                }
            }
        }
        Ok(())
    }

    /// Act on what the barrier bookkeeping decided.
    fn drive(&mut self, st: &mut InputLoop) -> Result<(), Fail> {
        while let Some(action) = st.barriers.next_action() {
            match action {
                BarrierAction::Snapshot { barrier, unaligned } => {
                    let alignment = st.align_start.take().map_or(Duration::ZERO, |s| s.elapsed());
                    self.flush()?;
                    if !unaligned {
                        self.checkpoint(barrier, None, alignment)?;
                        continue;
                    }
                    let held = self.take_snapshot(barrier, None, alignment)?;
                    let mut logs: Vec<ChannelLog> = st.inputs.channels.iter().map(|_| ChannelLog::default()).collect();
                    let mut restored: Vec<Vec<(u32, ChannelLog)>> =
                        st.inputs.channels.iter().map(|_| Vec::new()).collect();
                    // What is still in the inboxes was not processed: channel
                    // state, restored messages one tier up.
                    for ((log, tiers), inp) in logs.iter_mut().zip(&mut restored).zip(&st.inputs.channels) {
                        for (tier, m) in inp.inbox_tiers() {
                            let log = if tier == 0 {
                                &mut *log
                            } else {
                                if tiers.last().is_none_or(|(t, _)| *t != tier) {
                                    tiers.push((tier, ChannelLog::default()));
                                }
                                &mut tiers.last_mut().expect("pushed").1
                            };
                            log.log(m, &*inp.codec, &mut st.scratch).map_err(runtime)?;
                        }
                    }
                    if let Some(old) = st.capture.take() {
                        if let Some(h) = old.held {
                            h.discard();
                        }
                    }
                    st.capture = Some(Capture {
                        checkpoint_id: barrier.checkpoint_id,
                        logs,
                        restored,
                        held,
                    });
                }
                BarrierAction::Captured { checkpoint_id } => {
                    let Some(cap) = st.capture.take() else { continue };
                    let Some(held) = cap.held.filter(|_| cap.checkpoint_id == checkpoint_id) else {
                        continue;
                    };
                    let (node, operator_id) = self
                        .snapshot_nodes
                        .first()
                        .map(|(n, id, _)| (*n, id.clone()))
                        .unwrap_or_default();
                    let mut channels = Vec::new();
                    for ((inp, live), restored) in st.inputs.channels.iter().zip(cap.logs).zip(cap.restored) {
                        for (tier, log) in restored {
                            channels.push(TierLog {
                                channel: inp.descriptor.clone(),
                                tier,
                                log,
                            });
                        }
                        channels.push(TierLog {
                            channel: inp.descriptor.clone(),
                            tier: 0,
                            log: live,
                        });
                    }
                    self.submit(
                        held,
                        Some(ChannelStateUpload {
                            node,
                            operator_id,
                            channels,
                        }),
                    );
                }
                BarrierAction::Aborted { checkpoint_id, by } => {
                    st.align_start = None;
                    if st.capture.as_ref().is_some_and(|c| c.checkpoint_id == checkpoint_id) {
                        if let Some(h) = st.capture.take().and_then(|c| c.held) {
                            h.discard();
                        }
                    }
                    let _ = self.events.send(TaskEvent::Decline {
                        task: self.id,
                        checkpoint_id,
                        reason: crate::error::CheckpointFailure::Declined(format!(
                            "checkpoint {checkpoint_id} was overtaken by checkpoint {by} during alignment"
                        )),
                    });
                }
            }
        }
        // Alignment runs from the first barrier (or announcement) of an
        // aligning checkpoint to its snapshot; a capture has none left.
        if st.barriers.pending().is_some() && !st.barriers.capturing() {
            st.align_start.get_or_insert_with(Instant::now);
        } else {
            st.align_start = None;
        }
        Ok(())
    }

    /// Buffer debloating: every period, let each live channel have in
    /// flight what this task processes in the target time (`debloat.rs`).
    fn debloat(&self, st: &mut InputLoop) {
        let Some(d) = &mut st.debloat else { return };
        let elapsed = d.since.elapsed();
        if elapsed < d.debloater.settings().period {
            return;
        }
        d.since = Instant::now();
        let live = (0..st.inputs.channels.len())
            .filter(|ch| !st.barriers.ended(*ch))
            .count();
        let capacity = st
            .inputs
            .channels
            .iter()
            .map(|c| c.channel.capacity())
            .max()
            .unwrap_or(1);
        let batch_size = u32::try_from(self.settings.batch_size).unwrap_or(u32::MAX);
        if let Some(limit) = d.debloater.on_period(elapsed, live, capacity, batch_size) {
            for inp in &mut st.inputs.channels {
                inp.channel.set_batch_limit(limit.batch_records);
                inp.channel.set_target(limit.credits);
            }
        }
        self.publish_in_flight_limit(st);
    }

    /// The batches the task's input channels may have in flight now (a metric).
    fn publish_in_flight_limit(&self, st: &InputLoop) {
        let batch = self.settings.batch_size as u64;
        let records: u64 = st
            .inputs
            .channels
            .iter()
            .map(|c| u64::from(c.channel.target()) * c.channel.batch_limit().map_or(batch, u64::from))
            .sum();
        self.metrics.in_flight_records_limit.store(records, Ordering::Relaxed);
        let limit: u64 = st.inputs.channels.iter().map(|c| u64::from(c.channel.target())).sum();
        self.metrics.in_flight_limit.store(limit, Ordering::Relaxed);
    }
}
