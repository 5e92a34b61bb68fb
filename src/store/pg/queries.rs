//! The PostgreSQL SQL behind the core verbs (inbox, cursors, links, plan commits, outbox,
//! credentials, holds, status): the same statements as `store/queries.rs`, in PostgreSQL's dialect.

use postgres::GenericClient;
use serde_json::Value;

use super::super::queries::{
    CursorStatus, FlowCounts, HoldStatus, StatusReport, trim_write_history,
};
use super::super::{
    InboxItem, Link, LinkMark, OutboxItem, PlanCommit, PlannedWrite, StateDigest, StoreError,
    WriteOp, WriteOutcome,
};
use crate::model::{Change, ChangeKind, Cursor, Direction, ObjectRef, Record, SystemKind};
use crate::store::dlq::write_to_json;

type Params<'a> = &'a [&'a (dyn postgres::types::ToSql + Sync)];

pub(in crate::store) fn insert_changes(
    c: &mut impl GenericClient,
    changes: &[Change],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let stmt = c.prepare(
        // Records an erasure left holding a person in their system are not taken in again.
        "INSERT INTO inbox (event_id, system, object, record_id, kind, modified_ms, payload, received_ms)
         SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::BIGINT, $7::TEXT, $8::BIGINT
         WHERE NOT EXISTS (SELECT 1 FROM erased_records
                           WHERE system = $2::TEXT AND object = $3::TEXT AND record_id = $4::TEXT)
         ON CONFLICT (event_id) DO NOTHING",
    )?;
    let mut n = 0;
    for ch in changes {
        n += c.execute(
            &stmt,
            &[
                &ch.event_id,
                &ch.object.system.as_str(),
                &ch.object.object,
                &ch.record.id,
                &ch.kind.as_str(),
                &ch.record.modified_ms,
                &serde_json::to_string(&ch.record.fields)?,
                &now_ms,
            ],
        )?;
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(in crate::store) fn set_cursor(
    c: &mut impl GenericClient,
    object: &ObjectRef,
    cursor: &Cursor,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO cursors (system, object, position, updated_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (system, object) DO UPDATE SET position = excluded.position,
            updated_ms = excluded.updated_ms",
        &[
            &object.system.as_str(),
            &object.object,
            &cursor.encode(),
            &now_ms,
        ],
    )?;
    Ok(())
}

pub(in crate::store) fn cursor(
    c: &mut impl GenericClient,
    object: &ObjectRef,
) -> Result<Option<Cursor>, StoreError> {
    let row = c.query_opt(
        "SELECT position FROM cursors WHERE system = $1 AND object = $2",
        &[&object.system.as_str(), &object.object],
    )?;
    Ok(row.and_then(|r| Cursor::decode(&r.get::<_, String>(0))))
}

pub(in crate::store) fn pending_inbox(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<InboxItem>, StoreError> {
    let rows = c.query(
        "SELECT id, event_id, system, object, record_id, kind, modified_ms, payload
         FROM inbox WHERE state = 'pending' ORDER BY id LIMIT $1",
        &[&(limit as i64)],
    )?;
    let mut items = Vec::new();
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let system: String = r.try_get(2)?;
        let kind: String = r.try_get(5)?;
        let (Some(system), Some(kind)) = (SystemKind::parse(&system), ChangeKind::parse(&kind))
        else {
            // Written by a newer prmsync; leave it for that version rather than guess.
            tracing::warn!(inbox_id = id, %system, %kind, "skipping inbox row of unknown system or kind");
            continue;
        };
        items.push(InboxItem {
            id,
            change: Change {
                event_id: r.try_get(1)?,
                object: ObjectRef {
                    system,
                    object: r.try_get(3)?,
                },
                kind,
                record: Record {
                    id: r.try_get(4)?,
                    modified_ms: r.try_get(6)?,
                    fields: serde_json::from_str(r.try_get::<_, &str>(7)?)?,
                },
            },
        });
    }
    Ok(items)
}

const LINK_COLUMNS: &str = "target_digest, target_state, source_digest, source_state,
    source_modified_ms, target_modified_ms, write_history,
    EXISTS (SELECT 1 FROM dead_letters d WHERE d.origin = 'quarantine' AND d.flow = links.flow
            AND d.record_id = links.source_id), tombstone";

fn state_from_columns(digest: Option<Vec<u8>>, values: &str) -> Result<StateDigest, StoreError> {
    match digest {
        Some(bytes) => StateDigest::from_bytes(&bytes),
        None => StateDigest::from_text(values),
    }
    .ok_or(StoreError::Corrupt("link state"))
}

/// A link from `LINK_COLUMNS` starting at column `from`.
fn link_from_row(
    r: &postgres::Row,
    target_id: Option<String>,
    from: usize,
) -> Result<Link, StoreError> {
    Ok(Link {
        target_id,
        target_state: state_from_columns(r.try_get(from)?, r.try_get(from + 1)?)?,
        source_state: state_from_columns(r.try_get(from + 2)?, r.try_get(from + 3)?)?,
        source_modified_ms: r.try_get(from + 4)?,
        target_modified_ms: r.try_get(from + 5)?,
        write_history: serde_json::from_str(r.try_get::<_, &str>(from + 6)?)?,
        quarantined: r.try_get(from + 7)?,
        tombstone: r.try_get(from + 8)?,
    })
}

pub(in crate::store) fn links_by_source(
    c: &mut impl GenericClient,
    flow: &str,
    source_ids: &[String],
) -> Result<Vec<(String, Link)>, StoreError> {
    let rows = c.query(
        &format!(
            "SELECT source_id, target_id, {LINK_COLUMNS}
             FROM links WHERE flow = $1 AND source_id = ANY($2)"
        ),
        &[&flow, &source_ids],
    )?;
    let mut found = std::collections::HashMap::new();
    for r in rows {
        let sid: String = r.try_get(0)?;
        let link = link_from_row(&r, r.try_get(1)?, 2)?;
        found.insert(sid, link);
    }
    // In the order asked, as the SQLite backend answers.
    Ok(source_ids
        .iter()
        .filter_map(|sid| found.get(sid).map(|l| (sid.clone(), l.clone())))
        .collect())
}

pub(in crate::store) fn links_by_target(
    c: &mut impl GenericClient,
    flow: &str,
    target_ids: &[String],
) -> Result<Vec<(String, String, Link)>, StoreError> {
    let stmt = c.prepare(&format!(
        "SELECT source_id, {LINK_COLUMNS} FROM links WHERE flow = $1 AND target_id = $2 LIMIT 1"
    ))?;
    let mut out = Vec::new();
    for tid in target_ids {
        if let Some(r) = c.query_opt(&stmt, &[&flow, tid])? {
            let sid: String = r.try_get(0)?;
            out.push((tid.clone(), sid, link_from_row(&r, Some(tid.clone()), 1)?));
        }
    }
    Ok(out)
}

fn record_write_history(
    c: &mut impl GenericClient,
    w: &PlannedWrite,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(row) = c.query_opt(
        "SELECT write_history FROM links WHERE flow = $1 AND source_id = $2",
        &[&w.flow, &w.source_id],
    )?
    else {
        return Ok(());
    };
    let mut h: Vec<(i64, String)> = serde_json::from_str(row.try_get::<_, &str>(0)?)?;
    h.push((now_ms, w.state_key()));
    let h = trim_write_history(h, now_ms);
    c.execute(
        "UPDATE links SET write_history = $3 WHERE flow = $1 AND source_id = $2",
        &[&w.flow, &w.source_id, &serde_json::to_string(&h)?],
    )?;
    Ok(())
}

fn upsert_link_state(
    c: &mut impl GenericClient,
    flow: &str,
    source_id: &str,
    side: Direction,
    state: &StateDigest,
    target_id: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    // The digest replaces the values earlier versions stored.
    let sql = match side {
        Direction::ToTarget => {
            "INSERT INTO links (flow, source_id, target_id, target_digest, updated_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                target_id = COALESCE(excluded.target_id, links.target_id),
                target_digest = excluded.target_digest, target_state = '{}',
                updated_ms = excluded.updated_ms"
        }
        Direction::ToSource => {
            "INSERT INTO links (flow, source_id, target_id, source_digest, updated_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                target_id = COALESCE(excluded.target_id, links.target_id),
                source_digest = excluded.source_digest, source_state = '{}',
                updated_ms = excluded.updated_ms"
        }
    };
    c.execute(
        sql,
        &[&flow, &source_id, &target_id, &state.to_bytes(), &now_ms],
    )?;
    Ok(())
}

pub(in crate::store) fn commit_plan(
    c: &mut impl GenericClient,
    plan: &PlanCommit,
    now_ms: i64,
) -> Result<(), StoreError> {
    if !plan.writes.is_empty() {
        let stmt = c.prepare(
            "INSERT INTO outbox (idempotency_key, flow, direction, source_id, target_id, system, object,
                                 id_property, payload, state_after, content_hash, mapping_version,
                                 next_attempt_ms, created_ms, op)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)
             ON CONFLICT (flow, direction, source_id) DO UPDATE SET
                idempotency_key = excluded.idempotency_key,
                target_id = COALESCE(excluded.target_id, outbox.target_id),
                payload = excluded.payload, state_after = excluded.state_after,
                content_hash = excluded.content_hash, mapping_version = excluded.mapping_version,
                attempts = 0, next_attempt_ms = excluded.next_attempt_ms, last_error = NULL,
                priority = 0, op = excluded.op",
        )?;
        for w in &plan.writes {
            c.execute(
                &stmt,
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
                    &w.op.as_str(),
                ],
            )?;
        }
    }
    for w in &plan.writes {
        record_write_history(c, w, now_ms)?;
    }
    for (flow, direction, source_id) in &plan.backfill {
        c.execute(
            "UPDATE outbox SET priority = 1 WHERE flow = $1 AND direction = $2 AND source_id = $3",
            &[flow, &direction.as_str(), source_id],
        )?;
    }
    for d in &plan.dead_letters {
        insert_dead_letter(c, d, None, now_ms)?;
    }
    for (d, w) in &plan.quarantined {
        insert_dead_letter(c, d, Some(w), now_ms)?;
    }
    for l in &plan.ledger {
        insert_ledger(
            c,
            &l.flow,
            l.direction,
            &l.source_id,
            l.target_id.as_deref(),
            l.action,
            l.content_hash.as_deref(),
            l.mapping_version.as_deref(),
            l.detail.as_deref(),
            now_ms,
        )?;
    }
    for o in &plan.observations {
        upsert_link_state(c, &o.flow, &o.source_id, o.side, &o.state, None, now_ms)?;
    }
    for mark in &plan.marks {
        mark_link(c, mark, now_ms)?;
    }
    super::associations::record(c, &plan.associations, now_ms)?;
    for (flow, object, since_ms, ids) in &plan.waits {
        super::resync::request(c, flow, object, *since_ms, Some(ids), now_ms)?;
    }
    for (flow, object, source_id) in &plan.rereads {
        super::resync::request(
            c,
            flow,
            object,
            0,
            Some(std::slice::from_ref(source_id)),
            now_ms,
        )?;
    }
    for (flow, source_id, side, ms) in &plan.versions {
        let (source_ms, target_ms) = match side {
            Direction::ToSource => (Some(*ms), None),
            Direction::ToTarget => (None, Some(*ms)),
        };
        c.execute(
            "INSERT INTO links (flow, source_id, updated_ms, source_modified_ms, target_modified_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                source_modified_ms = GREATEST(links.source_modified_ms, excluded.source_modified_ms),
                target_modified_ms = GREATEST(links.target_modified_ms, excluded.target_modified_ms)",
            &[flow, source_id, &now_ms, &source_ms, &target_ms],
        )?;
    }
    for (flow, direction, source_id) in &plan.cancelled {
        c.execute(
            "DELETE FROM outbox WHERE flow = $1 AND direction = $2 AND source_id = $3",
            &[flow, &direction.as_str(), source_id],
        )?;
    }
    if !plan.inbox_ids.is_empty() {
        c.execute(
            "UPDATE inbox SET state = 'done', processed_ms = $2
             WHERE id = ANY($1) AND state = 'pending'",
            &[&plan.inbox_ids, &now_ms],
        )?;
    }
    Ok(())
}

/// Sets or clears a link's tombstone, or forgets its target record.
pub(in crate::store) fn mark_link(
    c: &mut impl GenericClient,
    mark: &LinkMark,
    now_ms: i64,
) -> Result<(), StoreError> {
    match mark {
        LinkMark::Tombstone {
            flow,
            source_id,
            reason,
        } => c.execute(
            "INSERT INTO links (flow, source_id, updated_ms, tombstone) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                tombstone = excluded.tombstone, updated_ms = excluded.updated_ms",
            &[flow, source_id, &now_ms, reason],
        )?,
        LinkMark::Relink { flow, source_id } => c.execute(
            "UPDATE links SET tombstone = NULL, updated_ms = $3 WHERE flow = $1 AND source_id = $2",
            &[flow, source_id, &now_ms],
        )?,
        LinkMark::ForgetTarget { flow, source_id } => c.execute(
            "UPDATE links SET target_id = NULL, target_state = '{}', target_digest = NULL,
                target_modified_ms = NULL, tombstone = NULL, updated_ms = $3
             WHERE flow = $1 AND source_id = $2",
            &[flow, source_id, &now_ms],
        )?,
        LinkMark::Retarget {
            flow,
            source_id,
            target_id,
        } => c.execute(
            // An upsert: a Lead conversion moves a record into a flow that had no link for it.
            "INSERT INTO links (flow, source_id, target_id, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, source_id) DO UPDATE SET target_id = excluded.target_id,
                target_state = '{}', target_digest = NULL, tombstone = NULL,
                updated_ms = excluded.updated_ms",
            &[flow, source_id, target_id, &now_ms],
        )?,
    };
    Ok(())
}

/// Inserts a dead letter; `write` (outbox failures) is kept whole so the write can be replayed.
pub(in crate::store) fn insert_dead_letter(
    c: &mut impl GenericClient,
    d: &super::super::DeadLetter,
    write: Option<&PlannedWrite>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let write = write.map(write_to_json).transpose()?;
    // An inbox failure remembers the version's modification time, from its pending inbox row.
    c.execute(
        "INSERT INTO dead_letters (origin, flow, system, object, record_id, payload, reason, attempts,
                                   created_ms, write, modified_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 (SELECT modified_ms FROM inbox WHERE system = $3 AND object = $4 AND record_id = $5
                  AND state = 'pending' ORDER BY id DESC LIMIT 1))",
        &[
            &d.origin,
            &d.flow,
            &d.system.as_str(),
            &d.object,
            &d.record_id,
            &serde_json::to_string(&d.payload)?,
            &d.reason,
            &i64::from(d.attempts),
            &now_ms,
            &write,
        ],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(in crate::store) fn insert_ledger(
    c: &mut impl GenericClient,
    flow: &str,
    direction: Direction,
    source_id: &str,
    target_id: Option<&str>,
    action: &str,
    hash: Option<&str>,
    mapping_version: Option<&str>,
    detail: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO ledger (at_ms, flow, direction, source_id, target_id, action, content_hash,
                             mapping_version, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &now_ms,
            &flow,
            &direction.as_str(),
            &source_id,
            &target_id,
            &action,
            &hash,
            &mapping_version,
            &detail,
        ],
    )?;
    Ok(())
}

/// Due outbox rows for `system`. Rows another transaction holds (a fleet peer's claim) are
/// skipped rather than waited for.
pub(in crate::store) fn due_outbox(
    c: &mut impl GenericClient,
    system: SystemKind,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<OutboxItem>, StoreError> {
    query_outbox(
        c,
        "WHERE system = $1 AND next_attempt_ms <= $2 ORDER BY priority, next_attempt_ms, id
         LIMIT $3 FOR UPDATE SKIP LOCKED",
        &[&system.as_str(), &now_ms, &(limit as i64)],
    )
}

fn query_outbox(
    c: &mut impl GenericClient,
    filter: &str,
    args: Params<'_>,
) -> Result<Vec<OutboxItem>, StoreError> {
    let sql = format!(
        "SELECT id, attempts, flow, direction, source_id, target_id, system, object, id_property,
                payload, state_after, content_hash, mapping_version, op
         FROM outbox {filter}"
    );
    let mut out = Vec::new();
    for r in c.query(&sql, args)? {
        let id: i64 = r.try_get(0)?;
        let dir: String = r.try_get(3)?;
        let system: String = r.try_get(6)?;
        let op: String = r.try_get(13)?;
        let (Some(direction), Some(system), Some(op)) = (
            Direction::parse(&dir),
            SystemKind::parse(&system),
            WriteOp::parse(&op),
        ) else {
            tracing::warn!(outbox_id = id, direction = %dir, %system, %op, "skipping outbox row written by a newer prmsync");
            continue;
        };
        out.push(OutboxItem {
            id,
            attempts: u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(u32::MAX),
            write: PlannedWrite {
                flow: r.try_get(2)?,
                direction,
                source_id: r.try_get(4)?,
                target_id: r.try_get(5)?,
                system,
                object: r.try_get(7)?,
                id_property: r.try_get(8)?,
                payload: serde_json::from_str(r.try_get::<_, &str>(9)?)?,
                state_after: StateDigest::from_text(r.try_get::<_, &str>(10)?)
                    .ok_or(StoreError::Corrupt("outbox state"))?,
                content_hash: r.try_get(11)?,
                mapping_version: r.try_get(12)?,
                op,
            },
        });
    }
    Ok(out)
}

pub(in crate::store) fn complete_writes(
    c: &mut impl GenericClient,
    outcomes: &[WriteOutcome],
    now_ms: i64,
) -> Result<(), StoreError> {
    for o in outcomes {
        match o {
            WriteOutcome::Done {
                outbox_id,
                idempotency_key,
                target_id,
                created,
                skipped,
            } => {
                let Some(w) = take_outbox(c, *outbox_id, idempotency_key)? else {
                    // A newer plan replaced the row while this write was in flight: keep it
                    // queued, and remember where the record lives.
                    c.execute(
                        "UPDATE links SET target_id = $2
                         WHERE (flow, source_id) IN
                           (SELECT flow, source_id FROM outbox WHERE id = $1 AND direction = 'to_target')",
                        &[outbox_id, target_id],
                    )?;
                    continue;
                };
                if w.write.op == WriteOp::Delete {
                    let side = match w.write.direction {
                        Direction::ToTarget => "target",
                        Direction::ToSource => "source",
                    };
                    mark_link(
                        c,
                        &LinkMark::Tombstone {
                            flow: w.write.flow.clone(),
                            source_id: w.write.source_id.clone(),
                            reason: format!("{side} record deleted by prmsync"),
                        },
                        now_ms,
                    )?;
                    insert_ledger(
                        c,
                        &w.write.flow,
                        w.write.direction,
                        &w.write.source_id,
                        Some(target_id),
                        "deleted",
                        Some(&w.write.content_hash),
                        Some(&w.write.mapping_version),
                        None,
                        now_ms,
                    )?;
                    continue;
                }
                // A field the write went out without is not known to hold its value.
                let state_after = if skipped.is_empty() {
                    std::borrow::Cow::Borrowed(&w.write.state_after)
                } else {
                    super::schema_drift::insert_skips(c, &w.write, skipped, now_ms)?;
                    std::borrow::Cow::Owned(
                        w.write
                            .state_after
                            .without(skipped.iter().map(|s| s.field.as_str())),
                    )
                };
                upsert_link_state(
                    c,
                    &w.write.flow,
                    &w.write.source_id,
                    w.write.direction,
                    &state_after,
                    Some(target_id),
                    now_ms,
                )?;
                let action = if *created { "created" } else { "updated" };
                insert_ledger(
                    c,
                    &w.write.flow,
                    w.write.direction,
                    &w.write.source_id,
                    Some(target_id),
                    action,
                    Some(&w.write.content_hash),
                    Some(&w.write.mapping_version),
                    None,
                    now_ms,
                )?;
            }
            WriteOutcome::Retry {
                outbox_id,
                idempotency_key,
                next_attempt_ms,
                error,
                counted,
            } => {
                // A row replaced by a newer plan keeps its fresh schedule.
                c.execute(
                    "UPDATE outbox SET attempts = attempts + $5, next_attempt_ms = $2, last_error = $3
                     WHERE id = $1 AND idempotency_key = $4",
                    &[
                        outbox_id,
                        next_attempt_ms,
                        error,
                        idempotency_key,
                        &i64::from(*counted),
                    ],
                )?;
            }
            WriteOutcome::Dead {
                outbox_id,
                idempotency_key,
                error,
            } => {
                let Some(w) = take_outbox(c, *outbox_id, idempotency_key)? else {
                    continue;
                };
                insert_dead_letter(
                    c,
                    &super::super::DeadLetter {
                        origin: "outbox",
                        flow: Some(w.write.flow.clone()),
                        system: w.write.system,
                        object: w.write.object.clone(),
                        record_id: w.write.source_id.clone(),
                        payload: Value::Object(w.write.payload.clone()),
                        reason: error.clone(),
                        attempts: w.attempts + 1,
                    },
                    Some(&w.write),
                    now_ms,
                )?;
                insert_ledger(
                    c,
                    &w.write.flow,
                    w.write.direction,
                    &w.write.source_id,
                    w.write.target_id.as_deref(),
                    "dead_letter",
                    Some(&w.write.content_hash),
                    Some(&w.write.mapping_version),
                    Some(error),
                    now_ms,
                )?;
            }
        }
    }
    Ok(())
}

/// Deletes an outbox row and returns it, if it still holds the write with `key`.
fn take_outbox(
    c: &mut impl GenericClient,
    id: i64,
    key: &str,
) -> Result<Option<OutboxItem>, StoreError> {
    let item = query_outbox(c, "WHERE id = $1 AND idempotency_key = $2", &[&id, &key])?.pop();
    if item.is_some() {
        c.execute("DELETE FROM outbox WHERE id = $1", &[&id])?;
    }
    Ok(item)
}

pub(in crate::store) fn next_outbox_due(
    c: &mut impl GenericClient,
) -> Result<Option<i64>, StoreError> {
    Ok(c.query_one("SELECT MIN(next_attempt_ms) FROM outbox", &[])?
        .try_get(0)?)
}

pub(in crate::store) fn next_outbox_due_for(
    c: &mut impl GenericClient,
    system: SystemKind,
) -> Result<Option<i64>, StoreError> {
    Ok(c.query_one(
        "SELECT MIN(next_attempt_ms) FROM outbox WHERE system = $1",
        &[&system.as_str()],
    )?
    .try_get(0)?)
}

pub(in crate::store) fn set_connection_hold(
    c: &mut impl GenericClient,
    system: SystemKind,
    state: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO connection_holds (system, state, detail, since_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (system) DO UPDATE SET state = excluded.state, detail = excluded.detail,
            since_ms = excluded.since_ms",
        &[&system.as_str(), &state, &detail, &now_ms],
    )?;
    Ok(())
}

pub(in crate::store) fn resume_outbox(
    c: &mut impl GenericClient,
    system: SystemKind,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE outbox SET next_attempt_ms = $2 WHERE system = $1 AND next_attempt_ms > $2",
        &[&system.as_str(), &now_ms],
    )?;
    Ok(())
}

pub(in crate::store) fn clear_connection_hold(
    c: &mut impl GenericClient,
    system: SystemKind,
) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM connection_holds WHERE system = $1",
        &[&system.as_str()],
    )?;
    Ok(())
}

// --- credentials (rotated OAuth refresh tokens) ---

pub(in crate::store) fn save_credential(
    c: &mut impl GenericClient,
    name: &str,
    value: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO credentials (name, value, updated_ms) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        &[&name, &value, &now_ms],
    )?;
    Ok(())
}

pub(in crate::store) fn credential(
    c: &mut impl GenericClient,
    name: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        c.query_opt("SELECT value FROM credentials WHERE name = $1", &[&name])?
            .map(|r| r.try_get(0))
            .transpose()?,
    )
}

pub(in crate::store) fn delete_credentials(
    c: &mut impl GenericClient,
    prefix: &str,
) -> Result<usize, StoreError> {
    let n = c.execute(
        "DELETE FROM credentials WHERE name = $1 OR name LIKE $1 || '.%'",
        &[&prefix],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(in crate::store) fn credential_names(
    c: &mut impl GenericClient,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(c.query(
        "SELECT name, updated_ms FROM credentials ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, postgres::Error>>()?)
}

// --- status ---

/// The counts `status` shows, as the triggers of migration step 5 keep them (as SQLite's
/// `counters.rs`): a handful of rows whatever the number of links.
pub(in crate::store) fn counts(
    c: &mut impl GenericClient,
) -> Result<super::super::Counts, StoreError> {
    let mut out = super::super::Counts::default();
    for r in c.query("SELECT name, value FROM gauges", &[])? {
        let value: i64 = r.try_get(1)?;
        match r.try_get::<_, &str>(0)? {
            "links" => out.links = value,
            "inbox_pending" => out.inbox_pending = value,
            "outbox_depth" => out.outbox_depth = value,
            "outbox_retrying" => out.outbox_retrying = value,
            "dead_letters" => out.dead_letters = value,
            // A gauge added by a newer prmsync: not ours to show.
            _ => {}
        }
    }
    out.ledger = c
        .query(
            "SELECT flow, direction, action, count FROM ledger_totals
             ORDER BY flow, direction, action",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(FlowCounts {
                flow: r.try_get(0)?,
                direction: r.try_get(1)?,
                action: r.try_get(2)?,
                count: r.try_get(3)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    out.registrations = c
        .query(
            "SELECT status, count FROM registration_totals WHERE count > 0 ORDER BY status",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, postgres::Error>>()?;
    Ok(out)
}

/// The same counts by scanning every table, for tests that check the kept counters against the
/// truth. `ledger` counts the rows still kept.
pub(in crate::store) fn recount(
    c: &mut impl GenericClient,
) -> Result<super::super::Counts, StoreError> {
    let mut count =
        |sql: &str| -> Result<i64, StoreError> { Ok(c.query_one(sql, &[])?.try_get(0)?) };
    let links = count("SELECT COUNT(*) FROM links")?;
    let inbox_pending = count("SELECT COUNT(*) FROM inbox WHERE state = 'pending'")?;
    let outbox_depth = count("SELECT COUNT(*) FROM outbox")?;
    let outbox_retrying = count("SELECT COUNT(*) FROM outbox WHERE attempts > 0")?;
    let dead_letters = count("SELECT COUNT(*) FROM dead_letters")?;
    let ledger = c
        .query(
            "SELECT flow, direction, action, COUNT(*) FROM ledger
             GROUP BY flow, direction, action ORDER BY flow, direction, action",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(FlowCounts {
                flow: r.try_get(0)?,
                direction: r.try_get(1)?,
                action: r.try_get(2)?,
                count: r.try_get(3)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    let registrations = c
        .query(
            "SELECT COALESCE(status, 'undecided'), COUNT(*) FROM registrations
             GROUP BY 1 ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, postgres::Error>>()?;
    Ok(super::super::Counts {
        links,
        inbox_pending,
        outbox_depth,
        outbox_retrying,
        dead_letters,
        ledger,
        registrations,
    })
}

pub(in crate::store) fn status(
    c: &mut impl GenericClient,
    schema_version: i64,
    now_ms: i64,
) -> Result<StatusReport, StoreError> {
    let counts = counts(c)?;
    let cursors = c
        .query(
            "SELECT system, object, position, updated_ms FROM cursors ORDER BY system, object",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(CursorStatus {
                system: r.try_get(0)?,
                object: r.try_get(1)?,
                position: r.try_get(2)?,
                age_secs: (now_ms - r.try_get::<_, i64>(3)?) / 1000,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    // Rows keep their first id when a newer plan replaces them, so the lowest id is the oldest.
    let oldest: Option<i64> = c
        .query_opt("SELECT created_ms FROM outbox ORDER BY id LIMIT 1", &[])?
        .map(|r| r.try_get(0))
        .transpose()?;
    let mut last_errors: Vec<String> = Vec::new();
    for sql in [
        "SELECT flow || ' ' || source_id || ': ' || last_error FROM outbox
         WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 5",
        "SELECT COALESCE(flow, '-') || ' ' || record_id || ': ' || reason FROM dead_letters
         ORDER BY id DESC LIMIT 5",
    ] {
        for r in c.query(sql, &[])? {
            last_errors.push(r.try_get(0)?);
        }
    }
    let holds = c
        .query(
            "SELECT system, state, detail, since_ms FROM connection_holds ORDER BY system",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(HoldStatus {
                system: r.try_get(0)?,
                state: r.try_get(1)?,
                detail: r.try_get(2)?,
                since_secs: (now_ms - r.try_get::<_, i64>(3)?) / 1000,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    let reviews_pending = counts
        .registrations
        .iter()
        .find(|(status, _)| status == "review")
        .map_or(0, |(_, n)| *n);
    // The size of this state's tables and indexes (its share of the database).
    let bytes: i64 = c
        .query_one(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
            &[],
        )?
        .try_get(0)?;
    let (schema_drift, schema_skips) = super::schema_drift::status(c, now_ms)?;
    Ok(StatusReport {
        schema_drift,
        schema_skips,
        registrations: counts.registrations,
        reviews_pending,
        holds,
        schema_version,
        cursors,
        inbox_pending: counts.inbox_pending,
        outbox_depth: counts.outbox_depth,
        outbox_oldest_age_secs: oldest.map(|ms| (now_ms - ms) / 1000),
        outbox_retrying: counts.outbox_retrying,
        dead_letters: counts.dead_letters,
        links: counts.links,
        last_errors,
        ledger: counts.ledger,
        state_file_bytes: bytes,
    })
}
