//! `prmsync state copy`: moves a SQLite state file's rows into an empty PostgreSQL schema, so an
//! installation moves up without re-syncing.
//!
//! Every table of the SQLite schema is either in [`COPIED`] or in [`NOT_COPIED`] with the reason
//! (a test fails when a migration adds a table to neither). The copy runs in one PostgreSQL
//! transaction, in batches of rows, with the counters' triggers off (one gauge row updated per
//! copied row would grow a long version chain inside one transaction): the counter tables are
//! copied from the file instead (ledger totals survive retention) and checked against a recount.
//! Identity sequences are moved past the copied ids, and every table's row count is compared
//! before the commit. Nothing is written to the SQLite file but the pending migrations a daemon start would
//! apply.

use std::path::Path;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Transaction};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::StoreError;
use super::pg::PgTarget;
use crate::failpoint::FailPoints;

/// The tables copied, parents before the rows that name them (no foreign keys today, but the
/// order reads as the data flows). The counter tables come last (see [`COUNTERS`]).
pub const COPIED: &[&str] = &[
    "cursors",
    "inbox",
    "links",
    "outbox",
    "dead_letters",
    "ledger",
    "credentials",
    "connection_holds",
    "registration_partners",
    "registrations",
    "registration_events",
    "registration_decisions",
    "registration_reviews",
    "partner_credits",
    "credit_evidence",
    "schema_drift",
    "schema_skips",
    "mdf_requests",
    "resyncs",
    "associations",
    "erase_requests",
    "erasures",
    "erased_records",
    "gauges",
    "ledger_totals",
    "registration_totals",
];

/// Tables of the SQLite schema deliberately not copied, with the reason.
pub const NOT_COPIED: &[(&str, &str)] = &[(
    "sqlite_sequence",
    "SQLite's own AUTOINCREMENT bookkeeping; PostgreSQL's identity sequences are set from the copied ids",
)];

/// Counter tables: the migration's starting rows are replaced by the file's values (ledger
/// totals count since the state was created, beyond the lines retention kept).
const COUNTERS: &[&str] = &["gauges", "ledger_totals", "registration_totals"];

/// Why a copy was refused or failed (nothing was committed in PostgreSQL).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("the SQLite state has tables this prmsync does not know how to copy: {0:?}")]
    Unhandled(Vec<String>),
    #[error("column {table}.{column} of the state file has no PostgreSQL counterpart")]
    Column { table: String, column: String },
    #[error("{table}.{column}: {value} cannot be stored as PostgreSQL {ty}")]
    Value {
        table: String,
        column: String,
        value: String,
        ty: String,
    },
    #[error("{table}: {sqlite} row(s) in the state file but {postgres} copied")]
    Mismatch {
        table: String,
        sqlite: i64,
        postgres: i64,
    },
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Store(e.into())
    }
}

impl From<postgres::Error> for CopyError {
    fn from(e: postgres::Error) -> Self {
        CopyError::Store(e.into())
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// (table, rows) in copy order, verified equal on both sides.
    pub tables: Vec<(String, i64)>,
    /// The PostgreSQL schema's migration step.
    pub schema_version: i64,
}

/// Every table of a SQLite state (SQLite's own included), by name.
pub fn sqlite_tables(conn: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// The tables of `tables` neither copied nor listed as not copied.
pub fn unhandled(tables: &[String]) -> Vec<String> {
    tables
        .iter()
        .filter(|t| !COPIED.contains(&t.as_str()) && !NOT_COPIED.iter().any(|(n, _)| n == t))
        .cloned()
        .collect()
}

/// Copies the state file at `from` into the schema of `to` (created when missing), which must
/// hold no prmsync data. The caller holds the state file's lock (no daemon writes meanwhile).
pub fn sqlite_to_postgres(
    from: &Path,
    to: &PgTarget,
    batch_rows: usize,
) -> Result<CopyReport, CopyError> {
    to.validate().map_err(CopyError::Refused)?;
    let mut conn = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|source| StoreError::Open {
        path: from.to_owned(),
        source,
    })?;
    super::busy::install(&conn)?;
    // An older file is carried to this prmsync's schema first, as a daemon start would.
    super::migrate(&mut conn, &FailPoints::none())?;
    let tables = sqlite_tables(&conn)?;
    let missing = unhandled(&tables);
    if !missing.is_empty() {
        return Err(CopyError::Unhandled(missing));
    }
    let mut client =
        Client::connect(&to.url, NoTls).map_err(|e| StoreError::PgConnect(e.to_string()))?;
    refuse_foreign_schema(&mut client, &to.schema)?;
    client.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {0}; SET search_path TO {0}",
        to.schema
    ))?;
    let schema_version =
        super::pg::migrations::apply(&mut client, &to.schema, super::pg::migrations::STEPS)?;
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('prmsync daemon ' || current_schema()))",
            &[],
        )?
        .try_get(0)?;
    if !locked {
        return Err(CopyError::Refused(format!(
            "a prmsync daemon runs on schema {}: stop it first",
            to.schema
        )));
    }
    // One read transaction on the file: every table from the same moment.
    let read = conn.transaction()?;
    let mut tx = client.transaction()?;
    for table in COPIED.iter().filter(|t| !COUNTERS.contains(t)) {
        let n = pg_count(&mut tx, table)?;
        if n > 0 {
            return Err(CopyError::Refused(format!(
                "schema {} already holds prmsync state ({table}: {n} row(s)); copy into an empty \
                 schema (--schema NAME)",
                to.schema
            )));
        }
    }
    let mut report = CopyReport {
        tables: Vec::new(),
        schema_version,
    };
    // The counters come from the file: their triggers stay off while the rows go in (ALTER
    // TABLE inside the transaction: no other session sees them off).
    for table in COPIED {
        tx.batch_execute(&format!("ALTER TABLE {table} DISABLE TRIGGER USER"))?;
    }
    for table in COPIED.iter().filter(|t| tables.iter().any(|n| n == *t)) {
        if COUNTERS.contains(table) {
            tx.execute(&format!("DELETE FROM {table}"), &[])?;
        }
        copy_table(&read, &mut tx, table, batch_rows.max(1))?;
        reset_identity(&mut tx, table)?;
        let sqlite: i64 =
            read.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })?;
        let postgres = pg_count(&mut tx, table)?;
        if sqlite != postgres {
            return Err(CopyError::Mismatch {
                table: (*table).to_owned(),
                sqlite,
                postgres,
            });
        }
        report.tables.push(((*table).to_owned(), postgres));
    }
    for table in COPIED {
        tx.batch_execute(&format!("ALTER TABLE {table} ENABLE TRIGGER USER"))?;
    }
    let (kept, recounted) = (
        super::pg::queries::counts(&mut tx)?,
        super::pg::queries::recount(&mut tx)?,
    );
    let gauges = |c: &super::Counts| {
        [
            c.links,
            c.inbox_pending,
            c.outbox_depth,
            c.outbox_retrying,
            c.dead_letters,
        ]
    };
    if gauges(&kept) != gauges(&recounted) || kept.registrations != recounted.registrations {
        return Err(CopyError::Refused(format!(
            "the state file's counters disagree with its rows (kept {kept:?}, counted \
             {recounted:?}); nothing was copied"
        )));
    }
    tx.commit()?;
    read.finish()?;
    Ok(report)
}

/// Refuses a schema that exists with tables but is not a prmsync state (no migrations table).
fn refuse_foreign_schema(client: &mut Client, schema: &str) -> Result<(), CopyError> {
    let row = client.query_one(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE c.relname = 'schema_migrations')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        &[&schema],
    )?;
    let (tables, ours): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if tables > 0 && ours == 0 {
        return Err(CopyError::Refused(format!(
            "schema {schema} holds {tables} table(s) that are not a prmsync state; name another \
             schema (--schema NAME)"
        )));
    }
    Ok(())
}

fn pg_count(tx: &mut Transaction<'_>, table: &str) -> Result<i64, CopyError> {
    Ok(tx
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
        .try_get(0)?)
}

/// A column's PostgreSQL type, as the copy converts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgType {
    Int,
    Text,
    Bytes,
}

/// Copies one table's rows, `batch_rows` per INSERT.
fn copy_table(
    read: &Connection,
    tx: &mut Transaction<'_>,
    table: &str,
    batch_rows: usize,
) -> Result<(), CopyError> {
    let pg_columns: Vec<(String, String)> = tx
        .query(
            "SELECT a.attname::TEXT, format_type(a.atttypid, NULL)
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, postgres::Error>>()?;
    let columns: Vec<String> = read
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut types = Vec::with_capacity(columns.len());
    for column in &columns {
        let ty = pg_columns
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, t)| t.as_str());
        types.push(match ty {
            Some("bigint" | "integer" | "smallint") => PgType::Int,
            Some("text") => PgType::Text,
            Some("bytea") => PgType::Bytes,
            _ => {
                return Err(CopyError::Column {
                    table: table.to_owned(),
                    column: column.clone(),
                });
            }
        });
    }
    // PostgreSQL takes at most 65535 parameters per statement.
    let per_insert = batch_rows.min(65_535 / columns.len().max(1)).max(1);
    let list = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = read.prepare(&format!("SELECT {list} FROM \"{table}\""))?;
    let mut rows = stmt.query([])?;
    let mut batch: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut in_batch = 0;
    while let Some(row) = rows.next()? {
        for (i, ty) in types.iter().enumerate() {
            batch.push(
                convert(row.get_ref(i)?, *ty).ok_or_else(|| CopyError::Value {
                    table: table.to_owned(),
                    column: columns[i].clone(),
                    value: describe(row.get_ref(i).ok()),
                    ty: format!("{ty:?}"),
                })?,
            );
        }
        in_batch += 1;
        if in_batch == per_insert {
            insert(tx, table, &list, columns.len(), &batch)?;
            batch.clear();
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        insert(tx, table, &list, columns.len(), &batch)?;
    }
    Ok(())
}

fn insert(
    tx: &mut Transaction<'_>,
    table: &str,
    list: &str,
    width: usize,
    values: &[Box<dyn ToSql + Sync>],
) -> Result<(), CopyError> {
    let rows = values.len() / width;
    let mut sql = format!("INSERT INTO {table} ({list}) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * width + c + 1));
        }
        sql.push(')');
    }
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    tx.execute(&sql, &params)?;
    Ok(())
}

/// A SQLite value as the PostgreSQL column's type; `None` when it cannot be one.
fn convert(v: ValueRef<'_>, ty: PgType) -> Option<Box<dyn ToSql + Sync>> {
    Some(match (ty, v) {
        (PgType::Int, ValueRef::Null) => Box::new(None::<i64>),
        (PgType::Int, ValueRef::Integer(i)) => Box::new(Some(i)),
        (PgType::Text, ValueRef::Null) => Box::new(None::<String>),
        (PgType::Text, ValueRef::Text(t)) => Box::new(Some(String::from_utf8(t.to_vec()).ok()?)),
        (PgType::Text, ValueRef::Integer(i)) => Box::new(Some(i.to_string())),
        (PgType::Bytes, ValueRef::Null) => Box::new(None::<Vec<u8>>),
        (PgType::Bytes, ValueRef::Blob(b) | ValueRef::Text(b)) => Box::new(Some(b.to_vec())),
        _ => return None,
    })
}

/// A refused value's kind (never its content: it may be personal data).
fn describe(v: Option<ValueRef<'_>>) -> String {
    match v {
        Some(v) => format!("a {:?} value", v.data_type()),
        None => "a value".into(),
    }
}

/// Moves an identity column's sequence past the copied ids, so new rows never reuse one.
fn reset_identity(tx: &mut Transaction<'_>, table: &str) -> Result<(), CopyError> {
    let identity: Option<String> = tx
        .query_opt(
            "SELECT a.attname::TEXT FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND a.attidentity <> ''",
            &[&table],
        )?
        .map(|r| r.try_get(0))
        .transpose()?;
    if let Some(column) = identity {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
            ),
            &[],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_sqlite_schema_is_copied_or_listed_as_not_copied() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).expect("open");
        crate::store::migrate(&mut conn, &FailPoints::none()).expect("migrate");
        let tables = sqlite_tables(&conn).expect("tables");
        assert_eq!(
            unhandled(&tables),
            Vec::<String>::new(),
            "a migration added a table: copy it (COPIED) or say why not (NOT_COPIED)"
        );
        for t in COPIED {
            assert!(
                tables.iter().any(|n| n == t),
                "{t} is copied but not in the schema"
            );
        }
    }
}
