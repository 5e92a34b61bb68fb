//! The SQL behind multi-partner credit: each sourced deal's desired partner credits (written
//! with the decisions that gave them) and the last set each CRM confirmed, so a pass sends only
//! deals whose credits changed; and the partners' leads and activities kept as evidence of
//! influence (customer key, partner, time), recorded when they are read from the PRM.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;
use crate::rules::credit::{Evidence, EvidenceItem};

/// Migration step "partner credits": desired and confirmed credits per sourcing registration.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE partner_credits (
    registration_id TEXT PRIMARY KEY,
    desired         TEXT NOT NULL,
    sent            TEXT,
    last_error      TEXT,
    updated_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX partner_credits_unsent ON partner_credits (registration_id) WHERE sent IS NOT desired;
"#;

/// Migration step "credit evidence": partners' leads and activities, by customer key.
pub(super) const EVIDENCE_MIGRATION: &str = r#"
CREATE TABLE credit_evidence (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    dup_key    TEXT NOT NULL,
    partner    TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;
CREATE INDEX credit_evidence_by_key ON credit_evidence (dup_key);
"#;

/// Stores leads and activities as evidence (customer key, item) and forgets `gone` ones (an
/// archived action, a deleted record); each change marks the customer's registration group
/// (and a former group) for deciding again, so its credits follow. A repeat changes nothing.
pub(super) fn record_evidence(
    tx: &Transaction<'_>,
    rows: &[(String, EvidenceItem)],
    gone: &[(Evidence, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut old = tx.prepare_cached(
        "SELECT dup_key, partner, at_ms FROM credit_evidence WHERE kind = ?1 AND id = ?2",
    )?;
    let mut put = tx.prepare_cached(
        "INSERT INTO credit_evidence (kind, id, dup_key, partner, at_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (kind, id) DO UPDATE SET dup_key = excluded.dup_key,
             partner = excluded.partner, at_ms = excluded.at_ms, updated_ms = excluded.updated_ms",
    )?;
    let mut dirty = Vec::new();
    for (key, e) in rows {
        let was: Option<(String, String, i64)> = old
            .query_row(params![e.kind.as_str(), e.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        if was.as_ref() == Some(&(key.clone(), e.partner.clone(), e.at_ms)) {
            continue;
        }
        put.execute(params![
            e.kind.as_str(),
            e.id,
            key,
            e.partner,
            e.at_ms,
            now_ms
        ])?;
        dirty.extend(was.map(|w| w.0));
        dirty.push(key.clone());
    }
    let mut del = tx.prepare_cached(
        "DELETE FROM credit_evidence WHERE kind = ?1 AND id = ?2 RETURNING dup_key",
    )?;
    for (kind, id) in gone {
        if let Some(k) = del
            .query_row(params![kind.as_str(), id], |r| r.get::<_, String>(0))
            .optional()?
        {
            dirty.push(k);
        }
    }
    dirty.sort();
    dirty.dedup();
    for key in dirty {
        super::registrations::mark_group_dirty(tx, &key)?;
    }
    Ok(())
}

/// The evidence of one customer key, or of all with `None`: (key, item), by key then time.
pub(super) fn evidence(
    conn: &Connection,
    key: Option<&str>,
) -> Result<Vec<(String, EvidenceItem)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT dup_key, kind, id, partner, at_ms FROM credit_evidence
         WHERE ?1 IS NULL OR dup_key = ?1 ORDER BY dup_key, at_ms, kind, id",
    )?;
    let rows = stmt.query_map(params![key], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, kind, id, partner, at_ms) = row?;
        if let Some(kind) = Evidence::parse(&kind) {
            out.push((
                key,
                EvidenceItem {
                    kind,
                    id,
                    partner,
                    at_ms,
                },
            ));
        }
    }
    Ok(out)
}

/// Migration step "credit reasons": each credit's reason, kept with the desired set.
pub(super) const REASONS_MIGRATION: &str = r#"
ALTER TABLE partner_credits ADD COLUMN reasons TEXT;
"#;

/// A registration's desired credits as the decider computed them: the set (JSON, as
/// `engine::credits` encodes it; compared with what the CRM confirmed) and the credits with
/// their reasons (JSON, shown by `registrations show`; a changed reason alone sends nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCredits {
    pub registration_id: String,
    pub desired: String,
    pub reasons: String,
}

/// A deal's stored credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredits {
    pub desired: String,
    /// What the CRM last confirmed (`None`: nothing yet).
    pub sent: Option<String>,
    pub reasons: Option<String>,
    pub last_error: Option<String>,
}

/// A deal's stored credits, if it ever had any.
pub(super) fn of(conn: &Connection, id: &str) -> Result<Option<StoredCredits>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT desired, sent, reasons, last_error FROM partner_credits WHERE registration_id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok(StoredCredits {
                desired: r.get(0)?,
                sent: r.get(1)?,
                reasons: r.get(2)?,
                last_error: r.get(3)?,
            })
        })
        .optional()?)
}

/// One deal's credits waiting to be written: the sourcing registration and the desired set
/// (JSON, as `engine::credits` encodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsentCredits {
    pub registration_id: String,
    pub desired: String,
}

/// Records desired credits and their reasons; an unchanged set keeps its confirmation.
pub(super) fn record(
    tx: &Transaction<'_>,
    rows: &[DesiredCredits],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO partner_credits (registration_id, desired, reasons, updated_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (registration_id) DO UPDATE SET desired = excluded.desired,
             reasons = excluded.reasons, updated_ms = excluded.updated_ms
         WHERE partner_credits.desired IS NOT excluded.desired
            OR partner_credits.reasons IS NOT excluded.reasons",
    )?;
    // An empty set only clears credits a deal had; a registration never sourced gets no row.
    let mut clear = tx.prepare_cached(
        "UPDATE partner_credits SET desired = ?2, reasons = ?3, updated_ms = ?4
         WHERE registration_id = ?1 AND (desired IS NOT ?2 OR reasons IS NOT ?3)",
    )?;
    for c in rows {
        let args = params![c.registration_id, c.desired, c.reasons, now_ms];
        if c.desired == EMPTY {
            clear.execute(args)?;
        } else {
            stmt.execute(args)?;
        }
    }
    Ok(())
}

/// The stored form of "no partner credit".
const EMPTY: &str = "[]";

/// What the CRM last confirmed for each of `ids` that has a confirmation.
pub(super) fn sent(
    conn: &Connection,
    ids: &[String],
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT sent FROM partner_credits WHERE registration_id = ?1 AND sent IS NOT NULL",
    )?;
    let mut out = std::collections::BTreeMap::new();
    for id in ids {
        if let Some(s) = stmt
            .query_row(params![id], |r| r.get::<_, String>(0))
            .optional()?
        {
            out.insert(id.clone(), s);
        }
    }
    Ok(out)
}

/// Deals whose desired credits differ from what was confirmed, at most `limit`.
pub(super) fn unsent(conn: &Connection, limit: usize) -> Result<Vec<UnsentCredits>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT registration_id, desired FROM partner_credits WHERE sent IS NOT desired
         ORDER BY registration_id LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok(UnsentCredits {
            registration_id: r.get(0)?,
            desired: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Notes the CRM's confirmation of `desired` (or why it was refused, keeping it unsent).
pub(super) fn complete(
    tx: &Transaction<'_>,
    outcomes: &[(UnsentCredits, Result<(), String>)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (u, outcome) in outcomes {
        match outcome {
            Ok(()) => tx
                .prepare_cached(
                    "UPDATE partner_credits SET sent = ?2, last_error = NULL, updated_ms = ?3
                     WHERE registration_id = ?1 AND desired = ?2",
                )?
                .execute(params![u.registration_id, u.desired, now_ms])?,
            Err(e) => tx
                .prepare_cached(
                    "UPDATE partner_credits SET last_error = ?2, updated_ms = ?3
                     WHERE registration_id = ?1",
                )?
                .execute(params![u.registration_id, e, now_ms])?,
        };
    }
    Ok(())
}
