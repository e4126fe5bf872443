//! The splits of one source subtask: which it reads, how it reads them fairly,
//! and how they are kept in snapshots. Every split-based source (generator,
//! files, and later Kafka partitions) holds its splits in a [`SplitSet`].
//!
//! **Reading.** A subtask often holds several splits (after a rescale to fewer
//! subtasks, or when there are more splits than subtasks), and a split may be
//! unbounded. So [`SplitSet::poll`] never reads one split to its end before the
//! next: each poll deals its record budget round robin over the splits (each
//! gets `ceil(left / splits left)` of what is left), starting one split later
//! on every poll. Under a rate limit of a record or two per poll, and under
//! backpressure (fewer polls), every split still gets its turn. The records'
//! splits are reported to the runtime ([`SplitProgress`]) so that watermarks
//! are generated per split.
//!
//! **State.** All splits of all subtasks form one table, kept as *union* list
//! state: each subtask writes the splits it holds and the finished splits it
//! is responsible for, so a snapshot holds every split exactly once, with no
//! placeholder for a subtask that holds none. On restore every subtask reads
//! the whole table and takes its share by rank: the unfinished splits, sorted
//! by id, are dealt round robin (`rank % parallelism`), so shares differ by at
//! most one split; finished splits are dealt the same way, only to be written
//! again (they are never read). Because every subtask knows every split id,
//! a source that discovers splits at run time (new files, new partitions)
//! never takes one that another subtask holds or that was finished; it gives
//! the new ones to an owner it can compute alone (e.g. a hash of the id).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use cairn_runtime::{OpResult, SourceContext, SplitProgress, StreamRecord};
use cairn_state::{codec, DistributionMode, OperatorStateStore};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A split as kept in snapshots: its identity and its read position.
pub trait SourceSplit: Clone + Debug + Serialize + DeserializeOwned + Send + 'static {
    /// Identity, stable across runs (a file name, a topic partition).
    type Id: Ord + Clone + Debug + Send + 'static;
    fn id(&self) -> Self::Id;
    /// Read to its end: never read again, also not after a restore.
    fn is_finished(&self) -> bool;
}

/// What reading one split for one turn gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitPoll {
    /// It may have more right away.
    More,
    /// Nothing now; try this split again after this long (others go on).
    Idle(Duration),
    /// It is read to its end (its state must now say so).
    Finished,
}

/// Where a subtask's splits stand after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitsState {
    /// Some split may have more right away.
    Active,
    /// Every split is idle: poll again after this long.
    Idle(Duration),
    /// The subtask holds no unfinished split.
    Empty,
}

/// The outcome of [`SplitSet::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Polled {
    /// Records appended.
    pub records: usize,
    pub state: SplitsState,
}

/// A split being read, with the reader the source keeps for it (an open file,
/// a partition queue): `None` until the source opens one.
#[derive(Clone, Debug)]
struct Held<S, R> {
    split: S,
    reader: Option<R>,
    /// Number of the split within this subtask, for [`SplitProgress`].
    key: u64,
    idle_until: Option<Instant>,
}

/// The splits one source subtask holds. See the module docs.
#[derive(Clone, Debug)]
pub struct SplitSet<S: SourceSplit, R = ()> {
    state_name: String,
    /// Unfinished splits in reading order; the first `concurrency` are read.
    active: Vec<Held<S, R>>,
    /// Finished splits this subtask writes into snapshots.
    finished: Vec<S>,
    /// Every split id this subtask knows: the whole restored table and the splits added since.
    known: BTreeSet<S::Id>,
    concurrency: usize,
    next_key: u64,
    progress: SplitProgress,
    restored: bool,
    restored_unfinished: usize,
}

impl<S: SourceSplit, R> SplitSet<S, R> {
    /// The subtask's splits: its share of the table in union list state
    /// `state_name` when the job was restored, else none.
    pub fn open(state_name: &str, ctx: &SourceContext<'_>) -> OpResult<Self> {
        let mut set = SplitSet {
            state_name: state_name.to_string(),
            active: Vec::new(),
            finished: Vec::new(),
            known: BTreeSet::new(),
            concurrency: usize::MAX,
            next_key: 0,
            progress: SplitProgress::default(),
            restored: ctx.state.has_list(state_name),
            restored_unfinished: 0,
        };
        if !set.restored {
            return Ok(set);
        }
        let table: Vec<S> = ctx.state.list(state_name)?;
        let share = share_of_table(table, ctx.info.subtask, ctx.info.parallelism).map_err(|e| {
            format!(
                "source '{}': restored split state '{state_name}' is inconsistent: {e}",
                ctx.info.uid
            )
        })?;
        set.known = share.known;
        set.restored_unfinished = share.unfinished_total;
        set.finished = share.finished;
        for split in share.active {
            set.hold(split);
        }
        Ok(set)
    }

    /// Read at most `n` splits at a time; the others wait until one of those
    /// finishes (for splits that are all bounded and costly to keep open, like
    /// files). Default: all.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether the split table existed in the restored state (the job was
    /// restored, perhaps with every split finished).
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// Unfinished splits in the whole restored table (over all subtasks).
    pub fn restored_unfinished(&self) -> usize {
        self.restored_unfinished
    }

    /// Whether any subtask holds or finished the split `id` (as far as this
    /// subtask knows: the restored table and what it added since).
    pub fn is_known(&self, id: &S::Id) -> bool {
        self.known.contains(id)
    }

    /// Take a split this subtask now owns (created at first start, or
    /// discovered). False, and nothing changes, when its id is known already.
    pub fn add(&mut self, split: S) -> bool {
        if !self.known.insert(split.id()) {
            return false;
        }
        if split.is_finished() {
            self.finished.push(split);
        } else {
            self.hold(split);
        }
        true
    }

    fn hold(&mut self, split: S) {
        let key = self.next_key;
        self.next_key += 1;
        self.progress.split_added(key);
        self.active.push(Held {
            split,
            reader: None,
            key,
            idle_until: None,
        });
    }

    /// The unfinished splits, in reading order.
    pub fn active(&self) -> impl Iterator<Item = &S> {
        self.active.iter().map(|h| &h.split)
    }

    /// The unfinished splits, to change before they are read (a bounded source gives
    /// restored splits of an unbounded run an end). A split made finished here is still
    /// read once, and must then report [`SplitPoll::Finished`].
    pub fn active_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.active.iter_mut().map(|h| &mut h.split)
    }

    /// Whether the subtask holds no unfinished split.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Per-split progress for the runtime (return it from `Source::split_progress`).
    pub fn progress(&mut self) -> &mut SplitProgress {
        &mut self.progress
    }

    /// Read up to `budget` records into `out`, fairly over the splits.
    ///
    /// `read(split, reader, out, quota)` appends at most `quota` records of
    /// one split (opening its reader if it is `None`) and advances the split's
    /// position; it may append fewer.
    pub fn poll<T>(
        &mut self,
        out: &mut Vec<StreamRecord<T>>,
        budget: usize,
        mut read: impl FnMut(&mut S, &mut Option<R>, &mut Vec<StreamRecord<T>>, usize) -> OpResult<SplitPoll>,
    ) -> OpResult<Polled> {
        let now = Instant::now();
        let window = self.active.len().min(self.concurrency);
        let ready: Vec<usize> = (0..window)
            .filter(|&i| self.active[i].idle_until.is_none_or(|t| t <= now))
            .collect();
        let mut left = budget;
        let mut records = 0;
        let mut first_served = None;
        let mut more = false;
        let mut finished = Vec::new();
        for (turn, &i) in ready.iter().enumerate() {
            if left == 0 {
                // Budget spent: the unserved splits come first next time.
                more = true;
                break;
            }
            let quota = left.div_ceil(ready.len() - turn);
            let held = &mut self.active[i];
            let before = out.len();
            let result = read(&mut held.split, &mut held.reader, out, quota)?;
            let n = out.len() - before;
            if n > 0 {
                self.progress.records_from(held.key, n);
            }
            left = left.saturating_sub(n);
            records += n;
            first_served.get_or_insert(i);
            match result {
                SplitPoll::More => {
                    held.idle_until = None;
                    more = true;
                }
                SplitPoll::Idle(d) => held.idle_until = Some(now + d),
                SplitPoll::Finished => {
                    if !held.split.is_finished() {
                        return Err(format!(
                            "source split {:?} (state '{}') was reported finished but its state does not say so, \
                             so a restore would read it again",
                            held.split.id(),
                            self.state_name
                        )
                        .into());
                    }
                    finished.push(i);
                }
            }
        }
        // Next poll starts one split later: over `window` polls each split is first once.
        if let Some(first) = first_served {
            self.active[..window].rotate_left(first + 1);
            for f in &mut finished {
                *f = (*f + window - first - 1) % window;
            }
        }
        finished.sort_unstable();
        for i in finished.into_iter().rev() {
            let held = self.active.remove(i);
            self.progress.split_finished(held.key);
            self.finished.push(held.split);
        }
        let state = if self.active.is_empty() {
            SplitsState::Empty
        } else if more || records > 0 {
            SplitsState::Active
        } else {
            let window = self.active.len().min(self.concurrency);
            let wait = self.active[..window]
                .iter()
                .filter_map(|h| h.idle_until)
                .map(|t| t.saturating_duration_since(now))
                .min();
            match wait {
                Some(d) if !d.is_zero() => SplitsState::Idle(d),
                // A split became ready (or a newly held one entered the window).
                _ => SplitsState::Active,
            }
        };
        Ok(Polled { records, state })
    }

    /// Write this subtask's part of the split table into `state` (at a barrier).
    pub fn snapshot(&self, state: &mut OperatorStateStore) -> OpResult {
        let mut table: Vec<&S> = self.active.iter().map(|h| &h.split).collect();
        table.extend(self.finished.iter());
        state.set_list(&self.state_name, DistributionMode::Union, &table)?;
        Ok(())
    }
}

/// One subtask's share of a restored split table.
struct Share<S: SourceSplit> {
    active: Vec<S>,
    finished: Vec<S>,
    known: BTreeSet<S::Id>,
    unfinished_total: usize,
}

/// Deal the table: unfinished splits sorted by id go round robin to the
/// subtasks, and so do finished ones (to be written again, never read).
/// The same split twice with different positions is an error: two subtasks
/// would have read it.
fn share_of_table<S: SourceSplit>(mut table: Vec<S>, subtask: u32, parallelism: u32) -> Result<Share<S>, String> {
    let (subtask, parallelism) = (subtask as usize, parallelism.max(1) as usize);
    table.sort_by_key(|s| s.id());
    let mut share = Share {
        active: Vec::new(),
        finished: Vec::new(),
        known: BTreeSet::new(),
        unfinished_total: 0,
    };
    let (mut unfinished_rank, mut finished_rank) = (0, 0);
    let mut last: Option<(S::Id, Vec<u8>)> = None;
    for split in table {
        let id = split.id();
        // Compared as encoded (splits need not implement Eq).
        let mut bytes = Vec::new();
        codec::encode_into("split", &split, &mut bytes).map_err(|e| e.to_string())?;
        if let Some((last_id, last_bytes)) = &last {
            if *last_id == id {
                if *last_bytes == bytes {
                    continue;
                }
                return Err(format!(
                    "split {id:?} appears twice with different positions; restore an earlier snapshot"
                ));
            }
        }
        last = Some((id.clone(), bytes));
        share.known.insert(id);
        if split.is_finished() {
            if finished_rank % parallelism == subtask {
                share.finished.push(split);
            }
            finished_rank += 1;
        } else {
            if unfinished_rank % parallelism == subtask {
                share.active.push(split);
            }
            unfinished_rank += 1;
        }
    }
    share.unfinished_total = unfinished_rank;
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_runtime::SubtaskInfo;
    use serde::Deserialize;

    /// A test split: emits `next..end` (never ends when `end` is `u64::MAX`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Range {
        id: u32,
        next: u64,
        end: u64,
    }

    impl SourceSplit for Range {
        type Id = u32;
        fn id(&self) -> u32 {
            self.id
        }
        fn is_finished(&self) -> bool {
            self.next >= self.end
        }
    }

    fn info(subtask: u32, parallelism: u32) -> SubtaskInfo {
        SubtaskInfo {
            job_id: "0".repeat(32),
            operator_name: "test".into(),
            uid: "test".into(),
            operator_id: "test".into(),
            subtask,
            parallelism,
            max_parallelism: 128,
            attempt: 0,
            clock: cairn_runtime::time::system_clock(),
        }
    }

    fn fresh(splits: &[Range]) -> SplitSet<Range> {
        let mut state = OperatorStateStore::new();
        let i = info(0, 1);
        let mut set = SplitSet::open(
            "t",
            &SourceContext {
                info: &i,
                state: &mut state,
            },
        )
        .unwrap();
        for s in splits {
            set.add(s.clone());
        }
        set
    }

    fn read_range(
        split: &mut Range,
        _: &mut Option<()>,
        out: &mut Vec<StreamRecord<(u32, u64)>>,
        quota: usize,
    ) -> OpResult<SplitPoll> {
        let n = (quota as u64).min(split.end - split.next);
        for i in split.next..split.next + n {
            out.push(StreamRecord {
                value: (split.id, i),
                timestamp: 0,
            });
        }
        split.next += n;
        Ok(if split.is_finished() {
            SplitPoll::Finished
        } else {
            SplitPoll::More
        })
    }

    fn per_split(out: &[StreamRecord<(u32, u64)>]) -> Vec<usize> {
        let mut counts = vec![0; 4];
        for r in out {
            counts[r.value.0 as usize] += 1;
        }
        counts
    }

    fn unbounded(id: u32) -> Range {
        Range {
            id,
            next: 0,
            end: u64::MAX,
        }
    }

    #[test]
    fn a_budget_of_one_record_per_poll_still_reaches_every_split() {
        let mut set = fresh(&[unbounded(0), unbounded(1), unbounded(2)]);
        let mut out = Vec::new();
        for _ in 0..30 {
            set.poll(&mut out, 1, read_range).unwrap();
        }
        assert_eq!(per_split(&out)[..3], [10, 10, 10]);
    }

    #[test]
    fn large_budgets_are_shared_within_one_record_per_poll() {
        let mut set = fresh(&[unbounded(0), unbounded(1), unbounded(2)]);
        for budget in [1024, 7, 2, 100] {
            let mut out = Vec::new();
            let polled = set.poll(&mut out, budget, read_range).unwrap();
            assert_eq!(polled.records, budget);
            let c = &per_split(&out)[..3];
            assert!(
                c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
                "{budget}: {c:?}"
            );
        }
    }

    #[test]
    fn what_a_finished_split_leaves_goes_to_the_others_and_it_is_never_read_again() {
        let short = Range { id: 0, next: 0, end: 3 };
        let mut set = fresh(&[short, unbounded(1)]);
        let mut out = Vec::new();
        let polled = set.poll(&mut out, 100, read_range).unwrap();
        assert_eq!(polled.records, 100);
        assert_eq!(per_split(&out)[..2], [3, 97]);
        assert_eq!(set.active().map(|s| s.id).collect::<Vec<_>>(), vec![1]);
        let mut out = Vec::new();
        set.poll(&mut out, 50, read_range).unwrap();
        assert_eq!(per_split(&out)[..2], [0, 50]);
        let mut state = OperatorStateStore::new();
        set.snapshot(&mut state).unwrap();
        let table: Vec<Range> = state.list("t").unwrap();
        assert!(
            table.contains(&Range { id: 0, next: 3, end: 3 }),
            "finished split recorded: {table:?}"
        );
    }

    #[test]
    fn concurrency_bounds_the_splits_read_at_a_time() {
        let splits: Vec<Range> = (0..4).map(|id| Range { id, next: 0, end: 10 }).collect();
        let mut set = fresh(&splits).with_concurrency(2);
        let mut out = Vec::new();
        set.poll(&mut out, 10, read_range).unwrap();
        assert_eq!(per_split(&out), [5, 5, 0, 0]);
        set.poll(&mut out, 10, read_range).unwrap();
        assert_eq!(per_split(&out), [10, 10, 0, 0]);
        set.poll(&mut out, 10, read_range).unwrap();
        assert_eq!(per_split(&out), [10, 10, 5, 5]);
    }

    #[test]
    fn idle_splits_give_their_turn_away_and_all_idle_says_how_long_to_wait() {
        let mut set = fresh(&[unbounded(0), unbounded(1)]);
        let mut out = Vec::new();
        // Split 0 has nothing for now.
        let polled = set
            .poll(&mut out, 10, |s, r, out, q| {
                if s.id == 0 {
                    Ok(SplitPoll::Idle(Duration::from_secs(60)))
                } else {
                    read_range(s, r, out, q)
                }
            })
            .unwrap();
        assert_eq!(polled.records, 10, "split 1 gets what split 0 left");
        let polled = set.poll(&mut out, 10, read_range).unwrap();
        assert_eq!(polled.records, 10, "split 0 is skipped while idle");
        assert_eq!(per_split(&out)[..2], [0, 20]);
        let polled = set
            .poll(&mut out, 10, |_, _, _, _| Ok(SplitPoll::Idle(Duration::from_secs(30))))
            .unwrap();
        assert!(
            matches!(polled.state, SplitsState::Idle(d) if d > Duration::from_secs(1)),
            "{polled:?}"
        );
    }

    #[test]
    fn a_split_reported_finished_whose_state_is_not_is_an_error() {
        let mut set = fresh(&[unbounded(0)]);
        let err = set
            .poll(&mut Vec::<StreamRecord<(u32, u64)>>::new(), 5, |_, _, _, _| {
                Ok(SplitPoll::Finished)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("split 0") && err.contains("read it again"), "{err}");
    }

    #[test]
    fn a_restored_table_is_dealt_by_rank_and_every_id_is_known() {
        let table = vec![
            Range { id: 5, next: 1, end: 9 },
            Range { id: 1, next: 9, end: 9 },
            Range { id: 3, next: 0, end: 9 },
            Range { id: 7, next: 2, end: 9 },
        ];
        let mut state = OperatorStateStore::new();
        state.set_list("t", DistributionMode::Union, &table).unwrap();
        let mut got = Vec::new();
        for s in 0..2 {
            let i = info(s, 2);
            let set: SplitSet<Range> = SplitSet::open(
                "t",
                &SourceContext {
                    info: &i,
                    state: &mut state,
                },
            )
            .unwrap();
            assert!(set.restored() && set.is_known(&1) && set.is_known(&7));
            assert_eq!(set.restored_unfinished(), 3);
            got.push(set.active().map(|s| s.id).collect::<Vec<_>>());
        }
        assert_eq!(got, vec![vec![3, 7], vec![5]]);
    }

    #[test]
    fn one_split_twice_with_different_positions_fails_the_restore_naming_it() {
        let table = vec![Range { id: 4, next: 1, end: 9 }, Range { id: 4, next: 2, end: 9 }];
        let mut state = OperatorStateStore::new();
        state.set_list("t", DistributionMode::Union, &table).unwrap();
        let i = info(0, 1);
        let err = SplitSet::<Range>::open(
            "t",
            &SourceContext {
                info: &i,
                state: &mut state,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("split 4") && err.contains("'t'"), "{err}");
    }

    #[test]
    fn progress_reports_each_records_split_and_finished_splits() {
        let mut set = fresh(&[Range { id: 0, next: 0, end: 2 }, unbounded(1)]);
        let mut out = Vec::new();
        set.poll(&mut out, 6, read_range).unwrap();
        let p = format!("{:?}", set.progress());
        assert!(p.contains("added: [0, 1]"), "{p}");
        assert!(p.contains("runs: [(0, 2), (1, 4)]"), "{p}");
        assert!(p.contains("finished: [0]"), "{p}");
    }
}
