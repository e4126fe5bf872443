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
        if self.strategy.out_of_orderness_ms.is_none() {
            // No watermarks: nothing to track, but the report must not pile up.
            progress.added.clear();
            progress.runs.clear();
            progress.finished.clear();
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_config::Configuration;

    /// One scripted poll: records as (split, timestamp), then the splits that finished.
    type Poll = (Vec<(u64, i64)>, Vec<u64>);

    /// Emits the scripted batches: each record is (split, timestamp); splits
    /// are added on the first poll and finished when listed.
    #[derive(Clone)]
    struct Scripted {
        splits: Vec<u64>,
        polls: Vec<Poll>,
        progress: SplitProgress,
        per_split: bool,
        /// Emit records without saying which split they came from (a broken source).
        forget_runs: bool,
    }

    impl Source<u64> for Scripted {
        fn open(&mut self, _ctx: &mut SourceContext<'_>) -> OpResult {
            for s in &self.splits {
                self.progress.split_added(*s);
            }
            Ok(())
        }
        fn poll(&mut self, out: &mut Vec<StreamRecord<u64>>, _max: usize) -> OpResult<SourceStatus> {
            if self.polls.is_empty() {
                return Ok(SourceStatus::Finished);
            }
            let (records, finished) = self.polls.remove(0);
            for (split, ts) in records {
                out.push(StreamRecord {
                    value: split,
                    timestamp: ts,
                });
                if !self.forget_runs {
                    self.progress.records_from(split, 1);
                }
            }
            for s in finished {
                self.progress.split_finished(s);
            }
            Ok(SourceStatus::More)
        }
        fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
            Ok(())
        }
        fn split_progress(&mut self) -> Option<&mut SplitProgress> {
            self.per_split.then_some(&mut self.progress)
        }
    }

    fn adapter(source: Scripted, strategy: WatermarkStrategy<u64>) -> SourceAdapter<u64, Scripted> {
        let mut a = SourceAdapter::new(source, strategy);
        a.open(OpenContext {
            info: SubtaskInfo {
                job_id: "test".into(),
                operator_name: "source".into(),
                uid: "source".into(),
                operator_id: "0".into(),
                subtask: 0,
                parallelism: 1,
                max_parallelism: 128,
                attempt: 0,
                clock: crate::time::system_clock(),
            },
            config: Arc::new(Configuration::new()),
            keyed: None,
            operator_state: OperatorStateStore::new(),
        })
        .unwrap();
        a
    }

    /// Watermark after each poll.
    fn watermarks(a: &mut SourceAdapter<u64, Scripted>, polls: usize) -> Vec<Option<i64>> {
        (0..polls)
            .map(|_| {
                a.poll(100, &mut Emitter::default()).unwrap();
                a.take_watermark()
            })
            .collect()
    }

    fn two_splits(per_split: bool) -> Scripted {
        Scripted {
            splits: vec![0, 1],
            polls: vec![
                // Split 0 is at event time 1000, split 1 only at 10.
                (vec![(0, 1000)], vec![]),
                (vec![(1, 10), (0, 1001)], vec![]),
                (vec![(1, 20)], vec![]),
                // Split 1 ends: split 0 alone decides.
                (vec![], vec![1]),
            ],
            progress: SplitProgress::default(),
            per_split,
            forget_runs: false,
        }
    }

    #[test]
    fn the_watermark_is_the_slowest_live_split_and_a_finished_split_releases_it() {
        let mut a = adapter(two_splits(true), WatermarkStrategy::for_monotonous_timestamps());
        // Held back until split 1 emitted; then split 1 leads from below.
        assert_eq!(watermarks(&mut a, 4), vec![None, Some(9), Some(19), Some(1000)]);
    }

    #[test]
    fn without_split_reports_the_subtask_is_one_stream() {
        let mut a = adapter(two_splits(false), WatermarkStrategy::for_monotonous_timestamps());
        assert_eq!(watermarks(&mut a, 4), vec![Some(999), Some(1000), None, None]);
    }

    #[test]
    fn with_idleness_a_silent_split_does_not_hold_the_watermark() {
        let source = Scripted {
            splits: vec![0, 1],
            polls: vec![(vec![(0, 500)], vec![]), (vec![(0, 600)], vec![])],
            progress: SplitProgress::default(),
            per_split: true,
            forget_runs: false,
        };
        let strategy = WatermarkStrategy::for_monotonous_timestamps().with_idleness(Duration::from_secs(5));
        let mut a = adapter(source, strategy);
        assert_eq!(watermarks(&mut a, 1), vec![None], "split 1 is not idle yet");
        // Split 1 has been silent for longer than the idleness timeout.
        let clock = a.splits.as_mut().unwrap().get_mut(&1).unwrap();
        clock.last_data = Instant::now().checked_sub(Duration::from_secs(10)).unwrap();
        assert_eq!(watermarks(&mut a, 1), vec![Some(599)]);
    }

    #[test]
    fn records_without_a_reported_split_are_an_error() {
        let mut source = two_splits(true);
        source.forget_runs = true;
        let mut a = adapter(source, WatermarkStrategy::for_monotonous_timestamps());
        let err = a.poll(100, &mut Emitter::default()).unwrap_err().to_string();
        assert!(err.contains("reported the split of only 0"), "{err}");
    }
}
