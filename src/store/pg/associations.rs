//! PostgreSQL SQL for associations: the same statements as `store/associations.rs`.

use postgres::GenericClient;

use super::super::StoreError;
use super::super::associations::{AssociationIntent, AssociationOutcome, ReadyAssociation};
use super::queries;
use crate::model::{AssociationType, Direction};

pub(in crate::store) fn record(
    c: &mut impl GenericClient,
    intents: &[AssociationIntent],
    now_ms: i64,
) -> Result<(), StoreError> {
    for a in intents {
        c.execute(
            "INSERT INTO associations (flow, source_id, with_flow, with_key, kind, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &a.flow,
                &a.source_id,
                &a.with_flow,
                &a.with_key,
                &a.kind.key(),
                &now_ms,
            ],
        )?;
    }
    Ok(())
}

pub(in crate::store) fn ready(
    c: &mut impl GenericClient,
    flows: &[String],
    limit: usize,
) -> Result<Vec<ReadyAssociation>, StoreError> {
    let mut out = Vec::new();
    for flow in flows {
        let left = limit.saturating_sub(out.len());
        if left == 0 {
            break;
        }
        let rows = c.query(
            "SELECT a.flow, a.source_id, a.with_flow, a.with_key, a.kind, f.target_id, t.target_id
             FROM associations a
             JOIN links f ON f.flow = a.flow AND f.source_id = a.source_id
             JOIN links t ON t.flow = a.with_flow AND t.source_id = a.with_key
             WHERE a.state = 'pending' AND a.flow = $1
               AND f.target_id IS NOT NULL AND f.tombstone IS NULL
               AND t.target_id IS NOT NULL AND t.tombstone IS NULL
             ORDER BY a.updated_ms LIMIT $2",
            &[flow, &(left as i64)],
        )?;
        for r in rows {
            // A kind this version never wrote cannot be sent; it stays for a newer version.
            let Some(kind) = AssociationType::parse(r.try_get::<_, &str>(4)?) else {
                continue;
            };
            out.push(ReadyAssociation {
                intent: AssociationIntent {
                    flow: r.try_get(0)?,
                    source_id: r.try_get(1)?,
                    with_flow: r.try_get(2)?,
                    with_key: r.try_get(3)?,
                    kind,
                },
                from_id: r.try_get(5)?,
                to_id: r.try_get(6)?,
            });
        }
    }
    Ok(out)
}

pub(in crate::store) fn complete(
    c: &mut impl GenericClient,
    outcomes: &[(ReadyAssociation, AssociationOutcome)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (r, outcome) in outcomes {
        let a = &r.intent;
        let (state, error) = match outcome {
            AssociationOutcome::Done => ("done", None),
            AssociationOutcome::Retry(e) => ("pending", Some(e.as_str())),
            AssociationOutcome::Failed(e) => ("failed", Some(e.as_str())),
        };
        c.execute(
            "UPDATE associations SET state = $6, from_id = $7, to_id = $8, attempts = attempts + 1,
                    last_error = $9, updated_ms = $10
             WHERE flow = $1 AND source_id = $2 AND with_flow = $3 AND with_key = $4 AND kind = $5",
            &[
                &a.flow,
                &a.source_id,
                &a.with_flow,
                &a.with_key,
                &a.kind.key(),
                &state,
                &r.from_id,
                &r.to_id,
                &error,
                &now_ms,
            ],
        )?;
        let (action, detail) = match outcome {
            AssociationOutcome::Done => (
                "associated",
                format!(
                    "associated with {} record {} ({} {}), {}",
                    a.with_flow, r.to_id, a.with_flow, a.with_key, a.kind
                ),
            ),
            AssociationOutcome::Failed(e) => (
                "association_failed",
                format!(
                    "association with {} {} refused: {e}",
                    a.with_flow, a.with_key
                ),
            ),
            AssociationOutcome::Retry(_) => continue,
        };
        queries::insert_ledger(
            c,
            &a.flow,
            Direction::ToTarget,
            &a.source_id,
            Some(&r.from_id),
            action,
            None,
            None,
            Some(&detail),
            now_ms,
        )?;
    }
    Ok(())
}
