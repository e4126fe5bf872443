//! Splitting an operator's key groups into ranges small enough to hold in
//! memory, from what the snapshot says about their sizes, and running work
//! over ranges on a few threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cairn_coordinator::restore::StateReader;
use cairn_snapshot::{FileFormat, OperatorSnapshot};
use cairn_state::keygroup::KeyGroupRange;

use crate::SpaError;

/// How much larger state is in a heap backend than in a snapshot file.
pub const EXPANSION: u64 = 4;

/// Estimated snapshot bytes per key group of `op`.
pub fn weights(reader: &StateReader<'_>, op: &OperatorSnapshot) -> Vec<u64> {
    let n = op.max_parallelism as usize;
    let mut w = vec![0u64; n];
    let spread = |w: &mut Vec<u64>, range: KeyGroupRange, bytes: u64| {
        let len = u64::from(range.end_exclusive.saturating_sub(range.start)).max(1);
        for kg in range.start..range.end_exclusive.min(n as u32) {
            w[kg as usize] += bytes / len + 1;
        }
    };
    for sub in &op.subtasks {
        let old = KeyGroupRange::for_subtask(op.max_parallelism, op.parallelism, sub.subtask_index);
        for f in &sub.files {
            match f.format {
                FileFormat::CairnStateV1 => {
                    for s in &f.sections {
                        if let Some(kg) = s.key_group.filter(|kg| (*kg as usize) < n) {
                            w[kg as usize] += s.len;
                        }
                    }
                }
                FileFormat::BackendFile | FileFormat::ParquetV1 => spread(&mut w, old, f.size * 3),
                // In-flight records of an unaligned checkpoint: not keyed state.
                FileFormat::ChannelStateV1 => {}
                FileFormat::ParquetV2 => match reader.open_canonical_v2(op, f) {
                    Ok(cairn_canonical::CanonicalFile::Keyed(k)) => {
                        let md = &k.source().metadata;
                        for rg in 0..md.num_row_groups() {
                            let bytes = md.row_group(rg).total_byte_size().max(0) as u64;
                            spread(&mut w, k.row_group_range(rg).unwrap_or(old), bytes);
                        }
                    }
                    _ => spread(&mut w, old, f.size),
                },
            }
        }
    }
    w
}

/// Where the snapshot's subtasks of `op` start (the first key group of each).
pub fn subtask_starts(op: &OperatorSnapshot) -> Vec<u32> {
    (0..op.parallelism.max(1))
        .map(|s| KeyGroupRange::for_subtask(op.max_parallelism, op.parallelism.max(1), s).start)
        .collect()
}

/// Split each of `within` at the snapshot's subtask boundaries `starts`
/// (a range never needs two subtasks' files), and then, with a `budget`,
/// into consecutive ranges whose estimated in-memory size stays under it
/// (a single key group may exceed it).
pub fn split(weights: &[u64], within: &[KeyGroupRange], starts: &[u32], budget: Option<u64>) -> Vec<KeyGroupRange> {
    let mut out = Vec::new();
    for r in within {
        let mut start = r.start;
        let mut acc = 0u64;
        for kg in r.start..r.end_exclusive {
            let w = weights.get(kg as usize).copied().unwrap_or(0) * EXPANSION;
            let full = budget.is_some_and(|b| acc + w > b.max(1));
            if kg > start && (full || starts.contains(&kg)) {
                out.push(KeyGroupRange {
                    start,
                    end_exclusive: kg,
                });
                start = kg;
                acc = 0;
            }
            acc += w;
        }
        if start < r.end_exclusive {
            out.push(KeyGroupRange {
                start,
                end_exclusive: r.end_exclusive,
            });
        }
    }
    out
}

/// `ranges` with the widest halved until there are `workers` of them (or
/// each is one key group), so that every worker has a range.
pub fn at_least(mut ranges: Vec<KeyGroupRange>, workers: usize) -> Vec<KeyGroupRange> {
    while ranges.len() < workers {
        let Some((i, widest)) = ranges.iter().copied().enumerate().max_by_key(|(_, r)| r.len()) else {
            break;
        };
        if widest.len() < 2 {
            break;
        }
        let mid = widest.start + widest.len() / 2;
        ranges[i] = KeyGroupRange {
            start: widest.start,
            end_exclusive: mid,
        };
        ranges.insert(
            i + 1,
            KeyGroupRange {
                start: mid,
                end_exclusive: widest.end_exclusive,
            },
        );
    }
    ranges
}

/// Run `f` over `items` on up to `workers` threads; results in item order.
/// The first error stops the remaining work.
pub fn run<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    f: impl Fn(usize, &I) -> Result<T, SpaError> + Sync,
) -> Result<Vec<T>, SpaError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failed: Mutex<Option<SpaError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return;
                };
                match f(i, item) {
                    Ok(v) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(v),
                    Err(e) => {
                        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u32, end_exclusive: u32) -> KeyGroupRange {
        KeyGroupRange { start, end_exclusive }
    }

    #[test]
    fn ranges_never_span_two_snapshot_subtasks_and_fit_the_budget_only_when_one_applies() {
        let weights = vec![10u64; 8];
        let all = [r(0, 8)];
        // Subtasks start at 0 and 5; without a budget the ranges are the subtasks'.
        assert_eq!(split(&weights, &all, &[0, 5], None), vec![r(0, 5), r(5, 8)]);
        // A budget of two key groups (10 bytes, expanded 4x, each).
        assert_eq!(
            split(&weights, &all, &[0, 5], Some(80)),
            vec![r(0, 2), r(2, 4), r(4, 5), r(5, 7), r(7, 8)]
        );
        // A range of the new job inside one old subtask stays whole.
        assert_eq!(split(&weights, &[r(1, 4)], &[0, 5], None), vec![r(1, 4)]);
    }

    #[test]
    fn every_worker_gets_a_range_when_key_groups_allow() {
        assert_eq!(at_least(vec![r(0, 8)], 2), vec![r(0, 4), r(4, 8)]);
        assert_eq!(at_least(vec![r(0, 2), r(2, 8)], 3), vec![r(0, 2), r(2, 5), r(5, 8)]);
        assert_eq!(at_least(vec![r(0, 1)], 4), vec![r(0, 1)]);
        assert_eq!(at_least(Vec::new(), 2), Vec::new());
    }
}
