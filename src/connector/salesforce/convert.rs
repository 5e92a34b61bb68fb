//! Salesforce lead conversion as prmsync reads it: Leads with `IsConverted = true` modified since
//! a time, with the ids of the Account, Contact and Opportunity the conversion produced
//! (`ConvertedAccountId`, `ConvertedContactId`, `ConvertedOpportunityId`; CONTRACTS.md §5).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Salesforce, api, check_name, data_url, join};
use crate::connector::{ConnectorError, Converted};

/// The converted-record fields, by the object each names.
const CONVERTED: &[(&str, &str)] = &[
    ("Account", "ConvertedAccountId"),
    ("Contact", "ConvertedContactId"),
    ("Opportunity", "ConvertedOpportunityId"),
];
/// Pages read per call (2,000 rows each); a read beyond is taken up by the next call, which
/// starts at the last conversion read.
const PAGES: usize = 5;

/// The SOQL reading `object`'s conversions since `since_ms`, oldest first.
fn conversions_soql(object: &str, since_ms: i64) -> Result<String, ConnectorError> {
    check_name(object)?;
    let cols: Vec<&str> = CONVERTED.iter().map(|(_, f)| *f).collect();
    Ok(format!(
        "SELECT Id, {}, {} FROM {object} WHERE IsConverted = true AND {} >= {} ORDER BY {} ASC, Id ASC",
        api::MODSTAMP,
        cols.join(", "),
        api::MODSTAMP,
        api::soql_datetime(since_ms),
        api::MODSTAMP
    ))
}

impl Salesforce {
    /// Leads converted (modified) since `since_ms`, with the records each became.
    pub async fn read_conversions(
        &self,
        object: &str,
        since_ms: i64,
    ) -> Result<Vec<Converted>, ConnectorError> {
        let q = conversions_soql(object, since_ms)?;
        let (_, mut body) = self
            .call(|http, base| {
                http.get(data_url(base, "query"))
                    .query(&[("q", q.as_str())])
            })
            .await?;
        let mut out = Vec::new();
        for _ in 0..PAGES {
            let resp: api::QueryResponse = serde_json::from_str(&body).map_err(|e| {
                ConnectorError::Transient(format!("unexpected Salesforce query shape: {e}"))
            })?;
            for r in resp.records {
                let text = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                let (Some(id), Some(converted_ms)) = (
                    text("Id"),
                    text(api::MODSTAMP).and_then(|s| api::parse_datetime(&s)),
                ) else {
                    continue;
                };
                let into: BTreeMap<String, String> = CONVERTED
                    .iter()
                    .filter_map(|(o, f)| Some(((*o).to_owned(), text(f)?)))
                    .collect();
                out.push(Converted {
                    id,
                    converted_ms,
                    into,
                });
            }
            match (resp.done, resp.next_records_url) {
                (false, Some(next)) => {
                    body = self.call(|http, base| http.get(join(base, &next))).await?.1;
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_soql_reads_the_converted_ids_oldest_first() {
        let q = conversions_soql("Lead", 0).expect("soql");
        assert!(q.starts_with(
            "SELECT Id, SystemModstamp, ConvertedAccountId, ConvertedContactId, ConvertedOpportunityId FROM Lead WHERE IsConverted = true AND SystemModstamp >= "
        ), "{q}");
        assert!(q.ends_with("ORDER BY SystemModstamp ASC, Id ASC"), "{q}");
        assert!(conversions_soql("Lead x", 0).is_err());
    }
}
