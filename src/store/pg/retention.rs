//! Retention on PostgreSQL: the same batches as `store/retention.rs`; autovacuum reclaims the space
//! (there is no file to shrink), so a prune frees no pages itself.

use postgres::GenericClient;

use super::super::StoreError;
use super::super::retention::{BATCH, FilePages, PruneReport, RetentionPolicy, cutoff};
use super::PgStore;

/// The key a registration-events walk resumes after: (time, registration id, fields hash).
type EventKey = (i64, String, String);

/// Deletes history older than `policy` allows, [`BATCH`] rows per transaction; other store jobs
/// run between the batches.
pub(in crate::store) async fn prune(
    pg: &PgStore,
    policy: RetentionPolicy,
    now_ms: i64,
) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    let before = cutoff(now_ms, policy.inbox);
    loop {
        let n = pg
            .write(move |tx| {
                Ok(tx.execute(
                    "DELETE FROM inbox WHERE id IN
                       (SELECT id FROM inbox WHERE state = 'done' ORDER BY id LIMIT $2)
                     AND processed_ms < $1",
                    &[&before, &(BATCH as i64)],
                )?)
            })
            .await?;
        report.batches += 1;
        report.inbox += usize::try_from(n).unwrap_or(usize::MAX);
        if n == 0 {
            break;
        }
    }
    if let Some(keep) = policy.ledger {
        let before = cutoff(now_ms, keep);
        for table in ["ledger", "registration_decisions"] {
            loop {
                let n = pg
                    .write(move |tx| {
                        Ok(tx.execute(
                            &format!(
                                "DELETE FROM {table} WHERE id IN
                                   (SELECT id FROM {table} ORDER BY id LIMIT $2)
                                 AND at_ms < $1"
                            ),
                            &[&before, &(BATCH as i64)],
                        )?)
                    })
                    .await?;
                report.batches += 1;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if table == "ledger" {
                    report.ledger += n;
                } else {
                    report.registration_decisions += n;
                }
                if n == 0 {
                    break;
                }
            }
        }
    }
    if let Some(keep) = policy.registration_events {
        let before = cutoff(now_ms, keep);
        let mut after: EventKey = (i64::MIN, String::new(), String::new());
        loop {
            let (n, next) = pg
                .write(move |tx| prune_registration_events(tx, before, &after))
                .await?;
            report.batches += 1;
            report.registration_events += n;
            match next {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    Ok(report)
}

/// Walks registration versions older than `before` in key order from `after`, at most
/// [`BATCH`], and deletes those that are neither the oldest nor the newest of their registration.
fn prune_registration_events(
    c: &mut impl GenericClient,
    before: i64,
    after: &EventKey,
) -> Result<(usize, Option<EventKey>), StoreError> {
    let window: Vec<EventKey> = c
        .query(
            "SELECT at_ms, registration_id, fields_hash FROM registration_events
             WHERE at_ms < $1 AND (at_ms, registration_id, fields_hash) > ($2, $3, $4)
             ORDER BY at_ms, registration_id, fields_hash LIMIT $5",
            &[&before, &after.0, &after.1, &after.2, &(BATCH as i64)],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, postgres::Error>>()?;
    let delete = c.prepare(
        "DELETE FROM registration_events AS e
         WHERE e.at_ms = $1 AND e.registration_id = $2 AND e.fields_hash = $3
           AND e.at_ms > (SELECT MIN(x.at_ms) FROM registration_events x
                          WHERE x.registration_id = e.registration_id)
           AND e.at_ms < (SELECT MAX(x.at_ms) FROM registration_events x
                          WHERE x.registration_id = e.registration_id)",
    )?;
    let mut n = 0;
    for (at, id, hash) in &window {
        n += c.execute(&delete, &[at, id, hash])?;
    }
    let next = (window.len() == BATCH).then(|| window[window.len() - 1].clone());
    Ok((usize::try_from(n).unwrap_or(usize::MAX), next))
}

/// This state's size as pages of the server's block size (no free list: autovacuum reuses space).
pub(in crate::store) fn file_pages(c: &mut impl GenericClient) -> Result<FilePages, StoreError> {
    let r = c.query_one(
        "SELECT current_setting('block_size')::BIGINT,
                COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
        &[],
    )?;
    let page_size: i64 = r.try_get(0)?;
    let bytes: i64 = r.try_get(1)?;
    Ok(FilePages {
        page_size,
        page_count: bytes / page_size.max(1),
        freelist: 0,
    })
}
