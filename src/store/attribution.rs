//! The SQL behind the attribution report: MDF requests as the PRM last sent them (kept when a flow
//! reads them), and one read of everything the report computes from (decisions, registration
//! versions, MDF requests, the rules' "now").

use rusqlite::{Connection, Transaction, params};
use serde_json::{Map, Value};

use super::{StoreError, registrations};
use crate::rules::RegistrationEvent;

/// Migration step "mdf requests": each PRM MDF request's latest fields, for the report.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE mdf_requests (
    id         TEXT PRIMARY KEY,
    fields     TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
"#;

/// One MDF request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMdf {
    pub id: String,
    pub fields: Map<String, Value>,
    pub updated_ms: i64,
}

/// Everything the attribution report reads, in one consistent read.
#[derive(Debug, Clone, Default)]
pub struct AttributionState {
    pub registrations: Vec<registrations::StoredRegistration>,
    /// Every stored version of every registration, by registration then time.
    pub versions: Vec<RegistrationEvent>,
    pub mdf: Vec<StoredMdf>,
    /// Partners' leads and activities (customer key, item), for the credits.
    pub evidence: Vec<(String, crate::rules::credit::EvidenceItem)>,
    /// Every partner's name in the PRM, as prmsync last read it.
    pub partner_names: std::collections::BTreeMap<String, String>,
    /// The newest registration version time (the rules' "now"); `None` with no registrations.
    pub as_of_ms: Option<i64>,
}

/// Stores MDF requests (id, fields), replacing older copies.
pub(super) fn record_mdf(
    tx: &Transaction<'_>,
    rows: &[(String, Map<String, Value>)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO mdf_requests (id, fields, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET fields = excluded.fields, updated_ms = excluded.updated_ms",
    )?;
    for (id, fields) in rows {
        stmt.execute(params![id, serde_json::to_string(fields)?, now_ms])?;
    }
    Ok(())
}

pub(super) fn load(conn: &Connection) -> Result<AttributionState, StoreError> {
    let mut mdf = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT id, fields, updated_ms FROM mdf_requests ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        mdf.push(StoredMdf {
            id: r.get(0)?,
            fields: serde_json::from_str(&r.get::<_, String>(1)?)?,
            updated_ms: r.get(2)?,
        });
    }
    let all = registrations::group(conn, None)?;
    let partner_names = conn
        .prepare_cached("SELECT partner, name FROM registration_partners")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(AttributionState {
        registrations: registrations::list(conn, None)?,
        versions: all.events,
        evidence: all.evidence,
        partner_names,
        mdf,
        as_of_ms: registrations::as_of(conn)?,
    })
}
