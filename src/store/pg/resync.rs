//! PostgreSQL SQL for resync requests: the same statements as `store/resync.rs`.

use postgres::GenericClient;

use super::super::StoreError;
use super::super::resync::Resync;
use super::queries;
use crate::model::{Change, ObjectRef, SystemKind};

pub(in crate::store) fn request(
    c: &mut impl GenericClient,
    flow: &str,
    object: &ObjectRef,
    since_ms: i64,
    ids: Option<&[String]>,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let ids = ids.map(serde_json::to_string).transpose()?;
    Ok(c.query_one(
        "INSERT INTO resyncs (flow, system, object, since_ms, ids, requested_ms)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            &flow,
            &object.system.as_str(),
            &object.object,
            &since_ms,
            &ids,
            &now_ms,
        ],
    )?
    .try_get(0)?)
}

const COLUMNS: &str =
    "id, flow, system, object, since_ms, ids, page, pages, staged, requested_ms, finished_ms";

/// A stored row as a resync; `None` for a system this version does not know.
fn decode(r: &postgres::Row) -> Result<Option<Resync>, StoreError> {
    let id: i64 = r.try_get(0)?;
    let system: String = r.try_get(2)?;
    let Some(system) = SystemKind::parse(&system) else {
        tracing::warn!(resync = id, %system, "skipping a resync of an unknown system");
        return Ok(None);
    };
    let ids: Option<String> = r.try_get(5)?;
    Ok(Some(Resync {
        id,
        flow: r.try_get(1)?,
        object: ObjectRef {
            system,
            object: r.try_get(3)?,
        },
        since_ms: r.try_get(4)?,
        ids: ids.map(|s| serde_json::from_str(&s)).transpose()?,
        page: r.try_get(6)?,
        pages: r.try_get(7)?,
        staged: r.try_get(8)?,
        requested_ms: r.try_get(9)?,
        finished_ms: r.try_get(10)?,
    }))
}

pub(in crate::store) fn next_open(
    c: &mut impl GenericClient,
    object: &ObjectRef,
) -> Result<Option<Resync>, StoreError> {
    let row = c.query_opt(
        &format!(
            "SELECT {COLUMNS} FROM resyncs WHERE system = $1 AND object = $2 AND finished_ms IS NULL
             ORDER BY id LIMIT 1"
        ),
        &[&object.system.as_str(), &object.object],
    )?;
    Ok(row.as_ref().map(decode).transpose()?.flatten())
}

pub(in crate::store) fn list(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<Resync>, StoreError> {
    let rows = c.query(
        &format!("SELECT {COLUMNS} FROM resyncs ORDER BY id DESC LIMIT $1"),
        &[&i64::try_from(limit).unwrap_or(i64::MAX)],
    )?;
    let mut out = Vec::new();
    for r in &rows {
        out.extend(decode(r)?);
    }
    Ok(out)
}

pub(in crate::store) fn stage_page(
    c: &mut impl GenericClient,
    id: i64,
    changes: &[Change],
    next_page: Option<&str>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let n = queries::insert_changes(c, changes, now_ms)?;
    c.execute(
        "UPDATE resyncs SET page = $2::TEXT, pages = pages + 1, staged = staged + $3,
             finished_ms = CASE WHEN $2::TEXT IS NULL THEN $4::BIGINT ELSE NULL END
         WHERE id = $1",
        &[
            &id,
            &next_page,
            &i64::try_from(n).unwrap_or(i64::MAX),
            &now_ms,
        ],
    )?;
    Ok(n)
}

pub(in crate::store) fn restart(c: &mut impl GenericClient, id: i64) -> Result<(), StoreError> {
    c.execute("UPDATE resyncs SET page = NULL WHERE id = $1", &[&id])?;
    Ok(())
}
