//! Multi-partner credit in the engine: each decided group's sourced deals get their desired
//! partner credits (pure, `rules::credit`), stored with the decisions; after the writers'
//! batches, the deals whose credits the CRM has not confirmed are written once the CRM deal
//! (deal flow) and every partner's company or account (the partnerships flow) exist: Salesforce
//! `Partner` rows (or the configured custom object's), HubSpot deal-to-company association
//! labels, one per role.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError, TickReport};
use crate::connector::{ConnectorError, PartnerRow};
use crate::model::SystemKind;
use crate::rules::credit::{self, Role};
use crate::rules::{Decision, RegistrationEvent, Rules};
use crate::store::DesiredCredits;

/// The PRM object whose records are the partners (their CRM companies come from its flow).
const PARTNERS: &str = super::registrations::PARTNERS;
/// Deals one pass writes credits for, so a writer cycle stays bounded.
const MAX_PER_PASS: usize = 100;

/// One partner credit as stored: the partner key (not a CRM id) and its role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Wanted {
    pub partner: String,
    pub role: Role,
    pub primary: bool,
}

/// The desired credits of every registration `decisions` decided (pure), with the partners'
/// leads and activities on the same customer (`evidence`) counting: the partner list of
/// each sourced deal with each credit's reason, and an empty list for the others (which removes
/// credits a registration had while it was sourced; rows for never-sourced ones are not made,
/// see `store/credits.rs`).
pub fn desired(
    rules: &Rules,
    events: &[RegistrationEvent],
    decisions: &[Decision],
    evidence: &[credit::EvidenceItem],
) -> Vec<DesiredCredits> {
    let Some(rule) = &rules.credit else {
        return Vec::new();
    };
    let claims = credit::claims(events, decisions, &rules.fields.partner);
    let mut out: BTreeMap<String, Vec<credit::PartnerCredit>> = decisions
        .iter()
        .map(|d| (d.registration_id.clone(), Vec::new()))
        .collect();
    for dc in credit::credits(rule, &claims, evidence) {
        out.insert(dc.registration_id, dc.partners);
    }
    out.into_iter()
        .map(|(id, credits)| {
            let mut w: Vec<Wanted> = credits
                .iter()
                .map(|p| Wanted {
                    partner: p.partner.clone(),
                    role: p.role,
                    primary: p.primary,
                })
                .collect();
            w.sort();
            DesiredCredits {
                registration_id: id,
                desired: serde_json::to_string(&w).unwrap_or_else(|_| "[]".into()),
                reasons: serde_json::to_string(&credits).unwrap_or_else(|_| "[]".into()),
            }
        })
        .collect()
}

fn decode(s: Option<&str>) -> Vec<Wanted> {
    s.and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

impl Engine {
    /// Writes the partner credits of deals whose credits changed to `system` (a CRM), for the
    /// deals whose CRM deal and partner companies exist; the rest wait for a later pass.
    pub(super) async fn credit_ready(&self, system: SystemKind) -> Result<TickReport, EngineError> {
        let mut report = TickReport::default();
        let Some(rules) = self.rules() else {
            return Ok(report);
        };
        let (Some(_), Some(names), Some(conn)) = (
            rules.credit.as_ref(),
            rules.crm_names(system),
            self.connector(system),
        ) else {
            return Ok(report);
        };
        let mappings = self.mappings();
        let deal_flow = mappings
            .iter()
            .find(|m| m.source.object == super::registrations::OBJECT && m.target.system == system);
        let partner_flow = mappings
            .iter()
            .find(|m| m.source.object == PARTNERS && m.target.system == system);
        let (Some(deal_flow), Some(partner_flow)) = (deal_flow, partner_flow) else {
            return Ok(report);
        };
        let unsent = self.store.unsent_credits(MAX_PER_PASS).await?;
        if unsent.is_empty() {
            return Ok(report);
        }
        let sent = self
            .store
            .sent_credits(unsent.iter().map(|u| u.registration_id.clone()).collect())
            .await?;
        let ids: Vec<String> = unsent.iter().map(|u| u.registration_id.clone()).collect();
        let deals: BTreeMap<String, String> = self
            .store
            .links_by_source(deal_flow.name.clone(), ids)
            .await?
            .into_iter()
            .filter_map(|(id, l)| Some((id, l.target_id?)))
            .collect();
        let partners: BTreeSet<String> = unsent
            .iter()
            .flat_map(|u| {
                decode(Some(&u.desired))
                    .into_iter()
                    .chain(decode(sent.get(&u.registration_id).map(String::as_str)))
            })
            .map(|w| w.partner)
            .collect();
        let companies: BTreeMap<String, String> = self
            .store
            .links_by_source(partner_flow.name.clone(), partners.into_iter().collect())
            .await?
            .into_iter()
            .filter_map(|(id, l)| Some((id, l.target_id?)))
            .collect();
        let rows = |w: &[Wanted]| -> Option<Vec<PartnerRow>> {
            w.iter()
                .map(|w| {
                    Some(PartnerRow {
                        company_id: companies.get(&w.partner)?.clone(),
                        role: names.role_name(w.role).to_owned(),
                        primary: w.primary,
                    })
                })
                .collect()
        };
        let mut outcomes = Vec::new();
        for u in unsent {
            let Some(deal_id) = deals.get(&u.registration_id) else {
                continue; // the deal flow has not made the CRM deal yet
            };
            let want = decode(Some(&u.desired));
            let before = decode(sent.get(&u.registration_id).map(String::as_str));
            let (Some(desired), Some(previous)) = (rows(&want), rows(&before)) else {
                continue; // a partner's company is not in the CRM yet
            };
            let result = conn
                .set_partners(
                    &deal_flow.target.object,
                    deal_id,
                    &partner_flow.target.object,
                    &desired,
                    &previous,
                    names.partner_object.as_ref(),
                )
                .await;
            match result {
                Ok(()) => {
                    report.written += 1;
                    outcomes.push((u, Ok(())));
                }
                Err(e) => {
                    self.note_error(system, &e).await?;
                    if !retry_later(&e) {
                        tracing::error!(%system, registration = %u.registration_id, error = %e, "partner credits refused");
                    }
                    outcomes.push((u, Err(e.to_string())));
                    if retry_later(&e) {
                        break;
                    }
                }
            }
        }
        if !outcomes.is_empty() {
            self.store
                .complete_credits(outcomes, (self.clock)())
                .await?;
        }
        Ok(report)
    }
}

/// Rate limits, transient failures and credentials are tried again on the next pass (and so is
/// everything else: a refused set stays unsent with its error until the rules or CRM change).
fn retry_later(e: &ConnectorError) -> bool {
    e.is_retryable() || matches!(e, ConnectorError::Auth(_))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Wanted, desired};
    use crate::rules::credit::Role;
    use crate::rules::{Decision, RegistrationEvent, Rules, Status};

    fn event(id: &str, partner: &str, day: i64) -> RegistrationEvent {
        RegistrationEvent {
            id: id.into(),
            at_ms: day * 86_400_000,
            submitted_ms: day * 86_400_000,
            fields: json!({"partner_key": partner})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn decision(id: &str, status: Status) -> Decision {
        Decision {
            registration_id: id.into(),
            key: "acme.example".into(),
            partner: String::new(),
            status,
            rule: "first_qualified".into(),
            line: 1,
            reason: String::new(),
            protected_until: None,
            protected_under: None,
            duplicate_of: None,
            trace: Vec::new(),
        }
    }

    #[test]
    fn a_sourced_deal_lists_its_partners_and_the_others_list_none() {
        let rules = Rules::builtin().expect("rules");
        let got = desired(
            &rules,
            &[event("d1", "part_1", 10), event("d2", "part_2", 12)],
            &[
                decision("d1", Status::Approved),
                decision("d2", Status::Duplicate),
            ],
            &[],
        );
        let d1: Vec<Wanted> = serde_json::from_str(&got[0].desired).expect("json");
        assert_eq!(got[0].registration_id, "d1");
        assert_eq!(
            d1,
            [
                Wanted {
                    partner: "part_1".into(),
                    role: Role::Sourced,
                    primary: true
                },
                Wanted {
                    partner: "part_2".into(),
                    role: Role::Influenced,
                    primary: false
                },
            ]
        );
        let reasons: serde_json::Value = serde_json::from_str(&got[0].reasons).expect("json");
        assert_eq!(reasons[1]["partner"], "part_2");
        assert_eq!(reasons[1]["evidence"], "registration");
        assert!(
            reasons[1]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("registered the same customer on 1970-01-13 (d2)")),
            "{reasons}"
        );
        assert_eq!(
            (
                got[1].registration_id.as_str(),
                got[1].desired.as_str(),
                got[1].reasons.as_str()
            ),
            ("d2", "[]", "[]")
        );
    }
}
