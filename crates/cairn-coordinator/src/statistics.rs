//! Checkpoint statistics: counts, a bounded history and the latest completed,
//! failed, savepoint and restored snapshots, as the control plane shows them.
//! Kept apart from the coordinator so that protocol decisions and reporting
//! do not mix.

use std::collections::VecDeque;
use std::path::Path;

use crate::control::{CheckpointCounts, CheckpointStats, CheckpointsOverview, RestoredInfo, SnapshotStatus};

/// How many completed or failed snapshots the statistics keep.
const HISTORY_LIMIT: usize = 1000;

/// The statistics of one job's snapshots across its attempts.
#[derive(Default)]
pub struct CheckpointStatsTracker {
    history: VecDeque<CheckpointStats>,
    counts: CheckpointCounts,
    latest_completed: Option<CheckpointStats>,
    latest_savepoint: Option<CheckpointStats>,
    latest_failed: Option<CheckpointStats>,
    latest_restored: Option<RestoredInfo>,
}

impl CheckpointStatsTracker {
    /// A snapshot was triggered.
    pub fn on_triggered(&mut self) {
        self.counts.total += 1;
        self.counts.in_progress += 1;
    }

    /// The job was restored from snapshot `id` at `dir`.
    pub fn on_restored(&mut self, id: u64, dir: &Path, is_savepoint: bool, restore_timestamp_ms: u64) {
        self.counts.restored += 1;
        self.latest_restored = Some(RestoredInfo {
            id,
            restore_timestamp_ms,
            is_savepoint,
            external_path: dir.to_path_buf(),
        });
    }

    /// A snapshot ended (completed or failed).
    pub fn on_ended(&mut self, stats: CheckpointStats) {
        self.counts.in_progress = self.counts.in_progress.saturating_sub(1);
        match stats.status {
            SnapshotStatus::Completed => {
                self.counts.completed += 1;
                if stats.is_savepoint {
                    self.latest_savepoint = Some(stats.clone());
                } else {
                    self.latest_completed = Some(stats.clone());
                }
            }
            SnapshotStatus::Failed => {
                self.counts.failed += 1;
                self.latest_failed = Some(stats.clone());
            }
            SnapshotStatus::InProgress => {}
        }
        if self.history.len() >= HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(stats);
    }

    /// Counts, the newest `history` entries (with `in_progress` ones merged
    /// in, ordered by id) and the latest snapshots.
    pub fn overview(&self, history: usize, in_progress: impl Iterator<Item = CheckpointStats>) -> CheckpointsOverview {
        // Only the newest `history` entries can be shown: clone no more.
        let mut h: Vec<CheckpointStats> = self.history.iter().rev().take(history).cloned().collect();
        h.extend(in_progress);
        h.sort_by_key(|s| s.id);
        let skip = h.len().saturating_sub(history);
        CheckpointsOverview {
            counts: self.counts.clone(),
            history: h.split_off(skip),
            latest_completed: self.latest_completed.clone(),
            latest_savepoint: self.latest_savepoint.clone(),
            latest_failed: self.latest_failed.clone(),
            latest_restored: self.latest_restored.clone(),
        }
    }

    /// Every recorded snapshot, oldest first.
    pub fn history(&self) -> Vec<CheckpointStats> {
        self.history.iter().cloned().collect()
    }
}
