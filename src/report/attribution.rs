//! The attribution report's figures, computed from prmsync's state (registration decisions, the
//! versions of each registration with the stage, amount and close date the CRM syncs back, and
//! MDF requests): partner-sourced and partner-influenced pipeline and won revenue, win rate and
//! cycle time against deals without partner credit, registrations by decision and conflict
//! reason, protection expiries, and MDF spend against sourced revenue by tier. Multi-partner
//! credit (`[credit]` of the rules, `rules::credit`) is recomputed from the same state: a partner
//! influencing another's sourced deal counts that deal in its influenced figures. Pure: no I/O,
//! no clock ("now" is the newest registration version time).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::rules::credit::{self, PartnerCredit};
use crate::rules::{RegistrationEvent, Rules, Status};
use crate::store::StoredRegistration;
use crate::store::attribution::StoredMdf;

const DAY_MS: i64 = 86_400_000;

/// The PRM deal's stage field and the values that close it (PartnerStack's deal stages, which
/// the deal flows map the CRM's closed stages back to).
pub const STAGE_FIELD: &str = "stage";
pub const WON: &str = "won";
pub const LOST: &str = "lost";

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Partner,
    Tier,
    Month,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "partner" => Some(GroupBy::Partner),
            "tier" => Some(GroupBy::Tier),
            "month" => Some(GroupBy::Month),
            _ => None,
        }
    }
}

/// The report's window and grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Deals submitted (and expiries and MDF requests dated) at or after this instant.
    pub from_ms: Option<i64>,
    /// ... and before this instant (the day after `--to`).
    pub until_ms: Option<i64>,
    pub by: GroupBy,
}

/// Who gets credit for a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Credit {
    /// The registration won protection (approved, or approved and since expired).
    Sourced,
    /// Credited as influencing an open direct deal.
    Influenced,
    /// No partner credit: rejected, or a duplicate of another registration.
    None,
    /// Not decided yet (pending, review, or never decided).
    Undecided,
}

impl Credit {
    pub const ALL: [Credit; 4] = [
        Credit::Sourced,
        Credit::Influenced,
        Credit::None,
        Credit::Undecided,
    ];

    fn of(status: Option<Status>) -> Credit {
        match status {
            Some(Status::Approved | Status::Expired) => Credit::Sourced,
            Some(Status::Influenced) => Credit::Influenced,
            Some(Status::Rejected | Status::Duplicate) => Credit::None,
            Some(Status::Pending | Status::Review) | None => Credit::Undecided,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Credit::Sourced => "partner-sourced",
            Credit::Influenced => "partner-influenced",
            Credit::None => "no partner credit",
            Credit::Undecided => "undecided",
        }
    }
}

/// Where a deal's stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Open,
    Won,
    Lost,
}

/// One registration's deal as the report sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deal {
    pub id: String,
    pub partner: String,
    pub partner_name: Option<String>,
    pub tier: Option<String>,
    pub submitted_ms: i64,
    pub amount_cents: i64,
    pub close_date: Option<String>,
    pub outcome: Outcome,
    /// When prmsync first saw the deal won or lost.
    pub closed_ms: Option<i64>,
    pub credit: Credit,
    pub status: Option<String>,
    pub rule: Option<String>,
    pub protected_until: Option<i64>,
    /// A sourced deal's partners with their roles (the primary first), from `[credit]`.
    pub partners: Vec<PartnerCredit>,
}

/// Pipeline figures for a set of deals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub deals: usize,
    /// Open deals' amounts.
    pub pipeline_cents: i64,
    pub won: usize,
    pub lost: usize,
    pub won_cents: i64,
    /// won / (won + lost); `None` with nothing closed.
    pub win_rate: Option<f64>,
    /// Mean days from submission to won, over won deals.
    pub cycle_days: Option<f64>,
}

impl Figures {
    fn of<'a>(deals: impl IntoIterator<Item = &'a Deal>) -> Figures {
        let mut f = Figures::default();
        let mut cycle_sum = 0i64;
        for d in deals {
            f.deals += 1;
            match d.outcome {
                Outcome::Open => f.pipeline_cents += d.amount_cents,
                Outcome::Won => {
                    f.won += 1;
                    f.won_cents += d.amount_cents;
                    cycle_sum += d.closed_ms.unwrap_or(d.submitted_ms) - d.submitted_ms;
                }
                Outcome::Lost => f.lost += 1,
            }
        }
        let closed = f.won + f.lost;
        f.win_rate = (closed > 0).then(|| f.won as f64 / closed as f64);
        f.cycle_days = (f.won > 0).then(|| cycle_sum as f64 / f.won as f64 / DAY_MS as f64);
        f
    }
}

/// The figures of one kind of credit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TotalRow {
    pub credit: Credit,
    #[serde(flatten)]
    pub figures: Figures,
}

/// One group's (partner, tier or month) partner-credited figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    pub group: String,
    pub sourced: Figures,
    pub influenced: Figures,
}

/// Registrations counted by decision and the rule that decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionCount {
    pub status: String,
    /// The rule that decided (`reserved_accounts`, `first_qualified`, ...), the conflict reason.
    pub rule: String,
    pub registrations: usize,
}

/// A protection ending in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expiry {
    pub registration_id: String,
    pub partner: String,
    pub protected_until_ms: i64,
    /// Already ended at the state's "now".
    pub ended: bool,
}

/// MDF against partner-sourced revenue, per tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MdfRow {
    pub tier: String,
    pub requests: usize,
    pub requested_cents: i64,
    pub approved_cents: i64,
    /// Claimed amounts of claimed or paid requests.
    pub spent_cents: i64,
    /// Won revenue of the tier's partner-sourced deals.
    pub sourced_won_cents: i64,
    /// sourced_won / spent; `None` without spend.
    pub revenue_per_mdf: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub as_of_ms: Option<i64>,
    pub by: GroupBy,
    /// Figures per credit, in [`Credit::ALL`] order.
    pub totals: Vec<TotalRow>,
    /// Partner-sourced deals on which another partner is credited too (multi-partner credit).
    pub co_influenced: Figures,
    pub groups: Vec<GroupRow>,
    pub decisions: Vec<DecisionCount>,
    pub expiries: Vec<Expiry>,
    /// `None` when the state holds no MDF requests (no MDF flow runs).
    pub mdf: Option<Vec<MdfRow>>,
}

/// What the report reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub registrations: &'a [StoredRegistration],
    pub versions: &'a [RegistrationEvent],
    pub mdf: &'a [StoredMdf],
    /// Partners' leads and activities (customer key, item), as the credits count them.
    pub evidence: &'a [(String, credit::EvidenceItem)],
    /// Partners' names in the PRM (for partners credited by a lead or activity alone).
    pub partner_names: &'a BTreeMap<String, String>,
    pub as_of_ms: Option<i64>,
}

fn text<'a>(f: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    f.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn cents(f: &Map<String, Value>, k: &str) -> i64 {
    match f.get(k) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|x| x.round() as i64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn outcome_of(stage: Option<&str>) -> Outcome {
    match stage {
        Some(WON) => Outcome::Won,
        Some(LOST) => Outcome::Lost,
        _ => Outcome::Open,
    }
}

/// Each registration's deal: its latest version's amount, close date and stage, and when it was
/// first seen closed.
pub fn deals(rules: &Rules, input: &Input<'_>) -> Vec<Deal> {
    let mut versions: BTreeMap<&str, Vec<&RegistrationEvent>> = BTreeMap::new();
    for v in input.versions {
        versions.entry(v.id.as_str()).or_default().push(v);
    }
    let mut out = Vec::new();
    for r in input.registrations {
        let Some(vs) = versions.get(r.id.as_str()) else {
            continue;
        };
        let mut vs = vs.clone();
        vs.sort_by_key(|v| v.at_ms);
        let Some(latest) = vs.last() else { continue };
        let fields = &latest.fields;
        let outcome = outcome_of(text(fields, STAGE_FIELD));
        let closed_ms = (outcome != Outcome::Open)
            .then(|| {
                vs.iter()
                    .find(|v| outcome_of(text(&v.fields, STAGE_FIELD)) == outcome)
                    .map(|v| v.at_ms)
            })
            .flatten();
        let status = r.status.as_deref().and_then(Status::parse);
        out.push(Deal {
            id: r.id.clone(),
            partner: r.partner.clone(),
            partner_name: r.partner_name.clone(),
            tier: rules.tier_of(&r.partner, fields),
            submitted_ms: vs.first().map_or(latest.submitted_ms, |v| v.submitted_ms),
            amount_cents: cents(fields, &rules.fields.amount),
            close_date: text(fields, &rules.fields.close_date).map(str::to_owned),
            outcome,
            closed_ms,
            credit: Credit::of(status),
            status: r.status.clone(),
            rule: r.rule.clone(),
            protected_until: r.protected_until,
            partners: Vec::new(),
        });
    }
    if let Some(rule) = &rules.credit {
        attach_credits(rule, rules, input, &mut out);
    }
    out
}

/// Each sourced deal's partners, computed per customer (duplicate key) as the engine does.
fn attach_credits(rule: &credit::CreditRule, rules: &Rules, input: &Input<'_>, deals: &mut [Deal]) {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in input.registrations {
        by_key
            .entry(r.key.as_str())
            .or_default()
            .push(r.id.as_str());
    }
    let status: BTreeMap<&str, Option<Status>> = input
        .registrations
        .iter()
        .map(|r| (r.id.as_str(), r.status.as_deref().and_then(Status::parse)))
        .collect();
    let mut versions: BTreeMap<&str, Vec<&RegistrationEvent>> = BTreeMap::new();
    for v in input.versions {
        versions.entry(v.id.as_str()).or_default().push(v);
    }
    let mut evidence: BTreeMap<&str, Vec<credit::EvidenceItem>> = BTreeMap::new();
    for (key, e) in input.evidence {
        evidence.entry(key.as_str()).or_default().push(e.clone());
    }
    let mut found: BTreeMap<String, Vec<PartnerCredit>> = BTreeMap::new();
    for (key, ids) in &by_key {
        let claims: Vec<credit::Claim<'_>> = ids
            .iter()
            .filter_map(|id| {
                let vs = versions.get(id)?;
                let latest = vs.iter().max_by_key(|v| v.at_ms)?;
                Some(credit::Claim {
                    registration_id: id,
                    partner: latest
                        .fields
                        .get(&rules.fields.partner)
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    status: status.get(id).copied().flatten(),
                    submitted_ms: vs.iter().map(|v| v.submitted_ms).min()?,
                    fields: &latest.fields,
                })
            })
            .collect();
        let evidence = evidence.get(key).map_or(&[][..], Vec::as_slice);
        for dc in credit::credits(rule, &claims, evidence) {
            found.insert(dc.registration_id, dc.partners);
        }
    }
    for d in deals {
        if let Some(p) = found.remove(&d.id) {
            d.partners = p;
        }
    }
}

fn within(opts: &Options, ms: i64) -> bool {
    opts.from_ms.is_none_or(|f| ms >= f) && opts.until_ms.is_none_or(|u| ms < u)
}

fn month(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m").to_string())
        .unwrap_or_else(|_| "?".into())
}

fn partner_label(d: &Deal) -> String {
    match &d.partner_name {
        Some(n) => format!("{n} ({})", d.partner),
        None => d.partner.clone(),
    }
}

/// Computes the report.
pub fn report(rules: &Rules, input: &Input<'_>, opts: &Options) -> Report {
    let all = deals(rules, input);
    let in_window: Vec<&Deal> = all
        .iter()
        .filter(|d| within(opts, d.submitted_ms))
        .collect();
    let totals = Credit::ALL
        .into_iter()
        .map(|credit| TotalRow {
            credit,
            figures: Figures::of(in_window.iter().copied().filter(|d| d.credit == credit)),
        })
        .collect();

    let co_influenced = Figures::of(
        in_window
            .iter()
            .copied()
            .filter(|d| d.partners.iter().any(|p| !p.primary)),
    );
    let by_id: BTreeMap<&str, &Deal> = all.iter().map(|d| (d.id.as_str(), d)).collect();
    let key_of = |d: &Deal| match opts.by {
        GroupBy::Partner => partner_label(d),
        GroupBy::Tier => d.tier.clone().unwrap_or_else(|| "(no tier)".into()),
        GroupBy::Month => month(d.submitted_ms),
    };
    let mut grouped: BTreeMap<String, (Vec<&Deal>, Vec<&Deal>)> = BTreeMap::new();
    for d in &in_window {
        let slot = grouped.entry(key_of(d)).or_default();
        match d.credit {
            Credit::Sourced => slot.0.push(d),
            Credit::Influenced => slot.1.push(d),
            Credit::None | Credit::Undecided => {}
        }
        // Each partner credited alongside the primary counts the deal as influenced, under
        // its own partner and tier (the registration that earned the credit gives both).
        // A lead or activity gives the partner alone: its name and tier as its deals show them.
        for p in d.partners.iter().filter(|p| !p.primary) {
            let earner = (p.evidence == credit::Evidence::Registration)
                .then(|| by_id.get(p.registration_id.as_str()))
                .flatten();
            let key = match (opts.by, earner) {
                (GroupBy::Month, _) => key_of(d),
                (_, Some(earner)) => key_of(earner),
                (GroupBy::Partner, None) => {
                    all.iter().find(|x| x.partner == p.partner).map_or_else(
                        || match input.partner_names.get(&p.partner) {
                            Some(n) => format!("{n} ({})", p.partner),
                            None => p.partner.clone(),
                        },
                        partner_label,
                    )
                }
                (GroupBy::Tier, None) => rules
                    .tier_of(&p.partner, &Map::new())
                    .unwrap_or_else(|| "(no tier)".into()),
            };
            let slot = grouped.entry(key).or_default();
            if !slot.1.iter().any(|x| x.id == d.id) {
                slot.1.push(d);
            }
        }
    }
    let mut groups: Vec<GroupRow> = grouped
        .into_iter()
        .filter(|(_, (s, i))| !s.is_empty() || !i.is_empty())
        .map(|(group, (s, i))| GroupRow {
            group,
            sourced: Figures::of(s),
            influenced: Figures::of(i),
        })
        .collect();
    if opts.by == GroupBy::Tier {
        // Best tier first, as the rules file orders them.
        groups.sort_by_key(|g| rules.tier_rank(Some(g.group.as_str())));
    }

    let mut decisions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in &in_window {
        let status = d.status.clone().unwrap_or_else(|| "undecided".into());
        let rule = d.rule.clone().unwrap_or_else(|| "-".into());
        *decisions.entry((status, rule)).or_default() += 1;
    }
    let decisions = decisions
        .into_iter()
        .map(|((status, rule), registrations)| DecisionCount {
            status,
            rule,
            registrations,
        })
        .collect();

    let mut expiries: Vec<Expiry> = all
        .iter()
        .filter(|d| d.credit == Credit::Sourced)
        .filter_map(|d| {
            let until = d.protected_until?;
            within(opts, until).then(|| Expiry {
                registration_id: d.id.clone(),
                partner: partner_label(d),
                protected_until_ms: until,
                ended: input.as_of_ms.is_some_and(|now| until <= now),
            })
        })
        .collect();
    expiries.sort_by(|a, b| {
        (a.protected_until_ms, &a.registration_id).cmp(&(b.protected_until_ms, &b.registration_id))
    });

    Report {
        from_ms: opts.from_ms,
        until_ms: opts.until_ms,
        as_of_ms: input.as_of_ms,
        by: opts.by,
        totals,
        co_influenced,
        groups,
        decisions,
        expiries,
        mdf: (!input.mdf.is_empty()).then(|| mdf_rows(rules, input, opts, &in_window)),
    }
}

/// MDF per tier: requested, approved, spent (claimed amounts of claimed or paid requests), and
/// the tier's partner-sourced won revenue in the window.
fn mdf_rows(rules: &Rules, input: &Input<'_>, opts: &Options, deals: &[&Deal]) -> Vec<MdfRow> {
    let mut rows: BTreeMap<String, MdfRow> = BTreeMap::new();
    let tier_key = |t: Option<String>| t.unwrap_or_else(|| "(no tier)".into());
    for m in input.mdf {
        let f = &m.fields;
        let dated = f
            .get("created_at")
            .and_then(Value::as_i64)
            .unwrap_or(m.updated_ms);
        if !within(opts, dated) {
            continue;
        }
        let status = text(f, "status").unwrap_or_default();
        if matches!(status, "draft" | "rejected") {
            continue;
        }
        let partner = text(f, &rules.fields.partner).unwrap_or_default();
        let row = rows.entry(tier_key(rules.tier_of(partner, f))).or_default();
        row.requests += 1;
        row.requested_cents += cents(f, "requested_amount");
        if matches!(status, "approved" | "claimed" | "paid") {
            row.approved_cents += cents(f, "approved_amount");
        }
        if matches!(status, "claimed" | "paid") {
            row.spent_cents += cents(f, "claimed_amount");
        }
    }
    for d in deals
        .iter()
        .filter(|d| d.credit == Credit::Sourced && d.outcome == Outcome::Won)
    {
        rows.entry(tier_key(d.tier.clone()))
            .or_default()
            .sourced_won_cents += d.amount_cents;
    }
    let order = |t: &str| {
        rules
            .tiers
            .order
            .iter()
            .position(|o| o == t)
            .unwrap_or(usize::MAX)
    };
    let mut out: Vec<MdfRow> = rows
        .into_iter()
        .map(|(tier, mut r)| {
            r.revenue_per_mdf =
                (r.spent_cents > 0).then(|| r.sourced_won_cents as f64 / r.spent_cents as f64);
            r.tier = tier;
            r
        })
        .collect();
    out.sort_by_key(|r| (order(&r.tier), r.tier.clone()));
    out
}
