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

/// Split each of `within` into consecutive ranges whose estimated in-memory
/// size stays under `budget` (a single key group may exceed it).
pub fn split(weights: &[u64], within: &[KeyGroupRange], budget: u64) -> Vec<KeyGroupRange> {
    let budget = budget.max(1);
    let mut out = Vec::new();
    for r in within {
        let mut start = r.start;
        let mut acc = 0u64;
        for kg in r.start..r.end_exclusive {
            let w = weights.get(kg as usize).copied().unwrap_or(0) * EXPANSION;
            if kg > start && acc + w > budget {
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
