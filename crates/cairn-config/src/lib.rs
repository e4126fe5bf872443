//! Flink-compatible configuration for Cairn jobs.
//!
//! - [`options`] declares every known option ([`ConfigOption`]) with Flink's keys, deprecated
//!   keys (aliases) and defaults.
//! - [`Configuration`] holds explicitly set values (validated on insertion) and where each came
//!   from; it reads YAML in both Flink 2 styles (nested maps and flat dotted keys).
//! - [`parse_startup_args`] turns a job binary's arguments (`-s`, `-n`, `--claim-mode`, `-p`,
//!   `-D`, `--config`) into a [`StartupOptions`].
//! - [`effective_restart_strategy`] applies Flink's restart-strategy defaulting rule.
//!
//! Every error is a [`ConfigError`] naming the key or flag, the bad value, the origin (file and
//! line where possible) and what is accepted. The user-facing reference is
//! `docs/configuration.md`.
//!
//! ```
//! use cairn_config::{options, Configuration};
//! use std::time::Duration;
//!
//! let mut conf = Configuration::from_yaml_str(
//!     "execution:\n  checkpointing:\n    interval: 10 s\nstate.checkpoints.dir: file:///tmp/chk\n",
//!     "config.yaml",
//! )
//! .unwrap();
//! conf.set("parallelism.default", "4").unwrap();
//! assert_eq!(conf.get(&options::CHECKPOINTING_INTERVAL), Some(Duration::from_secs(10)));
//! assert_eq!(conf.get(&options::PARALLELISM_DEFAULT), 4);
//! assert_eq!(
//!     conf.get(&options::CHECKPOINTS_DIR),
//!     Some(std::path::PathBuf::from("/tmp/chk"))
//! );
//! ```

#![warn(missing_docs)]

mod configuration;
mod error;
mod option;
pub mod options;
mod restart;
mod startup;
mod value;
mod yaml_tags;

pub use configuration::{Configuration, ValueOrigin};
pub use error::{ConfigError, ConfigErrorKind};
pub use option::{AnyOption, ConfigOption, RangeValue, ValueRange};
pub use restart::{effective_restart_strategy, RestartStrategyConfig};
pub use startup::{
    parse_startup_args, parse_startup_args_with_conf_dir, startup_help, StartupOptions, CONF_DIR_ENV, PLAN_JSON_FLAG,
};
pub use value::{
    format_duration, CheckpointingMode, ClaimMode, ExternalizedCheckpointRetention, FromConfigStr, MemorySize,
    RestartStrategyType, StateBackendType, TimerServiceFactory, ToConfigString,
};

#[cfg(test)]
mod registry_tests {
    use super::options;
    use std::collections::HashSet;

    #[test]
    fn every_default_parses_and_keys_are_unique() {
        let mut seen = HashSet::new();
        for opt in options::all() {
            assert!(seen.insert(opt.key()), "duplicate key {}", opt.key());
            for a in opt.aliases() {
                assert!(seen.insert(a), "alias {a} collides");
            }
            if let Some(d) = opt.default_text() {
                opt.validate(d)
                    .unwrap_or_else(|e| panic!("default of {} invalid: {e}", opt.key()));
            }
            assert!(!opt.description().is_empty(), "{} lacks a description", opt.key());
        }
        assert_eq!(options::all().len(), 82);
    }
}
