//! Resync requests (`prmsync resync`): which flow's source to read again, from when or which
//! records, and how far the read has come (the next page), so a restart continues it.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{StoreError, queries};
use crate::model::{Change, ObjectRef, SystemKind};

/// Step "resync" (issue 11): one row per requested resync; `page` is the vendor's token for the
/// next page while a read is under way, `finished_ms` is set when the last page is staged.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE resyncs (
    id           INTEGER PRIMARY KEY,
    flow         TEXT NOT NULL,
    system       TEXT NOT NULL,
    object       TEXT NOT NULL,
    since_ms     INTEGER NOT NULL,
    ids          TEXT,
    page         TEXT,
    pages        INTEGER NOT NULL DEFAULT 0,
    staged       INTEGER NOT NULL DEFAULT 0,
    requested_ms INTEGER NOT NULL,
    finished_ms  INTEGER
) STRICT;
CREATE INDEX resyncs_open ON resyncs (system, object, id) WHERE finished_ms IS NULL;
"#;

/// A resync of one flow: its source object read again from `since_ms` (only `ids`, when given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    pub id: i64,
    pub flow: String,
    pub object: ObjectRef,
    pub since_ms: i64,
    /// Only these source records (`None`: every record modified since `since_ms`).
    pub ids: Option<Vec<String>>,
    /// The next page's token while the read is under way.
    pub page: Option<String>,
    pub pages: i64,
    pub staged: i64,
    pub requested_ms: i64,
    pub finished_ms: Option<i64>,
}

pub(super) fn request(
    tx: &Transaction<'_>,
    flow: &str,
    object: &ObjectRef,
    since_ms: i64,
    ids: Option<&[String]>,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let ids = ids.map(serde_json::to_string).transpose()?;
    tx.prepare_cached(
        "INSERT INTO resyncs (flow, system, object, since_ms, ids, requested_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        flow,
        object.system.as_str(),
        object.object,
        since_ms,
        ids,
        now_ms
    ])?;
    Ok(tx.last_insert_rowid())
}

const COLUMNS: &str =
    "id, flow, system, object, since_ms, ids, page, pages, staged, requested_ms, finished_ms";

type Raw = (
    i64,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    Option<i64>,
);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

/// A stored row as a resync; `None` for a system this version does not know (a newer prmsync
/// wrote it: left for that version).
fn decode(raw: Raw) -> Result<Option<Resync>, StoreError> {
    let (id, flow, system, object, since_ms, ids, page, pages, staged, requested_ms, finished_ms) =
        raw;
    let Some(system) = SystemKind::parse(&system) else {
        tracing::warn!(resync = id, %system, "skipping a resync of an unknown system");
        return Ok(None);
    };
    Ok(Some(Resync {
        id,
        flow,
        object: ObjectRef { system, object },
        since_ms,
        ids: ids.map(|s| serde_json::from_str(&s)).transpose()?,
        page,
        pages,
        staged,
        requested_ms,
        finished_ms,
    }))
}

/// The oldest unfinished resync of `object`, if any.
pub(super) fn next_open(
    conn: &Connection,
    object: &ObjectRef,
) -> Result<Option<Resync>, StoreError> {
    let raw = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM resyncs WHERE system = ?1 AND object = ?2 AND finished_ms IS NULL
             ORDER BY id LIMIT 1"
        ))?
        .query_row(params![object.system.as_str(), object.object], row)
        .optional()?;
    Ok(raw.map(decode).transpose()?.flatten())
}

/// Every resync, newest first, at most `limit`.
pub(super) fn list(conn: &Connection, limit: usize) -> Result<Vec<Resync>, StoreError> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM resyncs ORDER BY id DESC LIMIT ?1"
        ))?
        .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(decode(r)?);
    }
    Ok(out)
}

/// Stages one page of a resync and moves its position in the same transaction: `next_page`
/// `None` finishes it. Returns the changes that were new.
pub(super) fn stage_page(
    tx: &Transaction<'_>,
    id: i64,
    changes: &[Change],
    next_page: Option<&str>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let n = queries::insert_changes(tx, changes, now_ms)?;
    tx.prepare_cached(
        "UPDATE resyncs SET page = ?2, pages = pages + 1, staged = staged + ?3,
             finished_ms = CASE WHEN ?2 IS NULL THEN ?4 ELSE NULL END
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        next_page,
        i64::try_from(n).unwrap_or(i64::MAX),
        now_ms
    ])?;
    Ok(n)
}

/// Starts a resync's read over (its stored page token was refused).
pub(super) fn restart(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE resyncs SET page = NULL WHERE id = ?1")?
        .execute(params![id])?;
    Ok(())
}
