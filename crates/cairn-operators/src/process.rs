//! Stateless per-record operators (map, filter, flat_map) and non-keyed
//! process functions with side outputs and operator state.

use cairn_state::OperatorStateStore;

use crate::collector::{OutputTag, Outputs, SidePorts};
use cairn_runtime::error::OpResult;
use cairn_runtime::operator::{downcast_batch, Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
use cairn_runtime::record::{AnyBatch, StreamRecord, NO_TIMESTAMP};
use cairn_state::SnapshotRequest;

/// Applies a batch transformation; map, filter and flat_map are built on it.
pub struct TransformOperator<I, O, F> {
    f: F,
    name: String,
    out: Vec<StreamRecord<O>>,
    _t: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> TransformOperator<I, O, F>
where
    F: FnMut(StreamRecord<I>, &mut Vec<StreamRecord<O>>) + Send + 'static,
{
    pub fn new(f: F) -> Self {
        TransformOperator {
            f,
            name: String::new(),
            out: Vec::new(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<I: Send + 'static, O: Send + 'static, F> OperatorLogic for TransformOperator<I, O, F>
where
    F: FnMut(StreamRecord<I>, &mut Vec<StreamRecord<O>>) + Send + 'static,
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        self.name = ctx.info.operator_name;
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let batch = downcast_batch::<I>(batch, &self.name)?;
        self.out.reserve(batch.len());
        for rec in *batch {
            (self.f)(rec, &mut self.out);
        }
        out.emit_vec(0, &mut self.out);
        Ok(())
    }
}

/// A function over a (non-keyed) stream with side outputs and operator state.
pub trait ProcessFunction<I, O>: Clone + Send + 'static {
    /// Prepare; `state` holds restored operator state.
    fn open(&mut self, _info: &SubtaskInfo, _state: &mut OperatorStateStore) -> OpResult {
        Ok(())
    }
    /// Process one record.
    fn process_element(&mut self, value: I, ctx: &mut ProcessContext<'_, O>) -> OpResult;
    /// Write operator state before a snapshot.
    fn snapshot_state(&mut self, _state: &mut OperatorStateStore, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

/// The context of one record of a [`ProcessFunction`].
pub struct ProcessContext<'a, O> {
    out: &'a mut Outputs<O>,
    timestamp: i64,
    watermark: i64,
    pub info: &'a SubtaskInfo,
    pub state: &'a mut OperatorStateStore,
}

impl<O: Send + 'static> ProcessContext<'_, O> {
    /// The current record's timestamp.
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
}

/// Runs a [`ProcessFunction`].
pub struct ProcessOperator<I, O, F> {
    function: F,
    side_ports: SidePorts,
    run: Option<(SubtaskInfo, OperatorStateStore, Outputs<O>)>,
    watermark: i64,
    _t: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> ProcessOperator<I, O, F> {
    pub fn new(function: F, side_ports: SidePorts) -> Self {
        ProcessOperator {
            function,
            side_ports,
            run: None,
            watermark: i64::MIN,
            _t: std::marker::PhantomData,
        }
    }
}

impl<I: Send + 'static, O: Send + 'static, F: ProcessFunction<I, O>> OperatorLogic for ProcessOperator<I, O, F> {
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let mut state = ctx.operator_state;
        self.function.open(&ctx.info, &mut state)?;
        self.run = Some((ctx.info, state, Outputs::new(&self.side_ports)));
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        let (info, state, outputs) = self.run.as_mut().ok_or("operator not opened")?;
        let batch = downcast_batch::<I>(batch, &info.operator_name)?;
        for rec in *batch {
            let mut ctx = ProcessContext {
                out: outputs,
                timestamp: rec.timestamp,
                watermark: self.watermark,
                info,
                state,
            };
            self.function.process_element(rec.value, &mut ctx)?;
        }
        outputs.flush(out);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Emitter) -> OpResult {
        self.watermark = watermark;
        Ok(())
    }

    fn snapshot(&mut self, request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        let checkpoint_id = request.checkpoint_id;
        let (_, state, _) = self.run.as_mut().ok_or("operator not opened")?;
        self.function.snapshot_state(state, checkpoint_id)?;
        Ok(OperatorSnapshot {
            keyed: None,
            operator_state: state.to_entries(),
        })
    }
}
