//! The SQL behind the store's verbs: plain functions over a connection or transaction.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::Value;

use super::{
    InboxItem, Link, LinkMark, OutboxItem, PlanCommit, PlannedWrite, StateDigest, StoreError,
    WriteOp, WriteOutcome,
};
use crate::model::{Change, ChangeKind, Cursor, Direction, ObjectRef, Record, SystemKind};

pub(super) fn insert_changes(
    tx: &Connection,
    changes: &[Change],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut stmt = tx.prepare_cached(
        // Records an erasure left holding a person in their system are not taken in again.
        "INSERT INTO inbox (event_id, system, object, record_id, kind, modified_ms, payload, received_ms)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
         WHERE NOT EXISTS (SELECT 1 FROM erased_records
                           WHERE system = ?2 AND object = ?3 AND record_id = ?4)
         ON CONFLICT (event_id) DO NOTHING",
    )?;
    let mut n = 0;
    for c in changes {
        n += stmt.execute(params![
            c.event_id,
            c.object.system.as_str(),
            c.object.object,
            c.record.id,
            c.kind.as_str(),
            c.record.modified_ms,
            serde_json::to_string(&c.record.fields)?,
            now_ms,
        ])?;
    }
    Ok(n)
}

pub(super) fn set_cursor(
    tx: &Transaction<'_>,
    object: &ObjectRef,
    cursor: &Cursor,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO cursors (system, object, position, updated_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (system, object) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
    )?
    .execute(params![
        object.system.as_str(),
        object.object,
        cursor.encode(),
        now_ms
    ])?;
    Ok(())
}

pub(super) fn cursor(conn: &Connection, object: &ObjectRef) -> Result<Option<Cursor>, StoreError> {
    let pos: Option<String> = conn
        .prepare_cached("SELECT position FROM cursors WHERE system = ?1 AND object = ?2")?
        .query_row(params![object.system.as_str(), object.object], |r| r.get(0))
        .optional()?;
    Ok(pos.as_deref().and_then(Cursor::decode))
}

pub(super) fn pending_inbox(conn: &Connection, limit: usize) -> Result<Vec<InboxItem>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, system, object, record_id, kind, modified_ms, payload
         FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, event_id, system, object, record_id, kind, modified_ms, payload) = row?;
        let (Some(system), Some(kind)) = (SystemKind::parse(&system), ChangeKind::parse(&kind))
        else {
            // Written by a newer prmsync; leave it for that version rather than guess.
            tracing::warn!(inbox_id = id, %system, %kind, "skipping inbox row of unknown system or kind");
            continue;
        };
        items.push(InboxItem {
            id,
            change: Change {
                event_id,
                object: ObjectRef { system, object },
                kind,
                record: Record {
                    id: record_id,
                    modified_ms,
                    fields: serde_json::from_str(&payload)?,
                },
            },
        });
    }
    Ok(items)
}

/// The link columns after the states: modification times, write history, quarantine flag,
/// tombstone.
type LinkExtra = (Option<i64>, Option<i64>, String, bool, Option<String>);

/// A side's state columns: the digest (blob), or the values earlier versions stored (text).
type StateColumns = (Option<Vec<u8>>, String);

const LINK_STATES: &str = "target_digest, target_state, source_digest, source_state";

const LINK_EXTRA: &str = "source_modified_ms, target_modified_ms, write_history,
    EXISTS (SELECT 1 FROM dead_letters d WHERE d.origin = 'quarantine' AND d.flow = links.flow
            AND d.record_id = links.source_id), tombstone";

fn link_states(
    r: &rusqlite::Row<'_>,
    from: usize,
) -> rusqlite::Result<(StateColumns, StateColumns)> {
    Ok((
        (r.get(from)?, r.get(from + 1)?),
        (r.get(from + 2)?, r.get(from + 3)?),
    ))
}

fn link_extra(r: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<LinkExtra> {
    Ok((
        r.get(from)?,
        r.get(from + 1)?,
        r.get(from + 2)?,
        r.get(from + 3)?,
        r.get(from + 4)?,
    ))
}

fn state_from_columns((digest, values): StateColumns) -> Result<StateDigest, StoreError> {
    match digest {
        Some(bytes) => StateDigest::from_bytes(&bytes),
        None => StateDigest::from_text(&values),
    }
    .ok_or(StoreError::Corrupt("link state"))
}

fn link_from_row(
    target_id: Option<String>,
    (target, source): (StateColumns, StateColumns),
    (source_modified_ms, target_modified_ms, history, quarantined, tombstone): LinkExtra,
) -> Result<Link, StoreError> {
    Ok(Link {
        target_id,
        target_state: state_from_columns(target)?,
        source_state: state_from_columns(source)?,
        source_modified_ms,
        target_modified_ms,
        write_history: serde_json::from_str(&history)?,
        quarantined,
        tombstone,
    })
}

/// How many queued writes a link remembers for flip-flop detection.
const WRITE_HISTORY: usize = 16;
/// How long a queued write stays in a link's history: at least the engine's flip window
/// (`engine::FLIP_WINDOW_MS`), so trimming never changes what the flip check sees.
pub(super) const WRITE_HISTORY_WINDOW_MS: i64 = 60 * 60 * 1000;
const _: () = assert!(WRITE_HISTORY_WINDOW_MS >= crate::engine::FLIP_WINDOW_MS);

/// The history without what no flip check can see any more: entries older than the window,
/// except the newest such entry per side (the state the first recent write is compared with).
/// At most [`WRITE_HISTORY`] entries.
pub(super) fn trim_write_history(h: Vec<(i64, String)>, now_ms: i64) -> Vec<(i64, String)> {
    let since = now_ms - WRITE_HISTORY_WINDOW_MS;
    let side = |k: &str| k.split(':').next().unwrap_or_default().to_owned();
    let mut last_old = std::collections::BTreeMap::new();
    for (i, (at, k)) in h.iter().enumerate() {
        if *at < since {
            last_old.insert(side(k), i);
        }
    }
    let kept: Vec<_> = h
        .into_iter()
        .enumerate()
        .filter(|(i, (at, k))| *at >= since || last_old.get(&side(k)) == Some(i))
        .map(|(_, e)| e)
        .collect();
    let skip = kept.len().saturating_sub(WRITE_HISTORY);
    kept.into_iter().skip(skip).collect()
}

fn record_write_history(
    tx: &Transaction<'_>,
    w: &PlannedWrite,
    now_ms: i64,
) -> Result<(), StoreError> {
    let history: Option<String> = tx
        .prepare_cached("SELECT write_history FROM links WHERE flow = ?1 AND source_id = ?2")?
        .query_row(params![w.flow, w.source_id], |r| r.get(0))
        .optional()?;
    let Some(history) = history else {
        return Ok(());
    };
    let mut h: Vec<(i64, String)> = serde_json::from_str(&history)?;
    h.push((now_ms, w.state_key()));
    let h = trim_write_history(h, now_ms);
    tx.prepare_cached("UPDATE links SET write_history = ?3 WHERE flow = ?1 AND source_id = ?2")?
        .execute(params![w.flow, w.source_id, serde_json::to_string(&h)?])?;
    Ok(())
}

pub(super) fn links_by_source(
    conn: &Connection,
    flow: &str,
    source_ids: &[String],
) -> Result<Vec<(String, Link)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT target_id, {LINK_STATES}, {LINK_EXTRA}
             FROM links WHERE flow = ?1 AND source_id = ?2"
    ))?;
    let mut out = Vec::new();
    for sid in source_ids {
        let row = stmt
            .query_row(params![flow, sid], |r| {
                Ok((r.get(0)?, link_states(r, 1)?, link_extra(r, 5)?))
            })
            .optional()?;
        if let Some((tid, states, extra)) = row {
            out.push((sid.clone(), link_from_row(tid, states, extra)?));
        }
    }
    Ok(out)
}

pub(super) fn links_by_target(
    conn: &Connection,
    flow: &str,
    target_ids: &[String],
) -> Result<Vec<(String, String, Link)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT source_id, {LINK_STATES}, {LINK_EXTRA}
             FROM links WHERE flow = ?1 AND target_id = ?2"
    ))?;
    let mut out = Vec::new();
    for tid in target_ids {
        let row = stmt
            .query_row(params![flow, tid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    link_states(r, 1)?,
                    link_extra(r, 5)?,
                ))
            })
            .optional()?;
        if let Some((sid, states, extra)) = row {
            out.push((
                tid.clone(),
                sid,
                link_from_row(Some(tid.clone()), states, extra)?,
            ));
        }
    }
    Ok(out)
}

fn upsert_link_state(
    tx: &Transaction<'_>,
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
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                target_id = COALESCE(excluded.target_id, links.target_id),
                target_digest = excluded.target_digest, target_state = '{}',
                updated_ms = excluded.updated_ms"
        }
        Direction::ToSource => {
            "INSERT INTO links (flow, source_id, target_id, source_digest, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                target_id = COALESCE(excluded.target_id, links.target_id),
                source_digest = excluded.source_digest, source_state = '{}',
                updated_ms = excluded.updated_ms"
        }
    };
    tx.prepare_cached(sql)?.execute(params![
        flow,
        source_id,
        target_id,
        state.to_bytes(),
        now_ms
    ])?;
    Ok(())
}

pub(super) fn commit_plan(
    tx: &Transaction<'_>,
    plan: &PlanCommit,
    now_ms: i64,
) -> Result<(), StoreError> {
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO outbox (idempotency_key, flow, direction, source_id, target_id, system, object,
                                 id_property, payload, state_after, content_hash, mapping_version,
                                 next_attempt_ms, created_ms, op)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)
             ON CONFLICT (flow, direction, source_id) DO UPDATE SET
                idempotency_key = excluded.idempotency_key,
                target_id = COALESCE(excluded.target_id, outbox.target_id),
                payload = excluded.payload, state_after = excluded.state_after,
                content_hash = excluded.content_hash, mapping_version = excluded.mapping_version,
                attempts = 0, next_attempt_ms = excluded.next_attempt_ms, last_error = NULL,
                priority = 0, op = excluded.op",
        )?;
        for w in &plan.writes {
            stmt.execute(params![
                w.idempotency_key(),
                w.flow,
                w.direction.as_str(),
                w.source_id,
                w.target_id,
                w.system.as_str(),
                w.object,
                w.id_property,
                serde_json::to_string(&w.payload)?,
                w.state_after.to_text(),
                w.content_hash,
                w.mapping_version,
                now_ms,
                w.op.as_str(),
            ])?;
        }
    }
    for w in &plan.writes {
        record_write_history(tx, w, now_ms)?;
    }
    {
        let mut later = tx.prepare_cached(
            "UPDATE outbox SET priority = 1 WHERE flow = ?1 AND direction = ?2 AND source_id = ?3",
        )?;
        for (flow, direction, source_id) in &plan.backfill {
            later.execute(params![flow, direction.as_str(), source_id])?;
        }
    }
    for d in &plan.dead_letters {
        insert_dead_letter(tx, d, None, now_ms)?;
    }
    for (d, w) in &plan.quarantined {
        insert_dead_letter(tx, d, Some(w), now_ms)?;
    }
    for l in &plan.ledger {
        insert_ledger(
            tx,
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
        upsert_link_state(tx, &o.flow, &o.source_id, o.side, &o.state, None, now_ms)?;
    }
    for mark in &plan.marks {
        mark_link(tx, mark, now_ms)?;
    }
    super::associations::record(tx, &plan.associations, now_ms)?;
    for (flow, object, since_ms, ids) in &plan.waits {
        super::resync::request(tx, flow, object, *since_ms, Some(ids), now_ms)?;
    }
    for (flow, object, source_id) in &plan.rereads {
        super::resync::request(
            tx,
            flow,
            object,
            0,
            Some(std::slice::from_ref(source_id)),
            now_ms,
        )?;
    }
    {
        let mut version = tx.prepare_cached(
            "INSERT INTO links (flow, source_id, updated_ms, source_modified_ms, target_modified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (flow, source_id) DO UPDATE SET
                source_modified_ms = MAX(COALESCE(links.source_modified_ms, excluded.source_modified_ms),
                                         COALESCE(excluded.source_modified_ms, links.source_modified_ms)),
                target_modified_ms = MAX(COALESCE(links.target_modified_ms, excluded.target_modified_ms),
                                         COALESCE(excluded.target_modified_ms, links.target_modified_ms))",
        )?;
        for (flow, source_id, side, ms) in &plan.versions {
            let (source_ms, target_ms) = match side {
                Direction::ToSource => (Some(*ms), None),
                Direction::ToTarget => (None, Some(*ms)),
            };
            version.execute(params![flow, source_id, now_ms, source_ms, target_ms])?;
        }
    }
    {
        let mut cancel = tx.prepare_cached(
            "DELETE FROM outbox WHERE flow = ?1 AND direction = ?2 AND source_id = ?3",
        )?;
        for (flow, direction, source_id) in &plan.cancelled {
            cancel.execute(params![flow, direction.as_str(), source_id])?;
        }
    }
    let mut done = tx.prepare_cached(
        "UPDATE inbox SET state = 'done', processed_ms = ?2 WHERE id = ?1 AND state = 'pending'",
    )?;
    for id in &plan.inbox_ids {
        done.execute(params![id, now_ms])?;
    }
    Ok(())
}

/// Sets or clears a link's tombstone, or forgets its target record.
fn mark_link(tx: &Transaction<'_>, mark: &LinkMark, now_ms: i64) -> Result<(), StoreError> {
    match mark {
        LinkMark::Tombstone {
            flow,
            source_id,
            reason,
        } => tx
            .prepare_cached(
                "INSERT INTO links (flow, source_id, updated_ms, tombstone) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (flow, source_id) DO UPDATE SET
                    tombstone = excluded.tombstone, updated_ms = excluded.updated_ms",
            )?
            .execute(params![flow, source_id, now_ms, reason])?,
        LinkMark::Relink { flow, source_id } => tx
            .prepare_cached(
                "UPDATE links SET tombstone = NULL, updated_ms = ?3 WHERE flow = ?1 AND source_id = ?2",
            )?
            .execute(params![flow, source_id, now_ms])?,
        LinkMark::ForgetTarget { flow, source_id } => tx
            .prepare_cached(
                "UPDATE links SET target_id = NULL, target_state = '{}', target_digest = NULL,
                    target_modified_ms = NULL, tombstone = NULL, updated_ms = ?3
                 WHERE flow = ?1 AND source_id = ?2",
            )?
            .execute(params![flow, source_id, now_ms])?,
        LinkMark::Retarget {
            flow,
            source_id,
            target_id,
        } => tx
            // An upsert: a Lead conversion moves a record into a flow that had no link for it.
            .prepare_cached(
                "INSERT INTO links (flow, source_id, target_id, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (flow, source_id) DO UPDATE SET target_id = excluded.target_id,
                    target_state = '{}', target_digest = NULL, tombstone = NULL,
                    updated_ms = excluded.updated_ms",
            )?
            .execute(params![flow, source_id, target_id, now_ms])?,
    };
    Ok(())
}

/// Inserts a dead letter; `write` (outbox failures) is kept whole so the write can be replayed.
pub(super) fn insert_dead_letter(
    tx: &Transaction<'_>,
    d: &super::DeadLetter,
    write: Option<&PlannedWrite>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let write = write.map(super::dlq::write_to_json).transpose()?;
    // An inbox failure remembers the version's modification time, from its pending inbox row.
    tx.prepare_cached(
        "INSERT INTO dead_letters (origin, flow, system, object, record_id, payload, reason, attempts,
                                   created_ms, write, modified_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                 (SELECT modified_ms FROM inbox WHERE system = ?3 AND object = ?4 AND record_id = ?5
                  AND state = 'pending' ORDER BY id DESC LIMIT 1))",
    )?
    .execute(params![
        d.origin,
        d.flow,
        d.system.as_str(),
        d.object,
        d.record_id,
        serde_json::to_string(&d.payload)?,
        d.reason,
        d.attempts,
        now_ms,
        write,
    ])?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn insert_ledger(
    tx: &Transaction<'_>,
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
    tx.prepare_cached(
        "INSERT INTO ledger (at_ms, flow, direction, source_id, target_id, action, content_hash, mapping_version, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        now_ms,
        flow,
        direction.as_str(),
        source_id,
        target_id,
        action,
        hash,
        mapping_version,
        detail
    ])?;
    Ok(())
}

pub(super) fn due_outbox(
    conn: &Connection,
    system: SystemKind,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<OutboxItem>, StoreError> {
    query_outbox(
        conn,
        "WHERE system = ?1 AND next_attempt_ms <= ?2 ORDER BY priority, next_attempt_ms, id LIMIT ?3",
        params![system.as_str(), now_ms, limit as i64],
    )
}

fn query_outbox(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<OutboxItem>, StoreError> {
    let sql = format!(
        "SELECT id, attempts, flow, direction, source_id, target_id, system, object, id_property,
                payload, state_after, content_hash, mapping_version, op
         FROM outbox {filter}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let dir: String = r.get(3)?;
        let system: String = r.get(6)?;
        let op: String = r.get(13)?;
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
            attempts: r.get(1)?,
            write: PlannedWrite {
                flow: r.get(2)?,
                direction,
                source_id: r.get(4)?,
                target_id: r.get(5)?,
                system,
                object: r.get(7)?,
                id_property: r.get(8)?,
                payload: serde_json::from_str(&r.get::<_, String>(9)?)?,
                state_after: StateDigest::from_text(&r.get::<_, String>(10)?)
                    .ok_or(StoreError::Corrupt("outbox state"))?,
                content_hash: r.get(11)?,
                mapping_version: r.get(12)?,
                op,
            },
        });
    }
    Ok(out)
}

pub(super) fn complete_writes(
    tx: &Transaction<'_>,
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
                let Some(w) = take_outbox(tx, *outbox_id, idempotency_key)? else {
                    // A newer plan replaced the row while this write was in flight: keep it
                    // queued, and remember where the record lives (a delete's target id is the
                    // one it already had).
                    tx.prepare_cached(
                        "UPDATE links SET target_id = ?2
                         WHERE (flow, source_id) IN
                           (SELECT flow, source_id FROM outbox WHERE id = ?1 AND direction = 'to_target')",
                    )?
                    .execute(params![outbox_id, target_id])?;
                    continue;
                };
                if w.write.op == WriteOp::Delete {
                    let side = match w.write.direction {
                        Direction::ToTarget => "target",
                        Direction::ToSource => "source",
                    };
                    mark_link(
                        tx,
                        &LinkMark::Tombstone {
                            flow: w.write.flow.clone(),
                            source_id: w.write.source_id.clone(),
                            reason: format!("{side} record deleted by prmsync"),
                        },
                        now_ms,
                    )?;
                    insert_ledger(
                        tx,
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
                    super::schema_drift::insert_skips(tx, &w.write, skipped, now_ms)?;
                    std::borrow::Cow::Owned(
                        w.write
                            .state_after
                            .without(skipped.iter().map(|s| s.field.as_str())),
                    )
                };
                upsert_link_state(
                    tx,
                    &w.write.flow,
                    &w.write.source_id,
                    w.write.direction,
                    &state_after,
                    Some(target_id),
                    now_ms,
                )?;
                let action = if *created { "created" } else { "updated" };
                insert_ledger(
                    tx,
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
                tx.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + ?5, next_attempt_ms = ?2, last_error = ?3
                     WHERE id = ?1 AND idempotency_key = ?4",
                )?
                .execute(params![
                    outbox_id,
                    next_attempt_ms,
                    error,
                    idempotency_key,
                    i64::from(*counted)
                ])?;
            }
            WriteOutcome::Dead {
                outbox_id,
                idempotency_key,
                error,
            } => {
                let Some(w) = take_outbox(tx, *outbox_id, idempotency_key)? else {
                    continue;
                };
                insert_dead_letter(
                    tx,
                    &super::DeadLetter {
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
                    tx,
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
fn take_outbox(tx: &Transaction<'_>, id: i64, key: &str) -> Result<Option<OutboxItem>, StoreError> {
    let item = query_outbox(
        tx,
        "WHERE id = ?1 AND idempotency_key = ?2",
        params![id, key],
    )?
    .pop();
    if item.is_some() {
        tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute(params![id])?;
    }
    Ok(item)
}

pub(super) fn next_outbox_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MIN(next_attempt_ms) FROM outbox")?
        .query_row([], |r| r.get(0))?)
}

pub(super) fn next_outbox_due_for(
    conn: &Connection,
    system: SystemKind,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MIN(next_attempt_ms) FROM outbox WHERE system = ?1")?
        .query_row(params![system.as_str()], |r| r.get(0))?)
}

pub(super) fn set_size_limit(conn: &Connection, max_bytes: Option<u64>) -> Result<(), StoreError> {
    /// SQLite's own ceiling on the page count.
    const NO_LIMIT: i64 = 4_294_967_294;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = max_bytes.map_or(NO_LIMIT, |b| {
        (i64::try_from(b).unwrap_or(i64::MAX) / page_size.max(1)).clamp(1, NO_LIMIT)
    });
    // SQLite never lowers the cap below the current size; the next growth then fails.
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    Ok(())
}

pub(super) fn set_connection_hold(
    tx: &Transaction<'_>,
    system: SystemKind,
    state: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO connection_holds (system, state, detail, since_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (system) DO UPDATE SET state = excluded.state, detail = excluded.detail,
            since_ms = excluded.since_ms",
    )?
    .execute(params![system.as_str(), state, detail, now_ms])?;
    Ok(())
}

pub(super) fn resume_outbox(
    tx: &Transaction<'_>,
    system: SystemKind,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE outbox SET next_attempt_ms = ?2 WHERE system = ?1 AND next_attempt_ms > ?2",
    )?
    .execute(params![system.as_str(), now_ms])?;
    Ok(())
}

pub(super) fn clear_connection_hold(
    tx: &Transaction<'_>,
    system: SystemKind,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM connection_holds WHERE system = ?1")?
        .execute(params![system.as_str()])?;
    Ok(())
}

/// A connection prmsync has paused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct HoldStatus {
    pub system: String,
    /// `needs_reauth`: the credential was refused; re-authorise or load a new one.
    pub state: String,
    pub detail: String,
    pub since_secs: i64,
}

/// Counts for one (system, object) cursor.
#[derive(Debug, Clone, Serialize)]
pub struct CursorStatus {
    pub system: String,
    pub object: String,
    pub position: String,
    /// How long ago the cursor last moved, in seconds.
    pub age_secs: i64,
}

/// Counts of ledger actions per flow and direction (totals since the state file was created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowCounts {
    pub flow: String,
    pub direction: String,
    pub action: String,
    pub count: i64,
}

/// Everything `prmsync status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub schema_version: i64,
    pub cursors: Vec<CursorStatus>,
    pub inbox_pending: i64,
    pub outbox_depth: i64,
    pub outbox_oldest_age_secs: Option<i64>,
    pub outbox_retrying: i64,
    pub dead_letters: i64,
    pub links: i64,
    pub last_errors: Vec<String>,
    pub ledger: Vec<FlowCounts>,
    /// Paused connections (empty when every connection runs).
    pub holds: Vec<HoldStatus>,
    /// Deal registrations by decision status (`undecided` when not decided yet).
    pub registrations: Vec<(String, i64)>,
    /// Registrations waiting for a person (`prmsync review list`).
    pub reviews_pending: i64,
    /// The database size in bytes (pages in use; retention and incremental vacuum shrink it).
    pub state_file_bytes: i64,
    /// Mapped CRM fields the last live-schema check found drifted (left out of writes).
    pub schema_drift: Vec<super::DriftStatus>,
    /// Records whose writes left a field out, per flow and field (planned again on recovery).
    pub schema_skips: Vec<super::SkipCount>,
}

pub(super) fn status(conn: &Connection, now_ms: i64) -> Result<StatusReport, StoreError> {
    let counts = if super::counters::kept(conn)? {
        super::counters::read(conn)?
    } else {
        super::counters::recount(conn)?
    };
    let mut cursors = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT system, object, position, updated_ms FROM cursors ORDER BY system, object",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CursorStatus {
                system: r.get(0)?,
                object: r.get(1)?,
                position: r.get(2)?,
                age_secs: (now_ms - r.get::<_, i64>(3)?) / 1000,
            })
        })?;
        for r in rows {
            cursors.push(r?);
        }
    }
    // Rows keep their first id when a newer plan replaces them, so the lowest id is the oldest.
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT created_ms FROM outbox ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let mut last_errors = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT flow || ' ' || source_id || ': ' || last_error FROM outbox
             WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 5",
        )?;
        for r in stmt.query_map([], |r| r.get::<_, String>(0))? {
            last_errors.push(r?);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT COALESCE(flow, '-') || ' ' || record_id || ': ' || reason FROM dead_letters
             ORDER BY id DESC LIMIT 5",
        )?;
        for r in stmt.query_map([], |r| r.get::<_, String>(0))? {
            last_errors.push(r?);
        }
    }
    let mut holds = Vec::new();
    // A state file from before the holds step (status never migrates) has no such table.
    let has_holds: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'connection_holds'",
        [],
        |r| r.get(0),
    )?;
    if has_holds > 0 {
        let mut stmt = conn.prepare_cached(
            "SELECT system, state, detail, since_ms FROM connection_holds ORDER BY system",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(HoldStatus {
                system: r.get(0)?,
                state: r.get(1)?,
                detail: r.get(2)?,
                since_secs: (now_ms - r.get::<_, i64>(3)?) / 1000,
            })
        })?;
        for r in rows {
            holds.push(r?);
        }
    }
    let reviews_pending = counts
        .registrations
        .iter()
        .find(|(status, _)| status == "review")
        .map_or(0, |(_, n)| *n);
    let (schema_drift, schema_skips) = super::schema_drift::status(conn, now_ms)?;
    Ok(StatusReport {
        schema_drift,
        schema_skips,
        registrations: counts.registrations,
        reviews_pending,
        holds,
        schema_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
        cursors,
        inbox_pending: counts.inbox_pending,
        outbox_depth: counts.outbox_depth,
        outbox_oldest_age_secs: oldest.map(|ms| (now_ms - ms) / 1000),
        outbox_retrying: counts.outbox_retrying,
        dead_letters: counts.dead_letters,
        links: counts.links,
        last_errors,
        ledger: counts.ledger,
        state_file_bytes: super::retention::file_pages(conn)?.bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_recent_writes_and_the_newest_older_one_per_side() {
        let w = WRITE_HISTORY_WINDOW_MS;
        let e = |at: i64, k: &str| (at, k.to_owned());
        let h = vec![
            e(0, "to_target:a"),
            e(1, "to_source:x"),
            e(2, "to_target:b"),
            e(w + 5, "to_target:a"),
        ];
        assert_eq!(
            trim_write_history(h, w + 10),
            vec![
                e(1, "to_source:x"),
                e(2, "to_target:b"),
                e(w + 5, "to_target:a")
            ]
        );
        let many: Vec<_> = (0..40).map(|i| e(w + i, "to_target:a")).collect();
        assert_eq!(trim_write_history(many, w + 40).len(), WRITE_HISTORY);
    }
}
