//! A task's input side: one channel per upstream subtask, the combined
//! watermark (minimum over active channels), and checkpoint barrier alignment.
//! The bookkeeping ([`InputState`]) is pure logic so alignment can be tested
//! without threads.

use crate::record::{Barrier, NO_TIMESTAMP};

/// Per-channel progress.
#[derive(Clone, Debug)]
struct ChannelState {
    watermark: i64,
    idle: bool,
    ended: bool,
    /// Barrier of the pending checkpoint already received on this channel.
    barrier_seen: bool,
}

/// What the task must do after a barrier arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierAction {
    /// Wait for more channels; block this one (exactly-once) or not.
    Wait,
    /// Every channel delivered the barrier: snapshot now and forward it.
    Snapshot(Barrier),
    /// A newer barrier overtook a pending checkpoint; that one is abandoned
    /// (the coordinator times it out or declines it) and the new one pending.
    AbortedPrevious { aborted: u64 },
}

/// Watermark and barrier bookkeeping for all input channels of a task.
#[derive(Clone, Debug)]
pub struct InputState {
    channels: Vec<ChannelState>,
    combined_watermark: i64,
    pending: Option<Barrier>,
    exactly_once: bool,
}

impl InputState {
    /// `n` channels; `exactly_once` blocks channels during alignment.
    pub fn new(n: usize, exactly_once: bool) -> Self {
        InputState {
            channels: vec![
                ChannelState {
                    watermark: NO_TIMESTAMP,
                    idle: false,
                    ended: false,
                    barrier_seen: false
                };
                n
            ],
            combined_watermark: NO_TIMESTAMP,
            pending: None,
            exactly_once,
        }
    }

    /// Whether channel `ch` should be read now (not blocked by alignment, not ended).
    pub fn readable(&self, ch: usize) -> bool {
        let c = &self.channels[ch];
        !(c.ended || (self.exactly_once && c.barrier_seen))
    }

    /// All channels ended.
    pub fn all_ended(&self) -> bool {
        self.channels.iter().all(|c| c.ended)
    }

    /// The combined watermark so far.
    pub fn watermark(&self) -> i64 {
        self.combined_watermark
    }

    /// Record a watermark on `ch`; returns the new combined watermark if it advanced.
    pub fn on_watermark(&mut self, ch: usize, wm: i64) -> Option<i64> {
        let c = &mut self.channels[ch];
        c.watermark = c.watermark.max(wm);
        c.idle = false;
        self.recompute()
    }

    /// Record an idleness change on `ch`; returns the combined watermark if it advanced.
    pub fn on_idle(&mut self, ch: usize, idle: bool) -> Option<i64> {
        self.channels[ch].idle = idle;
        self.recompute()
    }

    /// Whether every live channel is idle (then the task itself is idle).
    pub fn all_idle(&self) -> bool {
        let mut live = self.channels.iter().filter(|c| !c.ended).peekable();
        live.peek().is_some() && live.all(|c| c.idle)
    }

    fn recompute(&mut self) -> Option<i64> {
        let min = self
            .channels
            .iter()
            .filter(|c| !c.ended && !c.idle)
            .map(|c| c.watermark)
            .min();
        let min = match min {
            Some(m) => m,
            // Every input ended: event time ends.
            None if self.channels.iter().all(|c| c.ended) => i64::MAX,
            // Every live input is idle: nothing holds event time back any
            // more, so it moves to the furthest any input has reached.
            None => self.channels.iter().filter(|c| !c.ended).map(|c| c.watermark).max()?,
        };
        if min > self.combined_watermark {
            self.combined_watermark = min;
            Some(min)
        } else {
            None
        }
    }

    /// Record that `ch` ended. Returns the barrier action (an ended channel
    /// counts as having delivered a pending barrier) and any watermark advance.
    pub fn on_end(&mut self, ch: usize) -> (Option<BarrierAction>, Option<i64>) {
        self.channels[ch].ended = true;
        let action = self.pending.and_then(|b| self.check_aligned(b));
        (action, self.recompute())
    }

    /// Record a barrier on `ch`.
    pub fn on_barrier(&mut self, ch: usize, barrier: Barrier) -> BarrierAction {
        let mut aborted = None;
        match self.pending {
            Some(p) if p.checkpoint_id == barrier.checkpoint_id => {}
            Some(p) if p.checkpoint_id > barrier.checkpoint_id => {
                // A late barrier of an abandoned checkpoint: ignore it.
                return BarrierAction::Wait;
            }
            Some(p) => {
                aborted = Some(p.checkpoint_id);
                self.reset();
                self.pending = Some(barrier);
            }
            None => self.pending = Some(barrier),
        }
        self.channels[ch].barrier_seen = true;
        if let Some(action) = self.check_aligned(barrier) {
            return action;
        }
        match aborted {
            Some(aborted) => BarrierAction::AbortedPrevious { aborted },
            None => BarrierAction::Wait,
        }
    }

    fn check_aligned(&mut self, barrier: Barrier) -> Option<BarrierAction> {
        if self.channels.iter().all(|c| c.barrier_seen || c.ended) {
            self.reset();
            Some(BarrierAction::Snapshot(barrier))
        } else {
            None
        }
    }

    fn reset(&mut self) {
        self.pending = None;
        for c in &mut self.channels {
            c.barrier_seen = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SnapshotType;

    fn barrier(id: u64) -> Barrier {
        Barrier {
            checkpoint_id: id,
            timestamp_ms: 0,
            snapshot_type: SnapshotType::Checkpoint,
        }
    }

    #[test]
    fn exactly_once_blocks_channels_until_all_barriers_arrive() {
        let mut s = InputState::new(3, true);
        assert_eq!(s.on_barrier(0, barrier(1)), BarrierAction::Wait);
        assert!(!s.readable(0), "a channel that delivered the barrier is blocked");
        assert!(s.readable(1) && s.readable(2));
        assert_eq!(s.on_barrier(2, barrier(1)), BarrierAction::Wait);
        assert_eq!(s.on_barrier(1, barrier(1)), BarrierAction::Snapshot(barrier(1)));
        assert!((0..3).all(|c| s.readable(c)), "alignment done: all unblocked");
    }

    #[test]
    fn at_least_once_never_blocks() {
        let mut s = InputState::new(2, false);
        s.on_barrier(0, barrier(1));
        assert!(s.readable(0));
        assert_eq!(s.on_barrier(1, barrier(1)), BarrierAction::Snapshot(barrier(1)));
    }

    #[test]
    fn an_ended_channel_counts_as_aligned() {
        let mut s = InputState::new(2, true);
        s.on_barrier(0, barrier(4));
        let (action, _) = s.on_end(1);
        assert_eq!(action, Some(BarrierAction::Snapshot(barrier(4))));
    }

    #[test]
    fn a_newer_barrier_abandons_the_pending_one_and_late_ones_are_ignored() {
        let mut s = InputState::new(2, true);
        s.on_barrier(0, barrier(1));
        assert_eq!(
            s.on_barrier(1, barrier(2)),
            BarrierAction::AbortedPrevious { aborted: 1 }
        );
        assert!(s.readable(0), "the abandoned checkpoint's block is lifted");
        assert_eq!(s.on_barrier(0, barrier(1)), BarrierAction::Wait);
        assert_eq!(s.on_barrier(0, barrier(2)), BarrierAction::Snapshot(barrier(2)));
    }

    #[test]
    fn when_every_channel_is_idle_the_watermark_moves_to_the_furthest() {
        let mut s = InputState::new(2, true);
        s.on_watermark(0, 30);
        assert_eq!(s.on_idle(0, true), None, "channel 1 is active without a watermark");
        assert_eq!(s.on_idle(1, true), Some(30));
    }

    #[test]
    fn watermark_is_the_minimum_over_active_channels() {
        let mut s = InputState::new(2, true);
        assert_eq!(s.on_watermark(0, 10), None, "channel 1 has no watermark yet");
        assert_eq!(s.on_watermark(1, 5), Some(5));
        assert_eq!(s.on_watermark(1, 20), Some(10));
        assert_eq!(s.on_watermark(0, 8), None, "watermarks never go back");
        assert_eq!(
            s.on_idle(0, true),
            Some(20),
            "an idle channel does not hold the watermark"
        );
        let (_, wm) = s.on_end(1);
        assert_eq!(
            wm, None,
            "channel 0 is idle at 20 and channel 1 ended: the watermark stays"
        );
        let (_, wm) = s.on_end(0);
        assert_eq!(wm, Some(i64::MAX), "all ended: event time ends");
    }
}
