//! Keyed process functions: per-record access to the current key, its keyed
//! state and its timers, the building block of reduce, aggregate and windows.

use std::sync::Arc;

use cairn_state::keygroup::{key_bytes, key_group_for_bytes};
use cairn_state::{codec, KeyedStateAccess, StateContext};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::collector::{OutputTag, Outputs, SidePorts};
use crate::error::OpResult;
use crate::operator::{downcast_batch, Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
use crate::record::{AnyBatch, NO_TIMESTAMP};
use crate::time::now_ms;
use crate::timers::{TimeDomain, TimerService};

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
    /// Processing time now (epoch ms).
    pub fn current_processing_time(&self) -> i64 {
        now_ms()
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

/// Runs a [`KeyedProcessFunction`] on a keyed stream.
pub struct KeyedProcessOperator<K, I, O, F> {
    function: F,
    key_fn: KeyFn<K, I>,
    side_ports: SidePorts,
    run: Option<Running<O>>,
    key_buf: Vec<u8>,
}

struct Running<O> {
    info: SubtaskInfo,
    state: KeyedStateAccess,
    timers: TimerService,
    out: Outputs<O>,
    watermark: i64,
}

impl<K, I, O, F> KeyedProcessOperator<K, I, O, F> {
    pub fn new(function: F, key_fn: KeyFn<K, I>, side_ports: SidePorts) -> Self {
        KeyedProcessOperator {
            function,
            key_fn,
            side_ports,
            run: None,
            key_buf: Vec::with_capacity(32),
        }
    }
}

impl<K: Key, I: Send + 'static, O: Send + 'static, F: KeyedProcessFunction<K, I, O>> KeyedProcessOperator<K, I, O, F> {
    fn fire(&mut self, domain: TimeDomain, time: i64) -> OpResult {
        let run = self.run.as_mut().ok_or("operator not opened")?;
        run.state.set_processing_time(now_ms() as u64);
        while let Some(t) = run.timers.pop_due(&mut run.state, domain, time)? {
            let key: K = codec::decode_key("timer key", &t.key)?;
            run.state.set_current_key(&t.key, t.key_group);
            let mut ctx = KeyedContext {
                key: &key,
                state: &mut run.state,
                timers: &mut run.timers,
                out: &mut run.out,
                timestamp: t.timestamp,
                watermark: run.watermark,
                domain: Some(domain),
                info: &run.info,
            };
            self.function.on_timer(t.timestamp, &mut ctx)?;
        }
        Ok(())
    }
}

impl<K: Key, I: Send + 'static, O: Send + 'static, F: KeyedProcessFunction<K, I, O>> OperatorLogic
    for KeyedProcessOperator<K, I, O, F>
{
    fn open(&mut self, mut ctx: OpenContext) -> OpResult {
        let mut state = ctx
            .keyed
            .take()
            .ok_or("keyed process function on a stream that is not keyed")?;
        let timers = TimerService::open(&mut state)?;
        self.function.open(&mut KeyedOpenContext {
            info: &ctx.info,
            state: &mut state,
        })?;
        self.run = Some(Running {
            info: ctx.info,
            state,
            timers,
            out: Outputs::new(&self.side_ports),
            watermark: i64::MIN,
        });
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("operator not opened")?;
        let batch = downcast_batch::<I>(batch, &run.info.operator_name)?;
        let max_p = run.info.max_parallelism;
        run.state.set_processing_time(now_ms() as u64);
        for rec in *batch {
            let key = (self.key_fn)(&rec.value);
            key_bytes(&key, &mut self.key_buf)?;
            let kg = key_group_for_bytes(&self.key_buf, max_p);
            run.state.set_current_key(&self.key_buf, kg);
            let mut ctx = KeyedContext {
                key: &key,
                state: &mut run.state,
                timers: &mut run.timers,
                out: &mut run.out,
                timestamp: rec.timestamp,
                watermark: run.watermark,
                domain: None,
                info: &run.info,
            };
            self.function.process_element(rec.value, &mut ctx)?;
        }
        run.out.flush(out);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> OpResult {
        if let Some(run) = self.run.as_mut() {
            run.watermark = watermark;
        }
        self.fire(TimeDomain::EventTime, watermark)?;
        if let Some(run) = self.run.as_mut() {
            run.out.flush(out);
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Emitter) -> OpResult {
        self.fire(TimeDomain::ProcessingTime, now_ms)?;
        if let Some(run) = self.run.as_mut() {
            run.out.flush(out);
        }
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.run.as_ref().and_then(|r| r.timers.next_processing_time())
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult<OperatorSnapshot> {
        let run = self.run.as_mut().ok_or("operator not opened")?;
        Ok(OperatorSnapshot {
            keyed: Some(run.state.backend_mut().snapshot()?),
            operator_state: Vec::new(),
        })
    }
}
