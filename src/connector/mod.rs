//! Connectors: one folder per vendor system behind one closed enum. Only this module knows vendor
//! wire formats; the rest of prmsync sees [`Record`]s, [`WriteRequest`]s and typed errors.

pub mod hubspot;
pub mod pacer;
pub mod partnerstack;
pub mod reload;
pub mod rest;
pub mod salesforce;
pub mod schema;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::model::{ObjectRef, Record, SystemKind};
pub use pacer::{Lane, Limits, Pacer, Rate};

/// What went wrong talking to a system, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("rate limited; retry after {retry_after:?}: {detail}")]
    RateLimited {
        retry_after: Duration,
        detail: String,
    },
    #[error("temporary failure: {0}")]
    Transient(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("rejected: {0}")]
    Permanent(String),
    /// The write matches several records (Salesforce 300, duplicate external ids): an operator
    /// must merge or fix them; retrying cannot help.
    #[error("conflict: {0}")]
    Conflict(String),
}

impl ConnectorError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectorError::RateLimited { .. } | ConnectorError::Transient(_)
        )
    }

    /// Whether the system pushed back (a rate limit, or a request held back because of one):
    /// no failure of the request itself, so it never counts toward `max_attempts`.
    pub fn is_back_pressure(&self) -> bool {
        matches!(self, ConnectorError::RateLimited { .. })
    }

    /// The wait the system asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// One page of changed records, oldest first where the system can sort.
#[derive(Debug, Clone, Default)]
pub struct ChangePage {
    pub records: Vec<Record>,
    /// Pass back to read the next page; `None` when this was the last.
    pub next_page: Option<String>,
    /// Items of this page that cannot become records (no key, no modification time): returned
    /// raw with the reason, for the dead letters, so one bad item stops only itself.
    pub rejects: Vec<Reject>,
}

/// A list item the connector could not read as a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The item's key, when it has one.
    pub id: Option<String>,
    /// The item as the system sent it.
    pub raw: Value,
    pub reason: String,
}

/// A record to create or update in a system.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The value of the external-id field (upserts), or the record's own key.
    pub key: String,
    /// The field holding `key` in the target, for upserts by external id.
    pub id_property: Option<String>,
    /// The record's id in the system, when already known.
    pub target_id: Option<String>,
    pub fields: Map<String, Value>,
}

/// The field of a delete change that names the record the deleted one was merged into (HubSpot
/// merge events, Salesforce `MasterRecordId`).
pub const MERGED_INTO: &str = "merged_into";

/// A record the system reports as deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    pub deleted_ms: i64,
    /// The surviving record, when the delete is the losing side of a merge.
    pub merged_into: Option<String>,
}

/// The field of a delete change that says a Salesforce Lead was converted: an object of the
/// converted records' ids by object (`Account`, `Contact`, `Opportunity`).
pub const CONVERTED_INTO: &str = "converted_into";

/// A converted Salesforce Lead and the records the conversion produced, by object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub id: String,
    pub converted_ms: i64,
    pub into: std::collections::BTreeMap<String, String>,
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAck {
    pub id: String,
    pub created: bool,
}

/// What the rules of engagement ask the CRM about some customer domains.
#[derive(Debug, Clone, Default)]
pub struct FactsQuery {
    /// Normalised (registrable, lower-case) domains.
    pub domains: Vec<String>,
    /// Company properties to read besides the domain (those the rules' criteria name).
    pub company_fields: Vec<String>,
    /// Whether to read open direct deals on the companies too.
    pub open_deals: bool,
    /// The deal property that marks a deal created from a PRM registration (partner-sourced).
    pub prm_id_property: String,
    /// The company (account) field holding its domain or website (HubSpot `domain`,
    /// Salesforce `Website`); empty means the CRM's usual one.
    pub domain_field: String,
}

/// A CRM company (account) with one of the asked domains.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmCompany {
    pub id: String,
    pub domain: String,
    /// The properties read (`FactsQuery::company_fields`), as the CRM stores them.
    pub fields: Map<String, Value>,
}

/// An open deal without the PRM id property (direct pipeline) on one of the companies.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmDirectDeal {
    pub id: String,
    pub company_id: String,
    /// The company's domain.
    pub domain: String,
    pub stage: String,
}

/// The answer to a [`FactsQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrmFactsRead {
    pub companies: Vec<CrmCompany>,
    pub open_direct_deals: Vec<CrmDirectDeal>,
}

/// An existing record that a match-rule lookup found (see [`Connector::find_matches`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MatchCandidate {
    pub id: String,
    /// When the system created it (epoch ms), so `on_many = "oldest"` can choose.
    pub created_ms: i64,
    pub fields: Map<String, Value>,
}

/// Candidates per looked-up value (compared case-insensitively, as the CRMs' searches do).
pub type MatchMap = HashMap<String, Vec<MatchCandidate>>;

/// Groups found records under the looked-up value their `field` equals, ignoring case.
pub(crate) fn group_matches(
    field: &str,
    values: &[String],
    found: impl IntoIterator<Item = MatchCandidate>,
) -> MatchMap {
    let mut out = MatchMap::new();
    for c in found {
        let Some(have) = c.fields.get(field).and_then(Value::as_str) else {
            continue;
        };
        if let Some(v) = values.iter().find(|v| v.eq_ignore_ascii_case(have.trim())) {
            let list = out.entry(v.clone()).or_default();
            if !list.iter().any(|x| x.id == c.id) {
                list.push(c);
            }
        }
    }
    out
}

/// One partner credited on a CRM deal: the partner's company (account) id in the CRM, the role
/// as the CRM names it, and whether it is the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerRow {
    pub company_id: String,
    pub role: String,
    pub primary: bool,
}

/// The connectors prmsync has. Adding a system adds a variant and a folder.
#[derive(Debug, Clone)]
pub enum Connector {
    PartnerStack(partnerstack::PartnerStack),
    HubSpot(hubspot::HubSpot),
    Salesforce(salesforce::Salesforce),
    Rest(rest::Rest),
}

impl Connector {
    pub fn kind(&self) -> SystemKind {
        match self {
            Connector::PartnerStack(_) => SystemKind::PartnerStack,
            Connector::HubSpot(_) => SystemKind::HubSpot,
            Connector::Salesforce(_) => SystemKind::Salesforce,
            Connector::Rest(_) => SystemKind::Rest,
        }
    }

    /// The pacer all of this connector's requests go through.
    pub fn pacer(&self) -> &Pacer {
        match self {
            Connector::PartnerStack(c) => c.pacer(),
            Connector::HubSpot(c) => c.pacer(),
            Connector::Salesforce(c) => c.pacer(),
            Connector::Rest(c) => c.pacer(),
        }
    }

    /// This connector with a budget of `limits` (a vendor tier with other limits).
    pub fn with_limits(self, limits: Limits) -> Connector {
        let pacer = Pacer::new(self.kind(), limits);
        match self {
            Connector::PartnerStack(c) => Connector::PartnerStack(c.with_pacer(pacer)),
            Connector::HubSpot(c) => Connector::HubSpot(c.with_pacer(pacer)),
            Connector::Salesforce(c) => Connector::Salesforce(c.with_pacer(pacer)),
            Connector::Rest(c) => Connector::Rest(c.with_pacer(pacer)),
        }
    }

    /// Authenticates and makes one cheap call.
    pub async fn health(&self) -> Result<(), ConnectorError> {
        match self {
            Connector::PartnerStack(c) => c.health().await,
            Connector::HubSpot(c) => c.health().await,
            Connector::Salesforce(c) => c.health().await,
            Connector::Rest(c) => c.health().await,
        }
    }

    /// Reads one page of records of `object` modified at or after `since_ms`.
    pub async fn read_changes(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        self.read_managed_changes(object, since_ms, fields, page, None)
            .await
    }

    /// [`Connector::read_changes`], asking only for records that have a value in `managed_by`
    /// (the external-id field prmsync writes) where the system can filter on it: HubSpot's
    /// search (`HAS_PROPERTY`), Salesforce's SOQL (`field != null`). Other systems return every
    /// record; the planner ignores records without the field either way.
    pub async fn read_managed_changes(
        &self,
        object: &str,
        since_ms: i64,
        fields: &[String],
        page: Option<&str>,
        managed_by: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        match self {
            Connector::PartnerStack(c) => c.read_changes(object, since_ms, page).await,
            Connector::HubSpot(c) => {
                c.read_changes_with(object, since_ms, fields, page, managed_by)
                    .await
            }
            Connector::Salesforce(c) => {
                c.read_changes_with(object, since_ms, fields, page, managed_by)
                    .await
            }
            Connector::Rest(c) => c.read_changes(object, since_ms, page).await,
        }
    }

    /// The records merged into `r` that `r` itself names (HubSpot `hs_merged_object_ids`), as
    /// deletes naming `r` as their survivor; empty for systems that report merges otherwise.
    pub fn merged_into(&self, object: &str, r: &Record) -> Vec<Deletion> {
        match self {
            Connector::HubSpot(_) => hubspot::merges::merged_away(object, r),
            _ => Vec::new(),
        }
    }

    /// Whether [`Connector::read_changes`] lists records oldest first (by modification stamp,
    /// then id), so that everything before the newest record read is read: HubSpot's search and
    /// Salesforce's SOQL sort so; PartnerStack lists newest created first, and a REST profile
    /// promises no order.
    pub fn lists_oldest_first(&self) -> bool {
        match self {
            Connector::HubSpot(_) | Connector::Salesforce(_) => true,
            Connector::PartnerStack(_) | Connector::Rest(_) => false,
        }
    }

    /// A page token that reads on after the record (`modified_ms`, `id`) without a vendor cursor,
    /// where the system can (Salesforce: `salesforce/keyset.rs`).
    pub fn keyset_page(&self, modified_ms: i64, id: &str) -> Option<String> {
        match self {
            Connector::Salesforce(_) if !id.is_empty() => {
                Some(salesforce::keyset::token(modified_ms, id))
            }
            _ => None,
        }
    }

    /// Writes a batch; the outer error fails the whole batch, inner ones single records.
    pub async fn write(
        &self,
        object: &str,
        writes: &[WriteRequest],
    ) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
        match self {
            Connector::PartnerStack(c) => Ok(c.write(object, writes).await),
            Connector::HubSpot(c) => c.write(object, writes).await,
            Connector::Salesforce(c) => c.write(object, writes).await,
            Connector::Rest(c) => c.write(object, writes).await,
        }
    }

    /// The most records one write call may carry.
    pub fn max_batch(&self) -> usize {
        match self {
            Connector::PartnerStack(_) => 25,
            Connector::HubSpot(_) => hubspot::MAX_BATCH,
            Connector::Salesforce(_) => salesforce::api::MAX_COLLECTION,
            Connector::Rest(_) => 25,
        }
    }

    /// Companies and open direct deals for some customer domains, for the rules of engagement;
    /// `None` when prmsync does not read them from this system.
    pub async fn crm_facts(
        &self,
        query: &FactsQuery,
    ) -> Option<Result<CrmFactsRead, ConnectorError>> {
        match self {
            Connector::HubSpot(c) => Some(c.crm_facts(query).await),
            Connector::Salesforce(c) => Some(c.crm_facts(query).await),
            Connector::PartnerStack(_) | Connector::Rest(_) => None,
        }
    }

    /// Existing records of `object` whose `field` equals one of `values` (case-insensitive), for
    /// match rules, with `field` and `also` read. Bounded: values are sent in chunks and at most a
    /// few pages are read per chunk. PRM connectors (PartnerStack, REST) are never match targets
    /// and return an empty map.
    pub async fn find_matches(
        &self,
        object: &str,
        field: &str,
        values: &[String],
        also: &[String],
    ) -> Result<MatchMap, ConnectorError> {
        if values.is_empty() {
            return Ok(MatchMap::new());
        }
        match self {
            Connector::HubSpot(c) => c.find_matches(object, field, values, also).await,
            Connector::Salesforce(c) => c.find_matches(object, field, values, also).await,
            Connector::PartnerStack(_) | Connector::Rest(_) => Ok(MatchMap::new()),
        }
    }

    /// Deletes (Salesforce) or archives (HubSpot) records of `object` by their ids, in the
    /// vendor's batches; one result per id. The outer error fails the whole call. The PRM
    /// connectors have no documented delete call and refuse every id.
    pub async fn delete(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<Vec<Result<(), ConnectorError>>, ConnectorError> {
        match self {
            Connector::HubSpot(c) => c.archive(object, ids).await,
            Connector::Salesforce(c) => c.delete(ids).await,
            Connector::PartnerStack(_) | Connector::Rest(_) => Ok(ids
                .iter()
                .map(|id| {
                    Err(ConnectorError::Permanent(format!(
                        "{object} {id}: the {} connector cannot delete records",
                        self.kind()
                    )))
                })
                .collect()),
        }
    }

    /// Associates pairs (from id, to id) of `from_type` and `to_type` records with `kind`
    /// (HubSpot associations v4); one result per pair. Other systems relate records by lookup
    /// fields and refuse every pair.
    pub async fn associate(
        &self,
        from_type: &str,
        to_type: &str,
        kind: &crate::model::AssociationType,
        pairs: &[(String, String)],
    ) -> Result<Vec<Result<(), ConnectorError>>, ConnectorError> {
        match self {
            Connector::HubSpot(c) => c.associate_as(from_type, to_type, kind, pairs).await,
            _ => Ok(pairs
                .iter()
                .map(|_| {
                    Err(ConnectorError::Permanent(format!(
                        "{} has no associations; relate records with a lookup field",
                        self.kind()
                    )))
                })
                .collect()),
        }
    }

    /// Sets the partner credits on a CRM deal (`rules::credit`): Salesforce `Partner` rows (or
    /// the rows of `partner_object`, a custom object), HubSpot deal-to-company labels. Only the
    /// companies in `desired` or `previous` (what was last confirmed) are touched.
    pub async fn set_partners(
        &self,
        deal_object: &str,
        deal_id: &str,
        company_object: &str,
        desired: &[PartnerRow],
        previous: &[PartnerRow],
        partner_object: Option<&crate::rules::PartnerObject>,
    ) -> Result<(), ConnectorError> {
        match self {
            Connector::HubSpot(c) => {
                c.set_partners(deal_object, deal_id, company_object, desired, previous)
                    .await
            }
            Connector::Salesforce(c) => {
                let standard = crate::rules::PartnerObject::standard();
                let object = partner_object.unwrap_or(&standard);
                c.set_partners(deal_id, desired, previous, object).await
            }
            _ => Err(ConnectorError::Permanent(format!(
                "{} is not a CRM: it takes no partner credits",
                self.kind()
            ))),
        }
    }

    /// The live schema of `object` (HubSpot properties, Salesforce describe), one request paced
    /// like any other; `None` for systems prmsync reads no schema of (the PRMs).
    pub async fn read_schema(
        &self,
        object: &str,
    ) -> Option<Result<schema::LiveObject, ConnectorError>> {
        match self {
            Connector::HubSpot(c) => Some(c.read_schema(object).await),
            Connector::Salesforce(c) => Some(c.read_schema(object).await),
            Connector::PartnerStack(_) | Connector::Rest(_) => None,
        }
    }

    /// Leads of `object` converted since `since_ms` (Salesforce); `None` where nothing converts.
    pub async fn read_conversions(
        &self,
        object: &str,
        since_ms: i64,
    ) -> Option<Result<Vec<Converted>, ConnectorError>> {
        match self {
            Connector::Salesforce(c) if object == "Lead" => {
                Some(c.read_conversions(object, since_ms).await)
            }
            _ => None,
        }
    }

    /// Whether [`Connector::delete`] can delete records in this system.
    pub fn deletes(&self) -> bool {
        matches!(self, Connector::HubSpot(_) | Connector::Salesforce(_))
    }

    /// Records of `object` deleted in `[start_ms, end_ms]` (Salesforce getDeleted; HubSpot's
    /// archived listing, from `start_ms` on), for systems that report deletes by polling; `None`
    /// when the system tells deletes only by webhook.
    pub async fn read_deletes(
        &self,
        object: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Option<Result<Vec<Deletion>, ConnectorError>> {
        match self {
            Connector::Salesforce(c) => Some(c.read_deletes(object, start_ms, end_ms).await),
            Connector::HubSpot(c) => Some(c.read_archived(object, start_ms).await),
            Connector::PartnerStack(_) | Connector::Rest(_) => None,
        }
    }
}

/// Sends per-record writes one after another (PartnerStack and REST PRMs take one request per
/// record), stopping at the first answer that pushes back (a rate limit or a refused
/// credential): the records after it are not sent and get that error as their own, so a batch
/// never keeps sending into a 429.
pub(crate) async fn each_until_pushed_back<'w, F, Fut>(
    writes: &'w [WriteRequest],
    mut one: F,
) -> Vec<Result<WriteAck, ConnectorError>>
where
    F: FnMut(&'w WriteRequest) -> Fut,
    Fut: std::future::Future<Output = Result<WriteAck, ConnectorError>>,
{
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        let r = one(w).await;
        let stop = match &r {
            Err(e @ (ConnectorError::RateLimited { .. } | ConnectorError::Auth(_))) => {
                Some(e.clone())
            }
            _ => None,
        };
        out.push(r);
        if let Some(e) = stop {
            out.resize(writes.len(), Err(e));
            break;
        }
    }
    out
}

/// Whether the system's API can change `field` of a record of `object` (PartnerStack deals take
/// only the PATCH body parameters; other systems are not known to refuse a field).
pub fn field_writable(object: &ObjectRef, field: &str) -> bool {
    match (object.system, object.object.as_str()) {
        (SystemKind::PartnerStack, "deals") => partnerstack::api::DEAL_PATCHABLE.contains(&field),
        _ => true,
    }
}

/// The HTTP client every connector uses: rustls with the ring provider, bounded timeouts.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a rustls crypto provider was already installed");
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("prmsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's fixed settings are valid")
}

/// Sends one request to the pacer's system: every connector request goes through here. It waits
/// for the credential's budget ([`Pacer::admit`]: one token per request, in its `lane`), sends
/// nothing while the system is on hold after a 429 (the request fails at once as
/// [`ConnectorError::RateLimited`] with the wait left), and holds the whole system when the
/// answer is a 429 (its `Retry-After`, else a second; the connector's own reading of the answer
/// may lengthen the hold through [`Pacer::note`]). It counts the request in
/// `prmsync_http_client_requests_total` and its time to the response headers in
/// `prmsync_http_client_request_duration_seconds` (by status class; `error` without an answer).
pub async fn send(
    pacer: &Pacer,
    lane: Lane,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ConnectorError> {
    pacer.admit(lane).await?;
    let resp = dispatch(pacer.system(), req).await?;
    if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        pacer.hold(retry_after(resp.headers()).unwrap_or(MIN_HOLD));
    }
    Ok(resp)
}

/// The hold after a 429 that names no wait, until the connector reads the answer.
const MIN_HOLD: Duration = Duration::from_secs(1);

/// Sends and meters one request.
async fn dispatch(
    system: SystemKind,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ConnectorError> {
    let started = std::time::Instant::now();
    let result = req.send().await;
    let status = result.as_ref().ok().map(|r| r.status().as_u16());
    crate::telemetry::meters::meters().http_request(system, status, started.elapsed());
    result.map_err(transport)
}

/// An access-token request (OAuth refresh, JWT bearer grant), metered like [`send`] and also
/// counted in `prmsync_token_refreshes_total` by result. It goes to the authorisation server,
/// which has its own limits, so it is neither paced nor held.
pub async fn send_token_request(
    system: SystemKind,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ConnectorError> {
    let result = dispatch(system, req).await;
    let ok = result.as_ref().is_ok_and(|r| r.status().is_success());
    crate::telemetry::meters::meters().token_refresh(system, ok);
    result
}

/// Turns an error HTTP status and body into a typed error. `body` is cut to keep logs short.
pub fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> ConnectorError {
    let detail = format!("HTTP {}: {}", status.as_u16(), snippet(body));
    match status.as_u16() {
        429 => ConnectorError::RateLimited {
            retry_after: retry_after(headers).unwrap_or(Duration::from_secs(10)),
            detail,
        },
        401 | 403 => ConnectorError::Auth(detail),
        408 | 500..=599 => ConnectorError::Transient(detail),
        _ => ConnectorError::Permanent(detail),
    }
}

/// Reads `Retry-After` in seconds or HTTP-date form.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate(v)?;
    let now = jiff::Timestamp::now();
    Some(
        when.duration_since(now)
            .try_into()
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate(s: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::parse(s).ok().map(|z| z.timestamp())
}

/// A network-level failure: always worth a retry.
pub fn transport(e: reqwest::Error) -> ConnectorError {
    ConnectorError::Transient(e.without_url().to_string())
}

pub(crate) fn snippet(body: &str) -> String {
    let t = body.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn classifies_statuses() {
        let h = HeaderMap::new();
        let c = |s: u16| classify(reqwest::StatusCode::from_u16(s).unwrap(), &h, "x");
        assert!(
            matches!(c(429), ConnectorError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(10))
        );
        assert!(matches!(c(401), ConnectorError::Auth(_)));
        assert!(matches!(c(503), ConnectorError::Transient(_)));
        assert!(matches!(c(400), ConnectorError::Permanent(_)));
        assert!(c(500).is_retryable() && !c(422).is_retryable());
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let v = jiff::fmt::rfc2822::to_string(&later.to_zoned(jiff::tz::TimeZone::UTC)).unwrap();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&v).unwrap());
        let got = retry_after(&h).unwrap();
        assert!(
            got > Duration::from_secs(100) && got <= Duration::from_secs(120),
            "{got:?}"
        );
    }
}
