//! The type-erased operator interface the task loop drives, and the pieces
//! every operator shares: subtask identity, output emission, and snapshots.

use std::sync::Arc;

use cairn_config::Configuration;
use cairn_state::operator_state::OperatorStateEntry;
use cairn_state::{BackendSnapshot, KeyedStateAccess, OperatorStateStore, SnapshotRequest, StateError};

use crate::error::OpResult;
use crate::record::{AnyBatch, BatchKeys, StreamRecord};

/// Who a subtask is.
#[derive(Clone, Debug)]
pub struct SubtaskInfo {
    pub job_id: String,
    pub operator_name: String,
    pub uid: String,
    pub operator_id: String,
    /// 0-based.
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// How many times the job has restarted after a failure (0 on first run).
    pub attempt: u32,
    /// The job's processing-time clock (TTL, processing-time timers and windows).
    pub clock: crate::time::SharedClock,
}

impl SubtaskInfo {
    /// Processing time now, from the job's clock (epoch ms).
    pub fn processing_time(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Collects the batches an operator emits, per output port (0 = main).
#[derive(Default)]
pub struct Emitter {
    pub(crate) batches: Vec<(usize, AnyBatch)>,
    /// Records emitted through `emit_vec` (counts what a source produced).
    records: u64,
}

impl Emitter {
    /// Records emitted through [`Emitter::emit_vec`] so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The emitted batches with their ports, in emission order.
    pub fn into_batches(self) -> Vec<(usize, AnyBatch)> {
        self.batches
    }

    /// Emit one batch on `port`.
    pub fn emit(&mut self, port: usize, batch: AnyBatch) {
        self.batches.push((port, batch));
    }

    /// Emit the records in `buf` on `port` (if any), leaving `buf` empty.
    pub fn emit_vec<T: Send + 'static>(&mut self, port: usize, buf: &mut Vec<StreamRecord<T>>) {
        if !buf.is_empty() {
            self.records += buf.len() as u64;
            let cap = buf.capacity().max(16);
            let full = std::mem::replace(buf, Vec::with_capacity(cap));
            self.batches.push((port, Box::new(full)));
        }
    }
}

/// The synchronous part of an operator's snapshot, written out asynchronously.
#[derive(Default)]
pub struct OperatorSnapshot {
    pub keyed: Option<BackendSnapshot>,
    pub operator_state: Vec<OperatorStateEntry>,
}

/// What an operator gets when it opens: its identity, the job's configuration,
/// and its (possibly restored) state.
pub struct OpenContext {
    pub info: SubtaskInfo,
    pub config: Arc<Configuration>,
    /// Present for keyed operators.
    pub keyed: Option<KeyedStateAccess>,
    pub operator_state: OperatorStateStore,
}

impl OpenContext {
    /// The keyed state, or an error naming the operator when it is not keyed.
    pub fn keyed_state(&mut self) -> Result<&mut KeyedStateAccess, StateError> {
        let name = self.info.operator_name.clone();
        self.keyed.as_mut().ok_or_else(|| {
            StateError::Usage(format!(
                "operator '{name}' is not keyed; keyed state needs a keyed stream (key_by)"
            ))
        })
    }
}

/// An operator as the task loop sees it. Implemented by the typed operators
/// (map, keyed process, windows, sinks, ...).
pub trait OperatorLogic: Send {
    /// Prepare to process: register and restore state.
    fn open(&mut self, ctx: OpenContext) -> OpResult;
    /// Process one batch from input `input` (0 or 1).
    fn process_batch(&mut self, input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult;
    /// Process a batch that came over a key-group edge with its records'
    /// encoded keys and key groups (one per record, in order). Keyed
    /// operators use them instead of encoding and hashing each key again;
    /// the others ignore them.
    fn process_keyed_batch(&mut self, input: usize, batch: AnyBatch, _keys: &BatchKeys, out: &mut Emitter) -> OpResult {
        self.process_batch(input, batch, out)
    }
    /// Event time advanced to `watermark`: fire due event-time timers.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Emitter) -> OpResult {
        Ok(())
    }
    /// Fire processing-time timers due at `now_ms`.
    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut Emitter) -> OpResult {
        Ok(())
    }
    /// The earliest pending processing-time timer, if any.
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }
    /// Take the synchronous part of a snapshot (`request` says which
    /// checkpoint and what kind; keyed operators pass it to their backend).
    fn snapshot(&mut self, _request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }
    /// Checkpoint `checkpoint_id` is complete (two-phase-commit sinks commit now).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
    /// Checkpoint `checkpoint_id` was aborted.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
    /// All input has ended; flush what is buffered.
    fn end_input(&mut self, _out: &mut Emitter) -> OpResult {
        Ok(())
    }
    /// The job finished or failed; release resources.
    fn close(&mut self) -> OpResult {
        Ok(())
    }
    /// Keyed operators: their keyed state, which live state queries read
    /// (between batches, on the task's thread). `None` for other operators.
    fn keyed_state(&mut self) -> Option<&mut KeyedStateAccess> {
        None
    }
}

/// Downcast a batch to the operator's input type. A mismatch is a bug in the
/// graph wiring, reported instead of panicking.
pub fn downcast_batch<T: 'static>(batch: AnyBatch, operator: &str) -> OpResult<Box<Vec<StreamRecord<T>>>> {
    batch.downcast::<Vec<StreamRecord<T>>>().map_err(|_| {
        format!(
            "operator '{operator}' received records of an unexpected type (expected {}); this is a Cairn bug",
            std::any::type_name::<T>()
        )
        .into()
    })
}
