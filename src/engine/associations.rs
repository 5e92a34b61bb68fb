//! HubSpot associations in the engine: what a planned record asks for (pure, from its source
//! fields and the flow's `[[association]]`s), and sending the associations whose two records
//! both exist, in v4 batches, after the writer's batches (the rest wait, durably, for a pass
//! after the other record is linked).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Engine, EngineError, TickReport};
use crate::connector::ConnectorError;
use crate::mapping::{Mapping, get_path};
use crate::model::{AssociationType, SystemKind};
use crate::store::{AssociationIntent, AssociationOutcome, ReadyAssociation};

/// HubSpot's v4 batch calls take at most 100 inputs.
const MAX_BATCH: usize = 100;
/// Ready associations one pass sends, so a writer cycle stays bounded.
const MAX_PER_PASS: usize = 1_000;

/// The associations `fields` (a source record of `m`) asks for: one per `[[association]]`
/// whose source path holds a key. Pure.
pub fn intents(
    m: &Mapping,
    source_id: &str,
    fields: &Map<String, Value>,
) -> Vec<AssociationIntent> {
    m.associations
        .iter()
        .filter_map(|a| {
            let key = match get_path(fields, &a.source)? {
                Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(AssociationIntent {
                flow: m.name.clone(),
                source_id: source_id.to_owned(),
                with_flow: a.flow.clone(),
                with_key: key,
                kind: a.kind.clone(),
            })
        })
        .collect()
}

impl Engine {
    /// Sends the pending associations of flows targeting `system` whose two records exist,
    /// grouped per (object types, type) in batches of 100, and records each outcome. A retryable
    /// failure keeps them pending for the next pass.
    pub(super) async fn associate_ready(
        &self,
        system: SystemKind,
    ) -> Result<TickReport, EngineError> {
        let mut report = TickReport::default();
        let Some(conn) = self.connector(system) else {
            return Ok(report);
        };
        let mappings = self.mappings();
        let objects: BTreeMap<&str, &str> = mappings
            .iter()
            .map(|m| (m.name.as_str(), m.target.object.as_str()))
            .collect();
        let flows: Vec<String> = mappings
            .iter()
            .filter(|m| m.target.system == system && !m.associations.is_empty())
            .map(|m| m.name.clone())
            .collect();
        if flows.is_empty() {
            return Ok(report);
        }
        let ready = self.store.ready_associations(flows, MAX_PER_PASS).await?;
        let mut groups: BTreeMap<(String, String, AssociationType), Vec<ReadyAssociation>> =
            BTreeMap::new();
        let mut outcomes = Vec::new();
        for r in ready {
            let (Some(from), Some(to)) = (
                objects.get(r.intent.flow.as_str()),
                objects.get(r.intent.with_flow.as_str()),
            ) else {
                outcomes.push((
                    r,
                    AssociationOutcome::Retry("a flow of it is not in the mapping set".into()),
                ));
                continue;
            };
            groups
                .entry(((*from).to_owned(), (*to).to_owned(), r.intent.kind.clone()))
                .or_default()
                .push(r);
        }
        for ((from, to, kind), list) in groups {
            for chunk in list.chunks(MAX_BATCH) {
                let pairs: Vec<(String, String)> = chunk
                    .iter()
                    .map(|r| (r.from_id.clone(), r.to_id.clone()))
                    .collect();
                let results = match conn.associate(&from, &to, &kind, &pairs).await {
                    Ok(r) => r,
                    Err(e) => vec![Err(e); pairs.len()],
                };
                if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                    self.note_error(system, e).await?;
                }
                for (r, result) in chunk.iter().zip(results) {
                    let outcome = match result {
                        Ok(()) => {
                            report.written += 1;
                            AssociationOutcome::Done
                        }
                        Err(e) if retry_later(&e) => AssociationOutcome::Retry(e.to_string()),
                        Err(e) => {
                            tracing::error!(%system, flow = %r.intent.flow, record = %r.intent.source_id, error = %e, "association refused");
                            AssociationOutcome::Failed(e.to_string())
                        }
                    };
                    outcomes.push((r.clone(), outcome));
                }
            }
        }
        if !outcomes.is_empty() {
            self.store
                .complete_associations(outcomes, (self.clock)())
                .await?;
        }
        Ok(report)
    }
}

/// Rate limits, transient failures and credentials (the operator's to fix) are tried again.
fn retry_later(e: &ConnectorError) -> bool {
    e.is_retryable() || matches!(e, ConnectorError::Auth(_))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::intents;
    use crate::mapping::MappingSet;

    #[test]
    fn a_record_asks_for_one_association_per_key_it_holds() {
        // The shipped task flow, with a second association (to a deal) on a key actions lack.
        let tasks = format!(
            "{}\n[[association]]\nflow = \"deal-registration\"\nsource = \"deal_key\"\ntype_id = 216\n",
            include_str!("../../mappings/partnerstack-hubspot-tasks.toml")
        );
        let set = MappingSet::compile(&[
            ("mappings/partnerstack-hubspot-tasks.toml".into(), tasks),
            (
                "mappings/partnerstack-hubspot-companies.toml".into(),
                include_str!("../../mappings/partnerstack-hubspot-companies.toml").into(),
            ),
            (
                "mappings/partnerstack-hubspot-deals.toml".into(),
                include_str!("../../mappings/partnerstack-hubspot-deals.toml").into(),
            ),
        ])
        .expect("compiles");
        let tasks = set
            .mappings
            .iter()
            .find(|m| m.name == "partner-activity")
            .expect("task flow");
        let both = json!({"partnership_key": "part_7", "deal_key": " deal_1 "});
        let got = intents(tasks, "act_1", both.as_object().expect("object"));
        let keys: Vec<(&str, &str)> = got
            .iter()
            .map(|a| (a.with_flow.as_str(), a.with_key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("partner-organisation", "part_7"),
                ("deal-registration", "deal_1")
            ]
        );
        let blank = json!({"partnership_key": "part_7", "deal_key": ""});
        assert_eq!(
            intents(tasks, "act_2", blank.as_object().expect("object")).len(),
            1
        );
    }
}
