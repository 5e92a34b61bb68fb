//! The pure decision function: registrations, CRM facts, review outcomes and prior decisions in;
//! one decision per registration out, each with the deciding rule, a reason and a full trace.
//!
//! Order independence: events are grouped by registration id, de-duplicated and sorted by
//! (time, canonical content), so any permutation of the same events, with repeats, gives the same
//! decisions.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value};

use super::{
    CrmFacts, DAY_MS, Decision, Input, Normalize, OnExpiry, OpenDirectAction, PriorDecision,
    ReviewOutcome, Rules, Status, Step, TieBreaker, TraceStep, normalize,
};

/// One registration with its history folded in.
#[derive(Debug, Clone)]
struct Reg {
    id: String,
    partner: String,
    /// The partner's name in the PRM, when known.
    partner_name: Option<String>,
    tier: Option<String>,
    submitted_ms: i64,
    fields: Map<String, Value>,
    key: Option<String>,
    domain: Option<String>,
    /// Start of the final run of qualified versions, or why the current version does not qualify.
    qualified: Result<i64, Vec<String>>,
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The normalised duplicate key of a registration's fields, and its customer domain.
pub fn key_of(rules: &Rules, fields: &Map<String, Value>) -> (Option<String>, Option<String>) {
    key_with(rules, fields, None)
}

/// [`key_of`], reading each part from `instead` (a lead's or activity's customer fields) rather
/// than the part's registration fields, when given.
pub fn key_with(
    rules: &Rules,
    fields: &Map<String, Value>,
    instead: Option<&[String]>,
) -> (Option<String>, Option<String>) {
    let mut parts = Vec::new();
    let mut domain = None;
    for part in &rules.key {
        let names = instead.unwrap_or(&part.fields);
        let value = names.iter().find_map(|f| {
            let raw = text(fields, f)?;
            match part.normalize {
                Normalize::Domain => normalize::domain(&raw),
                Normalize::Email => normalize::email(&raw),
                Normalize::Company => normalize::company(&raw),
                Normalize::Lower => normalize::lower(&raw),
                Normalize::Exact => Some(raw),
            }
        });
        match value {
            Some(v) => {
                if part.normalize == Normalize::Domain && domain.is_none() {
                    domain = Some(v.clone());
                }
                parts.push(v);
            }
            None => return (None, domain),
        }
    }
    (Some(parts.join("|")), domain)
}

/// Why `fields` (of a registration submitted at `submitted_ms`) is not qualified; empty when it
/// is. The close date is measured from submission, so later edits do not age a registration out.
fn missing(
    rules: &Rules,
    fields: &Map<String, Value>,
    domain: Option<&str>,
    submitted_ms: i64,
) -> Vec<String> {
    let q = &rules.qualification;
    let mut out = Vec::new();
    for f in &q.required {
        if text(fields, f).is_none() {
            out.push(format!("{f} is missing"));
        }
    }
    if let Some(min) = q.min_amount {
        match fields.get(&rules.fields.amount).and_then(Value::as_i64) {
            Some(a) if a >= min => {}
            Some(a) => out.push(format!("amount {a} is below the minimum {min}")),
            None => out.push(format!("{} is missing", rules.fields.amount)),
        }
    }
    if let Some(nc) = &q.named_contact {
        if text(fields, &nc.first_name).is_none() || text(fields, &nc.last_name).is_none() {
            out.push("the customer contact has no full name".into());
        }
        let email_domain = text(fields, &nc.email).and_then(|e| normalize::domain(&e));
        if email_domain.is_none() || email_domain.as_deref() != domain {
            out.push(format!(
                "the contact email is not at the customer's domain ({})",
                domain.unwrap_or("unknown")
            ));
        }
    }
    if let Some(days) = q.close_within_days {
        // An unreadable date counts as missing; the reason says so.
        let close = text(fields, &rules.fields.close_date)
            .and_then(|d| d.parse::<jiff::civil::Date>().ok())
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_millisecond());
        match close {
            Some(c) if c >= submitted_ms - DAY_MS && c <= submitted_ms + days * DAY_MS => {}
            Some(_) => out.push(format!(
                "the close date is not within {days} days of submission"
            )),
            None => out.push(format!(
                "{} is missing or not a date",
                rules.fields.close_date
            )),
        }
    }
    out
}

/// The fields as text with keys in order (serde_json's map is a BTreeMap without the
/// `preserve_order` feature), so equal contents compare equal.
fn canonical(fields: &Map<String, Value>) -> String {
    Value::Object(fields.clone()).to_string()
}

fn fold(rules: &Rules, input: &Input) -> Vec<Reg> {
    let mut by_id: BTreeMap<&str, Vec<(i64, String, &super::RegistrationEvent)>> = BTreeMap::new();
    for e in &input.events {
        by_id
            .entry(&e.id)
            .or_default()
            .push((e.at_ms, canonical(&e.fields), e));
    }
    let mut regs = Vec::new();
    for (id, mut versions) in by_id {
        versions.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        versions.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let submitted_ms = versions.iter().map(|v| v.2.submitted_ms).min().unwrap_or(0);
        let Some(last) = versions.last() else {
            continue;
        };
        let fields = last.2.fields.clone();
        let (key, domain) = key_of(rules, &fields);
        // The final run of qualified versions starts at the first version after the last unqualified one.
        let mut qualified: Result<i64, Vec<String>> = Err(Vec::new());
        for (at, _, ev) in &versions {
            let (_, d) = key_of(rules, &ev.fields);
            let m = missing(rules, &ev.fields, d.as_deref(), submitted_ms);
            qualified = match (m.is_empty(), &qualified) {
                (true, Ok(since)) => Ok(*since),
                (true, Err(_)) => Ok(*at),
                (false, _) => Err(m),
            };
        }
        let partner = text(&fields, &rules.fields.partner).unwrap_or_default();
        let tier = rules.tier_of(&partner, &fields);
        regs.push(Reg {
            id: id.to_owned(),
            partner_name: input.partner_names.get(&partner).cloned(),
            partner,
            tier,
            submitted_ms,
            fields,
            key,
            domain,
            qualified,
        });
    }
    regs
}

fn ms_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// A decision under construction.
struct Draft<'a> {
    reg: &'a Reg,
    trace: Vec<TraceStep>,
}

impl Draft<'_> {
    fn note(&mut self, rule: &str, line: usize, outcome: impl Into<String>) {
        self.trace.push(TraceStep {
            rule: rule.to_owned(),
            line,
            outcome: outcome.into(),
        });
    }

    fn decide(
        mut self,
        status: Status,
        rule: &str,
        line: usize,
        reason: String,
        protected_until: Option<i64>,
        duplicate_of: Option<String>,
    ) -> Decision {
        self.note(rule, line, format!("decided: {status}"));
        Decision {
            registration_id: self.reg.id.clone(),
            key: self.reg.key.clone().unwrap_or_default(),
            partner: self.reg.partner.clone(),
            status,
            rule: rule.to_owned(),
            line,
            reason,
            protected_until,
            protected_under: None,
            duplicate_of,
            trace: self.trace,
        }
    }
}

/// A registration still in the contest for its group.
struct Contestant<'a> {
    draft: Draft<'a>,
    /// Pinned by an operator approval or by protection a rules change may not revoke.
    pin: Option<Pin>,
    since: i64,
}

#[derive(Debug, Clone)]
enum Pin {
    Manual { at_ms: i64, reason: String },
    Held { until: i64, under: String },
}

fn reserved_hit(rules: &Rules, reg: &Reg, crm: &CrmFacts) -> Option<(String, usize)> {
    let domain = reg.domain.as_deref()?;
    if let Some((d, line)) = rules.reserved.domains.iter().find(|(d, _)| d == domain) {
        return Some((format!("{d} is reserved for direct sales"), *line));
    }
    let accounts = crm
        .accounts
        .iter()
        .filter(|a| normalize::domain(&a.domain).as_deref() == Some(domain));
    for a in accounts {
        if let Some((_, line)) = rules
            .reserved
            .account_ids
            .iter()
            .find(|(id, _)| *id == a.id)
        {
            return Some((
                format!(
                    "CRM account {} ({domain}) is reserved for direct sales",
                    a.id
                ),
                *line,
            ));
        }
        // The facts hold only the fields the CRM was asked for (its own names), so every name
        // the criterion gives can be tried.
        for c in &rules.reserved.crm {
            let hit = c.names().find(|field| {
                a.fields
                    .get(*field)
                    .and_then(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .as_deref()
                    == Some(c.equals.as_str())
            });
            if let Some(field) = hit {
                return Some((
                    format!(
                        "CRM account {} ({domain}) has {field} = {:?}, so it is reserved for direct sales",
                        a.id, c.equals
                    ),
                    c.line,
                ));
            }
        }
    }
    None
}

fn latest_review<'a>(reviews: &'a [ReviewOutcome], id: &str) -> Option<&'a ReviewOutcome> {
    reviews
        .iter()
        .filter(|r| r.registration_id == id)
        .max_by(|a, b| (a.at_ms, a.approve, &a.reason).cmp(&(b.at_ms, b.approve, &b.reason)))
}

fn protection_until(rules: &Rules, reg: &Reg, start: i64) -> i64 {
    let p = &rules.protection;
    let asked = rules
        .fields
        .extensions
        .as_ref()
        .and_then(|f| reg.fields.get(f))
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .clamp(0, p.extensions);
    start + p.days * DAY_MS + asked * p.extension_days * DAY_MS
}

/// Decides every registration in `input`. Pure and independent of the order of the inputs.
pub fn evaluate(rules: &Rules, input: &Input) -> Vec<Decision> {
    let regs = fold(rules, input);
    let as_of = input.as_of_ms;
    let mut out = Vec::new();
    let mut groups: BTreeMap<String, Vec<Contestant<'_>>> = BTreeMap::new();
    for reg in &regs {
        let mut d = Draft {
            reg,
            trace: Vec::new(),
        };
        let Some(key) = reg.key.clone() else {
            let line = rules.key.first().map_or(0, |k| k.line);
            let fields: Vec<&str> = rules
                .key
                .iter()
                .flat_map(|k| k.fields.iter().map(String::as_str))
                .collect();
            out.push(d.decide(
                Status::Pending,
                "duplicate_key",
                line,
                format!(
                    "pending: no duplicate key yet; fill in one of {} (duplicate_key line {line})",
                    fields.join(", ")
                ),
                None,
                None,
            ));
            continue;
        };
        d.note(
            "duplicate_key",
            rules.key.first().map_or(0, |k| k.line),
            format!("key {key}"),
        );
        let mut pin = None;
        let prior: Option<&PriorDecision> = input
            .prior
            .iter()
            .filter(|p| p.registration_id == reg.id)
            .max_by_key(|p| (p.protected_until, p.rules_version.clone()));
        if let Some(p) = prior
            && p.status == Status::Approved
            && p.rules_version != rules.version
            && !rules.protection.rules_change_may_revoke
            && let Some(until) = p.protected_until.filter(|u| *u > as_of)
        {
            d.note("protection", rules.protection.line, format!("approved under rules {} and protected until {}; a rules change may not revoke it", p.rules_version, ms_text(until)));
            pin = Some(Pin::Held {
                until,
                under: p.rules_version.clone(),
            });
        }
        let mut decided = None;
        if pin.is_none() {
            for (step, line) in rules.order.iter().filter(|(s, _)| s.is_per_registration()) {
                let line = *line;
                match step {
                    Step::ManualReview => match latest_review(&input.reviews, &reg.id) {
                        Some(r) if r.approve => {
                            d.note(
                                "manual_review",
                                line,
                                format!("approved by an operator: {}", r.reason),
                            );
                            pin = Some(Pin::Manual {
                                at_ms: r.at_ms,
                                reason: r.reason.clone(),
                            });
                            break;
                        }
                        Some(r) => {
                            decided = Some((
                                Status::Rejected,
                                "manual_review",
                                line,
                                format!(
                                    "rejected by review: {} (decision_order line {line})",
                                    r.reason
                                ),
                            ));
                            break;
                        }
                        None => d.note("manual_review", line, "no review outcome"),
                    },
                    Step::Reserved => match reserved_hit(rules, reg, &input.crm) {
                        Some((why, l)) => {
                            decided = Some((
                                Status::Rejected,
                                "reserved_accounts",
                                l,
                                format!("rejected: {why} (reserved_accounts line {l})"),
                            ));
                            break;
                        }
                        None => d.note("reserved_accounts", rules.reserved.line, "not reserved"),
                    },
                    Step::OpenDirect => {
                        let l = rules.open_direct.line;
                        let opp = input
                            .crm
                            .opportunities
                            .iter()
                            .filter(|o| {
                                o.open
                                    && !o.partner_sourced
                                    && normalize::domain(&o.domain) == reg.domain
                                    && reg.domain.is_some()
                            })
                            .map(|o| o.id.as_str())
                            .min();
                        match (opp, rules.open_direct.action) {
                            (Some(o), OpenDirectAction::Reject) => {
                                decided = Some((
                                    Status::Rejected,
                                    "open_direct_opportunity",
                                    l,
                                    format!(
                                        "rejected: the direct team already has open opportunity {o} on {} (open_direct_opportunity line {l})",
                                        reg.domain.as_deref().unwrap_or("")
                                    ),
                                ));
                                break;
                            }
                            (Some(o), OpenDirectAction::Influenced) => {
                                decided = Some((
                                    Status::Influenced,
                                    "open_direct_opportunity",
                                    l,
                                    format!(
                                        "influenced: the direct team already has open opportunity {o} on {}; the partner is credited as influencing it (open_direct_opportunity line {l})",
                                        reg.domain.as_deref().unwrap_or("")
                                    ),
                                ));
                                break;
                            }
                            (None, _) => {
                                d.note("open_direct_opportunity", l, "no open direct opportunity")
                            }
                        }
                    }
                    Step::Qualification => {
                        let l = rules.qualification.line;
                        match &reg.qualified {
                            Ok(since) => d.note(
                                "qualification",
                                l,
                                format!("qualified since {}", ms_text(*since)),
                            ),
                            Err(why) => {
                                decided = Some((
                                    Status::Pending,
                                    "qualification",
                                    l,
                                    format!(
                                        "pending: not yet qualified: {} (qualification line {l})",
                                        why.join("; ")
                                    ),
                                ));
                                break;
                            }
                        }
                    }
                    Step::Review | Step::FirstQualified => {}
                }
            }
        }
        if let Some((status, rule, line, reason)) = decided {
            out.push(d.decide(status, rule, line, reason, None, None));
            continue;
        }
        let since = match (&pin, &reg.qualified) {
            (Some(Pin::Manual { at_ms, .. }), _) => *at_ms,
            (_, Ok(s)) => *s,
            (_, Err(_)) => reg.submitted_ms,
        };
        groups.entry(key).or_default().push(Contestant {
            draft: d,
            pin,
            since,
        });
    }
    for (_, group) in groups {
        out.extend(contest(rules, group, as_of));
    }
    out.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
    out
}

/// Where a contestant stands in line: pinned first (protection kept from earlier rules, then an
/// operator's approval), then qualification time, then the tie-breakers in the file's order.
fn order_key(rules: &Rules, c: &Contestant<'_>) -> (u8, i64, Vec<(i64, String)>) {
    let reg = c.draft.reg;
    let ties = rules
        .tie_breakers
        .iter()
        .map(|t| match t {
            TieBreaker::Tier => (rules.tier_rank(reg.tier.as_deref()) as i64, String::new()),
            TieBreaker::Submitted => (reg.submitted_ms, String::new()),
            TieBreaker::Id => (0, reg.id.clone()),
        })
        .collect();
    (pin_rank(c), c.since, ties)
}

fn pin_rank(c: &Contestant<'_>) -> u8 {
    match &c.pin {
        Some(Pin::Held { .. }) => 0,
        Some(Pin::Manual { .. }) => 1,
        None => 2,
    }
}

/// A registration as named in a reason: the partner's name from the PRM when known.
fn who(reg: &Reg) -> String {
    match &reg.partner_name {
        Some(name) if *name != reg.partner => format!("{} ({name})", reg.id),
        _ if reg.partner.is_empty() => reg.id.clone(),
        _ => format!("{} ({})", reg.id, reg.partner),
    }
}

fn tier_text(reg: &Reg) -> &str {
    reg.tier.as_deref().unwrap_or("no tier")
}

/// The line of the `first_qualified` step.
fn first_line(rules: &Rules) -> usize {
    rules
        .order
        .iter()
        .find(|(s, _)| *s == Step::FirstQualified)
        .map_or(0, |(_, l)| *l)
}

/// The group contest, in named steps: line the contestants up, let the review rule look at the
/// head of the line, then award protection (handling expiry) and mark the rest.
fn contest(rules: &Rules, group: Vec<Contestant<'_>>, as_of: i64) -> Vec<Decision> {
    let queue = line_up(rules, group);
    match review_head(rules, queue) {
        Ok(decided) => decided,
        Err(queue) => award(rules, queue, as_of),
    }
}

/// Sorts the group into its line and notes each place (with what it rests on) in the trace.
fn line_up<'a>(rules: &Rules, mut group: Vec<Contestant<'a>>) -> VecDeque<Contestant<'a>> {
    group.sort_by_cached_key(|c| order_key(rules, c));
    let fl = first_line(rules);
    let n = group.len();
    for (i, c) in group.iter_mut().enumerate() {
        let reg = c.draft.reg;
        let basis = match &c.pin {
            Some(Pin::Held { .. }) => "protection kept from earlier rules".to_owned(),
            Some(Pin::Manual { .. }) => format!("operator approval at {}", ms_text(c.since)),
            None => format!(
                "qualified {}, tier {}, submitted {}",
                ms_text(c.since),
                tier_text(reg),
                ms_text(reg.submitted_ms)
            ),
        };
        c.draft.note(
            "first_qualified",
            fl,
            format!("place {} of {n} in line: {basis}", i + 1),
        );
    }
    group.into()
}

/// The review rule: the head of the line goes to a person when another registration qualified
/// close to it or its tier is reviewed. `Ok` holds the decisions when it did; `Err` gives the
/// line back untouched otherwise.
fn review_head<'a>(
    rules: &Rules,
    mut queue: VecDeque<Contestant<'a>>,
) -> Result<Vec<Decision>, VecDeque<Contestant<'a>>> {
    let uses_review = rules.order.iter().any(|(s, _)| *s == Step::Review);
    let Some(head) = queue.front().filter(|h| uses_review && h.pin.is_none()) else {
        return Err(queue);
    };
    let rv = &rules.review;
    let l = rv.line;
    let tied: Vec<String> = match rv.qualified_within_ms {
        Some(w) => queue
            .iter()
            .skip(1)
            .filter(|c| c.pin.is_none() && c.since - head.since <= w)
            .map(|c| c.draft.reg.id.clone())
            .collect(),
        None => Vec::new(),
    };
    let tier_review = head
        .draft
        .reg
        .tier
        .as_ref()
        .filter(|t| rv.tiers.contains(t))
        .cloned();
    if tied.is_empty() && tier_review.is_none() {
        queue
            .iter_mut()
            .for_each(|c| c.draft.note("review", l, "no tie and no review tier"));
        return Err(queue);
    }
    let head_id = head.draft.reg.id.clone();
    let why = match &tier_review {
        Some(t) => format!("registrations from {t} partners are reviewed by a person"),
        None => format!(
            "{head_id} and {} qualified within {} seconds of each other",
            tied.join(", "),
            rv.qualified_within_ms.unwrap_or(0) / 1000
        ),
    };
    Ok(queue
        .into_iter()
        .map(|c| {
            let id = &c.draft.reg.id;
            let reason = if *id == head_id || tied.contains(id) {
                format!("review: {why} (review line {l})")
            } else {
                format!(
                    "review: waiting behind {head_id}, which is in review: {why} (review line {l})"
                )
            };
            c.draft
                .decide(Status::Review, "review", l, reason, None, None)
        })
        .collect())
}

/// A holder whose protection ended, for the reasons of those after it.
struct Ended {
    who: String,
    id: String,
    until: i64,
}

/// Awards the account to the head of the line, protected from when it qualified; when that
/// protection has ended by `as_of`, `on_expiry` says who competes next.
fn award(rules: &Rules, mut queue: VecDeque<Contestant<'_>>, as_of: i64) -> Vec<Decision> {
    let p = &rules.protection;
    let pl = p.line;
    let mut out = Vec::new();
    let mut ended: Option<Ended> = None;
    while let Some(c) = queue.pop_front() {
        let start = ended.as_ref().map_or(c.since, |e| e.until.max(c.since));
        let until = match &c.pin {
            Some(Pin::Held { until, .. }) => *until,
            _ => protection_until(rules, c.draft.reg, start),
        };
        if until > as_of {
            let rest: Vec<Decision> = queue
                .into_iter()
                .map(|rest| duplicate(rules, rest, &c, until))
                .collect();
            out.push(approve(rules, c, until, ended.as_ref()));
            out.extend(rest);
            return out;
        }
        let holder = Ended {
            who: who(c.draft.reg),
            id: c.draft.reg.id.clone(),
            until,
        };
        out.push(expire(rules, c, until));
        match p.on_expiry {
            OnExpiry::NextInLine => {}
            OnExpiry::Review => {
                out.extend(queue.into_iter().map(|rest| {
                    rest.draft.decide(
                        Status::Review,
                        "protection",
                        pl,
                        format!(
                            "review: {}'s protection ended {} and on_expiry = \"review\" sends the rest of the group to a person (protection line {pl})",
                            holder.who,
                            ms_text(until)
                        ),
                        None,
                        None,
                    )
                }));
                return out;
            }
            OnExpiry::Reopen => {
                // Only registrations submitted after the expiry (or revived by a person) compete;
                // the earlier losers stay where they were told they stand.
                let (open, stale): (VecDeque<_>, VecDeque<_>) = queue
                    .into_iter()
                    .partition(|r| r.pin.is_some() || r.draft.reg.submitted_ms >= until);
                out.extend(stale.into_iter().map(|r| stale_loser(rules, r, &holder)));
                queue = open;
            }
        }
        ended = Some(holder);
    }
    out
}

/// The head of the line, approved with protection until `until`.
fn approve(rules: &Rules, c: Contestant<'_>, until: i64, after: Option<&Ended>) -> Decision {
    let pl = rules.protection.line;
    let fl = first_line(rules);
    let (rule, line, reason) = match &c.pin {
        Some(Pin::Held { .. }) => (
            "protection",
            pl,
            format!(
                "approved: kept protected until {}; rules_change_may_revoke = false (protection line {pl})",
                ms_text(until)
            ),
        ),
        Some(Pin::Manual { reason, .. }) => (
            "manual_review",
            fl,
            format!(
                "approved by review: {reason}; protected until {}",
                ms_text(until)
            ),
        ),
        None => {
            let after = after.map_or(String::new(), |e| {
                format!(
                    " after {}'s protection ended {} (on_expiry = \"{}\")",
                    e.who,
                    ms_text(e.until),
                    rules.protection.on_expiry.as_str()
                )
            });
            (
                "first_qualified",
                fl,
                format!(
                    "approved: first qualified registration for {} (qualified {}){after}; protected until {} (first_qualified line {fl}, protection line {pl})",
                    c.draft.reg.key.as_deref().unwrap_or(""),
                    ms_text(c.since),
                    ms_text(until)
                ),
            )
        }
    };
    let under = match &c.pin {
        Some(Pin::Held { under, .. }) => under.clone(),
        _ => rules.version.clone(),
    };
    let mut d = c
        .draft
        .decide(Status::Approved, rule, line, reason, Some(until), None);
    d.protected_under = Some(under);
    d
}

/// A holder whose protection ended by `as_of`.
fn expire(rules: &Rules, mut c: Contestant<'_>, until: i64) -> Decision {
    let pl = rules.protection.line;
    c.draft.note(
        "protection",
        pl,
        format!("protection ended {}", ms_text(until)),
    );
    let then = match rules.protection.on_expiry {
        OnExpiry::Reopen => "the account reopens to registrations submitted after then",
        OnExpiry::NextInLine => "the account passes to the next registration in line",
        OnExpiry::Review => "the rest of the group goes to a person",
    };
    c.draft.decide(
        Status::Expired,
        "protection",
        pl,
        format!(
            "expired: protection ended {}; {then} (on_expiry = \"{}\", protection line {pl})",
            ms_text(until),
            rules.protection.on_expiry.as_str()
        ),
        Some(until),
        None,
    )
}

/// A registration that lost to a holder whose protection has since ended, under `reopen`: it
/// stays a duplicate of that holder unless a person revives it.
fn stale_loser(rules: &Rules, r: Contestant<'_>, holder: &Ended) -> Decision {
    let pl = rules.protection.line;
    let reason = format!(
        "duplicate: lost to {} while it was protected; its protection ended {} and the account reopened only to registrations submitted after then (this one was submitted {}; on_expiry = \"reopen\", protection line {pl}); a person may revive it with `prmsync review approve {}`",
        holder.who,
        ms_text(holder.until),
        ms_text(r.draft.reg.submitted_ms),
        r.draft.reg.id
    );
    r.draft.decide(
        Status::Duplicate,
        "protection",
        pl,
        reason,
        None,
        Some(holder.id.clone()),
    )
}

/// A registration behind the protected holder `winner`: a duplicate, with the comparison that
/// put it behind.
fn duplicate(
    rules: &Rules,
    mut r: Contestant<'_>,
    winner: &Contestant<'_>,
    until: i64,
) -> Decision {
    let fl = first_line(rules);
    let (why, line) = decisive(rules, winner, &r);
    r.draft.note(
        "first_qualified",
        line,
        format!("behind {}: {why}", winner.draft.reg.id),
    );
    let reason = format!(
        "duplicate: {} holds the account, protected until {}; {why} (first_qualified line {fl})",
        who(winner.draft.reg),
        ms_text(until)
    );
    r.draft.decide(
        Status::Duplicate,
        "first_qualified",
        fl,
        reason,
        None,
        Some(winner.draft.reg.id.clone()),
    )
}

/// The first comparison in the line's order that puts `w` ahead of `l`, with both sides'
/// values, and the line of the rules file it comes from.
fn decisive(rules: &Rules, w: &Contestant<'_>, l: &Contestant<'_>) -> (String, usize) {
    let (wr, lr) = (w.draft.reg, l.draft.reg);
    if pin_rank(w) != pin_rank(l) {
        let why = match &w.pin {
            Some(Pin::Held { under, .. }) => format!(
                "{} was approved under rules {under} and a rules change may not revoke it",
                wr.id
            ),
            Some(Pin::Manual { at_ms, .. }) => {
                format!(
                    "{} was approved by an operator at {}",
                    wr.id,
                    ms_text(*at_ms)
                )
            }
            None => format!("{} is ahead in line", wr.id),
        };
        return (why, rules.protection.line);
    }
    if w.since != l.since {
        return (
            format!(
                "{} qualified first, at {} ({} tier); this one qualified at {}",
                wr.id,
                ms_text(w.since),
                tier_text(wr),
                ms_text(l.since)
            ),
            first_line(rules),
        );
    }
    let tl = rules.tie_line;
    for t in &rules.tie_breakers {
        let (differs, values) = match t {
            TieBreaker::Tier => (
                rules.tier_rank(wr.tier.as_deref()) != rules.tier_rank(lr.tier.as_deref()),
                format!(
                    "{} is {} tier, this one {}",
                    wr.id,
                    tier_text(wr),
                    tier_text(lr)
                ),
            ),
            TieBreaker::Submitted => (
                wr.submitted_ms != lr.submitted_ms,
                format!(
                    "{} was submitted {}, this one {}",
                    wr.id,
                    ms_text(wr.submitted_ms),
                    ms_text(lr.submitted_ms)
                ),
            ),
            TieBreaker::Id => (
                wr.id != lr.id,
                format!("id {:?} sorts before {:?}", wr.id, lr.id),
            ),
        };
        if differs {
            return (
                format!(
                    "both qualified at {}; the tie-break on {} decided: {values} (tie_breakers line {tl})",
                    ms_text(w.since),
                    t.as_str()
                ),
                tl,
            );
        }
    }
    (format!("{} is ahead in line", wr.id), first_line(rules))
}
