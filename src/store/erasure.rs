//! Erasure (GDPR Art. 17 / CCPA) in the state file: finding what holds a person (inbox payloads,
//! dead letters), and purging it: the records' staged changes, queued writes and dead letters go,
//! their links forget the remembered values, their ledger lines lose their details, every other
//! text that still contains one of the person's addresses has it replaced, and one audit row
//! that holds no personal data records that it happened. Deleted content is overwritten
//! (`secure_delete`) and the WAL is checkpointed, so the old bytes do not stay in the files.
//! The PostgreSQL backend runs the same steps in `pg/erasure.rs`, followed by a `VACUUM`.

use std::collections::BTreeSet;

use rusqlite::{Connection, Transaction, params};

use super::StoreError;
use crate::model::{ObjectRef, SystemKind};

/// Step "erasure" (issue 11): the audit of erasures. Counts only: no address, no record id.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE erasures (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    origin      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    records     INTEGER NOT NULL,
    actions     TEXT NOT NULL,
    purged_rows INTEGER NOT NULL,
    scrubbed    INTEGER NOT NULL
) STRICT;
CREATE TABLE erased_records (
    system    TEXT NOT NULL,
    object    TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (system, object, record_id)
) STRICT, WITHOUT ROWID;
"#;

/// What replaces a person's address in text that stays.
pub const ERASED: &str = "[erased]";

/// A record prmsync knows, by system, object and id.
pub type RecordKey = (ObjectRef, String);

/// What the purge removes and rewrites.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// Records whose staged changes, dead letters go.
    pub records: Vec<RecordKey>,
    /// (flow, source id) of links whose remembered values go (and their queued writes, ledger
    /// details); with `Some(reason)` the link is also tombstoned.
    pub links: Vec<(String, String, Option<String>)>,
    /// The person's addresses, lower case: any other text holding one has it replaced.
    pub emails: Vec<String>,
    /// Records that keep the person in their system (a field its API cannot change, or policy
    /// `keep`): their changes are not staged again (`erased_records`).
    pub suppress: Vec<RecordKey>,
    /// The erasure request this purge carries out (marked done in the same transaction).
    pub request: Option<i64>,
}

/// The audit row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    pub origin: String,
    /// `email` or `record`: how the person was named, never the value.
    pub subject: String,
    pub records: usize,
    /// Vendor calls made, by kind and system (`hubspot gdpr-delete 1; partnerstack scrub 1`).
    pub actions: String,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub audit_id: i64,
    /// Rows deleted (inbox, outbox, dead letters).
    pub purged_rows: usize,
    /// Text values rewritten (links, ledger details, other text holding an address).
    pub scrubbed: usize,
    /// Whether the WAL checkpoint could not finish (a reader held it); the purge is committed
    /// either way, and the next checkpoint overwrites the old frames.
    pub checkpoint_busy: bool,
    /// PostgreSQL: how many tables were vacuumed after the purge (0 on SQLite).
    pub vacuumed: usize,
}

/// The records whose staged changes or dead letters contain `email` (lower case).
pub(super) fn records_holding(
    conn: &Connection,
    email: &str,
) -> Result<BTreeSet<RecordKey>, StoreError> {
    let mut out = BTreeSet::new();
    for sql in [
        "SELECT DISTINCT system, object, record_id FROM inbox WHERE instr(lower(payload), ?1) > 0",
        "SELECT DISTINCT system, object, record_id FROM dead_letters
         WHERE instr(lower(payload), ?1) > 0 OR instr(lower(COALESCE(write, '')), ?1) > 0",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![email], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (system, object, id) = row?;
            if let Some(system) = SystemKind::parse(&system) {
                out.insert((ObjectRef { system, object }, id));
            }
        }
    }
    Ok(out)
}

/// The newest staged payload of a record, if any.
pub(super) fn latest_payload(
    conn: &Connection,
    record: &RecordKey,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached(
            "SELECT payload FROM inbox WHERE system = ?1 AND object = ?2 AND record_id = ?3
             AND kind = 'upsert' ORDER BY id DESC LIMIT 1",
        )?
        .query_row(
            params![record.0.system.as_str(), record.0.object, record.1],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

/// How many rows a purge of `p` would delete and rewrite (for a dry run).
pub(super) fn count(conn: &Connection, p: &Purge) -> Result<(usize, usize), StoreError> {
    let mut rows = 0;
    let mut scrubbed = 0;
    for (object, id) in &p.records {
        let args = params![object.system.as_str(), object.object, id];
        for sql in [
            "SELECT COUNT(*) FROM inbox WHERE system = ?1 AND object = ?2 AND record_id = ?3",
            "SELECT COUNT(*) FROM dead_letters WHERE system = ?1 AND object = ?2 AND record_id = ?3",
        ] {
            rows += conn.query_row(sql, args, |r| r.get::<_, i64>(0))? as usize;
        }
    }
    for (flow, sid, _) in &p.links {
        rows += conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE flow = ?1 AND source_id = ?2",
            params![flow, sid],
            |r| r.get::<_, i64>(0),
        )? as usize;
        scrubbed += conn.query_row(
            "SELECT COUNT(*) FROM links WHERE flow = ?1 AND source_id = ?2",
            params![flow, sid],
            |r| r.get::<_, i64>(0),
        )? as usize;
    }
    for (table, column) in text_columns(conn)? {
        for email in &p.emails {
            scrubbed += conn.query_row(
                &format!(
                    "SELECT COUNT(*) FROM \"{table}\" WHERE instr(lower(\"{column}\"), ?1) > 0"
                ),
                params![email],
                |r| r.get::<_, i64>(0),
            )? as usize;
        }
    }
    Ok((rows, scrubbed))
}

/// Every TEXT column that is not part of a primary key, in every table but the audit.
fn text_columns(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name NOT IN ('erasures', 'erased_records') ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<(String, String, i64)> = conn
            .prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?
            .query_map(params![t], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        out.extend(
            cols.into_iter()
                .filter(|(_, ty, pk)| ty.eq_ignore_ascii_case("TEXT") && *pk == 0)
                .map(|(c, _, _)| (t.clone(), c)),
        );
    }
    Ok(out)
}

/// `text` with every occurrence of `needle` (lower case), in any case, replaced by [`ERASED`].
pub fn replace_ignoring_case(text: &str, needle: &str) -> String {
    if needle.is_empty() {
        return text.to_owned();
    }
    let lower = text.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII: fall back to a lower-cased copy then.
    if lower.len() != text.len() {
        return lower.replace(needle, ERASED);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(needle) {
        out.push_str(&text[rest..at]);
        out.push_str(ERASED);
        rest = at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

/// Purges `p` and writes the audit row, in one transaction.
pub(super) fn purge(
    tx: &Transaction<'_>,
    p: &Purge,
    audit: &Audit,
    now_ms: i64,
) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport::default();
    for (object, id) in &p.records {
        let args = params![object.system.as_str(), object.object, id];
        report.purged_rows += tx.execute(
            "DELETE FROM inbox WHERE system = ?1 AND object = ?2 AND record_id = ?3",
            args,
        )?;
        report.purged_rows += tx.execute(
            "DELETE FROM dead_letters WHERE system = ?1 AND object = ?2 AND record_id = ?3",
            args,
        )?;
    }
    for (flow, sid, tombstone) in &p.links {
        report.purged_rows += tx.execute(
            "DELETE FROM outbox WHERE flow = ?1 AND source_id = ?2",
            params![flow, sid],
        )?;
        report.purged_rows += tx.execute(
            "DELETE FROM dead_letters WHERE flow = ?1 AND record_id = ?2",
            params![flow, sid],
        )?;
        report.scrubbed += tx.execute(
            "UPDATE links SET target_state = '{}', source_state = '{}', target_digest = NULL,
                 source_digest = NULL, write_history = '[]',
                 tombstone = COALESCE(?3, tombstone), updated_ms = ?4
             WHERE flow = ?1 AND source_id = ?2",
            params![flow, sid, tombstone, now_ms],
        )?;
        report.scrubbed += tx.execute(
            "UPDATE ledger SET detail = NULL, content_hash = NULL
             WHERE flow = ?1 AND source_id = ?2 AND detail IS NOT NULL",
            params![flow, sid],
        )?;
    }
    for (object, id) in &p.suppress {
        tx.execute(
            "INSERT INTO erased_records (system, object, record_id) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![object.system.as_str(), object.object, id],
        )?;
    }
    // Anything else that still holds an address: replaced where it stands.
    for (table, column) in text_columns(tx)? {
        for email in &p.emails {
            let hits: Vec<String> = tx
                .prepare(&format!(
                    "SELECT DISTINCT \"{column}\" FROM \"{table}\" WHERE instr(lower(\"{column}\"), ?1) > 0"
                ))?
                .query_map(params![email], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for old in hits {
                let new = replace_ignoring_case(&old, email);
                report.scrubbed += tx.execute(
                    &format!("UPDATE \"{table}\" SET \"{column}\" = ?1 WHERE \"{column}\" = ?2"),
                    params![new, old],
                )?;
            }
        }
    }
    tx.execute(
        "INSERT INTO erasures (at_ms, origin, subject, records, actions, purged_rows, scrubbed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            now_ms,
            audit.origin,
            audit.subject,
            i64::try_from(audit.records).unwrap_or(i64::MAX),
            audit.actions,
            i64::try_from(report.purged_rows).unwrap_or(i64::MAX),
            i64::try_from(report.scrubbed).unwrap_or(i64::MAX),
        ],
    )?;
    report.audit_id = tx.last_insert_rowid();
    if let Some(id) = p.request {
        super::erase_requests::done(tx, id, report.audit_id, now_ms)?;
    }
    Ok(report)
}

/// Runs [`purge`] with deleted content overwritten (`secure_delete`), then checkpoints the WAL
/// into the file and truncates it, so no old copy of the purged pages stays behind.
pub(super) fn purge_securely(
    conn: &mut Connection,
    p: &Purge,
    audit: &Audit,
    now_ms: i64,
) -> Result<PurgeReport, StoreError> {
    conn.pragma_update(None, "secure_delete", "ON")?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let r = purge(&tx, p, audit, now_ms)?;
        tx.commit()?;
        Ok::<_, StoreError>(r)
    })();
    let mut report = result?;
    // Pages freed during the purge are zeroed; rewrite the whole file's free space too.
    conn.execute_batch("PRAGMA incremental_vacuum;")?;
    conn.pragma_update(None, "secure_delete", "FAST")?;
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    report.checkpoint_busy = busy != 0;
    Ok(report)
}

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub audit: Audit,
    pub purged_rows: i64,
    pub scrubbed: i64,
}

/// The audit rows, newest first.
pub(super) fn audits(conn: &Connection, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
    let rows = conn
        .prepare(
            "SELECT id, at_ms, origin, subject, records, actions, purged_rows, scrubbed
             FROM erasures ORDER BY id DESC LIMIT ?1",
        )?
        .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                audit: Audit {
                    origin: r.get(2)?,
                    subject: r.get(3)?,
                    records: usize::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    actions: r.get(5)?,
                },
                purged_rows: r.get(6)?,
                scrubbed: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_replaced_in_any_case_and_the_rest_kept() {
        assert_eq!(
            replace_ignoring_case(
                r#"{"e":"Sam.Buyer1@Acme.example","n":"x"}"#,
                "sam.buyer1@acme.example"
            ),
            r#"{"e":"[erased]","n":"x"}"#
        );
        assert_eq!(
            replace_ignoring_case("nothing here", "a@b.c"),
            "nothing here"
        );
    }
}
