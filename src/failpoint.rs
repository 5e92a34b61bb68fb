//! Named fail points for crash tests: abort the process at a chosen step of a write when the
//! `PRMSYNC_FAILPOINTS` environment variable (read by `main`) arms it; inert otherwise.
//!
//! The value is a comma-separated list of `name` or `name=N` (abort on the Nth time the point is
//! reached; default 1), e.g. `PRMSYNC_FAILPOINTS=drain.after_send=3`. The abort is
//! `std::process::abort`: no destructors, no flush, as close to `kill -9` as a process gets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable `main` reads.
pub const ENV_VAR: &str = "PRMSYNC_FAILPOINTS";

/// Every fail point, in the order a change passes them.
pub const POINTS: &[&str] = &[
    // Between two schema migration steps (each step commits on its own).
    "migrate.between_steps",
    // After one poll page and its cursor advance committed, before the next page is read.
    "poll.after_page_commit",
    // After planned writes committed to the outbox with their inbox items.
    "plan.after_commit",
    // After due outbox rows were read, before the request is sent.
    "drain.before_send",
    // After the remote system answered 2xx, before the outcome is committed locally.
    "drain.after_send",
    // After one batch's outcome committed while more batches may be due (mid-drain).
    "drain.after_commit",
    // After a webhook's events committed to the inbox, before the 2xx is sent.
    "webhook.after_commit",
];

/// A fail-point spec that names an unknown point or a bad count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV_VAR}: {0} (known points: {points})", points = POINTS.join(", "))]
pub struct FailPointError(String);

/// The armed fail points. Cheap to clone; the default arms none.
#[derive(Debug, Clone, Default)]
pub struct FailPoints {
    /// Remaining hits before the abort, per armed point.
    armed: Arc<BTreeMap<&'static str, AtomicU64>>,
}

impl FailPoints {
    /// No fail point armed (production).
    pub fn none() -> Self {
        FailPoints::default()
    }

    /// Parses `name[=N],...`; an empty spec arms nothing.
    pub fn parse(spec: &str) -> Result<Self, FailPointError> {
        let mut armed = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, count) = match part.split_once('=') {
                Some((n, c)) => {
                    let c: u64 =
                        c.trim().parse().ok().filter(|c| *c > 0).ok_or_else(|| {
                            FailPointError(format!("{part}: N must be 1 or more"))
                        })?;
                    (n.trim(), c)
                }
                None => (part, 1),
            };
            let Some(point) = POINTS.iter().find(|p| **p == name) else {
                return Err(FailPointError(format!("unknown fail point {name:?}")));
            };
            armed.insert(*point, AtomicU64::new(count));
        }
        Ok(FailPoints {
            armed: Arc::new(armed),
        })
    }

    /// Whether any point is armed (logged at start so a stray variable is noticed).
    pub fn is_armed(&self) -> bool {
        !self.armed.is_empty()
    }

    /// Marks that `point` was reached; aborts the process if this is the armed hit.
    pub fn hit(&self, point: &'static str) {
        debug_assert!(POINTS.contains(&point), "undeclared fail point {point}");
        let Some(left) = self.armed.get(point) else {
            return;
        };
        if left.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("prmsync: fail point {point} reached; aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts_and_refuses_unknown_points() {
        let fp = FailPoints::parse("drain.after_send=3, plan.after_commit").unwrap();
        assert!(fp.is_armed());
        assert_eq!(fp.armed["drain.after_send"].load(Ordering::SeqCst), 3);
        assert_eq!(fp.armed["plan.after_commit"].load(Ordering::SeqCst), 1);
        assert!(!FailPoints::parse("").unwrap().is_armed());
        let e = FailPoints::parse("drain.nowhere").unwrap_err();
        assert!(e.to_string().contains("unknown fail point"), "{e}");
        assert!(FailPoints::parse("drain.after_send=0").is_err());
        assert!(FailPoints::parse("drain.after_send=x").is_err());
    }

    #[test]
    fn unarmed_points_do_nothing() {
        let fp = FailPoints::parse("drain.after_send=1000").unwrap();
        for _ in 0..10 {
            fp.hit("drain.after_send");
            fp.hit("plan.after_commit");
        }
        assert_eq!(fp.armed["drain.after_send"].load(Ordering::SeqCst), 990);
    }
}
