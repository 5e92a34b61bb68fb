//! SQL for connector credentials the vendors rotate (OAuth refresh tokens).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;

pub(super) fn save(
    tx: &Transaction<'_>,
    name: &str,
    value: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO credentials (name, value, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
    )?
    .execute(params![name, value, now_ms])?;
    Ok(())
}

pub(super) fn load(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM credentials WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?)
}
