//! Salesforce (CRM) connector: OAuth sessions, SOQL on `SystemModstamp` with `nextRecordsUrl`
//! paging, getDeleted, sObject Collections upsert by external id, and Salesforce's error array.

pub mod api;
pub mod auth;
mod convert;
mod delete;
pub mod describe;
mod facts;
pub mod keyset;
mod partners;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::tokens::TokenStore;
use super::{
    ChangePage, ConnectorError, Deletion, MatchCandidate, MatchMap, WriteAck, WriteRequest,
    group_matches, transport,
};
use crate::model::Record;
pub use auth::{Grant, Session};

/// How long to wait after `REQUEST_LIMIT_EXCEEDED` when Salesforce names no time (the daily
/// allocation is a rolling 24 hours, so short retries only burn what is left).
const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);

/// Values per `IN (...)` in one match query, and pages read per query.
const MATCH_VALUES: usize = 100;
const MATCH_PAGES: usize = 5;

/// A Salesforce REST client for one org.
#[derive(Debug, Clone)]
pub struct Salesforce {
    inner: Arc<Inner>,
    /// Every request spends from the org's budget and respects its holds.
    pacer: crate::connector::Pacer,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    auth: auth::Authenticator,
    limits: Mutex<Option<api::LimitInfo>>,
}

impl Salesforce {
    /// `login_url` is `https://login.salesforce.com`, `https://test.salesforce.com` or My Domain;
    /// the API host comes from the token response's `instance_url`.
    pub fn new(
        http: reqwest::Client,
        login_url: &Url,
        grant: Grant,
        tokens: Option<Arc<dyn TokenStore>>,
    ) -> Self {
        Salesforce {
            inner: Arc::new(Inner {
                auth: auth::Authenticator::new(http.clone(), login_url, grant, tokens),
                http,
                limits: Mutex::new(None),
            }),
            pacer: crate::connector::Pacer::documented(crate::model::SystemKind::Salesforce),
        }
    }

    /// The pacer every request goes through.
    pub fn pacer(&self) -> &crate::connector::Pacer {
        &self.pacer
    }

    /// Paces requests with `pacer` (another edition's budget).
    pub fn with_pacer(mut self, pacer: crate::connector::Pacer) -> Self {
        self.pacer = pacer;
        self
    }

    /// A digest of the configured credential, to tell whether a reload brings a new one.
    pub fn credential_fingerprint(&self) -> String {
        self.inner.auth.credential_fingerprint()
    }

    /// Uses `fresh`'s credential from now on (every clone of this client); the current session
    /// is dropped.
    pub async fn adopt_credentials(&self, fresh: &Salesforce) {
        self.inner
            .auth
            .replace_grant(fresh.inner.auth.grant())
            .await;
    }

    /// The API usage Salesforce reported on the last response (`Sforce-Limit-Info`).
    pub fn limits(&self) -> Option<api::LimitInfo> {
        *self.inner.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request built against the current session. An `INVALID_SESSION_ID` answer
    /// refreshes the session once (shared with concurrent callers) and sends again.
    async fn call<F>(&self, build: F) -> Result<(StatusCode, String), ConnectorError>
    where
        F: Fn(&reqwest::Client, &Url) -> reqwest::RequestBuilder,
    {
        let mut session = self.inner.auth.session().await?;
        let mut renewed = false;
        loop {
            let resp = crate::connector::send(
                &self.pacer,
                crate::connector::Lane::Call,
                build(&self.inner.http, &session.instance_url)
                    .bearer_auth(session.access_token.expose_secret()),
            )
            .await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if let Some(l) = headers
                .get("sforce-limit-info")
                .and_then(|v| v.to_str().ok())
                .and_then(api::LimitInfo::parse)
            {
                *self.inner.limits.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
            }
            let body = resp.text().await.map_err(transport)?;
            if status.is_success() {
                return Ok((status, body));
            }
            let expired = status == StatusCode::UNAUTHORIZED
                && error_code(&body).as_deref() == Some("INVALID_SESSION_ID");
            match (expired, renewed) {
                (true, false) => {
                    session = self.inner.auth.renew(session.generation).await?;
                    renewed = true;
                }
                (true, true) => {
                    return Err(ConnectorError::Auth(
                        "Salesforce rejected a freshly issued session; check the connected app's session policies"
                            .into(),
                    ));
                }
                (false, _) => return Err(self.pacer.note(classify(status, &headers, &body))),
            }
        }
    }

    /// Authenticates and reads the org's limits (one cheap call).
    pub async fn health(&self) -> Result<(), ConnectorError> {
        self.call(|http, base| http.get(data_url(base, "limits")))
            .await
            .map(|_| ())
    }

    /// One page of `object` records with `SystemModstamp >= since_ms`, oldest first; `page` is a
    /// `nextRecordsUrl` from the previous page.
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

    /// [`Salesforce::read_changes`] of only the records with a value in `managed_by` (`AND
    /// field != null`), when set. A `nextRecordsUrl` carries the query it continues.
    pub async fn read_changes_with(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
        managed_by: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let after = page.and_then(keyset::parse);
        let (_, body) = match page.filter(|_| after.is_none()) {
            Some(next) => {
                if !next.starts_with("/services/data/") {
                    return Err(ConnectorError::Permanent(format!(
                        "not a Salesforce nextRecordsUrl: {next}"
                    )));
                }
                self.call(|http, base| {
                    http.get(join(base, next))
                        .header("sforce-query-options", batch_size())
                })
                .await?
            }
            None => {
                let mut soql = soql(object, since_ms, fields, managed_by)?;
                if let Some((ms, id)) = after {
                    let cond = keyset::condition(ms, id).ok_or_else(|| {
                        ConnectorError::Permanent(format!("{id:?} is not a Salesforce id"))
                    })?;
                    // Reads on after the keyset position, from its second.
                    soql = soql_from(object, ms, fields, managed_by, &cond)?;
                }
                self.call(|http, base| {
                    http.get(data_url(base, "query"))
                        .query(&[("q", soql.as_str())])
                        .header("sforce-query-options", batch_size())
                })
                .await?
            }
        };
        let resp: api::QueryResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected Salesforce query shape: {e}"))
        })?;
        let (mut records, mut rejects) = (Vec::new(), Vec::new());
        for r in resp.records {
            match to_record(r) {
                Ok(r) => records.push(r),
                Err(r) => rejects.push(r),
            }
        }
        Ok(ChangePage {
            records,
            next_page: if resp.done {
                None
            } else {
                resp.next_records_url
            },
            rejects,
        })
    }

    /// Records of `object` deleted between `start_ms` and `end_ms` (getDeleted; at most 30 days back).
    pub async fn read_deletes(
        &self,
        object: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Deletion>, ConnectorError> {
        check_name(object)?;
        let (start, end) = (api::format_datetime(start_ms), api::format_datetime(end_ms));
        let (_, body) = self
            .call(|http, base| {
                http.get(data_url(base, &format!("sobjects/{object}/deleted/")))
                    .query(&[("start", start.as_str()), ("end", end.as_str())])
            })
            .await?;
        let resp: api::DeletedResponse = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::Transient(format!("unexpected Salesforce getDeleted shape: {e}"))
        })?;
        let mut deletions = resp
            .deleted_records
            .into_iter()
            .map(|d| {
                let deleted_ms = api::parse_datetime(&d.deleted_date).ok_or_else(|| {
                    ConnectorError::Transient(format!("bad deletedDate {}", d.deleted_date))
                })?;
                Ok(Deletion {
                    id: d.id,
                    deleted_ms,
                    merged_into: None,
                })
            })
            .collect::<Result<Vec<_>, ConnectorError>>()?;
        // Merges: the losers of an Account, Contact or Lead merge name their master.
        if delete::MERGEABLE.contains(&object) && !deletions.is_empty() {
            let ids: Vec<String> = deletions.iter().map(|d| d.id.clone()).collect();
            let masters = self.merge_masters(object, &ids).await?;
            for d in &mut deletions {
                d.merged_into = masters.get(&d.id).cloned();
            }
        }
        Ok(deletions)
    }

    /// Match-rule lookup: `SELECT Id, CreatedDate, field FROM object WHERE field IN (...)` per
    /// chunk of values (text comparison in SOQL ignores case), at most `MATCH_PAGES` pages each.
    pub async fn find_matches(
        &self,
        object: &str,
        field: &str,
        values: &[String],
        also: &[String],
    ) -> Result<MatchMap, ConnectorError> {
        let mut found = Vec::new();
        for chunk in values.chunks(MATCH_VALUES) {
            let q = match_soql(object, field, also, chunk)?;
            let (_, mut body) = self
                .call(|http, base| {
                    http.get(data_url(base, "query"))
                        .query(&[("q", q.as_str())])
                })
                .await?;
            for page in 0..MATCH_PAGES {
                let resp: api::QueryResponse = serde_json::from_str(&body).map_err(|e| {
                    ConnectorError::Transient(format!("unexpected Salesforce query shape: {e}"))
                })?;
                for mut fields in resp.records {
                    fields.remove("attributes");
                    let Some(id) = fields.get("Id").and_then(Value::as_str).map(str::to_owned)
                    else {
                        continue;
                    };
                    let created_ms = fields
                        .get("CreatedDate")
                        .and_then(Value::as_str)
                        .and_then(api::parse_datetime)
                        .unwrap_or(i64::MAX);
                    found.push(MatchCandidate {
                        id,
                        created_ms,
                        fields,
                    });
                }
                let next = match (resp.done, resp.next_records_url) {
                    (false, Some(n)) if n.starts_with("/services/data/") => n,
                    _ => break,
                };
                if page + 1 == MATCH_PAGES {
                    tracing::warn!(
                        object,
                        field,
                        "match query hit its page bound; later matches are left out"
                    );
                    break;
                }
                body = self.call(|http, base| http.get(join(base, &next))).await?.1;
            }
        }
        Ok(group_matches(field, values, found))
    }

    /// Upserts by external id with sObject Collections (200 per call); one result per record.
    pub async fn write(
        &self,
        object: &str,
        writes: &[WriteRequest],
    ) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
        check_name(object)?;
        let mut out: Vec<Option<Result<WriteAck, ConnectorError>>> = vec![None; writes.len()];
        // Collections upsert names one external-id field per call: group by it, keep input order.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let field = match (&w.id_property, &w.target_id) {
                (Some(p), _) => p.clone(),
                (None, Some(_)) => "Id".to_owned(),
                (None, None) => {
                    out[i] = Some(Err(ConnectorError::Permanent(
                        "no external-id field to upsert on; set target.external_id in the mapping"
                            .into(),
                    )));
                    continue;
                }
            };
            match groups.iter_mut().find(|(f, _)| *f == field) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((field, vec![i])),
            }
        }
        // A record refused for the org's request limit holds the whole system, like a 403
        // `REQUEST_LIMIT_EXCEEDED` answer does: the chunks after it are not sent.
        let mut held: Option<ConnectorError> = None;
        for (field, idx) in groups {
            check_name(&field)?;
            for chunk in idx.chunks(api::MAX_COLLECTION) {
                if let Some(e) = &held {
                    for &i in chunk {
                        out[i] = Some(Err(e.clone()));
                    }
                    continue;
                }
                let records = chunk
                    .iter()
                    .map(|&i| upsert_record(object, &field, &writes[i]))
                    .collect();
                let body = api::CollectionUpsert {
                    all_or_none: false,
                    records,
                };
                let path = format!("composite/sobjects/{object}/{field}");
                let (_, text) = self
                    .call(|http, base| http.patch(data_url(base, &path)).json(&body))
                    .await?;
                let results: Vec<api::UpsertResult> = serde_json::from_str(&text).map_err(|e| {
                    ConnectorError::Transient(format!("unexpected Salesforce upsert shape: {e}"))
                })?;
                for (n, &i) in chunk.iter().enumerate() {
                    out[i] = Some(match results.get(n) {
                        Some(r) => upsert_outcome(r),
                        // No answer for this record: unknown outcome; the upsert is safe to repeat.
                        None => Err(ConnectorError::Transient(format!(
                            "Salesforce returned no result for {}",
                            writes[i].key
                        ))),
                    });
                }
                held = chunk
                    .iter()
                    .filter_map(|&i| out[i].as_ref()?.as_ref().err())
                    .find(|e| e.is_back_pressure())
                    .map(|e| self.pacer.note(e.clone()));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ConnectorError::Transient("not sent".into()))))
            .collect())
    }

    /// Upserts one record by external id (`PATCH /sobjects/{SObject}/{field}/{value}`): 201
    /// created, 200/204 updated, 300 several matches (a conflict for the operator).
    pub async fn upsert_one(
        &self,
        object: &str,
        field: &str,
        value: &str,
        fields: &Map<String, Value>,
    ) -> Result<WriteAck, ConnectorError> {
        check_name(object)?;
        check_name(field)?;
        let path = format!("sobjects/{object}/{field}/{}", encode(value));
        let mut body = fields.clone();
        body.remove(field);
        body.remove("Id");
        let (status, text) = self
            .call(|http, base| http.patch(data_url(base, &path)).json(&body))
            .await?;
        let id = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| value.to_owned());
        Ok(WriteAck {
            id,
            created: status == StatusCode::CREATED,
        })
    }
}

fn batch_size() -> String {
    format!("batchSize={}", api::QUERY_BATCH_SIZE)
}

fn data_url(base: &Url, rest: &str) -> Url {
    join(
        base,
        &format!("/services/data/{}/{}", api::API_VERSION, rest),
    )
}

/// `base` (the instance URL) with `path_and_query` (a path, perhaps with a query string).
fn join(base: &Url, path_and_query: &str) -> Url {
    let mut u = base.clone();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    u.set_path(&format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    ));
    u.set_query(query);
    u
}

/// SOQL identifiers: letters, digits, `_` and `.` only (nothing the query could be bent with).
fn check_name(name: &str) -> Result<(), ConnectorError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::Permanent(format!(
            "{name:?} is not a Salesforce object or field name"
        )))
    }
}

/// `SELECT Id, SystemModstamp, … FROM object WHERE SystemModstamp >= t [AND managed != null]
/// ORDER BY SystemModstamp, Id`.
pub fn soql(
    object: &str,
    since_ms: i64,
    fields: &[String],
    managed_by: Option<&str>,
) -> Result<String, ConnectorError> {
    check_name(object)?;
    let mut cols = vec!["Id".to_owned(), api::MODSTAMP.to_owned()];
    for f in fields {
        check_name(f)?;
        if !cols.iter().any(|c| c.eq_ignore_ascii_case(f)) {
            cols.push(f.clone());
        }
    }
    let managed = match managed_by {
        Some(f) => {
            check_name(f)?;
            format!(" AND {f} != null")
        }
        None => String::new(),
    };
    Ok(format!(
        "SELECT {} FROM {object} WHERE {} >= {}{managed} ORDER BY {} ASC, Id ASC",
        cols.join(", "),
        api::MODSTAMP,
        api::soql_datetime(since_ms),
        api::MODSTAMP
    ))
}

/// [`soql`] from `since_ms`, with `extra` ANDed to its condition.
fn soql_from(
    object: &str,
    since_ms: i64,
    fields: &[String],
    managed_by: Option<&str>,
    extra: &str,
) -> Result<String, ConnectorError> {
    let q = soql(object, since_ms, fields, managed_by)?;
    Ok(q.replacen(" ORDER BY ", &format!(" AND {extra} ORDER BY "), 1))
}

/// `SELECT Id, CreatedDate, field, also… FROM object WHERE field IN ('v', …) ORDER BY CreatedDate,
/// Id`, with each value escaped as a SOQL string literal.
pub fn match_soql(
    object: &str,
    field: &str,
    also: &[String],
    values: &[String],
) -> Result<String, ConnectorError> {
    check_name(object)?;
    let mut cols = vec!["Id".to_owned(), "CreatedDate".to_owned()];
    for f in std::iter::once(field).chain(also.iter().map(String::as_str)) {
        check_name(f)?;
        if !cols.iter().any(|c| c.eq_ignore_ascii_case(f)) {
            cols.push(f.to_owned());
        }
    }
    let list = values
        .iter()
        .map(|v| soql_string(v))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "SELECT {} FROM {object} WHERE {field} IN ({list}) ORDER BY CreatedDate ASC, Id ASC",
        cols.join(", ")
    ))
}

/// A SOQL string literal: backslash, quotes and control characters escaped.
fn soql_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A query row as a record; one without an Id or a readable `SystemModstamp` is a reject.
fn to_record(mut fields: Map<String, Value>) -> Result<Record, super::Reject> {
    fields.remove("attributes");
    let id = fields.get("Id").and_then(Value::as_str).map(str::to_owned);
    let modified_ms = fields
        .get(api::MODSTAMP)
        .and_then(Value::as_str)
        .and_then(api::parse_datetime);
    match (id, modified_ms) {
        (Some(id), Some(modified_ms)) => Ok(Record {
            id,
            modified_ms,
            fields,
        }),
        (id, _) => Err(super::Reject {
            reason: match &id {
                None => "a Salesforce record has no Id".to_owned(),
                Some(id) => format!("Salesforce record {id} has no SystemModstamp"),
            },
            id,
            raw: Value::Object(fields),
        }),
    }
}

fn upsert_record(object: &str, field: &str, w: &WriteRequest) -> Map<String, Value> {
    let mut rec = Map::new();
    rec.insert("attributes".into(), serde_json::json!({ "type": object }));
    for (k, v) in &w.fields {
        if k != "Id" {
            rec.insert(k.clone(), v.clone());
        }
    }
    let key = if field == "Id" {
        w.target_id.clone().unwrap_or_else(|| w.key.clone())
    } else {
        w.key.clone()
    };
    rec.insert(field.to_owned(), Value::String(key));
    rec
}

fn upsert_outcome(r: &api::UpsertResult) -> Result<WriteAck, ConnectorError> {
    if r.success {
        return r
            .id
            .clone()
            .map(|id| WriteAck {
                id,
                created: r.created.unwrap_or(false),
            })
            .ok_or_else(|| ConnectorError::Transient("a successful upsert without an id".into()));
    }
    let detail = r
        .errors
        .iter()
        .map(|e| {
            if e.fields.is_empty() {
                format!("{}: {}", e.status_code, e.message)
            } else {
                format!("{}: {} ({})", e.status_code, e.message, e.fields.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let code = r.errors.first().map(|e| e.status_code.as_str());
    Err(match code {
        Some("DUPLICATE_EXTERNAL_ID") => ConnectorError::Conflict(detail),
        Some("REQUEST_LIMIT_EXCEEDED") => ConnectorError::RateLimited {
            retry_after: DAILY_LIMIT_WAIT,
            detail,
        },
        Some("UNABLE_TO_LOCK_ROW") | Some("SERVER_UNAVAILABLE") => {
            ConnectorError::Transient(detail)
        }
        _ => ConnectorError::Permanent(detail),
    })
}

/// The first `errorCode` of a Salesforce error array, if the body is one.
fn error_code(body: &str) -> Option<String> {
    serde_json::from_str::<Vec<api::ApiError>>(body)
        .ok()?
        .into_iter()
        .next()
        .map(|e| e.error_code)
}

/// Salesforce's statuses and error codes as typed errors: `REQUEST_LIMIT_EXCEEDED` (403) is a rate
/// limit, 300 (several external-id matches) a conflict; the rest as every connector does.
pub fn classify(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> ConnectorError {
    let errors: Vec<api::ApiError> = serde_json::from_str(body).unwrap_or_default();
    let code = errors.first().map(|e| e.error_code.as_str()).unwrap_or("");
    let detail = match errors.first() {
        Some(e) => format!("HTTP {} {}: {}", status.as_u16(), e.error_code, e.message),
        None => format!("HTTP {}", status.as_u16()),
    };
    match (status.as_u16(), code) {
        (_, "REQUEST_LIMIT_EXCEEDED") => ConnectorError::RateLimited {
            retry_after: super::retry_after(headers).unwrap_or(DAILY_LIMIT_WAIT),
            detail,
        },
        (300, _) => ConnectorError::Conflict(format!(
            "the external id matches several records; merge them or fix the ids ({})",
            super::snippet(body)
        )),
        (_, "UNABLE_TO_LOCK_ROW") | (_, "SERVER_UNAVAILABLE") => ConnectorError::Transient(detail),
        _ => super::classify(status, headers, body),
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
    use reqwest::header::HeaderMap;

    #[test]
    fn classifies_salesforce_errors() {
        let h = HeaderMap::new();
        let c = |s: u16, body: &str| classify(StatusCode::from_u16(s).unwrap(), &h, body);
        let limit =
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        assert!(
            matches!(c(403, limit), ConnectorError::RateLimited { retry_after, .. } if retry_after == DAILY_LIMIT_WAIT)
        );
        let session =
            r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
        assert!(matches!(c(401, session), ConnectorError::Auth(_)));
        assert!(matches!(
            c(
                300,
                r#"["/services/data/v62.0/sobjects/Opportunity/006A","/services/data/v62.0/sobjects/Opportunity/006B"]"#
            ),
            ConnectorError::Conflict(_)
        ));
        let bad = r#"[{"message":"No such column 'Nope'","errorCode":"INVALID_FIELD"}]"#;
        assert!(matches!(c(400, bad), ConnectorError::Permanent(m) if m.contains("INVALID_FIELD")));
        assert!(matches!(c(503, "<html>"), ConnectorError::Transient(_)));
        assert_eq!(error_code(session).as_deref(), Some("INVALID_SESSION_ID"));
        assert_eq!(error_code("<html>"), None);
    }

    #[test]
    fn builds_soql_and_refuses_injection() {
        let q = soql("Opportunity", 0, &["Name".into(), "Id".into()], None).unwrap();
        assert_eq!(
            q,
            "SELECT Id, SystemModstamp, Name FROM Opportunity WHERE SystemModstamp >= 1970-01-01T00:00:00Z ORDER BY SystemModstamp ASC, Id ASC"
        );
        let managed = soql("Opportunity", 0, &[], Some("PRM_Deal_Id__c")).unwrap();
        assert_eq!(
            managed,
            "SELECT Id, SystemModstamp FROM Opportunity WHERE SystemModstamp >= 1970-01-01T00:00:00Z AND PRM_Deal_Id__c != null ORDER BY SystemModstamp ASC, Id ASC"
        );
        assert!(soql("Opportunity", 0, &["Name FROM User--".into()], None).is_err());
        assert!(soql("Opportunity", 0, &[], Some("x != null OR Id")).is_err());
    }

    #[test]
    fn builds_match_soql_with_escaped_values() {
        let q = match_soql(
            "Account",
            "Website",
            &["PRM_Partner_Key__c".into()],
            &["acme.example".into(), "o'brien\\".into()],
        )
        .unwrap();
        assert_eq!(
            q,
            "SELECT Id, CreatedDate, Website, PRM_Partner_Key__c FROM Account WHERE Website IN ('acme.example', 'o\\'brien\\\\') ORDER BY CreatedDate ASC, Id ASC"
        );
        assert!(match_soql("Account", "Website) OR (Name", &[], &[]).is_err());
        assert!(match_soql("Account", "Website", &["Name--".into()], &[]).is_err());
    }

    #[test]
    fn joins_next_records_url_with_its_query() {
        let base = Url::parse("https://na1.example.my.salesforce.com").unwrap();
        let u = join(&base, "/services/data/v62.0/query/01gX-2000?x=1");
        assert_eq!(
            u.as_str(),
            "https://na1.example.my.salesforce.com/services/data/v62.0/query/01gX-2000?x=1"
        );
    }
}
