//! Sinks, with a two-phase-commit contract: records written between two
//! barriers are staged (pre-commit) when the barrier passes and made visible
//! (commit) only when that checkpoint completes, so output is exactly-once.

use cairn_state::OperatorStateStore;

use cairn_runtime::error::OpResult;
use cairn_runtime::operator::{downcast_batch, Emitter, OpenContext, OperatorLogic, OperatorSnapshot, SubtaskInfo};
use cairn_runtime::record::{AnyBatch, StreamRecord};
use cairn_state::SnapshotRequest;

/// Context of a sink subtask.
pub struct SinkContext<'a> {
    pub info: &'a SubtaskInfo,
    /// Operator state: restored staged transactions on open; staged ones on snapshot.
    pub state: &'a mut OperatorStateStore,
    /// Whether checkpoints are on: without them, a sink commits at end of input.
    pub checkpointing: bool,
}

/// A sink. Each subtask gets its own clone.
pub trait Sink<T>: Clone + Send + 'static {
    /// Whether the sink keeps state in snapshots (then it needs a uid).
    fn stateful(&self) -> bool {
        false
    }
    /// Prepare; commit any staged transactions found in restored state (they
    /// belong to a checkpoint that completed before the failure).
    fn open(&mut self, _ctx: &mut SinkContext<'_>) -> OpResult {
        Ok(())
    }
    /// Write a batch of records.
    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult;
    /// Pre-commit: stage what was written since the last barrier as the
    /// transaction of `checkpoint_id`, and record it in `ctx.state`.
    fn snapshot_state(&mut self, _ctx: &mut SinkContext<'_>, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
    /// Commit every staged transaction up to `checkpoint_id` (idempotent).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
    /// Input ended: flush; without checkpoints, also commit.
    fn end_input(&mut self, _ctx: &mut SinkContext<'_>) -> OpResult {
        Ok(())
    }
    /// Release resources (also on failure: abort what is not staged).
    fn close(&mut self) -> OpResult {
        Ok(())
    }
}

/// Runs a [`Sink`].
pub struct SinkOperator<T, S> {
    sink: S,
    run: Option<(SubtaskInfo, OperatorStateStore, bool)>,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T, S> SinkOperator<T, S> {
    pub fn new(sink: S) -> Self {
        SinkOperator {
            sink,
            run: None,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Send + 'static, S: Sink<T>> OperatorLogic for SinkOperator<T, S> {
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let mut state = ctx.operator_state;
        let checkpointing = ctx.config.checkpointing_enabled();
        self.sink.open(&mut SinkContext {
            info: &ctx.info,
            state: &mut state,
            checkpointing,
        })?;
        self.run = Some((ctx.info, state, checkpointing));
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: AnyBatch, _out: &mut Emitter) -> OpResult {
        let name = self.run.as_ref().map_or("sink", |r| r.0.operator_name.as_str());
        let batch = downcast_batch::<T>(batch, name)?;
        self.sink.write_batch(*batch)
    }

    fn snapshot(&mut self, request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        let checkpoint_id = request.checkpoint_id;
        let (info, state, checkpointing) = self.run.as_mut().ok_or("sink not opened")?;
        self.sink.snapshot_state(
            &mut SinkContext {
                info,
                state,
                checkpointing: *checkpointing,
            },
            checkpoint_id,
        )?;
        Ok(OperatorSnapshot {
            keyed: None,
            operator_state: state.to_entries(),
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        self.sink.notify_checkpoint_complete(checkpoint_id)
    }

    fn end_input(&mut self, _out: &mut Emitter) -> OpResult {
        let (info, state, checkpointing) = self.run.as_mut().ok_or("sink not opened")?;
        self.sink.end_input(&mut SinkContext {
            info,
            state,
            checkpointing: *checkpointing,
        })
    }

    fn close(&mut self) -> OpResult {
        self.sink.close()
    }
}
