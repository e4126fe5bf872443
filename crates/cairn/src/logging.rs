//! Logs. Cairn's crates report through `tracing` (events with fields such as
//! `job_id`, `checkpoint_id`, `uid`, `subtask`) and never install a
//! subscriber themselves: a program embedding Cairn routes those events
//! wherever it routes its own. Job binaries get one installed by
//! [`crate::StreamEnv::from_args`] (via [`install_log_subscriber`]): plain
//! text on stderr, filtered by `RUST_LOG` (default `info`), e.g.
//! `RUST_LOG=debug` or `RUST_LOG=cairn_coordinator=debug,info`.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Install the job binary's subscriber: events to stderr, filtered by
/// `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]). Does nothing when the process
/// already has a subscriber. An unusable `RUST_LOG` is reported and the
/// default is used.
pub fn install_log_subscriber() {
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(DEFAULT_LOG_FILTER), Some((spec, e))),
        },
        _ => (EnvFilter::new(DEFAULT_LOG_FILTER), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .is_ok();
    if let (true, Some((spec, e))) = (installed, bad) {
        tracing::warn!("RUST_LOG='{spec}' is not a valid filter ({e}); logging at '{DEFAULT_LOG_FILTER}' instead");
    }
}
