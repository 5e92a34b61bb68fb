//! Reads the CRM facts the rules of engagement need from HubSpot: companies by domain (search
//! `domain IN`), their deals (associations v4 `batch/read`), and which of those are open and not
//! created from a PRM registration (search `hs_object_id IN`, `dealstage NOT_IN` closed stages,
//! `NOT_HAS_PROPERTY` on the PRM id property).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{HubSpot, api, id_str};
use crate::connector::{ConnectorError, CrmCompany, CrmDirectDeal, CrmFactsRead, FactsQuery};

/// The closed stages of HubSpot's default sales pipeline; deals in any other stage are open.
pub const CLOSED_STAGES: [&str; 2] = ["closedwon", "closedlost"];

impl HubSpot {
    /// Companies whose `domain` is one of `query.domains` (or it with `www.`), and (with `open_deals`) the open deals
    /// without `query.prm_id_property` associated with them. Every read is batched (at most 100
    /// values per `IN`, so 50 domains per company search) and paged to the end; any failure fails the whole answer, so a caller
    /// never decides on half the facts.
    pub async fn crm_facts(&self, query: &FactsQuery) -> Result<CrmFactsRead, ConnectorError> {
        let mut out = CrmFactsRead::default();
        let domain_field = match query.domain_field.as_str() {
            "" => "domain",
            f => f,
        };
        let mut properties = vec![domain_field.to_owned()];
        properties.extend(query.company_fields.iter().cloned());
        properties.sort();
        properties.dedup();
        let mut domains = query.domains.clone();
        domains.sort();
        domains.dedup();
        // Each domain is asked as written and with `www.` (HubSpot keeps what the user typed).
        for chunk in domains.chunks(api::MAX_FILTER_VALUES / 2) {
            let values = chunk
                .iter()
                .flat_map(|d| [d.clone(), format!("www.{d}")])
                .collect();
            let filters = vec![api::Filter::many(domain_field, "IN", values)];
            for o in self.search_all("companies", filters, &properties).await? {
                let domain = o
                    .properties
                    .get(domain_field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let fields = o
                    .properties
                    .into_iter()
                    .filter(|(k, _)| query.company_fields.contains(k))
                    .collect();
                out.companies.push(CrmCompany {
                    id: o.id,
                    domain,
                    fields,
                });
            }
        }
        if !query.open_deals || out.companies.is_empty() {
            return Ok(out);
        }
        let company_ids: Vec<String> = out.companies.iter().map(|c| c.id.clone()).collect();
        let pairs = self.associated("companies", "deals", &company_ids).await?;
        let deal_ids: Vec<String> = pairs
            .iter()
            .map(|(_, d)| d.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut open: BTreeMap<String, String> = BTreeMap::new();
        let deal_properties = vec!["dealstage".to_owned(), query.prm_id_property.clone()];
        for chunk in deal_ids.chunks(api::MAX_FILTER_VALUES) {
            let filters = vec![
                api::Filter::many("hs_object_id", "IN", chunk.to_vec()),
                api::Filter::many(
                    "dealstage",
                    "NOT_IN",
                    CLOSED_STAGES.iter().map(|s| (*s).to_owned()).collect(),
                ),
                api::Filter::bare(&query.prm_id_property, "NOT_HAS_PROPERTY"),
            ];
            for o in self.search_all("deals", filters, &deal_properties).await? {
                let stage = o
                    .properties
                    .get("dealstage")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                open.insert(o.id, stage);
            }
        }
        for (company_id, deal_id) in pairs {
            let (Some(stage), Some(company)) = (
                open.get(&deal_id),
                out.companies.iter().find(|c| c.id == company_id),
            ) else {
                continue;
            };
            out.open_direct_deals.push(CrmDirectDeal {
                id: deal_id,
                company_id,
                domain: company.domain.clone(),
                stage: stage.clone(),
            });
        }
        Ok(out)
    }

    /// Every object of `object` matching `filters` (one filter group, all must hold), sorted by
    /// id, paged to the end within the search cap.
    async fn search_all(
        &self,
        object: &str,
        filters: Vec<api::Filter>,
        properties: &[String],
    ) -> Result<Vec<api::SimplePublicObject>, ConnectorError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let req = api::SearchRequest {
                filter_groups: vec![api::FilterGroup {
                    filters: filters.clone(),
                }],
                sorts: vec![
                    serde_json::json!({"propertyName": "hs_object_id", "direction": "ASCENDING"}),
                ],
                properties: properties.to_vec(),
                limit: Some(api::SEARCH_LIMIT),
                after: after.clone(),
            };
            let resp = self.search(object, &req).await?;
            all.extend(resp.results);
            after = resp.paging.and_then(|p| p.next).map(|n| n.after);
            match &after {
                None => return Ok(all),
                Some(_) if all.len() + api::SEARCH_LIMIT as usize > self.search_cap => {
                    return Err(ConnectorError::Permanent(format!(
                        "more than {} {object} match one CRM facts search; narrow the rules' domains",
                        self.search_cap
                    )));
                }
                Some(_) => {}
            }
        }
    }

    /// (from id, to id) for every association of the `from` objects with `to` objects
    /// (associations v4 `batch/read`, 100 inputs per call).
    async fn associated(
        &self,
        from: &str,
        to: &str,
        ids: &[String],
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        let mut pairs = Vec::new();
        for chunk in ids.chunks(api::MAX_FILTER_VALUES) {
            let body = api::BatchRead {
                inputs: chunk
                    .iter()
                    .map(|id| api::ObjectId { id: id.clone() })
                    .collect(),
            };
            let url = self.url(&format!("crm/v4/associations/{from}/{to}/batch/read"));
            let (_, text) = self.send(self.http.post(url).json(&body)).await?;
            let resp: api::AssociationsRead = serde_json::from_str(&text).map_err(|e| {
                ConnectorError::Transient(format!("unexpected HubSpot associations shape: {e}"))
            })?;
            for r in resp.results {
                if r.paging.as_ref().is_some_and(|p| p.next.is_some()) {
                    // Reading the rest needs one call per object; until then, refuse to answer
                    // rather than miss a deal.
                    return Err(ConnectorError::Permanent(format!(
                        "{from} {} has more {to} than one associations answer holds",
                        r.from.id
                    )));
                }
                for t in r.to {
                    if let Some(to_id) = id_str(&t.to_object_id) {
                        pairs.push((r.from.id.clone(), to_id));
                    }
                }
            }
            // Objects without associations come back as `errors` (NO_ASSOCIATIONS_FOUND); that
            // is an answer, not a failure.
        }
        Ok(pairs)
    }
}
