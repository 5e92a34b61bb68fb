//! Run-time schema drift: the mapped CRM fields the last live-schema check found drifted (for
//! `prmsync status` and metrics, with since when), and which links' writes left which field out
//! (so they are planned again when the field recovers).

use std::collections::BTreeMap;

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use super::StoreError;
use crate::model::SystemKind;

/// Step "schema drift" (issue 10): drifted mapped fields per (system, object, field, flow), and
/// the (flow, source record, field) whose writes went out without the field (`value`: the
/// refused picklist value; NULL: the whole field was left out).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE schema_drift (
    system   TEXT NOT NULL,
    object   TEXT NOT NULL,
    field    TEXT NOT NULL,
    flow     TEXT NOT NULL,
    location TEXT NOT NULL,
    kind     TEXT NOT NULL,
    problem  TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (system, object, field, flow)
) STRICT, WITHOUT ROWID;
CREATE TABLE schema_skips (
    flow      TEXT NOT NULL,
    source_id TEXT NOT NULL,
    field     TEXT NOT NULL,
    system    TEXT NOT NULL,
    object    TEXT NOT NULL,
    value     TEXT,
    since_ms  INTEGER NOT NULL,
    PRIMARY KEY (flow, source_id, field)
) STRICT, WITHOUT ROWID;
CREATE INDEX schema_skips_field ON schema_skips (system, object, field);
"#;

/// One drifted mapped field as a check found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRow {
    pub object: String,
    pub field: String,
    pub flow: String,
    /// `file:line:column` of the field in its mapping file.
    pub location: String,
    /// `missing`, `type`, `read_only` or `options`.
    pub kind: String,
    /// What no longer fits, in words.
    pub problem: String,
}

/// How a check changed the recorded drift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftChanges {
    /// Drift not recorded before (or with another problem).
    pub appeared: Vec<DriftRow>,
    /// Recorded drift the check no longer found.
    pub cleared: Vec<DriftRow>,
}

/// A field a write to a record went out without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedField {
    pub field: String,
    /// The picklist value the live schema refused; `None`: the field itself is drifted.
    pub value: Option<String>,
}

/// A stored skip: the link (flow, source record) whose write left `field` out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaSkip {
    pub flow: String,
    pub source_id: String,
    pub field: String,
    pub value: Option<String>,
}

/// A drifted field in `prmsync status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftStatus {
    pub system: String,
    pub object: String,
    pub field: String,
    pub flow: String,
    pub location: String,
    pub kind: String,
    pub problem: String,
    pub since_ms: i64,
    pub since_secs: i64,
}

/// Records whose writes left a field out, per (flow, object, field), in `prmsync status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkipCount {
    pub flow: String,
    pub system: String,
    pub object: String,
    pub field: String,
    pub records: i64,
}

/// The drift of `object` now against what was recorded: `(appeared, cleared)`.
pub(super) fn diff(old: &[DriftRow], new: &[DriftRow]) -> (Vec<DriftRow>, Vec<DriftRow>) {
    let key = |d: &DriftRow| (d.field.clone(), d.flow.clone());
    let old_by: BTreeMap<_, &DriftRow> = old.iter().map(|d| (key(d), d)).collect();
    let new_by: BTreeMap<_, &DriftRow> = new.iter().map(|d| (key(d), d)).collect();
    let appeared = new
        .iter()
        .filter(|d| old_by.get(&key(d)).is_none_or(|o| o.problem != d.problem))
        .cloned()
        .collect();
    let cleared = old
        .iter()
        .filter(|d| !new_by.contains_key(&key(d)))
        .cloned()
        .collect();
    (appeared, cleared)
}

fn recorded(
    tx: &Transaction<'_>,
    system: SystemKind,
    object: &str,
) -> Result<Vec<DriftRow>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT object, field, flow, location, kind, problem FROM schema_drift
         WHERE system = ?1 AND object = ?2 ORDER BY field, flow",
    )?;
    let rows = stmt.query_map(params![system.as_str(), object], |r| {
        Ok(DriftRow {
            object: r.get(0)?,
            field: r.get(1)?,
            flow: r.get(2)?,
            location: r.get(3)?,
            kind: r.get(4)?,
            problem: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the recorded drift of each checked object of `system` (a field drifted before keeps
/// its `since`), and forgets the drift of objects no flow writes any more (not in `mapped`).
pub(super) fn record(
    tx: &Transaction<'_>,
    system: SystemKind,
    checked: &[(String, Vec<DriftRow>)],
    mapped: &[String],
    now_ms: i64,
) -> Result<DriftChanges, StoreError> {
    let mut changes = DriftChanges::default();
    for (object, rows) in checked {
        let old = recorded(tx, system, object)?;
        let (appeared, cleared) = diff(&old, rows);
        for d in &cleared {
            tx.prepare_cached(
                "DELETE FROM schema_drift WHERE system = ?1 AND object = ?2 AND field = ?3 AND flow = ?4",
            )?
            .execute(params![system.as_str(), object, d.field, d.flow])?;
        }
        for d in &appeared {
            tx.prepare_cached(
                "INSERT INTO schema_drift (system, object, field, flow, location, kind, problem, since_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (system, object, field, flow) DO UPDATE SET location = excluded.location,
                    kind = excluded.kind, problem = excluded.problem",
            )?
            .execute(params![
                system.as_str(),
                object,
                d.field,
                d.flow,
                d.location,
                d.kind,
                d.problem,
                now_ms
            ])?;
        }
        changes.appeared.extend(appeared);
        changes.cleared.extend(cleared);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT DISTINCT object FROM schema_drift WHERE system = ?1 ORDER BY object",
    )?;
    let objects: Vec<String> = stmt
        .query_map(params![system.as_str()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for object in objects.iter().filter(|o| !mapped.contains(o)) {
        changes.cleared.extend(recorded(tx, system, object)?);
        tx.prepare_cached("DELETE FROM schema_drift WHERE system = ?1 AND object = ?2")?
            .execute(params![system.as_str(), object])?;
    }
    Ok(changes)
}

/// Remembers that the write of (`flow`, `source_id`) went out without `skipped` (in the
/// transaction that commits the write).
pub(super) fn insert_skips(
    tx: &Transaction<'_>,
    w: &super::PlannedWrite,
    skipped: &[SkippedField],
    now_ms: i64,
) -> Result<(), StoreError> {
    for s in skipped {
        tx.prepare_cached(
            "INSERT INTO schema_skips (flow, source_id, field, system, object, value, since_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (flow, source_id, field) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![
            w.flow,
            w.source_id,
            s.field,
            w.system.as_str(),
            w.object,
            s.value,
            now_ms
        ])?;
    }
    Ok(())
}

/// Every stored skip of `object`.
pub(super) fn skips(
    conn: &Connection,
    system: SystemKind,
    object: &str,
) -> Result<Vec<SchemaSkip>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT flow, source_id, field, value FROM schema_skips
         WHERE system = ?1 AND object = ?2 ORDER BY field, flow, source_id",
    )?;
    let rows = stmt.query_map(params![system.as_str(), object], |r| {
        Ok(SchemaSkip {
            flow: r.get(0)?,
            source_id: r.get(1)?,
            field: r.get(2)?,
            value: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets `skips` (their links were asked to be planned again).
pub(super) fn clear_skips(tx: &Transaction<'_>, skips: &[SchemaSkip]) -> Result<(), StoreError> {
    for s in skips {
        tx.prepare_cached(
            "DELETE FROM schema_skips WHERE flow = ?1 AND source_id = ?2 AND field = ?3",
        )?
        .execute(params![s.flow, s.source_id, s.field])?;
    }
    Ok(())
}

/// Drift and skip counts for `prmsync status` (empty for a state file from before this step:
/// status never migrates).
pub(super) fn status(
    conn: &Connection,
    now_ms: i64,
) -> Result<(Vec<DriftStatus>, Vec<SkipCount>), StoreError> {
    let exists: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_drift'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT system, object, field, flow, location, kind, problem, since_ms FROM schema_drift
         ORDER BY system, object, field, flow",
    )?;
    let drift = stmt
        .query_map([], |r| {
            let since_ms: i64 = r.get(7)?;
            Ok(DriftStatus {
                system: r.get(0)?,
                object: r.get(1)?,
                field: r.get(2)?,
                flow: r.get(3)?,
                location: r.get(4)?,
                kind: r.get(5)?,
                problem: r.get(6)?,
                since_ms,
                since_secs: (now_ms - since_ms) / 1000,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT flow, system, object, field, COUNT(*) FROM schema_skips
         GROUP BY flow, system, object, field ORDER BY system, object, field, flow",
    )?;
    let skips = stmt
        .query_map([], |r| {
            Ok(SkipCount {
                flow: r.get(0)?,
                system: r.get(1)?,
                object: r.get(2)?,
                field: r.get(3)?,
                records: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok((drift, skips))
}
