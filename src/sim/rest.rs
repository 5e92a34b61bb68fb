//! A generic REST PRM simulator for the declarative `rest` profile: `prm-key` auth, list endpoints
//! with `updated_since` (epoch ms), page-token or offset paging, `PUT /api/{object}/{id}` (creates
//! or replaces the whole record, as PUT does) and `PATCH` (changes only the fields sent), RFC 3339
//! `updated_at` times, and the shared fault layer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::{Injected, SimClock, Turbulence, http_date};

/// Stages a deal may take in this PRM.
pub const STAGES: &[&str] = &["registered", "approved", "rejected", "won", "lost"];

/// Counts the tests assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub lists: u64,
    pub upserts: u64,
    pub created: u64,
    pub unauthorized: u64,
}

/// An item and its modification time (epoch ms).
type Item = (i64, Map<String, Value>);

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, BTreeMap<String, Item>>,
    /// Per object, (modification, id) of every item: lists walk this instead of sorting.
    by_modified: BTreeMap<String, std::collections::BTreeSet<(i64, String)>>,
    stats: Stats,
    faults: VecDeque<Injected>,
}

/// A generic PRM tenant in memory.
#[derive(Debug, Clone)]
pub struct RestPrmSim {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<SimClock>,
    turbulence: Arc<Turbulence>,
    api_key: Arc<str>,
}

impl RestPrmSim {
    pub fn new(api_key: &str) -> Self {
        RestPrmSim {
            inner: Arc::default(),
            clock: Arc::default(),
            turbulence: Arc::default(),
            api_key: api_key.into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `/api/{object}` lists and `/api/{object}/{id}` upserts.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/{object}", get(list))
            .route("/api/{object}/{id}", put(replace).patch(update))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                |axum::extract::State(sim): axum::extract::State<RestPrmSim>,
                 req: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    sim.turbulence.around(req, next).await
                },
            ))
            .with_state(self.clone())
    }

    /// Adds or replaces an item as a partner would; stamps `updated_at`.
    pub fn put(&self, object: &str, id: &str, fields: Map<String, Value>) {
        let now = self.clock.tick();
        store(&mut self.lock(), object, id, fields, now);
    }

    /// Every item of `object`.
    pub fn items(&self, object: &str) -> Vec<Map<String, Value>> {
        self.lock()
            .objects
            .get(object)
            .map(|m| m.values().map(|(_, f)| f.clone()).collect())
            .unwrap_or_default()
    }

    /// Latency and lost answers (see [`Turbulence`]).
    pub fn turbulence(&self) -> &Turbulence {
        &self.turbulence
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The next requests get these instead of their answers.
    pub fn inject<I: Into<Injected>>(&self, faults: impl IntoIterator<Item = I>) {
        self.lock()
            .faults
            .extend(faults.into_iter().map(Into::into));
    }

    #[allow(clippy::result_large_err)] // axum responses are the natural error here
    fn gate(&self, headers: &HeaderMap) -> Result<(), Response> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut inner = self.lock();
        inner.stats.requests += 1;
        let expected = format!("prm-key {}", self.api_key);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            inner.stats.unauthorized += 1;
            return Err(error(StatusCode::UNAUTHORIZED, "invalid API key"));
        }
        let (status, retry) = match inner.faults.pop_front() {
            None => return Ok(()),
            Some(Injected::Malformed) => {
                return Err((StatusCode::OK, "<html>login</html>").into_response());
            }
            Some(Injected::Fault(f)) => (f.status, f.retry_after.map(|s| s.to_string())),
            Some(Injected::RetryAtDate { status, secs }) => (
                status,
                Some(http_date(now + i64::try_from(secs).unwrap_or(0) * 1000)),
            ),
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = error(code, "injected fault");
        if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
            r.headers_mut().insert("retry-after", v);
        }
        Err(r)
    }
}

fn store(inner: &mut Inner, object: &str, id: &str, mut fields: Map<String, Value>, now: i64) {
    let ts = jiff::Timestamp::from_millisecond(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string();
    fields.insert("id".into(), json!(id));
    fields.insert("updated_at".into(), json!(ts));
    let order = inner.by_modified.entry(object.into()).or_default();
    if let Some((old, _)) = inner.objects.get(object).and_then(|m| m.get(id)) {
        order.remove(&(*old, id.to_owned()));
    }
    order.insert((now, id.to_owned()));
    inner
        .objects
        .entry(object.into())
        .or_default()
        .insert(id.into(), (now, fields));
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "error": {"message": message}})),
    )
        .into_response()
}

async fn list(
    State(sim): State<RestPrmSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let since = match q.get("updated_since").map(|v| v.parse::<i64>()) {
        None => i64::MIN,
        Some(Ok(v)) => v,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "updated_since must be epoch milliseconds",
            );
        }
    };
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        _ => return error(StatusCode::BAD_REQUEST, "limit must be 1 to 500"),
    };
    let offset = match (q.get("offset"), q.get("page_token")) {
        (Some(o), _) => o.parse::<usize>().ok(),
        (None, Some(t)) => t.strip_prefix("pt-").and_then(|n| n.parse().ok()),
        (None, None) => Some(0),
    };
    let Some(offset) = offset else {
        return error(StatusCode::BAD_REQUEST, "bad offset or page_token");
    };
    let mut inner = sim.lock();
    inner.stats.lists += 1;
    let (objects, order) = (&inner.objects, &inner.by_modified);
    let hits = || {
        order
            .get(&object)
            .into_iter()
            .flat_map(|o| o.range((since, String::new())..))
            .filter_map(|(_, id)| objects.get(&object)?.get(id))
    };
    let total = hits().count();
    let page: Vec<Value> = hits()
        .skip(offset)
        .take(limit)
        .map(|(_, f)| Value::Object(f.clone()))
        .collect();
    let more = offset + page.len() < total;
    let next = if more {
        json!(format!("pt-{}", offset + page.len()))
    } else {
        Value::Null
    };
    Json(json!({"success": true, "data": {"count": total, "results": page, "next_page_token": next}}))
        .into_response()
}

/// `PUT`: creates the record or replaces it with the body (fields not sent are gone).
async fn replace(
    State(sim): State<RestPrmSim>,
    headers: HeaderMap,
    Path((object, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    write(sim, headers, object, id, body, true).await
}

/// `PATCH`: changes only the fields sent; creates the record if it does not exist.
async fn update(
    State(sim): State<RestPrmSim>,
    headers: HeaderMap,
    Path((object, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    write(sim, headers, object, id, body, false).await
}

async fn write(
    sim: RestPrmSim,
    headers: HeaderMap,
    object: String,
    id: String,
    body: Option<Json<Value>>,
    replace: bool,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(Json(Value::Object(fields))) = body else {
        return error(StatusCode::BAD_REQUEST, "body must be a JSON object");
    };
    if let Some(stage) = fields.get("stage")
        && !stage.as_str().is_some_and(|s| STAGES.contains(&s))
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("stage {stage} is not one of {STAGES:?}"),
        );
    }
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    inner.stats.upserts += 1;
    let existing = inner
        .objects
        .get(&object)
        .and_then(|m| m.get(&id))
        .map(|(_, f)| f.clone());
    let created = existing.is_none();
    let record = if replace {
        fields
    } else {
        let mut merged = existing.unwrap_or_default();
        merged.extend(fields);
        merged
    };
    store(&mut inner, &object, &id, record, now);
    inner.stats.created += u64::from(created);
    let mut out = inner.objects[&object][&id].1.clone();
    out.insert("created".into(), json!(created));
    Json(Value::Object(out)).into_response()
}
