//! PostgreSQL SQL for erasure requests: the same statements as `store/erase_requests.rs`.

use postgres::GenericClient;

use super::super::StoreError;
use super::super::erase_requests::EraseRequest;

const COLUMNS: &str = "id, subject, requested_ms, attempts, error, done_ms, audit_id, report";

fn row(r: &postgres::Row) -> Result<EraseRequest, StoreError> {
    Ok(EraseRequest {
        id: r.try_get(0)?,
        subject: r.try_get(1)?,
        requested_ms: r.try_get(2)?,
        attempts: r.try_get(3)?,
        error: r.try_get(4)?,
        done_ms: r.try_get(5)?,
        audit_id: r.try_get(6)?,
        report: r.try_get(7)?,
    })
}

pub(in crate::store) fn request(
    c: &mut impl GenericClient,
    subject: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let id = c
        .query_one(
            "INSERT INTO erase_requests (subject, requested_ms) VALUES ($1, $2) RETURNING id",
            &[&subject, &now_ms],
        )?
        .try_get(0)?;
    // Fleet mode: wakes the planner of the daemon holding this tenant's lease (it carries
    // erasure requests out on every pass); nobody listens outside a fleet.
    c.execute(
        "SELECT pg_notify($1, current_schema())",
        &[&super::fleet::INBOX_CHANNEL],
    )?;
    Ok(id)
}

pub(in crate::store) fn open(
    c: &mut impl GenericClient,
    max_attempts: u32,
) -> Result<Vec<EraseRequest>, StoreError> {
    c.query(
        &format!(
            "SELECT {COLUMNS} FROM erase_requests WHERE done_ms IS NULL AND attempts < $1 ORDER BY id"
        ),
        &[&i64::from(max_attempts)],
    )?
    .iter()
    .map(row)
    .collect()
}

pub(in crate::store) fn get(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Option<EraseRequest>, StoreError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM erase_requests WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(row)
    .transpose()
}

pub(in crate::store) fn list(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<EraseRequest>, StoreError> {
    c.query(
        &format!("SELECT {COLUMNS} FROM erase_requests ORDER BY id DESC LIMIT $1"),
        &[&i64::try_from(limit).unwrap_or(i64::MAX)],
    )?
    .iter()
    .map(row)
    .collect()
}

pub(in crate::store) fn failed(
    c: &mut impl GenericClient,
    id: i64,
    error: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE erase_requests SET attempts = attempts + 1, error = $2 WHERE id = $1",
        &[&id, &error],
    )?;
    Ok(())
}

pub(in crate::store) fn report(
    c: &mut impl GenericClient,
    id: i64,
    text: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE erase_requests SET report = $2 WHERE id = $1",
        &[&id, &text],
    )?;
    Ok(())
}
