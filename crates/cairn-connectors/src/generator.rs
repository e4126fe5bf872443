//! A deterministic, parallel, checkpointable generator source: event `i` of
//! `0..count` has key `i % keys` and a value derived from `i` and the seed.
//!
//! The index space is cut into splits (contiguous ranges) when the job first
//! starts: `.splits(n)` of them, or as many as the parallelism of that first
//! start. The split count is then fixed for the life of the job (its state
//! holds the ranges), so it decides how evenly later parallelisms share the
//! work: pick `n` as a multiple of every parallelism you plan to run at.
//! Splits live in a [`SplitSet`]: a subtask with several reads them
//! interleaved, and each split's position is in the split table, so a
//! restored or rescaled job continues exactly where the snapshot was taken.

use std::time::{Duration, Instant};

use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, SplitProgress, StreamRecord};
use serde::{Deserialize, Serialize};

use crate::split::{SourceSplit, SplitPoll, SplitSet, SplitsState};

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

/// A split: indices `next..end` still to emit. Its id is `end` (ranges are
/// disjoint and only non-empty ones are kept, so ends are unique).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct GeneratorSplit {
    next: u64,
    end: u64,
}

impl SourceSplit for GeneratorSplit {
    type Id = u64;
    fn id(&self) -> u64 {
        self.end
    }
    fn is_finished(&self) -> bool {
        self.next >= self.end
    }
}

/// The split table (union list state of [`GeneratorSplit`]s, see [`SplitSet`]).
const SPLIT_TABLE: &str = "generator-split-table";
/// The state of earlier releases: this subtask's splits as a split-evenly
/// list, with an empty `{count, count}` placeholder from a subtask that held
/// none. Still read on restore, never written.
const LEGACY_SPLITS: &str = "generator-splits";

/// The generator. Configure with the builder methods; clone per subtask.
#[derive(Clone, Debug)]
pub struct GeneratorSource {
    count: u64,
    keys: u64,
    seed: u64,
    rate_per_second: Option<u64>,
    splits: Option<u32>,
    start_time_ms: i64,
    run: Option<SplitSet<GeneratorSplit>>,
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
            run: None,
            started: None,
            emitted: 0,
        }
    }

    /// Seed of the value sequence.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Emit at most this many events per second per subtask (shared fairly by
    /// the subtask's splits).
    pub fn rate(mut self, per_second: u64) -> Self {
        self.rate_per_second = Some(per_second.max(1));
        self
    }

    /// Cut the input into `splits` ranges when the job first starts (default:
    /// the parallelism of that first start). The count is fixed from then on,
    /// restores keep it, so choose a multiple of every parallelism you will
    /// rescale to (e.g. 12 for 1, 2, 3, 4 and 6): then every subtask gets the
    /// same number of splits. A subtask without a split finishes at once.
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
        event(i, self.keys, self.seed, self.start_time_ms)
    }
}

fn event(i: u64, keys: u64, seed: u64, start_time_ms: i64) -> GeneratedEvent {
    GeneratedEvent {
        index: i,
        key: i % keys,
        value: mix(i ^ seed),
        timestamp: start_time_ms + i as i64,
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
        let mut set = SplitSet::open(SPLIT_TABLE, ctx)?;
        if set.restored() {
            warn_if_uneven(ctx, set.restored_unfinished());
        } else if ctx.state.has_list(LEGACY_SPLITS) {
            // A snapshot of an earlier release: this subtask's share, as that
            // release dealt it. Placeholders and finished splits carry nothing.
            for split in ctx.state.list::<GeneratorSplit>(LEGACY_SPLITS)? {
                if !split.is_finished() {
                    set.add(split);
                }
            }
        } else {
            // First start: cut [0, count) into contiguous ranges and take ours.
            let n = u64::from(self.splits.unwrap_or(ctx.info.parallelism).max(1));
            // In u128: `s * count` overflows u64 for very large counts.
            let at = |s: u64| (u128::from(s) * u128::from(self.count) / u128::from(n)) as u64;
            let p = u64::from(ctx.info.parallelism.max(1));
            for s in (0..n).filter(|s| s % p == u64::from(ctx.info.subtask)) {
                let split = GeneratorSplit {
                    next: at(s),
                    end: at(s + 1),
                };
                // Empty ranges (fewer events than splits) are never kept.
                if split.next < split.end {
                    set.add(split);
                }
            }
        }
        // From now on only the split table is written.
        ctx.state.remove_list(LEGACY_SPLITS);
        self.run = Some(set);
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<GeneratedEvent>>, max: usize) -> OpResult<SourceStatus> {
        let mut budget = max;
        if let Some(rate) = self.rate_per_second {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            let room = allowed.saturating_sub(self.emitted);
            if room == 0 {
                return Ok(SourceStatus::Pending(Duration::from_millis(1 + 1000 / rate.min(1000))));
            }
            budget = budget.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        let (keys, seed, start) = (self.keys, self.seed, self.start_time_ms);
        let set = self.run.as_mut().ok_or("generator source polled before open")?;
        let polled = set.poll(out, budget, |split, _, out, quota| {
            let n = (quota as u64).min(split.end - split.next);
            for i in split.next..split.next + n {
                let e = event(i, keys, seed, start);
                out.push(StreamRecord {
                    value: e,
                    timestamp: e.timestamp,
                });
            }
            split.next += n;
            Ok(if split.is_finished() {
                SplitPoll::Finished
            } else {
                SplitPoll::More
            })
        })?;
        self.emitted += polled.records as u64;
        Ok(match polled.state {
            SplitsState::Empty => SourceStatus::Finished,
            SplitsState::Active => SourceStatus::More,
            SplitsState::Idle(d) => SourceStatus::Pending(d),
        })
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        self.run
            .as_ref()
            .ok_or("generator source snapshot before open")?
            .snapshot(ctx.state)
    }

    fn split_progress(&mut self) -> Option<&mut SplitProgress> {
        self.run.as_mut().map(|set| set.progress())
    }
}

/// Say once per run (subtask 0, first attempt) when the restored splits cannot
/// be shared evenly, and what fixes it.
fn warn_if_uneven(ctx: &SourceContext<'_>, unfinished: usize) {
    if ctx.info.subtask == 0 && ctx.info.attempt == 0 {
        if let Some(warning) = uneven_warning(&ctx.info.uid, unfinished, ctx.info.parallelism) {
            tracing::warn!(uid = %ctx.info.uid, unfinished, parallelism = ctx.info.parallelism, "{warning}");
        }
    }
}

fn uneven_warning(uid: &str, unfinished: usize, parallelism: u32) -> Option<String> {
    let p = parallelism.max(1) as usize;
    if unfinished == 0 || unfinished % p == 0 {
        return None;
    }
    let (few, many) = (unfinished / p, unfinished.div_ceil(p));
    Some(format!(
        "GeneratorSource '{uid}': {unfinished} unfinished splits over {p} subtasks, so subtasks read {many} or {few} \
         split(s) each. The split count is fixed when a job first starts (default: its parallelism then); \
         start the job with .splits(n), n a multiple of every parallelism you plan to run at, to share the work evenly."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uneven_shares_are_named_with_the_fix_and_even_ones_are_quiet() {
        let w = uneven_warning("events", 2, 3).unwrap();
        assert!(
            w.contains("'events'") && w.contains("2 unfinished splits over 3 subtasks"),
            "{w}"
        );
        assert!(w.contains("1 or 0 split(s)") && w.contains(".splits(n)"), "{w}");
        assert_eq!(uneven_warning("events", 4, 2), None);
        assert_eq!(uneven_warning("events", 0, 3), None);
        assert_eq!(uneven_warning("events", 6, 3), None);
    }
}
