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

pub(super) fn delete(tx: &Transaction<'_>, prefix: &str) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached("DELETE FROM credentials WHERE name = ?1 OR name LIKE ?1 || '.%'")?
        .execute(params![prefix])?)
}

/// Every saved credential's name and when it was saved (never the value).
pub(super) fn list(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name, updated_ms FROM credentials ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
