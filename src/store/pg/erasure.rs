//! PostgreSQL SQL for erasure: the same finding, counting and purging as `store/erasure.rs`, then
//! `VACUUM` on the tables the purge touched (PostgreSQL keeps deleted and rewritten row versions
//! in the table files until a vacuum removes them; see docs/postgres.md, "Erasure").

use std::collections::BTreeSet;

use postgres::{Client, GenericClient, Transaction};

use super::super::StoreError;
use super::super::erasure::{
    Audit, AuditRow, Purge, PurgeReport, RecordKey, replace_ignoring_case,
};
use crate::model::{ObjectRef, SystemKind};

/// The records whose staged changes or dead letters contain `email` (lower case).
pub(in crate::store) fn records_holding(
    c: &mut impl GenericClient,
    email: &str,
) -> Result<BTreeSet<RecordKey>, StoreError> {
    let mut out = BTreeSet::new();
    for sql in [
        "SELECT DISTINCT system, object, record_id FROM inbox WHERE strpos(lower(payload), $1) > 0",
        "SELECT DISTINCT system, object, record_id FROM dead_letters
         WHERE strpos(lower(payload), $1) > 0 OR strpos(lower(COALESCE(write, '')), $1) > 0",
    ] {
        for r in c.query(sql, &[&email])? {
            let system: String = r.try_get(0)?;
            if let Some(system) = SystemKind::parse(&system) {
                out.insert((
                    ObjectRef {
                        system,
                        object: r.try_get(1)?,
                    },
                    r.try_get(2)?,
                ));
            }
        }
    }
    Ok(out)
}

/// The newest staged payload of a record, if any.
pub(in crate::store) fn latest_payload(
    c: &mut impl GenericClient,
    record: &RecordKey,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
    let text: Option<String> = c
        .query_opt(
            "SELECT payload FROM inbox WHERE system = $1 AND object = $2 AND record_id = $3
             AND kind = 'upsert' ORDER BY id DESC LIMIT 1",
            &[&record.0.system.as_str(), &record.0.object, &record.1],
        )?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

fn count_one(
    c: &mut impl GenericClient,
    sql: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<usize, StoreError> {
    let n: i64 = c.query_one(sql, args)?.try_get(0)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// How many rows a purge of `p` would delete and rewrite (for a dry run).
pub(in crate::store) fn count(
    c: &mut impl GenericClient,
    p: &Purge,
) -> Result<(usize, usize), StoreError> {
    let mut rows = 0;
    let mut scrubbed = 0;
    for (object, id) in &p.records {
        let system = object.system.as_str();
        for sql in [
            "SELECT COUNT(*) FROM inbox WHERE system = $1 AND object = $2 AND record_id = $3",
            "SELECT COUNT(*) FROM dead_letters WHERE system = $1 AND object = $2 AND record_id = $3",
        ] {
            rows += count_one(c, sql, &[&system, &object.object, id])?;
        }
    }
    for (flow, sid, _) in &p.links {
        rows += count_one(
            c,
            "SELECT COUNT(*) FROM outbox WHERE flow = $1 AND source_id = $2",
            &[flow, sid],
        )?;
        scrubbed += count_one(
            c,
            "SELECT COUNT(*) FROM links WHERE flow = $1 AND source_id = $2",
            &[flow, sid],
        )?;
    }
    for (table, column) in text_columns(c)? {
        for email in &p.emails {
            scrubbed += count_one(
                c,
                &format!(
                    "SELECT COUNT(*) FROM \"{table}\" WHERE strpos(lower(\"{column}\"), $1) > 0"
                ),
                &[email],
            )?;
        }
    }
    Ok((rows, scrubbed))
}

/// Every TEXT column that is not part of a primary key, in every table of this state but the
/// audit and the migrations' own.
fn text_columns(c: &mut impl GenericClient) -> Result<Vec<(String, String)>, StoreError> {
    // The catalog, not information_schema: its views join every schema's constraints and take
    // seconds on a server with many schemas.
    Ok(c.query(
        "SELECT c.relname::TEXT, a.attname::TEXT
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname = current_schema() AND c.relkind = 'r'
           AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype
           AND c.relname NOT IN ('erasures', 'erased_records', 'schema_migrations')
           AND NOT EXISTS (SELECT 1 FROM pg_index i
                           WHERE i.indrelid = c.oid AND i.indisprimary
                             AND a.attnum = ANY (i.indkey))
         ORDER BY 1, 2",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, postgres::Error>>()?)
}

/// Purges `p` and writes the audit row, in one transaction; returns the report and the tables
/// it changed.
fn purge(
    tx: &mut Transaction<'_>,
    p: &Purge,
    audit: &Audit,
    now_ms: i64,
) -> Result<(PurgeReport, BTreeSet<String>), StoreError> {
    let mut report = PurgeReport::default();
    let mut touched = BTreeSet::new();
    let mut note = |table: &str, n: u64| {
        if n > 0 {
            touched.insert(table.to_owned());
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    for (object, id) in &p.records {
        let system = object.system.as_str();
        let args: &[&(dyn postgres::types::ToSql + Sync)] = &[&system, &object.object, id];
        let n = tx.execute(
            "DELETE FROM inbox WHERE system = $1 AND object = $2 AND record_id = $3",
            args,
        )?;
        report.purged_rows += note("inbox", n);
        let n = tx.execute(
            "DELETE FROM dead_letters WHERE system = $1 AND object = $2 AND record_id = $3",
            args,
        )?;
        report.purged_rows += note("dead_letters", n);
    }
    for (flow, sid, tombstone) in &p.links {
        let n = tx.execute(
            "DELETE FROM outbox WHERE flow = $1 AND source_id = $2",
            &[flow, sid],
        )?;
        report.purged_rows += note("outbox", n);
        let n = tx.execute(
            "DELETE FROM dead_letters WHERE flow = $1 AND record_id = $2",
            &[flow, sid],
        )?;
        report.purged_rows += note("dead_letters", n);
        let n = tx.execute(
            "UPDATE links SET target_state = '{}', source_state = '{}', target_digest = NULL,
                 source_digest = NULL, write_history = '[]',
                 tombstone = COALESCE($3, tombstone), updated_ms = $4
             WHERE flow = $1 AND source_id = $2",
            &[flow, sid, tombstone, &now_ms],
        )?;
        report.scrubbed += note("links", n);
        let n = tx.execute(
            "UPDATE ledger SET detail = NULL, content_hash = NULL
             WHERE flow = $1 AND source_id = $2 AND detail IS NOT NULL",
            &[flow, sid],
        )?;
        report.scrubbed += note("ledger", n);
    }
    for (object, id) in &p.suppress {
        tx.execute(
            "INSERT INTO erased_records (system, object, record_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&object.system.as_str(), &object.object, id],
        )?;
    }
    // Anything else that still holds an address: replaced where it stands.
    for (table, column) in text_columns(tx)? {
        for email in &p.emails {
            let hits: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT DISTINCT \"{column}\" FROM \"{table}\" WHERE strpos(lower(\"{column}\"), $1) > 0"
                    ),
                    &[email],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            for old in hits {
                let new = replace_ignoring_case(&old, email);
                let n = tx.execute(
                    &format!("UPDATE \"{table}\" SET \"{column}\" = $1 WHERE \"{column}\" = $2"),
                    &[&new, &old],
                )?;
                report.scrubbed += note(&table, n);
            }
        }
    }
    let big = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    report.audit_id = tx
        .query_one(
            "INSERT INTO erasures (at_ms, origin, subject, records, actions, purged_rows, scrubbed)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &now_ms,
                &audit.origin,
                &audit.subject,
                &big(audit.records),
                &audit.actions,
                &big(report.purged_rows),
                &big(report.scrubbed),
            ],
        )?
        .try_get(0)?;
    if let Some(id) = p.request {
        tx.execute(
            "UPDATE erase_requests SET subject = split_part(subject, ':', 1),
                 done_ms = $2, audit_id = $3, error = NULL
             WHERE id = $1",
            &[&id, &now_ms, &report.audit_id],
        )?;
    }
    Ok((report, touched))
}

/// Runs [`purge`] in one synchronously committed transaction, then `VACUUM`s every table it
/// changed, so the old row versions holding the person's data are removed from the tables
/// (not only hidden from queries) before this returns.
pub(in crate::store) fn purge_and_vacuum(
    c: &mut Client,
    p: &Purge,
    audit: &Audit,
    now_ms: i64,
) -> Result<PurgeReport, StoreError> {
    let mut tx = c.transaction()?;
    let (mut report, touched) = purge(&mut tx, p, audit, now_ms)?;
    tx.commit()?;
    if !touched.is_empty() {
        // VACUUM cannot run in a transaction block; table names come from the catalog or are
        // this module's own (never user input).
        let tables: Vec<String> = touched.iter().map(|t| format!("\"{t}\"")).collect();
        c.batch_execute(&format!("VACUUM {}", tables.join(", ")))?;
    }
    report.vacuumed = touched.len();
    Ok(report)
}

/// The audit rows, newest first.
pub(in crate::store) fn audits(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    c.query(
        "SELECT id, at_ms, origin, subject, records, actions, purged_rows, scrubbed
         FROM erasures ORDER BY id DESC LIMIT $1",
        &[&i64::try_from(limit).unwrap_or(i64::MAX)],
    )?
    .iter()
    .map(|r| {
        Ok(AuditRow {
            id: r.try_get(0)?,
            at_ms: r.try_get(1)?,
            audit: Audit {
                origin: r.try_get(2)?,
                subject: r.try_get(3)?,
                records: usize::try_from(r.try_get::<_, i64>(4)?).unwrap_or(0),
                actions: r.try_get(5)?,
            },
            purged_rows: r.try_get(6)?,
            scrubbed: r.try_get(7)?,
        })
    })
    .collect()
}
