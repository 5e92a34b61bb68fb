//! The pacer every connector request goes through (`connector::send`): per-credential budgets
//! (governor) for the vendor's short window, its daily quota and HubSpot's search lane, and the
//! hold a 429 puts on the whole system, inside which no request is sent.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::ConnectorError;
use crate::model::SystemKind;

/// A rate: at most `n` requests in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: Duration,
}

/// The limits of one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Short-window limit, enforced by the vendor over a rolling window (HubSpot: 100 per 10 s
    /// for OAuth apps and the lowest tiers).
    pub burst: Rate,
    /// Daily limit (HubSpot: 250,000 per day on the lowest tier).
    pub daily: Rate,
    /// A separate limit for searches, which the short window does not count (HubSpot: four
    /// per second per token); `None` when searches are ordinary requests.
    pub search: Option<Rate>,
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
                search: Some(Rate {
                    n: 4,
                    per: Duration::from_secs(1),
                }),
            },
            // No published number (a generic REST PRM neither; `rest.rate_limit_per_second`
            // sets its own). PartnerStack writes are one PATCH per deal (and a read before one
            // that carries custom fields), so this is also how fast write-backs go.
            SystemKind::PartnerStack | SystemKind::Rest => Limits {
                burst: Rate {
                    n: 25,
                    per: Duration::from_secs(1),
                },
                daily: Rate {
                    n: 200_000,
                    per: DAY,
                },
                search: None,
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
                search: None,
            },
        }
    }

    /// These limits with the short window replaced (a tier's or a profile's own number).
    pub fn with_burst(self, burst: Rate) -> Limits {
        Limits { burst, ..self }
    }
}

/// A quota that never lets more than `r.n` requests into any rolling window of `r.per`, even
/// when requests reach the vendor up to a twentieth of the window later or earlier than they
/// left: a burst of `b = n/20` (at least one) and then one request every
/// `(per + per/20) / (n - b + 1)`. Any window then holds at most `b - 1` plus the requests of
/// `per + per/20` at that spacing, which is `n`. The sustained rate is 91-95 % of `n / per`.
fn rolling_quota(r: Rate) -> Quota {
    let (burst, every) = rolling(r);
    Quota::with_period(every.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// The burst and the spacing of [`rolling_quota`].
fn rolling(r: Rate) -> (u32, Duration) {
    let n = r.n.max(1);
    let burst = (n / 20).max(1);
    let span = r.per + r.per / 20;
    (burst, span / (n - burst + 1))
}

/// A bucket of `r.n` refilled evenly over `r.per` (the daily quota).
fn bucket_quota(r: Rate) -> Quota {
    let n = NonZeroU32::new(r.n.max(1)).unwrap_or(NonZeroU32::MIN);
    let every = r.per / n.get();
    Quota::with_period(every.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

/// Which budget a request spends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Ordinary API calls: the short window and the daily quota.
    Call,
    /// A search (HubSpot): its own lane and the daily quota, not the short window.
    Search,
}

/// One connection's pacer. Cheap to clone; clones share the budgets and the hold.
#[derive(Debug, Clone)]
pub struct Pacer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    system: SystemKind,
    /// The credential's budgets; a new credential brings new ones ([`Pacer::renew`]).
    budgets: std::sync::RwLock<Arc<Budgets>>,
    /// No request is sent before this instant (the system answered 429).
    hold_until: Mutex<Option<Instant>>,
}

/// The budgets of one credential.
#[derive(Debug)]
struct Budgets {
    limits: Limits,
    burst: DefaultDirectRateLimiter,
    daily: DefaultDirectRateLimiter,
    search: Option<DefaultDirectRateLimiter>,
}

impl Budgets {
    fn new(limits: Limits) -> Arc<Budgets> {
        Arc::new(Budgets {
            limits,
            burst: RateLimiter::direct(rolling_quota(limits.burst)),
            daily: RateLimiter::direct(bucket_quota(limits.daily)),
            search: limits.search.map(|s| RateLimiter::direct(rolling_quota(s))),
        })
    }
}

impl Pacer {
    pub fn new(system: SystemKind, limits: Limits) -> Pacer {
        Pacer {
            inner: Arc::new(Inner {
                system,
                budgets: std::sync::RwLock::new(Budgets::new(limits)),
                hold_until: Mutex::new(None),
            }),
        }
    }

    fn budgets(&self) -> Arc<Budgets> {
        self.inner
            .budgets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new credential took over the connection: its requests spend from budgets of its own,
    /// with `limits` (the reloaded config's tier), from the next request on; requests already
    /// waiting finish on the old ones. A hold in force stays: the vendor asked the connection
    /// to wait, and its daily and per-org limits outlive a credential.
    pub fn renew(&self, limits: Limits) {
        *self
            .inner
            .budgets
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Budgets::new(limits);
    }

    /// A pacer with the system's documented limits.
    pub fn documented(system: SystemKind) -> Pacer {
        Pacer::new(system, Limits::documented(system))
    }

    pub fn system(&self) -> SystemKind {
        self.inner.system
    }

    pub fn limits(&self) -> Limits {
        self.budgets().limits
    }

    /// What is left of the hold, if the system asked to wait.
    pub fn held_for(&self) -> Option<Duration> {
        let mut hold = self
            .inner
            .hold_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *hold {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                *hold = None;
                None
            }
            None => None,
        }
    }

    /// Holds the whole system for `wait` from now (a longer hold in force is kept).
    pub fn hold(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut hold = self
            .inner
            .hold_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    /// Lifts the hold (an operator or a test that knows the wait is over).
    pub fn release(&self) {
        *self
            .inner
            .hold_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Holds the system when `error` is a rate limit (the wait it names); returns the error.
    pub fn note(&self, error: ConnectorError) -> ConnectorError {
        if let Some(wait) = error.retry_after() {
            self.hold(wait);
        }
        error
    }

    /// The error for a request not sent because the system is on hold.
    fn refused(&self, wait: Duration) -> ConnectorError {
        ConnectorError::RateLimited {
            retry_after: wait,
            detail: format!(
                "not sent: {} asked to wait (Retry-After) {} ms more",
                self.inner.system,
                wait.as_millis()
            ),
        }
    }

    /// Waits until one more request of `lane` fits its budgets and takes it. Fails at once,
    /// sending nothing, while the system is on hold (also when a hold begins during the wait).
    pub async fn admit(&self, lane: Lane) -> Result<(), ConnectorError> {
        if let Some(wait) = self.held_for() {
            return Err(self.refused(wait));
        }
        let budgets = self.budgets();
        let mut waited = false;
        // A `check` that passes takes its token; one that fails takes none, and the wait does.
        let short = match lane {
            Lane::Search => budgets.search.as_ref().unwrap_or(&budgets.burst),
            Lane::Call => &budgets.burst,
        };
        if short.check().is_err() {
            waited = true;
            short.until_ready().await;
        }
        if budgets.daily.check().is_err() {
            waited = true;
            budgets.daily.until_ready().await;
        }
        if waited {
            crate::telemetry::meters::meters().rate_limit_wait(self.inner.system, "budget");
        }
        match self.held_for() {
            Some(wait) => Err(self.refused(wait)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tight(n: u32, per_ms: u64) -> Limits {
        Limits {
            burst: Rate {
                n,
                per: Duration::from_millis(per_ms),
            },
            daily: Rate {
                n: 100_000,
                per: Duration::from_secs(86_400),
            },
            search: None,
        }
    }

    /// Times at which `count` requests were admitted, from the first.
    async fn admitted(p: &Pacer, count: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut at = Vec::with_capacity(count);
        for _ in 0..count {
            p.admit(Lane::Call).await.expect("not held");
            at.push(start.elapsed());
        }
        at
    }

    #[tokio::test]
    async fn no_rolling_window_holds_more_than_the_limit() {
        let limit = tight(10, 200);
        let p = Pacer::new(SystemKind::HubSpot, limit);
        let at = admitted(&p, 25).await;
        // Any 10 + 1 consecutive requests span more than the window and its margin of a
        // twentieth, so no rolling window sees 11 even if each arrives 5 ms off.
        for w in at.windows(11) {
            let span = w[10] - w[0];
            assert!(span >= Duration::from_millis(200), "{at:?}");
        }
    }

    #[test]
    fn the_sustained_rate_is_at_least_nine_tenths_of_the_limit() {
        for (n, per) in [
            (10, 1_000),
            (100, 10_000),
            (190, 10_000),
            (4, 1_000),
            (25, 1_000),
        ] {
            let r = Rate {
                n,
                per: Duration::from_millis(per),
            };
            let (burst, every) = rolling(r);
            let sustained = r.per.as_secs_f64() / every.as_secs_f64();
            assert!(
                sustained >= 0.9 * f64::from(n) && sustained <= f64::from(n),
                "{n} per {per} ms: {sustained:.2} per window"
            );
            // The burst and the requests that fit one window stay within n.
            let fit = (r.per.as_secs_f64() / every.as_secs_f64()).ceil() as u32;
            assert!(burst - 1 + fit <= n, "{n} per {per} ms: {burst} + {fit}");
        }
    }

    #[tokio::test]
    async fn a_hold_refuses_without_sending_until_it_ends() {
        let p = Pacer::new(SystemKind::PartnerStack, tight(1000, 1000));
        p.admit(Lane::Call).await.expect("free");
        let e = p.note(ConnectorError::RateLimited {
            retry_after: Duration::from_secs(30),
            detail: "429".into(),
        });
        assert!(e.retry_after().is_some());
        let refused = p.admit(Lane::Call).await.expect_err("held");
        assert!(
            matches!(refused, ConnectorError::RateLimited { retry_after, .. } if retry_after > Duration::from_secs(29)),
            "{refused:?}"
        );
        // A shorter wait never shortens the hold.
        p.hold(Duration::from_millis(1));
        assert!(p.held_for().is_some_and(|w| w > Duration::from_secs(29)));
        // Other errors hold nothing.
        let q = Pacer::new(SystemKind::HubSpot, tight(1000, 1000));
        let _ = q.note(ConnectorError::Transient("503".into()));
        assert_eq!(q.held_for(), None);
        q.hold(Duration::ZERO);
        q.admit(Lane::Call).await.expect("an ended hold is gone");
    }

    #[tokio::test]
    async fn a_renewed_pacer_has_the_new_budgets_and_keeps_the_hold() {
        let p = Pacer::new(SystemKind::HubSpot, tight(1, 60_000));
        let clone = p.clone();
        p.admit(Lane::Call).await.expect("the one call");
        p.hold(Duration::from_secs(30));
        clone.renew(tight(1000, 1000));
        assert_eq!(p.limits(), tight(1000, 1000), "clones share the renewal");
        assert!(p.held_for().is_some(), "the hold outlives the credential");
        p.release();
        for _ in 0..20 {
            // The old budget is spent for a minute; the new one has room at once.
            tokio::time::timeout(Duration::from_secs(5), p.admit(Lane::Call))
                .await
                .expect("the new budget")
                .expect("not held");
        }
    }

    #[tokio::test]
    async fn searches_have_their_own_lane() {
        let mut limits = tight(1, 60_000);
        limits.search = Some(Rate {
            n: 1000,
            per: Duration::from_secs(1),
        });
        let p = Pacer::new(SystemKind::HubSpot, limits);
        p.admit(Lane::Call).await.expect("the one call");
        for _ in 0..20 {
            // The call lane is spent for a minute; searches still go.
            tokio::time::timeout(Duration::from_secs(5), p.admit(Lane::Search))
                .await
                .expect("searches do not wait for the call lane")
                .expect("not held");
        }
    }
}
