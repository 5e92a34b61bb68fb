//! Partner credit on a Salesforce opportunity: `Partner` rows (`OpportunityId`, `AccountToId`,
//! `Role`, `IsPrimary`), from which Salesforce derives the read-only `OpportunityPartner`. A
//! `Partner` row cannot be updated, so a role change deletes the old row and creates the new
//! one. The rows on the opportunity are read first (SOQL), so a repeat after an ambiguous failure
//! creates nothing twice; only rows of the partner accounts prmsync credits are touched.

use serde_json::{Value, json};

use super::{Salesforce, api, check_name, data_url, soql_string};
use crate::connector::{ConnectorError, PartnerRow};

/// One `Partner` row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Existing {
    id: String,
    row: PartnerRow,
}

impl Salesforce {
    /// Makes the opportunity's `Partner` rows of the accounts in `desired` and `previous` equal
    /// `desired`: deletes the others of those accounts, creates the missing (the primary last,
    /// as Salesforce moves the primary flag to the newest primary row).
    pub async fn set_partners(
        &self,
        opportunity_id: &str,
        desired: &[PartnerRow],
        previous: &[PartnerRow],
    ) -> Result<(), ConnectorError> {
        check_name(opportunity_id)?;
        let q = format!(
            "SELECT Id, AccountToId, Role, IsPrimary FROM Partner WHERE OpportunityId = {}",
            soql_string(opportunity_id)
        );
        let (_, body) = self
            .call(|http, base| {
                http.get(data_url(base, "query"))
                    .query(&[("q", q.as_str())])
            })
            .await?;
        let resp: api::QueryResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected Salesforce query shape: {e}"))
        })?;
        let existing: Vec<Existing> = resp
            .records
            .iter()
            .filter_map(|r| {
                Some(Existing {
                    id: r.get("Id")?.as_str()?.to_owned(),
                    row: PartnerRow {
                        company_id: r.get("AccountToId")?.as_str()?.to_owned(),
                        role: r
                            .get("Role")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        primary: r.get("IsPrimary").and_then(Value::as_bool).unwrap_or(false),
                    },
                })
            })
            .collect();
        let ours = |company: &str| {
            desired
                .iter()
                .chain(previous)
                .any(|p| p.company_id == company)
        };
        let stale: Vec<String> = existing
            .iter()
            .filter(|e| ours(&e.row.company_id) && !desired.contains(&e.row))
            .map(|e| e.id.clone())
            .collect();
        if !stale.is_empty() {
            for r in self.delete(&stale).await? {
                r?;
            }
        }
        let kept: Vec<&PartnerRow> = existing
            .iter()
            .filter(|e| !stale.contains(&e.id))
            .map(|e| &e.row)
            .collect();
        let mut missing: Vec<&PartnerRow> = desired.iter().filter(|d| !kept.contains(d)).collect();
        missing.sort_by_key(|p| p.primary);
        for p in missing {
            check_name(&p.company_id)?;
            let body = json!({
                "OpportunityId": opportunity_id,
                "AccountToId": p.company_id,
                "Role": p.role,
                "IsPrimary": p.primary,
            });
            let (_, text) = self
                .call(|http, base| http.post(data_url(base, "sobjects/Partner")).json(&body))
                .await?;
            let created: Value = serde_json::from_str(&text).map_err(|e| {
                ConnectorError::Transient(format!("unexpected Salesforce create shape: {e}"))
            })?;
            if created.get("success").and_then(Value::as_bool) != Some(true) {
                return Err(ConnectorError::Permanent(format!(
                    "Salesforce did not create the Partner row of {}: {text}",
                    p.company_id
                )));
            }
        }
        Ok(())
    }
}
