//! Runs a built job and reports progress.

use std::time::Instant;

use cairn_runtime::job::{run_to_end, JobSpec, RuntimeSettings};

use crate::error::CairnError;

/// Run `spec` to its end; returns the number of records the sources emitted.
pub(crate) fn run(
    spec: &JobSpec,
    settings: RuntimeSettings,
    progress: bool,
) -> Result<u64, CairnError> {
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
    Ok(run_to_end(spec, settings, &mut tick)?)
}
