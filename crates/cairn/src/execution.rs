//! Runs a built job: restores it from a snapshot when asked, runs it with or
//! without checkpoints, and reports progress.

use std::path::Path;
use std::time::Instant;

use cairn_runtime::checkpoint::{run_with_checkpoints, CheckpointSettings};
use cairn_runtime::job::{run_to_end, JobSpec, RuntimeSettings, SubtaskRestore};
use cairn_runtime::restore::RestorePlan;
use cairn_runtime::JobError;
use cairn_snapshot::{load_snapshot, LoadedSnapshot, LocalFileStorage};

use crate::error::CairnError;

/// What a run reports.
pub(crate) struct Outcome {
    pub source_records: u64,
    pub checkpoints: Vec<cairn_runtime::checkpoint::CheckpointStats>,
}

/// Load the snapshot to restore from (a directory or its `_metadata`).
pub(crate) fn load(path: &Path) -> Result<LoadedSnapshot, CairnError> {
    load_snapshot(&LocalFileStorage::new(), path)
        .map_err(|e| CairnError::Job(JobError::Setup(format!("cannot restore from {}: {e}", path.display()))))
}

/// Run `spec` to its end.
pub(crate) fn run(
    spec: &JobSpec,
    settings: RuntimeSettings,
    snapshot: Option<&LoadedSnapshot>,
    allow_non_restored_state: bool,
    progress: bool,
) -> Result<Outcome, CairnError> {
    let start = Instant::now();
    let mut last = 0u64;
    let mut tick = |records: u64| {
        if progress {
            eprintln!(
                "  {:>6.1}s  {:>12} records from sources  ({:.0}/s)",
                start.elapsed().as_secs_f64(),
                records,
                (records - last.min(records)) as f64
            );
            last = records;
        }
    };
    let storage = LocalFileStorage::new();
    let plan = match snapshot {
        Some(s) => {
            let plan = RestorePlan::new(s, &storage, &spec.graph, allow_non_restored_state)?;
            if !plan.dropped.is_empty() {
                eprintln!(
                    "Restoring from {} without the state of operator uid(s) {} (--allow-non-restored-state)",
                    s.dir.display(),
                    plan.dropped.join(", ")
                );
            }
            Some(plan)
        }
        None => None,
    };
    let graph = &spec.graph;
    let mut restore = |node: usize, subtask: u32, range| match &plan {
        Some(p) => p.subtask(node, subtask, range, graph.nodes[node].keyed),
        None => Ok(SubtaskRestore::default()),
    };
    match CheckpointSettings::from_config(&spec.config)? {
        Some(cp) => {
            let first = plan.as_ref().map_or(1, |p| p.checkpoint_id() + 1);
            let out = run_with_checkpoints(spec, settings, cp, first, &mut restore, progress, &mut tick)?;
            Ok(Outcome {
                source_records: out.source_records,
                checkpoints: out.checkpoints,
            })
        }
        None => {
            let source_records = run_to_end(spec, settings, &mut restore, &mut tick)?;
            Ok(Outcome {
                source_records,
                checkpoints: Vec::new(),
            })
        }
    }
}
