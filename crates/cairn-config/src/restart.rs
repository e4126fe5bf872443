//! The effective restart strategy, with Flink's defaulting rule.

use std::time::Duration;

use crate::configuration::Configuration;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::options;
use crate::value::format_duration;
use crate::value::RestartStrategyType;

/// A restart strategy with all its parameters resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategyConfig {
    /// A failure fails the job.
    NoRestart,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay {
        /// `restart-strategy.fixed-delay.attempts`
        attempts: u32,
        /// `restart-strategy.fixed-delay.delay`
        delay: Duration,
    },
    /// Restart unless more than `max_failures_per_interval` failures happen within
    /// `failure_rate_interval`.
    FailureRate {
        /// `restart-strategy.failure-rate.max-failures-per-interval`
        max_failures_per_interval: u32,
        /// `restart-strategy.failure-rate.failure-rate-interval`
        failure_rate_interval: Duration,
        /// `restart-strategy.failure-rate.delay`
        delay: Duration,
    },
    /// Restart with a delay starting at `initial_backoff`, multiplied by `backoff_multiplier`
    /// after each failure up to `max_backoff`, with random jitter; reset after running
    /// `reset_backoff_threshold` without failure.
    ExponentialDelay {
        /// `restart-strategy.exponential-delay.initial-backoff`
        initial_backoff: Duration,
        /// `restart-strategy.exponential-delay.max-backoff`
        max_backoff: Duration,
        /// `restart-strategy.exponential-delay.backoff-multiplier`
        backoff_multiplier: f64,
        /// `restart-strategy.exponential-delay.reset-backoff-threshold`
        reset_backoff_threshold: Duration,
        /// `restart-strategy.exponential-delay.jitter-factor`
        jitter_factor: f64,
        /// `restart-strategy.exponential-delay.attempts-before-reset-backoff`
        attempts_before_reset_backoff: u32,
    },
}

impl RestartStrategyConfig {
    /// Checks what single options cannot: exponential-delay's initial backoff must not
    /// exceed its maximum (Flink refuses that too).
    pub fn check(&self) -> Result<(), ConfigError> {
        if let RestartStrategyConfig::ExponentialDelay {
            initial_backoff,
            max_backoff,
            ..
        } = self
        {
            if initial_backoff > max_backoff {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    format!(
                        "'{}' ({}) is larger than '{}' ({}); the first restart delay cannot exceed the largest one",
                        options::EXP_DELAY_INITIAL_BACKOFF.key(),
                        format_duration(*initial_backoff),
                        options::EXP_DELAY_MAX_BACKOFF.key(),
                        format_duration(*max_backoff)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The restart strategy a job runs with: `restart-strategy.type` if set, otherwise
/// `exponential-delay` when checkpointing is enabled and no restart when it is not (Flink's
/// rule). Parameters come from the strategy's own keys, defaulted as in Flink.
pub fn effective_restart_strategy(config: &Configuration) -> RestartStrategyConfig {
    let ty = config
        .get(&options::RESTART_STRATEGY_TYPE)
        .unwrap_or(if config.checkpointing_enabled() {
            RestartStrategyType::ExponentialDelay
        } else {
            RestartStrategyType::NoRestart
        });
    match ty {
        RestartStrategyType::NoRestart => RestartStrategyConfig::NoRestart,
        RestartStrategyType::FixedDelay => RestartStrategyConfig::FixedDelay {
            attempts: config.get(&options::FIXED_DELAY_ATTEMPTS),
            delay: config.get(&options::FIXED_DELAY_DELAY),
        },
        RestartStrategyType::FailureRate => RestartStrategyConfig::FailureRate {
            max_failures_per_interval: config.get(&options::FAILURE_RATE_MAX_FAILURES),
            failure_rate_interval: config.get(&options::FAILURE_RATE_INTERVAL),
            delay: config.get(&options::FAILURE_RATE_DELAY),
        },
        RestartStrategyType::ExponentialDelay => RestartStrategyConfig::ExponentialDelay {
            initial_backoff: config.get(&options::EXP_DELAY_INITIAL_BACKOFF),
            max_backoff: config.get(&options::EXP_DELAY_MAX_BACKOFF),
            backoff_multiplier: config.get(&options::EXP_DELAY_BACKOFF_MULTIPLIER),
            reset_backoff_threshold: config.get(&options::EXP_DELAY_RESET_BACKOFF_THRESHOLD),
            jitter_factor: config.get(&options::EXP_DELAY_JITTER_FACTOR),
            attempts_before_reset_backoff: config.get(&options::EXP_DELAY_ATTEMPTS_BEFORE_RESET),
        },
    }
}
