//! A task's input side: one channel per upstream subtask and the combined
//! watermark (minimum over active channels). Pure logic, testable without
//! threads; checkpoint barriers are handled by [`crate::barrier`].

use crate::record::NO_TIMESTAMP;

/// Per-channel progress.
#[derive(Clone, Debug)]
struct ChannelState {
    watermark: i64,
    idle: bool,
    ended: bool,
}

/// Watermark bookkeeping for all input channels of a task.
#[derive(Clone, Debug)]
pub struct InputState {
    channels: Vec<ChannelState>,
    combined_watermark: i64,
}

impl InputState {
    /// `n` channels.
    pub fn new(n: usize) -> Self {
        InputState {
            channels: vec![
                ChannelState {
                    watermark: NO_TIMESTAMP,
                    idle: false,
                    ended: false,
                };
                n
            ],
            combined_watermark: NO_TIMESTAMP,
        }
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

    /// Record that `ch` ended; returns the combined watermark if it advanced.
    pub fn on_end(&mut self, ch: usize) -> Option<i64> {
        self.channels[ch].ended = true;
        self.recompute()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_every_channel_is_idle_the_watermark_moves_to_the_furthest() {
        let mut s = InputState::new(2);
        s.on_watermark(0, 30);
        assert_eq!(s.on_idle(0, true), None, "channel 1 is active without a watermark");
        assert_eq!(s.on_idle(1, true), Some(30));
    }

    #[test]
    fn watermark_is_the_minimum_over_active_channels() {
        let mut s = InputState::new(2);
        assert_eq!(s.on_watermark(0, 10), None, "channel 1 has no watermark yet");
        assert_eq!(s.on_watermark(1, 5), Some(5));
        assert_eq!(s.on_watermark(1, 20), Some(10));
        assert_eq!(s.on_watermark(0, 8), None, "watermarks never go back");
        assert_eq!(
            s.on_idle(0, true),
            Some(20),
            "an idle channel does not hold the watermark"
        );
        let wm = s.on_end(1);
        assert_eq!(
            wm, None,
            "channel 0 is idle at 20 and channel 1 ended: the watermark stays"
        );
        let wm = s.on_end(0);
        assert_eq!(wm, Some(i64::MAX), "all ended: event time ends");
    }
}
