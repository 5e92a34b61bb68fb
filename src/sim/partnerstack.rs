//! PartnerStack REST v2 simulator: deals, partnerships, customers, leads and actions lists with
//! `min_updated` filters, `starting_after` paging (limit 1-250), epoch-millisecond times, amounts
//! in cents, `PATCH /api/v2/deals/{key}` (key or external key), bearer-key or Basic
//! (public:secret key) auth, faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::partnerstack_table::{Filter, Table};
use super::{Injected, SimClock, Turbulence, http_date};

mod lifecycle;

/// The list endpoints this simulator serves.
pub const COLLECTIONS: &[&str] = &["deals", "partnerships", "customers", "leads", "actions"];

/// Fields a PATCH may change (per the deals reference).
const PATCHABLE: &[&str] = &[
    "account_name",
    "amount",
    "close_date",
    "contact_first_name",
    "contact_last_name",
    "customer_key",
    "external_key",
    "lost_reason",
    "partner_key",
    "source",
    "stage",
    "team",
    "team_member",
    "fields",
];

/// Request counts, for tests that assert "nothing was written".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub list_requests: u64,
    pub patches: u64,
    pub unauthorized: u64,
}

#[derive(Debug, Default)]
struct Inner {
    deals: Table,
    /// Partnerships, customers and leads, by collection.
    others: BTreeMap<String, Table>,
    stats: Stats,
    faults: std::collections::VecDeque<Injected>,
    /// Deals served by list requests, when a benchmark counts re-reads.
    rereads: Option<super::rereads::Rereads>,
}

impl Inner {
    fn collection(&self, name: &str) -> Option<&Table> {
        if name == "deals" {
            Some(&self.deals)
        } else {
            self.others.get(name)
        }
    }
}

/// A PartnerStack tenant in memory.
#[derive(Debug, Clone)]
pub struct PartnerStackSim {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<SimClock>,
    turbulence: Arc<Turbulence>,
    api_key: Arc<str>,
    /// With a public key, Basic `public:secret` is accepted besides the bearer secret key.
    public_key: Option<Arc<str>>,
    stages: Arc<[String]>,
}

impl PartnerStackSim {
    pub fn new(api_key: &str) -> Self {
        PartnerStackSim {
            inner: Arc::default(),
            clock: Arc::default(),
            turbulence: Arc::default(),
            api_key: api_key.into(),
            public_key: None,
            stages: [
                "submitted",
                "approved",
                "demo",
                "evaluation",
                "negotiation",
                "won",
                "lost",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        }
    }

    /// Also accepts HTTP Basic auth with `public_key` as the user and the API key as password.
    pub fn with_public_key(mut self, public_key: &str) -> Self {
        self.public_key = Some(public_key.into());
        self
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        use base64::Engine as _;
        let got = headers.get("authorization").and_then(|v| v.to_str().ok());
        let bearer = format!("Bearer {}", self.api_key);
        let basic = self.public_key.as_ref().map(|p| {
            let pair = format!("{p}:{}", self.api_key);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        got == Some(bearer.as_str()) || (got.is_some() && got == basic.as_deref())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock only happens in a failing test; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The routes, under `/api/v2`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v2/{collection}", get(list_items))
            .route("/api/v2/deals/{key}", get(get_deal).patch(patch_deal))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                |axum::extract::State(sim): axum::extract::State<PartnerStackSim>,
                 req: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    sim.turbulence.around(req, next).await
                },
            ))
            .with_state(self.clone())
    }

    /// Inserts or replaces a deal as a partner would register it; stamps created/updated times.
    pub fn upsert_deal(&self, mut deal: Map<String, Value>) -> String {
        let now = self.clock.tick();
        let key = deal
            .get("key")
            .and_then(Value::as_str)
            .map_or_else(|| format!("deal_{now}"), str::to_owned);
        let mut inner = self.lock();
        let created = inner
            .deals
            .get(&key)
            .and_then(|d| d.get("created_at").cloned())
            .unwrap_or(json!(now));
        deal.insert("key".into(), json!(key));
        deal.insert("created_at".into(), created);
        deal.insert("updated_at".into(), json!(now));
        inner.deals.put(&key, &deal);
        key
    }

    /// Inserts or replaces a partnership, customer or lead (`collection`), stamping its times.
    pub fn upsert_item(&self, collection: &str, item: Map<String, Value>) -> String {
        if collection == "deals" {
            return self.upsert_deal(item);
        }
        self.put_item(collection, item, None)
    }

    /// [`Self::upsert_item`] for a record the PRM created at `created_ms` (epoch ms), as an older
    /// record seeded into a test has; its `updated_at` is now, as for any change.
    pub fn upsert_item_created(
        &self,
        collection: &str,
        item: Map<String, Value>,
        created_ms: i64,
    ) -> String {
        self.put_item(collection, item, Some(created_ms))
    }

    fn put_item(
        &self,
        collection: &str,
        mut item: Map<String, Value>,
        created: Option<i64>,
    ) -> String {
        let now = self.clock.tick();
        let key = item
            .get("key")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{collection}_{now}"), str::to_owned);
        let mut inner = self.lock();
        let items = inner.others.entry(collection.into()).or_default();
        let created = created.map(|c| json!(c)).unwrap_or_else(|| {
            items
                .get(&key)
                .and_then(|d| d.get("created_at").cloned())
                .unwrap_or(json!(now))
        });
        item.insert("key".into(), json!(key));
        item.insert("created_at".into(), created);
        item.insert("updated_at".into(), json!(now));
        items.put(&key, &item);
        key
    }

    /// Stores `item` exactly as given (no key or times stamped), as a broken vendor record
    /// would look; it is listed under an internal slot name.
    pub fn insert_raw(&self, collection: &str, item: Map<String, Value>) {
        let mut inner = self.lock();
        let slot = format!("~raw{}", inner.deals.len() + inner.others.len());
        if collection == "deals" {
            inner.deals.put(&slot, &item);
        } else {
            inner
                .others
                .entry(collection.into())
                .or_default()
                .put(&slot, &item);
        }
    }

    /// Every item of `collection`, by key.
    pub fn items(&self, collection: &str) -> Vec<Map<String, Value>> {
        self.lock()
            .collection(collection)
            .map(Table::all)
            .unwrap_or_default()
    }

    /// A deal's current fields.
    pub fn deal(&self, key: &str) -> Option<Map<String, Value>> {
        self.lock().deals.get(key)
    }

    /// A deal's custom `fields` array as a map from key to value (for assertions).
    pub fn custom_fields(&self, key: &str) -> Map<String, Value> {
        self.deal(key)
            .and_then(|d| d.get("fields").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| Some((e.get("key")?.as_str()?.to_owned(), e.get("value")?.clone())))
            .collect()
    }

    /// All deals, by key.
    pub fn deals(&self) -> Vec<Map<String, Value>> {
        self.lock().deals.all()
    }

    /// Starts counting deals listed again unchanged after a client restart (see
    /// [`PartnerStackSim::client_restarted`]).
    pub fn track_rereads(&self) {
        self.lock().rereads = Some(super::rereads::Rereads::default());
    }

    /// The client restarts now (when re-reads are tracked); it re-reads its last `overlap` on
    /// every pass by design.
    pub fn client_restarted(&self, overlap: std::time::Duration) {
        let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        if let Some(r) = &mut self.lock().rereads {
            r.restart(overlap_ms);
        }
    }

    /// Deals listed again after the restart although unchanged since they were first listed.
    pub fn rereads(&self) -> u64 {
        self.lock().rereads.as_ref().map_or(0, |r| r.rereads())
    }

    /// Latency and lost answers (see [`Turbulence`]).
    pub fn turbulence(&self) -> &Turbulence {
        &self.turbulence
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The next requests get these faults, in order, instead of their answers.
    pub fn inject<I: Into<Injected>>(&self, faults: impl IntoIterator<Item = I>) {
        self.lock()
            .faults
            .extend(faults.into_iter().map(Into::into));
    }

    /// Checks auth and injected faults; counts the request.
    #[allow(clippy::result_large_err)] // axum responses are the natural error here
    fn gate(&self, headers: &HeaderMap) -> Result<(), Response> {
        let mut inner = self.lock();
        inner.stats.requests += 1;
        if !self.authorized(headers) {
            inner.stats.unauthorized += 1;
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "Invalid or missing API key",
            ));
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let (status, retry) = match inner.faults.pop_front() {
            None => return Ok(()),
            Some(Injected::Malformed) => {
                return Err((StatusCode::OK, "<html>maintenance</html>").into_response());
            }
            Some(Injected::Fault(f)) => (f.status, f.retry_after.map(|s| s.to_string())),
            Some(Injected::RetryAtDate { status, secs }) => (
                status,
                Some(http_date(now + i64::try_from(secs).unwrap_or(0) * 1000)),
            ),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = error(status, "injected fault");
        if let Some(v) = retry.and_then(|r| axum::http::HeaderValue::from_str(&r).ok()) {
            resp.headers_mut().insert("retry-after", v);
        }
        Err(resp)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "status": status.as_u16()})),
    )
        .into_response()
}

fn ok(data: Value, message: &str) -> Response {
    Json(json!({"data": data, "message": message, "status": 200})).into_response()
}

async fn list_items(
    State(sim): State<PartnerStackSim>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    if !COLLECTIONS.contains(&collection.as_str()) {
        return error(StatusCode::NOT_FOUND, "Not found");
    }
    let num = |k: &str| q.get(k).map(|v| v.parse::<i64>());
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=250).contains(&n) => n,
        _ => return error(StatusCode::BAD_REQUEST, "limit must be between 1 and 250"),
    };
    if q.contains_key("starting_after") && q.contains_key("ending_before") {
        return error(
            StatusCode::BAD_REQUEST,
            "starting_after and ending_before are mutually exclusive",
        );
    }
    let mut bounds = [i64::MIN, i64::MAX, i64::MIN, i64::MAX];
    for (i, k) in ["min_updated", "max_updated", "min_created", "max_created"]
        .iter()
        .enumerate()
    {
        match num(k) {
            None => {}
            Some(Ok(v)) => bounds[i] = v,
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{k} must be epoch milliseconds"),
                );
            }
        }
    }
    let filter = Filter {
        min_updated: bounds[0],
        max_updated: bounds[1],
        min_created: bounds[2],
        max_created: bounds[3],
        partner_key: q.get("partner_key").cloned(),
    };
    let mut inner = sim.lock();
    inner.stats.list_requests += 1;
    let empty = Table::default();
    let listed = inner.collection(&collection).unwrap_or(&empty).page(
        &filter,
        q.get("starting_after").map(String::as_str),
        limit,
    );
    let Ok((page, has_more)) = listed else {
        return error(
            StatusCode::BAD_REQUEST,
            "starting_after does not name an item in this list",
        );
    };
    if collection == "deals"
        && let Some(r) = &mut inner.rereads
    {
        for d in &page {
            let key = d.get("key").and_then(Value::as_str).unwrap_or_default();
            r.served(
                key,
                d.get("updated_at").and_then(Value::as_i64).unwrap_or(0),
            );
        }
    }
    drop(inner);
    ok(
        json!({"has_more": has_more, "items": page}),
        "Page returned successfully",
    )
}

async fn get_deal(
    State(sim): State<PartnerStackSim>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    match sim.lock().deals.find(&key) {
        Some(d) => ok(Value::Object(d), "Deal returned successfully"),
        None => error(StatusCode::NOT_FOUND, "Deal not found"),
    }
}

/// The deal reference's `fields`: an array of objects (`{"key", "value"}` here).
fn custom_fields_valid(v: &Value) -> bool {
    v.as_array().is_some_and(|items| {
        items
            .iter()
            .all(|e| e.get("key").and_then(Value::as_str).is_some())
    })
}

async fn patch_deal(
    State(sim): State<PartnerStackSim>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(Json(Value::Object(patch))) = body else {
        return error(StatusCode::BAD_REQUEST, "body must be a JSON object");
    };
    for (k, v) in &patch {
        if !PATCHABLE.contains(&k.as_str()) {
            return error(StatusCode::BAD_REQUEST, &format!("{k} cannot be updated"));
        }
        if k == "stage"
            && !v
                .as_str()
                .is_some_and(|s| sim.stages.iter().any(|x| x == s))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "stage must appear in Deals Stage list found in group settings",
            );
        }
        if k == "fields" && !custom_fields_valid(v) {
            return error(
                StatusCode::BAD_REQUEST,
                "fields must be an array of objects, each with a string key",
            );
        }
        if k == "amount" && !(v.is_i64() || v.is_null()) {
            return error(
                StatusCode::BAD_REQUEST,
                "amount must be an integer number of cents",
            );
        }
    }
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    let Some(mut deal) = inner.deals.find(&key) else {
        return error(StatusCode::NOT_FOUND, "Deal not found");
    };
    let real_key = deal
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or(&key)
        .to_owned();
    inner.stats.patches += 1;
    deal.extend(patch);
    deal.insert("updated_at".into(), json!(now));
    inner.deals.put(&real_key, &deal);
    let out = Value::Object(deal);
    drop(inner);
    ok(out, "Deal updated successfully")
}
