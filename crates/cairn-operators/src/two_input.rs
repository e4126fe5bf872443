//! Two-input operators: co-process functions over two connected streams
//! (plain or keyed by a common key type) and the broadcast state pattern
//! (a broadcast input whose records update state every subtask holds in full,
//! read by the records of the other input).
//!
//! Input 0 is the first stream (or the non-broadcast stream), input 1 the
//! second (or the broadcast stream). The task hands each batch over with its
//! input index, and the watermark an operator sees is already the minimum over
//! both inputs, so event-time timers fire only once both inputs advanced.
//!
//! Broadcast state lives in the [`OperatorStateStore`] (its `broadcast_*`
//! maps), is snapshotted with [`DistributionMode::Broadcast`] and copied to
//! every subtask on restore. Following Flink, that is only correct when the
//! broadcast side updates it identically on every subtask: the update must be
//! a deterministic function of the broadcast records alone (not of the
//! subtask index, of the other input, of time or of randomness). The other
//! input therefore only reads it.
//!
//! [`DistributionMode::Broadcast`]: cairn_state::DistributionMode::Broadcast

use cairn_state::{KeyedStateAccess, OperatorStateStore, StateContext, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::collector::{OutputTag, Outputs, SidePorts};
use crate::keyed::{Key, KeyFn, KeyedOpenContext};
use crate::keyed_core::KeyedCore;
use crate::timers::TimeDomain;
use cairn_runtime::error::OpResult;
use cairn_runtime::operator::{downcast_batch, Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
use cairn_runtime::record::{AnyBatch, NO_TIMESTAMP};
use cairn_state::SnapshotRequest;

/// The accessors every context shares: timestamp, watermark, output.
macro_rules! output_methods {
    () => {
        /// The current record's (or firing timer's) timestamp.
        pub fn timestamp(&self) -> Option<i64> {
            (self.timestamp != NO_TIMESTAMP).then_some(self.timestamp)
        }
        /// The operator's current event time: the minimum over both inputs.
        pub fn current_watermark(&self) -> i64 {
            self.watermark
        }
        /// Processing time now (epoch ms), from the job's clock.
        pub fn current_processing_time(&self) -> i64 {
            self.info.processing_time()
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
        /// Emit to a side output (dropped when nobody consumes the tag).
        pub fn output<T: Send + 'static>(&mut self, tag: &OutputTag<T>, value: T) {
            self.out.side(tag, value, self.timestamp)
        }
    };
}

/// Read accessors of broadcast state, shared by the read-only and the
/// read-write contexts.
macro_rules! broadcast_read_methods {
    () => {
        /// The value under `key` in broadcast state `name`.
        pub fn broadcast_get<BK: Serialize, BV: DeserializeOwned>(
            &self,
            name: &str,
            key: &BK,
        ) -> Result<Option<BV>, StateError> {
            self.broadcast.broadcast_get(name, key)
        }
        /// All entries of broadcast state `name`, in key byte order.
        pub fn broadcast_entries<BK: DeserializeOwned, BV: DeserializeOwned>(
            &self,
            name: &str,
        ) -> Result<Vec<(BK, BV)>, StateError> {
            self.broadcast.broadcast_entries(name)
        }
    };
}

fn not_opened(what: &str) -> cairn_runtime::error::BoxError {
    format!("{what}: operator used before open; this is a Cairn bug").into()
}

// ---------------------------------------------------------------------------
// Non-keyed co-process
// ---------------------------------------------------------------------------

/// A function over two connected (non-keyed) streams. Each subtask gets its
/// own clone; what it keeps in `self` is lost on failure unless it is written
/// to operator state in `snapshot_state`.
pub trait CoProcessFunction<I1, I2, O>: Clone + Send + 'static {
    /// Prepare; `state` holds restored operator state.
    fn open(&mut self, _info: &SubtaskInfo, _state: &mut OperatorStateStore) -> OpResult {
        Ok(())
    }
    /// Process one record of the first input.
    fn process_element1(&mut self, value: I1, ctx: &mut CoProcessContext<'_, O>) -> OpResult;
    /// Process one record of the second input.
    fn process_element2(&mut self, value: I2, ctx: &mut CoProcessContext<'_, O>) -> OpResult;
    /// Write operator state before a snapshot.
    fn snapshot_state(&mut self, _state: &mut OperatorStateStore, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

/// The context of one record of a [`CoProcessFunction`].
pub struct CoProcessContext<'a, O> {
    out: &'a mut Outputs<O>,
    timestamp: i64,
    watermark: i64,
    info: &'a SubtaskInfo,
    /// The subtask's operator state.
    pub state: &'a mut OperatorStateStore,
}

impl<O: Send + 'static> CoProcessContext<'_, O> {
    output_methods!();
}

struct PlainRun<O> {
    info: SubtaskInfo,
    state: OperatorStateStore,
    out: Outputs<O>,
    watermark: i64,
}

impl<O: Send + 'static> PlainRun<O> {
    fn open(ctx: OpenContext, side_ports: &SidePorts) -> Self {
        PlainRun {
            info: ctx.info,
            state: ctx.operator_state,
            out: Outputs::new(side_ports),
            watermark: i64::MIN,
        }
    }
}

/// Runs a [`CoProcessFunction`].
pub struct CoProcessOperator<I1, I2, O, F> {
    function: F,
    side_ports: SidePorts,
    run: Option<PlainRun<O>>,
    _t: std::marker::PhantomData<fn(I1, I2)>,
}

impl<I1, I2, O, F> CoProcessOperator<I1, I2, O, F> {
    pub fn new(function: F, side_ports: SidePorts) -> Self {
        CoProcessOperator {
            function,
            side_ports,
            run: None,
            _t: std::marker::PhantomData,
        }
    }
}

impl<I1, I2, O, F> OperatorLogic for CoProcessOperator<I1, I2, O, F>
where
    I1: Send + 'static,
    I2: Send + 'static,
    O: Send + 'static,
    F: CoProcessFunction<I1, I2, O>,
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let mut run = PlainRun::open(ctx, &self.side_ports);
        self.function.open(&run.info, &mut run.state)?;
        self.run = Some(run);
        Ok(())
    }

    fn process_batch(&mut self, input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or_else(|| not_opened("co-process"))?;
        if input == 0 {
            let batch = downcast_batch::<I1>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let mut ctx = CoProcessContext {
                    out: &mut run.out,
                    timestamp: rec.timestamp,
                    watermark: run.watermark,
                    info: &run.info,
                    state: &mut run.state,
                };
                self.function.process_element1(rec.value, &mut ctx)?;
            }
        } else {
            let batch = downcast_batch::<I2>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let mut ctx = CoProcessContext {
                    out: &mut run.out,
                    timestamp: rec.timestamp,
                    watermark: run.watermark,
                    info: &run.info,
                    state: &mut run.state,
                };
                self.function.process_element2(rec.value, &mut ctx)?;
            }
        }
        run.out.flush(out);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Emitter) -> OpResult {
        if let Some(run) = self.run.as_mut() {
            run.watermark = watermark;
        }
        Ok(())
    }

    fn snapshot(&mut self, request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        let checkpoint_id = request.checkpoint_id;
        let run = self.run.as_mut().ok_or_else(|| not_opened("co-process"))?;
        self.function.snapshot_state(&mut run.state, checkpoint_id)?;
        Ok(OperatorSnapshot {
            keyed: None,
            operator_state: run.state.to_entries(),
        })
    }
}

// ---------------------------------------------------------------------------
// Keyed contexts
// ---------------------------------------------------------------------------

/// The context of one record or timer of a keyed two-input function: the
/// same as a keyed process function's (key, keyed state, timers, output).
pub type KeyedCoContext<'a, K, O> = crate::keyed::KeyedContext<'a, K, O>;

/// The keyed side of a [`KeyedBroadcastProcessFunction`]: everything of
/// [`KeyedCoContext`] (through `Deref`) plus read-only broadcast state.
pub struct KeyedReadOnlyBroadcastContext<'a, K, O> {
    inner: KeyedCoContext<'a, K, O>,
    broadcast: &'a OperatorStateStore,
}

impl<K, O: Send + 'static> KeyedReadOnlyBroadcastContext<'_, K, O> {
    broadcast_read_methods!();
}

impl<'a, K, O> std::ops::Deref for KeyedReadOnlyBroadcastContext<'a, K, O> {
    type Target = KeyedCoContext<'a, K, O>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<K, O> std::ops::DerefMut for KeyedReadOnlyBroadcastContext<'_, K, O> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl<K, O> StateContext for KeyedReadOnlyBroadcastContext<'_, K, O> {
    fn state_access(&mut self) -> &mut KeyedStateAccess {
        self.inner.state
    }
}

// ---------------------------------------------------------------------------
// Broadcast contexts
// ---------------------------------------------------------------------------

/// The context of a record of the non-broadcast input of a
/// [`BroadcastProcessFunction`]: broadcast state is read-only here, because
/// this input differs per subtask and writing would make the copies diverge.
pub struct ReadOnlyBroadcastContext<'a, O> {
    out: &'a mut Outputs<O>,
    timestamp: i64,
    watermark: i64,
    info: &'a SubtaskInfo,
    broadcast: &'a OperatorStateStore,
}

impl<O: Send + 'static> ReadOnlyBroadcastContext<'_, O> {
    output_methods!();
    broadcast_read_methods!();
}

/// The context of a record of the broadcast input: broadcast state is
/// read-write. Every subtask sees the same broadcast records in the same order
/// and must update its copy the same way (deterministically), because on
/// restore every subtask gets one subtask's copy.
pub struct BroadcastContext<'a, O> {
    out: &'a mut Outputs<O>,
    timestamp: i64,
    watermark: i64,
    info: &'a SubtaskInfo,
    broadcast: &'a mut OperatorStateStore,
}

impl<O: Send + 'static> BroadcastContext<'_, O> {
    output_methods!();
    broadcast_read_methods!();

    /// Set `key` in broadcast state `name`.
    pub fn broadcast_put<K: Serialize, V: Serialize>(
        &mut self,
        name: &str,
        key: &K,
        value: &V,
    ) -> Result<(), StateError> {
        self.broadcast.broadcast_put(name, key, value)
    }
    /// Remove `key` from broadcast state `name`.
    pub fn broadcast_remove<K: Serialize>(&mut self, name: &str, key: &K) -> Result<(), StateError> {
        self.broadcast.broadcast_remove(name, key)
    }
}

// ---------------------------------------------------------------------------
// Non-keyed broadcast
// ---------------------------------------------------------------------------

/// A function over a (non-keyed) stream connected with a broadcast stream.
pub trait BroadcastProcessFunction<I, B, O>: Clone + Send + 'static {
    /// Prepare (broadcast state is already restored).
    fn open(&mut self, _info: &SubtaskInfo) -> OpResult {
        Ok(())
    }
    /// Process one record of the non-broadcast input (broadcast state read-only).
    fn process_element(&mut self, value: I, ctx: &mut ReadOnlyBroadcastContext<'_, O>) -> OpResult;
    /// Process one broadcast record (broadcast state read-write; update it
    /// deterministically, see the module docs).
    fn process_broadcast_element(&mut self, value: B, ctx: &mut BroadcastContext<'_, O>) -> OpResult;
}

/// Runs a [`BroadcastProcessFunction`]; input 1 is the broadcast input.
pub struct BroadcastProcessOperator<I, B, O, F> {
    function: F,
    side_ports: SidePorts,
    run: Option<PlainRun<O>>,
    _t: std::marker::PhantomData<fn(I, B)>,
}

impl<I, B, O, F> BroadcastProcessOperator<I, B, O, F> {
    pub fn new(function: F, side_ports: SidePorts) -> Self {
        BroadcastProcessOperator {
            function,
            side_ports,
            run: None,
            _t: std::marker::PhantomData,
        }
    }
}

impl<I, B, O, F> OperatorLogic for BroadcastProcessOperator<I, B, O, F>
where
    I: Send + 'static,
    B: Send + 'static,
    O: Send + 'static,
    F: BroadcastProcessFunction<I, B, O>,
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let run = PlainRun::open(ctx, &self.side_ports);
        self.function.open(&run.info)?;
        self.run = Some(run);
        Ok(())
    }

    fn process_batch(&mut self, input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or_else(|| not_opened("broadcast process"))?;
        if input == 0 {
            let batch = downcast_batch::<I>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let mut ctx = ReadOnlyBroadcastContext {
                    out: &mut run.out,
                    timestamp: rec.timestamp,
                    watermark: run.watermark,
                    info: &run.info,
                    broadcast: &run.state,
                };
                self.function.process_element(rec.value, &mut ctx)?;
            }
        } else {
            let batch = downcast_batch::<B>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let mut ctx = BroadcastContext {
                    out: &mut run.out,
                    timestamp: rec.timestamp,
                    watermark: run.watermark,
                    info: &run.info,
                    broadcast: &mut run.state,
                };
                self.function.process_broadcast_element(rec.value, &mut ctx)?;
            }
        }
        run.out.flush(out);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Emitter) -> OpResult {
        if let Some(run) = self.run.as_mut() {
            run.watermark = watermark;
        }
        Ok(())
    }

    fn snapshot(&mut self, _request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        let run = self.run.as_mut().ok_or_else(|| not_opened("broadcast process"))?;
        Ok(OperatorSnapshot {
            keyed: None,
            operator_state: run.state.to_entries(),
        })
    }
}

// ---------------------------------------------------------------------------
// Keyed operators' shared machinery
// ---------------------------------------------------------------------------

/// Keyed two-input operators run on the keyed core; their operator state
/// holds broadcast state.
type KeyedRun<O> = KeyedCore<O>;

fn open_keyed<O: Send + 'static>(ctx: OpenContext, side_ports: &SidePorts, what: &str) -> OpResult<KeyedRun<O>> {
    KeyedCore::open(ctx, side_ports, |name| {
        format!("{what} '{name}' has no keyed state: both inputs must be keyed (key_by) with the same key type")
    })
}

// ---------------------------------------------------------------------------
// Keyed co-process
// ---------------------------------------------------------------------------

/// A function over two streams keyed by the same key type: records of both
/// inputs with equal keys meet in the same subtask and share keyed state and
/// timers.
pub trait KeyedCoProcessFunction<K, I1, I2, O>: Clone + Send + 'static {
    /// Register state (keep the returned handles in `self`).
    fn open(&mut self, _ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        Ok(())
    }
    /// Process one record of the first input, for its key.
    fn process_element1(&mut self, value: I1, ctx: &mut KeyedCoContext<'_, K, O>) -> OpResult;
    /// Process one record of the second input, for its key.
    fn process_element2(&mut self, value: I2, ctx: &mut KeyedCoContext<'_, K, O>) -> OpResult;
    /// A timer of the current key fired (`ctx.time_domain()` says which kind).
    fn on_timer(&mut self, _timestamp: i64, _ctx: &mut KeyedCoContext<'_, K, O>) -> OpResult {
        Ok(())
    }
}

/// Runs a [`KeyedCoProcessFunction`].
pub struct KeyedCoProcessOperator<K, I1, I2, O, F> {
    function: F,
    key1: KeyFn<K, I1>,
    key2: KeyFn<K, I2>,
    side_ports: SidePorts,
    run: Option<KeyedRun<O>>,
}

impl<K, I1, I2, O, F> KeyedCoProcessOperator<K, I1, I2, O, F> {
    pub fn new(function: F, key1: KeyFn<K, I1>, key2: KeyFn<K, I2>, side_ports: SidePorts) -> Self {
        KeyedCoProcessOperator {
            function,
            key1,
            key2,
            side_ports,
            run: None,
        }
    }
}

impl<K, I1, I2, O, F> KeyedCoProcessOperator<K, I1, I2, O, F>
where
    K: Key,
    O: Send + 'static,
    F: KeyedCoProcessFunction<K, I1, I2, O>,
{
    fn fire(&mut self, domain: TimeDomain, time: i64, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or_else(|| not_opened("keyed co-process"))?;
        let function = &mut self.function;
        run.fire::<K>(domain, time, |ts, mut ctx, _| function.on_timer(ts, &mut ctx))?;
        run.out.flush(out);
        Ok(())
    }
}

impl<K, I1, I2, O, F> OperatorLogic for KeyedCoProcessOperator<K, I1, I2, O, F>
where
    K: Key,
    I1: Send + 'static,
    I2: Send + 'static,
    O: Send + 'static,
    F: KeyedCoProcessFunction<K, I1, I2, O>,
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let mut run = open_keyed(ctx, &self.side_ports, "keyed co-process")?;
        self.function.open(&mut run.open_context())?;
        self.run = Some(run);
        Ok(())
    }

    fn process_batch(&mut self, input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or_else(|| not_opened("keyed co-process"))?;
        run.begin_batch();
        if input == 0 {
            let batch = downcast_batch::<I1>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let key = (self.key1)(&rec.value);
                run.set_key(&key)?;
                let mut ctx = run.context(&key, rec.timestamp);
                self.function.process_element1(rec.value, &mut ctx)?;
            }
        } else {
            let batch = downcast_batch::<I2>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let key = (self.key2)(&rec.value);
                run.set_key(&key)?;
                let mut ctx = run.context(&key, rec.timestamp);
                self.function.process_element2(rec.value, &mut ctx)?;
            }
        }
        run.out.flush(out);
        Ok(())
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
        self.run
            .as_mut()
            .ok_or_else(|| not_opened("keyed co-process"))?
            .snapshot(request)
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

// ---------------------------------------------------------------------------
// Keyed broadcast
// ---------------------------------------------------------------------------

/// A function over a keyed stream connected with a broadcast stream: keyed
/// state and timers on the keyed side, broadcast state read-only there and
/// read-write on the broadcast side.
pub trait KeyedBroadcastProcessFunction<K, I, B, O>: Clone + Send + 'static {
    /// Register keyed state (broadcast state is already restored).
    fn open(&mut self, _ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        Ok(())
    }
    /// Process one record of the keyed input, for its key.
    fn process_element(&mut self, value: I, ctx: &mut KeyedReadOnlyBroadcastContext<'_, K, O>) -> OpResult;
    /// Process one broadcast record (no current key; update broadcast state
    /// deterministically, see the module docs).
    fn process_broadcast_element(&mut self, value: B, ctx: &mut BroadcastContext<'_, O>) -> OpResult;
    /// A timer of the current key fired.
    fn on_timer(&mut self, _timestamp: i64, _ctx: &mut KeyedReadOnlyBroadcastContext<'_, K, O>) -> OpResult {
        Ok(())
    }
}

/// Runs a [`KeyedBroadcastProcessFunction`]; input 1 is the broadcast input.
pub struct KeyedBroadcastProcessOperator<K, I, B, O, F> {
    function: F,
    key: KeyFn<K, I>,
    side_ports: SidePorts,
    run: Option<KeyedRun<O>>,
    _t: std::marker::PhantomData<fn(B)>,
}

impl<K, I, B, O, F> KeyedBroadcastProcessOperator<K, I, B, O, F> {
    pub fn new(function: F, key: KeyFn<K, I>, side_ports: SidePorts) -> Self {
        KeyedBroadcastProcessOperator {
            function,
            key,
            side_ports,
            run: None,
            _t: std::marker::PhantomData,
        }
    }
}

impl<K, I, B, O, F> KeyedBroadcastProcessOperator<K, I, B, O, F>
where
    K: Key,
    O: Send + 'static,
    F: KeyedBroadcastProcessFunction<K, I, B, O>,
{
    fn fire(&mut self, domain: TimeDomain, time: i64, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or_else(|| not_opened("keyed broadcast process"))?;
        let function = &mut self.function;
        run.fire::<K>(domain, time, |ts, inner, broadcast| {
            function.on_timer(ts, &mut KeyedReadOnlyBroadcastContext { inner, broadcast })
        })?;
        run.out.flush(out);
        Ok(())
    }
}

impl<K, I, B, O, F> OperatorLogic for KeyedBroadcastProcessOperator<K, I, B, O, F>
where
    K: Key,
    I: Send + 'static,
    B: Send + 'static,
    O: Send + 'static,
    F: KeyedBroadcastProcessFunction<K, I, B, O>,
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let mut run = open_keyed(ctx, &self.side_ports, "keyed broadcast process")?;
        self.function.open(&mut run.open_context())?;
        self.run = Some(run);
        Ok(())
    }

    fn process_batch(&mut self, input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or_else(|| not_opened("keyed broadcast process"))?;
        run.begin_batch();
        if input == 0 {
            let batch = downcast_batch::<I>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let key = (self.key)(&rec.value);
                run.set_key(&key)?;
                let (inner, broadcast) = run.context_and_operator_state(&key, rec.timestamp);
                let mut ctx = KeyedReadOnlyBroadcastContext { inner, broadcast };
                self.function.process_element(rec.value, &mut ctx)?;
            }
        } else {
            let batch = downcast_batch::<B>(batch, &run.info.operator_name)?;
            for rec in *batch {
                let mut ctx = BroadcastContext {
                    out: &mut run.out,
                    timestamp: rec.timestamp,
                    watermark: run.watermark,
                    info: &run.info,
                    broadcast: &mut run.operator_state,
                };
                self.function.process_broadcast_element(rec.value, &mut ctx)?;
            }
        }
        run.out.flush(out);
        Ok(())
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
        self.run
            .as_mut()
            .ok_or_else(|| not_opened("keyed broadcast process"))?
            .snapshot(request)
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
