//! Multi-partner credit on a deal (pure, no I/O): from the decided registrations of one customer
//! (a duplicate-key group), each partner-sourced deal's partners with their roles (sourced,
//! influenced, referral, reseller) and exactly one primary, every credit with its reason.
//!
//! A sourced deal is a registration that won protection (approved, or approved and since
//! expired); the CRM deal the deal flow made from it is "the opportunity", created when the
//! registration was submitted. Its partner is the primary, in the role its registration
//! declares (`[credit] role_field`: sourced, referral or reseller; sourced when blank). Another
//! partner earns credit with evidence from `[credit] influence_from` dated within
//! `influence_within_days` of the opportunity's creation (either side): the partner's own
//! registration of the same customer that was not rejected (its role is the one the registration
//! declares when that is referral or reseller, else influenced), or the partner's lead or
//! activity on the same customer (influenced), as stored when it was read from the PRM.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{DAY_MS, Decision, RegistrationEvent, Status};

/// A partner's role on a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Sourced,
    Influenced,
    Referral,
    Reseller,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Sourced,
        Role::Influenced,
        Role::Referral,
        Role::Reseller,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sourced => "sourced",
            Role::Influenced => "influenced",
            Role::Referral => "referral",
            Role::Reseller => "reseller",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What earns a partner influence on a deal another partner sourced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The partner's own registration of the same customer (not rejected).
    Registration,
    /// A lead the partner brought in on the same customer (PRM `leads`).
    Lead,
    /// Something the partner did on the same customer (PRM `actions`).
    Activity,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Registration => "registration",
            Evidence::Lead => "lead",
            Evidence::Activity => "activity",
        }
    }

    pub fn parse(s: &str) -> Option<Evidence> {
        [Evidence::Registration, Evidence::Lead, Evidence::Activity]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// Where a lead or activity is read from: the PRM object and the fields of its records that
/// name the partner, the customer (read in place of each `[[duplicate_key]]` part's fields, with
/// that part's normalisation) and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceSource {
    pub kind: Evidence,
    /// The PRM object (`leads`, `actions`).
    pub object: String,
    pub partner: String,
    /// Dotted paths allowed (`customer.email`); the first non-empty one is used.
    pub customer: Vec<String>,
    /// Epoch milliseconds or an RFC 3339 time.
    pub at: String,
}

/// A partner's lead or activity on a customer, as stored when prmsync read it from the PRM.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EvidenceItem {
    pub kind: Evidence,
    /// The PRM record's id.
    pub id: String,
    pub partner: String,
    pub at_ms: i64,
}

/// A field of a PRM record by dotted path, as text (numbers as written).
fn path<'a>(fields: &'a Map<String, Value>, p: &str) -> Option<&'a Value> {
    let mut parts = p.split('.');
    let mut v = fields.get(parts.next()?)?;
    for part in parts {
        v = v.get(part)?;
    }
    Some(v)
}

fn path_text(fields: &Map<String, Value>, p: &str) -> Option<String> {
    match path(fields, p)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What a PRM lead or activity record is as evidence: its customer's duplicate key (the rules'
/// `[[duplicate_key]]` parts, each read from `source.customer` instead of the registration fields),
/// its partner and time; `None` when one of them is missing, or an action is `archived`.
pub fn evidence_of(
    rules: &super::Rules,
    source: &EvidenceSource,
    id: &str,
    fields: &Map<String, Value>,
) -> Option<(String, EvidenceItem)> {
    if matches!(fields.get("archived"), Some(Value::Bool(true)))
        || fields.get("archived").and_then(Value::as_str) == Some("true")
    {
        return None;
    }
    let partner = path_text(fields, &source.partner)?;
    let at_ms = match path(fields, &source.at)? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<jiff::Timestamp>().ok()?.as_millisecond(),
        _ => return None,
    };
    let customer: Map<String, Value> = source
        .customer
        .iter()
        .filter_map(|p| Some((p.clone(), Value::String(path_text(fields, p)?))))
        .collect();
    let key = super::evaluate::key_with(rules, &customer, Some(&source.customer)).0?;
    Some((
        key,
        EvidenceItem {
            kind: source.kind,
            id: id.to_owned(),
            partner,
            at_ms,
        },
    ))
}

/// `[credit]` of a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRule {
    pub line: usize,
    /// The registration field naming the registering partner's role (`None`: always sourced).
    pub role_field: Option<String>,
    pub influence_from: Vec<Evidence>,
    pub influence_within_days: i64,
    /// Where leads and activities are read from, for those `influence_from` lists.
    pub sources: Vec<EvidenceSource>,
}

impl CreditRule {
    /// The source of PRM `object`'s records as evidence, when one is configured.
    pub fn source_for(&self, object: &str) -> Option<&EvidenceSource> {
        self.sources.iter().find(|s| s.object == object)
    }
}

/// One partner's credit on a deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerCredit {
    pub partner: String,
    pub role: Role,
    pub primary: bool,
    /// The registration that earned it (for a lead or activity: the lead's or action's id).
    pub registration_id: String,
    /// What earned it (the primary's: its registration).
    pub evidence: Evidence,
    /// In plain words, citing the rules file line.
    pub reason: String,
}

/// The partners credited on one sourced deal (the deal is the sourcing registration's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DealCredit {
    /// The sourcing registration, whose CRM deal carries the credits.
    pub registration_id: String,
    /// When the opportunity was created: the sourcing registration's submission.
    pub created_ms: i64,
    /// The primary first, then by partner key.
    pub partners: Vec<PartnerCredit>,
}

/// One registration as credit sees it: its latest version and its decision's status.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub registration_id: &'a str,
    pub partner: &'a str,
    pub status: Option<Status>,
    pub submitted_ms: i64,
    pub fields: &'a Map<String, Value>,
}

/// The claims of a group: each registration's latest event with its decision's status.
pub fn claims<'a>(
    events: &'a [RegistrationEvent],
    decisions: &'a [Decision],
    partner_field: &str,
) -> Vec<Claim<'a>> {
    let mut latest: BTreeMap<&str, &RegistrationEvent> = BTreeMap::new();
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events {
        let slot = latest.entry(e.id.as_str()).or_insert(e);
        if e.at_ms >= slot.at_ms {
            *slot = e;
        }
        let s = first.entry(e.id.as_str()).or_insert(e.submitted_ms);
        *s = (*s).min(e.submitted_ms);
    }
    let status: BTreeMap<&str, Status> = decisions
        .iter()
        .map(|d| (d.registration_id.as_str(), d.status))
        .collect();
    latest
        .into_iter()
        .map(|(id, e)| Claim {
            registration_id: id,
            partner: e
                .fields
                .get(partner_field)
                .and_then(Value::as_str)
                .unwrap_or_default(),
            status: status.get(id).copied(),
            submitted_ms: first.get(id).copied().unwrap_or(e.submitted_ms),
            fields: &e.fields,
        })
        .collect()
}

fn declared(rule: &CreditRule, fields: &Map<String, Value>) -> Option<Role> {
    let f = rule.role_field.as_ref()?;
    let v = fields.get(f)?.as_str()?.trim().to_lowercase();
    Role::parse(&v)
}

fn day_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The credits of every sourced deal among `claims` (one customer's registrations), with the
/// leads and activities of `evidence` (the same customer's) counting as influence.
pub fn credits(
    rule: &CreditRule,
    claims: &[Claim<'_>],
    evidence: &[EvidenceItem],
) -> Vec<DealCredit> {
    let sourced = |c: &&Claim<'_>| matches!(c.status, Some(Status::Approved | Status::Expired));
    let mut out = Vec::new();
    for deal in claims.iter().filter(sourced) {
        if deal.partner.is_empty() {
            continue;
        }
        let role = match declared(rule, deal.fields) {
            Some(r @ (Role::Referral | Role::Reseller)) => r,
            _ => Role::Sourced,
        };
        let mut partners = vec![PartnerCredit {
            partner: deal.partner.to_owned(),
            role,
            primary: true,
            registration_id: deal.registration_id.to_owned(),
            evidence: Evidence::Registration,
            reason: format!(
                "{} won the registration {} (credit line {})",
                deal.partner, deal.registration_id, rule.line
            ),
        }];
        let window = rule.influence_within_days * DAY_MS;
        // Each other partner once: its earliest qualifying registration.
        let mut others: BTreeMap<&str, &Claim<'_>> = BTreeMap::new();
        if rule.influence_from.contains(&Evidence::Registration) {
            for c in claims {
                let eligible = c.partner != deal.partner
                    && !c.partner.is_empty()
                    && !matches!(c.status, Some(Status::Rejected) | None)
                    && (c.submitted_ms - deal.submitted_ms).abs() <= window;
                if !eligible {
                    continue;
                }
                let slot = others.entry(c.partner).or_insert(c);
                if (c.submitted_ms, c.registration_id) < (slot.submitted_ms, slot.registration_id) {
                    *slot = c;
                }
            }
        }
        for (partner, c) in others {
            let role = match declared(rule, c.fields) {
                Some(r @ (Role::Referral | Role::Reseller)) => r,
                _ => Role::Influenced,
            };
            partners.push(PartnerCredit {
                partner: partner.to_owned(),
                role,
                primary: false,
                registration_id: c.registration_id.to_owned(),
                evidence: Evidence::Registration,
                reason: format!(
                    "{partner} registered the same customer on {} ({}), within {} days of the opportunity's creation on {} (credit line {})",
                    day_text(c.submitted_ms),
                    c.registration_id,
                    rule.influence_within_days,
                    day_text(deal.submitted_ms),
                    rule.line
                ),
            });
        }
        // A partner with no such registration: its earliest lead or activity in the window.
        let mut led: BTreeMap<&str, &EvidenceItem> = BTreeMap::new();
        for e in evidence {
            let eligible = rule.influence_from.contains(&e.kind)
                && e.partner != deal.partner
                && !e.partner.is_empty()
                && !partners.iter().any(|p| p.partner == e.partner)
                && (e.at_ms - deal.submitted_ms).abs() <= window;
            if !eligible {
                continue;
            }
            let slot = led.entry(e.partner.as_str()).or_insert(e);
            if (e.at_ms, e.kind, &e.id) < (slot.at_ms, slot.kind, &slot.id) {
                *slot = e;
            }
        }
        for (partner, e) in led {
            partners.push(PartnerCredit {
                partner: partner.to_owned(),
                role: Role::Influenced,
                primary: false,
                registration_id: e.id.clone(),
                evidence: e.kind,
                reason: format!(
                    "{partner}'s {} {} on {} was on the same customer, within {} days of the opportunity's creation on {} (credit line {})",
                    e.kind.as_str(),
                    e.id,
                    day_text(e.at_ms),
                    rule.influence_within_days,
                    day_text(deal.submitted_ms),
                    rule.line
                ),
            });
        }
        partners[1..].sort_by(|a, b| a.partner.cmp(&b.partner));
        out.push(DealCredit {
            registration_id: deal.registration_id.to_owned(),
            created_ms: deal.submitted_ms,
            partners,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::{Claim, CreditRule, DealCredit, Evidence, EvidenceItem, Role, credits};
    use crate::rules::{DAY_MS, Status};

    fn rule(days: i64) -> CreditRule {
        CreditRule {
            line: 7,
            role_field: Some("partner_role".into()),
            influence_from: vec![Evidence::Registration, Evidence::Lead, Evidence::Activity],
            influence_within_days: days,
            sources: Vec::new(),
        }
    }

    fn fields(role: Option<&str>) -> Map<String, Value> {
        match role {
            Some(r) => json!({ "partner_role": r }),
            None => json!({}),
        }
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    /// (id, partner, status, submitted day, declared role)
    type Row = (
        &'static str,
        &'static str,
        Option<Status>,
        i64,
        Option<&'static str>,
    );

    fn run(rule: &CreditRule, rows: &[Row]) -> Vec<DealCredit> {
        run_with(rule, rows, &[])
    }

    fn run_with(rule: &CreditRule, rows: &[Row], evidence: &[EvidenceItem]) -> Vec<DealCredit> {
        let f: Vec<Map<String, Value>> = rows.iter().map(|r| fields(r.4)).collect();
        let claims: Vec<Claim<'_>> = rows
            .iter()
            .zip(&f)
            .map(|(r, fields)| Claim {
                registration_id: r.0,
                partner: r.1,
                status: r.2,
                submitted_ms: r.3 * DAY_MS,
                fields,
            })
            .collect();
        credits(rule, &claims, evidence)
    }

    /// (kind, id, partner, day)
    fn item(kind: Evidence, id: &str, partner: &str, day: i64) -> EvidenceItem {
        EvidenceItem {
            kind,
            id: id.into(),
            partner: partner.into(),
            at_ms: day * DAY_MS,
        }
    }

    fn roles(d: &DealCredit) -> Vec<(&str, Role, bool)> {
        d.partners
            .iter()
            .map(|p| (p.partner.as_str(), p.role, p.primary))
            .collect()
    }

    #[test]
    fn each_case_credits_the_partners_it_should() {
        use Status::{Approved, Duplicate, Expired, Pending, Rejected};
        // (name, rows, expected roles of each sourced deal)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<Row>, Vec<Vec<(&str, Role, bool)>>)> = vec![
            (
                "a lone winner is the sourcing primary",
                vec![("d1", "p1", Some(Approved), 10, None)],
                vec![vec![("p1", Role::Sourced, true)]],
            ),
            (
                "a duplicate within the window influences",
                vec![
                    ("d1", "p1", Some(Approved), 10, None),
                    ("d2", "p2", Some(Duplicate), 40, None),
                ],
                vec![vec![
                    ("p1", Role::Sourced, true),
                    ("p2", Role::Influenced, false),
                ]],
            ),
            (
                "evidence before the opportunity counts too",
                vec![
                    ("d1", "p1", Some(Approved), 100, None),
                    ("d2", "p2", Some(Pending), 75, None),
                ],
                vec![vec![
                    ("p1", Role::Sourced, true),
                    ("p2", Role::Influenced, false),
                ]],
            ),
            (
                "outside the window earns nothing",
                vec![
                    ("d1", "p1", Some(Approved), 10, None),
                    ("d2", "p2", Some(Duplicate), 41, None),
                ],
                vec![vec![("p1", Role::Sourced, true)]],
            ),
            (
                "a rejected or undecided registration earns nothing",
                vec![
                    ("d1", "p1", Some(Approved), 10, None),
                    ("d2", "p2", Some(Rejected), 11, None),
                    ("d3", "p3", None, 12, None),
                ],
                vec![vec![("p1", Role::Sourced, true)]],
            ),
            (
                "the winner's own second registration adds nothing",
                vec![
                    ("d1", "p1", Some(Approved), 10, None),
                    ("d2", "p1", Some(Duplicate), 12, None),
                ],
                vec![vec![("p1", Role::Sourced, true)]],
            ),
            (
                "declared roles: a referral winner, a reseller alongside",
                vec![
                    ("d1", "p1", Some(Approved), 10, Some("Referral")),
                    ("d2", "p2", Some(Duplicate), 11, Some("reseller")),
                    ("d3", "p3", Some(Duplicate), 12, Some("sourced")),
                ],
                vec![vec![
                    ("p1", Role::Referral, true),
                    ("p2", Role::Reseller, false),
                    ("p3", Role::Influenced, false),
                ]],
            ),
            (
                "an expired winner and the one after it are each a deal",
                vec![
                    ("d1", "p1", Some(Expired), 0, None),
                    ("d2", "p2", Some(Approved), 100, None),
                    ("d3", "p3", Some(Duplicate), 101, None),
                ],
                vec![
                    vec![("p1", Role::Sourced, true)],
                    vec![("p2", Role::Sourced, true), ("p3", Role::Influenced, false)],
                ],
            ),
            (
                "no winner, no deal",
                vec![("d1", "p1", Some(Duplicate), 0, None)],
                vec![],
            ),
        ];
        for (name, rows, want) in cases {
            let got = run(&rule(30), &rows);
            let got: Vec<Vec<(&str, Role, bool)>> = got.iter().map(roles).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn exactly_one_primary_and_reasons_cite_the_line_and_dates() {
        let got = run(
            &rule(30),
            &[
                ("d1", "p1", Some(Status::Approved), 10, None),
                ("d2", "p2", Some(Status::Duplicate), 40, None),
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].partners.iter().filter(|p| p.primary).count(), 1);
        let r = &got[0].partners[1].reason;
        assert!(r.contains("1970-02-10 (d2)"), "{r}");
        assert!(r.contains("within 30 days"), "{r}");
        assert!(r.contains("credit line 7"), "{r}");
    }

    #[test]
    fn without_a_role_field_the_winner_is_sourced_and_others_influenced() {
        let mut r = rule(30);
        r.role_field = None;
        let got = run(
            &r,
            &[
                ("d1", "p1", Some(Status::Approved), 10, Some("reseller")),
                ("d2", "p2", Some(Status::Duplicate), 12, Some("reseller")),
            ],
        );
        assert_eq!(
            roles(&got[0]),
            [("p1", Role::Sourced, true), ("p2", Role::Influenced, false)]
        );
    }

    #[test]
    fn leads_and_activities_earn_influence_like_registrations() {
        use Evidence::{Activity, Lead};
        use Status::{Approved, Duplicate};
        let deal: Vec<Row> = vec![("d1", "p1", Some(Approved), 100, None)];
        // (name, evidence, influence_from, expected (partner, role, evidence id))
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<EvidenceItem>, Vec<Evidence>, Vec<(&str, &str)>)> = vec![
            (
                "a lead before the opportunity, within the window",
                vec![item(Lead, "L1", "p2", 75)],
                vec![Lead],
                vec![("p2", "L1")],
            ),
            (
                "an activity after it, on the window's last day",
                vec![item(Activity, "A1", "p3", 130)],
                vec![Activity],
                vec![("p3", "A1")],
            ),
            (
                "a lead a day outside the window earns nothing",
                vec![item(Lead, "L1", "p2", 69), item(Lead, "L2", "p2", 131)],
                vec![Lead],
                vec![],
            ),
            (
                "evidence the file does not list earns nothing",
                vec![item(Activity, "A1", "p3", 100)],
                vec![Evidence::Registration, Lead],
                vec![],
            ),
            (
                "the sourcing partner's own lead adds nothing",
                vec![item(Lead, "L1", "p1", 100)],
                vec![Lead],
                vec![],
            ),
            (
                "a partner once, by its earliest evidence",
                vec![
                    item(Activity, "A9", "p2", 90),
                    item(Lead, "L1", "p2", 95),
                    item(Lead, "L0", "p2", 90),
                ],
                vec![Lead, Activity],
                vec![("p2", "L0")],
            ),
        ];
        for (name, evidence, from, want) in cases {
            let mut r = rule(30);
            r.influence_from = from;
            let got = run_with(&r, &deal, &evidence);
            let got: Vec<(&str, &str)> = got[0].partners[1..]
                .iter()
                .map(|p| {
                    assert_eq!((p.role, p.primary), (Role::Influenced, false), "{name}");
                    (p.partner.as_str(), p.registration_id.as_str())
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
        // A partner with a registration in the window is credited by it (its declared role),
        // not by an earlier lead; partners stay in key order after the primary.
        let rows: Vec<Row> = vec![
            ("d1", "p1", Some(Approved), 100, None),
            ("d2", "p3", Some(Duplicate), 105, Some("reseller")),
        ];
        let got = run_with(
            &rule(30),
            &rows,
            &[item(Lead, "L1", "p3", 90), item(Lead, "L2", "p2", 99)],
        );
        assert_eq!(
            roles(&got[0]),
            [
                ("p1", Role::Sourced, true),
                ("p2", Role::Influenced, false),
                ("p3", Role::Reseller, false)
            ]
        );
        assert_eq!(got[0].partners[2].registration_id, "d2");
        let reason = &got[0].partners[1].reason;
        assert_eq!(
            reason,
            "p2's lead L2 on 1970-04-10 was on the same customer, within 30 days of the opportunity's creation on 1970-04-11 (credit line 7)"
        );
    }
}
