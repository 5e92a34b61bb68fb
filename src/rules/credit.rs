//! Multi-partner credit on a deal (pure, no I/O): from the decided registrations of one customer
//! (a duplicate-key group), each partner-sourced deal's partners with their roles (sourced,
//! influenced, referral, reseller) and exactly one primary, every credit with its reason.
//!
//! A sourced deal is a registration that won protection (approved, or approved and since
//! expired); the CRM deal the deal flow made from it is "the opportunity", created when the
//! registration was submitted. Its partner is the primary, in the role its registration
//! declares (`[credit] role_field`: sourced, referral or reseller; sourced when blank). Another
//! partner earns credit with evidence from `[credit] influence_from` dated within
//! `influence_within_days` of the opportunity's creation (either side): today that evidence is
//! the partner's own registration of the same customer that was not rejected. Its role is the
//! one its registration declares when that is referral or reseller, else influenced.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The partner's own registration of the same customer (not rejected).
    Registration,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Registration => "registration",
        }
    }
}

/// `[credit]` of a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRule {
    pub line: usize,
    /// The registration field naming the registering partner's role (`None`: always sourced).
    pub role_field: Option<String>,
    pub influence_from: Vec<Evidence>,
    pub influence_within_days: i64,
}

/// One partner's credit on a deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerCredit {
    pub partner: String,
    pub role: Role,
    pub primary: bool,
    /// The registration that earned it.
    pub registration_id: String,
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

/// The credits of every sourced deal among `claims` (one customer's registrations).
pub fn credits(rule: &CreditRule, claims: &[Claim<'_>]) -> Vec<DealCredit> {
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

    use super::{Claim, CreditRule, DealCredit, Evidence, Role, credits};
    use crate::rules::{DAY_MS, Status};

    fn rule(days: i64) -> CreditRule {
        CreditRule {
            line: 7,
            role_field: Some("partner_role".into()),
            influence_from: vec![Evidence::Registration],
            influence_within_days: days,
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
        credits(rule, &claims)
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
}
