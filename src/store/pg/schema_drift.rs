//! PostgreSQL SQL for run-time schema drift: the same statements as `store/schema_drift.rs`.

use postgres::GenericClient;

use super::super::StoreError;
use super::super::schema_drift::{
    DriftChanges, DriftRow, DriftStatus, SchemaSkip, SkipCount, SkippedField, diff,
};
use crate::model::SystemKind;

fn recorded(
    c: &mut impl GenericClient,
    system: SystemKind,
    object: &str,
) -> Result<Vec<DriftRow>, StoreError> {
    c.query(
        "SELECT object, field, flow, location, kind, problem FROM schema_drift
         WHERE system = $1 AND object = $2 ORDER BY field, flow",
        &[&system.as_str(), &object],
    )?
    .iter()
    .map(|r| {
        Ok(DriftRow {
            object: r.try_get(0)?,
            field: r.try_get(1)?,
            flow: r.try_get(2)?,
            location: r.try_get(3)?,
            kind: r.try_get(4)?,
            problem: r.try_get(5)?,
        })
    })
    .collect()
}

pub(in crate::store) fn record(
    c: &mut impl GenericClient,
    system: SystemKind,
    checked: &[(String, Vec<DriftRow>)],
    mapped: &[String],
    now_ms: i64,
) -> Result<DriftChanges, StoreError> {
    let mut changes = DriftChanges::default();
    for (object, rows) in checked {
        let old = recorded(c, system, object)?;
        let (appeared, cleared) = diff(&old, rows);
        for d in &cleared {
            c.execute(
                "DELETE FROM schema_drift WHERE system = $1 AND object = $2 AND field = $3 AND flow = $4",
                &[&system.as_str(), object, &d.field, &d.flow],
            )?;
        }
        for d in &appeared {
            c.execute(
                "INSERT INTO schema_drift (system, object, field, flow, location, kind, problem, since_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (system, object, field, flow) DO UPDATE SET location = excluded.location,
                    kind = excluded.kind, problem = excluded.problem",
                &[
                    &system.as_str(),
                    object,
                    &d.field,
                    &d.flow,
                    &d.location,
                    &d.kind,
                    &d.problem,
                    &now_ms,
                ],
            )?;
        }
        changes.appeared.extend(appeared);
        changes.cleared.extend(cleared);
    }
    let objects: Vec<String> = c
        .query(
            "SELECT DISTINCT object FROM schema_drift WHERE system = $1 ORDER BY object",
            &[&system.as_str()],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for object in objects.iter().filter(|o| !mapped.contains(o)) {
        changes.cleared.extend(recorded(c, system, object)?);
        c.execute(
            "DELETE FROM schema_drift WHERE system = $1 AND object = $2",
            &[&system.as_str(), object],
        )?;
    }
    Ok(changes)
}

pub(in crate::store) fn insert_skips(
    c: &mut impl GenericClient,
    w: &super::super::PlannedWrite,
    skipped: &[SkippedField],
    now_ms: i64,
) -> Result<(), StoreError> {
    for s in skipped {
        c.execute(
            "INSERT INTO schema_skips (flow, source_id, field, system, object, value, since_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (flow, source_id, field) DO UPDATE SET value = excluded.value",
            &[
                &w.flow,
                &w.source_id,
                &s.field,
                &w.system.as_str(),
                &w.object,
                &s.value,
                &now_ms,
            ],
        )?;
    }
    Ok(())
}

pub(in crate::store) fn skips(
    c: &mut impl GenericClient,
    system: SystemKind,
    object: &str,
) -> Result<Vec<SchemaSkip>, StoreError> {
    c.query(
        "SELECT flow, source_id, field, value FROM schema_skips
         WHERE system = $1 AND object = $2 ORDER BY field, flow, source_id",
        &[&system.as_str(), &object],
    )?
    .iter()
    .map(|r| {
        Ok(SchemaSkip {
            flow: r.try_get(0)?,
            source_id: r.try_get(1)?,
            field: r.try_get(2)?,
            value: r.try_get(3)?,
        })
    })
    .collect()
}

pub(in crate::store) fn clear_skips(
    c: &mut impl GenericClient,
    skips: &[SchemaSkip],
) -> Result<(), StoreError> {
    for s in skips {
        c.execute(
            "DELETE FROM schema_skips WHERE flow = $1 AND source_id = $2 AND field = $3",
            &[&s.flow, &s.source_id, &s.field],
        )?;
    }
    Ok(())
}

pub(in crate::store) fn status(
    c: &mut impl GenericClient,
    now_ms: i64,
) -> Result<(Vec<DriftStatus>, Vec<SkipCount>), StoreError> {
    let drift = c
        .query(
            "SELECT system, object, field, flow, location, kind, problem, since_ms FROM schema_drift
             ORDER BY system, object, field, flow",
            &[],
        )?
        .iter()
        .map(|r| {
            let since_ms: i64 = r.try_get(7)?;
            Ok(DriftStatus {
                system: r.try_get(0)?,
                object: r.try_get(1)?,
                field: r.try_get(2)?,
                flow: r.try_get(3)?,
                location: r.try_get(4)?,
                kind: r.try_get(5)?,
                problem: r.try_get(6)?,
                since_ms,
                since_secs: (now_ms - since_ms) / 1000,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    let skips = c
        .query(
            "SELECT flow, system, object, field, COUNT(*) FROM schema_skips
             GROUP BY flow, system, object, field ORDER BY system, object, field, flow",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(SkipCount {
                flow: r.try_get(0)?,
                system: r.try_get(1)?,
                object: r.try_get(2)?,
                field: r.try_get(3)?,
                records: r.try_get(4)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    Ok((drift, skips))
}
