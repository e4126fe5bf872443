//! Checkpoint barriers at a task's inputs: aligned (block a channel that
//! delivered the barrier until all have), unaligned (snapshot at the first
//! announcement or barrier and capture the in-flight messages each channel
//! delivers before its barrier), and aligned with a timeout that switches to
//! unaligned. Pure logic, driven by events, so every path is testable
//! without threads; the task loop feeds it what it reads and acts on the
//! [`BarrierAction`]s it queues.
//!
//! Positions: every data message of a channel has a 0-based position (the
//! task reports each read in order). An announcement says the barrier is at
//! position `seq`, so the messages of that channel to capture are exactly
//! those at positions before `seq` that the task had not processed when it
//! snapshotted: the ones still in its inbox then, and the ones it reads
//! later up to `seq`. A channel whose announcement has not come yet is
//! captured as it is read, until its barrier (or end) shows up.
//!
//! Savepoints are always aligned (as in Flink); unaligned checkpoints need
//! exactly-once mode.

use std::collections::VecDeque;

use crate::record::{Barrier, SnapshotType};

/// How barriers are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierSettings {
    /// Block channels during alignment (exactly-once) or not (at-least-once).
    pub exactly_once: bool,
    /// `execution.checkpointing.unaligned.enabled` (only with exactly-once).
    pub unaligned: bool,
    /// `execution.checkpointing.aligned-checkpoint-timeout` in ms: 0 starts
    /// unaligned; otherwise a checkpoint starts aligned and switches once
    /// this long has passed since it was triggered.
    pub aligned_timeout_ms: u64,
}

impl BarrierSettings {
    /// Aligned checkpoints (exactly-once or not), as before unaligned ones existed.
    pub fn aligned(exactly_once: bool) -> Self {
        BarrierSettings {
            exactly_once,
            unaligned: false,
            aligned_timeout_ms: 0,
        }
    }

    /// Whether `barrier` may be taken unaligned.
    fn unaligned_for(&self, barrier: &Barrier) -> bool {
        self.unaligned && self.exactly_once && barrier.snapshot_type == SnapshotType::Checkpoint
    }
}

/// What the task must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierAction {
    /// Snapshot the operators now and forward the barrier. `unaligned`: the
    /// snapshot waits for its channel state (log every message still in the
    /// inbox now, and what [`BarrierHandler::on_data`] says to log) until
    /// [`BarrierAction::Captured`].
    Snapshot { barrier: Barrier, unaligned: bool },
    /// The channel state of unaligned checkpoint `checkpoint_id` is complete:
    /// its snapshot can be written.
    Captured { checkpoint_id: u64 },
    /// Checkpoint `checkpoint_id` was overtaken by checkpoint `by` before it
    /// completed here: decline it (and drop what was captured for it).
    Aborted { checkpoint_id: u64, by: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Waiting for every channel's in-band barrier; `deadline_ms` when it
    /// may switch to unaligned.
    Aligning {
        barrier: Barrier,
        deadline_ms: Option<u64>,
    },
    /// Snapshot taken; capturing the channels' in-flight messages.
    Capturing {
        barrier: Barrier,
    },
}

#[derive(Clone, Debug, Default)]
struct Chan {
    ended: bool,
    /// Data messages read so far (the next one's position).
    read: u64,
    /// The pending checkpoint's in-band barrier was read on this channel.
    barrier_seen: bool,
    /// The pending checkpoint's announced barrier position.
    announced: Option<u64>,
    /// Capturing: every message of this channel before the barrier is logged.
    captured: bool,
}

/// Barrier bookkeeping for all input channels of a task.
#[derive(Clone, Debug)]
pub struct BarrierHandler {
    settings: BarrierSettings,
    channels: Vec<Chan>,
    phase: Phase,
    /// The newest checkpoint this task started (anything at or below it that
    /// is not pending is late and ignored).
    last_started: Option<u64>,
    actions: VecDeque<BarrierAction>,
}

impl BarrierHandler {
    /// `n` input channels.
    pub fn new(n: usize, settings: BarrierSettings) -> Self {
        BarrierHandler {
            settings,
            channels: vec![Chan::default(); n],
            phase: Phase::Idle,
            last_started: None,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, in order.
    pub fn next_action(&mut self) -> Option<BarrierAction> {
        self.actions.pop_front()
    }

    /// Whether channel `ch` may be read and processed now (not ended, not
    /// blocked by an exactly-once alignment).
    pub fn readable(&self, ch: usize) -> bool {
        let c = &self.channels[ch];
        let blocked = matches!(self.phase, Phase::Aligning { .. }) && self.settings.exactly_once && c.barrier_seen;
        !c.ended && !blocked
    }

    /// Whether channel `ch` should be read ahead into the inbox without
    /// processing (its barrier position is known and not reached yet), so
    /// an unaligned checkpoint completes however slowly records are processed.
    pub fn wants_read_ahead(&self, ch: usize) -> bool {
        let c = &self.channels[ch];
        matches!(self.phase, Phase::Capturing { .. })
            && !c.captured
            && !c.ended
            && c.announced.is_some_and(|s| c.read < s)
    }

    /// Every channel ended.
    pub fn all_ended(&self) -> bool {
        self.channels.iter().all(|c| c.ended)
    }

    /// Whether channel `ch` ended.
    pub fn ended(&self, ch: usize) -> bool {
        self.channels[ch].ended
    }

    /// When an aligned checkpoint switches to unaligned, if it may.
    pub fn deadline_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Aligning { deadline_ms, .. } => deadline_ms,
            _ => None,
        }
    }

    /// The checkpoint in progress here (aligning or capturing).
    pub fn pending(&self) -> Option<Barrier> {
        match self.phase {
            Phase::Idle => None,
            Phase::Aligning { barrier, .. } | Phase::Capturing { barrier } => Some(barrier),
        }
    }

    /// Whether an unaligned checkpoint is capturing channel state.
    pub fn capturing(&self) -> bool {
        matches!(self.phase, Phase::Capturing { .. })
    }

    /// Data messages read from channel `ch` so far.
    pub fn read_count(&self, ch: usize) -> u64 {
        self.channels[ch].read
    }

    /// A data message (records, watermark, idleness) was read from `ch`.
    /// Returns whether it belongs to the channel state being captured.
    pub fn on_data(&mut self, ch: usize) -> bool {
        let capturing = matches!(self.phase, Phase::Capturing { .. });
        let c = &mut self.channels[ch];
        let position = c.read;
        c.read += 1;
        if !capturing || c.captured {
            return false;
        }
        match c.announced {
            Some(s) if position >= s => {
                // Cannot happen with a correct sender: the barrier sits at `s`.
                c.captured = true;
                self.check_captured();
                false
            }
            Some(s) => {
                if c.read == s {
                    c.captured = true;
                    self.check_captured();
                }
                true
            }
            None => true,
        }
    }

    /// The in-band `barrier` was read from `ch`.
    pub fn on_barrier(&mut self, ch: usize, barrier: Barrier, now_ms: u64) {
        self.channels[ch].read += 1;
        if !self.admit(barrier) {
            return;
        }
        match self.phase {
            Phase::Idle => {
                if self.settings.unaligned_for(&barrier) && self.settings.aligned_timeout_ms == 0 {
                    self.start_capture(barrier);
                    self.channel_done_at_barrier(ch);
                    self.check_captured();
                } else {
                    self.start_aligning(barrier);
                    self.channels[ch].barrier_seen = true;
                    if !self.check_aligned() {
                        self.on_time(now_ms);
                    }
                }
            }
            Phase::Aligning { .. } => {
                self.channels[ch].barrier_seen = true;
                self.check_aligned();
            }
            Phase::Capturing { .. } => {
                self.channel_done_at_barrier(ch);
                self.check_captured();
            }
        }
    }

    /// The priority lane announced that `barrier` is message `seq` of `ch`.
    pub fn on_announce(&mut self, ch: usize, barrier: Barrier, seq: u64, now_ms: u64) {
        if !self.settings.unaligned_for(&barrier) {
            return; // aligned receivers go by the in-band barriers alone
        }
        if !self.admit(barrier) {
            return;
        }
        if self.channels[ch].barrier_seen {
            return; // the barrier itself came first: nothing left to learn
        }
        self.channels[ch].announced = Some(seq);
        match self.phase {
            Phase::Idle => {
                if self.settings.aligned_timeout_ms == 0 {
                    self.start_capture(barrier);
                    self.check_captured();
                } else {
                    self.start_aligning(barrier);
                    self.channels[ch].announced = Some(seq);
                    self.on_time(now_ms);
                }
            }
            Phase::Aligning { .. } => {}
            Phase::Capturing { .. } => {
                let c = &mut self.channels[ch];
                if !c.captured && c.read >= seq {
                    c.captured = true;
                }
                self.check_captured();
            }
        }
    }

    /// Input channel `ch` ended (its end-of-input was processed).
    pub fn on_end(&mut self, ch: usize) {
        let c = &mut self.channels[ch];
        c.ended = true;
        c.read += 1;
        match self.phase {
            Phase::Idle => {}
            Phase::Aligning { .. } => {
                self.check_aligned();
            }
            Phase::Capturing { .. } => {
                self.channels[ch].captured = true;
                self.check_captured();
            }
        }
    }

    /// Time passed: an alignment past its deadline switches to unaligned.
    pub fn on_time(&mut self, now_ms: u64) {
        let Phase::Aligning {
            barrier,
            deadline_ms: Some(deadline),
        } = self.phase
        else {
            return;
        };
        if now_ms < deadline {
            return;
        }
        // A channel that delivered its barrier has nothing in flight before it.
        self.start_capture(barrier);
        self.check_captured();
    }

    /// Whether `barrier` concerns this task now; a newer one aborts the
    /// pending checkpoint. Late barriers of finished or abandoned
    /// checkpoints are ignored.
    fn admit(&mut self, barrier: Barrier) -> bool {
        let id = barrier.checkpoint_id;
        if let Some(p) = self.pending() {
            if p.checkpoint_id == id {
                return true;
            }
            if p.checkpoint_id > id {
                return false;
            }
            self.actions.push_back(BarrierAction::Aborted {
                checkpoint_id: p.checkpoint_id,
                by: id,
            });
            self.reset();
            return true;
        }
        self.last_started.is_none_or(|last| id > last)
    }

    fn start_aligning(&mut self, barrier: Barrier) {
        self.last_started = Some(barrier.checkpoint_id);
        let deadline_ms = self
            .settings
            .unaligned_for(&barrier)
            .then(|| barrier.timestamp_ms.saturating_add(self.settings.aligned_timeout_ms));
        self.phase = Phase::Aligning { barrier, deadline_ms };
    }

    fn start_capture(&mut self, barrier: Barrier) {
        self.last_started = Some(barrier.checkpoint_id);
        self.phase = Phase::Capturing { barrier };
        for c in &mut self.channels {
            c.captured = c.ended || c.barrier_seen || c.announced.is_some_and(|s| c.read >= s);
        }
        self.actions.push_back(BarrierAction::Snapshot {
            barrier,
            unaligned: true,
        });
    }

    fn channel_done_at_barrier(&mut self, ch: usize) {
        let c = &mut self.channels[ch];
        c.barrier_seen = true;
        c.captured = true;
    }

    /// Aligning: every channel delivered the barrier or ended -> snapshot.
    fn check_aligned(&mut self) -> bool {
        let Phase::Aligning { barrier, .. } = self.phase else {
            return false;
        };
        if self.channels.iter().all(|c| c.barrier_seen || c.ended) {
            self.reset();
            self.actions.push_back(BarrierAction::Snapshot {
                barrier,
                unaligned: false,
            });
            true
        } else {
            false
        }
    }

    /// Capturing: every channel's state is complete -> write the snapshot.
    fn check_captured(&mut self) {
        let Phase::Capturing { barrier } = self.phase else {
            return;
        };
        if self.channels.iter().all(|c| c.captured) {
            self.reset();
            self.actions.push_back(BarrierAction::Captured {
                checkpoint_id: barrier.checkpoint_id,
            });
        }
    }

    fn reset(&mut self) {
        self.phase = Phase::Idle;
        for c in &mut self.channels {
            c.barrier_seen = false;
            c.announced = None;
            c.captured = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64) -> Barrier {
        Barrier {
            checkpoint_id: id,
            timestamp_ms: 1_000 * id,
            snapshot_type: SnapshotType::Checkpoint,
        }
    }

    fn savepoint(id: u64) -> Barrier {
        Barrier {
            checkpoint_id: id,
            timestamp_ms: 1_000 * id,
            snapshot_type: SnapshotType::Savepoint { terminate: false },
        }
    }

    fn unaligned(timeout_ms: u64) -> BarrierSettings {
        BarrierSettings {
            exactly_once: true,
            unaligned: true,
            aligned_timeout_ms: timeout_ms,
        }
    }

    fn actions(h: &mut BarrierHandler) -> Vec<BarrierAction> {
        std::iter::from_fn(|| h.next_action()).collect()
    }

    fn snap(b: Barrier, unaligned: bool) -> BarrierAction {
        BarrierAction::Snapshot { barrier: b, unaligned }
    }

    fn captured(id: u64) -> BarrierAction {
        BarrierAction::Captured { checkpoint_id: id }
    }

    /// Read `n` data messages from `ch`; returns how many were to be logged.
    fn read(h: &mut BarrierHandler, ch: usize, n: usize) -> usize {
        (0..n).filter(|_| h.on_data(ch)).count()
    }

    // ---- aligned (unchanged behaviour) ----------------------------------------------------------

    #[test]
    fn exactly_once_blocks_channels_until_all_barriers_arrive() {
        let mut h = BarrierHandler::new(3, BarrierSettings::aligned(true));
        h.on_barrier(0, checkpoint(1), 0);
        assert!(actions(&mut h).is_empty());
        assert!(!h.readable(0), "a channel that delivered the barrier is blocked");
        assert!(h.readable(1) && h.readable(2));
        h.on_barrier(2, checkpoint(1), 0);
        h.on_barrier(1, checkpoint(1), 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), false)]);
        assert!((0..3).all(|c| h.readable(c)), "alignment done: all unblocked");
    }

    #[test]
    fn at_least_once_never_blocks() {
        let mut h = BarrierHandler::new(2, BarrierSettings::aligned(false));
        h.on_barrier(0, checkpoint(1), 0);
        assert!(h.readable(0));
        h.on_barrier(1, checkpoint(1), 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), false)]);
    }

    #[test]
    fn an_ended_channel_counts_as_aligned() {
        let mut h = BarrierHandler::new(2, BarrierSettings::aligned(true));
        h.on_barrier(0, checkpoint(4), 0);
        h.on_end(1);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(4), false)]);
    }

    #[test]
    fn a_newer_barrier_abandons_the_pending_one_and_late_ones_are_ignored() {
        let mut h = BarrierHandler::new(2, BarrierSettings::aligned(true));
        h.on_barrier(0, checkpoint(1), 0);
        h.on_barrier(1, checkpoint(2), 0);
        assert_eq!(
            actions(&mut h),
            vec![BarrierAction::Aborted {
                checkpoint_id: 1,
                by: 2
            }]
        );
        assert!(h.readable(0), "the abandoned checkpoint's block is lifted");
        h.on_barrier(0, checkpoint(1), 0);
        assert!(
            actions(&mut h).is_empty(),
            "a late barrier of the abandoned checkpoint is ignored"
        );
        h.on_barrier(0, checkpoint(2), 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(2), false)]);
    }

    #[test]
    fn announcements_change_nothing_for_aligned_receivers() {
        let mut h = BarrierHandler::new(2, BarrierSettings::aligned(true));
        h.on_announce(0, checkpoint(1), 5, 0);
        assert!(actions(&mut h).is_empty());
        assert_eq!(h.pending(), None);
        assert_eq!(read(&mut h, 0, 5), 0, "nothing is captured");
    }

    // ---- unaligned --------------------------------------------------------------------------------

    #[test]
    fn the_first_announcement_snapshots_at_once_and_captures_up_to_each_barrier() {
        let mut h = BarrierHandler::new(2, unaligned(0));
        read(&mut h, 0, 3);
        read(&mut h, 1, 1);
        // Channel 0's barrier is its message 7: messages 3..7 are in flight.
        h.on_announce(0, checkpoint(1), 7, 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), true)]);
        assert!(h.wants_read_ahead(0), "the known part is read ahead");
        assert!(!h.wants_read_ahead(1), "channel 1's barrier position is not known yet");
        assert!(h.readable(0) && h.readable(1), "unaligned checkpoints block nothing");
        assert_eq!(read(&mut h, 0, 4), 4, "positions 3..7 are channel state");
        assert!(!h.wants_read_ahead(0));
        // Channel 1 is captured as it is processed until its announcement.
        assert_eq!(read(&mut h, 1, 2), 2);
        h.on_announce(1, checkpoint(1), 5, 0);
        assert!(actions(&mut h).is_empty());
        assert_eq!(read(&mut h, 1, 1), 1, "position 3 of 5");
        assert_eq!(read(&mut h, 1, 1), 1, "position 4: the last before the barrier");
        assert_eq!(actions(&mut h), vec![captured(1)]);
        h.on_barrier(0, checkpoint(1), 0);
        h.on_barrier(1, checkpoint(1), 0);
        assert!(
            actions(&mut h).is_empty(),
            "in-band barriers after the capture are markers"
        );
        assert_eq!(
            read(&mut h, 0, 2),
            0,
            "messages after the barrier are not channel state"
        );
    }

    #[test]
    fn an_in_band_barrier_before_its_announcement_starts_the_checkpoint_and_ends_that_channel() {
        let mut h = BarrierHandler::new(2, unaligned(0));
        read(&mut h, 0, 2);
        h.on_barrier(0, checkpoint(3), 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(3), true)]);
        h.on_announce(0, checkpoint(3), 2, 0);
        assert!(
            actions(&mut h).is_empty(),
            "the late announcement of a delivered barrier adds nothing"
        );
        assert_eq!(read(&mut h, 0, 3), 0, "channel 0 is complete");
        assert_eq!(read(&mut h, 1, 2), 2, "channel 1 is captured until its barrier");
        h.on_barrier(1, checkpoint(3), 0);
        assert_eq!(actions(&mut h), vec![captured(3)]);
    }

    #[test]
    fn an_announcement_of_a_position_already_read_completes_that_channel_at_once() {
        let mut h = BarrierHandler::new(1, unaligned(0));
        read(&mut h, 0, 4);
        h.on_announce(0, checkpoint(1), 4, 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), true), captured(1)]);
    }

    #[test]
    fn ended_channels_have_nothing_to_capture() {
        let mut h = BarrierHandler::new(3, unaligned(0));
        h.on_end(2);
        h.on_announce(0, checkpoint(1), 2, 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), true)]);
        assert_eq!(read(&mut h, 1, 3), 3);
        h.on_end(1);
        assert!(
            actions(&mut h).is_empty(),
            "channel 0 still has messages before its barrier"
        );
        assert_eq!(read(&mut h, 0, 2), 2);
        assert_eq!(actions(&mut h), vec![captured(1)]);
        assert!(!h.all_ended());
    }

    #[test]
    fn a_newer_announcement_during_capture_aborts_the_older_checkpoint() {
        let mut h = BarrierHandler::new(2, unaligned(0));
        h.on_announce(0, checkpoint(1), 10, 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), true)]);
        read(&mut h, 0, 3);
        h.on_announce(1, checkpoint(2), 4, 0);
        assert_eq!(
            actions(&mut h),
            vec![
                BarrierAction::Aborted {
                    checkpoint_id: 1,
                    by: 2
                },
                snap(checkpoint(2), true)
            ]
        );
        h.on_announce(0, checkpoint(1), 10, 0);
        assert!(
            actions(&mut h).is_empty(),
            "the aborted checkpoint's announcements are late"
        );
        assert!(
            !h.wants_read_ahead(0),
            "channel 0's position for checkpoint 2 is unknown"
        );
        assert!(h.wants_read_ahead(1));
    }

    #[test]
    fn a_newer_in_band_barrier_during_capture_aborts_the_older_checkpoint() {
        let mut h = BarrierHandler::new(2, unaligned(0));
        h.on_announce(0, checkpoint(1), 10, 0);
        actions(&mut h);
        h.on_barrier(1, checkpoint(2), 0);
        assert_eq!(
            actions(&mut h),
            vec![
                BarrierAction::Aborted {
                    checkpoint_id: 1,
                    by: 2
                },
                snap(checkpoint(2), true)
            ]
        );
    }

    #[test]
    fn savepoints_stay_aligned_when_unaligned_checkpoints_are_on() {
        let mut h = BarrierHandler::new(2, unaligned(0));
        h.on_announce(0, savepoint(1), 0, 0);
        assert!(actions(&mut h).is_empty(), "a savepoint's announcement is ignored");
        h.on_barrier(0, savepoint(1), 99_999);
        assert!(!h.readable(0), "a savepoint aligns");
        assert_eq!(h.deadline_ms(), None, "and never times out into unaligned");
        h.on_barrier(1, savepoint(1), 0);
        assert_eq!(actions(&mut h), vec![snap(savepoint(1), false)]);
    }

    #[test]
    fn at_least_once_ignores_the_unaligned_setting() {
        let mut h = BarrierHandler::new(
            2,
            BarrierSettings {
                exactly_once: false,
                ..unaligned(0)
            },
        );
        h.on_announce(0, checkpoint(1), 3, 0);
        assert!(actions(&mut h).is_empty());
        h.on_barrier(0, checkpoint(1), 0);
        h.on_barrier(1, checkpoint(1), 0);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), false)]);
    }

    // ---- aligned-checkpoint timeout ------------------------------------------------------------

    #[test]
    fn alignment_that_finishes_in_time_stays_aligned() {
        let mut h = BarrierHandler::new(2, unaligned(500));
        let b = checkpoint(1); // triggered at 1000 ms
        h.on_announce(0, b, 2, 1_100);
        assert!(actions(&mut h).is_empty(), "starts aligned");
        assert_eq!(h.deadline_ms(), Some(1_500), "the timeout runs from the trigger");
        assert_eq!(read(&mut h, 0, 2), 0, "aligned: nothing is channel state");
        h.on_barrier(0, b, 1_200);
        assert!(!h.readable(0));
        h.on_barrier(1, b, 1_300);
        assert_eq!(actions(&mut h), vec![snap(b, false)]);
        h.on_time(5_000);
        assert!(actions(&mut h).is_empty(), "nothing left to time out");
    }

    #[test]
    fn the_timeout_switches_to_unaligned_capturing_only_unaligned_channels() {
        let mut h = BarrierHandler::new(3, unaligned(500));
        let b = checkpoint(1);
        read(&mut h, 0, 2);
        h.on_barrier(0, b, 1_100); // channel 0 aligned (blocked)
        h.on_announce(1, b, 6, 1_150); // channel 1: barrier at 6, 2 read so far
        read(&mut h, 1, 2);
        h.on_time(1_499);
        assert!(actions(&mut h).is_empty(), "not yet");
        assert!(!h.readable(0));
        h.on_time(1_500);
        assert_eq!(actions(&mut h), vec![snap(b, true)]);
        assert!(h.readable(0), "the switch unblocks the aligned channel");
        assert_eq!(
            read(&mut h, 0, 1),
            0,
            "channel 0 delivered its barrier: nothing to capture"
        );
        assert!(h.wants_read_ahead(1));
        assert_eq!(read(&mut h, 1, 4), 4, "channel 1: positions 2..6");
        assert_eq!(read(&mut h, 2, 1), 1, "channel 2: captured until its barrier");
        h.on_barrier(2, b, 1_600);
        assert_eq!(actions(&mut h), vec![captured(1)]);
    }

    #[test]
    fn a_checkpoint_already_past_its_timeout_starts_unaligned() {
        let mut h = BarrierHandler::new(2, unaligned(500));
        let b = checkpoint(1); // triggered at 1000, deadline 1500
        h.on_announce(1, b, 0, 2_000);
        assert_eq!(actions(&mut h), vec![snap(b, true)]);
        h.on_barrier(0, b, 2_000);
        assert_eq!(
            actions(&mut h),
            vec![captured(1)],
            "channel 1's barrier was at its current position"
        );
    }

    #[test]
    fn a_newer_barrier_during_a_timed_alignment_aborts_it() {
        let mut h = BarrierHandler::new(2, unaligned(500));
        h.on_barrier(0, checkpoint(1), 1_100);
        h.on_announce(1, checkpoint(2), 0, 2_100);
        assert_eq!(
            actions(&mut h),
            vec![BarrierAction::Aborted {
                checkpoint_id: 1,
                by: 2
            }]
        );
        assert_eq!(h.deadline_ms(), Some(2_500));
        assert!(h.readable(0), "the old block is lifted");
    }

    #[test]
    fn an_end_of_input_during_a_timed_alignment_can_complete_it() {
        let mut h = BarrierHandler::new(2, unaligned(500));
        h.on_barrier(0, checkpoint(1), 1_100);
        h.on_end(1);
        assert_eq!(actions(&mut h), vec![snap(checkpoint(1), false)]);
    }

    // ---- exhaustive interleavings ------------------------------------------------------------------

    /// Every interleaving of two channels' reads, announcements and
    /// barriers: the checkpoint is snapshotted once, captured once, and the
    /// logged messages are exactly those between what was processed at the
    /// snapshot and each channel's barrier.
    #[test]
    fn every_interleaving_captures_exactly_the_messages_before_each_barrier() {
        // Channel c has `before[c]` data messages in front of its barrier,
        // the first `processed[c]` of them read before anything is known.
        for before in [[0u64, 0], [1, 3], [3, 1], [2, 2]] {
            for processed in 0..=before[0].min(2) {
                for order in 0..(1u32 << 8) {
                    check_interleaving(before, processed, order);
                }
            }
        }
    }

    fn check_interleaving(before: [u64; 2], processed0: u64, order: u32) {
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        enum Step {
            Data,
            Announce,
            Barrier,
        }
        let b = checkpoint(1);
        let mut h = BarrierHandler::new(2, unaligned(0));
        read(&mut h, 0, processed0 as usize);
        // Per channel, the events in the order they reach the task: data
        // messages and the in-band barrier in order, the announcement at
        // any point (chosen by `order`'s bits).
        let mut queues: Vec<Vec<Step>> = (0..2)
            .map(|c| {
                let data = before[c] - if c == 0 { processed0 } else { 0 };
                let mut q: Vec<Step> = (0..data).map(|_| Step::Data).collect();
                q.push(Step::Barrier);
                let at = (order >> (4 * c)) as usize % (q.len() + 1);
                q.insert(at, Step::Announce);
                q
            })
            .collect();
        let mut logged = [0u64; 2];
        let mut snapshot_at: Option<[u64; 2]> = None;
        let mut captured_n = 0;
        let mut pick = order;
        while queues.iter().any(|q| !q.is_empty()) {
            let c = if queues[0].is_empty() {
                1
            } else if queues[1].is_empty() {
                0
            } else {
                pick = pick.rotate_right(1);
                (pick & 1) as usize
            };
            let step = queues[c].remove(0);
            // A barrier's own read is not a data message: reads before the step.
            let reads_before = [h.read_count(0), h.read_count(1)];
            let is_log = match step {
                Step::Data => h.on_data(c),
                Step::Announce => {
                    h.on_announce(c, b, before[c], 0);
                    false
                }
                Step::Barrier => {
                    h.on_barrier(c, b, 0);
                    false
                }
            };
            if is_log {
                logged[c] += 1;
            }
            for a in actions(&mut h) {
                match a {
                    BarrierAction::Snapshot { unaligned: true, .. } => {
                        assert!(snapshot_at.is_none(), "one snapshot");
                        snapshot_at = Some(reads_before);
                    }
                    BarrierAction::Captured { .. } => captured_n += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let at = snapshot_at.expect("the checkpoint was snapshotted");
        assert_eq!(captured_n, 1, "captured once (order {order:b})");
        for c in 0..2 {
            // Messages read before the snapshot were processed before it.
            let processed = at[c].min(before[c]);
            assert_eq!(
                logged[c],
                before[c] - processed,
                "channel {c}: logged the in-flight messages (before {before:?}, order {order:b})"
            );
        }
    }
}
