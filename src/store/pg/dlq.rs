//! PostgreSQL SQL for dead letters as operators handle them: the same statements as `store/dlq.rs`.

use postgres::GenericClient;

use super::super::dlq::{DeadLetterRow, ReplayReport, Selection, write_from_json};
use super::super::{DeadLetter, StoreError};
use super::queries::insert_dead_letter;

const COLUMNS: &str = "id, origin, flow, system, object, record_id, reason, attempts, created_ms,
                       payload, write IS NOT NULL OR origin = 'inbox'";

fn row(r: &postgres::Row) -> Result<DeadLetterRow, StoreError> {
    Ok(DeadLetterRow {
        id: r.try_get(0)?,
        origin: r.try_get(1)?,
        flow: r.try_get(2)?,
        system: r.try_get(3)?,
        object: r.try_get(4)?,
        record_id: r.try_get(5)?,
        reason: r.try_get(6)?,
        attempts: u32::try_from(r.try_get::<_, i64>(7)?).unwrap_or(u32::MAX),
        created_ms: r.try_get(8)?,
        payload: serde_json::from_str(r.try_get::<_, &str>(9)?)?,
        replayable: r.try_get(10)?,
    })
}

pub(in crate::store) fn list(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    c.query(
        &format!("SELECT {COLUMNS} FROM dead_letters ORDER BY id LIMIT $1"),
        &[&(limit as i64)],
    )?
    .iter()
    .map(row)
    .collect()
}

pub(in crate::store) fn show(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Option<DeadLetterRow>, StoreError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(row)
    .transpose()
}

fn selected(
    c: &mut impl GenericClient,
    sel: &Selection,
) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let all: Vec<i64> = c
        .query("SELECT id FROM dead_letters ORDER BY id", &[])?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(match sel {
        Selection::All => (all, Vec::new()),
        Selection::Ids(ids) => ids.iter().partition(|id| all.contains(id)),
    })
}

pub(in crate::store) fn replay(
    c: &mut impl GenericClient,
    sel: &Selection,
    now_ms: i64,
) -> Result<ReplayReport, StoreError> {
    let (ids, missing) = selected(c, sel)?;
    let mut report = ReplayReport {
        missing,
        ..ReplayReport::default()
    };
    for id in ids {
        let r = c.query_one(
            "SELECT origin, system, object, record_id, payload, write,
                    COALESCE(modified_ms, created_ms)
             FROM dead_letters WHERE id = $1",
            &[&id],
        )?;
        let origin: String = r.try_get(0)?;
        let system: String = r.try_get(1)?;
        let object: String = r.try_get(2)?;
        let record_id: String = r.try_get(3)?;
        let payload: String = r.try_get(4)?;
        let write: Option<String> = r.try_get(5)?;
        let modified_ms: i64 = r.try_get(6)?;
        if origin == "quarantine" {
            // Released by the operator: the flip count starts again.
            c.execute(
                "UPDATE links SET write_history = '[]'
                 WHERE (flow, source_id) IN (SELECT flow, record_id FROM dead_letters WHERE id = $1)",
                &[&id],
            )?;
        }
        let write = write.as_deref().map(write_from_json).transpose()?.flatten();
        if let Some(w) = write {
            let n = c.execute(
                "INSERT INTO outbox (idempotency_key, flow, direction, source_id, target_id,
                                     system, object, id_property, payload, state_after,
                                     content_hash, mapping_version, next_attempt_ms, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
                 ON CONFLICT (flow, direction, source_id) DO NOTHING",
                &[
                    &w.idempotency_key(),
                    &w.flow,
                    &w.direction.as_str(),
                    &w.source_id,
                    &w.target_id,
                    &w.system.as_str(),
                    &w.object,
                    &w.id_property,
                    &serde_json::to_string(&w.payload)?,
                    &w.state_after.to_text(),
                    &w.content_hash,
                    &w.mapping_version,
                    &now_ms,
                ],
            )?;
            if n == 1 {
                report.requeued_writes += 1;
            } else {
                report.superseded += 1;
            }
        } else if origin == "inbox" {
            c.execute(
                "INSERT INTO inbox (event_id, system, object, record_id, kind, modified_ms, payload,
                                    received_ms)
                 VALUES ($1, $2, $3, $4, 'upsert', $5, $6, $7)",
                &[
                    &format!("replay:{id}:{now_ms}"),
                    &system,
                    &object,
                    &record_id,
                    &modified_ms,
                    &payload,
                    &now_ms,
                ],
            )?;
            report.restaged_changes += 1;
        } else {
            report.not_replayable.push(id);
            continue;
        }
        c.execute("DELETE FROM dead_letters WHERE id = $1", &[&id])?;
    }
    Ok(report)
}

pub(in crate::store) fn poll_rejects(
    c: &mut impl GenericClient,
    rejects: &[DeadLetter],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut new = 0;
    for d in rejects {
        let payload = serde_json::to_string(&d.payload)?;
        let seen: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE origin = $1 AND system = $2
                 AND object = $3 AND record_id = $4 AND payload = $5)",
                &[
                    &d.origin,
                    &d.system.as_str(),
                    &d.object,
                    &d.record_id,
                    &payload,
                ],
            )?
            .try_get(0)?;
        if !seen {
            insert_dead_letter(c, d, None, now_ms)?;
            new += 1;
        }
    }
    Ok(new)
}

pub(in crate::store) fn drop_letters(
    c: &mut impl GenericClient,
    sel: &Selection,
) -> Result<(usize, Vec<i64>), StoreError> {
    let (ids, missing) = selected(c, sel)?;
    c.execute("DELETE FROM dead_letters WHERE id = ANY($1)", &[&ids])?;
    Ok((ids.len(), missing))
}

/// Of `source_ids`, those whose `flow` has a `to_target` write still in the outbox.
pub(in crate::store) fn queued_to_target(
    c: &mut impl GenericClient,
    flow: &str,
    source_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    Ok(c.query(
        "SELECT source_id FROM outbox
         WHERE flow = $1 AND direction = 'to_target' AND source_id = ANY($2)",
        &[&flow, &source_ids],
    )?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?)
}
