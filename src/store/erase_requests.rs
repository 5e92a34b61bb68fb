//! Erasure requests (`prmsync erase` while a daemon runs): the CLI records who to erase, the
//! daemon carries the request out under its planning lock and marks it done (the subject is
//! reduced to its kind in the purge's transaction), or records why it failed.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;

/// Step "erase requests" (issue 11): one row per requested erasure. `subject` holds the address or
/// record (`email:…`, `record:…`) only until the purge, which sets it to the kind alone.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE erase_requests (
    id           INTEGER PRIMARY KEY,
    subject      TEXT NOT NULL,
    requested_ms INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    done_ms      INTEGER,
    audit_id     INTEGER,
    report       TEXT
) STRICT;
CREATE INDEX erase_requests_open ON erase_requests (id) WHERE done_ms IS NULL;
"#;

/// A recorded erasure request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseRequest {
    pub id: i64,
    /// `email:ADDR` or `record:SYSTEM/OBJECT/ID` while open; the kind alone once done.
    pub subject: String,
    pub requested_ms: i64,
    pub attempts: i64,
    /// The last failure (no personal data: the erasure's errors name systems and calls).
    pub error: Option<String>,
    pub done_ms: Option<i64>,
    /// The audit row of the erasure that carried it out.
    pub audit_id: Option<i64>,
    /// What the erasure did, as `prmsync erase` prints it (record ids and counts, no address).
    pub report: Option<String>,
}

pub(super) fn request(conn: &Connection, subject: &str, now_ms: i64) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO erase_requests (subject, requested_ms) VALUES (?1, ?2)",
        params![subject, now_ms],
    )?;
    Ok(conn.last_insert_rowid())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EraseRequest> {
    Ok(EraseRequest {
        id: r.get(0)?,
        subject: r.get(1)?,
        requested_ms: r.get(2)?,
        attempts: r.get(3)?,
        error: r.get(4)?,
        done_ms: r.get(5)?,
        audit_id: r.get(6)?,
        report: r.get(7)?,
    })
}

const COLUMNS: &str = "id, subject, requested_ms, attempts, error, done_ms, audit_id, report";

/// Open requests with fewer than `max_attempts` failed attempts, oldest first.
pub(super) fn open(conn: &Connection, max_attempts: u32) -> Result<Vec<EraseRequest>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM erase_requests WHERE done_ms IS NULL AND attempts < ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map(params![max_attempts], row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn get(conn: &Connection, id: i64) -> Result<Option<EraseRequest>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM erase_requests WHERE id = ?1"),
            params![id],
            row,
        )
        .optional()?)
}

/// Newest first.
pub(super) fn list(conn: &Connection, limit: usize) -> Result<Vec<EraseRequest>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM erase_requests ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt
        .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn failed(conn: &Connection, id: i64, error: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE erase_requests SET attempts = attempts + 1, error = ?2 WHERE id = ?1",
        params![id, error],
    )?;
    Ok(())
}

/// What a carried-out request did, for the waiting `prmsync erase`.
pub(super) fn report(conn: &Connection, id: i64, text: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE erase_requests SET report = ?2 WHERE id = ?1",
        params![id, text],
    )?;
    Ok(())
}

/// In the purge's transaction: the request is done and keeps only its subject's kind.
pub(super) fn done(
    tx: &Transaction<'_>,
    id: i64,
    audit_id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE erase_requests SET subject = substr(subject, 1, instr(subject, ':') - 1),
             done_ms = ?2, audit_id = ?3, error = NULL
         WHERE id = ?1",
        params![id, now_ms, audit_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_done_request_keeps_only_its_kind_and_a_failure_counts() {
        let mut conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(MIGRATION).expect("migration");
        let id = request(&conn, "email:ann@example.com", 5).expect("request");
        failed(&conn, id, "hubspot gdpr-delete: 503").expect("failed");
        let open1 = open(&conn, 3).expect("open");
        assert_eq!(open1.len(), 1);
        assert_eq!(open1[0].attempts, 1);
        assert!(open(&conn, 1).expect("open").is_empty(), "attempts used up");
        let tx = conn.transaction().expect("tx");
        done(&tx, id, 9, 7).expect("done");
        tx.commit().expect("commit");
        let r = get(&conn, id).expect("get").expect("row");
        assert_eq!(r.subject, "email");
        assert_eq!((r.done_ms, r.audit_id, r.error), (Some(7), Some(9), None));
        assert!(open(&conn, 3).expect("open").is_empty());
        report(&conn, id, "erased: 1 record(s)").expect("report");
        let r = get(&conn, id).expect("get").expect("row");
        assert_eq!(r.report.as_deref(), Some("erased: 1 record(s)"));
    }
}
