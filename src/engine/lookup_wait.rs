//! Records whose `lookup` names a record of another flow that is still on its way (planned in the
//! same batch, or queued in the outbox): they wait, and are read again on the source's next poll,
//! instead of being dead-lettered because the other flow's write has not landed yet. A lookup
//! whose record is not on its way fails as before (a dead letter with the reason).

use std::collections::{BTreeMap, BTreeSet};

use super::{Engine, EngineError};
use crate::mapping::{Lookups, Mapping};
use crate::model::Direction;
use crate::store::{InboxItem, PlanCommit};

impl Engine {
    /// The ids of `forward` records that wait for another flow's pending write, and the oldest
    /// modification time among them (where their re-read starts).
    pub(super) async fn waiting_on_lookups(
        &self,
        m: &Mapping,
        forward: &[&InboxItem],
        lookups: &Lookups,
        commit: &PlanCommit,
    ) -> Result<(BTreeSet<String>, i64), EngineError> {
        // (flow, key) each record misses.
        let mut misses: Vec<(&str, Vec<(String, String)>)> = Vec::new();
        for item in forward {
            let rec = &item.change.record;
            if !m.accepts(&rec.fields) {
                continue;
            }
            let missing: Vec<(String, String)> = m
                .lookup_keys(std::iter::once(&rec.fields))
                .into_iter()
                .flat_map(|(flow, keys)| keys.into_iter().map(move |k| (flow.clone(), k)))
                .filter(|(flow, k)| lookups.get(flow, k).is_none())
                .collect();
            if !missing.is_empty() {
                misses.push((rec.id.as_str(), missing));
            }
        }
        if misses.is_empty() {
            return Ok((BTreeSet::new(), i64::MAX));
        }
        let mut asked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, missing) in &misses {
            for (flow, key) in missing {
                asked.entry(flow.clone()).or_default().insert(key.clone());
            }
        }
        let mut pending: BTreeSet<(String, String)> = commit
            .writes
            .iter()
            .filter(|w| w.direction == Direction::ToTarget)
            .map(|w| (w.flow.clone(), w.source_id.clone()))
            .collect();
        for (flow, keys) in asked {
            let queued = self
                .store
                .queued_to_target(flow.clone(), keys.into_iter().collect())
                .await?;
            pending.extend(queued.into_iter().map(|k| (flow.clone(), k)));
        }
        let mut waiting = BTreeSet::new();
        let mut since = i64::MAX;
        for (id, missing) in misses {
            if missing.iter().any(|m| pending.contains(m)) {
                waiting.insert(id.to_owned());
                if let Some(item) = forward.iter().find(|i| i.change.record.id == id) {
                    since = since.min(item.change.record.modified_ms);
                }
            }
        }
        Ok((waiting, since))
    }
}
