//! Dead letters as operators handle them: list, show, replay and drop (the SQL behind `prmsync dlq`).

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::{PlannedWrite, Store, StoreError, WriteOp};
use crate::model::{Direction, SystemKind};

/// One dead letter, as `prmsync dlq list|show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    /// `inbox`: the change could not be planned (mapping, rules); `outbox`: the write failed;
    /// `quarantine`: the record's values kept flipping back and forth (replay releases it);
    /// `poll`: a list item the connector could not read (no key or time; not replayable).
    pub origin: String,
    pub flow: Option<String>,
    pub system: String,
    pub object: String,
    pub record_id: String,
    pub reason: String,
    pub attempts: u32,
    pub created_ms: i64,
    pub payload: Value,
    /// Whether `replay` can put it back (dead letters from before replay support cannot).
    pub replayable: bool,
}

/// Which dead letters a verb acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Failed writes put back in the outbox (sent on the next pass).
    pub requeued_writes: usize,
    /// Unplannable changes put back in the inbox (planned again with today's mappings).
    pub restaged_changes: usize,
    /// Failed writes not requeued because a newer write for the record is already queued.
    pub superseded: usize,
    /// Ids that name no dead letter.
    pub missing: Vec<i64>,
    /// Ids kept because they lack what a replay needs.
    pub not_replayable: Vec<i64>,
}

pub(super) fn write_to_json(w: &PlannedWrite) -> Result<String, StoreError> {
    Ok(serde_json::to_string(&json!({
        "flow": w.flow,
        "direction": w.direction.as_str(),
        "source_id": w.source_id,
        "target_id": w.target_id,
        "system": w.system.as_str(),
        "object": w.object,
        "id_property": w.id_property,
        "payload": w.payload,
        "state_after": w.state_after.to_text(),
        "content_hash": w.content_hash,
        "mapping_version": w.mapping_version,
        "op": w.op.as_str(),
    }))?)
}

/// The write stored with a dead letter; `None` when a field is missing or unknown (a newer
/// prmsync wrote it), so the letter is kept rather than guessed at.
pub(super) fn write_from_json(s: &str) -> Result<Option<PlannedWrite>, StoreError> {
    let v: Value = serde_json::from_str(s)?;
    Ok(parse_write(&v))
}

fn parse_write(v: &Value) -> Option<PlannedWrite> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let object = |k: &str| v.get(k).and_then(Value::as_object).cloned();
    Some(PlannedWrite {
        flow: text("flow")?,
        direction: Direction::parse(&text("direction")?)?,
        source_id: text("source_id")?,
        target_id: text("target_id"),
        system: SystemKind::parse(&text("system")?)?,
        object: text("object")?,
        id_property: text("id_property"),
        payload: object("payload")?,
        // A digest's text, or (written by earlier versions) the values themselves.
        state_after: match v.get("state_after")? {
            Value::String(s) => super::StateDigest::from_text(s)?,
            Value::Object(values) => super::StateDigest::of(values),
            _ => return None,
        },
        content_hash: text("content_hash")?,
        mapping_version: text("mapping_version")?,
        // Letters from before deletes existed have no op: they were upserts.
        op: match text("op") {
            Some(op) => WriteOp::parse(&op)?,
            None => WriteOp::Upsert,
        },
    })
}

const COLUMNS: &str = "id, origin, flow, system, object, record_id, reason, attempts, created_ms,
                       payload, write IS NOT NULL OR origin = 'inbox'";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(DeadLetterRow, String)> {
    Ok((
        DeadLetterRow {
            id: r.get(0)?,
            origin: r.get(1)?,
            flow: r.get(2)?,
            system: r.get(3)?,
            object: r.get(4)?,
            record_id: r.get(5)?,
            reason: r.get(6)?,
            attempts: r.get(7)?,
            created_ms: r.get(8)?,
            payload: Value::Null,
            replayable: r.get(10)?,
        },
        r.get(9)?,
    ))
}

fn finish((mut d, payload): (DeadLetterRow, String)) -> Result<DeadLetterRow, StoreError> {
    d.payload = serde_json::from_str(&payload)?;
    Ok(d)
}

fn list(conn: &Connection, limit: usize) -> Result<Vec<DeadLetterRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM dead_letters ORDER BY id LIMIT ?1"
    ))?;
    let rows = stmt.query_map(params![limit as i64], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(finish(r?)?);
    }
    Ok(out)
}

fn show(conn: &Connection, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
    conn.prepare(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"))?
        .query_row(params![id], row)
        .optional()?
        .map(finish)
        .transpose()
}

fn selected(tx: &Transaction<'_>, sel: &Selection) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let all: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM dead_letters ORDER BY id")?;
        let ids = stmt.query_map([], |r| r.get(0))?;
        ids.collect::<Result<_, _>>()?
    };
    Ok(match sel {
        Selection::All => (all, Vec::new()),
        Selection::Ids(ids) => ids.iter().partition(|id| all.contains(id)),
    })
}

fn replay(tx: &Transaction<'_>, sel: &Selection, now_ms: i64) -> Result<ReplayReport, StoreError> {
    let (ids, missing) = selected(tx, sel)?;
    let mut report = ReplayReport {
        missing,
        ..ReplayReport::default()
    };
    for id in ids {
        let (origin, system, object, record_id, payload, write, modified_ms): (
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
        ) = tx.query_row(
            "SELECT origin, system, object, record_id, payload, write,
                    COALESCE(modified_ms, created_ms)
             FROM dead_letters WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )?;
        if origin == "quarantine" {
            // Released by the operator: the flip count starts again.
            tx.prepare_cached(
                "UPDATE links SET write_history = '[]'
                 WHERE (flow, source_id) IN (SELECT flow, record_id FROM dead_letters WHERE id = ?1)",
            )?
            .execute(params![id])?;
        }
        let write = write.as_deref().map(write_from_json).transpose()?.flatten();
        if let Some(w) = write {
            let n = tx
                .prepare_cached(
                    "INSERT INTO outbox (idempotency_key, flow, direction, source_id, target_id,
                                         system, object, id_property, payload, state_after,
                                         content_hash, mapping_version, next_attempt_ms, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
                     ON CONFLICT (flow, direction, source_id) DO NOTHING",
                )?
                .execute(params![
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
                ])?;
            if n == 1 {
                report.requeued_writes += 1;
            } else {
                report.superseded += 1;
            }
        } else if origin == "inbox" {
            tx.prepare_cached(
                "INSERT INTO inbox (event_id, system, object, record_id, kind, modified_ms, payload,
                                    received_ms)
                 VALUES (?1, ?2, ?3, ?4, 'upsert', ?5, ?6, ?7)",
            )?
            .execute(params![
                format!("replay:{id}:{now_ms}"),
                system,
                object,
                record_id,
                modified_ms,
                payload,
                now_ms
            ])?;
            report.restaged_changes += 1;
        } else {
            report.not_replayable.push(id);
            continue;
        }
        tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
            .execute(params![id])?;
    }
    Ok(report)
}

fn drop_letters(tx: &Transaction<'_>, sel: &Selection) -> Result<(usize, Vec<i64>), StoreError> {
    let (ids, missing) = selected(tx, sel)?;
    let mut stmt = tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
    for id in &ids {
        stmt.execute(params![id])?;
    }
    Ok((ids.len(), missing))
}

impl Store {
    /// The oldest dead letters, at most `limit`.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRow>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| super::pg::dlq::list(c, limit)).await;
        }
        self.call(move |conn| list(conn, limit)).await
    }

    /// One dead letter with its payload.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| super::pg::dlq::show(c, id)).await;
        }
        self.call(move |conn| show(conn, id)).await
    }

    /// Puts dead letters back: failed writes into the outbox, unplannable changes into the inbox.
    pub async fn replay_dead_letters(
        &self,
        selection: Selection,
        now_ms: i64,
    ) -> Result<ReplayReport, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| super::pg::dlq::replay(tx, &selection, now_ms))
                .await;
        }
        self.write(move |tx| replay(tx, &selection, now_ms)).await
    }

    /// Dead-letters list items a poll could not read (origin `poll`), each once: an item equal
    /// to one already dead-lettered (same system, object, record id and payload) is skipped, as
    /// the poller meets it again on every pass. Returns how many were new.
    pub async fn dead_letter_poll_rejects(
        &self,
        rejects: Vec<super::DeadLetter>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| super::pg::dlq::poll_rejects(tx, &rejects, now_ms))
                .await;
        }
        self.write(move |tx| {
            let mut new = 0;
            for d in &rejects {
                let payload = serde_json::to_string(&d.payload)?;
                let seen: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE origin = ?1 AND system = ?2
                         AND object = ?3 AND record_id = ?4 AND payload = ?5)",
                    )?
                    .query_row(
                        params![d.origin, d.system.as_str(), d.object, d.record_id, payload],
                        |r| r.get(0),
                    )?;
                if !seen {
                    super::queries::insert_dead_letter(tx, d, None, now_ms)?;
                    new += 1;
                }
            }
            Ok(new)
        })
        .await
    }

    /// Deletes dead letters for good; returns how many went and the ids that named none.
    pub async fn drop_dead_letters(
        &self,
        selection: Selection,
    ) -> Result<(usize, Vec<i64>), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| super::pg::dlq::drop_letters(tx, &selection))
                .await;
        }
        self.write(move |tx| drop_letters(tx, &selection)).await
    }
}
