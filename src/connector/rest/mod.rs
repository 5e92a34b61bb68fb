//! The declarative `rest` PRM connector: any JSON API with an API key, list endpoints with an
//! updated-since filter and page-token or offset paging, and per-record upserts, described by a
//! [`RestProfile`] from the config instead of code.

pub mod profile;
pub mod webhook;

use std::sync::Arc;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{
    ChangePage, ConnectorError, Lane, Limits, Pacer, Rate, Reject, WriteAck, WriteRequest,
    classify, transport,
};
use crate::model::Record;
pub use profile::{Paging, RestObject, RestProfile, SinceFormat, UpsertMethod};

/// A client for one PRM described by a profile.
#[derive(Debug, Clone)]
pub struct Rest {
    http: reqwest::Client,
    profile: Arc<RestProfile>,
    /// The profile's `auth_value`, replaced when a reload loads a new one (shared by every
    /// clone).
    auth_value: Arc<std::sync::RwLock<SecretString>>,
    /// Every request spends from this budget (`rest.rate_limit_per_second`, when set) and
    /// respects its holds.
    pacer: Pacer,
}

impl Rest {
    pub fn new(http: reqwest::Client, profile: RestProfile) -> Self {
        Rest {
            http,
            auth_value: Arc::new(std::sync::RwLock::new(profile.auth_value.clone())),
            profile: Arc::new(profile),
            pacer: Pacer::documented(crate::model::SystemKind::Rest),
        }
    }

    /// Sends at most `per_second` requests in any second, every request of every call
    /// included: the PRM's documented limit (`rest.rate_limit_per_second`).
    pub fn with_rate_limit(self, per_second: u32) -> Self {
        let kind = crate::model::SystemKind::Rest;
        let limits = Limits::documented(kind).with_burst(Rate {
            n: per_second.max(1),
            per: std::time::Duration::from_secs(1),
        });
        self.with_pacer(Pacer::new(kind, limits))
    }

    /// The pacer every request goes through.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Paces requests with `pacer`.
    pub fn with_pacer(mut self, pacer: Pacer) -> Self {
        self.pacer = pacer;
        self
    }

    fn auth_value(&self) -> SecretString {
        self.auth_value
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A digest of the credential in use, to tell whether a reload brings a new one.
    pub fn credential_fingerprint(&self) -> String {
        crate::connector::tokens::fingerprint_of(&[
            &self.profile.auth_header,
            self.auth_value().expose_secret(),
        ])
    }

    /// Sends `fresh`'s credential from now on (every clone of this client).
    pub fn adopt_credentials(&self, fresh: &Rest) {
        *self.auth_value.write().unwrap_or_else(|p| p.into_inner()) = fresh.auth_value();
    }

    fn object(&self, name: &str) -> Result<&RestObject, ConnectorError> {
        self.profile.objects.get(name).ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "the rest profile has no object {name:?}; add [rest.objects.{name}]"
            ))
        })
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.profile.base_url.clone();
        let joined = format!(
            "{}/{}",
            u.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        u.set_path(&joined);
        u
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ConnectorError> {
        let resp = crate::connector::send(
            &self.pacer,
            Lane::Call,
            req.header(
                self.profile.auth_header.as_str(),
                self.auth_value().expose_secret(),
            ),
        )
        .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(self.pacer.note(classify(status, &headers, &body)));
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body)
            .map_err(|e| ConnectorError::Transient(format!("unreadable PRM response: {e}")))
    }

    /// Lists the first configured object with one item.
    pub async fn health(&self) -> Result<(), ConnectorError> {
        let Some(o) = self.profile.objects.values().next() else {
            return Err(ConnectorError::Permanent(
                "the rest profile lists no objects".into(),
            ));
        };
        self.send(
            self.http
                .get(self.url(&o.list_path))
                .query(&[(o.limit_param.as_str(), "1")]),
        )
        .await
        .map(|_| ())
    }

    /// One page of `object` items modified at or after `since_ms`, oldest first.
    pub async fn read_changes(
        &self,
        object: &str,
        since_ms: i64,
        page: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let o = self.object(object)?;
        let since = match o.since_format {
            SinceFormat::EpochMs => since_ms.to_string(),
            SinceFormat::Rfc3339 => jiff::Timestamp::from_millisecond(since_ms)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_string(),
        };
        let size = self.profile.page_size;
        let mut query = vec![
            (o.since_param.clone(), since),
            (o.limit_param.clone(), size.to_string()),
        ];
        let offset: usize = match (&o.paging, page) {
            (Paging::PageToken { param, .. }, Some(t)) => {
                query.push((param.clone(), t.to_owned()));
                0
            }
            (Paging::Offset { param }, Some(n)) => {
                let n: usize = n.parse().map_err(|_| {
                    ConnectorError::Permanent(format!("not an offset page token: {n}"))
                })?;
                query.push((param.clone(), n.to_string()));
                n
            }
            (_, None) => 0,
        };
        let body = self
            .send(self.http.get(self.url(&o.list_path)).query(&query))
            .await?;
        let items = path(&body, &o.items_field)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ConnectorError::Transient(format!(
                    "the PRM response has no {:?} array",
                    o.items_field
                ))
            })?;
        let n = items.len();
        let (records, rejects) = page_records(object, o, items);
        let next_page = match &o.paging {
            Paging::PageToken { next_field, .. } => path(&body, next_field)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            Paging::Offset { .. } => (n == size as usize).then(|| (offset + n).to_string()),
        };
        Ok(ChangePage {
            records,
            next_page,
            rejects,
        })
    }

    /// Upserts each record at the object's `upsert_path`; one result per record, and the first
    /// 429 stops the loop (the rest are not sent).
    pub async fn write(
        &self,
        object: &str,
        writes: &[WriteRequest],
    ) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
        let o = self.object(object)?;
        let Some(upsert) = &o.upsert_path else {
            return Err(ConnectorError::Permanent(format!(
                "{object} is read-only in the rest profile (no upsert_path)"
            )));
        };
        let one = |w: &WriteRequest| {
            let url = self.url(&upsert.replace("{id}", &encode(&w.key)));
            let req = match o.upsert_method {
                UpsertMethod::Put => self.http.put(url),
                UpsertMethod::Patch => self.http.patch(url),
                UpsertMethod::Post => self.http.post(url),
            };
            let key = w.key.clone();
            let sent = self.send(req.json(&Value::Object(w.fields.clone())));
            async move {
                sent.await.map(|v| WriteAck {
                    id: v
                        .get(&o.id_field)
                        .and_then(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .or_else(|| v.as_i64().map(|n| n.to_string()))
                        })
                        .unwrap_or(key),
                    created: v.get("created").and_then(Value::as_bool).unwrap_or(false),
                })
            }
        };
        Ok(crate::connector::each_until_pushed_back(writes, one).await)
    }
}

/// A list page's items as records (oldest first), and the items that are not objects or lack
/// the id or a readable modification time as rejects.
fn page_records(object: &str, o: &RestObject, items: &[Value]) -> (Vec<Record>, Vec<Reject>) {
    let mut records = Vec::with_capacity(items.len());
    let mut rejects = Vec::new();
    for item in items {
        let reject = |id: Option<String>, reason: String| Reject {
            id,
            raw: item.clone(),
            reason,
        };
        let Value::Object(fields) = item else {
            rejects.push(reject(None, format!("a {object} item is not an object")));
            continue;
        };
        let id = match fields.get(&o.id_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                rejects.push(reject(
                    None,
                    format!("a {object} item has no {:?}", o.id_field),
                ));
                continue;
            }
        };
        let Some(modified_ms) = fields.get(&o.cursor_field).and_then(time_ms) else {
            let why = format!("{object} {id}: {:?} is not a time", o.cursor_field);
            rejects.push(reject(Some(id), why));
            continue;
        };
        records.push(Record {
            id,
            modified_ms,
            fields: fields.clone(),
        });
    }
    records.sort_by(|a, b| (a.modified_ms, &a.id).cmp(&(b.modified_ms, &b.id)));
    (records, rejects)
}

/// `a.b.c` inside a JSON value; the empty path is the value itself.
fn path<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    if dotted.is_empty() {
        return Some(v);
    }
    dotted.split('.').try_fold(v, |cur, k| cur.get(k))
}

pub(crate) fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok().or_else(|| {
            s.parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_millisecond())
        }),
        _ => None,
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One bad item is a reject; the others are read, and offset paging counts every item.
    #[test]
    fn items_without_id_or_time_are_rejects_and_the_rest_are_read() {
        let o = RestObject {
            list_path: "/deals".into(),
            upsert_path: None,
            upsert_method: UpsertMethod::Put,
            items_field: "items".into(),
            id_field: "id".into(),
            cursor_field: "updated_at".into(),
            since_param: "since".into(),
            since_format: SinceFormat::EpochMs,
            limit_param: "limit".into(),
            paging: Paging::Offset {
                param: "offset".into(),
            },
        };
        let items = [
            json!({"id": "b", "updated_at": 2}),
            json!({"updated_at": 3}),
            json!({"id": "c", "updated_at": "soon"}),
            json!(7),
            json!({"id": 1, "updated_at": "1970-01-01T00:00:00.001Z"}),
        ];
        let (records, rejects) = page_records("deals", &o, &items);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "b"]);
        assert_eq!(rejects.len(), 3);
        assert_eq!(rejects[1].id.as_deref(), Some("c"));
        assert_eq!(rejects[2].raw, json!(7));
    }

    #[test]
    fn finds_dotted_paths_and_times() {
        let v = json!({"data": {"results": [1], "next": "t2"}});
        assert_eq!(path(&v, "data.results"), Some(&json!([1])));
        assert_eq!(path(&v, "data.missing"), None);
        assert_eq!(path(&v, ""), Some(&v));
        assert_eq!(time_ms(&json!(17)), Some(17));
        assert_eq!(time_ms(&json!("1970-01-01T00:00:01Z")), Some(1000));
        assert_eq!(time_ms(&json!("soon")), None);
    }
}
