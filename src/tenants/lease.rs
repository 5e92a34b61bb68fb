//! Fleet mode: this daemon's side of the tenant leases. Every heartbeat (a third of the lease)
//! renews the leases it holds and claims free or expired ones up to its fair share; a tenant's
//! pipeline runs only while its lease is held, and its store's fence carries the generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::StoreError;
use crate::store::pg::PgTarget;
use crate::store::pg::fleet::{Fence, Heartbeat, Leases, TENANT_STREAM};

/// This daemon's handle on the fleet's leases.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub leases: Leases,
    /// This daemon's id in the lease table: host, process id and start time, so a restarted
    /// daemon never mistakes its predecessor's leases for its own.
    pub me: String,
    pub lease: Duration,
}

impl Keeper {
    /// Connects to the fleet's schema (`state.schema`), creating its lease table.
    pub fn open(target: &PgTarget, lease: Duration) -> Result<Keeper, StoreError> {
        Ok(Keeper {
            leases: Leases::open(target, lease)?,
            me: daemon_id(),
            lease,
        })
    }

    /// How often the heartbeat runs: three beats per lease.
    pub fn every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(100))
    }

    /// A tenant's fence, unarmed until [`Fence::set`] (its start-up writes pass).
    pub fn fence(&self, tenant: &str) -> Arc<Fence> {
        Fence::new(
            self.leases.schema(),
            tenant,
            TENANT_STREAM,
            &self.me,
            self.lease,
        )
    }

    /// One heartbeat for `tenants`, bounded by a beat: a heartbeat that could not reach the
    /// database in time is an error (the caller stops the tenants whose lease may have run out),
    /// and a queued one that starts too late does nothing.
    pub async fn beat(&self, tenants: Vec<String>) -> Result<Heartbeat, StoreError> {
        let limit = self.every();
        let started = Instant::now();
        match tokio::time::timeout(
            limit,
            self.leases
                .heartbeat_until(self.me.clone(), tenants, self.lease, started + limit),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(StoreError::PgConnect(format!(
                "no answer to the lease heartbeat within {limit:?}"
            ))),
        }
    }
}

/// `host-pid-startmillis`.
fn daemon_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "prmsync".to_owned());
    let started = jiff::Timestamp::now().as_millisecond();
    format!("{host}-{}-{started}", std::process::id())
}

/// The tenant's lease as this daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Not held: the tenant's pipeline does not run here.
    No,
    /// Held at this generation; the lease surely lasts until `until` (measured from the start of
    /// the heartbeat that renewed it).
    Yes { generation: i64, until: Instant },
}

/// What to do with one tenant after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start its pipeline at this generation.
    Start(i64),
    /// Stop its pipeline: the lease is lost (another daemon may hold it now).
    Stop,
    /// Stop its pipeline and give the lease back (this daemon holds more than its share).
    Release(i64),
    /// Nothing changes.
    Keep,
}

/// Decides each tenant's step from a heartbeat's answer (pure; `held` is in tenant order).
/// Releases the leases beyond the fair share, newest claims first, when there are any.
pub fn steps(held: &[(String, Held)], beat: &Heartbeat) -> Vec<(String, Step)> {
    let now_held: std::collections::BTreeMap<&str, i64> = beat
        .held
        .iter()
        .chain(&beat.claimed)
        .map(|(t, g)| (t.as_str(), *g))
        .collect();
    let mut surplus = now_held.len().saturating_sub(beat.fair_share);
    let mut out = Vec::new();
    for (tenant, was) in held {
        let step = match (was, now_held.get(tenant.as_str())) {
            (Held::No, Some(g)) if surplus > 0 => {
                surplus -= 1;
                Step::Release(*g)
            }
            (Held::No, Some(g)) => Step::Start(*g),
            (Held::Yes { generation, .. }, Some(g)) if generation != g => Step::Start(*g),
            (Held::Yes { .. }, Some(_)) => Step::Keep,
            (Held::Yes { .. }, None) => Step::Stop,
            (Held::No, None) => Step::Keep,
        };
        out.push((tenant.clone(), step));
    }
    // Still too many: give back running ones too (the last in tenant order).
    for (tenant, step) in out.iter_mut().rev() {
        if surplus == 0 {
            break;
        }
        if *step == Step::Keep
            && let Some(g) = now_held.get(tenant.as_str())
        {
            *step = Step::Release(*g);
            surplus -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(held: &[(&str, i64)], claimed: &[(&str, i64)], fair: usize) -> Heartbeat {
        let own = |v: &[(&str, i64)]| v.iter().map(|(t, g)| ((*t).to_owned(), *g)).collect();
        Heartbeat {
            held: own(held),
            claimed: own(claimed),
            fair_share: fair,
        }
    }

    fn yes(g: i64) -> Held {
        Held::Yes {
            generation: g,
            until: Instant::now(),
        }
    }

    #[test]
    fn a_heartbeat_starts_claimed_stops_lost_and_gives_back_the_surplus() {
        let held = vec![
            ("a".to_owned(), yes(1)),
            ("b".to_owned(), yes(4)),
            ("c".to_owned(), Held::No),
            ("d".to_owned(), Held::No),
        ];
        let check = |b: Heartbeat, expect: &[Step]| {
            let got: Vec<Step> = steps(&held, &b).into_iter().map(|(_, s)| s).collect();
            assert_eq!(got, expect);
        };
        // b was taken over; c claimed.
        check(
            beat(&[("a", 1)], &[("c", 7)], 10),
            &[Step::Keep, Step::Stop, Step::Start(7), Step::Keep],
        );
        // Holding three with a share of two: the new claim goes back.
        check(
            beat(&[("a", 1), ("b", 4)], &[("d", 2)], 2),
            &[Step::Keep, Step::Keep, Step::Keep, Step::Release(2)],
        );
        // Holding two with a share of one: a running one goes back.
        check(
            beat(&[("a", 1), ("b", 4)], &[], 1),
            &[Step::Keep, Step::Release(4), Step::Keep, Step::Keep],
        );
    }
}
