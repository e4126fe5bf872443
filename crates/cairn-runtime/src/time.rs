//! Processing time: what TTL, processing-time timers and processing-time
//! windows measure. It comes from a [`Clock`] that a job can replace (as
//! Flink's `TtlTimeProvider` and `ProcessingTimeService` can be): the
//! system clock by default, a [`ManualClock`] in tests, so tests of TTL and
//! timers decide the time instead of waiting for it.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time now, in epoch milliseconds (for statistics and logs;
/// processing time of operators comes from the job's [`Clock`]).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A source of processing time, in epoch milliseconds. Must not go backwards.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Processing time now.
    fn now_ms(&self) -> i64;
}

/// The job's clock, shared by all its tasks.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// The default clock of a job.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to, for tests. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            ms: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `ms` (negative values are ignored: time
    /// never goes backwards); returns the new time.
    pub fn advance(&self, ms: i64) -> i64 {
        self.ms.fetch_add(ms.max(0), Ordering::SeqCst) + ms.max(0)
    }

    /// Moves the clock forward to `ms` (never backwards); returns the time.
    pub fn advance_to(&self, ms: i64) -> i64 {
        self.ms.fetch_max(ms, Ordering::SeqCst).max(ms)
    }

    /// The clock as a job's [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_and_is_shared_by_clones() {
        let c = ManualClock::new(1_000);
        let shared = c.shared();
        assert_eq!(shared.now_ms(), 1_000);
        assert_eq!(c.advance(250), 1_250);
        assert_eq!(shared.now_ms(), 1_250);
        assert_eq!(c.advance(-5), 1_250);
        assert_eq!(c.advance_to(1_000), 1_250);
        assert_eq!(c.advance_to(2_000), 2_000);
        assert_eq!(c.clone().now_ms(), 2_000);
    }

    #[test]
    fn the_system_clock_reads_epoch_milliseconds() {
        let before = now_ms();
        let t = SystemClock.now_ms();
        assert!(t >= before && t > 1_600_000_000_000);
    }
}
