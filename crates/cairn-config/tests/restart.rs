//! Restart-strategy defaulting and parameters.

use std::time::Duration;

use cairn_config::{effective_restart_strategy, Configuration, RestartStrategyConfig};

fn conf(pairs: &[(&str, &str)]) -> Configuration {
    let mut c = Configuration::new();
    for (k, v) in pairs {
        c.set(k, v).unwrap();
    }
    c
}

fn default_exponential() -> RestartStrategyConfig {
    RestartStrategyConfig::ExponentialDelay {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
        backoff_multiplier: 1.5,
        reset_backoff_threshold: Duration::from_secs(3600),
        jitter_factor: 0.1,
        attempts_before_reset_backoff: i32::MAX as u32,
    }
}

#[test]
fn unset_without_checkpointing_is_no_restart() {
    assert_eq!(
        effective_restart_strategy(&Configuration::new()),
        RestartStrategyConfig::NoRestart
    );
}

#[test]
fn unset_with_checkpointing_is_exponential_delay_with_flink_defaults() {
    let c = conf(&[("execution.checkpointing.interval", "10 s")]);
    assert_eq!(effective_restart_strategy(&c), default_exponential());
}

#[test]
fn explicit_type_wins_over_the_checkpointing_rule() {
    for none in ["none", "off", "disable", "NONE"] {
        let c = conf(&[
            ("execution.checkpointing.interval", "10 s"),
            ("restart-strategy.type", none),
        ]);
        assert_eq!(effective_restart_strategy(&c), RestartStrategyConfig::NoRestart);
    }
    let c = conf(&[("restart-strategy.type", "exponentialdelay")]);
    assert_eq!(effective_restart_strategy(&c), default_exponential());
}

#[test]
fn fixed_delay_defaults_and_overrides() {
    for name in ["fixed-delay", "fixeddelay"] {
        let c = conf(&[("restart-strategy.type", name)]);
        assert_eq!(
            effective_restart_strategy(&c),
            RestartStrategyConfig::FixedDelay {
                attempts: 1,
                delay: Duration::from_secs(1)
            }
        );
    }
    let c = conf(&[
        ("restart-strategy", "fixed-delay"), // Flink's deprecated key
        ("restart-strategy.fixed-delay.attempts", "5"),
        ("restart-strategy.fixed-delay.delay", "30 s"),
    ]);
    assert_eq!(
        effective_restart_strategy(&c),
        RestartStrategyConfig::FixedDelay {
            attempts: 5,
            delay: Duration::from_secs(30)
        }
    );
}

#[test]
fn failure_rate_defaults_and_overrides() {
    let c = conf(&[("restart-strategy.type", "failurerate")]);
    assert_eq!(
        effective_restart_strategy(&c),
        RestartStrategyConfig::FailureRate {
            max_failures_per_interval: 1,
            failure_rate_interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        }
    );
    let c = conf(&[
        ("restart-strategy.type", "failure-rate"),
        ("restart-strategy.failure-rate.max-failures-per-interval", "3"),
        ("restart-strategy.failure-rate.failure-rate-interval", "5 min"),
        ("restart-strategy.failure-rate.delay", "10 s"),
    ]);
    assert_eq!(
        effective_restart_strategy(&c),
        RestartStrategyConfig::FailureRate {
            max_failures_per_interval: 3,
            failure_rate_interval: Duration::from_secs(300),
            delay: Duration::from_secs(10),
        }
    );
}

#[test]
fn exponential_delay_overrides() {
    let c = conf(&[
        ("restart-strategy.type", "exponential-delay"),
        ("restart-strategy.exponential-delay.initial-backoff", "100 ms"),
        ("restart-strategy.exponential-delay.max-backoff", "2 min"),
        ("restart-strategy.exponential-delay.backoff-multiplier", "2"),
        ("restart-strategy.exponential-delay.reset-backoff-threshold", "10 min"),
        ("restart-strategy.exponential-delay.jitter-factor", "0.25"),
        ("restart-strategy.exponential-delay.attempts-before-reset-backoff", "7"),
    ]);
    assert_eq!(
        effective_restart_strategy(&c),
        RestartStrategyConfig::ExponentialDelay {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(120),
            backoff_multiplier: 2.0,
            reset_backoff_threshold: Duration::from_secs(600),
            jitter_factor: 0.25,
            attempts_before_reset_backoff: 7,
        }
    );
}

#[test]
fn an_initial_backoff_above_the_maximum_is_refused_naming_both_keys() {
    let c = conf(&[
        ("restart-strategy.type", "exponential-delay"),
        ("restart-strategy.exponential-delay.initial-backoff", "2 min"),
        ("restart-strategy.exponential-delay.max-backoff", "1 min"),
    ]);
    let e = effective_restart_strategy(&c).check().unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("restart-strategy.exponential-delay.initial-backoff") && m.contains("2 min"),
        "{m}"
    );
    assert!(
        m.contains("restart-strategy.exponential-delay.max-backoff") && m.contains("1 min"),
        "{m}"
    );
    assert!(default_exponential().check().is_ok());
}
