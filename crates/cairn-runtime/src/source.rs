//! Sources: the user-facing [`Source`] trait, watermark strategies, and the
//! adapter that turns a typed source into the task loop's [`SourceLogic`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_state::OperatorStateStore;

use crate::error::OpResult;
use crate::operator::{Emitter, OpenContext, OperatorSnapshot, SubtaskInfo};
use crate::record::{StreamRecord, NO_TIMESTAMP};

/// What a poll produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// More data may be available right away.
    More,
    /// Nothing now; poll again after at most this long.
    Pending(Duration),
    /// Bounded input is exhausted.
    Finished,
}

/// Context of a source subtask.
pub struct SourceContext<'a> {
    pub info: &'a SubtaskInfo,
    /// Operator state: restored positions on open; write positions on snapshot.
    pub state: &'a mut OperatorStateStore,
}

/// A parallel source. Each subtask gets its own clone; `open` tells it which
/// subtask it is and hands it its restored state.
pub trait Source<T>: Clone + Send + 'static {
    /// Prepare, reading restored positions from `ctx.state`.
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult;
    /// Append up to `max` records to `out`.
    fn poll(&mut self, out: &mut Vec<StreamRecord<T>>, max: usize) -> OpResult<SourceStatus>;
    /// Write the current position into `ctx.state` (called at a barrier).
    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, checkpoint_id: u64) -> OpResult;
    /// A checkpoint completed.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

type TimestampFn<T> = Arc<dyn Fn(&T, i64) -> i64 + Send + Sync>;

/// How a source assigns event timestamps and generates watermarks.
pub struct WatermarkStrategy<T> {
    out_of_orderness_ms: Option<i64>,
    timestamp: Option<TimestampFn<T>>,
    idleness: Option<Duration>,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            out_of_orderness_ms: self.out_of_orderness_ms,
            timestamp: self.timestamp.clone(),
            idleness: self.idleness,
        }
    }
}

impl<T> WatermarkStrategy<T> {
    /// No watermarks (processing-time jobs).
    pub fn no_watermarks() -> Self {
        WatermarkStrategy {
            out_of_orderness_ms: None,
            timestamp: None,
            idleness: None,
        }
    }

    /// Watermarks trail the highest timestamp seen by `max_out_of_orderness`.
    pub fn for_bounded_out_of_orderness(max_out_of_orderness: Duration) -> Self {
        WatermarkStrategy {
            out_of_orderness_ms: Some(max_out_of_orderness.as_millis() as i64),
            timestamp: None,
            idleness: None,
        }
    }

    /// Timestamps never go backwards.
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(Duration::ZERO)
    }

    /// Take each record's event time from the record (the second argument is
    /// the timestamp the source attached, or `NO_TIMESTAMP`).
    pub fn with_timestamp_assigner(mut self, f: impl Fn(&T, i64) -> i64 + Send + Sync + 'static) -> Self {
        self.timestamp = Some(Arc::new(f));
        self
    }

    /// Mark the source idle after this long without records, so that it does
    /// not hold back the watermark of downstream operators.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness = Some(timeout);
        self
    }
}

/// The source task's view of a source.
pub trait SourceLogic: Send {
    fn open(&mut self, ctx: OpenContext) -> OpResult;
    /// Poll up to `max` records into `out` (port 0).
    fn poll(&mut self, max: usize, out: &mut Emitter) -> OpResult<SourceStatus>;
    /// A new watermark to emit, if it advanced.
    fn take_watermark(&mut self) -> Option<i64>;
    /// Whether idleness changed: Some(true) became idle, Some(false) active again.
    fn take_idle_change(&mut self) -> Option<bool>;
    fn snapshot(&mut self, checkpoint_id: u64) -> OpResult<OperatorSnapshot>;
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult;
}

/// Runs a typed [`Source`] with a [`WatermarkStrategy`].
pub struct SourceAdapter<T, S> {
    source: S,
    strategy: WatermarkStrategy<T>,
    info: Option<SubtaskInfo>,
    state: OperatorStateStore,
    buf: Vec<StreamRecord<T>>,
    max_ts: i64,
    emitted_wm: i64,
    idle: bool,
    idle_change: Option<bool>,
    last_data: Instant,
}

impl<T: Send + 'static, S: Source<T>> SourceAdapter<T, S> {
    pub fn new(source: S, strategy: WatermarkStrategy<T>) -> Self {
        SourceAdapter {
            source,
            strategy,
            info: None,
            state: OperatorStateStore::new(),
            buf: Vec::new(),
            max_ts: NO_TIMESTAMP,
            emitted_wm: NO_TIMESTAMP,
            idle: false,
            idle_change: None,
            last_data: Instant::now(),
        }
    }
}

impl<T: Send + 'static, S: Source<T>> SourceLogic for SourceAdapter<T, S> {
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        self.state = ctx.operator_state;
        let info = ctx.info;
        self.source.open(&mut SourceContext {
            info: &info,
            state: &mut self.state,
        })?;
        self.info = Some(info);
        Ok(())
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> OpResult<SourceStatus> {
        let status = self.source.poll(&mut self.buf, max)?;
        if !self.buf.is_empty() {
            if let Some(assign) = &self.strategy.timestamp {
                for r in &mut self.buf {
                    r.timestamp = assign(&r.value, r.timestamp);
                    self.max_ts = self.max_ts.max(r.timestamp);
                }
            } else if self.strategy.out_of_orderness_ms.is_some() {
                for r in &self.buf {
                    self.max_ts = self.max_ts.max(r.timestamp);
                }
            }
            self.last_data = Instant::now();
            if self.idle {
                self.idle = false;
                self.idle_change = Some(false);
            }
            out.emit_vec(0, &mut self.buf);
        } else if let Some(timeout) = self.strategy.idleness {
            if !self.idle && self.last_data.elapsed() >= timeout {
                self.idle = true;
                self.idle_change = Some(true);
            }
        }
        Ok(status)
    }

    fn take_watermark(&mut self) -> Option<i64> {
        let delay = self.strategy.out_of_orderness_ms?;
        if self.max_ts == NO_TIMESTAMP {
            return None;
        }
        let wm = self.max_ts.saturating_sub(delay).saturating_sub(1);
        if wm > self.emitted_wm {
            self.emitted_wm = wm;
            Some(wm)
        } else {
            None
        }
    }

    fn take_idle_change(&mut self) -> Option<bool> {
        self.idle_change.take()
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> OpResult<OperatorSnapshot> {
        let info = self.info.as_ref().ok_or("source snapshot before open")?;
        self.source.snapshot_state(
            &mut SourceContext {
                info,
                state: &mut self.state,
            },
            checkpoint_id,
        )?;
        Ok(OperatorSnapshot {
            keyed: None,
            operator_state: self.state.to_entries(),
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        self.source.notify_checkpoint_complete(checkpoint_id)
    }
}
