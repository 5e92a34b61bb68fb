//! The SQL behind associations: the ones flows asked for (kept until both records exist and
//! the vendor confirmed), the ready ones with both records' ids read from the links, and their
//! outcomes with a ledger line each.

use rusqlite::{Connection, Transaction, params};

use super::{StoreError, queries};
use crate::model::{AssociationType, Direction};

/// Migration step "associations": one row per association a flow asked for.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE associations (
    flow        TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    with_flow   TEXT NOT NULL,
    with_key    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    from_id     TEXT,
    to_id       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (flow, source_id, with_flow, with_key, kind)
) STRICT;
CREATE INDEX associations_pending ON associations (flow, source_id) WHERE state = 'pending';
"#;

/// An association a flow's record asks for: the flow's target record of `source_id` with the
/// target record `with_flow` linked to `with_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationIntent {
    pub flow: String,
    pub source_id: String,
    pub with_flow: String,
    pub with_key: String,
    pub kind: AssociationType,
}

/// A pending association whose two records both exist (their links have target ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyAssociation {
    pub intent: AssociationIntent,
    pub from_id: String,
    pub to_id: String,
}

/// What became of a sent association.
#[derive(Debug, Clone, PartialEq)]
pub enum AssociationOutcome {
    Done,
    /// Try again on a later pass (rate limit, 5xx, timeout).
    Retry(String),
    /// Refused for good (an unknown type or label, a record HubSpot does not have).
    Failed(String),
}

/// Records intents; one already known (pending, done or failed) is left as it is.
pub(super) fn record(
    tx: &Transaction<'_>,
    intents: &[AssociationIntent],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO associations (flow, source_id, with_flow, with_key, kind, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    for a in intents {
        stmt.execute(params![
            a.flow,
            a.source_id,
            a.with_flow,
            a.with_key,
            a.kind.key(),
            now_ms
        ])?;
    }
    Ok(())
}

/// Pending associations of `flows` whose records both exist and are live (not tombstoned),
/// oldest first, at most `limit`.
pub(super) fn ready(
    conn: &Connection,
    flows: &[String],
    limit: usize,
) -> Result<Vec<ReadyAssociation>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.flow, a.source_id, a.with_flow, a.with_key, a.kind, f.target_id, t.target_id
         FROM associations a
         JOIN links f ON f.flow = a.flow AND f.source_id = a.source_id
         JOIN links t ON t.flow = a.with_flow AND t.source_id = a.with_key
         WHERE a.state = 'pending' AND a.flow = ?1
           AND f.target_id IS NOT NULL AND f.tombstone IS NULL
           AND t.target_id IS NOT NULL AND t.tombstone IS NULL
         ORDER BY a.updated_ms LIMIT ?2",
    )?;
    let mut out = Vec::new();
    for flow in flows {
        let left = limit.saturating_sub(out.len());
        if left == 0 {
            break;
        }
        let rows = stmt.query_map(params![flow, left as i64], |r| {
            Ok((
                AssociationIntent {
                    flow: r.get(0)?,
                    source_id: r.get(1)?,
                    with_flow: r.get(2)?,
                    with_key: r.get(3)?,
                    kind: AssociationType::Default,
                },
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        for row in rows {
            let (mut intent, kind, from_id, to_id) = row?;
            // A kind this version never wrote cannot be sent; it stays for a newer version.
            let Some(kind) = AssociationType::parse(&kind) else {
                continue;
            };
            intent.kind = kind;
            out.push(ReadyAssociation {
                intent,
                from_id,
                to_id,
            });
        }
    }
    Ok(out)
}

/// Records outcomes: a done or failed association leaves the pending set with a ledger line
/// saying which records and why; a retry counts the attempt and keeps it pending.
pub(super) fn complete(
    tx: &Transaction<'_>,
    outcomes: &[(ReadyAssociation, AssociationOutcome)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE associations SET state = ?6, from_id = ?7, to_id = ?8, attempts = attempts + 1,
                last_error = ?9, updated_ms = ?10
         WHERE flow = ?1 AND source_id = ?2 AND with_flow = ?3 AND with_key = ?4 AND kind = ?5",
    )?;
    for (r, outcome) in outcomes {
        let a = &r.intent;
        let (state, error) = match outcome {
            AssociationOutcome::Done => ("done", None),
            AssociationOutcome::Retry(e) => ("pending", Some(e.as_str())),
            AssociationOutcome::Failed(e) => ("failed", Some(e.as_str())),
        };
        stmt.execute(params![
            a.flow,
            a.source_id,
            a.with_flow,
            a.with_key,
            a.kind.key(),
            state,
            r.from_id,
            r.to_id,
            error,
            now_ms
        ])?;
        let (action, detail) = match outcome {
            AssociationOutcome::Done => (
                "associated",
                format!(
                    "associated with {} record {} ({} {}), {}",
                    a.with_flow, r.to_id, a.with_flow, a.with_key, a.kind
                ),
            ),
            AssociationOutcome::Failed(e) => (
                "association_failed",
                format!(
                    "association with {} {} refused: {e}",
                    a.with_flow, a.with_key
                ),
            ),
            AssociationOutcome::Retry(_) => continue,
        };
        queries::insert_ledger(
            tx,
            &a.flow,
            Direction::ToTarget,
            &a.source_id,
            Some(&r.from_id),
            action,
            None,
            None,
            Some(&detail),
            now_ms,
        )?;
    }
    Ok(())
}
