//! The SQL behind multi-partner credit: each sourced deal's desired partner credits (written
//! with the decisions that gave them) and the last set each CRM confirmed, so a pass sends only
//! deals whose credits changed.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;

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

/// One deal's credits waiting to be written: the sourcing registration and the desired set
/// (JSON, as `engine::credits` encodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsentCredits {
    pub registration_id: String,
    pub desired: String,
}

/// Records desired credits; an unchanged set keeps its confirmation.
pub(super) fn record(
    tx: &Transaction<'_>,
    rows: &[(String, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO partner_credits (registration_id, desired, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (registration_id) DO UPDATE SET desired = excluded.desired,
             updated_ms = excluded.updated_ms
         WHERE partner_credits.desired IS NOT excluded.desired",
    )?;
    // An empty set only clears credits a deal had; a registration never sourced gets no row.
    let mut clear = tx.prepare_cached(
        "UPDATE partner_credits SET desired = ?2, updated_ms = ?3
         WHERE registration_id = ?1 AND desired IS NOT ?2",
    )?;
    for (id, desired) in rows {
        if desired == EMPTY {
            clear.execute(params![id, desired, now_ms])?;
        } else {
            stmt.execute(params![id, desired, now_ms])?;
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
