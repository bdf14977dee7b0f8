//! Reconnect policy: how long a stream waits before retrying a transient failure, and when it
//! gives up.

use std::time::Duration;

use rand::Rng;

use crate::error::SourceError;

/// Exponential backoff with jitter for reconnects inside a stream.
///
/// Only retryable errors ([`SourceError::is_retryable`]) are retried; the stream gives up after
/// `max_attempts` consecutive failures or `give_up_after` without a successful reconnect,
/// whichever comes first, and then returns the last error to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Fraction of each delay randomized (0 = none, 0.5 = ±50 %).
    pub jitter: f64,
    /// Consecutive failed attempts after which the stream fails; `None` = no limit.
    pub max_attempts: Option<u32>,
    /// Time without a successful reconnect after which the stream fails; `None` = no limit.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
            give_up_after: Some(Duration::from_secs(15 * 60)),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: Some(0),
            ..Self::default()
        }
    }

    /// A fresh backoff state for one outage.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: self.clone(),
            attempt: 0,
            started: std::time::Instant::now(),
        }
    }
}

/// The state of one outage: call [`Backoff::next_delay`] after each failure, drop it after a
/// success.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    started: std::time::Instant,
}

impl Backoff {
    /// The delay before the next attempt after `error`, or `None` if the stream must give up
    /// (the error is not retryable, or a limit is reached).
    pub fn next_delay(&mut self, error: &SourceError) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        if self.policy.max_attempts.is_some_and(|m| self.attempt >= m) {
            return None;
        }
        if self
            .policy
            .give_up_after
            .is_some_and(|g| self.started.elapsed() >= g)
        {
            return None;
        }
        let base = self.policy.initial_delay.as_secs_f64()
            * self
                .policy
                .multiplier
                .max(1.0)
                .powi(self.attempt.min(64) as i32);
        let base = base.min(self.policy.max_delay.as_secs_f64());
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        self.attempt += 1;
        Some(Duration::from_secs_f64(
            (base * factor).min(self.policy.max_delay.as_secs_f64()),
        ))
    }

    /// Attempts made so far in this outage.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}
