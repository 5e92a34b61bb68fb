//! Reads the CRM facts the rules of engagement need from Salesforce with SOQL: Accounts whose
//! website is on a customer domain (`Website LIKE '%domain%'`, kept when it normalises to the
//! domain), and the open Opportunities on them not created from a PRM registration
//! (`AccountId IN (...) AND IsClosed = false AND <PRM id field> = null`).

use serde_json::{Map, Value};

use super::{Salesforce, api, check_name, data_url, join, soql_string};
use crate::connector::{ConnectorError, CrmCompany, CrmDirectDeal, CrmFactsRead, FactsQuery};
use crate::rules::normalize;

/// Domains per Account query (one `LIKE` each) and Account ids per Opportunity query: both keep
/// the SOQL text far below Salesforce's 100,000 characters and the URI within 16,384 bytes.
const DOMAINS_PER_QUERY: usize = 50;
const IDS_PER_QUERY: usize = 100;
/// Pages one facts query may take (2,000 rows each) before the read is refused as too broad.
const MAX_PAGES: usize = 10;

impl Salesforce {
    /// Accounts on `query.domains` (their `domain_field`, `Website` by default, normalised to the
    /// registrable domain) with `company_fields`, and (with `open_deals`) the open Opportunities
    /// on them without `prm_id_property`. Any failure fails the whole answer, so a caller never
    /// decides on half the facts.
    pub async fn crm_facts(&self, query: &FactsQuery) -> Result<CrmFactsRead, ConnectorError> {
        let domain_field = match query.domain_field.as_str() {
            "" => "Website",
            f => f,
        };
        let mut out = CrmFactsRead::default();
        let mut domains = query.domains.clone();
        domains.sort();
        domains.dedup();
        for chunk in domains.chunks(DOMAINS_PER_QUERY) {
            let q = accounts_soql(domain_field, &query.company_fields, chunk)?;
            for mut row in self.query_all(&q).await? {
                let Some(id) = take_id(&mut row) else {
                    continue;
                };
                let website = row
                    .get(domain_field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                // `LIKE` also finds `notacme.example` and `acme.example.org`: keep exact domains.
                let Some(domain) = normalize::domain(&website).filter(|d| chunk.contains(d)) else {
                    continue;
                };
                let fields = row
                    .into_iter()
                    .filter(|(k, _)| query.company_fields.contains(k))
                    .collect();
                out.companies.push(CrmCompany { id, domain, fields });
            }
        }
        if !query.open_deals || out.companies.is_empty() {
            return Ok(out);
        }
        let ids: Vec<String> = out.companies.iter().map(|c| c.id.clone()).collect();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let q = open_opportunities_soql(&query.prm_id_property, chunk)?;
            for mut row in self.query_all(&q).await? {
                let Some(id) = take_id(&mut row) else {
                    continue;
                };
                let text = |k: &str| {
                    row.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let (account, stage) = (text("AccountId"), text("StageName"));
                let Some(company) = out.companies.iter().find(|c| c.id == account) else {
                    continue;
                };
                out.open_direct_deals.push(CrmDirectDeal {
                    id,
                    company_id: account,
                    domain: company.domain.clone(),
                    stage,
                });
            }
        }
        Ok(out)
    }

    /// Every row of a SOQL query, following `nextRecordsUrl` for at most [`MAX_PAGES`] pages.
    async fn query_all(&self, q: &str) -> Result<Vec<Map<String, Value>>, ConnectorError> {
        let (_, mut body) = self
            .call(|http, base| http.get(data_url(base, "query")).query(&[("q", q)]))
            .await?;
        let mut rows = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp: api::QueryResponse = serde_json::from_str(&body).map_err(|e| {
                ConnectorError::Transient(format!("unexpected Salesforce query shape: {e}"))
            })?;
            rows.extend(resp.records);
            let next = match (resp.done, resp.next_records_url) {
                (true, _) | (false, None) => return Ok(rows),
                (false, Some(n)) if n.starts_with("/services/data/") => n,
                (false, Some(n)) => {
                    return Err(ConnectorError::Permanent(format!(
                        "not a Salesforce nextRecordsUrl: {n}"
                    )));
                }
            };
            body = self.call(|http, base| http.get(join(base, &next))).await?.1;
        }
        Err(ConnectorError::Permanent(format!(
            "a CRM facts query matched more than {MAX_PAGES} pages; narrow the rules' domains"
        )))
    }
}

fn take_id(row: &mut Map<String, Value>) -> Option<String> {
    row.remove("attributes");
    row.get("Id").and_then(Value::as_str).map(str::to_owned)
}

/// A `LIKE` pattern matching `v` anywhere: `%` and `_` in it escaped, then quoted.
fn contains_pattern(v: &str) -> String {
    let escaped = v
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    // `soql_string` would double the backslashes again; quote by hand.
    format!("'%{}%'", escaped.replace('\'', "\\'"))
}

/// `SELECT Id, <domain field>, <fields> FROM Account WHERE <domain field> LIKE '%d1%' OR ...`.
pub fn accounts_soql(
    domain_field: &str,
    fields: &[String],
    domains: &[String],
) -> Result<String, ConnectorError> {
    check_name(domain_field)?;
    let mut cols = vec!["Id".to_owned(), domain_field.to_owned()];
    for f in fields {
        check_name(f)?;
        if !cols.iter().any(|c| c.eq_ignore_ascii_case(f)) {
            cols.push(f.clone());
        }
    }
    let cond = domains
        .iter()
        .map(|d| format!("{domain_field} LIKE {}", contains_pattern(d)))
        .collect::<Vec<_>>()
        .join(" OR ");
    Ok(format!(
        "SELECT {} FROM Account WHERE {cond} ORDER BY Id ASC",
        cols.join(", ")
    ))
}

/// `SELECT Id, AccountId, StageName FROM Opportunity WHERE AccountId IN (...) AND IsClosed =
/// false AND <prm id field> = null` (an empty text field is null in SOQL).
pub fn open_opportunities_soql(
    prm_id_property: &str,
    account_ids: &[String],
) -> Result<String, ConnectorError> {
    check_name(prm_id_property)?;
    let list = account_ids
        .iter()
        .map(|v| soql_string(v))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "SELECT Id, AccountId, StageName FROM Opportunity WHERE AccountId IN ({list}) AND IsClosed = false AND {prm_id_property} = null ORDER BY Id ASC"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_facts_soql_with_escaped_patterns() {
        let q = accounts_soql(
            "Website",
            &["PRM_Direct_Reserved__c".into()],
            &["acme.example".into(), "o'b_x%.example".into()],
        )
        .unwrap();
        assert_eq!(
            q,
            "SELECT Id, Website, PRM_Direct_Reserved__c FROM Account WHERE Website LIKE '%acme.example%' OR Website LIKE '%o\\'b\\_x\\%.example%' ORDER BY Id ASC"
        );
        assert!(accounts_soql("Website) OR (Name", &[], &[]).is_err());
        let q = open_opportunities_soql("PRM_Deal_Id__c", &["001A".into(), "001B".into()]).unwrap();
        assert_eq!(
            q,
            "SELECT Id, AccountId, StageName FROM Opportunity WHERE AccountId IN ('001A', '001B') AND IsClosed = false AND PRM_Deal_Id__c = null ORDER BY Id ASC"
        );
        assert!(open_opportunities_soql("x = null OR Id", &[]).is_err());
    }
}
