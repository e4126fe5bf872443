//! A deterministic, parallel, checkpointable generator source: event `i` of
//! `0..count` has key `i % keys` and a value derived from `i` and the seed.
//! The index space is cut into splits (contiguous ranges); each split's
//! position is operator state, so a restored (or rescaled) job continues
//! exactly where the snapshot was taken.

use std::time::{Duration, Instant};

use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, StreamRecord};
use cairn_state::DistributionMode;
use serde::{Deserialize, Serialize};

/// One generated event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GeneratedEvent {
    /// Index in `0..count`.
    pub index: u64,
    /// `index % keys`.
    pub key: u64,
    /// A pseudo-random value from `index` and the seed.
    pub value: u64,
    /// Event time: `index` milliseconds after the start time.
    pub timestamp: i64,
}

/// A split: indices `next..end` still to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Split {
    next: u64,
    end: u64,
}

const SPLITS_STATE: &str = "generator-splits";

/// The generator. Configure with the builder methods; clone per subtask.
#[derive(Clone, Debug)]
pub struct GeneratorSource {
    count: u64,
    keys: u64,
    seed: u64,
    rate_per_second: Option<u64>,
    splits: Option<u32>,
    start_time_ms: i64,
    assigned: Vec<Split>,
    started: Option<Instant>,
    emitted: u64,
}

impl GeneratorSource {
    /// `count` events over `keys` keys.
    pub fn new(count: u64, keys: u64) -> Self {
        GeneratorSource {
            count,
            keys: keys.max(1),
            seed: 0,
            rate_per_second: None,
            splits: None,
            start_time_ms: 0,
            assigned: Vec::new(),
            started: None,
            emitted: 0,
        }
    }

    /// Seed of the value sequence.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Emit at most this many events per second per subtask.
    pub fn rate(mut self, per_second: u64) -> Self {
        self.rate_per_second = Some(per_second.max(1));
        self
    }

    /// Number of splits (default: the parallelism at first start). Fix it to
    /// rescale later with evenly spread work.
    pub fn splits(mut self, splits: u32) -> Self {
        self.splits = Some(splits.max(1));
        self
    }

    /// Event time of index 0 (epoch ms).
    pub fn start_time(mut self, ms: i64) -> Self {
        self.start_time_ms = ms;
        self
    }

    /// The event with index `i` (what this source emits for it).
    pub fn event(&self, i: u64) -> GeneratedEvent {
        GeneratedEvent {
            index: i,
            key: i % self.keys,
            value: mix(i ^ self.seed),
            timestamp: self.start_time_ms + i as i64,
        }
    }
}

/// SplitMix64 finaliser: a fixed, documented value function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Source<GeneratedEvent> for GeneratorSource {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        self.assigned = if ctx.state.has_list(SPLITS_STATE) {
            // Restored (possibly rescaled): continue the splits we were given.
            ctx.state.list(SPLITS_STATE)?
        } else {
            // Fresh start: split [0, count) into contiguous ranges and take ours.
            let n = self.splits.unwrap_or(ctx.info.parallelism) as u64;
            (0..n)
                .filter(|s| s % ctx.info.parallelism as u64 == ctx.info.subtask as u64)
                .map(|s| {
                    // In u128: `s * count` overflows u64 for very large counts.
                    let at = |s: u64| (u128::from(s) * u128::from(self.count) / u128::from(n)) as u64;
                    Split {
                        next: at(s),
                        end: at(s + 1),
                    }
                })
                .collect()
        };
        self.assigned.retain(|s| s.next < s.end);
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<GeneratedEvent>>, max: usize) -> OpResult<SourceStatus> {
        let mut budget = max as u64;
        if let Some(rate) = self.rate_per_second {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            let room = allowed.saturating_sub(self.emitted);
            if room == 0 {
                return Ok(SourceStatus::Pending(Duration::from_millis(1 + 1000 / rate.min(1000))));
            }
            budget = budget.min(room);
        }
        while budget > 0 {
            let Some(split) = self.assigned.first_mut() else {
                break;
            };
            let n = budget.min(split.end - split.next);
            for i in split.next..split.next + n {
                let e = GeneratedEvent {
                    index: i,
                    key: i % self.keys,
                    value: mix(i ^ self.seed),
                    timestamp: self.start_time_ms + i as i64,
                };
                out.push(StreamRecord {
                    value: e,
                    timestamp: e.timestamp,
                });
            }
            split.next += n;
            budget -= n;
            self.emitted += n;
            if split.next == split.end {
                self.assigned.remove(0);
            }
        }
        Ok(if self.assigned.is_empty() {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        // Finished splits are kept (empty) so a restore never restarts them.
        let mut splits = self.assigned.clone();
        if splits.is_empty() {
            splits.push(Split {
                next: self.count,
                end: self.count,
            });
        }
        ctx.state
            .set_list(SPLITS_STATE, DistributionMode::SplitEvenly, &splits)?;
        Ok(())
    }
}
