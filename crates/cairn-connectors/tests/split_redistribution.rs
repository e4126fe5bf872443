//! Property test of split redistribution: random split counts, random chains
//! of parallelisms, random progress (so splits finish at random moments),
//! through the real sources' open / poll / snapshot and the runtime's
//! operator-state redistribution. After every restore:
//!
//! - the unfinished splits are balanced: subtasks' shares differ by at most one;
//! - no split is lost or duplicated, and each continues at its snapshot position;
//! - no finished split is read again, no event is emitted twice, and draining
//!   the last run emits exactly the events not emitted before.
//!
//! Cases come from a seeded generator; a failure names its seed and chain.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use cairn::connectors::file::FileSource;
use cairn::prelude::*;
use cairn::runtime::SubtaskInfo;
use cairn::state::operator_state::{redistribute, OperatorStateEntry};
use cairn::state::{DistributionMode, OperatorStateStore};
use serde::{Deserialize, Serialize};

/// SplitMix64: small, seeded, good enough to draw test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn info(subtask: u32, parallelism: u32, attempt: u32) -> SubtaskInfo {
    SubtaskInfo {
        job_id: "0".repeat(32),
        operator_name: "source".into(),
        uid: "source".into(),
        operator_id: "source".into(),
        subtask,
        parallelism,
        max_parallelism: 128,
        attempt,
        clock: cairn_runtime::time::system_clock(),
    }
}

/// A generator split as its state holds it (the encoding is documented).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct GenSplit {
    next: u64,
    end: u64,
}

/// A file's position as the file source's state holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct FilePos {
    path: String,
    offset: u64,
    done: bool,
}

/// One run of a source: its subtasks, opened from `entries` (None: first start).
struct Stage<S, T> {
    subtasks: Vec<(S, OperatorStateStore, SubtaskInfo)>,
    records: PhantomData<T>,
}

impl<T: Send + 'static, S: Source<T>> Stage<S, T> {
    fn open(
        make: &dyn Fn() -> S,
        parallelism: u32,
        attempt: u32,
        entries: Option<Vec<Vec<OperatorStateEntry>>>,
    ) -> Self {
        let mut subtasks = Vec::new();
        let mut entries = entries.map(|e| e.into_iter());
        for s in 0..parallelism {
            let mut store = match entries.as_mut() {
                Some(it) => OperatorStateStore::from_entries(it.next().unwrap()).unwrap(),
                None => OperatorStateStore::new(),
            };
            let i = info(s, parallelism, attempt);
            let mut source = make();
            source
                .open(&mut SourceContext {
                    info: &i,
                    state: &mut store,
                })
                .unwrap();
            subtasks.push((source, store, i));
        }
        Stage {
            subtasks,
            records: PhantomData,
        }
    }

    /// Each subtask's snapshot entries.
    fn snapshot(&mut self, checkpoint: u64) -> Vec<Vec<OperatorStateEntry>> {
        self.subtasks
            .iter_mut()
            .map(|(source, store, i)| {
                source
                    .snapshot_state(&mut SourceContext { info: i, state: store }, checkpoint)
                    .unwrap();
                store.to_entries()
            })
            .collect()
    }

    /// Poll each subtask a random number of times with random budgets.
    fn poll_randomly(&mut self, rng: &mut Rng, out: &mut Vec<T>) {
        for (source, _, _) in &mut self.subtasks {
            for _ in 0..rng.range(0, 6) {
                let mut batch = Vec::new();
                let max = rng.range(1, 40) as usize;
                source.poll(&mut batch, max).unwrap();
                assert!(batch.len() <= max, "a poll returned more than its budget");
                out.extend(batch.into_iter().map(|r| r.value));
            }
        }
    }

    /// Poll every subtask until it finishes.
    fn drain(&mut self, out: &mut Vec<T>) {
        for (source, _, _) in &mut self.subtasks {
            for _ in 0..100_000 {
                let mut batch = Vec::new();
                let status = source.poll(&mut batch, 64).unwrap();
                out.extend(batch.into_iter().map(|r| r.value));
                if status == SourceStatus::Finished {
                    break;
                }
            }
        }
    }
}

/// Each subtask's own part of the split table (what it snapshots right after open).
fn tables<T, S: Source<T>, E: serde::de::DeserializeOwned>(stage: &mut Stage<S, T>, name: &str) -> Vec<Vec<E>>
where
    T: Send + 'static,
{
    stage
        .snapshot(0)
        .into_iter()
        .map(|entries| {
            let store = OperatorStateStore::from_entries(entries).unwrap();
            store.list(name).unwrap()
        })
        .collect()
}

fn assert_balanced(case: &str, shares: &[usize]) {
    let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
    assert!(
        max - min <= 1,
        "{case}: unfinished splits per subtask {shares:?} differ by more than one"
    );
}

/// Emitted values are unique; returns them as a set.
fn unique<T: Ord + Clone + std::fmt::Debug>(case: &str, emitted: &[T]) -> BTreeSet<T> {
    let mut seen = BTreeSet::new();
    for v in emitted {
        assert!(
            seen.insert(v.clone()),
            "{case}: {v:?} emitted twice (a split was restarted or read twice)"
        );
    }
    seen
}

fn chain(rng: &mut Rng) -> Vec<u32> {
    (0..rng.range(2, 5)).map(|_| rng.range(1, 7) as u32).collect()
}

/// One generator case; `legacy` starts from state in the encoding of earlier
/// releases (split-evenly `generator-splits`, placeholders for idle subtasks).
fn generator_case(seed: u64, legacy: bool) {
    let mut rng = Rng(seed);
    let count = rng.range(0, 400);
    let splits = rng.range(1, 12) as u32;
    let ps = chain(&mut rng);
    let case = format!("seed {seed}, {count} events, {splits} splits, parallelisms {ps:?}, legacy {legacy}");
    let make = move || GeneratorSource::new(count, 3).splits(splits);
    let mut emitted: Vec<GeneratedEvent> = Vec::new();
    let mut read_before: Vec<u64> = Vec::new();

    let mut entries = if legacy {
        Some(legacy_generator_state(&mut rng, count, splits, ps[0], &mut read_before))
    } else {
        None
    };
    let mut balanced_from = usize::from(legacy);
    for (stage_no, &p) in ps.iter().enumerate() {
        let before: Option<BTreeSet<GenSplit>> = entries.as_ref().map(|e| unfinished_generator_splits(e));
        let mut stage = Stage::open(&make, p, stage_no as u32, entries.take());
        let parts: Vec<Vec<GenSplit>> = tables(&mut stage, "generator-split-table");
        let unfinished: Vec<Vec<GenSplit>> = parts
            .iter()
            .map(|t| t.iter().copied().filter(|s| s.next < s.end).collect())
            .collect();
        let all: Vec<GenSplit> = unfinished.iter().flatten().copied().collect();
        let set: BTreeSet<GenSplit> = all.iter().copied().collect();
        assert_eq!(
            set.len(),
            all.len(),
            "{case}, stage {stage_no}: a split is held twice: {parts:?}"
        );
        if let Some(before) = before {
            assert_eq!(set, before, "{case}, stage {stage_no}: splits lost, added or moved");
        }
        if stage_no >= balanced_from {
            assert_balanced(
                &format!("{case}, stage {stage_no}"),
                &unfinished.iter().map(Vec::len).collect::<Vec<_>>(),
            );
        } else {
            // The first restore of legacy state keeps that release's shares;
            // the table written from then on is dealt evenly.
            balanced_from = stage_no + 1;
        }
        if stage_no + 1 == ps.len() {
            stage.drain(&mut emitted);
        } else {
            stage.poll_randomly(&mut rng, &mut emitted);
            entries = Some(redistribute(
                &stage.snapshot(stage_no as u64 + 1),
                ps[stage_no + 1] as usize,
            ));
        }
    }
    let mut indices = read_before;
    indices.extend(emitted.iter().map(|e| e.index));
    let seen = unique(&case, &indices);
    assert_eq!(seen, (0..count).collect::<BTreeSet<_>>(), "{case}: events lost");
}

/// Unfinished splits in a (redistributed) generator state, either encoding.
fn unfinished_generator_splits(entries: &[Vec<OperatorStateEntry>]) -> BTreeSet<GenSplit> {
    let mut out = BTreeSet::new();
    for e in entries {
        let store = OperatorStateStore::from_entries(e.clone()).unwrap();
        for name in ["generator-split-table", "generator-splits"] {
            let splits: Vec<GenSplit> = store.list(name).unwrap();
            out.extend(splits.into_iter().filter(|s| s.next < s.end));
        }
    }
    out
}

/// State as earlier releases wrote it after reading part of the input at
/// parallelism `p`: each subtask its splits `{next, end}` as a split-evenly
/// list, a subtask without splits the placeholder `{count, count}`. Records the
/// events read into `emitted`; returns the state redistributed onto `p` subtasks.
fn legacy_generator_state(
    rng: &mut Rng,
    count: u64,
    splits: u32,
    p: u32,
    emitted: &mut Vec<u64>,
) -> Vec<Vec<OperatorStateEntry>> {
    let old_p = rng.range(1, 7) as u32;
    let n = u64::from(splits);
    let at = |s: u64| (u128::from(s) * u128::from(count) / u128::from(n)) as u64;
    let mut snapshots = Vec::new();
    for sub in 0..old_p {
        let mut mine: Vec<GenSplit> = (0..n)
            .filter(|s| s % u64::from(old_p) == u64::from(sub))
            .map(|s| GenSplit {
                next: at(s),
                end: at(s + 1),
            })
            .filter(|s| s.next < s.end)
            .collect();
        for s in &mut mine {
            let read = rng.range(0, s.end - s.next);
            emitted.extend(s.next..s.next + read);
            s.next += read;
        }
        if mine.is_empty() {
            mine.push(GenSplit {
                next: count,
                end: count,
            });
        }
        let mut store = OperatorStateStore::new();
        store
            .set_list("generator-splits", DistributionMode::SplitEvenly, &mine)
            .unwrap();
        snapshots.push(store.to_entries());
    }
    redistribute(&snapshots, p as usize)
}

#[test]
fn generator_splits_stay_balanced_and_exactly_once_over_random_rescales() {
    for seed in 0..400 {
        generator_case(seed, false);
    }
}

#[test]
fn generator_state_of_earlier_releases_rescales_exactly_once_and_then_evenly() {
    for seed in 1_000..1_300 {
        generator_case(seed, true);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-split-prop-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Add `n` files with random line counts; returns their lines.
fn add_files(dir: &Path, rng: &mut Rng, first: u64, n: u64) -> Vec<String> {
    let mut all = Vec::new();
    for f in first..first + n {
        let name = format!("f{f:03}");
        let lines: Vec<String> = (0..rng.range(0, 25)).map(|l| format!("{name}:{l}")).collect();
        fs::write(
            dir.join(&name),
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        all.extend(lines);
    }
    all
}

fn file_case(dir: &Path, seed: u64) {
    let mut rng = Rng(seed);
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let ps = chain(&mut rng);
    let case = format!("seed {seed}, parallelisms {ps:?}");
    let mut files = rng.range(0, 10);
    let mut lines = add_files(dir, &mut rng, 0, files);
    let make = {
        let dir = dir.to_path_buf();
        move || FileSource::new(&dir)
    };
    let mut emitted: Vec<String> = Vec::new();
    let mut entries: Option<Vec<Vec<OperatorStateEntry>>> = None;
    for (stage_no, &p) in ps.iter().enumerate() {
        let restored: Option<BTreeMap<String, FilePos>> = entries.as_ref().map(|e| {
            let store = OperatorStateStore::from_entries(e[0].clone()).unwrap();
            let table: Vec<FilePos> = store.list("file-source-files").unwrap();
            table.into_iter().map(|f| (f.path.clone(), f)).collect()
        });
        let mut stage = Stage::open(&make, p, stage_no as u32, entries.take());
        let parts: Vec<Vec<FilePos>> = tables(&mut stage, "file-source-files");
        let all: Vec<&FilePos> = parts.iter().flatten().collect();
        let names: BTreeSet<&String> = all.iter().map(|f| &f.path).collect();
        assert_eq!(
            names.len(),
            all.len(),
            "{case}, stage {stage_no}: a file is held twice: {parts:?}"
        );
        if let Some(restored) = &restored {
            // Restored files keep their positions, wherever they went; the
            // unfinished ones are dealt evenly.
            for f in &all {
                if let Some(r) = restored.get(&f.path) {
                    assert_eq!(*f, r, "{case}, stage {stage_no}: position changed");
                }
            }
            assert!(
                restored.keys().all(|n| names.contains(n)),
                "{case}, stage {stage_no}: a file was lost"
            );
            let shares: Vec<usize> = parts
                .iter()
                .map(|t| t.iter().filter(|f| !f.done && restored.contains_key(&f.path)).count())
                .collect();
            assert_balanced(&format!("{case}, stage {stage_no}"), &shares);
        }
        if stage_no + 1 == ps.len() {
            stage.drain(&mut emitted);
        } else {
            stage.poll_randomly(&mut rng, &mut emitted);
            entries = Some(redistribute(
                &stage.snapshot(stage_no as u64 + 1),
                ps[stage_no + 1] as usize,
            ));
            // New files may arrive while the job is down.
            let n = rng.range(0, 3);
            lines.extend(add_files(dir, &mut rng, files, n));
            files += n;
        }
    }
    let seen = unique(&case, &emitted);
    assert_eq!(seen, lines.into_iter().collect::<BTreeSet<_>>(), "{case}: lines lost");
}

#[test]
fn file_splits_stay_balanced_and_exactly_once_over_random_rescales() {
    let dir = temp_dir("files");
    for seed in 0..120 {
        file_case(&dir, seed);
    }
    let _ = fs::remove_dir_all(&dir);
}
