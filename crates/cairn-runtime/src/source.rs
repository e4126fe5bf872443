//! Sources: the user-facing [`Source`] trait, watermark strategies, and the
//! adapter that turns a typed source into the task loop's [`SourceLogic`].

use std::collections::BTreeMap;
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
    /// For a source that reads several splits at once: which split each record
    /// of the last `poll` came from (see [`SplitProgress`]), so that event time
    /// is tracked per split. `None` (the default): the subtask is one stream.
    fn split_progress(&mut self) -> Option<&mut SplitProgress> {
        None
    }
}

/// What a source reading several splits tells the runtime after each poll.
///
/// A subtask that interleaves splits (fairly, so none starves) mixes event
/// times that each split produces in order, but that differ between splits.
/// The watermark is therefore generated per split, and the subtask's
/// watermark is the minimum over its live splits (Flink's per-split
/// watermarks): a split that has not emitted yet holds it back, a finished
/// split no longer does, and with [`WatermarkStrategy::with_idleness`] a split
/// silent for that long is left out until it emits again.
#[derive(Clone, Debug, Default)]
pub struct SplitProgress {
    added: Vec<u64>,
    runs: Vec<(u64, usize)>,
    finished: Vec<u64>,
}

impl SplitProgress {
    /// The subtask now reads split `split` (a number unique within the subtask).
    pub fn split_added(&mut self, split: u64) {
        self.added.push(split);
    }

    /// The next `records` records appended by this poll came from `split`.
    pub fn records_from(&mut self, split: u64, records: usize) {
        match self.runs.last_mut() {
            Some((s, n)) if *s == split => *n += records,
            _ => self.runs.push((split, records)),
        }
    }

    /// Split `split` is read to its end.
    pub fn split_finished(&mut self, split: u64) {
        self.finished.push(split);
    }
}

/// Event-time progress of one split, as the adapter tracks it.
struct SplitClock {
    max_ts: i64,
    last_data: Instant,
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
    /// Per-split event time, once the source reports splits.
    splits: Option<BTreeMap<u64, SplitClock>>,
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
            splits: None,
        }
    }
}

impl<T: Send + 'static, S: Source<T>> SourceAdapter<T, S> {
    /// Fold the source's split report for the records in `buf` into the per-split clocks.
    fn track_splits(&mut self) -> OpResult {
        let Some(progress) = self.source.split_progress() else {
            return Ok(());
        };
        let splits = self.splits.get_or_insert_with(BTreeMap::new);
        let now = Instant::now();
        for split in progress.added.drain(..) {
            splits.entry(split).or_insert(SplitClock {
                max_ts: NO_TIMESTAMP,
                last_data: now,
            });
        }
        let mut at = 0;
        for (split, n) in progress.runs.drain(..) {
            let records = self.buf.get(at..at + n).ok_or_else(|| {
                format!(
                    "source reported {} records from its splits but emitted {}",
                    at + n,
                    self.buf.len()
                )
            })?;
            let clock = splits.entry(split).or_insert(SplitClock {
                max_ts: NO_TIMESTAMP,
                last_data: now,
            });
            for r in records {
                clock.max_ts = clock.max_ts.max(r.timestamp);
            }
            if n > 0 {
                clock.last_data = now;
            }
            at += n;
        }
        for split in progress.finished.drain(..) {
            splits.remove(&split);
        }
        if at != self.buf.len() {
            return Err(format!(
                "source emitted {} records but reported the split of only {at}",
                self.buf.len()
            )
            .into());
        }
        Ok(())
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
        if let Some(assign) = &self.strategy.timestamp {
            for r in &mut self.buf {
                r.timestamp = assign(&r.value, r.timestamp);
            }
        }
        self.track_splits()?;
        if !self.buf.is_empty() {
            if self.splits.is_none() && self.strategy.out_of_orderness_ms.is_some() {
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
        let max_ts = match &self.splits {
            None => self.max_ts,
            Some(splits) => {
                // The slowest live split decides; idle splits (if configured) do not.
                let mut min: Option<i64> = None;
                for clock in splits.values() {
                    if self.strategy.idleness.is_some_and(|t| clock.last_data.elapsed() >= t) {
                        continue;
                    }
                    min = Some(min.map_or(clock.max_ts, |m| m.min(clock.max_ts)));
                }
                min?
            }
        };
        if max_ts == NO_TIMESTAMP {
            return None;
        }
        let wm = max_ts.saturating_sub(delay).saturating_sub(1);
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
