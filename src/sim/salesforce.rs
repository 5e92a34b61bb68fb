//! Salesforce REST simulator: OAuth token endpoint (refresh with rotation, JWT bearer RS256),
//! expiring sessions, SOQL (`salesforce/soql.rs`: conditions, `LIKE`, computed `IsClosed`) with
//! `nextRecordsUrl` paging (locators expire: `salesforce/locators.rs`), whole-second
//! `SystemModstamp`s, sObject Collections
//! upsert by external id, single upsert (300 on several matches), getDeleted (30 days), `Sforce-Limit-Info`,
//! `REQUEST_LIMIT_EXCEEDED`, and errors as JSON arrays.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::salesforce_table::{Rec, Table};
use super::{Injected, LoggedRequest, SimClock, Turbulence, http_date};

mod describe;
mod lifecycle;
mod locators;
mod merge;
mod objects;
pub mod partners;
pub mod soql;

pub use merge::Conversion;

const V: &str = "v62.0";

/// getDeleted answers for the last 30 days only.
const DELETED_KEPT_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Fields each simulated sObject has, and which are external ids.
struct Describe {
    name: &'static str,
    prefix: &'static str,
    fields: &'static [&'static str],
    external_ids: &'static [&'static str],
    required: &'static [&'static str],
}

const SYSTEM_FIELDS: &[&str] = &[
    "Id",
    "SystemModstamp",
    "LastModifiedDate",
    "CreatedDate",
    "IsDeleted",
];

const OBJECTS: &[Describe] = &[
    Describe {
        name: "Opportunity",
        prefix: "006",
        fields: &[
            "Name",
            "Amount",
            "CloseDate",
            "StageName",
            "Description",
            "AccountId",
            "Loss_Reason__c",
            "PRM_Deal_Id__c",
            "PRM_Partner_Key__c",
            "PRM_Attribution__c",
            "PRM_Contact_Email__c",
            "PRM_Registration_Status__c",
            "PRM_Protected_Until__c",
            // Further fields the shipped opportunity mapping writes (created at install).
            "LeadSource",
            "Partner_Account__c",
            "Registration_Withdrawn__c",
        ],
        external_ids: &["PRM_Deal_Id__c"],
        required: &["Name", "StageName", "CloseDate"],
    },
    Describe {
        name: "Account",
        prefix: "001",
        fields: &[
            "Name",
            "Website",
            "Type",
            "PRM_Partner_Key__c",
            "PRM_Tier__c",
            // A checkbox some orgs keep for accounts the direct team reserves.
            "PRM_Direct_Reserved__c",
            "Phone",
            "BillingCountry",
            "OwnerId",
            // Custom fields the shipped partner-account mapping writes (created at install).
            "Partner_Tier__c",
            "Partner_Status__c",
            "Partner_Since__c",
        ],
        external_ids: &["PRM_Partner_Key__c"],
        required: &["Name"],
    },
    Describe {
        name: "Lead",
        prefix: "00Q",
        fields: &[
            "FirstName",
            "LastName",
            "Company",
            "Email",
            "Status",
            "PRM_Lead_Id__c",
            "PRM_Partner_Key__c",
            // Further fields the shipped lead mapping writes (created at install).
            "LeadSource",
            "Sourcing_Partner__c",
            "Campaign_Name__c",
            "Event_Date__c",
        ],
        external_ids: &["PRM_Lead_Id__c"],
        required: &["LastName", "Company"],
    },
];

/// Fields Salesforce computes: readable and filterable, never written.
/// `MasterRecordId` (set on a merge's deleted losers) and the lead-conversion fields are set by
/// Salesforce itself too.
const COMPUTED: &[(&str, &str)] = &[
    ("Opportunity", "IsClosed"),
    ("Opportunity", "IsWon"),
    ("Account", "MasterRecordId"),
    ("Contact", "MasterRecordId"),
    ("Lead", "MasterRecordId"),
    ("Lead", "IsConverted"),
    ("Lead", "ConvertedDate"),
    ("Lead", "ConvertedAccountId"),
    ("Lead", "ConvertedContactId"),
    ("Lead", "ConvertedOpportunityId"),
];

/// Opportunity stages of the default sales process.
pub const STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];

/// The connected app and user the simulator accepts.
#[derive(Debug, Clone)]
pub struct SalesforceAuth {
    pub client_id: String,
    pub client_secret: String,
    /// The first valid refresh token.
    pub refresh_token: String,
    /// Issue a new refresh token on every refresh and revoke the old one.
    pub rotate: bool,
    /// DER `RSAPublicKey` of the JWT bearer certificate, if that flow is enabled.
    pub jwt_public_key: Option<Vec<u8>>,
    pub username: String,
    /// Access-token lifetime in milliseconds.
    pub token_ttl_ms: i64,
}

/// Counts the tests assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub api_requests: u64,
    pub token_requests: u64,
    pub refresh_grants: u64,
    pub jwt_grants: u64,
    pub invalid_grants: u64,
    pub invalid_sessions: u64,
    pub queries: u64,
    pub collection_upserts: u64,
    pub created: u64,
    pub updated: u64,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, Table>,
    deleted: BTreeMap<String, Vec<(String, i64)>>,
    /// The recycle bin: deleted records by object and id (`IsDeleted` true), for `queryAll`.
    bin: BTreeMap<String, BTreeMap<String, Rec>>,
    next_id: u64,
    refresh_token: String,
    sessions: BTreeMap<String, i64>,
    /// Open query cursors: the result rows, shared with the pages being answered.
    locators: locators::Locators,
    locators_opened: u64,
    page_cap: Option<usize>,
    api_max: u64,
    stats: Stats,
    faults: VecDeque<Injected>,
    log: Vec<LoggedRequest>,
    /// Every SOQL statement answered (or refused), in order.
    soql: Vec<String>,
    /// The org's partner roles (`partners.rs`); `None`: the defaults.
    partner_roles: Option<Vec<String>>,
    /// External ids whose next collection upsert is refused with `REQUEST_LIMIT_EXCEEDED`.
    limited_records: std::collections::BTreeSet<String>,
    /// Every sObject's fields as the org has them now (`describe.rs`).
    schema: describe::Schema,
}

/// A Salesforce org in memory.
#[derive(Debug, Clone)]
pub struct SalesforceSim {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<SimClock>,
    turbulence: Arc<Turbulence>,
    auth: Arc<SalesforceAuth>,
}

impl SalesforceSim {
    pub fn new(auth: SalesforceAuth) -> Self {
        let sim = SalesforceSim {
            inner: Arc::default(),
            clock: Arc::default(),
            turbulence: Arc::default(),
            auth: Arc::new(auth),
        };
        {
            let mut inner = sim.lock();
            inner.refresh_token = sim.auth.refresh_token.clone();
            inner.next_id = 1;
            inner.api_max = 100_000;
            inner.schema = describe::Schema::installed(all_objects());
        }
        sim
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token endpoint and the REST API under `/services`.
    pub fn router(&self) -> Router {
        let data = format!("/services/data/{V}");
        let api = Router::new()
            .route("/services/oauth2/token", post(token))
            .route(&format!("{data}/limits"), get(limits))
            .route(&format!("{data}/query"), get(query))
            .route(&format!("{data}/queryAll"), get(query_all))
            .route(&format!("{data}/query/{{locator}}"), get(query_more))
            .route(
                &format!("{data}/sobjects/{{object}}/deleted/"),
                get(get_deleted),
            )
            .route(
                &format!("{data}/sobjects/{{object}}/deleted"),
                get(get_deleted),
            )
            .route(
                &format!("{data}/sobjects/{{object}}/describe"),
                get(describe::describe),
            )
            .route(
                &format!("{data}/sobjects/{{object}}/{{field}}/{{value}}"),
                patch(upsert_one),
            )
            .route(
                &format!("{data}/composite/sobjects/{{object}}/{{field}}"),
                patch(upsert_collection),
            )
            .route(
                &format!("{data}/composite/sobjects"),
                delete(lifecycle::delete_collection),
            );
        partners::routes(api, &data)
            .layer(middleware::from_fn_with_state(self.clone(), log_and_limit))
            .route("/_sim/requests", get(inspect_requests))
            .route("/_sim/records/{object}", get(inspect_records))
            .with_state(self.clone())
    }

    /// Adds a record as a Salesforce user would; returns its id.
    pub fn insert(&self, object: &str, fields: Map<String, Value>) -> String {
        let now = self.clock.tick();
        let mut inner = self.lock();
        insert_rec(&mut inner, object, fields, now)
    }

    /// Changes a field as a user would (bumps `SystemModstamp`).
    pub fn set_field(&self, object: &str, id: &str, field: &str, value: Value) -> bool {
        let now = self.clock.tick();
        let mut inner = self.lock();
        let Some(table) = inner.objects.get_mut(object) else {
            return false;
        };
        let Some(mut r) = table.get(id).cloned() else {
            return false;
        };
        r.fields.insert(field.into(), value);
        r.modstamp_ms = now;
        table.put(id, r);
        true
    }

    /// Deletes a record (it moves to the recycle bin and shows in getDeleted).
    pub fn delete(&self, object: &str, id: &str) -> bool {
        let now = self.clock.tick();
        let mut inner = self.lock();
        inner
            .objects
            .get(object)
            .is_some_and(|t| t.get(id).is_some())
            && inner.delete_id(id, now).is_ok()
    }

    /// Every record of `object`, with `Id`.
    pub fn records(&self, object: &str) -> Vec<Map<String, Value>> {
        self.lock()
            .objects
            .get(object)
            .map(|m| m.iter().map(|r| r.fields.clone()).collect())
            .unwrap_or_default()
    }

    /// Records of `object` whose `field` equals `value`.
    pub fn find(&self, object: &str, field: &str, value: &str) -> Vec<Map<String, Value>> {
        let mut inner = self.lock();
        let Some(table) = inner.objects.get_mut(object) else {
            return Vec::new();
        };
        let ids = table.find(field, value, false);
        ids.iter()
            .filter_map(|id| table.get(id).map(|r| r.fields.clone()))
            .collect()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Latency and lost answers (see [`Turbulence`]).
    pub fn turbulence(&self) -> &Turbulence {
        &self.turbulence
    }

    /// Every request so far, in arrival order.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// The SOQL statements the simulator was sent, oldest first.
    pub fn soql_log(&self) -> Vec<String> {
        self.lock().soql.clone()
    }

    /// The refresh token that is valid now (changes with every rotation).
    pub fn current_refresh_token(&self) -> String {
        self.lock().refresh_token.clone()
    }

    /// An admin re-authorises the connected app: every refresh token and session so far is
    /// revoked, and `token` is the one valid refresh token.
    pub fn reauthorise(&self, token: &str) {
        let mut inner = self.lock();
        inner.refresh_token = token.to_owned();
        inner.sessions.clear();
    }

    /// The next API requests get these instead of their answers.
    pub fn inject<I: Into<Injected>>(&self, faults: impl IntoIterator<Item = I>) {
        self.lock()
            .faults
            .extend(faults.into_iter().map(Into::into));
    }

    /// Every access token expires now (as after a session timeout).
    pub fn expire_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// Query pages hold at most `n` records (Salesforce may return fewer than the batch size).
    pub fn set_page_cap(&self, n: usize) {
        self.lock().page_cap = Some(n);
    }

    /// Every query locator expires after serving `pages` further pages (as if left idle for 15
    /// minutes); `None` keeps them until they are idle that long or more than 10 are open.
    pub fn expire_locators_after(&self, pages: Option<u32>) {
        self.lock().locators.expire_after(pages);
    }

    /// Query locators refused because they had expired or were dropped.
    pub fn expired_locators(&self) -> u64 {
        self.lock().locators.expired
    }

    /// The next collection upsert of the record whose external id is `value` is refused for it
    /// alone with `REQUEST_LIMIT_EXCEEDED` in its result (the org's limit reached mid-call).
    pub fn limit_record(&self, value: &str) {
        self.lock().limited_records.insert(value.to_owned());
    }

    /// An admin deletes `field` of `object`: writes naming it are refused (`INVALID_FIELD`) and
    /// `describe` no longer lists it. False if there is no such field.
    pub fn remove_field(&self, object: &str, field: &str) -> bool {
        self.lock().schema.remove(object, field)
    }

    /// An admin renames `from` of `object` to `to`.
    pub fn rename_field(&self, object: &str, from: &str, to: &str) -> bool {
        self.lock().schema.rename(object, from, to)
    }

    /// Field-level security makes `field` read-only (`INVALID_FIELD_FOR_INSERT_UPDATE`), or
    /// writable again.
    pub fn set_field_read_only(&self, object: &str, field: &str, read_only: bool) -> bool {
        self.lock().schema.set_read_only(object, field, read_only)
    }

    /// An admin deactivates (or activates) one value of a picklist; a restricted picklist then
    /// refuses it (`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`).
    pub fn set_picklist_value(&self, object: &str, field: &str, value: &str, active: bool) -> bool {
        self.lock()
            .schema
            .set_picklist_value(object, field, value, active)
    }

    /// Every schema change undone: the org as prmsync's install left it.
    pub fn restore_schema(&self) {
        self.lock().schema = describe::Schema::installed(all_objects());
    }

    /// The org's daily API allocation; requests beyond it get 403 `REQUEST_LIMIT_EXCEEDED`.
    pub fn set_api_limit(&self, max: u64) {
        self.lock().api_max = max;
    }

    /// Checks the bearer session and injected faults; counts API usage.
    #[allow(clippy::result_large_err)] // axum responses are the natural error here
    fn gate(&self, headers: &HeaderMap) -> Result<(), Response> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut inner = self.lock();
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = token
            .and_then(|t| inner.sessions.get(t))
            .is_some_and(|exp| *exp > now);
        if !valid {
            inner.stats.invalid_sessions += 1;
            return Err(errors(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            ));
        }
        inner.stats.api_requests += 1;
        if inner.stats.api_requests > inner.api_max {
            return Err(errors(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            ));
        }
        match inner.faults.pop_front() {
            None => Ok(()),
            Some(Injected::Malformed) => {
                Err((StatusCode::OK, "<html>upstream proxy page</html>").into_response())
            }
            Some(Injected::Fault(f)) => {
                let mut r = fault_response(f.status);
                if let Some(s) = f.retry_after {
                    r.headers_mut().insert("retry-after", s.into());
                }
                Err(r)
            }
            Some(Injected::RetryAtDate { status, secs }) => {
                let mut r = fault_response(status);
                let at = http_date(now + i64::try_from(secs).unwrap_or(0) * 1000);
                if let Ok(v) = HeaderValue::from_str(&at) {
                    r.headers_mut().insert("retry-after", v);
                }
                Err(r)
            }
        }
    }
}

fn fault_response(status: u16) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        401 => errors(s, "INVALID_SESSION_ID", "Session expired or invalid"),
        403 => errors(s, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        429 => errors(
            s,
            "REQUEST_LIMIT_EXCEEDED",
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        ),
        503 => errors(s, "SERVER_UNAVAILABLE", "Server temporarily unavailable"),
        _ => errors(s, "UNKNOWN_EXCEPTION", "An unexpected error occurred."),
    }
}

/// Logs every request with its answer's status, and stamps `Sforce-Limit-Info` on API answers.
async fn log_and_limit(State(sim): State<SalesforceSim>, req: Request, next: Next) -> Response {
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let mut resp = sim.turbulence.around(req, next).await;
    let mut inner = sim.lock();
    if path.starts_with("/services/data/") {
        let usage = format!("api-usage={}/{}", inner.stats.api_requests, inner.api_max);
        if let Ok(v) = HeaderValue::from_str(&usage) {
            resp.headers_mut().insert("sforce-limit-info", v);
        }
    }
    inner.log.push(LoggedRequest {
        at_ms,
        method,
        path,
        status: resp.status().as_u16(),
    });
    resp
}

/// Salesforce's error body: a JSON array.
fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!([{ "message": message, "errorCode": code, "fields": [] }])),
    )
        .into_response()
}

fn all_objects() -> impl Iterator<Item = &'static Describe> {
    OBJECTS.iter().chain(objects::MORE).chain(partners::OBJECTS)
}

fn describe(object: &str) -> Option<&'static Describe> {
    all_objects().find(|d| d.name == object)
}

fn has_field(d: &Describe, f: &str) -> bool {
    has_stored_field(d, f) || COMPUTED.iter().any(|(o, x)| *o == d.name && *x == f)
}

/// A field kept on the record (not computed), so it can be indexed.
fn has_stored_field(d: &Describe, f: &str) -> bool {
    SYSTEM_FIELDS.iter().chain(d.fields).any(|x| *x == f)
}

fn sf_time(ms: i64) -> String {
    crate::connector::salesforce::api::format_datetime(super::salesforce_table::whole_second(ms))
}

fn insert_rec(inner: &mut Inner, object: &str, mut fields: Map<String, Value>, now: i64) -> String {
    let prefix = describe(object).map_or("a00", |d| d.prefix);
    let id = format!("{prefix}SIM{:09}AAA", inner.next_id);
    inner.next_id += 1;
    fields.insert("Id".into(), json!(id));
    fields.insert("CreatedDate".into(), json!(sf_time(now)));
    fields.insert("IsDeleted".into(), json!(false));
    inner.objects.entry(object.into()).or_default().put(
        &id,
        Rec {
            fields,
            modstamp_ms: now,
        },
    );
    id
}

fn record_json(object: &str, r: &Rec, cols: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    let id = r.fields.get("Id").and_then(Value::as_str).unwrap_or("");
    m.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("/services/data/{V}/sobjects/{object}/{id}")}),
    );
    for c in cols {
        m.insert(c.clone(), field_value(object, r, c));
    }
    m
}

async fn token(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let now = jiff::Timestamp::now().as_millisecond();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let bad = |sim: &SalesforceSim, desc: &str| {
        sim.lock().stats.invalid_grants += 1;
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": desc})),
        )
            .into_response()
    };
    let auth = sim.auth.clone();
    sim.lock().stats.token_requests += 1;
    let grant = form.get("grant_type").map(String::as_str);
    let mut new_refresh = None;
    match grant {
        Some("refresh_token") => {
            if form.get("client_id") != Some(&auth.client_id)
                || form.get("client_secret") != Some(&auth.client_secret)
            {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "invalid_client", "error_description": "invalid client credentials"})),
                )
                    .into_response();
            }
            let mut inner = sim.lock();
            if form.get("refresh_token") != Some(&inner.refresh_token) {
                drop(inner);
                return bad(&sim, "expired access/refresh token");
            }
            inner.stats.refresh_grants += 1;
            if auth.rotate {
                let t = format!("5Aep.sim.{}.{now}", inner.stats.refresh_grants);
                inner.refresh_token = t.clone();
                new_refresh = Some(t);
            }
        }
        Some(crate::connector::salesforce::api::JWT_BEARER_GRANT) => {
            let ok = form
                .get("assertion")
                .is_some_and(|a| verify_assertion(&auth, a, now / 1000));
            if !ok {
                return bad(&sim, "invalid assertion");
            }
            sim.lock().stats.jwt_grants += 1;
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unsupported_grant_type", "error_description": "grant type not supported"})),
            )
                .into_response();
        }
    }
    let mut inner = sim.lock();
    let access = format!(
        "00DSIM!{}.{now}",
        inner.stats.refresh_grants + inner.stats.jwt_grants
    );
    inner
        .sessions
        .insert(access.clone(), now + auth.token_ttl_ms);
    drop(inner);
    let mut body = json!({
        "access_token": access,
        "instance_url": format!("http://{host}"),
        "id": format!("http://{host}/id/00DSIM/005SIM"),
        "token_type": "Bearer",
        "issued_at": now.to_string(),
        "signature": "c2ltdWxhdGVk",
    });
    if let Some(t) = new_refresh {
        body["refresh_token"] = json!(t);
    }
    Json(body).into_response()
}

/// Checks an RS256 JWT bearer assertion: signature, `iss`, `sub`, `aud` and `exp`.
fn verify_assertion(auth: &SalesforceAuth, assertion: &str, now_secs: i64) -> bool {
    let Some(key) = &auth.jwt_public_key else {
        return false;
    };
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(sig) = b64.decode(s) else {
        return false;
    };
    let pk = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        key.as_slice(),
    );
    if pk.verify(format!("{h}.{c}").as_bytes(), &sig).is_err() {
        return false;
    }
    let Some(claims) = b64
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return false;
    };
    let header_ok = b64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["alg"] == "RS256");
    header_ok
        && claims["iss"] == auth.client_id.as_str()
        && claims["sub"] == auth.username.as_str()
        && matches!(
            claims["aud"].as_str(),
            Some("https://login.salesforce.com" | "https://test.salesforce.com")
        )
        && claims["exp"].as_i64().is_some_and(|e| e > now_secs)
}

async fn limits(State(sim): State<SalesforceSim>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let inner = sim.lock();
    Json(json!({"DailyApiRequests": {"Max": inner.api_max,
        "Remaining": inner.api_max.saturating_sub(inner.stats.api_requests)}}))
    .into_response()
}

/// A field's value as SOQL sees it: stored fields, the system stamps, and the fields Salesforce
/// computes (`Opportunity.IsClosed` and `IsWon` from the stage).
fn field_value(object: &str, r: &Rec, field: &str) -> Value {
    match (object, field) {
        (_, "SystemModstamp" | "LastModifiedDate") => json!(sf_time(r.modstamp_ms)),
        ("Opportunity", "IsClosed" | "IsWon") => {
            let stage = r.fields.get("StageName").and_then(Value::as_str);
            json!(match field {
                "IsClosed" => matches!(stage, Some("Closed Won" | "Closed Lost")),
                _ => stage == Some("Closed Won"),
            })
        }
        _ => r.fields.get(field).cloned().unwrap_or(Value::Null),
    }
}

/// What a field holds, for SOQL's type checks.
fn field_kind(field: &str) -> soql::Kind {
    match field {
        "IsDeleted"
        | "IsClosed"
        | "IsWon"
        | "IsPrimary"
        | "IsConverted"
        | "PRM_Direct_Reserved__c"
        | "Primary__c" => soql::Kind::Bool,
        "SystemModstamp"
        | "LastModifiedDate"
        | "CreatedDate"
        | "PRM_Protected_Until__c"
        | "ConvertedDate" => soql::Kind::DateTime,
        "CloseDate" => soql::Kind::Date,
        "Amount" => soql::Kind::Number,
        _ => soql::Kind::Text,
    }
}

async fn query(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    run_query(sim, headers, params, false)
}

/// `queryAll`: like `query`, with the recycle bin's deleted records (`IsDeleted = true`,
/// a merge's losers with `MasterRecordId`).
async fn query_all(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    run_query(sim, headers, params, true)
}

fn run_query(
    sim: SalesforceSim,
    headers: HeaderMap,
    params: BTreeMap<String, String>,
    all: bool,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(q) = params.get("q") else {
        return errors(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "q is required");
    };
    sim.lock().soql.push(q.clone());
    let refused = |e: soql::SoqlError| match e {
        soql::SoqlError::Malformed(m) => errors(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &m),
        soql::SoqlError::InvalidField(m) => errors(StatusCode::BAD_REQUEST, "INVALID_FIELD", &m),
    };
    let soql = match soql::parse(q) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let Some(d) = describe(&soql.object) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!("sObject type '{}' is not supported.", soql.object),
        );
    };
    let named = soql
        .cols
        .iter()
        .map(String::as_str)
        .chain(soql.filter.iter().flat_map(soql::Expr::fields))
        .chain(soql.order.iter().map(|(f, _)| f.as_str()));
    for f in named {
        if !has_field(d, f) {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{f}' on entity '{}'.", d.name),
            );
        }
    }
    if let Some(Err(e)) = soql.filter.as_ref().map(|f| f.check(&field_kind)) {
        return refused(e);
    }
    let batch = match batch_size(&headers) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut inner = sim.lock();
    inner.stats.queries += 1;
    let object = soql.object.as_str();
    let inner = &mut *inner;
    let mut hits: Vec<&Rec> = match inner.objects.get_mut(object) {
        None => Vec::new(),
        Some(table) => {
            let filter = soql.filter.as_ref();
            let indexed = filter.and_then(soql::Expr::indexed_in);
            let candidates: Vec<&Rec> = match (indexed, filter.and_then(soql::Expr::since)) {
                (Some((f, values)), _) if has_stored_field(d, f) => {
                    let mut ids: Vec<String> =
                        values.iter().flat_map(|v| table.find(f, v, true)).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let mut hits: Vec<&Rec> = ids.iter().filter_map(|id| table.get(id)).collect();
                    hits.sort_by(|a, b| {
                        (a.modstamp_ms, a.fields.get("Id").and_then(Value::as_str))
                            .cmp(&(b.modstamp_ms, b.fields.get("Id").and_then(Value::as_str)))
                    });
                    hits
                }
                (_, Some((inclusive, t))) => table.modified_since(t, inclusive).collect(),
                _ => table.modified_since(i64::MIN, true).collect(),
            };
            match filter {
                None => candidates,
                Some(f) => candidates
                    .into_iter()
                    .filter(|r| f.matches(&|field| field_value(object, r, field)))
                    .collect(),
            }
        }
    };
    if all && let Some(bin) = inner.bin.get(object) {
        let filter = soql.filter.as_ref();
        hits.extend(
            bin.values().filter(|r| {
                filter.is_none_or(|f| f.matches(&|field| field_value(object, r, field)))
            }),
        );
        hits.sort_by(|a, b| {
            (a.modstamp_ms, a.fields.get("Id").and_then(Value::as_str))
                .cmp(&(b.modstamp_ms, b.fields.get("Id").and_then(Value::as_str)))
        });
    }
    // Rows come in (SystemModstamp, Id) order; any other ORDER BY sorts them.
    let natural = [("SystemModstamp", true), ("Id", true)];
    let ordered = soql.order.len() <= 2
        && soql
            .order
            .iter()
            .zip(natural)
            .all(|((f, asc), (n, a))| f == n && *asc == a);
    if !ordered {
        hits.sort_by(|a, b| {
            for (f, asc) in &soql.order {
                let (x, y) = (field_value(object, a, f), field_value(object, b, f));
                let c = soql_order(&x, &y);
                let c = if *asc { c } else { c.reverse() };
                if c != std::cmp::Ordering::Equal {
                    return c;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    if let Some(n) = soql.limit {
        hits.truncate(n);
    }
    let rows: Vec<Map<String, Value>> = hits
        .iter()
        .map(|r| record_json(object, r, &soql.cols))
        .collect();
    inner.locators_opened += 1;
    let locator = format!("01gSIM{:08}", inner.locators_opened);
    let size = inner.page_cap.map_or(batch, |c| c.min(batch));
    let body = page(inner, locator, Arc::new(rows), 0, size);
    Json(body).into_response()
}

/// ORDER BY: nulls first, numbers by value, text without case.
fn soql_order(x: &Value, y: &Value) -> std::cmp::Ordering {
    match (x, y) {
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        _ => x
            .to_string()
            .to_lowercase()
            .cmp(&y.to_string().to_lowercase()),
    }
}

#[allow(clippy::result_large_err)] // axum responses are the natural error here
fn batch_size(headers: &HeaderMap) -> Result<usize, Response> {
    let Some(opt) = headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(2000);
    };
    let n = opt
        .split(',')
        .find_map(|p| p.trim().strip_prefix("batchSize="))
        .and_then(|n| n.parse::<usize>().ok());
    match n {
        Some(n) if (200..=2000).contains(&n) => Ok(n),
        _ => Err(errors(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "batchSize must be between 200 and 2000",
        )),
    }
}

/// One page from a result set; keeps the rows under `locator` for `nextRecordsUrl` until the
/// last page is served.
fn page(
    inner: &mut Inner,
    locator: String,
    rows: Arc<Vec<Map<String, Value>>>,
    offset: usize,
    size: usize,
) -> Value {
    let total = rows.len();
    let end = (offset + size).min(total);
    let records: Vec<Value> = rows[offset.min(total)..end]
        .iter()
        .cloned()
        .map(Value::Object)
        .collect();
    let done = end >= total;
    let mut body = json!({"totalSize": total, "done": done, "records": records});
    if !done {
        body["nextRecordsUrl"] = json!(format!("/services/data/{V}/query/{locator}-{end}"));
        let now = jiff::Timestamp::now().as_millisecond();
        inner.locators.keep(locator, rows, now);
    } else {
        inner.locators.close(&locator);
    }
    body
}

async fn query_more(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path(locator): Path<String>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let batch = match batch_size(&headers) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let invalid = || {
        errors(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    let Some((id, offset)) = locator
        .rsplit_once('-')
        .and_then(|(id, o)| Some((id.to_owned(), o.parse::<usize>().ok()?)))
    else {
        return invalid();
    };
    let mut inner = sim.lock();
    let now = jiff::Timestamp::now().as_millisecond();
    let Some(rows) = inner.locators.rows(&id, now) else {
        return invalid();
    };
    let size = inner.page_cap.map_or(batch, |c| c.min(batch));
    let body = page(&mut inner, id, rows, offset, size);
    Json(body).into_response()
}

async fn get_deleted(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let parse = |k: &str| {
        params
            .get(k)
            .and_then(|v| crate::connector::salesforce::api::parse_datetime(v))
    };
    let (Some(start), Some(end)) = (parse("start"), parse("end")) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "MISSING_ARGUMENT",
            "start and end are required ISO-8601 datetimes",
        );
    };
    if start >= end {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "start must be before end",
        );
    }
    // getDeleted covers the last 30 days, in windows of at least a minute.
    let earliest = jiff::Timestamp::now().as_millisecond() - DELETED_KEPT_MS;
    if start < earliest {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            &format!(
                "start must be within the last 30 days (earliestDateAvailable {})",
                sf_time(earliest)
            ),
        );
    }
    if end - start < 60_000 {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "end must be at least one minute after start",
        );
    }
    if describe(&object).is_none() {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    }
    let inner = sim.lock();
    let list: Vec<Value> = inner
        .deleted
        .get(&object)
        .map(|v| {
            v.iter()
                .filter(|(_, at)| *at >= start && *at <= end && *at >= earliest)
                .map(|(id, at)| json!({"id": id, "deletedDate": sf_time(*at)}))
                .collect()
        })
        .unwrap_or_default();
    Json(json!({
        "deletedRecords": list,
        "earliestDateAvailable": sf_time(earliest),
        "latestDateCovered": sf_time(end),
    }))
    .into_response()
}

/// The outcome of upserting one record: (id, created) or a SaveError, or several matches.
enum Upserted {
    Done(String, bool),
    Failed(Value),
    Several(Vec<String>),
}

fn upsert_rec(
    inner: &mut Inner,
    d: &Describe,
    field: &str,
    value: &str,
    mut fields: Map<String, Value>,
    now: i64,
    undo: &mut Vec<(String, Option<Rec>)>,
) -> Upserted {
    fields.remove("attributes");
    let table = inner.objects.entry(d.name.to_owned()).or_default();
    let matches: Vec<String> = if field == "Id" {
        table
            .get(value)
            .map(|_| vec![value.to_owned()])
            .unwrap_or_default()
    } else {
        table.find(field, value, false)
    };
    match matches.as_slice() {
        [] => {
            if field == "Id" {
                return Upserted::Failed(
                    json!({"statusCode": "NOT_FOUND", "message": format!("no record with Id {value}"), "fields": []}),
                );
            }
            fields.insert(field.into(), json!(value));
            if let Err(e) = inner.schema.check(d, &fields, true) {
                return Upserted::Failed(e);
            }
            let id = insert_rec(inner, d.name, fields, now);
            undo.push((id.clone(), None));
            inner.stats.created += 1;
            Upserted::Done(id, true)
        }
        [id] => {
            fields.remove(field);
            if let Err(e) = inner.schema.check(d, &fields, false) {
                return Upserted::Failed(e);
            }
            if merge::is_converted(table.get(id)) {
                return Upserted::Failed(merge::converted_lead_error(id));
            }
            let Some(before) = table.get(id).cloned() else {
                return Upserted::Failed(
                    json!({"statusCode": "NOT_FOUND", "message": format!("no record with Id {id}"), "fields": []}),
                );
            };
            let mut r = before.clone();
            r.fields.extend(fields);
            r.modstamp_ms = now;
            table.put(id, r);
            undo.push((id.clone(), Some(before)));
            inner.stats.updated += 1;
            Upserted::Done(id.clone(), false)
        }
        several => Upserted::Several(several.to_vec()),
    }
}

fn external_id_field_ok(d: &Describe, field: &str) -> bool {
    field == "Id" || d.external_ids.contains(&field)
}

async fn upsert_collection(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path((object, field)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(d) = describe(&object) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!("sObject type '{object}' is not supported."),
        );
    };
    if !external_id_field_ok(d, &field) {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("Field {field} is not an external id field of {object}"),
        );
    }
    let Some(Json(body)) = body else {
        return errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body is not valid JSON",
        );
    };
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "records is required",
        );
    };
    if records.len() > 200 {
        return errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    for r in records {
        if r.pointer("/attributes/type").and_then(Value::as_str) != Some(object.as_str()) {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                "each record needs attributes.type matching the URL's sObject",
            );
        }
    }
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    inner.stats.collection_upserts += 1;
    let (next_before, stats_before) = (inner.next_id, inner.stats.clone());
    let mut undo = Vec::new();
    let mut results = Vec::with_capacity(records.len());
    let mut failed = false;
    for r in records {
        let fields = r.as_object().cloned().unwrap_or_default();
        let value = fields
            .get(&field)
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| Some(v.to_string()))
            })
            .filter(|v| v != "null");
        let Some(value) = value else {
            failed = true;
            results.push(
                json!({"success": false, "errors": [{"statusCode": "MISSING_ARGUMENT",
                "message": format!("{field} not specified"), "fields": [field]}]}),
            );
            continue;
        };
        if inner.limited_records.remove(&value) {
            failed = true;
            results.push(
                json!({"success": false, "errors": [{"statusCode": "REQUEST_LIMIT_EXCEEDED",
                "message": "TotalRequests Limit exceeded.", "fields": []}]}),
            );
            continue;
        }
        match upsert_rec(&mut inner, d, &field, &value, fields, now, &mut undo) {
            Upserted::Done(id, created) => {
                results.push(json!({"id": id, "success": true, "errors": [], "created": created}))
            }
            Upserted::Failed(e) => {
                failed = true;
                results.push(json!({"success": false, "errors": [e]}));
            }
            Upserted::Several(ids) => {
                failed = true;
                results.push(json!({"success": false, "errors": [{"statusCode": "DUPLICATE_EXTERNAL_ID",
                    "message": format!("{field}: more than one record found for external id field: {ids:?}"),
                    "fields": [field]}]}));
            }
        }
    }
    if all_or_none && failed {
        let table = inner.objects.entry(d.name.to_owned()).or_default();
        for (id, before) in undo.into_iter().rev() {
            match before {
                Some(r) => table.put(&id, r),
                None => {
                    table.remove(&id);
                }
            }
        }
        inner.next_id = next_before;
        let upserts = inner.stats.collection_upserts;
        inner.stats = Stats {
            collection_upserts: upserts,
            ..stats_before
        };
        for r in &mut results {
            if r["success"] == true {
                *r = json!({"success": false, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []}]});
            }
        }
    }
    Json(Value::Array(results)).into_response()
}

async fn upsert_one(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path((object, field, value)): Path<(String, String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(d) = describe(&object) else {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    if !external_id_field_ok(d, &field) {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("Field {field} is not an external id field of {object}"),
        );
    }
    let Some(Json(Value::Object(fields))) = body else {
        return errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        );
    };
    if fields.contains_key(&field) || fields.contains_key("Id") {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "Do not specify Id or an external ID field in the request body",
        );
    }
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    match upsert_rec(&mut inner, d, &field, &value, fields, now, &mut Vec::new()) {
        Upserted::Done(id, true) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": [], "created": true})),
        )
            .into_response(),
        Upserted::Done(id, false) => {
            Json(json!({"id": id, "success": true, "errors": [], "created": false})).into_response()
        }
        Upserted::Failed(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!([{"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}])),
        )
            .into_response(),
        Upserted::Several(ids) => {
            let urls: Vec<String> = ids
                .iter()
                .map(|id| format!("/services/data/{V}/sobjects/{object}/{id}"))
                .collect();
            (StatusCode::MULTIPLE_CHOICES, Json(json!(urls))).into_response()
        }
    }
}

/// Inspection (not part of Salesforce): the request log, for tests and benchmarks.
async fn inspect_requests(State(sim): State<SalesforceSim>) -> Response {
    Json(super::log_json(&sim.request_log())).into_response()
}

/// Inspection (not part of Salesforce): every stored record of an object.
async fn inspect_records(State(sim): State<SalesforceSim>, Path(object): Path<String>) -> Response {
    Json(sim.records(&object)).into_response()
}
