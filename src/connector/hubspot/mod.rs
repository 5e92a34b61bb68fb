//! HubSpot (CRM) connector: private-app token or OAuth (refreshed ahead of `expires_in`), search
//! on `hs_lastmodifieddate` with opaque `after` paging and window moves at the 10,000-result cap,
//! batch upsert by `idProperty` and by-id batch update with per-record results (200/207), associations v4, rate-limit headers,
//! and the companies / open direct deals the rules of engagement read (`facts`).

pub mod api;
mod archive;
mod associations;
mod facts;
pub mod limits;
pub mod merges;
mod partners;
mod privacy;
pub mod schema;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{
    ChangePage, ConnectorError, MatchCandidate, MatchMap, Reject, WriteAck, WriteRequest,
    group_matches, transport,
};
use crate::model::Record;
pub use limits::RateLimits;

/// HubSpot's batch endpoints take at most 100 inputs.
pub const MAX_BATCH: usize = 100;
/// Search pages stop at this many results per query; a longer window is read as several.
pub const SEARCH_CAP: usize = 10_000;
/// Pages read per chunk of a match search.
pub const MATCH_PAGES: usize = 5;
/// OAuth access tokens are refreshed this long before `expires_in` runs out.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// An OAuth app installation: tokens come from `POST /oauth/v1/token`.
#[derive(Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Auth {
    PrivateApp(SecretString),
    OAuth {
        client: OAuthClient,
        /// The access token and when (epoch ms) it stops being valid.
        current: tokio::sync::Mutex<Option<(SecretString, i64)>>,
        refreshes: std::sync::atomic::AtomicU64,
    },
}

/// A HubSpot CRM v3 client.
#[derive(Debug, Clone)]
pub struct HubSpot {
    http: reqwest::Client,
    base: Url,
    /// Replaced when a reload loads a new credential (shared by every clone).
    auth: Arc<std::sync::RwLock<Arc<Auth>>>,
    limits: Arc<Mutex<RateLimits>>,
    search_cap: usize,
    /// Every request spends from this token's budget (searches in their own lane: four per
    /// second per token) and respects its holds.
    pacer: crate::connector::Pacer,
}

impl HubSpot {
    /// `base` is the API host, e.g. `https://api.hubapi.com`; `token` a private-app token.
    pub fn new(http: reqwest::Client, base: Url, token: SecretString) -> Self {
        Self::build(http, base, Auth::PrivateApp(token))
    }

    /// A client for an OAuth installation; the access token is refreshed before it expires.
    pub fn with_oauth(http: reqwest::Client, base: Url, client: OAuthClient) -> Self {
        Self::build(
            http,
            base,
            Auth::OAuth {
                client,
                current: tokio::sync::Mutex::new(None),
                refreshes: std::sync::atomic::AtomicU64::new(0),
            },
        )
    }

    fn build(http: reqwest::Client, base: Url, auth: Auth) -> Self {
        HubSpot {
            http,
            base,
            auth: Arc::new(std::sync::RwLock::new(Arc::new(auth))),
            limits: Arc::default(),
            search_cap: SEARCH_CAP,
            pacer: crate::connector::Pacer::documented(crate::model::SystemKind::HubSpot),
        }
    }

    /// The pacer every request goes through.
    pub fn pacer(&self) -> &crate::connector::Pacer {
        &self.pacer
    }

    /// Paces requests with `pacer` (another tier's budget).
    pub fn with_pacer(mut self, pacer: crate::connector::Pacer) -> Self {
        self.pacer = pacer;
        self
    }

    /// One `POST /crm/v3/objects/{object}/search`, paced in the search lane.
    pub(crate) async fn search(
        &self,
        object: &str,
        req: &api::SearchRequest,
    ) -> Result<api::SearchResponse, ConnectorError> {
        let (_, body) = self
            .send_in(
                crate::connector::Lane::Search,
                self.http
                    .post(self.url(&format!("crm/v3/objects/{object}/search")))
                    .json(req),
            )
            .await?;
        serde_json::from_str(&body)
            .map_err(|e| ConnectorError::Transient(format!("unexpected HubSpot search shape: {e}")))
    }

    /// Reads at most `cap` results per search window (HubSpot's cap is 10,000; tests lower it).
    pub fn with_search_cap(mut self, cap: usize) -> Self {
        self.search_cap = cap.max(api::SEARCH_LIMIT as usize);
        self
    }

    /// The rate-limit headers of the last response that carried any.
    pub fn rate_limits(&self) -> RateLimits {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A digest of the configured credential (private-app token, or OAuth client and refresh
    /// token), to tell whether a reload brings a new one.
    pub fn credential_fingerprint(&self) -> String {
        match &*self.auth() {
            Auth::PrivateApp(t) => crate::connector::tokens::fingerprint_of(&[t.expose_secret()]),
            Auth::OAuth { client, .. } => crate::connector::tokens::fingerprint_of(&[
                &client.client_id,
                client.client_secret.expose_secret(),
                client.refresh_token.expose_secret(),
            ]),
        }
    }

    /// Uses `fresh`'s credential from now on (every clone of this client); an OAuth access
    /// token of the old one is dropped.
    pub fn adopt_credentials(&self, fresh: &HubSpot) {
        let new = match &*fresh.auth() {
            Auth::PrivateApp(t) => Auth::PrivateApp(t.clone()),
            Auth::OAuth { client, .. } => Auth::OAuth {
                client: client.clone(),
                current: tokio::sync::Mutex::new(None),
                refreshes: std::sync::atomic::AtomicU64::new(self.token_refreshes()),
            },
        };
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// How many OAuth token refreshes this client made.
    pub fn token_refreshes(&self) -> u64 {
        match &*self.auth() {
            Auth::PrivateApp(_) => 0,
            Auth::OAuth { refreshes, .. } => refreshes.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The bearer token to send: the private-app token, or an OAuth access token refreshed
    /// `REFRESH_MARGIN` before it expires (HubSpot says a 401 is no signal to refresh).
    async fn bearer(&self) -> Result<SecretString, ConnectorError> {
        let auth = self.auth();
        let (client, current, refreshes) = match &*auth {
            Auth::PrivateApp(t) => return Ok(t.clone()),
            Auth::OAuth {
                client,
                current,
                refreshes,
            } => (client, current, refreshes),
        };
        let now = jiff::Timestamp::now().as_millisecond();
        let margin = i64::try_from(REFRESH_MARGIN.as_millis()).unwrap_or(0);
        let mut guard = current.lock().await;
        if let Some((token, expires)) = &*guard
            && now + margin < *expires
        {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose_secret()),
            ("refresh_token", client.refresh_token.expose_secret()),
        ];
        let resp = crate::connector::send_token_request(
            crate::model::SystemKind::HubSpot,
            self.http.post(self.url("oauth/v1/token")).form(&form),
        )
        .await?;
        let status = resp.status();
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                ConnectorError::Transient(format!("HubSpot token endpoint: HTTP {status}"))
            } else {
                ConnectorError::Auth(format!(
                    "HubSpot refused the refresh token (HTTP {status}); reinstall the app"
                ))
            });
        }
        let t: api::TokenResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unreadable HubSpot token response: {e}"))
        })?;
        refreshes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = SecretString::from(t.access_token);
        let expires = now + i64::try_from(t.expires_in).unwrap_or(0) * 1000;
        *guard = Some((token.clone(), expires));
        Ok(token)
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
        self.send_in(crate::connector::Lane::Call, req).await
    }

    /// Sends one request in `lane` of the token's budget; a 429 holds the whole portal for the
    /// wait its `policyName` or `Retry-After` names.
    async fn send_in(
        &self,
        lane: crate::connector::Lane,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), ConnectorError> {
        let token = self.bearer().await?;
        let resp =
            crate::connector::send(&self.pacer, lane, req.bearer_auth(token.expose_secret()))
                .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let seen = RateLimits::from_headers(&headers);
        if !seen.is_empty() {
            *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        }
        let body = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(self.pacer.note(limits::classify(
                status,
                &headers,
                &body,
                jiff::Timestamp::now(),
            )));
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

    /// One page of objects modified at or after `since_ms`, oldest first. The page token is
    /// `{window_start_ms}:{read}:{after}`, where `after` is HubSpot's opaque cursor (never parsed)
    /// and `read` counts the results this window has returned. Each page moves the window to the
    /// last modification time seen (ties are read again; staging dedupes them); `after` is used
    /// only within one modification time, up to the search cap.
    pub async fn read_changes(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        self.read_changes_with(object, since_ms, fields, page, None)
            .await
    }

    /// [`HubSpot::read_changes`] of only the objects that have a value in `managed_by`
    /// (a `HAS_PROPERTY` filter), when set.
    pub async fn read_changes_with(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
        managed_by: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let (window, read, after) = match page {
            None => (since_ms, 0, None),
            Some(p) => parse_page(p)?,
        };
        let mut page = self
            .search_page(object, window, fields, after.as_deref(), managed_by)
            .await?;
        let read = read.saturating_add(page.records.len());
        let last_ms = page.records.last().map(|r| r.modified_ms);
        page.next_page = match (page.next_page.take(), last_ms) {
            // Keyset paging: the next page starts a window at the last modification time read
            // (ties are read again; staging dedupes them). HubSpot's `after` is a position in the
            // results, and a record modified while the read is under way (by sales, or by
            // prmsync's own writers running alongside) moves to the end and shifts every later
            // result back by one: continuing at `after` would skip one. `after` is kept only
            // inside a run of one modification time.
            (Some(_), Some(last)) if last > window => Some(format!("{last}:0:")),
            (after, _) => next_page(window, read, after, last_ms, self.search_cap),
        };
        Ok(page)
    }

    async fn search_page(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
        managed_by: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let mut properties: Vec<String> = fields.to_vec();
        properties.push(api::LAST_MODIFIED.into());
        let merges = merges::mergeable(object);
        if merges {
            properties.push(merges::MERGED_IDS.into());
        }
        properties.sort();
        properties.dedup();
        let mut filters = vec![api::Filter::one(
            api::LAST_MODIFIED,
            "GTE",
            since_ms.to_string(),
        )];
        filters.extend(managed_by.map(|p| api::Filter {
            property_name: p.to_owned(),
            operator: "HAS_PROPERTY".into(),
            value: None,
            values: None,
        }));
        let mut filter_groups = vec![api::FilterGroup { filters }];
        // Survivors of merges lack the managed property until prmsync writes it: read them too.
        if merges && managed_by.is_some() {
            filter_groups.push(merges::survivors_since(since_ms));
        }
        let req = api::SearchRequest {
            filter_groups,
            sorts: vec![
                serde_json::json!({"propertyName": api::LAST_MODIFIED, "direction": "ASCENDING"}),
            ],
            properties,
            limit: Some(api::SEARCH_LIMIT),
            after: page.map(str::to_owned),
        };
        let resp = self.search(object, &req).await?;
        let mut records = Vec::with_capacity(resp.results.len());
        let mut rejects = Vec::new();
        for o in resp.results {
            match to_record(o) {
                Ok(r) => records.push(r),
                Err(r) => rejects.push(r),
            }
        }
        Ok(ChangePage {
            records,
            next_page: resp.paging.and_then(|p| p.next).map(|n| n.after),
            rejects,
        })
    }

    /// Match-rule lookup: one `IN` search per chunk of values (HubSpot compares strings without
    /// case), at most `MATCH_PAGES` pages each; what lies beyond is logged and left out.
    pub async fn find_matches(
        &self,
        object: &str,
        field: &str,
        values: &[String],
        also: &[String],
    ) -> Result<MatchMap, ConnectorError> {
        let mut properties = vec![field.to_owned(), api::CREATED.to_owned()];
        properties.extend(also.iter().cloned());
        let mut found = Vec::new();
        for chunk in values.chunks(api::MAX_FILTER_VALUES) {
            let mut after: Option<String> = None;
            for page in 0..MATCH_PAGES {
                let req = api::SearchRequest {
                    filter_groups: vec![api::FilterGroup {
                        filters: vec![api::Filter {
                            property_name: field.to_owned(),
                            operator: "IN".into(),
                            value: None,
                            values: Some(chunk.iter().map(|v| v.to_lowercase()).collect()),
                        }],
                    }],
                    sorts: vec![
                        serde_json::json!({"propertyName": api::CREATED, "direction": "ASCENDING"}),
                    ],
                    properties: properties.clone(),
                    limit: Some(api::SEARCH_LIMIT),
                    after: after.take(),
                };
                let resp = self.search(object, &req).await?;
                found.extend(resp.results.into_iter().map(|o| {
                    let created_ms = o
                        .created_at
                        .as_deref()
                        .or(o.properties.get(api::CREATED).and_then(Value::as_str))
                        .and_then(parse_time)
                        .unwrap_or(i64::MAX);
                    MatchCandidate {
                        id: o.id,
                        created_ms,
                        fields: o.properties,
                    }
                }));
                after = resp.paging.and_then(|p| p.next).map(|n| n.after);
                if after.is_none() {
                    break;
                }
                if page + 1 == MATCH_PAGES {
                    tracing::warn!(
                        object,
                        field,
                        "match search hit its page bound; later matches are left out"
                    );
                }
            }
        }
        Ok(group_matches(field, values, found))
    }

    /// Writes a batch: records with an external id (`id_property`) by `batch/upsert`, records
    /// that link a known object (no `id_property`: `target_id`, or the key, is the object id) by
    /// the documented by-id `batch/update`. A 207 gives per-record errors; the rest succeed.
    pub async fn write(
        &self,
        object: &str,
        writes: &[WriteRequest],
    ) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
        let (upserts, updates): (Vec<usize>, Vec<usize>) =
            (0..writes.len()).partition(|&i| writes[i].id_property.is_some());
        let mut out: Vec<Option<Result<WriteAck, ConnectorError>>> = vec![None; writes.len()];
        for (idxs, endpoint) in [(&upserts, "upsert"), (&updates, "update")] {
            if idxs.is_empty() {
                continue;
            }
            let part: Vec<WriteRequest> = idxs.iter().map(|&i| writes[i].clone()).collect();
            let results = match self.batch(object, endpoint, &part).await {
                Ok(r) => r,
                // Nothing was written yet: the whole call failed.
                Err(e) if out.iter().all(Option::is_none) => return Err(e),
                // The upserts were sent and their results stand; the updates failed as a whole.
                Err(e) => idxs.iter().map(|_| Err(e.clone())).collect(),
            };
            for (&i, r) in idxs.iter().zip(results) {
                out[i] = Some(r);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ConnectorError::Transient("not sent".into()))))
            .collect())
    }

    /// One `batch/{endpoint}` call (`upsert` or `update`), results matched to `writes`.
    async fn batch(
        &self,
        object: &str,
        endpoint: &str,
        writes: &[WriteRequest],
    ) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
        let inputs = writes
            .iter()
            .map(|w| api::UpsertInput {
                id: upsert_id(w).to_owned(),
                id_property: w.id_property.clone(),
                properties: stringify(&w.fields),
            })
            .collect();
        let url = self.url(&format!("crm/v3/objects/{object}/batch/{endpoint}"));
        let (_, body) = self
            .send(self.http.post(url).json(&api::BatchUpsert { inputs }))
            .await?;
        let resp: api::BatchResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected HubSpot batch shape: {e}"))
        })?;
        Ok(match_results(writes, resp))
    }
}

impl HubSpot {
    /// Associates pairs of objects with the default type (v4 `batch/associate/default`), e.g.
    /// deals with companies. One result per pair: a pair HubSpot did not confirm gets its error.
    pub async fn associate(
        &self,
        from_type: &str,
        to_type: &str,
        pairs: &[(String, String)],
    ) -> Result<Vec<Result<(), ConnectorError>>, ConnectorError> {
        let body = api::AssociateDefault {
            inputs: pairs
                .iter()
                .map(|(f, t)| api::AssociationPair {
                    from: api::ObjectId { id: f.clone() },
                    to: api::ObjectId { id: t.clone() },
                })
                .collect(),
        };
        let url = self.url(&format!(
            "crm/v4/associations/{from_type}/{to_type}/batch/associate/default"
        ));
        let (_, text) = self.send(self.http.post(url).json(&body)).await?;
        let resp: Value = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::Transient(format!("unexpected HubSpot associations shape: {e}"))
        })?;
        let done = |f: &str, t: &str| {
            resp["results"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    id_str(&r["from"]["id"]) == Some(f.to_owned())
                        && id_str(&r["to"]["id"]) == Some(t.to_owned())
                })
            })
        };
        let message = resp["errors"][0]["message"]
            .as_str()
            .unwrap_or("HubSpot did not confirm the association")
            .to_owned();
        Ok(pairs
            .iter()
            .map(|(f, t)| {
                if done(f, t) {
                    Ok(())
                } else {
                    Err(ConnectorError::Permanent(format!(
                        "{from_type} {f} -> {to_type} {t}: {message}"
                    )))
                }
            })
            .collect())
    }
}

/// The id an upsert names: the external id, or (no `id_property`) the HubSpot object id, which a
/// write linking a matched record carries in `target_id`.
fn upsert_id(w: &WriteRequest) -> &str {
    match (&w.id_property, &w.target_id) {
        (None, Some(t)) => t,
        _ => &w.key,
    }
}

fn id_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a page token `{window}:{read}:{after}` (or the older `{window}:{after}`).
fn parse_page(p: &str) -> Result<(i64, usize, Option<String>), ConnectorError> {
    let bad = || ConnectorError::Permanent(format!("not a HubSpot page token: {p}"));
    let mut parts = p.splitn(3, ':');
    let w = parts
        .next()
        .and_then(|w| w.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let (read, after) = match (parts.next(), parts.next()) {
        (Some(read), Some(after)) => (read.parse::<usize>().map_err(|_| bad())?, after),
        (Some(after), None) => (0, after),
        _ => return Err(bad()),
    };
    Ok((w, read, (!after.is_empty()).then(|| after.to_owned())))
}

/// The token of the page after one that brought the window to `read` results: HubSpot's
/// `after` kept as it came, or, when reading on would pass `cap` and the window has moved on
/// (`last_ms` is later than its start), a new window from `last_ms`.
fn next_page(
    window: i64,
    read: usize,
    after: Option<String>,
    last_ms: Option<i64>,
    cap: usize,
) -> Option<String> {
    let after = after?;
    match last_ms {
        Some(last) if read.saturating_add(api::SEARCH_LIMIT as usize) > cap && last > window => {
            Some(format!("{last}:0:"))
        }
        _ => Some(format!("{window}:{read}:{after}")),
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

/// A search result as a record; one without a readable modification time is a reject.
fn to_record(o: api::SimplePublicObject) -> Result<Record, Reject> {
    let modified = o
        .properties
        .get(api::LAST_MODIFIED)
        .and_then(Value::as_str)
        .or(o.updated_at.as_deref())
        .and_then(parse_time);
    match modified {
        Some(modified_ms) => Ok(Record {
            id: o.id,
            modified_ms,
            fields: o.properties,
        }),
        None => Err(Reject {
            reason: format!("HubSpot object {} has no modification time", o.id),
            id: Some(o.id.clone()),
            raw: serde_json::to_value(&o).unwrap_or(Value::Null),
        }),
    }
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
                    || (w.id_property.is_none() && r.id == upsert_id(w))
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
                    .any(|v| v.as_str() == Some(upsert_id(w)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// HubSpot's `after` is opaque (its example is `NTI1Cg%3D%3D`): the window logic counts the
    /// results itself and sends the cursor back unchanged.
    #[test]
    fn opaque_after_cursors_are_kept_and_the_window_moves_only_near_the_cap() {
        let opaque = Some("NTI1Cg%3D%3D".to_owned());
        let next = next_page(1_000, 200, opaque.clone(), Some(5_000), SEARCH_CAP);
        assert_eq!(next.as_deref(), Some("1000:200:NTI1Cg%3D%3D"));
        assert_eq!(
            parse_page("1000:200:NTI1Cg%3D%3D").unwrap(),
            (1_000, 200, Some("NTI1Cg%3D%3D".to_owned()))
        );
        let near = next_page(
            1_000,
            SEARCH_CAP - 100,
            opaque.clone(),
            Some(5_000),
            SEARCH_CAP,
        );
        assert_eq!(near.as_deref(), Some("5000:0:"));
        assert_eq!(parse_page("5000:0:").unwrap(), (5_000, 0, None));
        // All results in one millisecond: the window cannot move, so paging goes on.
        let stuck = next_page(5_000, SEARCH_CAP - 100, opaque, Some(5_000), SEARCH_CAP);
        assert_eq!(stuck.as_deref(), Some("5000:9900:NTI1Cg%3D%3D"));
        assert_eq!(next_page(1_000, 10, None, Some(5_000), SEARCH_CAP), None);
        // Tokens written by the older `{window}:{after}` form still read.
        assert_eq!(
            parse_page("1000:abc").unwrap(),
            (1_000, 0, Some("abc".to_owned()))
        );
        assert!(parse_page("x:1:abc").is_err());
    }

    #[test]
    fn a_result_without_a_modification_time_is_a_reject() {
        let o = |v: serde_json::Value| -> api::SimplePublicObject {
            serde_json::from_value(v).unwrap()
        };
        let good = o(
            serde_json::json!({"id": "1", "properties": {"hs_lastmodifieddate": "2026-01-01T00:00:00Z"}}),
        );
        assert!(to_record(good).is_ok());
        let bad = to_record(o(
            serde_json::json!({"id": "2", "properties": {"dealname": "x"}}),
        ))
        .expect_err("no time");
        assert_eq!(bad.id.as_deref(), Some("2"));
        assert_eq!(bad.raw["properties"]["dealname"], "x");
    }
}
