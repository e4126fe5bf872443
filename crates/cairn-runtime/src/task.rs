//! The task: one thread running one subtask of a chain of operators. Its head
//! is a source or a set of input channels; records pass through the chained
//! operators by function call and leave through the last operator's ports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};

use crate::error::{BoxError, Cancelled};
use crate::input::{BarrierAction, InputState};
use cairn_snapshot::StateFileRef;
use cairn_state::canonical::KeyCodec;
use cairn_state::BackendSnapshot;

use crate::operator::{Emitter, OperatorLogic, OperatorSnapshot};
use crate::output::{PortOutput, TaskMetrics};
use crate::record::{AnyBatch, Barrier, Message, MAX_WATERMARK};
use crate::source::{SourceLogic, SourceStatus};
use crate::time::SharedClock;
use crate::upload::{OperatorUpload, SnapshotUploader, UploadJob};

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

/// Where records enter the task.
pub enum Head {
    Source(Box<dyn SourceLogic>),
    /// Receivers with the logical input (0/1) each one feeds.
    Inputs(Vec<(usize, Receiver<Message>)>),
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

/// Settings the task loop needs.
#[derive(Clone, Copy)]
pub struct TaskSettings {
    pub batch_size: usize,
    pub exactly_once: bool,
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
        self.metrics
            .started_ms
            .store(crate::time::now_ms().max(0) as u64, Ordering::Relaxed);
        match std::mem::replace(&mut self.head, Head::Inputs(Vec::new())) {
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

    /// Pass a batch into chain position `level` (== ops.len(): the outputs).
    fn deliver(&mut self, level: usize, input: usize, port: usize, batch: AnyBatch) -> Result<(), Fail> {
        if level == self.ops.len() {
            return match self.outputs.get_mut(port) {
                Some(out) => out.send_batch(batch).map_err(runtime),
                None => Ok(()), // a port nobody consumes
            };
        }
        let mut em = Emitter::default();
        let op = &mut self.ops[level].1;
        guarded(level, || op.process_batch(input, batch, &mut em))?;
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
                self.deliver(level + 1, 0, port, b)?;
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

    fn control_all(&mut self, make: &dyn Fn() -> Message) -> Result<(), Fail> {
        for o in &mut self.outputs {
            o.control(make).map_err(runtime)?;
        }
        Ok(())
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

    /// Snapshot the chain (after the source, if any), forward the barrier and
    /// hand the snapshot to the uploader (processing never waits for it).
    fn checkpoint(
        &mut self,
        barrier: Barrier,
        source: Option<&mut Box<dyn SourceLogic>>,
        alignment: Duration,
    ) -> Result<(), Fail> {
        let start = Instant::now();
        let id = barrier.checkpoint_id;
        // A finished task may be asked twice (at trigger and when it
        // finished); ids increase, so a snapshot at or below the last is a repeat.
        if self.last_snapshot.is_some_and(|last| id <= last) {
            return Ok(());
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
            self.control_all(&|| Message::Barrier(barrier))?;
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
            return Ok(());
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
        self.uploader.submit(UploadJob {
            task,
            subtask: task.subtask,
            destination,
            operators,
            alignment,
            sync: start.elapsed(),
            events: self.events.clone(),
        });
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

    /// After the input ended: report, then (if asked) keep serving checkpoint
    /// notifications until the coordinator releases the task.
    fn finish(&mut self, mut source: Option<&mut Box<dyn SourceLogic>>) -> Result<(), Fail> {
        self.finished = true;
        let _ = self.events.send(TaskEvent::Finished { task: self.id });
        if !self.settings.wait_for_release {
            return Ok(());
        }
        let mut ignore = None;
        loop {
            match self.commands.recv_timeout(Duration::from_millis(100)) {
                Ok(TaskCommand::Release) => return Ok(()),
                Ok(cmd) => self.handle_command(cmd, source.as_deref_mut(), &mut ignore)?,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.cancelled() {
                        return Err(runtime(Box::new(Cancelled)));
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
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
            if self.cancelled() {
                return Err(runtime(Box::new(Cancelled)));
            }
            if stop.is_some() {
                break;
            }
            let mut em = Emitter::default();
            let status = source.poll(batch_size, &mut em).map_err(runtime)?;
            let n = em.records();
            if n > 0 {
                self.metrics.source_records.fetch_add(n, Ordering::Relaxed);
                self.metrics.add_out(0, n);
                self.metrics.add_in(1, n);
            }
            for (port, b) in em.batches {
                self.deliver(0, 0, port, b)?;
            }
            if let Some(idle) = source.take_idle_change() {
                self.control_all(&|| Message::Idle(idle))?;
            }
            if let Some(wm) = source.take_watermark() {
                self.advance_watermark(wm)?;
            }
            self.fire_processing_timers()?;
            self.flush()?;
            match status {
                SourceStatus::More => {}
                SourceStatus::Finished => break,
                SourceStatus::Pending(d) => {
                    let d = match self.next_processing_timer() {
                        Some(t) => d.min(Duration::from_millis((t - self.clock.now_ms()).max(0) as u64)),
                        None => d,
                    };
                    let waiting = Instant::now();
                    let cmd = self.commands.recv_timeout(d);
                    self.metrics
                        .idle_ns
                        .fetch_add(waiting.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
        self.finish(Some(&mut source))
    }

    fn run_inputs(&mut self, inputs: Vec<(usize, Receiver<Message>)>) -> Result<(), Fail> {
        let mut state = InputState::new(inputs.len(), self.settings.exactly_once);
        let mut align_start: Option<Instant> = None;
        let mut ignore = None;
        let commands = self.commands.clone();
        while !state.all_ended() {
            if self.cancelled() {
                return Err(runtime(Box::new(Cancelled)));
            }
            let mut sel = Select::new();
            let cmd_idx = sel.recv(&commands);
            let mut map = Vec::with_capacity(inputs.len());
            for (ch, (_, rx)) in inputs.iter().enumerate() {
                if state.readable(ch) {
                    map.push((sel.recv(rx), ch));
                }
            }
            let timeout = match self.next_processing_timer() {
                Some(t) => Duration::from_millis((t - self.clock.now_ms()).clamp(0, 100) as u64),
                None => Duration::from_millis(100),
            };
            let waiting = Instant::now();
            let selected = sel.select_timeout(timeout);
            self.metrics
                .idle_ns
                .fetch_add(waiting.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let oper = match selected {
                Ok(o) => o,
                Err(_) => {
                    self.fire_processing_timers()?;
                    self.flush()?;
                    continue;
                }
            };
            let idx = oper.index();
            if idx == cmd_idx {
                match oper.recv(&commands) {
                    Ok(cmd) => self.handle_command(cmd, None, &mut ignore)?,
                    Err(_) => return Err(runtime(Box::new(Cancelled))),
                }
                continue;
            }
            let ch = map
                .iter()
                .find(|(i, _)| *i == idx)
                .map(|(_, c)| *c)
                .expect("selected a mapped channel");
            let (input, rx) = &inputs[ch];
            let msg = match oper.recv(rx) {
                Ok(m) => m,
                // The sender vanished without ending its input: it failed.
                Err(_) => return Err(runtime(Box::new(Cancelled))),
            };
            match msg {
                Message::Records(batch, n) => {
                    self.metrics.records_in.fetch_add(n, Ordering::Relaxed);
                    self.metrics.add_in(0, n);
                    self.deliver(0, *input, 0, batch)?;
                }
                Message::Watermark(wm) => {
                    if let Some(w) = state.on_watermark(ch, wm) {
                        self.advance_watermark(w)?;
                    }
                }
                Message::Idle(idle) => {
                    let was_idle = state.all_idle();
                    if let Some(w) = state.on_idle(ch, idle) {
                        self.advance_watermark(w)?;
                    }
                    let now_idle = state.all_idle();
                    if was_idle != now_idle {
                        self.control_all(&|| Message::Idle(now_idle))?;
                    }
                }
                Message::Barrier(b) => match state.on_barrier(ch, b) {
                    BarrierAction::Wait => {
                        align_start.get_or_insert_with(Instant::now);
                    }
                    BarrierAction::AbortedPrevious { aborted } => {
                        let _ = self.events.send(TaskEvent::Decline {
                            task: self.id,
                            checkpoint_id: aborted,
                            reason: crate::error::CheckpointFailure::Declined(format!(
                                "checkpoint {aborted} was overtaken by checkpoint {} during alignment",
                                b.checkpoint_id
                            )),
                        });
                        align_start = Some(Instant::now());
                    }
                    BarrierAction::Snapshot(b) => {
                        let alignment = align_start.take().map_or(Duration::ZERO, |s| s.elapsed());
                        self.checkpoint(b, None, alignment)?;
                    }
                },
                Message::EndOfInput { drained } => {
                    self.drained &= drained;
                    let (action, wm) = state.on_end(ch);
                    if let Some(BarrierAction::Snapshot(b)) = action {
                        let alignment = align_start.take().map_or(Duration::ZERO, |s| s.elapsed());
                        self.checkpoint(b, None, alignment)?;
                    }
                    // A stopped (not drained) input holds event time where it was.
                    if let Some(w) = wm.filter(|_| self.drained) {
                        self.advance_watermark(w)?;
                    }
                }
            }
            self.fire_processing_timers()?;
            self.flush()?;
        }
        self.end_of_input()?;
        self.finish(None)
    }
}
