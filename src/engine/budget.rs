//! Per-credential API budgets (governor): every request to a system first waits for a token from
//! that credential's burst and daily quotas, so prmsync stays under each vendor's documented limits.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::model::SystemKind;

/// A rate: `n` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: Duration,
}

/// The limits of one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Short-window limit (HubSpot: 100 per 10 s for OAuth apps and the lowest tiers).
    pub burst: Rate,
    /// Daily limit (HubSpot: 250,000 per day on the lowest tier).
    pub daily: Rate,
}

impl Limits {
    /// The documented limits for a system (the lowest published tier, to be safe; see
    /// CONTRACTS.md). A vendor tier with more room only makes prmsync more conservative.
    pub fn documented(system: SystemKind) -> Limits {
        const DAY: Duration = Duration::from_secs(86_400);
        match system {
            SystemKind::HubSpot => Limits {
                burst: Rate {
                    n: 100,
                    per: Duration::from_secs(10),
                },
                daily: Rate {
                    n: 250_000,
                    per: DAY,
                },
            },
            // No published number (a generic REST PRM neither); stay polite.
            SystemKind::PartnerStack | SystemKind::Rest => Limits {
                burst: Rate {
                    n: 10,
                    per: Duration::from_secs(1),
                },
                daily: Rate {
                    n: 200_000,
                    per: DAY,
                },
            },
            // Enterprise edition base allocation: 100,000 per 24 h.
            SystemKind::Salesforce => Limits {
                burst: Rate {
                    n: 25,
                    per: Duration::from_secs(1),
                },
                daily: Rate {
                    n: 100_000,
                    per: DAY,
                },
            },
        }
    }
}

fn quota(r: Rate) -> Quota {
    let n = NonZeroU32::new(r.n.max(1)).unwrap_or(NonZeroU32::MIN);
    let every = r.per / n.get();
    Quota::with_period(every.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

/// One credential's budget. Cheap to clone; clones share the quotas.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Limits,
    burst: Arc<DefaultDirectRateLimiter>,
    daily: Arc<DefaultDirectRateLimiter>,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            burst: Arc::new(RateLimiter::direct(quota(limits.burst))),
            daily: Arc::new(RateLimiter::direct(quota(limits.daily))),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Waits until one more request fits both quotas, then takes it; `true` if it had to wait.
    pub async fn acquire(&self) -> bool {
        // A `check` that passes takes its token; one that fails takes none, and the wait does.
        let mut waited = false;
        if self.daily.check().is_err() {
            waited = true;
            self.daily.until_ready().await;
        }
        if self.burst.check().is_err() {
            waited = true;
            self.burst.until_ready().await;
        }
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_budget_lets_the_burst_through_then_paces() {
        let b = Budget::new(Limits {
            burst: Rate {
                n: 5,
                per: Duration::from_millis(500),
            },
            daily: Rate {
                n: 1000,
                per: Duration::from_secs(86_400),
            },
        });
        let start = std::time::Instant::now();
        for _ in 0..5 {
            let _ = b.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(50),
            "the burst is free"
        );
        for _ in 0..5 {
            let _ = b.acquire().await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(450),
            "then 1 per 100 ms: {:?}",
            start.elapsed()
        );
    }
}
