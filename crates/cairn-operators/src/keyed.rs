//! Keyed process functions: per-record access to the current key, its keyed
//! state and its timers, the building block of reduce, aggregate and windows.

use std::sync::Arc;

use cairn_state::{KeyedStateAccess, StateContext};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::collector::{OutputTag, Outputs, SidePorts};
use crate::keyed_core::KeyedCore;
use crate::timers::{TimeDomain, TimerService};
use cairn_runtime::error::OpResult;
use cairn_runtime::operator::{downcast_batch, Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
use cairn_runtime::record::{AnyBatch, BatchKeys, StreamRecord, NO_TIMESTAMP};
use cairn_state::SnapshotRequest;

/// Extracts the key of a record.
pub type KeyFn<K, I> = Arc<dyn Fn(&I) -> K + Send + Sync>;

/// Bounds every key type meets: keys are hashed through their serde encoding.
pub trait Key: Serialize + DeserializeOwned + Clone + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> Key for T {}

/// Where keyed functions register their state (in `open`).
pub struct KeyedOpenContext<'a> {
    pub info: &'a SubtaskInfo,
    pub state: &'a mut KeyedStateAccess,
}

impl std::ops::Deref for KeyedOpenContext<'_> {
    type Target = KeyedStateAccess;
    fn deref(&self) -> &KeyedStateAccess {
        self.state
    }
}

impl std::ops::DerefMut for KeyedOpenContext<'_> {
    fn deref_mut(&mut self) -> &mut KeyedStateAccess {
        self.state
    }
}

/// A function over a keyed stream with state and timers per key.
pub trait KeyedProcessFunction<K, I, O>: Clone + Send + 'static {
    /// Register state (keep the returned handles in `self`).
    fn open(&mut self, _ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        Ok(())
    }
    /// Process one record of the current key.
    fn process_element(&mut self, value: I, ctx: &mut KeyedContext<'_, K, O>) -> OpResult;
    /// A timer of the current key fired (`ctx.time_domain()` says which kind).
    fn on_timer(&mut self, _timestamp: i64, _ctx: &mut KeyedContext<'_, K, O>) -> OpResult {
        Ok(())
    }
}

/// The context of one record or timer of a keyed function.
pub struct KeyedContext<'a, K, O> {
    pub(crate) key: &'a K,
    pub(crate) state: &'a mut KeyedStateAccess,
    pub(crate) timers: &'a mut TimerService,
    pub(crate) out: &'a mut Outputs<O>,
    pub(crate) timestamp: i64,
    pub(crate) watermark: i64,
    pub(crate) domain: Option<TimeDomain>,
    pub(crate) info: &'a SubtaskInfo,
}

impl<K, O: Send + 'static> KeyedContext<'_, K, O> {
    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }
    /// The current record's (or firing timer's) timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != NO_TIMESTAMP).then_some(self.timestamp)
    }
    /// The operator's current event time.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }
    /// Processing time now (epoch ms), from the job's clock.
    pub fn current_processing_time(&self) -> i64 {
        self.info.processing_time()
    }
    /// In `on_timer`: which kind of timer fired.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }
    /// The subtask running this function.
    pub fn info(&self) -> &SubtaskInfo {
        self.info
    }
    /// Emit a record with the current timestamp.
    pub fn collect(&mut self, value: O) {
        self.out.collect(value, self.timestamp)
    }
    /// Emit a record with an explicit timestamp.
    pub fn collect_with_timestamp(&mut self, value: O, timestamp: i64) {
        self.out.collect(value, timestamp)
    }
    /// Emit to a side output.
    pub fn output<T: Send + 'static>(&mut self, tag: &OutputTag<T>, value: T) {
        self.out.side(tag, value, self.timestamp)
    }
    /// Fire `on_timer` for this key when event time reaches `time`.
    pub fn register_event_time_timer(&mut self, time: i64) -> OpResult {
        Ok(self.timers.register(self.state, TimeDomain::EventTime, time, &[])?)
    }
    /// Fire `on_timer` for this key when processing time reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: i64) -> OpResult {
        Ok(self
            .timers
            .register(self.state, TimeDomain::ProcessingTime, time, &[])?)
    }
    /// Delete an event-time timer of this key.
    pub fn delete_event_time_timer(&mut self, time: i64) -> OpResult {
        Ok(self.timers.delete(self.state, TimeDomain::EventTime, time, &[])?)
    }
    /// Delete a processing-time timer of this key.
    pub fn delete_processing_time_timer(&mut self, time: i64) -> OpResult {
        Ok(self.timers.delete(self.state, TimeDomain::ProcessingTime, time, &[])?)
    }
}

impl<K, O> StateContext for KeyedContext<'_, K, O> {
    fn state_access(&mut self) -> &mut KeyedStateAccess {
        self.state
    }
}

/// Records whose keys are staged together (see `KeyedCore::stage_key`).
const STAGED_RECORDS: usize = 16;

/// Runs a [`KeyedProcessFunction`] on a keyed stream.
pub struct KeyedProcessOperator<K, I, O, F> {
    function: F,
    key_fn: KeyFn<K, I>,
    side_ports: SidePorts,
    run: Option<KeyedCore<O>>,
    /// The records of the chunk being processed, and their keys.
    chunk: Vec<StreamRecord<I>>,
    keys: Vec<K>,
}

impl<K, I, O, F> KeyedProcessOperator<K, I, O, F> {
    pub fn new(function: F, key_fn: KeyFn<K, I>, side_ports: SidePorts) -> Self {
        KeyedProcessOperator {
            function,
            key_fn,
            side_ports,
            run: None,
            chunk: Vec::with_capacity(STAGED_RECORDS),
            keys: Vec::with_capacity(STAGED_RECORDS),
        }
    }
}

impl<K: Key, I: Send + 'static, O: Send + 'static, F: KeyedProcessFunction<K, I, O>> KeyedProcessOperator<K, I, O, F> {
    fn fire(&mut self, domain: TimeDomain, time: i64, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("operator not opened")?;
        let function = &mut self.function;
        run.fire::<K>(domain, time, |ts, mut ctx, _| function.on_timer(ts, &mut ctx))?;
        run.flush(out);
        Ok(())
    }

    /// Process a batch, with the keys its sender computed when it came over
    /// a key-group edge.
    fn run_batch(&mut self, batch: AnyBatch, keys: Option<&BatchKeys>, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("operator not opened")?;
        let batch = downcast_batch::<I>(batch, &run.info.operator_name)?;
        let keys = keys.filter(|k| k.len() == batch.len());
        run.begin_batch();
        // In chunks: all keys of a chunk are encoded, hashed and looked up
        // first, so their cache misses overlap; then the records run in order.
        let mut records = batch.into_iter();
        let mut first = 0;
        loop {
            self.keys.clear();
            self.chunk.clear();
            self.chunk.extend(records.by_ref().take(STAGED_RECORDS));
            if self.chunk.is_empty() {
                break;
            }
            run.clear_staged();
            for (i, rec) in self.chunk.iter().enumerate() {
                let key = (self.key_fn)(&rec.value);
                match keys {
                    Some(keys) => {
                        let (bytes, key_group) = keys.get(first + i);
                        run.stage_carried_key(&key, bytes, key_group)?;
                    }
                    None => run.stage_key(&key)?,
                }
                self.keys.push(key);
            }
            first += self.chunk.len();
            for (i, (rec, key)) in self.chunk.drain(..).zip(self.keys.iter()).enumerate() {
                run.set_staged_key(i);
                self.function
                    .process_element(rec.value, &mut run.context(key, rec.timestamp))?;
            }
        }
        run.flush(out);
        Ok(())
    }
}

impl<K: Key, I: Send + 'static, O: Send + 'static, F: KeyedProcessFunction<K, I, O>> OperatorLogic
    for KeyedProcessOperator<K, I, O, F>
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let mut run = KeyedCore::open(ctx, &self.side_ports, |name| {
            format!("keyed process function '{name}' runs on a stream that is not keyed; use key_by before process")
        })?;
        self.function.open(&mut run.open_context())?;
        self.run = Some(run);
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        self.run_batch(batch, None, out)
    }

    fn process_keyed_batch(&mut self, _input: usize, batch: AnyBatch, keys: &BatchKeys, out: &mut Emitter) -> OpResult {
        self.run_batch(batch, Some(keys), out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> OpResult {
        if let Some(run) = self.run.as_mut() {
            run.watermark = watermark;
        }
        self.fire(TimeDomain::EventTime, watermark, out)
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Emitter) -> OpResult {
        self.fire(TimeDomain::ProcessingTime, now_ms, out)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.run.as_ref().and_then(|r| r.next_processing_timer())
    }

    fn snapshot(&mut self, request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        self.run.as_mut().ok_or("operator not opened")?.snapshot(request)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        match self.run.as_mut() {
            Some(run) => run.notify_checkpoint_complete(checkpoint_id),
            None => Ok(()),
        }
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> OpResult {
        match self.run.as_mut() {
            Some(run) => run.notify_checkpoint_aborted(checkpoint_id),
            None => Ok(()),
        }
    }

    fn keyed_state(&mut self) -> Option<&mut cairn_state::KeyedStateAccess> {
        self.run.as_mut().map(|r| &mut r.state)
    }
}
