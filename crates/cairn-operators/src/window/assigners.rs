//! The built-in window assigners: tumbling, sliding and session windows, in
//! event time and in processing time.

use std::time::Duration;

use super::{TimeWindow, WindowAssigner};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Start of the window of length `size` (aligned to `offset`) holding `ts`.
/// Computed in i128 so extreme timestamps cannot overflow.
fn window_start(ts: i64, offset: i64, size: i64) -> i128 {
    let ts = ts as i128;
    ts - (ts - offset as i128).rem_euclid(size as i128)
}

fn tumbling(ts: i64, size: i64, offset: i64, out: &mut Vec<TimeWindow>) {
    if size <= 0 {
        return;
    }
    let start = window_start(ts, offset, size);
    out.push(TimeWindow::new(clamp(start), clamp(start + size as i128)));
}

fn sliding(ts: i64, size: i64, slide: i64, offset: i64, out: &mut Vec<TimeWindow>) {
    if size <= 0 || slide <= 0 {
        return;
    }
    let mut start = window_start(ts, offset, slide);
    while start > ts as i128 - size as i128 {
        out.push(TimeWindow::new(clamp(start), clamp(start + size as i128)));
        start -= slide as i128;
    }
}

fn check_size(what: &str, size: i64) -> Result<(), String> {
    if size <= 0 {
        return Err(format!(
            "{what} must be at least 1 ms (got {size} ms); pass a positive Duration"
        ));
    }
    Ok(())
}

fn check_offset(what: &str, offset: i64, period: i64) -> Result<(), String> {
    if offset >= period {
        return Err(format!(
            "{what} offset ({offset} ms) must be smaller than the window period ({period} ms)"
        ));
    }
    Ok(())
}

macro_rules! tumbling_assigner {
    ($(#[$doc:meta])* $name:ident, $event:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            size: i64,
            offset: i64,
        }

        impl $name {
            /// Windows of length `size`, aligned to the epoch.
            pub fn of(size: Duration) -> Self {
                $name { size: ms(size), offset: 0 }
            }

            /// Shift window starts by `offset` (smaller than `size`), e.g. to
            /// align daily windows to a time zone.
            pub fn with_offset(mut self, offset: Duration) -> Self {
                self.offset = ms(offset);
                self
            }
        }

        impl WindowAssigner for $name {
            fn assign_windows(&self, ts: i64, now: i64, out: &mut Vec<TimeWindow>) {
                tumbling(if $event { ts } else { now }, self.size, self.offset, out)
            }
            fn is_event_time(&self) -> bool {
                $event
            }
            fn validate(&self) -> Result<(), String> {
                check_size(concat!(stringify!($name), " size"), self.size)?;
                check_offset(stringify!($name), self.offset, self.size)
            }
            fn describe(&self) -> String {
                format!("{}({} ms)", stringify!($name), self.size)
            }
        }
    };
}

macro_rules! sliding_assigner {
    ($(#[$doc:meta])* $name:ident, $event:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            size: i64,
            slide: i64,
            offset: i64,
        }

        impl $name {
            /// Windows of length `size` starting every `slide`.
            pub fn of(size: Duration, slide: Duration) -> Self {
                $name { size: ms(size), slide: ms(slide), offset: 0 }
            }

            /// Shift window starts by `offset` (smaller than `slide`).
            pub fn with_offset(mut self, offset: Duration) -> Self {
                self.offset = ms(offset);
                self
            }
        }

        impl WindowAssigner for $name {
            fn assign_windows(&self, ts: i64, now: i64, out: &mut Vec<TimeWindow>) {
                sliding(if $event { ts } else { now }, self.size, self.slide, self.offset, out)
            }
            fn is_event_time(&self) -> bool {
                $event
            }
            fn validate(&self) -> Result<(), String> {
                check_size(concat!(stringify!($name), " size"), self.size)?;
                check_size(concat!(stringify!($name), " slide"), self.slide)?;
                check_offset(stringify!($name), self.offset, self.slide)
            }
            fn describe(&self) -> String {
                format!("{}({} ms, {} ms)", stringify!($name), self.size, self.slide)
            }
        }
    };
}

macro_rules! session_assigner {
    ($(#[$doc:meta])* $name:ident, $event:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            gap: i64,
        }

        impl $name {
            /// A session ends after `gap` without records of its key.
            pub fn with_gap(gap: Duration) -> Self {
                $name { gap: ms(gap) }
            }
        }

        impl WindowAssigner for $name {
            fn assign_windows(&self, ts: i64, now: i64, out: &mut Vec<TimeWindow>) {
                let t = if $event { ts } else { now };
                out.push(TimeWindow::new(t, t.saturating_add(self.gap)));
            }
            fn is_event_time(&self) -> bool {
                $event
            }
            fn is_merging(&self) -> bool {
                true
            }
            fn validate(&self) -> Result<(), String> {
                check_size(concat!(stringify!($name), " gap"), self.gap)
            }
            fn describe(&self) -> String {
                format!("{}({} ms)", stringify!($name), self.gap)
            }
        }
    };
}

tumbling_assigner!(
    /// Fixed-size, non-overlapping event-time windows.
    TumblingEventTimeWindows, true);
tumbling_assigner!(
    /// Fixed-size, non-overlapping processing-time windows.
    TumblingProcessingTimeWindows, false);
sliding_assigner!(
    /// Fixed-size event-time windows that overlap: each record is in `size / slide` of them.
    SlidingEventTimeWindows, true);
sliding_assigner!(
    /// Fixed-size processing-time windows that overlap.
    SlidingProcessingTimeWindows, false);
session_assigner!(
    /// Event-time sessions: windows of a key merge while records are closer than the gap.
    EventTimeSessionWindows, true);
session_assigner!(
    /// Processing-time sessions.
    ProcessingTimeSessionWindows, false);

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(a: &impl WindowAssigner, ts: i64) -> Vec<TimeWindow> {
        let mut v = Vec::new();
        a.assign_windows(ts, 0, &mut v);
        v
    }

    #[test]
    fn tumbling_handles_offsets_and_negative_time() {
        let a = TumblingEventTimeWindows::of(Duration::from_millis(10));
        assert_eq!(assign(&a, 0), vec![TimeWindow::new(0, 10)]);
        assert_eq!(assign(&a, 9), vec![TimeWindow::new(0, 10)]);
        assert_eq!(assign(&a, -1), vec![TimeWindow::new(-10, 0)]);
        let b = a.with_offset(Duration::from_millis(3));
        assert_eq!(assign(&b, 2), vec![TimeWindow::new(-7, 3)]);
        assert_eq!(assign(&b, 3), vec![TimeWindow::new(3, 13)]);
        assert!(TumblingEventTimeWindows::of(Duration::ZERO).validate().is_err());
        assert!(a.with_offset(Duration::from_millis(10)).validate().is_err());
    }

    #[test]
    fn sliding_puts_each_record_in_size_over_slide_windows() {
        let a = SlidingEventTimeWindows::of(Duration::from_millis(10), Duration::from_millis(5));
        assert_eq!(assign(&a, 7), vec![TimeWindow::new(5, 15), TimeWindow::new(0, 10)]);
        assert_eq!(assign(&a, 10), vec![TimeWindow::new(10, 20), TimeWindow::new(5, 15)]);
        let b = SlidingEventTimeWindows::of(Duration::from_millis(10), Duration::from_millis(3));
        let w = assign(&b, 0);
        assert_eq!(w.len(), 4);
        assert!(w.iter().all(|w| w.start <= 0 && 0 < w.end));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let a = TumblingEventTimeWindows::of(Duration::from_millis(1000));
        let w = assign(&a, i64::MAX);
        assert_eq!(w[0], TimeWindow::new(i64::MAX - 807, i64::MAX));
        let s = EventTimeSessionWindows::with_gap(Duration::from_millis(5));
        assert_eq!(assign(&s, i64::MAX - 1)[0].end, i64::MAX);
    }
}
