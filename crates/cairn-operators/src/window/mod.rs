//! Windows: time windows, the assigners that put records into them, the
//! functions that turn a window's contents into results, and the window
//! operator (in [`operator`]) that keeps every window's contents and timers in
//! keyed state, so snapshots and rescaling carry open windows.
//!
//! Semantics follow Flink: event-time windows fire when the watermark passes
//! their last timestamp; records that arrive within the allowed lateness
//! re-fire the window with an updated result; later records go to the
//! late-data side output (or are dropped and counted). Session windows merge
//! when records bridge their gaps.

mod assigners;
mod contents;
pub mod operator;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::collector::{OutputTag, Outputs};
use cairn_runtime::error::OpResult;
use cairn_runtime::record::NO_TIMESTAMP;

pub use assigners::{
    EventTimeSessionWindows, ProcessingTimeSessionWindows, SlidingEventTimeWindows, SlidingProcessingTimeWindows,
    TumblingEventTimeWindows, TumblingProcessingTimeWindows,
};
pub use contents::{AggregateContents, AggregateWindowContents, ProcessContents, ReduceContents, WindowContents};
pub use operator::WindowOperator;

/// Name of the keyed state holding each window's contents (namespaced by window).
pub const WINDOW_CONTENTS_STATE: &str = "window-contents";
/// Name of the per-key map of active session windows to the window their
/// contents are stored under.
pub const MERGING_WINDOWS_STATE: &str = "window-merging-sets";

/// A half-open span of time `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    pub start: i64,
    /// Exclusive.
    pub end: i64,
}

impl TimeWindow {
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }

    /// The last timestamp that belongs to the window; results carry it.
    pub fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    /// Whether the windows overlap or touch (touching session windows merge).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window holding both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The state and timer namespace of the window: start then end, both
    /// big-endian i64 (16 bytes).
    pub fn to_namespace(&self) -> [u8; 16] {
        let mut ns = [0u8; 16];
        ns[..8].copy_from_slice(&self.start.to_be_bytes());
        ns[8..].copy_from_slice(&self.end.to_be_bytes());
        ns
    }

    /// Decode a namespace written by [`TimeWindow::to_namespace`].
    pub fn from_namespace(bytes: &[u8]) -> Option<TimeWindow> {
        if bytes.len() != 16 {
            return None;
        }
        Some(TimeWindow {
            start: i64::from_be_bytes(bytes[..8].try_into().ok()?),
            end: i64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// Puts each record into zero or more windows.
pub trait WindowAssigner: Clone + Send + Sync + 'static {
    /// Append the windows of a record with event time `timestamp` that arrived
    /// at `processing_time` (epoch ms) to `out`.
    fn assign_windows(&self, timestamp: i64, processing_time: i64, out: &mut Vec<TimeWindow>);
    /// Whether windows follow event time (watermarks) or processing time.
    fn is_event_time(&self) -> bool;
    /// Whether windows merge (sessions).
    fn is_merging(&self) -> bool {
        false
    }
    /// Check the parameters; the message names the assigner and the fix.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// A short name for the operator's display name.
    fn describe(&self) -> String;
}

/// Turns all elements of one window into results (Flink's
/// `ProcessWindowFunction`). Each subtask gets its own clone.
pub trait ProcessWindowFunction<K, T, O>: Clone + Send + 'static {
    /// Called when `window` of `key` fires, with every element in it.
    fn process(&mut self, key: &K, window: &TimeWindow, elements: Vec<T>, out: &mut WindowCollector<'_, O>)
        -> OpResult;
}

/// Where a firing window's results go. Results carry the window's
/// `max_timestamp` as their timestamp.
pub struct WindowCollector<'a, O> {
    pub(crate) out: &'a mut Outputs<O>,
    pub(crate) timestamp: i64,
    pub(crate) watermark: i64,
    pub(crate) processing_time: i64,
}

impl<O: Send + 'static> WindowCollector<'_, O> {
    /// Emit a result.
    pub fn collect(&mut self, value: O) {
        self.out.collect(value, self.timestamp)
    }
    /// Emit to a side output.
    pub fn output<S: Send + 'static>(&mut self, tag: &OutputTag<S>, value: S) {
        self.out.side(tag, value, self.timestamp)
    }
    /// The timestamp results get (the window's last timestamp).
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != NO_TIMESTAMP).then_some(self.timestamp)
    }
    /// The operator's current event time.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }
    /// Processing time when the window fired (epoch ms), from the job's clock.
    pub fn current_processing_time(&self) -> i64 {
        self.processing_time
    }
}

/// How a window operator treats late records.
pub struct WindowSettings<T> {
    /// How long after a window's end (in event time) it keeps its contents
    /// and re-fires for late records. Ignored for processing time.
    pub allowed_lateness_ms: i64,
    /// Where records too late for all their windows go; dropped when `None`.
    pub late_tag: Option<OutputTag<T>>,
    /// Counts records dropped as late (those not sent to `late_tag`).
    pub late_dropped: Arc<AtomicU64>,
}

impl<T> Clone for WindowSettings<T> {
    fn clone(&self) -> Self {
        WindowSettings {
            allowed_lateness_ms: self.allowed_lateness_ms,
            late_tag: self.late_tag.clone(),
            late_dropped: self.late_dropped.clone(),
        }
    }
}

impl<T> Default for WindowSettings<T> {
    fn default() -> Self {
        WindowSettings {
            allowed_lateness_ms: 0,
            late_tag: None,
            late_dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_round_trips() {
        let w = TimeWindow::new(-5, 1_000);
        let ns = w.to_namespace();
        assert_eq!(&ns[..8], &(-5i64).to_be_bytes());
        assert_eq!(TimeWindow::from_namespace(&ns), Some(w));
        assert_eq!(TimeWindow::from_namespace(&ns[..15]), None);
        assert_eq!(w.max_timestamp(), 999);
    }

    #[test]
    fn touching_windows_intersect() {
        let a = TimeWindow::new(0, 5);
        assert!(a.intersects(&TimeWindow::new(5, 9)));
        assert!(!a.intersects(&TimeWindow::new(6, 9)));
        assert_eq!(a.cover(&TimeWindow::new(3, 9)), TimeWindow::new(0, 9));
    }
}
