//! Deal registrations in the engine: record each PRM deal version, decide the affected
//! duplicate-key groups by the rules of engagement, and queue each decision's write-back to the
//! PRM deal and the CRM deal through the outbox.
//!
//! CRM facts: before a group is decided, the companies with its customer domain and their open
//! direct deals are read from the CRM (batched per chunk of groups, cached for the pass) when the
//! rules name CRM criteria, account ids or `open_direct_opportunity`. A failed read leaves the
//! group undecided (dirty) for the next pass; it is never decided without the facts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::RetryPolicy;
use super::plan;
use crate::connector::{Connector, ConnectorError, CrmFactsRead, FactsQuery};
use crate::mapping::Mapping;
use crate::model::{ChangeKind, Direction, ObjectRef, SystemKind, content_hash};
use crate::rules::{
    self, CrmAccount, CrmFacts, CrmOpportunity, Decision, Input, RegistrationEvent, Rules, Status,
    Step,
};
use crate::store::{
    DecisionCommit, InboxItem, KeyedEvent, LedgerEntry, Link, PlanCommit, PlannedWrite,
    ReadOnlyStore, Store, StoreError,
};

/// The flow name on outbox rows, links and ledger lines written for registration decisions.
pub const FLOW: &str = "rules-of-engagement";
/// The PRM object that holds deal registrations.
pub const OBJECT: &str = "deals";
/// The PRM object whose records name the partners (key = record id; see [`partner_name`]).
pub const PARTNERS: &str = "partnerships";
/// The PRM object of MDF requests, kept for the attribution report when a flow reads them.
pub const MDF_REQUESTS: &str = "mdf_requests";
/// Groups decided per store round trip (and per CRM facts read).
const GROUPS_PER_COMMIT: usize = 50;
/// The deal property marking a CRM deal made from a registration, when no deal flow names one.
const DEFAULT_PRM_ID_PROPERTY: &str = "prm_deal_id";

/// Where the rules' CRM facts come from: the CRM connector and how its reads are retried.
#[derive(Debug, Clone)]
pub struct CrmSource<'a> {
    pub connector: &'a Connector,
    pub retry: &'a RetryPolicy,
    /// Set when the CRM must be left alone (it asked for a pause, or its credential died): no
    /// facts are read and the groups wait, rather than being decided without them.
    pub held: Option<ConnectorError>,
    /// The error that stopped the facts read, for the engine to hold the system on.
    pub failed: &'a std::sync::Mutex<Option<ConnectorError>>,
}

/// What the rules read from the CRM, per pass; domains already read are not read again.
struct FactsCache<'a> {
    source: Option<CrmSource<'a>>,
    query: Option<FactsQuery>,
    /// Normalised domain -> the facts for it.
    by_domain: BTreeMap<String, CrmFacts>,
}

impl<'a> FactsCache<'a> {
    fn new(rules: &Rules, source: Option<CrmSource<'a>>, prm_id_property: &str) -> Self {
        let domain_field = source
            .as_ref()
            .and_then(|s| rules.crm_names(s.connector.kind()))
            .map_or_else(String::new, |n| n.account_domain.clone());
        let uses = |step: Step| rules.order.iter().any(|(s, _)| *s == step);
        let accounts = uses(Step::Reserved)
            && (!rules.reserved.account_ids.is_empty() || !rules.reserved.crm.is_empty());
        let open_deals = uses(Step::OpenDirect);
        let query = (accounts || open_deals).then(|| FactsQuery {
            domains: Vec::new(),
            // Each criterion's field under this CRM's name; one naming only another CRM is not read.
            company_fields: source
                .as_ref()
                .map(|s| {
                    rules
                        .reserved
                        .crm
                        .iter()
                        .filter_map(|c| c.field_for(s.connector.kind()).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            open_deals,
            prm_id_property: prm_id_property.to_owned(),
            domain_field,
        });
        FactsCache {
            source,
            query,
            by_domain: BTreeMap::new(),
        }
    }

    /// Reads the facts for the `domains` not read yet this pass, in one batched call.
    async fn load(&mut self, domains: &[String]) -> Result<(), ConnectorError> {
        let (Some(source), Some(query)) = (&self.source, &self.query) else {
            return Ok(());
        };
        if let Some(e) = &source.held {
            return Err(e.clone());
        }
        let missing: Vec<String> = domains
            .iter()
            .filter(|d| !self.by_domain.contains_key(*d))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let q = FactsQuery {
            domains: missing.clone(),
            ..query.clone()
        };
        let read = source
            .retry
            .run(|| async {
                match source.connector.crm_facts(&q).await {
                    Some(r) => r,
                    // This CRM's facts are not read (docs/rules.md): the rules see none.
                    None => Ok(CrmFactsRead::default()),
                }
            })
            .await
            .inspect_err(|e| {
                *source.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            })?;
        for d in missing {
            self.by_domain.entry(d).or_default();
        }
        for c in read.companies {
            if let Some(f) =
                rules::normalize::domain(&c.domain).and_then(|d| self.by_domain.get_mut(&d))
            {
                f.accounts.push(CrmAccount {
                    id: c.id,
                    domain: c.domain,
                    fields: c.fields,
                });
            }
        }
        for o in read.open_direct_deals {
            if let Some(f) =
                rules::normalize::domain(&o.domain).and_then(|d| self.by_domain.get_mut(&d))
            {
                f.opportunities.push(CrmOpportunity {
                    id: o.id,
                    domain: o.domain,
                    open: true,
                    partner_sourced: false,
                });
            }
        }
        Ok(())
    }

    /// The facts read for `domains`.
    fn facts(&self, domains: &[String]) -> CrmFacts {
        let mut out = CrmFacts::default();
        for f in domains.iter().filter_map(|d| self.by_domain.get(d)) {
            out.accounts.extend(f.accounts.iter().cloned());
            out.opportunities.extend(f.opportunities.iter().cloned());
        }
        out
    }
}

/// The normalised customer domains of a group's registrations.
fn domains_of(rules: &Rules, events: &[RegistrationEvent]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter_map(|e| rules::key_of(rules, &e.fields).1)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Ledger actions for registrations.
pub mod action {
    pub const DECIDED: &str = "registration_decided";
    pub const CHANGED: &str = "registration_changed";
    pub const QUEUED: &str = "registration_queued";
}

fn event(item: &InboxItem) -> RegistrationEvent {
    let r = &item.change.record;
    RegistrationEvent {
        id: r.id.clone(),
        at_ms: r.modified_ms,
        submitted_ms: r
            .fields
            .get("created_at")
            .and_then(Value::as_i64)
            .unwrap_or(r.modified_ms),
        fields: r.fields.clone(),
    }
}

fn keyed(rules: &Rules, event: RegistrationEvent) -> KeyedEvent {
    let (key, _) = rules::key_of(rules, &event.fields);
    let partner = event
        .fields
        .get(&rules.fields.partner)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    KeyedEvent {
        key: key.unwrap_or_else(|| format!("nokey:{}", event.id)),
        partner,
        event,
    }
}

/// Records the PRM deal registrations among `items` (and partners' names from the PRM's
/// partnerships, and MDF requests for the attribution report), and notes registrations whose CRM deal
/// changed (so a deal created by the deal flow gets its decision written). Runs before the inbox
/// batch is committed; repeats are ignored, so a crash in between loses nothing.
pub async fn observe(
    store: &Store,
    rules: &Rules,
    mappings: &[Arc<Mapping>],
    prm: SystemKind,
    items: &[InboxItem],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let source = registrations_object(prm);
    let events: Vec<KeyedEvent> = items
        .iter()
        .filter(|i| i.change.object == source && i.change.kind == ChangeKind::Upsert)
        .map(|i| keyed(rules, event(i)))
        .collect();
    let touched: Vec<String> = deal_flow(mappings, prm)
        .map(|m| {
            items
                .iter()
                .filter(|i| i.change.object == m.target && i.change.kind == ChangeKind::Upsert)
                .filter_map(|i| plan::source_id_of(m, &i.change.record))
                .collect()
        })
        .unwrap_or_default();
    let partners = ObjectRef {
        system: prm,
        object: PARTNERS.into(),
    };
    let names: Vec<(String, String)> = items
        .iter()
        .filter(|i| i.change.object == partners && i.change.kind == ChangeKind::Upsert)
        .filter_map(|i| {
            let r = &i.change.record;
            let name = partner_name(&r.fields)?;
            Some((r.id.clone(), name))
        })
        .collect();
    if !names.is_empty() {
        store.record_partner_names(names, now_ms).await?;
    }
    let mdf = ObjectRef {
        system: prm,
        object: MDF_REQUESTS.into(),
    };
    let requests: Vec<(String, Map<String, Value>)> = items
        .iter()
        .filter(|i| i.change.object == mdf && i.change.kind == ChangeKind::Upsert)
        .map(|i| (i.change.record.id.clone(), i.change.record.fields.clone()))
        .collect();
    if !requests.is_empty() {
        store.record_mdf_requests(requests, now_ms).await?;
    }
    record_evidence(store, rules, prm, items, now_ms).await?;
    if events.is_empty() && touched.is_empty() {
        return Ok(0);
    }
    store.record_registrations(events, touched, now_ms).await
}

/// Stores the partners' leads and activities among `items` that `[credit]` counts as evidence
/// (customer key, partner, time): what the credit step needs, so it never reads the PRM again.
/// A record without a customer key, partner or time, an archived action and a deleted record
/// are forgotten.
async fn record_evidence(
    store: &Store,
    rules: &Rules,
    prm: SystemKind,
    items: &[InboxItem],
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(rule) = &rules.credit else {
        return Ok(());
    };
    let mut rows = Vec::new();
    let mut gone = Vec::new();
    for i in items.iter().filter(|i| i.change.object.system == prm) {
        let Some(source) = rule.source_for(&i.change.object.object) else {
            continue;
        };
        let r = &i.change.record;
        match i.change.kind {
            ChangeKind::Upsert => match rules::credit::evidence_of(rules, source, &r.id, &r.fields)
            {
                Some(row) => rows.push(row),
                None => gone.push((source.kind, r.id.clone())),
            },
            ChangeKind::Delete => gone.push((source.kind, r.id.clone())),
            ChangeKind::Hint => {}
        }
    }
    if rows.is_empty() && gone.is_empty() {
        return Ok(());
    }
    store.record_credit_evidence(rows, gone, now_ms).await
}

/// A partnership's name as channel managers know it: the partner organisation's `company.name`,
/// else a top-level `name`.
fn partner_name(fields: &Map<String, Value>) -> Option<String> {
    [
        fields.get("company").and_then(|c| c.get("name")),
        fields.get("name"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .map(str::trim)
    .find(|n| !n.is_empty())
    .map(str::to_owned)
}

fn registrations_object(prm: SystemKind) -> ObjectRef {
    ObjectRef {
        system: prm,
        object: OBJECT.into(),
    }
}

/// The flow that turns registrations into CRM deals (it owns creating them).
fn deal_flow(mappings: &[Arc<Mapping>], prm: SystemKind) -> Option<&Arc<Mapping>> {
    let source = registrations_object(prm);
    mappings.iter().find(|m| m.source == source)
}

/// Decides every group that changed (or was decided under other rules, or holds an expired
/// protection), stores the decisions and queues write-backs. Returns how many decisions changed.
/// CRM facts come from `crm`; groups whose facts cannot be read wait for the next pass.
pub async fn decide(
    store: &Store,
    rules: &Rules,
    mappings: &[Arc<Mapping>],
    prm: SystemKind,
    crm: Option<CrmSource<'_>>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    if store.registrations_outdated(rules.version.clone()).await? {
        let latest = store.outdated_registrations(rules.version.clone()).await?;
        let keys = latest
            .into_iter()
            .map(|e| keyed(rules, e))
            .map(|k| (k.event.id, k.key, k.partner))
            .collect();
        store.rekey_registrations(keys, now_ms).await?;
    }
    let Some(as_of) = store.registrations_as_of().await? else {
        return Ok(0);
    };
    let keys = store
        .registration_keys_to_decide(rules.version.clone(), as_of)
        .await?;
    let deal_flow = deal_flow(mappings, prm);
    let prm_id_property = deal_flow.map_or(DEFAULT_PRM_ID_PROPERTY, |m| m.external_id.as_str());
    let mut cache = FactsCache::new(rules, crm, prm_id_property);
    let mut changed = 0;
    for (n, chunk) in keys.chunks(GROUPS_PER_COMMIT).enumerate() {
        let mut groups = Vec::with_capacity(chunk.len());
        for key in chunk {
            let group = store.registration_group(key.clone()).await?;
            groups.push((key.clone(), domains_of(rules, &group.events), group));
        }
        let domains: Vec<String> = groups.iter().flat_map(|(_, d, _)| d.clone()).collect();
        if let Err(error) = cache.load(&domains).await {
            // Deciding without the facts could approve a reserved account: these groups and the
            // rest stay dirty and are decided on a later pass (no more reads while the CRM fails).
            let waiting = keys.len() - n * GROUPS_PER_COMMIT;
            tracing::warn!(groups = waiting, error = %error, "could not read CRM facts; registrations wait for the next pass");
            break;
        }
        let mut commit = DecisionCommit {
            rules_version: rules.version.clone(),
            keys: chunk.to_vec(),
            ..DecisionCommit::default()
        };
        let mut before: BTreeMap<String, Status> = BTreeMap::new();
        for (_, domains, group) in groups {
            let evidence: Vec<_> = group.evidence.into_iter().map(|(_, e)| e).collect();
            before.extend(
                group
                    .prior
                    .iter()
                    .map(|p| (p.registration_id.clone(), p.status)),
            );
            let input = Input {
                events: group.events,
                crm: cache.facts(&domains),
                reviews: group.reviews,
                prior: group.prior,
                partner_names: group.partner_names,
                as_of_ms: as_of,
            };
            let decided = rules::evaluate(rules, &input);
            commit.credits.extend(super::credits::desired(
                rules,
                &input.events,
                &decided,
                &evidence,
            ));
            commit.decisions.extend(decided);
        }
        let ids: Vec<String> = commit
            .decisions
            .iter()
            .map(|d| d.registration_id.clone())
            .collect();
        let ours: BTreeMap<String, Link> = store
            .links_by_source(FLOW.into(), ids.clone())
            .await?
            .into_iter()
            .collect();
        let deals: BTreeMap<String, Link> = match deal_flow {
            Some(m) => store
                .links_by_source(m.name.clone(), ids)
                .await?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        let mut plan = PlanCommit::default();
        for d in &commit.decisions {
            let link = ours.get(&d.registration_id).cloned().unwrap_or_default();
            let prev = before.get(&d.registration_id).copied();
            if prev == Some(Status::Approved) && d.status != Status::Approved {
                tracing::warn!(registration = %d.registration_id, status = %d.status, reason = %d.reason, "a protected registration lost its approval");
            }
            if prev != Some(d.status) {
                plan.ledger.push(LedgerEntry {
                    flow: FLOW.into(),
                    direction: Direction::ToSource,
                    source_id: d.registration_id.clone(),
                    target_id: None,
                    action: if prev.is_some() {
                        action::CHANGED
                    } else {
                        action::DECIDED
                    },
                    content_hash: None,
                    mapping_version: Some(rules.version.clone()),
                    detail: Some(format!(
                        "{} -> {}: {}",
                        prev.map_or("none", Status::as_str),
                        d.status,
                        d.reason
                    )),
                });
            }
            let prm_desired = prm_fields(d);
            if let Some(w) = write(
                rules,
                d,
                Direction::ToSource,
                prm,
                OBJECT,
                None,
                Some(d.registration_id.clone()),
                prm_desired,
                &link.source_state,
            ) {
                plan.writes.push(w);
            }
            // The CRM deal is written once the deal flow has created it (it owns the record); its
            // creation comes back through the CRM poll and re-decides the group (see `observe`).
            if let Some((m, target_id)) = deal_flow.and_then(|m| {
                deals
                    .get(&d.registration_id)
                    .and_then(|l| l.target_id.clone())
                    .map(|t| (m, t))
            }) && let Some(names) = rules.crm_names(m.target.system)
                && let Some(w) = write(
                    rules,
                    d,
                    Direction::ToTarget,
                    m.target.system,
                    &m.target.object,
                    Some(m.external_id.clone()),
                    Some(target_id),
                    crm_fields(d, names),
                    &link.target_state,
                )
            {
                plan.writes.push(w);
            }
        }
        for w in &plan.writes {
            plan.ledger.push(LedgerEntry {
                flow: FLOW.into(),
                direction: w.direction,
                source_id: w.source_id.clone(),
                target_id: w.target_id.clone(),
                action: action::QUEUED,
                content_hash: Some(w.content_hash.clone()),
                mapping_version: Some(rules.version.clone()),
                detail: Some(format!("{} {}", w.system, w.object)),
            });
        }
        commit.plan = plan;
        changed += store.commit_decisions(commit, now_ms).await?;
    }
    if changed > 0 {
        tracing::info!(changed, "registration decisions changed");
    }
    Ok(changed)
}

/// A registration whose decision a rules file would change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Move {
    pub registration_id: String,
    pub partner: String,
    /// The stored status (`None`: not decided yet).
    pub before: Option<String>,
    pub after: Status,
    pub reason: String,
}

/// What `rules` would decide for every stored registration, compared with what is stored: the
/// registrations that would move. Reads the state (never writes) and the CRM facts the rules
/// name, as a pass would; a failed facts read fails the preview rather than guess.
pub async fn preview(
    state: &ReadOnlyStore,
    rules: &Rules,
    mappings: &[Arc<Mapping>],
    prm: SystemKind,
    crm: Option<CrmSource<'_>>,
) -> Result<Vec<Move>, PreviewError> {
    let (all, as_of) = state.all_registrations()?;
    let Some(as_of) = as_of else {
        return Ok(Vec::new());
    };
    let stored: BTreeMap<String, Option<String>> = state
        .registrations()?
        .into_iter()
        .map(|r| (r.id, r.status))
        .collect();
    let prm_id_property =
        deal_flow(mappings, prm).map_or(DEFAULT_PRM_ID_PROPERTY, |m| m.external_id.as_str());
    let mut cache = FactsCache::new(rules, crm, prm_id_property);
    let domains = domains_of(rules, &all.events);
    cache.load(&domains).await?;
    let input = Input {
        crm: cache.facts(&domains),
        events: all.events,
        reviews: all.reviews,
        prior: all.prior,
        partner_names: all.partner_names,
        as_of_ms: as_of,
    };
    Ok(rules::evaluate(rules, &input)
        .into_iter()
        .filter_map(|d| {
            let before = stored.get(&d.registration_id).cloned().flatten();
            (before.as_deref() != Some(d.status.as_str())).then_some(Move {
                registration_id: d.registration_id,
                partner: d.partner,
                before,
                after: d.status,
                reason: d.reason,
            })
        })
        .collect())
}

/// Why a preview could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("reading the state file: {0}")]
    Store(#[from] StoreError),
    #[error("reading CRM facts: {0}")]
    Crm(#[from] ConnectorError),
}

fn protected_text(ms: Option<i64>) -> Value {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or(Value::Null, |t| json!(t.to_string()))
}

/// The PRM deal's custom `fields` prmsync owns (the decision), and only those: the connector
/// merges them into the deal's custom fields as they are when it writes, so a partner's edit
/// since the last poll is never overwritten with an older copy.
fn prm_fields(d: &Decision) -> Map<String, Value> {
    let mut custom = Map::new();
    custom.insert("registration_status".into(), json!(d.status.as_str()));
    custom.insert("registration_reason".into(), json!(d.reason));
    custom.insert("protected_until".into(), protected_text(d.protected_until));
    custom.insert("duplicate_of".into(), json!(d.duplicate_of));
    let mut out = Map::new();
    out.insert("fields".into(), Value::Object(custom));
    out
}

/// The CRM deal's decision fields, under the names the rules file gives for that CRM.
fn crm_fields(d: &Decision, names: &rules::CrmNames) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(names.status.clone(), json!(d.status.as_str()));
    out.insert(
        names.protected_until.clone(),
        protected_text(d.protected_until),
    );
    out.insert(names.attribution.clone(), json!(d.status.attribution()));
    out
}

#[allow(clippy::too_many_arguments)]
fn write(
    rules: &Rules,
    d: &Decision,
    direction: Direction,
    system: SystemKind,
    object: &str,
    id_property: Option<String>,
    target_id: Option<String>,
    desired: Map<String, Value>,
    known: &crate::store::StateDigest,
) -> Option<PlannedWrite> {
    let payload = plan::diff(&desired, known);
    if payload.is_empty() {
        return None;
    }
    let state_after = known.with(&desired);
    Some(PlannedWrite {
        flow: FLOW.into(),
        direction,
        source_id: d.registration_id.clone(),
        target_id,
        system,
        object: object.to_owned(),
        id_property,
        content_hash: content_hash(&payload),
        payload,
        state_after,
        mapping_version: rules.version.clone(),
        op: crate::store::WriteOp::Upsert,
    })
}
