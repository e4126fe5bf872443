//! Restart strategies: after a task failure, whether the job restarts (from
//! its latest completed checkpoint) and after what delay. The rules and
//! defaults are Flink's; the parameters come from `restart-strategy.*`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cairn_config::RestartStrategyConfig;

/// Tracks failures and decides on restarts for one job.
pub struct RestartPolicy {
    config: RestartStrategyConfig,
    /// Restarts granted so far (fixed-delay counts them all).
    restarts: u32,
    /// Failure times inside the failure-rate window.
    recent_failures: VecDeque<Instant>,
    /// exponential-delay: the backoff the next restart waits.
    current_backoff: Duration,
    /// exponential-delay: restarts since the backoff was last reset.
    attempts_since_reset: u32,
    last_failure: Option<Instant>,
    rng: u64,
}

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartDecision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Give up: the job fails, with the reason.
    Fail(String),
}

impl RestartPolicy {
    pub fn new(config: RestartStrategyConfig) -> Self {
        let initial = match &config {
            RestartStrategyConfig::ExponentialDelay { initial_backoff, .. } => *initial_backoff,
            _ => Duration::ZERO,
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        RestartPolicy {
            config,
            restarts: 0,
            recent_failures: VecDeque::new(),
            current_backoff: initial,
            attempts_since_reset: 0,
            last_failure: None,
            rng: seed,
        }
    }

    /// The strategy's name as in `restart-strategy.type`.
    pub fn name(&self) -> &'static str {
        match self.config {
            RestartStrategyConfig::NoRestart => "none",
            RestartStrategyConfig::FixedDelay { .. } => "fixed-delay",
            RestartStrategyConfig::FailureRate { .. } => "failure-rate",
            RestartStrategyConfig::ExponentialDelay { .. } => "exponential-delay",
        }
    }

    /// A uniform random number in [0, 1).
    fn random(&mut self) -> f64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A failure happened at `now`: decide.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        let since_last = self.last_failure.map(|t| now.saturating_duration_since(t));
        self.last_failure = Some(now);
        match self.config.clone() {
            RestartStrategyConfig::NoRestart => {
                RestartDecision::Fail("restart-strategy.type is none: the job does not restart after a failure".into())
            }
            RestartStrategyConfig::FixedDelay { attempts, delay } => {
                if self.restarts >= attempts {
                    return RestartDecision::Fail(format!(
                        "the fixed-delay restart strategy allows {attempts} restart(s) (restart-strategy.fixed-delay.attempts) and all were used"
                    ));
                }
                self.restarts += 1;
                RestartDecision::RestartAfter(delay)
            }
            RestartStrategyConfig::FailureRate {
                max_failures_per_interval,
                failure_rate_interval,
                delay,
            } => {
                while self
                    .recent_failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > failure_rate_interval)
                {
                    self.recent_failures.pop_front();
                }
                self.recent_failures.push_back(now);
                if self.recent_failures.len() as u64 > u64::from(max_failures_per_interval) {
                    return RestartDecision::Fail(format!(
                        "{} failures within {:?} exceed restart-strategy.failure-rate.max-failures-per-interval ({max_failures_per_interval})",
                        self.recent_failures.len(),
                        failure_rate_interval
                    ));
                }
                self.restarts += 1;
                RestartDecision::RestartAfter(delay)
            }
            RestartStrategyConfig::ExponentialDelay {
                initial_backoff,
                max_backoff,
                backoff_multiplier,
                reset_backoff_threshold,
                jitter_factor,
                attempts_before_reset_backoff,
            } => {
                // Running long enough without failure resets the backoff.
                if since_last.is_some_and(|d| d >= reset_backoff_threshold) {
                    self.current_backoff = initial_backoff;
                    self.attempts_since_reset = 0;
                }
                if self.attempts_since_reset >= attempts_before_reset_backoff {
                    return RestartDecision::Fail(format!(
                        "{} restarts without a pause of restart-strategy.exponential-delay.reset-backoff-threshold ({:?}) exceed restart-strategy.exponential-delay.attempts-before-reset-backoff ({attempts_before_reset_backoff})",
                        self.attempts_since_reset, reset_backoff_threshold
                    ));
                }
                let base = self.current_backoff.min(max_backoff);
                let jitter = base.as_secs_f64() * jitter_factor * (2.0 * self.random() - 1.0);
                let delay = Duration::from_secs_f64((base.as_secs_f64() + jitter).max(0.0)).min(max_backoff);
                self.current_backoff = Duration::from_secs_f64(
                    (self.current_backoff.as_secs_f64() * backoff_multiplier).min(max_backoff.as_secs_f64()),
                );
                self.attempts_since_reset += 1;
                self.restarts += 1;
                RestartDecision::RestartAfter(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn none_never_restarts() {
        let mut p = RestartPolicy::new(RestartStrategyConfig::NoRestart);
        assert!(matches!(p.on_failure(Instant::now()), RestartDecision::Fail(_)));
    }

    #[test]
    fn fixed_delay_counts_attempts() {
        let mut p = RestartPolicy::new(RestartStrategyConfig::FixedDelay {
            attempts: 2,
            delay: ms(7),
        });
        let now = Instant::now();
        assert_eq!(p.on_failure(now), RestartDecision::RestartAfter(ms(7)));
        assert_eq!(p.on_failure(now), RestartDecision::RestartAfter(ms(7)));
        match p.on_failure(now) {
            RestartDecision::Fail(why) => assert!(why.contains("restart-strategy.fixed-delay.attempts"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_rate_forgets_old_failures() {
        let mut p = RestartPolicy::new(RestartStrategyConfig::FailureRate {
            max_failures_per_interval: 2,
            failure_rate_interval: ms(1000),
            delay: ms(3),
        });
        let t0 = Instant::now();
        assert_eq!(p.on_failure(t0), RestartDecision::RestartAfter(ms(3)));
        assert_eq!(p.on_failure(t0 + ms(10)), RestartDecision::RestartAfter(ms(3)));
        // A third failure within the interval is one too many...
        assert!(matches!(p.on_failure(t0 + ms(20)), RestartDecision::Fail(_)));
        // ...but spaced out, failures keep restarting.
        let mut p = RestartPolicy::new(RestartStrategyConfig::FailureRate {
            max_failures_per_interval: 2,
            failure_rate_interval: ms(1000),
            delay: ms(3),
        });
        for i in 0..10 {
            assert_eq!(p.on_failure(t0 + ms(600 * i)), RestartDecision::RestartAfter(ms(3)));
        }
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets() {
        let mut p = RestartPolicy::new(RestartStrategyConfig::ExponentialDelay {
            initial_backoff: ms(100),
            max_backoff: ms(1000),
            backoff_multiplier: 2.0,
            reset_backoff_threshold: ms(60_000),
            jitter_factor: 0.0,
            attempts_before_reset_backoff: 100,
        });
        let t0 = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|i| match p.on_failure(t0 + ms(i)) {
                RestartDecision::RestartAfter(d) => d.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        // A long quiet period resets the backoff.
        assert_eq!(p.on_failure(t0 + ms(120_000)), RestartDecision::RestartAfter(ms(100)));
    }

    #[test]
    fn exponential_delay_jitter_stays_in_bounds_and_attempts_are_limited() {
        let mut p = RestartPolicy::new(RestartStrategyConfig::ExponentialDelay {
            initial_backoff: ms(1000),
            max_backoff: ms(1000),
            backoff_multiplier: 1.5,
            reset_backoff_threshold: ms(60_000),
            jitter_factor: 0.1,
            attempts_before_reset_backoff: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            match p.on_failure(t0) {
                RestartDecision::RestartAfter(d) => assert!((900..=1000).contains(&d.as_millis()), "{d:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(p.on_failure(t0), RestartDecision::Fail(_)));
    }
}
