//! Match-rule prefetch: before a batch is planned, search the target system once per rule for
//! existing records that the batch's unlinked source records match, so the planner links to them
//! instead of creating duplicates. The decision itself is the planner's (`plan::forward_matched`).

use std::collections::{BTreeMap, BTreeSet};

use crate::connector::{Connector, ConnectorError, MatchCandidate};
use crate::mapping::{Mapping, MatchRules, Normalise};
use crate::model::Record;

use super::RetryPolicy;
use super::plan::Found;

/// Candidates per rule: normalised key -> the target records whose field normalises to it.
#[derive(Debug, Default)]
pub struct Prefetched {
    per_rule: Vec<BTreeMap<String, Vec<MatchCandidate>>>,
    /// Per rule: normalised keys whose search the target refuses for good, with its answer.
    refused: Vec<BTreeMap<String, String>>,
    /// Target ids this batch has linked a record to already.
    claimed: BTreeSet<String>,
}

/// The rule that decides for a record: the first with a non-blank key, and that key.
pub fn deciding_rule(rules: &MatchRules, rec: &Record) -> Option<(usize, String)> {
    rules
        .rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.source_key(&rec.fields).map(|k| (i, k)))
}

/// The values to search for one normalised key: a domain is also stored with `www.` or a scheme.
fn search_values(normalise: Normalise, key: &str) -> Vec<String> {
    match normalise {
        Normalise::Domain => [
            "",
            "www.",
            "http://",
            "https://",
            "http://www.",
            "https://www.",
        ]
        .iter()
        .map(|p| format!("{p}{key}"))
        .collect(),
        Normalise::Exact | Normalise::Lower | Normalise::Email => vec![key.to_owned()],
    }
}

/// Searches `target` for matches of `records` (the batch's records that would be created):
/// one lookup per rule, for the keys that rule decides (retried briefly under `retry`). No rules
/// or no keys: no calls.
pub async fn prefetch<'r>(
    target: Option<&Connector>,
    retry: &RetryPolicy,
    m: &Mapping,
    records: impl IntoIterator<Item = &'r Record>,
) -> Result<Prefetched, ConnectorError> {
    let (Some(rules), Some(conn)) = (&m.matching, target) else {
        return Ok(Prefetched::default());
    };
    let mut keys: Vec<BTreeSet<String>> = vec![BTreeSet::new(); rules.rules.len()];
    for rec in records {
        if let Some((i, k)) = deciding_rule(rules, rec) {
            keys[i].insert(k);
        }
    }
    let mut per_rule = Vec::with_capacity(rules.rules.len());
    let mut refused_per_rule = Vec::with_capacity(rules.rules.len());
    for (rule, keys) in rules.rules.iter().zip(keys) {
        let mut found: BTreeMap<String, Vec<MatchCandidate>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        let mut refused = BTreeMap::new();
        if !keys.is_empty() {
            let keys: Vec<String> = keys.into_iter().collect();
            let search = Search {
                conn,
                retry,
                object: &m.target.object,
                field: &rule.target,
                normalise: rule.normalise,
                also: [m.external_id.clone()],
            };
            let hits = search.isolating(&keys, &mut refused).await?;
            for c in hits {
                // The CRM's comparison is looser than ours: keep what normalises to the key.
                let Some(list) = rule.target_key(&c.fields).and_then(|k| found.get_mut(&k)) else {
                    continue;
                };
                if !list.iter().any(|x| x.id == c.id) {
                    list.push(c);
                }
            }
            for list in found.values_mut() {
                list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            }
            tracing::debug!(flow = %m.name, field = %rule.target, keys = keys.len(), "searched for existing records");
        }
        per_rule.push(found);
        refused_per_rule.push(refused);
    }
    Ok(Prefetched {
        per_rule,
        refused: refused_per_rule,
        claimed: BTreeSet::new(),
    })
}

/// One rule's lookup in the target.
struct Search<'a> {
    conn: &'a Connector,
    retry: &'a RetryPolicy,
    object: &'a str,
    field: &'a str,
    normalise: Normalise,
    also: [String; 1],
}

impl Search<'_> {
    /// Searches for `keys` (retried briefly under `retry`). A search the target refuses for good
    /// is split in halves and each half searched again, down to one key, whose refusal is noted
    /// in `refused` (its records are dead-lettered; the other keys' records are planned). What
    /// still fails with a retryable error is the caller's to defer (the batch stays staged).
    async fn isolating(
        &self,
        keys: &[String],
        refused: &mut BTreeMap<String, String>,
    ) -> Result<Vec<MatchCandidate>, ConnectorError> {
        let values: Vec<String> = keys
            .iter()
            .flat_map(|k| search_values(self.normalise, k))
            .collect();
        let found = self
            .retry
            .run(|| {
                self.conn
                    .find_matches(self.object, self.field, &values, &self.also)
            })
            .await;
        match found {
            Ok(hits) => Ok(hits.into_values().flatten().collect()),
            Err(e @ (ConnectorError::Permanent(_) | ConnectorError::Conflict(_))) => {
                if let [key] = keys {
                    tracing::warn!(object = self.object, field = self.field, key, error = %e, "match search refused for one key; its records go to the dead letters");
                    refused.insert(key.clone(), e.to_string());
                    return Ok(Vec::new());
                }
                let (left, right) = keys.split_at(keys.len() / 2);
                let mut hits = Box::pin(self.isolating(left, refused)).await?;
                hits.extend(Box::pin(self.isolating(right, refused)).await?);
                Ok(hits)
            }
            Err(e) => Err(e),
        }
    }
}

impl Prefetched {
    /// What the search found for `rec`, or `None` when no search covered it.
    pub fn found<'a>(&'a self, m: &'a Mapping, rec: &Record) -> Option<Found<'a>> {
        let rules = m.matching.as_ref()?;
        let (i, key) = deciding_rule(rules, rec)?;
        let (key, candidates) = self.per_rule.get(i)?.get_key_value(&key)?;
        Some(Found {
            field: &rules.rules[i].target,
            key,
            candidates,
            claimed: &self.claimed,
        })
    }

    /// The target's refusal of the search that decides for `rec`, when it refused it for good.
    pub fn refused(&self, m: &Mapping, rec: &Record) -> Option<&str> {
        let rules = m.matching.as_ref()?;
        let (i, key) = deciding_rule(rules, rec)?;
        self.refused.get(i)?.get(&key).map(String::as_str)
    }

    /// Remembers the existing record a decision linked to, so no later record of the batch is
    /// linked to it too.
    pub fn note(&mut self, d: &super::plan::Decision) {
        if let Some(w) = &d.write
            && w.id_property.is_none()
            && let Some(id) = &w.target_id
        {
            self.claimed.insert(id.clone());
        }
    }
}
