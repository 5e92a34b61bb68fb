//! Named fail points for crash tests: abort the process at a chosen step of a write when the
//! `PRMSYNC_FAILPOINTS` environment variable (read by `main`) arms it; inert otherwise.
//!
//! The value is a comma-separated list of `name` or `name=N` (abort on the Nth time the point is
//! reached; default 1), e.g. `PRMSYNC_FAILPOINTS=drain.after_send=3`. The abort is
//! `std::process::abort`: no destructors, no flush, as close to `kill -9` as a process gets.
//! `stall:name[=N]` instead makes the stage task that reaches the point the Nth time hang there
//! (until the pipeline stops), as a wedged stage would: watchdog tests. Only the points in
//! [`STALL_POINTS`] can stall.

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

/// The points a stage task reaches in async code, where `stall:` can hang it.
pub const STALL_POINTS: &[&str] = &["plan.after_commit"];

/// What an armed point does when its hit comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Abort,
    Stall,
}

/// A fail-point spec that names an unknown point or a bad count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV_VAR}: {0} (known points: {points})", points = POINTS.join(", "))]
pub struct FailPointError(String);

/// The armed fail points. Cheap to clone; the default arms none.
#[derive(Debug, Clone, Default)]
pub struct FailPoints {
    /// Remaining hits before the action, per armed point.
    armed: Arc<BTreeMap<&'static str, (Action, AtomicU64)>>,
}

impl FailPoints {
    /// No fail point armed (production).
    pub fn none() -> Self {
        FailPoints::default()
    }

    /// Parses `[stall:]name[=N],...`; an empty spec arms nothing.
    pub fn parse(spec: &str) -> Result<Self, FailPointError> {
        let mut armed = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (action, point) = match part.strip_prefix("stall:") {
                Some(rest) => (Action::Stall, rest.trim()),
                None => (Action::Abort, part),
            };
            let (name, count) = match point.split_once('=') {
                Some((n, c)) => {
                    let c: u64 =
                        c.trim().parse().ok().filter(|c| *c > 0).ok_or_else(|| {
                            FailPointError(format!("{part}: N must be 1 or more"))
                        })?;
                    (n.trim(), c)
                }
                None => (point, 1),
            };
            let Some(point) = POINTS.iter().find(|p| **p == name) else {
                return Err(FailPointError(format!("unknown fail point {name:?}")));
            };
            if action == Action::Stall && !STALL_POINTS.contains(point) {
                return Err(FailPointError(format!(
                    "{name} cannot stall (stall: works at {})",
                    STALL_POINTS.join(", ")
                )));
            }
            armed.insert(*point, (action, AtomicU64::new(count)));
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
        if self.fires(point) == Some(Action::Abort) {
            eprintln!("prmsync: fail point {point} reached; aborting");
            std::process::abort();
        }
    }

    /// [`FailPoints::hit`] for a point in [`STALL_POINTS`]: on its armed hit a `stall:` point
    /// never returns (the task hangs until its future is dropped, when the pipeline stops).
    pub async fn reached(&self, point: &'static str) {
        debug_assert!(
            STALL_POINTS.contains(&point),
            "{point} is not a stall point"
        );
        match self.fires(point) {
            Some(Action::Abort) => {
                eprintln!("prmsync: fail point {point} reached; aborting");
                std::process::abort();
            }
            Some(Action::Stall) => {
                eprintln!("prmsync: fail point {point} reached; this task stalls here");
                std::future::pending::<()>().await;
            }
            None => {}
        }
    }

    /// Counts a hit of `point`; its action when this is the armed hit.
    fn fires(&self, point: &'static str) -> Option<Action> {
        debug_assert!(POINTS.contains(&point), "undeclared fail point {point}");
        let (action, left) = self.armed.get(point)?;
        (left.fetch_sub(1, Ordering::SeqCst) == 1).then_some(*action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts_and_refuses_unknown_points() {
        let fp = FailPoints::parse("drain.after_send=3, plan.after_commit").unwrap();
        assert!(fp.is_armed());
        assert_eq!(fp.armed["drain.after_send"].1.load(Ordering::SeqCst), 3);
        assert_eq!(fp.armed["plan.after_commit"].1.load(Ordering::SeqCst), 1);
        let stall = FailPoints::parse("stall:plan.after_commit=2").unwrap();
        assert_eq!(stall.armed["plan.after_commit"].0, Action::Stall);
        let e = FailPoints::parse("stall:drain.after_send").unwrap_err();
        assert!(e.to_string().contains("cannot stall"), "{e}");
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
        assert_eq!(fp.armed["drain.after_send"].1.load(Ordering::SeqCst), 990);
    }

    #[tokio::test]
    async fn a_stall_point_hangs_only_its_armed_hit() {
        let fp = FailPoints::parse("stall:plan.after_commit=2").unwrap();
        // The first hit passes.
        fp.reached("plan.after_commit").await;
        let second = fp.reached("plan.after_commit");
        tokio::pin!(second);
        // The second never completes: polled once, it is still pending.
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        // Later hits pass again (the count wrapped past zero: only the armed hit fires).
        fp.reached("plan.after_commit").await;
    }

    /// Polls `f` once: `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
