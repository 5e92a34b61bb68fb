//! HubSpot CRM v3 simulator: objects, batch upsert by `idProperty` (100 max, 200/207), search on
//! `hs_lastmodifieddate` with `after` paging (200 per page, 10,000 cap), string-only property
//! values, bearer auth, `X-HubSpot-RateLimit-*` headers and HubSpot's error bodies.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::hubspot_table::{Object, Props, Table};
use super::{Injected, LoggedRequest, SimClock, Turbulence, http_date};

mod associations;
mod labels;
mod lifecycle;
mod merge;
mod paging;
mod privacy;
mod properties;
mod search_rules;
pub use privacy::privacy_deletion_event;

/// Deal stages of HubSpot's default sales pipeline.
pub const DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// The deal properties this portal has (standard ones plus prmsync's custom ones).
const DEAL_PROPERTIES: &[&str] = &[
    "dealname",
    "amount",
    "closedate",
    "dealstage",
    "pipeline",
    "closed_lost_reason",
    "description",
    "hubspot_owner_id",
    "prm_deal_id",
    "prm_partner_key",
    "prm_attribution",
    "prm_contact_email",
    "prm_protected_until",
    "prm_registration_status",
];

const SEARCH_CAP: usize = 10_000;
const DAILY_LIMIT: u64 = 500_000;
/// "Four requests per second and per authentication token" for search.
const SEARCH_PER_SECOND: usize = 4;

/// Counts the tests assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub searches: u64,
    pub batch_upserts: u64,
    pub created: u64,
    pub updated: u64,
    /// Upserts that changed nothing (same values written again).
    pub unchanged: u64,
    pub unauthorized: u64,
    pub token_refreshes: u64,
    pub search_rate_limited: u64,
    pub daily_rate_limited: u64,
    /// Requests refused with 429 by the burst limit (see [`HubSpotSim::set_burst_limit`]).
    pub burst_rate_limited: u64,
    pub associations_created: u64,
}

/// HubSpot's burst limit: at most `max` requests in any rolling `window` per token ("100 requests
/// every 10 seconds" for OAuth apps; 100 to 200 per 10 s by tier). Benchmarks scale the window
/// down (e.g. 10 per second) so a run of seconds sees many windows. Search is exempt (it has its
/// own four per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstLimit {
    pub max: u64,
    pub window: std::time::Duration,
}

impl BurstLimit {
    /// The documented lowest tier (and every OAuth app): 100 requests per 10 seconds. A new
    /// simulator enforces it.
    pub const DOCUMENTED: BurstLimit = BurstLimit {
        max: 100,
        window: std::time::Duration::from_secs(10),
    };

    fn window_ms(self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// The same rate per second (the `-Secondly` header family), at least one.
    fn per_second(self) -> u64 {
        let secs = self.window.as_secs_f64().max(0.001);
        ((self.max as f64 / secs).ceil() as u64).max(1)
    }
}

/// Which limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Upsert,
    Search,
}

/// An OAuth app installation the simulator accepts.
#[derive(Debug, Clone)]
pub struct HubSpotOAuth {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// Seconds an access token lives (`expires_in`).
    pub expires_in: u64,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, Table>,
    /// Archived (deleted, restorable) objects, by type.
    archived: BTreeMap<String, Table>,
    next_id: u64,
    stats: Stats,
    faults: VecDeque<Injected>,
    /// Batch upserts still to commit and then answer 502, as if the response were lost.
    lost_responses: u32,
    /// Faults for the next batch upserts only (reads pass).
    upsert_faults: VecDeque<Injected>,
    /// Writes per (object type, external id): how many creates and updates each got.
    writes: BTreeMap<String, std::collections::HashMap<Box<str>, (u32, u32)>>,
    search_cap: usize,
    search_rate: Option<usize>,
    search_times: VecDeque<i64>,
    burst: Option<BurstLimit>,
    /// Arrival times (epoch ms) of the requests inside the current burst window.
    burst_times: VecDeque<i64>,
    daily_limit: u64,
    oauth: Option<HubSpotOAuth>,
    /// OAuth access token -> expiry (epoch ms).
    access_tokens: BTreeMap<String, i64>,
    /// Private-app tokens accepted besides `token` (several clients of one portal).
    extra_tokens: BTreeSet<String>,
    /// Arrival times (epoch ms) of the batch upserts each token sent.
    upserts_by_token: BTreeMap<String, Vec<i64>>,
    /// Object type -> how many of its next searches fail with a 500.
    search_faults: BTreeMap<String, u32>,
    /// (from type, from id, to type, to id).
    associations: BTreeSet<(String, String, String, String)>,
    /// The type ids of each association (see `hubspot/associations.rs`).
    association_types: BTreeMap<(String, String, String, String), BTreeSet<u32>>,
    /// The portal's own association labels: (from type, to type, type id, label).
    labels: Vec<(String, String, u32, String)>,
    log: Vec<LoggedRequest>,
    /// Whether changes queue webhook events (as a subscribed app would get them).
    webhooks_on: bool,
    pending_events: Vec<Value>,
    event_seq: u64,
    /// Searches with an `IN` filter (match-rule lookups) still to answer with a 500.
    failing_match_searches: u32,
    /// Ids whose presence makes a whole batch upsert fail with a 400 (see
    /// [`HubSpotSim::refuse_batches_with`]).
    poison_ids: HashSet<String>,
    /// Searches for these values answer 400, as HubSpot refuses a malformed filter value.
    poison_search_values: HashSet<String>,
    /// What an admin changed in the properties since install (`hubspot/properties.rs`).
    schema_edits: properties::Edits,
}

impl Inner {
    /// Drops the arrivals that left the rolling window.
    fn roll(&mut self, now: i64) {
        let window = self.burst.map_or(10_000, BurstLimit::window_ms);
        while self.burst_times.front().is_some_and(|t| now - *t >= window) {
            self.burst_times.pop_front();
        }
    }

    /// Counts a request against the burst limit; false if the window is full.
    fn within_burst(&mut self, now: i64) -> bool {
        self.roll(now);
        if self
            .burst
            .is_some_and(|b| self.burst_times.len() as u64 >= b.max)
        {
            return false;
        }
        self.burst_times.push_back(now);
        true
    }

    /// Both families of rate-limit headers, live from the rolling window: `-Max`, `-Remaining`,
    /// `-Interval-Milliseconds` for the burst window, `-Secondly(-Remaining)` for the last second
    /// at the same rate, and the daily pair.
    fn limit_headers(&mut self, now: i64) -> [(&'static str, u64); 7] {
        self.roll(now);
        let b = self.burst.unwrap_or(BurstLimit::DOCUMENTED);
        let in_window = self.burst_times.len() as u64;
        let last_second = self
            .burst_times
            .iter()
            .rev()
            .take_while(|t| now - **t < 1000)
            .count() as u64;
        let secondly = b.per_second();
        [
            ("x-hubspot-ratelimit-daily", self.daily_limit),
            (
                "x-hubspot-ratelimit-daily-remaining",
                self.daily_limit.saturating_sub(self.stats.requests),
            ),
            ("x-hubspot-ratelimit-secondly", secondly),
            (
                "x-hubspot-ratelimit-secondly-remaining",
                secondly.saturating_sub(last_second),
            ),
            ("x-hubspot-ratelimit-max", b.max),
            (
                "x-hubspot-ratelimit-remaining",
                b.max.saturating_sub(in_window),
            ),
            (
                "x-hubspot-ratelimit-interval-milliseconds",
                u64::try_from(b.window_ms()).unwrap_or(u64::MAX),
            ),
        ]
    }

    /// Queues a webhook event for a change, when webhooks are on.
    fn queue_event(
        &mut self,
        object_type: &str,
        id: u64,
        action: &str,
        change: Option<(&str, &str)>,
    ) {
        if !self.webhooks_on {
            return;
        }
        let kind = match object_type {
            "deals" | "0-3" => "deal",
            "companies" => "company",
            "contacts" => "contact",
            _ => return,
        };
        self.event_seq += 1;
        let mut ev = json!({
            "eventId": self.event_seq,
            "subscriptionId": 4242,
            "portalId": 62515,
            "appId": 54321,
            "occurredAt": jiff::Timestamp::now().as_millisecond(),
            "subscriptionType": format!("{kind}.{action}"),
            "attemptNumber": 0,
            "objectId": id,
            "changeSource": "CRM",
        });
        if let Some((name, value)) = change {
            ev["propertyName"] = json!(name);
            ev["propertyValue"] = json!(value);
        }
        self.pending_events.push(ev);
    }
}

/// A HubSpot portal in memory.
#[derive(Debug, Clone)]
pub struct HubSpotSim {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<SimClock>,
    turbulence: Arc<Turbulence>,
    token: Arc<Mutex<String>>,
}

impl HubSpotSim {
    pub fn new(token: &str) -> Self {
        let sim = HubSpotSim {
            inner: Arc::default(),
            clock: Arc::default(),
            turbulence: Arc::default(),
            token: Arc::new(Mutex::new(token.to_owned())),
        };
        {
            let mut inner = sim.lock();
            inner.next_id = 9_000_000_001;
            inner.search_cap = SEARCH_CAP;
            inner.search_rate = Some(SEARCH_PER_SECOND);
            inner.daily_limit = DAILY_LIMIT;
            inner.burst = Some(BurstLimit::DOCUMENTED);
        }
        sim
    }

    /// Also accept OAuth access tokens issued by `POST /oauth/v1/token` for this installation.
    pub fn enable_oauth(&self, oauth: HubSpotOAuth) {
        self.lock().oauth = Some(oauth);
    }

    /// From now on every change (by a user or through the API) queues a webhook event.
    pub fn enable_webhooks(&self) {
        self.lock().webhooks_on = true;
    }

    /// Sends the queued events to `target` as HubSpot does: JSON arrays of at most 100 events,
    /// signed with v3 and `secret`. Returns how many events were delivered with a 2xx; events of a
    /// refused request stay queued.
    pub async fn deliver_pending(
        &self,
        http: &reqwest::Client,
        target: &reqwest::Url,
        secret: &str,
    ) -> reqwest::Result<usize> {
        let events = std::mem::take(&mut self.lock().pending_events);
        let mut delivered = 0;
        let mut chunks = events.chunks(100);
        while let Some(chunk) = chunks.next() {
            let status = match deliver_webhook(http, target, secret, chunk).await {
                Ok(s) => s,
                Err(e) => {
                    self.requeue(chunk, chunks);
                    return Err(e);
                }
            };
            if !status.is_success() {
                self.requeue(chunk, chunks);
                return Ok(delivered);
            }
            delivered += chunk.len();
        }
        Ok(delivered)
    }

    fn requeue<'a>(&self, first: &[Value], rest: impl Iterator<Item = &'a [Value]>) {
        let mut back: Vec<Value> = first.to_vec();
        back.extend(rest.flatten().cloned());
        let mut inner = self.lock();
        back.append(&mut inner.pending_events);
        inner.pending_events = back;
    }

    /// Webhook events queued and not yet delivered.
    pub fn pending_events(&self) -> usize {
        self.lock().pending_events.len()
    }

    /// Search pages past `cap` results are refused (HubSpot's cap is 10,000).
    pub fn set_search_cap(&self, cap: usize) {
        self.lock().search_cap = cap;
    }

    /// Search requests per second per token before 429 (`None`: unlimited).
    pub fn set_search_rate(&self, per_second: Option<usize>) {
        self.lock().search_rate = per_second;
    }

    /// Non-search requests allowed per rolling window before 429 (`None`: no burst limit; a new
    /// simulator has [`BurstLimit::DOCUMENTED`]).
    pub fn set_burst_limit(&self, limit: Option<BurstLimit>) {
        let mut inner = self.lock();
        inner.burst = limit;
        inner.burst_times.clear();
    }

    /// Requests per day before 429 with `policyName: DAILY`.
    pub fn set_daily_limit(&self, n: u64) {
        self.lock().daily_limit = n;
    }

    /// Latency and lost answers (see [`Turbulence`]).
    pub fn turbulence(&self) -> &Turbulence {
        &self.turbulence
    }

    /// An admin deletes property `name` of `object`: writes naming it get 400
    /// `VALIDATION_ERROR` and `GET /crm/v3/properties` no longer lists it. False if there is no
    /// such property.
    pub fn remove_property(&self, object: &str, name: &str) -> bool {
        self.lock().schema_edits.remove(object, name)
    }

    /// An admin renames property `from` of `object` to `to`.
    pub fn rename_property(&self, object: &str, from: &str, to: &str) -> bool {
        self.lock().schema_edits.rename(object, from, to)
    }

    /// Makes property `name` read-only (or writable again).
    pub fn set_property_read_only(&self, object: &str, name: &str, read_only: bool) -> bool {
        self.lock()
            .schema_edits
            .set_read_only(object, name, read_only)
    }

    /// Deletes (or puts back) one option of an enumeration property.
    pub fn set_property_option(
        &self,
        object: &str,
        name: &str,
        option: &str,
        present: bool,
    ) -> bool {
        self.lock()
            .schema_edits
            .set_option(object, name, option, present)
    }

    /// Every property change undone: the portal as prmsync's install left it.
    pub fn restore_properties(&self) {
        self.lock().schema_edits = properties::Edits::default();
    }

    /// Every request so far, in arrival order.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Associations from `from_type` objects to `to_type` objects, as (from id, to id).
    pub fn associations(&self, from_type: &str, to_type: &str) -> Vec<(String, String)> {
        self.lock()
            .associations
            .iter()
            .filter(|(f, _, t, _)| f == from_type && t == to_type)
            .map(|(_, a, _, b)| (a.clone(), b.clone()))
            .collect()
    }

    /// Associates two objects directly, as a CRM user would (e.g. a deal with its company).
    pub fn associate(&self, from_type: &str, from_id: &str, to_type: &str, to_id: &str) {
        self.lock().associations.insert((
            from_type.into(),
            from_id.into(),
            to_type.into(),
            to_id.into(),
        ));
    }

    /// Creates an object directly, as a CRM user would; returns its id.
    pub fn create(&self, object_type: &str, properties: BTreeMap<String, String>) -> String {
        let now = self.clock.tick();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.queue_event(object_type, id, "creation", None);
        inner
            .objects
            .entry(object_type.into())
            .or_default()
            .insert(Object::new(id, &properties, now, now), &properties);
        id.to_string()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth/v1/token", post(oauth_token))
            .route("/crm/v3/objects/{object}", get(list_objects))
            .route("/crm/v3/objects/{object}/batch/upsert", post(batch_upsert))
            .route("/crm/v3/objects/{object}/batch/update", post(batch_update))
            .route(
                "/crm/v3/objects/{object}/batch/archive",
                post(lifecycle::batch_archive),
            )
            .route("/crm/v3/objects/{object}/search", post(search))
            .route("/crm/v3/properties/{object}", get(properties::list))
            .route("/crm/v3/objects/{object}/merge", post(merge::merge))
            .route(
                "/crm/v3/objects/contacts/gdpr-delete",
                post(privacy::gdpr_delete),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/batch/associate/default",
                post(associate_default),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/batch/read",
                post(associations_read),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/batch/labels/archive",
                post(labels::archive_labels),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/batch/create",
                post(associations::batch_create),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/labels",
                get(associations::labels),
            )
            .layer(middleware::from_fn_with_state(self.clone(), log_requests))
            .route("/_sim/requests", get(inspect_requests))
            .route("/_sim/records/{object}", get(inspect_records))
            .with_state(self.clone())
    }

    /// The properties of every object of `object_type`, with `hs_object_id`.
    pub fn objects(&self, object_type: &str) -> Vec<Map<String, Value>> {
        self.lock()
            .objects
            .get(object_type)
            .map(|m| m.iter().map(|o| props_json(o, None)).collect())
            .unwrap_or_default()
    }

    /// The object of `object_type` whose `property` equals `value`.
    pub fn find(
        &self,
        object_type: &str,
        property: &str,
        value: &str,
    ) -> Option<Map<String, Value>> {
        let mut inner = self.lock();
        let table = inner.objects.get_mut(object_type)?;
        let id = match property {
            "hs_object_id" => value.parse().ok().filter(|id| table.contains(*id))?,
            // Stamps HubSpot derives (not stored as properties): compare their rendered form.
            "createdate" | "hs_lastmodifieddate" => {
                table
                    .iter()
                    .find(|o| {
                        props_json(o, None).get(property).and_then(Value::as_str) == Some(value)
                    })?
                    .id
            }
            _ => *table.find(property, value, false).first()?,
        };
        table.get(id).map(|o| props_json(o, None))
    }

    /// Changes a property as a CRM user would (bumps the modification time).
    pub fn set_property(&self, object_type: &str, id: &str, property: &str, value: &str) -> bool {
        let now = self.clock.tick();
        let mut inner = self.lock();
        let Some((table, id)) = id.parse::<u64>().ok().and_then(|id| {
            let table = inner.objects.get_mut(object_type)?;
            table.contains(id).then_some((table, id))
        }) else {
            return false;
        };
        let old = table.get(id).map(Object::props).unwrap_or_default();
        let mut new = old.clone();
        new.insert(property.into(), value.into());
        table.update(id, &old, &new, Some(now));
        inner.queue_event(object_type, id, "propertyChange", Some((property, value)));
        true
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// (creates, updates) per external id value of `object_type`.
    pub fn writes(&self, object_type: &str) -> BTreeMap<String, (u32, u32)> {
        self.lock()
            .writes
            .get(object_type)
            .map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default()
    }

    /// The next `n` searches of `object_type` fail with a 500 (other requests are unaffected).
    pub fn fail_searches(&self, object_type: &str, n: u32) {
        *self
            .lock()
            .search_faults
            .entry(object_type.into())
            .or_default() += n;
    }

    /// The next `n` searches with an `IN` filter (match-rule lookups) get a 500; polls do not.
    pub fn fail_match_searches(&self, n: u32) {
        self.lock().failing_match_searches = n;
    }

    fn take_search_fault(&self, object_type: &str) -> bool {
        let mut inner = self.lock();
        match inner.search_faults.get_mut(object_type) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// The next requests get these faults, in order, instead of their answers.
    pub fn inject<I: Into<Injected>>(&self, faults: impl IntoIterator<Item = I>) {
        self.lock()
            .faults
            .extend(faults.into_iter().map(Into::into));
    }

    /// "Committed but the response was lost": the next `n` batch upserts apply their writes, then
    /// answer 502 instead of the results, as a proxy timing out after HubSpot committed would.
    pub fn inject_lost_responses(&self, n: u32) {
        self.lock().lost_responses += n;
    }

    /// Changes the token the portal accepts: the old one is revoked (every request with it gets
    /// 401) until a client presents the new one, as after an app re-authorisation.
    pub fn set_token(&self, token: &str) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token.to_owned();
    }

    /// Accepts `token` too, besides the portal's token: several clients (one per daemon of a
    /// fleet) each with its own private-app token, told apart in [`HubSpotSim::upserts_by`].
    pub fn accept_token(&self, token: &str) {
        self.lock().extra_tokens.insert(token.to_owned());
    }

    /// Arrival times (epoch ms) of the batch upserts sent with `token` (refused ones included).
    pub fn upserts_by(&self, token: &str) -> Vec<i64> {
        self.lock()
            .upserts_by_token
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    /// Any batch upsert that carries `id` is refused as a whole with a 400 `VALIDATION_ERROR`,
    /// as HubSpot refuses a batch for one bad input (e.g. a property it does not have).
    pub fn refuse_batches_with(&self, id: &str) {
        self.lock().poison_ids.insert(id.to_owned());
    }

    /// A search whose filters name `value` is refused with a 400 `VALIDATION_ERROR` (a value the
    /// search cannot take), every time.
    pub fn refuse_searches_for(&self, value: &str) {
        self.lock().poison_search_values.insert(value.to_owned());
    }

    /// Like [`HubSpotSim::inject`], but only batch upserts get them.
    pub fn inject_upsert_faults<I: Into<Injected>>(&self, faults: impl IntoIterator<Item = I>) {
        self.lock()
            .upsert_faults
            .extend(faults.into_iter().map(Into::into));
    }

    #[allow(clippy::result_large_err)] // axum responses are the natural error here
    fn gate(&self, headers: &HeaderMap, call: Call) -> Result<(), Response> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut inner = self.lock();
        inner.stats.requests += 1;
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ok = presented.is_some_and(|t| {
            t == token
                || inner.extra_tokens.contains(t)
                || inner.access_tokens.get(t).is_some_and(|exp| *exp > now)
        });
        if !ok {
            inner.stats.unauthorized += 1;
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            ));
        }
        if inner.stats.requests > inner.daily_limit {
            inner.stats.daily_rate_limited += 1;
            return Err(rate_limited("DAILY", "You have reached your daily limit."));
        }
        if call != Call::Search && !inner.within_burst(now) {
            inner.stats.burst_rate_limited += 1;
            let mut resp = rate_limited(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            );
            put_headers(&mut resp, inner.limit_headers(now));
            return Err(resp);
        }
        let fault = if call == Call::Upsert && !inner.upsert_faults.is_empty() {
            inner.upsert_faults.pop_front()
        } else {
            inner.faults.pop_front()
        };
        if call == Call::Upsert
            && let Some(t) = presented
        {
            inner
                .upserts_by_token
                .entry(t.to_owned())
                .or_default()
                .push(now);
        }
        let (status, retry) = match fault {
            None => return Ok(()),
            Some(Injected::Malformed) => {
                return Err((StatusCode::OK, "<html>Bad gateway page</html>").into_response());
            }
            Some(Injected::Fault(f)) => (f.status, f.retry_after.map(|s| s.to_string())),
            Some(Injected::RetryAtDate { status, secs }) => (
                status,
                Some(http_date(now + i64::try_from(secs).unwrap_or(0) * 1000)),
            ),
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = if status == 429 {
            rate_limited("SECONDLY", "You have reached your secondly limit.")
        } else {
            error(code, "INTERNAL_ERROR", "injected fault")
        };
        if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
            resp.headers_mut().insert("retry-after", v);
        }
        Err(resp)
    }

    /// Search allows four requests per second per token; the fifth gets a secondly 429.
    #[allow(clippy::result_large_err)] // axum responses are the natural error here
    fn search_gate(&self) -> Result<(), Response> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut inner = self.lock();
        let Some(rate) = inner.search_rate else {
            return Ok(());
        };
        while inner.search_times.front().is_some_and(|t| now - *t >= 1000) {
            inner.search_times.pop_front();
        }
        if inner.search_times.len() >= rate {
            inner.stats.search_rate_limited += 1;
            return Err(rate_limited(
                "SECONDLY",
                "You have reached your secondly limit.",
            ));
        }
        inner.search_times.push_back(now);
        Ok(())
    }

    /// Both families of rate-limit headers, live; clients must treat all of them as optional.
    fn limit_headers(&self, mut resp: Response) -> Response {
        let now = jiff::Timestamp::now().as_millisecond();
        let headers = self.lock().limit_headers(now);
        put_headers(&mut resp, headers);
        resp
    }
}

fn put_headers(resp: &mut Response, headers: [(&'static str, u64); 7]) {
    let h = resp.headers_mut();
    for (k, v) in headers {
        h.insert(k, HeaderValue::from(v));
    }
}

/// HubSpot's 429 body; `policyName` tells which limit was hit (`DAILY`, `SECONDLY` for search,
/// `TEN_SECONDLY_ROLLING` for the burst window), `category` is `RATE_LIMITS`.
fn rate_limited(policy: &str, message: &str) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "category": "RATE_LIMITS",
            "correlationId": correlation_id(),
            "policyName": policy,
            "requestId": correlation_id(),
        })),
    )
        .into_response()
}

async fn log_requests(State(sim): State<HubSpotSim>, req: Request, next: Next) -> Response {
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let resp = sim.turbulence.around(req, next).await;
    sim.lock().log.push(LoggedRequest {
        at_ms,
        method,
        path,
        status: resp.status().as_u16(),
    });
    resp
}

async fn oauth_token(
    State(sim): State<HubSpotSim>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let now = jiff::Timestamp::now().as_millisecond();
    let mut inner = sim.lock();
    let Some(o) = inner.oauth.clone() else {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_CLIENT_ID",
            "OAuth is not enabled",
        );
    };
    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("client_id") == Some(&o.client_id)
        && form.get("client_secret") == Some(&o.client_secret)
        && form.get("refresh_token") == Some(&o.refresh_token);
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                "correlationId": correlation_id()}),
            ),
        )
            .into_response();
    }
    inner.stats.token_refreshes += 1;
    let token = format!("CNb.sim.{}.{now}", inner.stats.token_refreshes);
    let expires_ms = now + i64::try_from(o.expires_in).unwrap_or(0) * 1000;
    inner.access_tokens.insert(token.clone(), expires_ms);
    Json(json!({
        "access_token": token,
        "refresh_token": o.refresh_token,
        "expires_in": o.expires_in,
        "token_type": "bearer",
        "token_use": "access_token",
    }))
    .into_response()
}

async fn associate_default(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path((from, to)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let inputs =
        match associations::batch_inputs(&sim, &headers, Call::Read, &from, &to, body.as_ref()) {
            Ok(inputs) => inputs,
            Err(r) => return r,
        };
    let mut inner = sim.lock();
    let exists = |inner: &Inner, t: &str, id: &str| {
        id.parse::<u64>()
            .ok()
            .is_some_and(|n| inner.objects.get(t).is_some_and(|m| m.contains(n)))
    };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for i in inputs {
        let f = i.pointer("/from/id").and_then(Value::as_str).unwrap_or("");
        let t = i.pointer("/to/id").and_then(Value::as_str).unwrap_or("");
        let default = associations::hubspot_defined(&from, &to)
            .first()
            .map(|(id, _)| *id);
        if let Some(type_id) =
            default.filter(|_| exists(&inner, &from, f) && exists(&inner, &to, t))
        {
            inner.add_association(&from, f, &to, t, type_id);
            results.push(json!({"from": {"id": f}, "to": {"id": t},
                "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}}));
        } else {
            errors.push(
                json!({"status": "error", "errors": [], "links": {}, "category": "VALIDATION_ERROR",
                "message": format!("No {from} {f} or {to} {t}"),
                "context": {"fromObjectId": [f], "toObjectId": [t]}}),
            );
        }
    }
    drop(inner);
    let now = iso(sim.clock.tick());
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut body =
        json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
    if !errors.is_empty() {
        body["numErrors"] = json!(errors.len());
        body["errors"] = json!(errors);
    }
    sim.limit_headers((status, Json(body)).into_response())
}

/// Associations v4 `batch/read`: each input's associated objects; inputs without any come back
/// as errors (`NO_ASSOCIATIONS_FOUND`, 207), as HubSpot does.
async fn associations_read(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path((from, to)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let inputs =
        match associations::batch_inputs(&sim, &headers, Call::Read, &from, &to, body.as_ref()) {
            Ok(inputs) => inputs,
            Err(r) => return r,
        };
    let inner = sim.lock();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for i in inputs {
        let id = i.get("id").and_then(Value::as_str).unwrap_or("");
        // Associations are stored in the direction they were made; either direction counts.
        let mut linked: Vec<u64> = inner
            .associations
            .iter()
            .filter_map(|(ft, fi, tt, ti)| {
                if *ft == from && fi == id && *tt == to {
                    Some(ti)
                } else if *ft == to && *tt == from && ti == id {
                    Some(fi)
                } else {
                    None
                }
            })
            .filter_map(|x| x.parse().ok())
            .collect();
        linked.sort_unstable();
        linked.dedup();
        if linked.is_empty() {
            errors.push(
                json!({"status": "error", "errors": [], "links": {}, "category": "OBJECT_NOT_FOUND",
                "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                "message": format!("No {to} is associated with {from} {id}."),
                "context": {"fromObjectId": [id]}}),
            );
        } else {
            let to_list: Vec<Value> = linked
                .iter()
                .map(|t| {
                    json!({"toObjectId": t, "associationTypes":
                    [{"category": "HUBSPOT_DEFINED", "typeId": 342, "label": null}]})
                })
                .collect();
            results.push(json!({"from": {"id": id}, "to": to_list}));
        }
    }
    drop(inner);
    let now = iso(sim.clock.tick());
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut body =
        json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
    if !errors.is_empty() {
        body["numErrors"] = json!(errors.len());
        body["errors"] = json!(errors);
    }
    sim.limit_headers((status, Json(body)).into_response())
}

fn correlation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// HubSpot's `Error` body.
fn error(status: StatusCode, category: &str, message: &str) -> Response {
    (
        status,
        Json(json!({
            "status": "error",
            "message": message,
            "correlationId": correlation_id(),
            "category": category,
        })),
    )
        .into_response()
}

/// The 400 a batch with a property error gets: HubSpot's `Error` with the input's problem in
/// `errors` (the message names the property, as "Property \"x\" does not exist" does).
fn property_error(id: &str, why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "status": "error",
            "message": format!("Property values were not valid: {why}"),
            "correlationId": correlation_id(),
            "category": "VALIDATION_ERROR",
            "errors": [{"message": why, "context": {"ids": [id]}}],
        })),
    )
        .into_response()
}

fn iso(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn props_json(o: &Object, only: Option<&[String]>) -> Map<String, Value> {
    props_json_from(o, o.props(), only)
}

fn props_json_from(o: &Object, props: Props, only: Option<&[String]>) -> Map<String, Value> {
    let mut m: Map<String, Value> = props
        .into_iter()
        .filter(|(k, _)| only.is_none_or(|only| only.iter().any(|x| x == k)))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    m.insert("hs_object_id".into(), json!(o.id.to_string()));
    m.insert("createdate".into(), json!(iso(o.created_ms)));
    m.insert("hs_lastmodifieddate".into(), json!(iso(o.updated_ms)));
    m
}

fn object_json(o: &Object, only: Option<&[String]>) -> Value {
    object_json_from(o, &o.props(), only)
}

fn object_json_from(o: &Object, props: &Props, only: Option<&[String]>) -> Value {
    json!({
        "id": o.id.to_string(),
        "properties": props_json_from(o, props.clone(), only),
        "createdAt": iso(o.created_ms),
        "updatedAt": iso(o.updated_ms),
        "archived": false,
    })
}

fn known_object(object: &str) -> bool {
    matches!(
        object,
        "deals" | "0-3" | "companies" | "contacts" | "tasks" | "0-27"
    )
}

async fn list_objects(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Read) {
        return r;
    }
    if !known_object(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        );
    }
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let after = match paging::position(q.get("after").map(String::as_str)) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e),
    };
    if q.get("archived").map(String::as_str) == Some("true") {
        let (results, next) = lifecycle::archived_page(&sim, &object, after, limit);
        let mut body = json!({"results": results});
        if let Some(n) = next {
            let after = paging::token(n);
            body["paging"] = json!({"next": {"after": after, "link": format!("?after={after}")}});
        }
        return sim.limit_headers(Json(body).into_response());
    }
    let inner = sim.lock();
    let all = inner.objects.get(&object);
    let page: Vec<&Object> = all
        .map(|m| m.range_from(after).take(limit + 1).collect())
        .unwrap_or_default();
    let next = page.get(limit).map(|o| o.id);
    let results: Vec<Value> = page
        .iter()
        .take(limit)
        .map(|o| object_json(o, None))
        .collect();
    drop(inner);
    let mut body = json!({"results": results});
    if let Some(n) = next {
        let after = paging::token(n);
        body["paging"] = json!({"next": {"after": after, "link": format!("?after={after}")}});
    }
    sim.limit_headers(Json(body).into_response())
}

async fn batch_upsert(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    batch_write(sim, headers, object, body, false).await
}

/// `batch/update`: inputs `{id, properties, idProperty?}` update existing objects by object id
/// (or by a unique property); an unknown id is an `OBJECT_NOT_FOUND` error, never a create.
async fn batch_update(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    batch_write(sim, headers, object, body, true).await
}

/// Upsert (`update_only = false`: `idProperty` is required, unknown values create) or update.
async fn batch_write(
    sim: HubSpotSim,
    headers: HeaderMap,
    object: String,
    body: Option<Json<Value>>,
    update_only: bool,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Upsert) {
        return r;
    }
    if !known_object(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        );
    }
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON",
        );
    };
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "inputs is required",
        );
    };
    if inputs.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "Batch input must contain at most 100 inputs, got {}",
                inputs.len()
            ),
        );
    }
    // Validate the whole request's shape first: a malformed input fails the batch, like HubSpot.
    let mut parsed = Vec::new();
    for input in inputs {
        let (Some(id), Some(props)) = (
            input.get("id").and_then(Value::as_str),
            input.get("properties").and_then(Value::as_object),
        ) else {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "each input needs id and properties",
            );
        };
        let mut strings = BTreeMap::new();
        for (k, v) in props {
            let Some(s) = v.as_str() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    &format!("Property values must be strings: {k}"),
                );
            };
            strings.insert(k.clone(), s.to_owned());
        }
        let id_property = input
            .get("idProperty")
            .and_then(Value::as_str)
            .map(str::to_owned);
        parsed.push((id.to_owned(), id_property, strings));
    }
    if let Some((bad, _, _)) = {
        let inner = sim.lock();
        parsed
            .iter()
            .find(|(id, _, _)| inner.poison_ids.contains(id))
            .cloned()
    } {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Property values were not valid for input {bad}"),
        );
    }
    // A property error refuses the whole batch (nothing is written), as HubSpot does without
    // `objectWriteTraceId`; the client finds the bad input by sending smaller batches.
    if let Some((id, why)) = parsed
        .iter()
        .find_map(|(id, _, props)| Some((id, invalid_property(&sim, &object, props)?)))
    {
        return property_error(&id.clone(), &why);
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (id, id_property, props) in parsed {
        if !seen.insert(id.clone()) {
            errors.push(
                json!({"status": "error", "errors": [], "links": {}, "category": "VALIDATION_ERROR",
                "message": format!("Duplicate id {id} in batch"), "context": {"ids": [id]}}),
            );
            continue;
        }
        if !update_only && id_property.is_none() {
            errors.push(json!({"status": "error", "errors": [], "links": {}, "category": "VALIDATION_ERROR",
                "message": "idProperty is required: upsert matches on a unique property; update an object id with batch/update",
                "context": {"ids": [id]}}));
            continue;
        }
        let now = sim.clock.tick();
        let mut inner = sim.lock();
        match upsert_one(
            &mut inner,
            &object,
            &id,
            id_property.as_deref(),
            props,
            now,
            update_only,
        ) {
            Ok((obj, props, new)) => {
                drop(inner);
                let mut r = object_json_from(&obj, &props, None);
                r["new"] = json!(new);
                results.push(r);
            }
            Err(e) => errors.push(e),
        }
    }
    {
        let mut inner = sim.lock();
        inner.stats.batch_upserts += 1;
        if inner.lost_responses > 0 {
            inner.lost_responses -= 1;
            return error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL_ERROR",
                "injected fault: the batch committed but its response was lost",
            );
        }
    }
    let now = iso(sim.clock.tick());
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut body = json!({
        "status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now,
    });
    if !errors.is_empty() {
        body["numErrors"] = json!(errors.len());
        body["errors"] = json!(errors);
    }
    sim.limit_headers((status, Json(body)).into_response())
}

/// Upserts one input: finds the object by `id_property` (or by id), merges the properties and
/// stamps it if anything changed, or creates it (unless `update_only`). Returns the object, its properties and whether
/// it is new, or the input's error.
fn upsert_one(
    inner: &mut Inner,
    object: &str,
    id: &str,
    id_property: Option<&str>,
    mut props: Props,
    now: i64,
    update_only: bool,
) -> Result<(Object, Props, bool), Value> {
    let next_id = inner.next_id;
    let table = inner.objects.entry(object.to_owned()).or_default();
    let found = match id_property {
        Some(p) => table.find_first(p, id),
        None => id
            .parse::<u64>()
            .ok()
            .and_then(|n| Some((n, table.get(n)?.props()))),
    };
    let (obj, merged, changed, new) = match found {
        Some((oid, old)) => {
            let changed: Vec<(String, String)> = props
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut merged = old.clone();
            merged.extend(props);
            let stamp = (!changed.is_empty()).then_some(now);
            table.update(oid, &old, &merged, stamp);
            let obj = table.get(oid).cloned().expect("found above");
            (obj, merged, changed, false)
        }
        None => {
            let Some(p) = id_property.filter(|_| !update_only) else {
                return Err(
                    json!({"status": "error", "errors": [], "links": {}, "category": "OBJECT_NOT_FOUND",
                    "message": format!("No {object} with id {id}"), "context": {"ids": [id]}}),
                );
            };
            props.insert(p.to_owned(), id.to_owned());
            let obj = Object::new(next_id, &props, now, now);
            table.insert(obj.clone(), &props);
            inner.next_id += 1;
            (obj, props, Vec::new(), true)
        }
    };
    let counts = inner
        .writes
        .entry(object.to_owned())
        .or_default()
        .entry(id.into())
        .or_default();
    if new {
        counts.0 += 1;
        inner.stats.created += 1;
        inner.queue_event(object, obj.id, "creation", None);
    } else {
        counts.1 += 1;
        if changed.is_empty() {
            inner.stats.unchanged += 1;
        } else {
            inner.stats.updated += 1;
        }
        for (k, v) in &changed {
            inner.queue_event(object, obj.id, "propertyChange", Some((k, v)));
        }
    }
    Ok((obj, merged, new))
}

fn invalid_property(
    sim: &HubSpotSim,
    object: &str,
    props: &BTreeMap<String, String>,
) -> Option<String> {
    properties::first_invalid(&sim.lock().schema_edits, object, props)
}

/// A filter value of `body` the simulator was told to refuse ([`HubSpotSim::refuse_searches_for`]).
fn poisoned_filter_value(sim: &HubSpotSim, body: &Value) -> Option<String> {
    let inner = sim.lock();
    if inner.poison_search_values.is_empty() {
        return None;
    }
    let groups = body.get("filterGroups").and_then(Value::as_array)?;
    groups
        .iter()
        .filter_map(|g| g.get("filters").and_then(Value::as_array))
        .flatten()
        .flat_map(|f| {
            let one = f.get("value").into_iter();
            let many = f
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            one.chain(many)
        })
        .filter_map(Value::as_str)
        .find(|v| inner.poison_search_values.contains(*v))
        .map(str::to_owned)
}

async fn search(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Search) {
        return r;
    }
    if let Err(r) = sim.search_gate() {
        return r;
    }
    sim.lock().stats.searches += 1;
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON",
        );
    };
    if let Some(why) = search_rules::refused(&body) {
        return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &why);
    }
    if let Some(bad) = poisoned_filter_value(&sim, &body) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("There was a problem with the request: invalid filter value {bad}"),
        );
    }
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    if !(1..=200).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "limit must be between 1 and 200",
        );
    }
    let after = match paging::position(body.get("after").and_then(Value::as_str)) {
        Ok(a) => usize::try_from(a).unwrap_or(usize::MAX),
        Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e),
    };
    let cap = sim.lock().search_cap;
    if after.saturating_add(limit) > cap {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "There was a problem with the request: paging past {cap} results is not allowed"
            ),
        );
    }
    let properties: Option<Vec<String>> =
        body.get("properties").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        });
    // Filter groups are ORed, the filters of one group ANDed.
    let groups: Vec<Vec<SimFilter>> = body
        .get("filterGroups")
        .and_then(Value::as_array)
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    g.get("filters")
                        .and_then(Value::as_array)
                        .map(|fs| fs.iter().filter_map(SimFilter::parse).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let is_match_lookup = groups.iter().flatten().any(|f| f.op == "IN");
    let match_fault = is_match_lookup && {
        let mut inner = sim.lock();
        let fail = inner.failing_match_searches > 0;
        inner.failing_match_searches = inner.failing_match_searches.saturating_sub(1);
        fail
    };
    if match_fault || sim.take_search_fault(&object) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "injected search fault",
        );
    }
    let mut inner = sim.lock();
    let (total, page) = match inner.objects.get_mut(&object) {
        Some(table) => run_search(table, &groups, after, limit),
        None => (0, Vec::new()),
    };
    drop(inner);
    let results: Vec<Value> = page
        .iter()
        .map(|(o, props)| object_json_from(o, props, properties.as_deref()))
        .collect();
    let mut body = json!({"total": total, "results": results});
    if after + limit < total {
        let next = paging::token((after + limit) as u64);
        body["paging"] = json!({"next": {"after": next, "link": ""}});
    }
    // Search responses carry no rate-limit headers (community report in CONTRACTS.md).
    Json(body).into_response()
}

/// One search filter: property, operator, and its value or values.
struct SimFilter {
    prop: String,
    op: String,
    value: String,
    values: Vec<String>,
}

impl SimFilter {
    fn parse(f: &Value) -> Option<SimFilter> {
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        Some(SimFilter {
            prop: f.get("propertyName")?.as_str()?.to_owned(),
            op: f.get("operator")?.as_str()?.to_owned(),
            value: f.get("value").map(text).unwrap_or_default(),
            values: f
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default(),
        })
    }
}

/// Where a filter group's hits can be found without reading every object.
enum Source {
    /// Objects modified at or after this stamp.
    From(i64),
    /// These objects (found by id or through a property index).
    Ids(Vec<u64>),
}

fn group_source(table: &mut Table, group: &[SimFilter]) -> Source {
    let mut from = i64::MIN;
    for f in group {
        match (f.prop.as_str(), f.op.as_str()) {
            ("hs_object_id", "EQ") => return Source::Ids(f.value.parse().into_iter().collect()),
            ("hs_object_id", "IN") => {
                return Source::Ids(f.values.iter().filter_map(|v| v.parse().ok()).collect());
            }
            ("hs_lastmodifieddate", "GTE" | "GT" | "EQ") => {
                from = from.max(stamp(&f.value).unwrap_or(i64::MAX));
            }
            (_, "EQ") => return Source::Ids(table.find(&f.prop, &f.value, true)),
            (_, "IN") => {
                let mut ids: Vec<u64> = f
                    .values
                    .iter()
                    .flat_map(|v| table.find(&f.prop, v, true))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                return Source::Ids(ids);
            }
            _ => {}
        }
    }
    Source::From(from)
}

/// Runs a search over `table`: the number of hits, and the hits `[after, after + limit)` in
/// (modification, id) order with their properties. Indexes narrow the candidates; every
/// candidate is then checked against the filters.
fn run_search(
    table: &mut Table,
    groups: &[Vec<SimFilter>],
    after: usize,
    limit: usize,
) -> (usize, Vec<(Object, Props)>) {
    let sources: Vec<Source> = groups.iter().map(|g| group_source(table, g)).collect();
    let lowest = sources.iter().try_fold(i64::MAX, |lo, s| match s {
        Source::From(t) => Some(lo.min(*t)),
        Source::Ids(_) => None,
    });
    let candidates: Box<dyn Iterator<Item = (i64, u64)> + '_> = match lowest {
        // Only modification bounds (or no filter at all): walk the stamp index from the lowest.
        Some(from) => {
            Box::new(table.modified_from(if groups.is_empty() { i64::MIN } else { from }))
        }
        None => {
            let mut set = BTreeSet::new();
            for s in &sources {
                match s {
                    Source::From(t) => set.extend(table.modified_from(*t)),
                    Source::Ids(ids) => set.extend(
                        ids.iter()
                            .filter_map(|id| table.get(*id).map(|o| (o.updated_ms, o.id))),
                    ),
                }
            }
            Box::new(set.into_iter())
        }
    };
    let mut total = 0;
    let mut page = Vec::new();
    for (_, id) in candidates {
        let Some(o) = table.get(id) else { continue };
        let mut props = None;
        let hit = groups.is_empty()
            || groups
                .iter()
                .any(|g| g.iter().all(|f| matches(o, &mut props, f)));
        if !hit {
            continue;
        }
        if total >= after && page.len() < limit {
            let props = props.unwrap_or_else(|| o.props());
            page.push((o.clone(), props));
        }
        total += 1;
    }
    (total, page)
}

/// Epoch milliseconds from a filter value (a number or an RFC 3339 time).
fn stamp(value: &str) -> Option<i64> {
    value.parse::<i64>().ok().or_else(|| {
        value
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    })
}

/// Whether `o` passes filter `f`; `props` is filled the first time a property is needed.
fn matches(o: &Object, props: &mut Option<Props>, f: &SimFilter) -> bool {
    let (prop, op, value) = (&f.prop, &f.op, &f.value);
    if prop == "hs_lastmodifieddate" {
        let Some(v) = stamp(value) else {
            return false;
        };
        return match op.as_str() {
            "GTE" => o.updated_ms >= v,
            "GT" => o.updated_ms > v,
            "LTE" => o.updated_ms <= v,
            "LT" => o.updated_ms < v,
            "EQ" => o.updated_ms == v,
            _ => false,
        };
    }
    let id = o.id.to_string();
    // HubSpot treats an empty value as no value.
    let have = if prop == "hs_object_id" {
        Some(&id)
    } else {
        props
            .get_or_insert_with(|| o.props())
            .get(prop)
            .filter(|v| !v.is_empty())
    };
    match op.as_str() {
        "EQ" => have == Some(value),
        "NEQ" => have != Some(value),
        // HubSpot compares text case-insensitively.
        "IN" => have.is_some_and(|h| f.values.iter().any(|v| v.eq_ignore_ascii_case(h))),
        "NOT_IN" => have.is_none_or(|h| !f.values.contains(h)),
        "HAS_PROPERTY" => have.is_some(),
        "NOT_HAS_PROPERTY" => have.is_none(),
        _ => false,
    }
}

/// Delivers `events` to `target` as HubSpot does: a JSON array, signed with v3 and `secret`.
pub async fn deliver_webhook(
    http: &reqwest::Client,
    target: &reqwest::Url,
    secret: &str,
    events: &[Value],
) -> reqwest::Result<reqwest::StatusCode> {
    let body = serde_json::to_vec(events).unwrap_or_default();
    let ts = jiff::Timestamp::now().as_millisecond().to_string();
    let sig = crate::webhook::signature::hubspot_v3(
        secret.as_bytes(),
        "POST",
        target.as_str(),
        &body,
        &ts,
    );
    let resp = http
        .post(target.clone())
        .header("content-type", "application/json")
        .header("x-hubspot-signature-version", "v3")
        .header("x-hubspot-signature-v3", sig)
        .header("x-hubspot-request-timestamp", ts)
        .body(body)
        .send()
        .await?;
    Ok(resp.status())
}

/// A `deal.propertyChange` event as HubSpot sends it.
pub fn property_change_event(event_id: u64, object_id: &str, property: &str, value: &str) -> Value {
    json!({
        "eventId": event_id,
        "subscriptionId": 4242,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": jiff::Timestamp::now().as_millisecond(),
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id.parse::<u64>().unwrap_or_default(),
        "propertyName": property,
        "propertyValue": value,
        "changeSource": "CRM_UI",
    })
}

/// Inspection (not part of HubSpot): the request log, for tests and benchmarks.
async fn inspect_requests(State(sim): State<HubSpotSim>) -> Response {
    Json(super::log_json(&sim.request_log())).into_response()
}

/// Inspection (not part of HubSpot): every stored object of a type.
async fn inspect_records(State(sim): State<HubSpotSim>, Path(object): Path<String>) -> Response {
    Json(sim.objects(&object)).into_response()
}
