//! The dry run behind `prmsync plan`: read every source record of each flow (read-only calls),
//! page by page, plan each page against the stored links with the real planner, and count what
//! would happen. Memory holds one page, whatever the object's size. Nothing is written anywhere:
//! no vendor writes, no state file changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::matching::{self, Prefetched};
use super::plan::{self, action};
use super::{EngineError, RetryPolicy};
use crate::connector::Connector;
use crate::mapping::{Lookups, Mapping};
use crate::model::Record;
use crate::store::{Link, ReadOnlyStore, StoreError};

/// How many example records each outcome keeps.
const SAMPLES: usize = 3;

/// What one flow would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowPlan {
    pub flow: String,
    pub version: String,
    pub read: usize,
    pub would_create: usize,
    pub would_update: usize,
    pub skip_unchanged: usize,
    pub skip_filtered: usize,
    pub would_fail_mapping: usize,
    /// Match rules: records that would be linked to an existing target record instead of created.
    pub would_link: usize,
    /// Match rules: records left alone (no match with `on_none = "skip"`, or several with
    /// `on_many = "skip"`).
    pub skip_match: usize,
    /// Match rules: records that would go to the dead letters (several matches, `on_many = "fail"`).
    pub would_fail_match: usize,
    /// Up to a few record ids per outcome, with the fields or the reason.
    pub samples: Vec<Sample>,
}

/// One example record and what would happen to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    pub outcome: &'static str,
    pub record_id: String,
    pub detail: String,
}

/// Reads the state read-only when it exists; a missing state file means nothing is linked yet.
fn links(
    state: Option<&ReadOnlyStore>,
    flow: &str,
    ids: &[String],
) -> Result<BTreeMap<String, Link>, StoreError> {
    match state {
        Some(s) => Ok(s.links_by_source(flow, ids)?.into_iter().collect()),
        None => Ok(BTreeMap::new()),
    }
}

/// Plans every record of each flow's source against the current state, writing nothing.
pub async fn plan_flows(
    connectors: &[&Connector],
    mappings: &[Arc<Mapping>],
    state: Option<&ReadOnlyStore>,
    retry: &RetryPolicy,
) -> Result<Vec<FlowPlan>, EngineError> {
    let mut out = Vec::new();
    for m in mappings {
        let Some(conn) = connectors.iter().find(|c| c.kind() == m.source.system) else {
            continue;
        };
        let target = connectors
            .iter()
            .find(|c| c.kind() == m.target.system)
            .copied();
        let mut tally = Tally::new(m);
        let mut page: Option<String> = None;
        loop {
            let read = retry
                .run(|| conn.read_changes(&m.source.object, 0, &[], page.as_deref()))
                .await
                .map_err(|error| EngineError::Connector {
                    system: conn.kind(),
                    error,
                })?;
            plan_page(&mut tally, m, &read.records, target, state, retry).await?;
            page = read.next_page;
            if page.is_none() {
                break;
            }
        }
        out.push(tally.plan);
    }
    Ok(out)
}

/// Plans one page of `m`'s source records into `tally`, with their links, lookups and match
/// searches.
async fn plan_page(
    tally: &mut Tally,
    m: &Mapping,
    records: &[Record],
    target: Option<&Connector>,
    state: Option<&ReadOnlyStore>,
    retry: &RetryPolicy,
) -> Result<(), EngineError> {
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let known = links(state, &m.name, &ids)?;
    let mut lookups = Lookups::default();
    for (flow, keys) in m.lookup_keys(records.iter().map(|r| &r.fields)) {
        for (sid, link) in links(state, &flow, &keys)? {
            if let Some(tid) = link.target_id {
                lookups.insert(&flow, sid, tid);
            }
        }
    }
    // Match rules: the same read-only search the engine makes before a create.
    let unlinked = records
        .iter()
        .filter(|r| m.accepts(&r.fields) && plan::would_create(known.get(&r.id)));
    let found = matching::prefetch(target, retry, m, unlinked)
        .await
        .map_err(|error| EngineError::Connector {
            system: m.target.system,
            error,
        })?;
    plan_records(tally, m, records, &known, &lookups, found);
    Ok(())
}

/// A flow's plan as pages are added to it, with how many records each outcome has had (for the
/// samples).
#[derive(Debug)]
pub struct Tally {
    pub plan: FlowPlan,
    seen: BTreeMap<&'static str, usize>,
}

impl Tally {
    pub fn new(m: &Mapping) -> Tally {
        Tally {
            plan: FlowPlan {
                flow: m.name.clone(),
                version: m.version.clone(),
                ..FlowPlan::default()
            },
            seen: BTreeMap::new(),
        }
    }
}

/// Adds the planner's decisions for `records` to `tally`. Pure.
pub fn plan_records(
    tally: &mut Tally,
    m: &Mapping,
    records: &[Record],
    links: &BTreeMap<String, Link>,
    lookups: &Lookups,
    mut found: Prefetched,
) {
    let Tally {
        plan: p,
        seen: counts,
    } = tally;
    p.read += records.len();
    for rec in records {
        let link = links.get(&rec.id);
        let d = plan::forward_matched(m, rec, link, lookups, found.found(m, rec));
        found.note(&d);
        let ledger = d.ledger.as_ref();
        let (outcome, detail) = match (ledger.map(|l| l.action), &d.write) {
            (_, Some(w)) if w.id_property.is_none() && w.target_id.is_some() => {
                p.would_link += 1;
                (
                    "would_link",
                    ledger.and_then(|l| l.detail.clone()).unwrap_or_default(),
                )
            }
            (Some(action::NO_MATCH | action::AMBIGUOUS_SKIPPED), None) => {
                p.skip_match += 1;
                (
                    "skip_match",
                    ledger.and_then(|l| l.detail.clone()).unwrap_or_default(),
                )
            }
            (Some(action::AMBIGUOUS), None) => {
                p.would_fail_match += 1;
                (
                    "would_fail_match",
                    d.dead_letter
                        .as_ref()
                        .map(|dl| dl.reason.clone())
                        .unwrap_or_default(),
                )
            }
            (_, Some(w))
                if w.target_id.is_none() && link.is_none_or(|l| l.target_state.is_empty()) =>
            {
                p.would_create += 1;
                ("would_create", fields_of(&w.payload))
            }
            (_, Some(w)) => {
                p.would_update += 1;
                ("would_update", fields_of(&w.payload))
            }
            (Some(action::FILTERED), None) => {
                p.skip_filtered += 1;
                ("skip_filtered", String::new())
            }
            (Some(action::MAPPING_FAILED), None) => {
                p.would_fail_mapping += 1;
                (
                    "would_fail_mapping",
                    d.dead_letter.map(|dl| dl.reason).unwrap_or_default(),
                )
            }
            _ => {
                p.skip_unchanged += 1;
                ("skip_unchanged", String::new())
            }
        };
        let seen = counts.entry(outcome).or_default();
        *seen += 1;
        if *seen <= SAMPLES {
            p.samples.push(Sample {
                outcome,
                record_id: rec.id.clone(),
                detail,
            });
        }
    }
}

fn fields_of(payload: &serde_json::Map<String, serde_json::Value>) -> String {
    payload.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The report `prmsync plan` prints.
pub fn render(plans: &[FlowPlan]) -> String {
    let mut s = String::new();
    for p in plans {
        s.push_str(&format!(
            "flow {} (mapping {}): {} read, {} would create, {} would update, {} unchanged, {} filtered out, {} would fail mapping\n",
            p.flow,
            p.version,
            p.read,
            p.would_create,
            p.would_update,
            p.skip_unchanged,
            p.skip_filtered,
            p.would_fail_mapping
        ));
        if p.would_link + p.skip_match + p.would_fail_match > 0 {
            s.push_str(&format!(
                "  match rules: {} would link to existing records, {} left alone, {} would fail (several matches)\n",
                p.would_link, p.skip_match, p.would_fail_match
            ));
        }
        for x in &p.samples {
            s.push_str(&format!(
                "  {:<18} {}  {}\n",
                x.outcome, x.record_id, x.detail
            ));
        }
    }
    s.push_str("dry run: nothing was written\n");
    s
}
