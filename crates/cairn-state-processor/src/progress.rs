//! Progress of long offline work (rewrite, reseal, fsck, gc, reading all
//! keyed state), reported to a callback so a command line can draw a bar.
//! The library never prints: callers decide whether anyone is watching.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where an operation is: `done` of `total` units (files, or key groups
/// for keyed state) and the bytes handled so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done ("verifying", "deleting", "resealing", "reading", "rewriting").
    pub phase: &'static str,
    /// What `done` and `total` count ("files", "key groups").
    pub unit: &'static str,
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
}

/// Receives progress; called from worker threads, after every unit.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Counts one phase's units and bytes and reports each step.
pub(crate) struct Tracker {
    phase: &'static str,
    unit: &'static str,
    report: Option<ProgressFn>,
    done: AtomicU64,
    total: AtomicU64,
    bytes: AtomicU64,
}

impl Tracker {
    pub(crate) fn new(phase: &'static str, unit: &'static str, report: Option<&ProgressFn>, total: u64) -> Tracker {
        let t = Tracker {
            phase,
            unit,
            report: report.cloned(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            bytes: AtomicU64::new(0),
        };
        t.emit();
        t
    }

    /// More units became known (e.g. another snapshot's files).
    pub(crate) fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        self.emit();
    }

    /// One unit is done, having handled `bytes`.
    pub(crate) fn step(&self, bytes: u64) {
        self.advance(1, bytes);
    }

    /// `units` more are done, having handled `bytes`.
    pub(crate) fn advance(&self, units: u64, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.done.fetch_add(units, Ordering::Relaxed);
        self.emit();
    }

    fn emit(&self) {
        if let Some(f) = &self.report {
            f(Progress {
                phase: self.phase,
                unit: self.unit,
                done: self.done.load(Ordering::Relaxed),
                total: self.total.load(Ordering::Relaxed),
                bytes: self.bytes.load(Ordering::Relaxed),
            });
        }
    }
}
