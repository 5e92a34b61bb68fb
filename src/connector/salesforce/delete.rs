//! Salesforce deletes: `DELETE /composite/sobjects?ids=…&allOrNone=false` (sObject Collections,
//! 200 ids per call), one result per id; a record already deleted counts as done. Merges: the
//! deleted losers' `MasterRecordId`, read with `queryAll`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::api::{MAX_COLLECTION, QueryResponse, UpsertResult};
use super::{Salesforce, check_name, data_url, soql_string};
use crate::connector::ConnectorError;

/// Objects whose merges delete the losers with `MasterRecordId` set (CONTRACTS.md §5).
pub const MERGEABLE: &[&str] = &["Account", "Contact", "Lead"];
/// Ids per `queryAll` of merge masters (keeps the URL short).
const MASTER_IDS: usize = 100;

/// The `queryAll` statement reading which of `ids` (deleted) were merged, and into what.
fn masters_soql(object: &str, ids: &[String]) -> Result<String, ConnectorError> {
    check_name(object)?;
    let list = ids
        .iter()
        .map(|v| soql_string(v))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "SELECT Id, MasterRecordId FROM {object} WHERE Id IN ({list}) AND IsDeleted = true"
    ))
}

impl Salesforce {
    /// For deleted records of a mergeable object: loser id -> master id, for those a merge
    /// deleted (`queryAll`, which includes the recycle bin; at most `MASTER_IDS` per call).
    pub async fn merge_masters(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, String>, ConnectorError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(MASTER_IDS) {
            let q = masters_soql(object, chunk)?;
            let (_, body) = self
                .call(|http, base| {
                    http.get(data_url(base, "queryAll"))
                        .query(&[("q", q.as_str())])
                })
                .await?;
            let resp: QueryResponse = serde_json::from_str(&body).map_err(|e| {
                ConnectorError::Transient(format!("unexpected Salesforce queryAll shape: {e}"))
            })?;
            // At most MASTER_IDS rows: one page (a page holds at least 200).
            for r in resp.records {
                let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
                if let (Some(id), Some(master)) = (text("Id"), text("MasterRecordId")) {
                    out.insert(id, master);
                }
            }
        }
        Ok(out)
    }

    /// Deletes records by id (they go to the recycle bin and show in getDeleted).
    pub async fn delete(
        &self,
        ids: &[String],
    ) -> Result<Vec<Result<(), ConnectorError>>, ConnectorError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_COLLECTION) {
            for id in chunk {
                check_name(id)?;
            }
            let joined = chunk.join(",");
            let sent = self
                .call(|http, base| {
                    http.delete(data_url(base, "composite/sobjects"))
                        .query(&[("ids", joined.as_str()), ("allOrNone", "false")])
                })
                .await;
            let text = match sent {
                Ok((_, text)) => text,
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => {
                    out.extend(chunk.iter().map(|_| Err(e.clone())));
                    continue;
                }
            };
            let results: Vec<UpsertResult> = serde_json::from_str(&text).map_err(|e| {
                ConnectorError::Transient(format!("unexpected Salesforce delete shape: {e}"))
            })?;
            for (n, id) in chunk.iter().enumerate() {
                out.push(match results.get(n) {
                    Some(r) => outcome(id, r),
                    None => Err(ConnectorError::Transient(format!(
                        "Salesforce returned no result for {id}"
                    ))),
                });
            }
        }
        Ok(out)
    }
}

fn outcome(id: &str, r: &UpsertResult) -> Result<(), ConnectorError> {
    let code = r.errors.first().map(|e| e.status_code.as_str());
    if r.success
        || matches!(
            code,
            Some("ENTITY_IS_DELETED") | Some("INVALID_CROSS_REFERENCE_KEY")
        )
    {
        return Ok(());
    }
    let detail = r
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.status_code, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(match code {
        Some("UNABLE_TO_LOCK_ROW") | Some("SERVER_UNAVAILABLE") => {
            ConnectorError::Transient(format!("{id}: {detail}"))
        }
        _ => ConnectorError::Permanent(format!("{id}: {detail}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::salesforce::api::SaveError;

    fn result(success: bool, code: &str) -> UpsertResult {
        UpsertResult {
            id: None,
            success,
            created: None,
            errors: (!code.is_empty())
                .then(|| SaveError {
                    status_code: code.into(),
                    message: "m".into(),
                    fields: vec![],
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn masters_soql_reads_the_recycle_bin_with_escaped_ids() {
        let q = masters_soql("Account", &["001A".into(), "x'y".into()]).expect("soql");
        assert_eq!(
            q,
            "SELECT Id, MasterRecordId FROM Account WHERE Id IN ('001A', 'x\\'y') AND IsDeleted = true"
        );
        assert!(masters_soql("Account; DROP", &[]).is_err());
    }

    #[test]
    fn already_deleted_is_done_and_a_lock_is_retried() {
        assert!(outcome("x", &result(true, "")).is_ok());
        assert!(outcome("x", &result(false, "ENTITY_IS_DELETED")).is_ok());
        assert!(
            outcome("x", &result(false, "UNABLE_TO_LOCK_ROW"))
                .unwrap_err()
                .is_retryable()
        );
        assert!(
            !outcome("x", &result(false, "DELETE_FAILED"))
                .unwrap_err()
                .is_retryable()
        );
    }
}
