//! Retry policy: bounded exponential backoff with jitter (backon), honouring a system's Retry-After.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::connector::ConnectorError;

/// How often and how patiently failed calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts for one outbox write before it goes to the dead letters.
    pub max_attempts: u32,
    /// Immediate retries of one read inside a poll.
    pub read_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            read_attempts: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
    }

    /// The wait before attempt `attempts + 1` of a write: the system's Retry-After when it gave
    /// one, else exponential backoff with jitter.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let mut backoff = self.builder().with_max_times(attempts as usize + 1).build();
        backoff.nth(attempts as usize).unwrap_or(self.max_delay)
    }

    /// Runs a read with a few quick retries on transient errors. A rate limit is not waited out
    /// here: it returns at once and the engine holds that system until Retry-After ends, so the
    /// other side keeps syncing meanwhile.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, ConnectorError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        let max = self.max_delay;
        f.retry(
            self.builder()
                .with_max_delay(Duration::from_secs(10).min(max))
                .with_max_times(self.read_attempts.saturating_sub(1)),
        )
        .when(|e| matches!(e, ConnectorError::Transient(_)))
        .adjust(move |e, dur| match e.retry_after() {
            Some(wait) => Some(wait.min(max)),
            None => dur,
        })
        .notify(|e, dur| tracing::debug!(error = %e, ?dur, "retrying read"))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_bounded_and_honour_retry_after() {
        let p = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        for attempt in 0..20 {
            let d = p.delay(attempt, None);
            assert!(d <= Duration::from_secs(10), "attempt {attempt}: {d:?}");
            assert!(d >= Duration::from_millis(100), "attempt {attempt}: {d:?}");
        }
        assert!(p.delay(6, None) >= Duration::from_millis(3200).min(Duration::from_secs(5)));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }
}
