//! Buffer debloating (Flink's `taskmanager.network.memory.buffer-debloat.*`):
//! a receiving task keeps the data in flight towards it to about what it
//! processes in `target` (1 s by default), so an aligned barrier waits behind
//! about that much and an unaligned checkpoint stores about that much,
//! whatever the channel capacity and the batch size.
//!
//! Flink keeps the number of network buffers and shrinks their size. Cairn's
//! unit of flow control is a batch (a message), so it has two knobs per input
//! channel: the credits (batches in flight, at most the channel capacity) and
//! the largest batch it asks its sender for. While a second's worth of
//! records is at least two full batches, only the credits shrink; below that
//! the channel keeps two credits (one batch arriving while one is processed,
//! as Flink's two exclusive buffers) and asks for batches of half a second's
//! worth of records, down to one record.
//!
//! Every `period` the task's throughput (records processed per second of
//! non-idle time) is averaged over about `samples` periods; the wanted
//! records in flight per channel are throughput x target / live channels;
//! a new limit is applied only when it changes the records in flight by at
//! least `threshold_percent` (as in Flink, so small wobbles do not churn).
//! Pure bookkeeping, fed by the task loop; tested without threads.

use std::time::Duration;

/// The debloating settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DebloatSettings {
    /// How long the data in flight should take to process.
    pub target: Duration,
    /// How often the limit is recomputed.
    pub period: Duration,
    /// How many periods the throughput is averaged over.
    pub samples: u32,
    /// Smallest relative change (percent) that is applied.
    pub threshold_percent: u32,
}

/// What one input channel may have in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlightLimit {
    /// Batches (credits), 1 to the channel capacity.
    pub credits: u32,
    /// The largest batch asked of the sender, in records; `None`: full batches.
    pub batch_records: Option<u32>,
}

impl InFlightLimit {
    /// At most this many records in flight.
    fn records(&self, batch_size: u32) -> u64 {
        u64::from(self.credits) * u64::from(self.batch_records.unwrap_or(batch_size))
    }
}

/// Throughput measurement and the current in-flight limit of one task.
#[derive(Clone, Debug)]
pub struct Debloater {
    settings: DebloatSettings,
    /// Idle time in the current period.
    idle: Duration,
    /// Records processed in the current period.
    processed: u64,
    /// Records per second of busy time, averaged over the last periods.
    average: Option<f64>,
    /// The limit per channel now in force (`None`: the full capacity).
    current: Option<InFlightLimit>,
}

impl Debloater {
    pub fn new(settings: DebloatSettings) -> Self {
        Debloater {
            settings,
            idle: Duration::ZERO,
            processed: 0,
            average: None,
            current: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &DebloatSettings {
        &self.settings
    }

    /// `records` were processed.
    pub fn on_processed(&mut self, records: u64) {
        self.processed += records;
    }

    /// The task waited for input this long (not counted as busy).
    pub fn on_idle(&mut self, waited: Duration) {
        self.idle += waited;
    }

    /// How long until the current period ends, after `elapsed` of it.
    pub fn until_due(&self, elapsed: Duration) -> Duration {
        self.settings.period.saturating_sub(elapsed)
    }

    /// The period that began `elapsed` ago ended (if it did): fold its
    /// throughput into the average and return the new limit per channel if
    /// it changed enough to be applied. `live` input channels share it;
    /// `capacity` is the most batches a channel may have in flight and
    /// `batch_size` the most records per batch.
    pub fn on_period(
        &mut self,
        elapsed: Duration,
        live: usize,
        capacity: u32,
        batch_size: u32,
    ) -> Option<InFlightLimit> {
        if elapsed < self.settings.period {
            return None;
        }
        let busy = elapsed.saturating_sub(self.idle).as_secs_f64();
        let processed = std::mem::take(&mut self.processed);
        self.idle = Duration::ZERO;
        if processed == 0 || busy <= 0.0 {
            // Nothing to learn from an idle period: keep what is in force.
            return None;
        }
        let rate = processed as f64 / busy;
        let alpha = 2.0 / (f64::from(self.settings.samples.max(1)) + 1.0);
        let average = match self.average {
            Some(avg) => avg + alpha * (rate - avg),
            None => rate,
        };
        self.average = Some(average);
        let capacity = capacity.max(1);
        let batch_size = batch_size.max(1);
        let wanted = (average * self.settings.target.as_secs_f64() / live.max(1) as f64).max(1.0);
        let limit = if wanted >= 2.0 * f64::from(batch_size) {
            InFlightLimit {
                credits: (wanted / f64::from(batch_size)).ceil().clamp(1.0, f64::from(capacity)) as u32,
                batch_records: None,
            }
        } else {
            let credits = capacity.min(2);
            let batch = (wanted / f64::from(credits)).ceil().clamp(1.0, f64::from(batch_size)) as u32;
            InFlightLimit {
                credits,
                batch_records: (batch < batch_size).then_some(batch),
            }
        };
        let full = InFlightLimit {
            credits: capacity,
            batch_records: None,
        };
        let current = self.current.unwrap_or(full);
        let (new, old) = (limit.records(batch_size) as f64, current.records(batch_size) as f64);
        if limit == current || (new - old).abs() * 100.0 < f64::from(self.settings.threshold_percent) * old {
            return None;
        }
        self.current = Some(limit);
        Some(limit)
    }

    /// The limit per channel now in force, if debloating lowered it.
    pub fn current(&self) -> Option<InFlightLimit> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DebloatSettings {
        DebloatSettings {
            target: Duration::from_secs(1),
            period: Duration::from_millis(200),
            samples: 1,
            threshold_percent: 25,
        }
    }

    fn limit(credits: u32, batch_records: Option<u32>) -> Option<InFlightLimit> {
        Some(InFlightLimit { credits, batch_records })
    }

    /// One period of `records` processed, `idle_ms` of it idle; capacity 16, batches of 1024.
    fn period(d: &mut Debloater, records: u64, idle_ms: u64, live: usize) -> Option<InFlightLimit> {
        d.on_processed(records);
        d.on_idle(Duration::from_millis(idle_ms));
        d.on_period(Duration::from_millis(200), live, 16, 1024)
    }

    #[test]
    fn a_fast_receiver_lowers_credits_of_full_batches() {
        let mut d = Debloater::new(settings());
        // 2048 records in 200 ms: 10240 per second, over 2 channels 5120 each: 5 full batches.
        assert_eq!(period(&mut d, 2_048, 0, 2), limit(5, None));
        // Idle time does not count: the same in 100 ms busy is twice the rate.
        assert_eq!(period(&mut d, 2_048, 100, 2), limit(10, None));
        // Faster than the capacity holds in a second: the full capacity, nothing to change.
        let mut fast = Debloater::new(settings());
        assert_eq!(period(&mut fast, 1_000_000, 0, 1), None);
    }

    #[test]
    fn a_slow_receiver_keeps_two_credits_and_asks_for_smaller_batches() {
        let mut d = Debloater::new(settings());
        // 1 ms per record: 200 records in 200 ms, 1000 per second, 500 per channel:
        // two batches of 250 records.
        assert_eq!(period(&mut d, 200, 0, 2), limit(2, Some(250)));
        // 10 records per second: two batches of 5.
        let mut slower = Debloater::new(settings());
        assert_eq!(period(&mut slower, 2, 0, 1), limit(2, Some(5)));
        // Less than a record per second: batches of one record.
        let mut slowest = Debloater::new(DebloatSettings {
            target: Duration::from_millis(10),
            ..settings()
        });
        assert_eq!(period(&mut slowest, 1, 0, 4), limit(2, Some(1)));
    }

    #[test]
    fn a_channel_of_capacity_one_keeps_its_credit_and_asks_for_smaller_batches() {
        let mut d = Debloater::new(settings());
        d.on_processed(2);
        assert_eq!(d.on_period(Duration::from_millis(200), 1, 1, 1024), limit(1, Some(10)));
    }

    #[test]
    fn small_changes_below_the_threshold_are_not_applied() {
        let mut d = Debloater::new(settings());
        assert_eq!(period(&mut d, 200, 0, 1), limit(2, Some(500)));
        assert_eq!(period(&mut d, 220, 0, 1), None, "+10% of the records in flight");
        assert_eq!(period(&mut d, 400, 0, 1), limit(2, Some(1000)), "+100% is applied");
    }

    #[test]
    fn idle_periods_keep_the_limit_and_samples_smooth_the_throughput() {
        let mut d = Debloater::new(DebloatSettings {
            samples: 3,
            threshold_percent: 0,
            ..settings()
        });
        assert_eq!(period(&mut d, 100, 0, 1), limit(2, Some(250)));
        assert_eq!(period(&mut d, 0, 200, 1), None, "an idle period teaches nothing");
        // 1000/s measured, averaged with alpha 0.5: 750/s.
        assert_eq!(period(&mut d, 200, 0, 1), limit(2, Some(375)));
        assert_eq!(
            d.on_period(Duration::from_millis(100), 1, 16, 1024),
            None,
            "not due yet"
        );
    }
}
