//! Partner credit on a Salesforce opportunity: `Partner` rows (`OpportunityId`, `AccountToId`,
//! `Role`, `IsPrimary`), from which Salesforce derives the read-only `OpportunityPartner`, or
//! the rows of the custom object the rules file names instead (its opportunity, account, role and
//! primary fields). A `Partner` row cannot be updated, so a role change deletes the old row and
//! creates the new one (a custom object's rows are handled the same way). The rows on the
//! opportunity are read first (SOQL), so a repeat after an ambiguous failure creates nothing
//! twice; only rows of the partner accounts prmsync credits are touched.

use serde_json::{Value, json};

use super::{Salesforce, api, check_name, data_url, soql_string};
use crate::connector::{ConnectorError, PartnerRow};
use crate::rules::PartnerObject;

/// One `Partner` row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Existing {
    id: String,
    row: PartnerRow,
}

impl Salesforce {
    /// Makes the opportunity's rows in `object` (`Partner`, or the configured custom object) of
    /// the accounts in `desired` and `previous` equal `desired`: deletes the others of those
    /// accounts, creates the missing (the primary last, as Salesforce moves `Partner`'s primary
    /// flag to the newest primary row).
    pub async fn set_partners(
        &self,
        opportunity_id: &str,
        desired: &[PartnerRow],
        previous: &[PartnerRow],
        object: &PartnerObject,
    ) -> Result<(), ConnectorError> {
        check_name(opportunity_id)?;
        let o = object;
        for name in [&o.object, &o.opportunity, &o.account, &o.role, &o.primary] {
            check_name(name)?;
        }
        let q = format!(
            "SELECT Id, {}, {}, {} FROM {} WHERE {} = {}",
            o.account,
            o.role,
            o.primary,
            o.object,
            o.opportunity,
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
                        company_id: r.get(&o.account)?.as_str()?.to_owned(),
                        role: r
                            .get(&o.role)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        primary: r.get(&o.primary).and_then(Value::as_bool).unwrap_or(false),
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
            let mut body = serde_json::Map::new();
            body.insert(o.opportunity.clone(), json!(opportunity_id));
            body.insert(o.account.clone(), json!(p.company_id));
            body.insert(o.role.clone(), json!(p.role));
            body.insert(o.primary.clone(), json!(p.primary));
            let path = format!("sobjects/{}", o.object);
            let (_, text) = self
                .call(|http, base| http.post(data_url(base, &path)).json(&body))
                .await?;
            let created: Value = serde_json::from_str(&text).map_err(|e| {
                ConnectorError::Transient(format!("unexpected Salesforce create shape: {e}"))
            })?;
            if created.get("success").and_then(Value::as_bool) != Some(true) {
                return Err(ConnectorError::Permanent(format!(
                    "Salesforce did not create the {} row of {}: {text}",
                    o.object, p.company_id
                )));
            }
        }
        Ok(())
    }
}
