//! Retention: deletes what dedupe, the audit trail and the rules no longer need, in small
//! transactions off the hot path, then hands the freed pages back (incremental vacuum).
//!
//! What each table keeps, and why it is safe to drop the rest:
//! - `inbox`: a processed row only stops a repeat of the same record version from being staged
//!   twice. After it is pruned, a version offered again is staged and planned again, and the
//!   planner drops it: an older version than the link's `source_modified_ms`/`target_modified_ms`
//!   is stale, and the same version maps to what the link already holds (nothing to write).
//!   Pending rows are never pruned.
//! - `ledger` and `registration_decisions`: audit trails; they age out together. The per-action
//!   totals in `ledger_totals` are kept.
//! - `registration_events`: the rules fold every version of a registration (earliest
//!   submission, the start of the final run of qualified versions, the latest fields), so a
//!   registration always keeps its oldest and newest versions; only the versions in between,
//!   older than the window, are dropped.

use std::time::Duration;

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// Rows deleted per transaction: short enough that planner and writer jobs queued behind a
/// batch wait a few milliseconds at most.
pub const BATCH: usize = 1_000;
/// Free pages handed back per incremental-vacuum step (4 MiB at the default page size).
const VACUUM_STEP: i64 = 1_000;

/// How long each kind of history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Processed inbox rows (their dedupe role ends once the link records the version).
    pub inbox: Duration,
    /// Ledger lines and registration decision history; `None` keeps them forever.
    pub ledger: Option<Duration>,
    /// Superseded registration versions; `None` keeps them forever.
    pub registration_events: Option<Duration>,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            inbox: 7 * DAY,
            ledger: Some(90 * DAY),
            registration_events: Some(90 * DAY),
        }
    }
}

/// What one prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub inbox: usize,
    pub ledger: usize,
    /// Lines of registration decision history (they age out with the ledger).
    pub registration_decisions: usize,
    pub registration_events: usize,
    /// Transactions used (each deletes at most [`BATCH`] rows).
    pub batches: usize,
    /// Pages handed back to the file system by incremental vacuum.
    pub pages_freed: i64,
}

/// The size of the state file in pages, and how many of them are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FilePages {
    pub page_size: i64,
    pub page_count: i64,
    pub freelist: i64,
}

impl FilePages {
    /// The database size in bytes (what the file shrinks to at the next checkpoint).
    pub fn bytes(&self) -> i64 {
        self.page_size * self.page_count
    }
}

pub(super) fn cutoff(now_ms: i64, keep: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Deletes history older than `policy` allows, [`BATCH`] rows per transaction, then runs
    /// incremental vacuum so the file shrinks. Other store jobs run between the batches.
    pub async fn prune(
        &self,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<PruneReport, StoreError> {
        if let Some(pg) = self.pg() {
            return super::pg::retention::prune(pg, policy, now_ms).await;
        }
        let mut report = PruneReport::default();
        let before = cutoff(now_ms, policy.inbox);
        loop {
            let n = self.write(move |tx| prune_inbox(tx, before)).await?;
            report.batches += 1;
            report.inbox += n;
            if n == 0 {
                break;
            }
        }
        if let Some(keep) = policy.ledger {
            let before = cutoff(now_ms, keep);
            for table in [AuditTable::Ledger, AuditTable::RegistrationDecisions] {
                loop {
                    let n = self.write(move |tx| prune_audit(tx, table, before)).await?;
                    report.batches += 1;
                    match table {
                        AuditTable::Ledger => report.ledger += n,
                        AuditTable::RegistrationDecisions => report.registration_decisions += n,
                    }
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        if let Some(keep) = policy.registration_events {
            let before = cutoff(now_ms, keep);
            let mut after = (i64::MIN, i64::MIN);
            loop {
                let (n, next) = self
                    .write(move |tx| prune_registration_events(tx, before, after))
                    .await?;
                report.batches += 1;
                report.registration_events += n;
                match next {
                    Some(next) => after = next,
                    None => break,
                }
            }
        }
        loop {
            let freed = self.call(incremental_vacuum).await?;
            report.pages_freed += freed;
            if freed < VACUUM_STEP {
                break;
            }
        }
        Ok(report)
    }

    /// The state file's size in pages (for `prmsync status`, tests and benchmarks).
    pub async fn file_pages(&self) -> Result<FilePages, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.read(super::pg::retention::file_pages).await;
        }
        self.read(file_pages).await
    }
}

/// Processed inbox rows are pruned in arrival order: the oldest [`BATCH`] processed rows are
/// taken and those processed before `before` deleted. Rows are processed in arrival order, so a
/// batch with nothing old enough means the rest is younger still (the walk never scans the
/// whole table). Returns how many were deleted.
fn prune_inbox(tx: &Transaction<'_>, before: i64) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM inbox WHERE id IN
               (SELECT id FROM inbox WHERE state = 'done' ORDER BY id LIMIT ?2)
             AND processed_ms < ?1",
        )?
        .execute(params![before, BATCH as i64])?)
}

/// The audit trails that age out with the ledger window.
#[derive(Debug, Clone, Copy)]
enum AuditTable {
    Ledger,
    /// The before/after history of registration decisions (`prmsync registrations show`); the
    /// rules read the current decision from `registrations`, never this history.
    RegistrationDecisions,
}

/// Audit lines are written in time order: the oldest [`BATCH`] are taken and those older than
/// `before` deleted.
fn prune_audit(tx: &Transaction<'_>, table: AuditTable, before: i64) -> Result<usize, StoreError> {
    let sql = match table {
        AuditTable::Ledger => {
            "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger ORDER BY id LIMIT ?2)
             AND at_ms < ?1"
        }
        AuditTable::RegistrationDecisions => {
            "DELETE FROM registration_decisions
             WHERE id IN (SELECT id FROM registration_decisions ORDER BY id LIMIT ?2)
             AND at_ms < ?1"
        }
    };
    Ok(tx
        .prepare_cached(sql)?
        .execute(params![before, BATCH as i64])?)
}

/// Walks registration versions older than `before` in (time, rowid) order from `after`, at most
/// [`BATCH`] of them, and deletes those that are neither the oldest nor the newest version of
/// their registration. Returns how many were deleted and where the next batch starts (`None`:
/// the walk is done).
fn prune_registration_events(
    tx: &Transaction<'_>,
    before: i64,
    after: (i64, i64),
) -> Result<(usize, Option<(i64, i64)>), StoreError> {
    let window: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT at_ms, rowid FROM registration_events
             WHERE at_ms < ?1 AND (at_ms, rowid) > (?2, ?3)
             ORDER BY at_ms, rowid LIMIT ?4",
        )?
        .query_map(params![before, after.0, after.1, BATCH as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut delete = tx.prepare_cached(
        "DELETE FROM registration_events AS e WHERE rowid = ?1
           AND e.at_ms > (SELECT MIN(x.at_ms) FROM registration_events x
                          WHERE x.registration_id = e.registration_id)
           AND e.at_ms < (SELECT MAX(x.at_ms) FROM registration_events x
                          WHERE x.registration_id = e.registration_id)",
    )?;
    let mut n = 0;
    for (_, rowid) in &window {
        n += delete.execute(params![rowid])?;
    }
    let next = (window.len() == BATCH).then(|| window[window.len() - 1]);
    Ok((n, next))
}

/// Hands up to [`VACUUM_STEP`] free pages back to the file system; returns how many.
fn incremental_vacuum(conn: &mut Connection) -> Result<i64, StoreError> {
    let free = |c: &Connection| -> Result<i64, StoreError> {
        Ok(c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
    };
    let before = free(conn)?;
    // Outside a transaction; the pragma frees one page per step, so step it to the end.
    let mut stmt = conn.prepare_cached(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    drop(stmt);
    Ok(before - free(conn)?)
}

pub(super) fn file_pages(conn: &Connection) -> Result<FilePages, StoreError> {
    let pragma = |name: &str| -> Result<i64, StoreError> {
        Ok(conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
    };
    Ok(FilePages {
        page_size: pragma("page_size")?,
        page_count: pragma("page_count")?,
        freelist: pragma("freelist_count")?,
    })
}

/// Switches a state file to incremental auto-vacuum. A new file takes the setting before its
/// first table; an existing one is rewritten once (`VACUUM`, atomic: a crash leaves the old file
/// intact, and the next start tries again). A failure (e.g. no room for the copy) is logged and
/// the store runs on without shrinking.
pub(super) fn enable_incremental_vacuum(conn: &Connection) -> Result<(), StoreError> {
    const INCREMENTAL: i64 = 2;
    let mode = |c: &Connection| -> Result<i64, StoreError> {
        Ok(c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?)
    };
    if mode(conn)? == INCREMENTAL {
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    if mode(conn)? == INCREMENTAL {
        return Ok(());
    }
    tracing::info!("switching the state file to incremental vacuum (one-time rewrite)");
    if let Err(e) = conn.execute_batch("VACUUM") {
        tracing::warn!(error = %e, "could not rewrite the state file for incremental vacuum; pruned space is reused but the file will not shrink");
    }
    Ok(())
}

/// Prunes on every `every` until `shutdown` is cancelled. A failed prune is logged and tried
/// again at the next interval (each batch commits on its own, so nothing is half done).
pub async fn maintain(
    store: Store,
    policy: RetentionPolicy,
    every: Duration,
    now: impl Fn() -> i64 + Send + 'static,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = store.prune(policy, now()) => match r {
                Ok(r) if r == PruneReport { batches: r.batches, ..PruneReport::default() } => {
                    tracing::debug!("retention: nothing to prune");
                }
                Ok(r) => tracing::info!(
                    inbox = r.inbox,
                    ledger = r.ledger,
                    registration_decisions = r.registration_decisions,
                    registration_events = r.registration_events,
                    batches = r.batches,
                    pages_freed = r.pages_freed,
                    "retention: pruned"
                ),
                Err(e) => tracing::warn!(error = %e, retryable = e.is_retryable(), "retention: prune failed; trying again at the next interval"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Change, Direction, ObjectRef, Record, SystemKind};
    use crate::rules::RegistrationEvent;
    use crate::store::{KeyedEvent, LedgerEntry, PlanCommit};

    const DAY_MS: i64 = 24 * 60 * 60 * 1000;

    fn change(id: &str, ms: i64, filler: usize) -> Change {
        Change::versioned(
            ObjectRef {
                system: SystemKind::PartnerStack,
                object: "deals".into(),
            },
            Record {
                id: id.into(),
                modified_ms: ms,
                fields: json!({"key": id, "notes": "x".repeat(filler)})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
        )
    }

    fn ledger_line(source_id: &str) -> LedgerEntry {
        LedgerEntry {
            flow: "f".into(),
            direction: Direction::ToTarget,
            source_id: source_id.into(),
            target_id: None,
            action: "queued",
            content_hash: None,
            mapping_version: None,
            detail: None,
        }
    }

    /// Stages `n` changes at `at_ms` and processes all but `leave_pending` of them, with a
    /// ledger line each.
    async fn history(store: &Store, n: usize, leave_pending: usize, at_ms: i64) {
        let changes: Vec<Change> = (0..n)
            .map(|i| change(&format!("d{at_ms}-{i}"), at_ms, 400))
            .collect();
        store.stage_changes(changes, None, at_ms).await.unwrap();
        let items = store.pending_inbox(n).await.unwrap();
        let done: Vec<_> = items.iter().take(n - leave_pending).collect();
        store
            .commit_plan(
                PlanCommit {
                    inbox_ids: done.iter().map(|i| i.id).collect(),
                    ledger: done
                        .iter()
                        .map(|i| ledger_line(&i.change.record.id))
                        .collect(),
                    ..PlanCommit::default()
                },
                at_ms,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn old_history_is_pruned_in_batches_pending_rows_stay_and_counters_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        history(&store, 2_500, 100, 0).await;
        history(&store, 10, 0, 6 * DAY_MS).await;
        let report = store
            .prune(RetentionPolicy::default(), 8 * DAY_MS)
            .await
            .unwrap();
        assert_eq!(report.inbox, 2_400, "old processed rows go");
        assert_eq!(report.ledger, 0, "ledger lines are kept 90 days");
        // 2,400 rows at most 1,000 per transaction, then one that finds nothing.
        assert!(report.batches >= 4, "{report:?}");
        let status = store.status(8 * DAY_MS).await.unwrap();
        assert_eq!(status.inbox_pending, 100, "pending rows are never pruned");
        let report = store
            .prune(RetentionPolicy::default(), 97 * DAY_MS)
            .await
            .unwrap();
        assert_eq!((report.inbox, report.ledger), (10, 2_410));
        let (kept, recounted) = store.counts_kept_and_recounted().await.unwrap();
        assert_eq!(kept.inbox_pending, recounted.inbox_pending);
        assert_eq!(recounted.ledger, vec![], "the ledger rows are gone");
        assert_eq!(
            kept.ledger.iter().map(|l| l.count).sum::<i64>(),
            2_410,
            "the ledger totals survive pruning"
        );
    }

    #[tokio::test]
    async fn pruning_hands_the_pages_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let empty = store.file_pages().await.unwrap();
        history(&store, 3_000, 0, 0).await;
        let full = store.file_pages().await.unwrap();
        let report = store
            .prune(
                RetentionPolicy {
                    inbox: Duration::ZERO,
                    ledger: Some(Duration::ZERO),
                    registration_events: None,
                },
                1,
            )
            .await
            .unwrap();
        let after = store.file_pages().await.unwrap();
        assert!(report.pages_freed > 0, "{report:?}");
        assert_eq!(after.freelist, 0, "every free page was handed back");
        assert!(
            after.page_count < full.page_count / 4,
            "the file shrank: {empty:?} -> {full:?} -> {after:?}"
        );
    }

    fn version(id: &str, at_ms: i64) -> KeyedEvent {
        KeyedEvent {
            event: RegistrationEvent {
                id: id.into(),
                at_ms,
                submitted_ms: 1,
                fields: json!({"v": at_ms}).as_object().cloned().unwrap_or_default(),
            },
            key: "acme.example".into(),
            partner: "p".into(),
        }
    }

    #[tokio::test]
    async fn a_registration_keeps_its_oldest_and_newest_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut events: Vec<KeyedEvent> = (1..=5).map(|d| version("a", d * DAY_MS)).collect();
        events.push(version("b", DAY_MS));
        store
            .record_registrations(events, Vec::new(), 0)
            .await
            .unwrap();
        let policy = RetentionPolicy {
            registration_events: Some(Duration::from_millis(2 * DAY_MS as u64)),
            ..RetentionPolicy::default()
        };
        // Cutoff at day 8: versions of days 2, 3 and 4 of "a" are superseded and old.
        let report = store.prune(policy, 10 * DAY_MS).await.unwrap();
        assert_eq!(report.registration_events, 3);
        let group = store
            .registration_group("acme.example".into())
            .await
            .unwrap();
        let kept: Vec<(String, i64)> = group
            .events
            .iter()
            .map(|e| (e.id.clone(), e.at_ms / DAY_MS))
            .collect();
        assert_eq!(
            kept,
            vec![("a".into(), 1), ("a".into(), 5), ("b".into(), 1)],
            "first and last version of each registration"
        );
        assert_eq!(
            store
                .prune(policy, 10 * DAY_MS)
                .await
                .unwrap()
                .registration_events,
            0
        );
    }
}
