//! Restart strategies: after a task failure, whether the job restarts (from
//! its latest completed checkpoint) and after what delay. The rules and
//! defaults are Flink's (its `RestartBackoffTimeStrategy` implementations);
//! the parameters come from `restart-strategy.*`. Time is passed in, so the
//! rules are tested on a manual clock.
//!
//! - fixed-delay: `attempts` restarts in the job's life, `delay` apart.
//! - failure-rate: a failure fails the job when it is the
//!   `max-failures-per-interval + 1`-th within `failure-rate-interval`.
//! - exponential-delay: the n-th restart since the last reset waits
//!   `initial-backoff * backoff-multiplier^(n-1)`, plus or minus
//!   `jitter-factor` of that, the sum kept within
//!   `initial-backoff..=max-backoff`.
//!   Once the job ran `reset-backoff-threshold` after a restart without
//!   failing, the count (and so the delay) starts over. More than
//!   `attempts-before-reset-backoff` restarts without a reset fail the job.
//!   A failure reported while a restart is still pending is the same
//!   incident, not a new attempt.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cairn_config::RestartStrategyConfig;

/// Tracks failures and decides on restarts for one job.
pub struct RestartPolicy {
    config: RestartStrategyConfig,
    /// Restarts granted so far (fixed-delay counts them all).
    restarts: u32,
    /// failure-rate: the latest failures, at most `max-failures-per-interval + 1`.
    recent_failures: VecDeque<Instant>,
    /// exponential-delay: restarts granted since the backoff was last reset.
    attempts_since_reset: u32,
    /// exponential-delay: when the last granted restart happens.
    next_restart: Option<Instant>,
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
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Self::with_seed(config, seed)
    }

    /// A policy whose jitter is drawn from a fixed seed (reproducible tests).
    pub fn with_seed(config: RestartStrategyConfig, seed: u64) -> Self {
        RestartPolicy {
            config,
            restarts: 0,
            recent_failures: VecDeque::new(),
            attempts_since_reset: 0,
            next_restart: None,
            rng: seed | 1,
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

    /// Restarts granted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
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
                self.recent_failures.push_back(now);
                while self.recent_failures.len() as u64 > u64::from(max_failures_per_interval) + 1 {
                    self.recent_failures.pop_front();
                }
                let full = self.recent_failures.len() as u64 > u64::from(max_failures_per_interval);
                let oldest = self.recent_failures.front().copied().unwrap_or(now);
                if full && now.saturating_duration_since(oldest) <= failure_rate_interval {
                    return RestartDecision::Fail(format!(
                        "{} failures within {} exceed restart-strategy.failure-rate.max-failures-per-interval ({max_failures_per_interval}) per restart-strategy.failure-rate.failure-rate-interval",
                        self.recent_failures.len(),
                        cairn_config::format_duration(failure_rate_interval),
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
                if let Some(at) = self.next_restart {
                    if now <= at {
                        // The restart for this incident is still pending.
                        return RestartDecision::RestartAfter(at - now);
                    }
                    // Ran long enough since that restart: start over.
                    if now - at >= reset_backoff_threshold {
                        self.attempts_since_reset = 0;
                    }
                }
                let initial = initial_backoff.as_secs_f64();
                let max = max_backoff.as_secs_f64().max(initial);
                let exponent = i32::try_from(self.attempts_since_reset).unwrap_or(i32::MAX);
                // As Flink: the jitter is a fraction of the unbounded delay, and
                // only the result is kept within initial..=max (so a delay past
                // the maximum stays at the maximum). Capped to stay finite.
                let base = (initial * backoff_multiplier.powi(exponent)).min(1e15);
                let jitter = base * jitter_factor * (2.0 * self.random() - 1.0);
                let delay = Duration::from_secs_f64((base + jitter).clamp(initial, max));
                self.attempts_since_reset += 1;
                if self.attempts_since_reset > attempts_before_reset_backoff {
                    return RestartDecision::Fail(format!(
                        "{} failures since the restart backoff was last reset (the job ran less than restart-strategy.exponential-delay.reset-backoff-threshold, {}, between them) exceed restart-strategy.exponential-delay.attempts-before-reset-backoff ({attempts_before_reset_backoff})",
                        self.attempts_since_reset,
                        cairn_config::format_duration(reset_backoff_threshold),
                    ));
                }
                self.next_restart = Some(now + delay);
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

    fn exponential(
        initial: u64,
        max: u64,
        multiplier: f64,
        reset: u64,
        jitter: f64,
        attempts: u32,
    ) -> RestartStrategyConfig {
        RestartStrategyConfig::ExponentialDelay {
            initial_backoff: ms(initial),
            max_backoff: ms(max),
            backoff_multiplier: multiplier,
            reset_backoff_threshold: ms(reset),
            jitter_factor: jitter,
            attempts_before_reset_backoff: attempts,
        }
    }

    /// A manual clock driving a policy: each failure happens `running` after
    /// the restart the previous decision scheduled.
    struct Run {
        policy: RestartPolicy,
        now: Instant,
    }

    impl Run {
        fn new(config: RestartStrategyConfig) -> Self {
            Run {
                policy: RestartPolicy::with_seed(config, 42),
                now: Instant::now(),
            }
        }
        /// Fail; on a restart, advance the clock by the delay (the restart).
        fn fail(&mut self) -> RestartDecision {
            let d = self.policy.on_failure(self.now);
            if let RestartDecision::RestartAfter(delay) = d {
                self.now += delay;
            }
            d
        }
        fn run_for(&mut self, d: Duration) {
            self.now += d;
        }
        fn delay_ms(&mut self) -> u128 {
            match self.fail() {
                RestartDecision::RestartAfter(d) => d.as_millis(),
                other => panic!("{other:?}"),
            }
        }
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
        assert_eq!(p.restarts(), 2);
    }

    #[test]
    fn failure_rate_fails_on_one_failure_more_than_allowed_within_the_interval() {
        let config = RestartStrategyConfig::FailureRate {
            max_failures_per_interval: 2,
            failure_rate_interval: ms(1000),
            delay: ms(3),
        };
        let mut p = RestartPolicy::new(config.clone());
        let t0 = Instant::now();
        assert_eq!(p.on_failure(t0), RestartDecision::RestartAfter(ms(3)));
        assert_eq!(p.on_failure(t0 + ms(10)), RestartDecision::RestartAfter(ms(3)));
        // A third failure within the interval is one too many...
        assert!(matches!(p.on_failure(t0 + ms(1000)), RestartDecision::Fail(_)));
        // ...but spaced out, failures keep restarting.
        let mut p = RestartPolicy::new(config);
        for i in 0..10 {
            assert_eq!(p.on_failure(t0 + ms(501 * i)), RestartDecision::RestartAfter(ms(3)));
        }
    }

    /// Flink's documented example: initial 1 s, multiplier 2, max 10 s, no
    /// jitter: the delays are 1, 2, 4, 8, 10, 10 s.
    #[test]
    fn exponential_delay_follows_flinks_documented_example() {
        let mut run = Run::new(exponential(1000, 10_000, 2.0, 3_600_000, 0.0, u32::MAX));
        let mut delays = Vec::new();
        for _ in 0..6 {
            delays.push(run.delay_ms());
            run.run_for(ms(100));
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 8000, 10_000, 10_000]);
    }

    /// Flink 1.19+'s defaults: 1 s, 1.5 s, 2.25 s, ... up to 1 min.
    #[test]
    fn exponential_delay_with_flink_defaults_grows_by_half() {
        let mut run = Run::new(exponential(1000, 60_000, 1.5, 3_600_000, 0.0, i32::MAX as u32));
        let delays: Vec<u128> = (0..12)
            .map(|_| {
                let d = run.delay_ms();
                run.run_for(ms(50));
                d
            })
            .collect();
        assert_eq!(&delays[..5], &[1000, 1500, 2250, 3375, 5062]);
        assert_eq!(*delays.last().unwrap(), 60_000);
        // A storm of failures restarts a handful of times per minute, not
        // every second: ~7 restarts in the first 30 s of failing.
        let mut run = Run::new(exponential(1000, 60_000, 1.5, 3_600_000, 0.0, i32::MAX as u32));
        let start = run.now;
        let mut restarts = 0;
        while run.now - start < Duration::from_secs(30) {
            run.fail();
            run.run_for(ms(100));
            restarts += 1;
        }
        assert!(restarts <= 8, "{restarts} restarts in 30 s");
    }

    /// The threshold is measured from the restart (the time the job actually
    /// ran), not from the previous failure.
    #[test]
    fn exponential_delay_resets_after_running_the_threshold_since_the_restart() {
        let mut run = Run::new(exponential(1000, 60_000, 2.0, 10_000, 0.0, u32::MAX));
        assert_eq!(run.delay_ms(), 1000);
        run.run_for(ms(100));
        assert_eq!(run.delay_ms(), 2000);
        // 10 s after the previous failure, but only 8 s of running: no reset.
        run.run_for(ms(8000));
        assert_eq!(run.delay_ms(), 4000);
        // Running exactly the threshold resets.
        run.run_for(ms(10_000));
        assert_eq!(run.delay_ms(), 1000);
        run.run_for(ms(9_999));
        assert_eq!(run.delay_ms(), 2000);
    }

    #[test]
    fn a_failure_while_a_restart_is_pending_is_the_same_incident() {
        let mut p = RestartPolicy::with_seed(exponential(1000, 60_000, 2.0, 10_000, 0.0, 2), 1);
        let t0 = Instant::now();
        assert_eq!(p.on_failure(t0), RestartDecision::RestartAfter(ms(1000)));
        assert_eq!(p.on_failure(t0 + ms(400)), RestartDecision::RestartAfter(ms(600)));
        assert_eq!(p.restarts(), 1);
        // After the restart, the next failure is the second attempt.
        assert_eq!(p.on_failure(t0 + ms(1500)), RestartDecision::RestartAfter(ms(2000)));
        assert_eq!(p.restarts(), 2);
    }

    #[test]
    fn exponential_delay_jitter_stays_within_initial_and_max() {
        let mut run = Run::new(exponential(1000, 1000, 1.5, 60_000, 0.1, u32::MAX));
        for _ in 0..20 {
            assert_eq!(run.delay_ms(), 1000, "jitter never leaves initial..=max");
            run.run_for(ms(10));
        }
        let mut run = Run::new(exponential(100, 100_000, 2.0, 3_600_000, 0.5, u32::MAX));
        let mut seen_below = false;
        let mut seen_above = false;
        for n in 0..10 {
            let base = 100.0 * 2f64.powi(n);
            let d = run.delay_ms() as f64;
            assert!(
                d >= (base * 0.5).max(100.0) - 1.0 && d <= base * 1.5 + 1.0,
                "attempt {n}: {d} vs {base}"
            );
            seen_below |= d < base;
            seen_above |= d > base;
            run.run_for(ms(10));
        }
        assert!(seen_below && seen_above, "the jitter goes both ways");
    }

    /// Once the unbounded delay is far past the maximum, the jitter (a
    /// fraction of the unbounded delay, as in Flink) cannot pull it below.
    #[test]
    fn exponential_delay_past_the_maximum_stays_at_the_maximum_despite_jitter() {
        let mut run = Run::new(exponential(1000, 8000, 2.0, 3_600_000, 0.25, u32::MAX));
        let delays: Vec<u128> = (0..12)
            .map(|_| {
                let d = run.delay_ms();
                run.run_for(ms(10));
                d
            })
            .collect();
        // From the 6th restart on the unbounded delay is >= 32 s, 75% of
        // which is still above 8 s.
        assert!(delays[5..].iter().all(|d| *d == 8000), "{delays:?}");
    }

    #[test]
    fn exponential_delay_attempts_before_reset_are_limited_and_reset_with_the_backoff() {
        let mut run = Run::new(exponential(10, 1000, 2.0, 60_000, 0.0, 3));
        for _ in 0..3 {
            run.delay_ms();
            run.run_for(ms(5));
        }
        match run.fail() {
            RestartDecision::Fail(why) => {
                assert!(why.contains("attempts-before-reset-backoff (3)"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let mut run = Run::new(exponential(10, 1000, 2.0, 60_000, 0.0, 2));
        run.delay_ms();
        run.run_for(ms(5));
        run.delay_ms();
        run.run_for(ms(60_000));
        assert_eq!(run.delay_ms(), 10, "a reset backoff also resets the attempts");
        run.run_for(ms(5));
        assert_eq!(run.delay_ms(), 20);
    }
}
