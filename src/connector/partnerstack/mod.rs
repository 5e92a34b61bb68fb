//! PartnerStack (PRM) connector: API-key auth (bearer secret key, or Basic public:secret key),
//! `starting_after` paging with `min_updated` over deals, partnerships, customers and leads,
//! epoch-millisecond timestamps, and `PATCH /deals/{key}` for write-back (custom `fields` as the
//! contract's array, merged into a fresh read). Amounts are integer cents on the wire; mappings
//! scale them (`scale = -2`).

pub mod api;
pub mod webhook;

use std::sync::{Arc, RwLock};

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{
    ChangePage, ConnectorError, Lane, Pacer, Reject, WriteAck, WriteRequest, classify, transport,
};
use crate::model::Record;

/// A PartnerStack API client.
#[derive(Debug, Clone)]
pub struct PartnerStack {
    http: reqwest::Client,
    base: Url,
    /// Replaced when a reload loads a new key (shared by every clone).
    keys: Arc<RwLock<Keys>>,
    /// Every request spends from this credential's budget and respects its holds.
    pacer: Pacer,
}

/// The API (secret) key, and with a public key, Basic auth (public key : secret key).
#[derive(Debug, Clone)]
struct Keys {
    api_key: SecretString,
    public_key: Option<SecretString>,
}

impl PartnerStack {
    /// `base` is the API root, e.g. `https://api.partnerstack.com/api/v2`.
    pub fn new(http: reqwest::Client, base: Url, api_key: SecretString) -> Self {
        PartnerStack {
            http,
            base,
            keys: Arc::new(RwLock::new(Keys {
                api_key,
                public_key: None,
            })),
            pacer: Pacer::documented(crate::model::SystemKind::PartnerStack),
        }
    }

    /// The pacer every request goes through.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Paces requests with `pacer` (another tier's budget, or one shared with another client).
    pub fn with_pacer(mut self, pacer: Pacer) -> Self {
        self.pacer = pacer;
        self
    }

    /// Uses HTTP Basic auth with `public_key` as the user and the API (secret) key as the
    /// password, as PartnerStack's reference pages show, instead of a bearer key.
    pub fn with_basic_auth(self, public_key: SecretString) -> Self {
        self.keys_mut().public_key = Some(public_key);
        self
    }

    fn keys(&self) -> Keys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A digest of the keys in use, to tell whether a reload brings new ones.
    pub fn credential_fingerprint(&self) -> String {
        let k = self.keys();
        crate::connector::tokens::fingerprint_of(&[
            k.api_key.expose_secret(),
            k.public_key.as_ref().map_or("", |p| p.expose_secret()),
        ])
    }

    /// Uses `fresh`'s keys from now on (every clone of this client).
    pub fn adopt_credentials(&self, fresh: &PartnerStack) {
        *self.keys_mut() = fresh.keys();
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let k = self.keys();
        match &k.public_key {
            Some(public) => req.basic_auth(public.expose_secret(), Some(k.api_key.expose_secret())),
            None => req.bearer_auth(k.api_key.expose_secret()),
        }
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

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ConnectorError> {
        let resp = crate::connector::send(&self.pacer, Lane::Call, self.authorize(req)).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(self.pacer.note(classify(status, &headers, &body)));
        }
        serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unreadable PartnerStack response: {e}"))
        })
    }

    pub async fn health(&self) -> Result<(), ConnectorError> {
        self.send(self.http.get(self.url("deals")).query(&[("limit", "1")]))
            .await
            .map(|_| ())
    }

    /// One page of `object` items updated at or after `since_ms`.
    pub async fn read_changes(
        &self,
        object: &str,
        since_ms: i64,
        page: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let mut query = vec![
            (since_param(object), since_ms.to_string()),
            ("limit", api::PAGE_LIMIT.to_string()),
        ];
        if let Some(after) = page {
            query.push(("starting_after", after.to_owned()));
        }
        let body = self
            .send(self.http.get(self.url(object)).query(&query))
            .await?;
        let env: api::Envelope<api::ListPage> = serde_json::from_value(body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected PartnerStack list shape: {e}"))
        })?;
        let (records, rejects, last_key) = page_records(env.data.items);
        Ok(ChangePage {
            records,
            next_page: if env.data.has_more { last_key } else { None },
            rejects,
        })
    }

    /// PATCHes each record by key; every record gets its own result, and the first 429 stops
    /// the loop (the rest are not sent; see [`crate::connector::each_until_pushed_back`]). A write that carries custom
    /// `fields` (an object of the entries prmsync owns) reads the record fresh first and sends
    /// the whole array with those entries merged in (see [`api::merge_custom_fields`]): a PATCH
    /// replaces the array, and the copy polled earlier may be older than a partner's last edit.
    pub async fn write(
        &self,
        object: &str,
        writes: &[WriteRequest],
    ) -> Vec<Result<WriteAck, ConnectorError>> {
        crate::connector::each_until_pushed_back(writes, |w| self.patch(object, w)).await
    }

    async fn patch(&self, object: &str, w: &WriteRequest) -> Result<WriteAck, ConnectorError> {
        let url = self.url(&format!("{object}/{}", urlencode(&w.key)));
        let mut body = w.fields.clone();
        if let Some(Value::Object(owned)) = w.fields.get("fields") {
            let fresh = self.send(self.http.get(url.clone())).await?;
            body.insert(
                "fields".into(),
                api::merge_custom_fields(fresh.pointer("/data/fields"), owned),
            );
        }
        self.send(self.http.patch(url).json(&Value::Object(body)))
            .await
            .map(|v| WriteAck {
                id: v
                    .pointer("/data/key")
                    .and_then(Value::as_str)
                    .unwrap_or(&w.key)
                    .to_owned(),
                created: false,
            })
    }
}

/// The list filter for "changed at or after": `min_updated`, except on `actions`, whose list
/// documents only `min_created` and `max_created` (an action is a recorded event).
fn since_param(object: &str) -> &'static str {
    match object {
        "actions" => "min_created",
        _ => "min_updated",
    }
}

/// A list page's items as records (oldest first), the items without a key or a modification
/// time as rejects, and the last key in the API's order (the `starting_after` cursor).
fn page_records(
    items: Vec<serde_json::Map<String, Value>>,
) -> (Vec<Record>, Vec<Reject>, Option<String>) {
    let mut records = Vec::with_capacity(items.len());
    let mut rejects = Vec::new();
    let mut last_key = None;
    for item in items {
        let key = item.get("key").and_then(Value::as_str).map(str::to_owned);
        if let Some(k) = &key {
            last_key = Some(k.clone());
        }
        let modified_ms = item
            .get("updated_at")
            .or_else(|| item.get("created_at"))
            .and_then(Value::as_i64);
        match (key, modified_ms) {
            (Some(id), Some(modified_ms)) => records.push(Record {
                id,
                modified_ms,
                fields: item,
            }),
            (id, _) => {
                let reason = if id.is_none() {
                    "a PartnerStack item has no key"
                } else {
                    "a PartnerStack item has no updated_at or created_at (epoch ms)"
                };
                rejects.push(Reject {
                    id,
                    raw: Value::Object(item),
                    reason: reason.into(),
                });
            }
        }
    }
    records.sort_by(|a, b| (a.modified_ms, &a.id).cmp(&(b.modified_ms, &b.id)));
    (records, rejects, last_key)
}

fn urlencode(s: &str) -> String {
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

    /// An item without a key or a time is a reject; the others are read and paging goes on.
    #[test]
    fn items_without_key_or_time_are_rejects_and_the_rest_are_read() {
        let items = [
            json!({"key": "d2", "updated_at": 20}),
            json!({"name": "no key", "updated_at": 15}),
            json!({"key": "d3"}),
            json!({"key": "d1", "created_at": 10}),
        ]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let (records, rejects, last) = page_records(items);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["d1", "d2"]);
        assert_eq!(rejects.len(), 2);
        assert_eq!(rejects[0].id, None);
        assert_eq!(rejects[0].raw["name"], "no key");
        assert_eq!(rejects[1].id.as_deref(), Some("d3"));
        assert!(rejects[1].reason.contains("updated_at"));
        assert_eq!(
            last.as_deref(),
            Some("d1"),
            "the cursor is the last key in API order"
        );
    }
}
