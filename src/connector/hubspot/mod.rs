//! HubSpot (CRM) connector: private-app token, search on `hs_lastmodifieddate` with `after`
//! paging, and batch upsert by `idProperty` with per-record results from 200/207 responses.

pub mod api;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{ChangePage, ConnectorError, WriteAck, WriteRequest, classify, transport};
use crate::model::Record;

/// HubSpot's batch endpoints take at most 100 inputs.
pub const MAX_BATCH: usize = 100;

/// A HubSpot CRM v3 client.
#[derive(Debug, Clone)]
pub struct HubSpot {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
}

impl HubSpot {
    /// `base` is the API host, e.g. `https://api.hubapi.com`.
    pub fn new(http: reqwest::Client, base: Url, token: SecretString) -> Self {
        HubSpot { http, base, token }
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        let joined = format!(
            "{}/{}",
            u.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        u.set_path(&joined);
        u
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), ConnectorError> {
        let resp = req
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(classify(status, &headers, &body));
        }
        Ok((status, body))
    }

    pub async fn health(&self) -> Result<(), ConnectorError> {
        self.send(
            self.http
                .get(self.url("crm/v3/objects/deals"))
                .query(&[("limit", "1")]),
        )
        .await
        .map(|_| ())
    }

    /// One page of objects modified at or after `since_ms`, oldest first.
    pub async fn read_changes(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let mut properties: Vec<String> = fields.to_vec();
        properties.push(api::LAST_MODIFIED.into());
        properties.sort();
        properties.dedup();
        let req = api::SearchRequest {
            filter_groups: vec![api::FilterGroup {
                filters: vec![api::Filter {
                    property_name: api::LAST_MODIFIED.into(),
                    operator: "GTE".into(),
                    value: Some(since_ms.to_string()),
                }],
            }],
            sorts: vec![
                serde_json::json!({"propertyName": api::LAST_MODIFIED, "direction": "ASCENDING"}),
            ],
            properties,
            limit: Some(api::SEARCH_LIMIT),
            after: page.map(str::to_owned),
        };
        let (_, body) = self
            .send(
                self.http
                    .post(self.url(&format!("crm/v3/objects/{object}/search")))
                    .json(&req),
            )
            .await?;
        let resp: api::SearchResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected HubSpot search shape: {e}"))
        })?;
        let records = resp
            .results
            .into_iter()
            .map(to_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChangePage {
            records,
            next_page: resp.paging.and_then(|p| p.next).map(|n| n.after),
        })
    }

    /// Batch upsert by external id. A 207 gives per-record errors; the rest succeed.
    pub async fn write(
        &self,
        object: &str,
        writes: &[WriteRequest],
    ) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
        let inputs = writes
            .iter()
            .map(|w| api::UpsertInput {
                id: w.key.clone(),
                id_property: w.id_property.clone(),
                properties: stringify(&w.fields),
            })
            .collect();
        let url = self.url(&format!("crm/v3/objects/{object}/batch/upsert"));
        let (_, body) = self
            .send(self.http.post(url).json(&api::BatchUpsert { inputs }))
            .await?;
        let resp: api::BatchResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected HubSpot batch shape: {e}"))
        })?;
        Ok(match_results(writes, resp))
    }
}

/// HubSpot property values are strings.
fn stringify(fields: &Map<String, Value>) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect()
}

fn to_record(o: api::SimplePublicObject) -> Result<Record, ConnectorError> {
    let modified = o
        .properties
        .get(api::LAST_MODIFIED)
        .and_then(Value::as_str)
        .or(o.updated_at.as_deref())
        .and_then(parse_time)
        .ok_or_else(|| {
            ConnectorError::Transient(format!("HubSpot object {} has no modification time", o.id))
        })?;
    Ok(Record {
        id: o.id,
        modified_ms: modified,
        fields: o.properties,
    })
}

/// HubSpot sends times as RFC 3339 text or epoch milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    })
}

/// Pairs each input with its result by the external id, or with the error that names it.
fn match_results(
    writes: &[WriteRequest],
    resp: api::BatchResponse,
) -> Vec<Result<WriteAck, ConnectorError>> {
    writes
        .iter()
        .map(|w| {
            let prop = w.id_property.as_deref().unwrap_or("hs_object_id");
            let hit = resp.results.iter().find(|r| {
                r.properties.get(prop).and_then(Value::as_str) == Some(w.key.as_str())
                    || (w.id_property.is_none() && r.id == w.key)
            });
            if let Some(r) = hit {
                return Ok(WriteAck {
                    id: r.id.clone(),
                    created: r.new.unwrap_or(false),
                });
            }
            let err = resp.errors.iter().find(|e| {
                e.context
                    .values()
                    .filter_map(Value::as_array)
                    .flatten()
                    .any(|v| v.as_str() == Some(w.key.as_str()))
            });
            Err(match err {
                Some(e) => {
                    let msg = format!(
                        "{}: {}",
                        e.category.as_deref().unwrap_or("ERROR"),
                        e.message.as_deref().unwrap_or("no message")
                    );
                    if e.category.as_deref() == Some("RATE_LIMITS") {
                        ConnectorError::RateLimited {
                            retry_after: std::time::Duration::from_secs(10),
                            detail: msg,
                        }
                    } else {
                        ConnectorError::Permanent(msg)
                    }
                }
                // Neither a result nor an error: the outcome is unknown, so retry (upserts are idempotent).
                None => {
                    ConnectorError::Transient(format!("HubSpot returned no result for {}", w.key))
                }
            })
        })
        .collect()
}
