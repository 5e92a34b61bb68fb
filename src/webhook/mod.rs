//! The HTTP listener for the webhook endpoints (health and metrics are on the admin listener,
//! `crate::admin`). Handlers only verify, store durably and answer: a 2xx means the event is
//! committed to the inbox.

pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tower_http::limit::RequestBodyLimitLayer;

use crate::engine::Clock;
use crate::failpoint::FailPoints;
use crate::model::{Change, ChangeKind, ObjectRef, Record, SystemKind};
use crate::store::Store;

/// Webhook requests stored at once before new ones get 503 (the store commits one at a time).
pub const MAX_INFLIGHT_WEBHOOKS: usize = 64;
/// Seconds a sender is asked to wait after a 503.
const RETRY_AFTER_SECS: u32 = 30;

/// The header carrying prmsync's HMAC for PRM webhooks.
pub const PRM_SIGNATURE_HEADER: &str = "X-Prmsync-Signature";

/// What the handlers share.
#[derive(Clone)]
pub struct WebhookState {
    pub store: Store,
    /// Set once config, migrations and listeners are up; cleared while the store refuses writes.
    pub ready: Arc<AtomicBool>,
    /// Woken after each stored event so the engine picks it up at once.
    pub wake: Arc<Notify>,
    pub hubspot_secret: Option<SecretString>,
    pub partnerstack_secret: Option<SecretString>,
    pub clock: Clock,
    pub failpoints: FailPoints,
    /// Webhook requests being stored at once; beyond it a request gets 503 + Retry-After at
    /// once instead of waiting in memory.
    pub intake: Arc<Semaphore>,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .field("hubspot", &self.hubspot_secret.is_some())
            .field("partnerstack", &self.partnerstack_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// The routes, with a body-size limit (oversized bodies get 413).
pub fn router(state: WebhookState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/webhooks/hubspot", post(hubspot))
        .route("/webhooks/partnerstack", post(partnerstack))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .with_state(state)
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::warn!(status = status.as_u16(), %message, "webhook rejected");
    (status, Json(json!({ "error": message }))).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn unavailable(message: &str) -> Response {
    let mut r = reject(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert("retry-after", RETRY_AFTER_SECS.into());
    r
}

/// Stores the changes durably, then answers 200; a store failure answers 503 so the sender
/// retries, and marks prmsync not ready until a write succeeds again. Beyond
/// [`MAX_INFLIGHT_WEBHOOKS`] requests at once, 503 without waiting.
async fn stage(s: &WebhookState, changes: Vec<Change>) -> Response {
    let Ok(_permit) = s.intake.clone().try_acquire_owned() else {
        return unavailable("too many webhook requests at once; retry later");
    };
    let n = changes.len();
    match s.store.stage_changes(changes, None, (s.clock)()).await {
        Ok(new) => {
            s.failpoints.hit("webhook.after_commit");
            s.ready.store(true, Ordering::Relaxed);
            s.wake.notify_one();
            tracing::info!(received = n, new, "webhook events stored");
            (StatusCode::OK, Json(json!({ "received": n, "new": new }))).into_response()
        }
        Err(e) => {
            s.ready.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot store webhook events; asking the sender to retry");
            unavailable("temporarily unable to store events")
        }
    }
}

/// HubSpot: an array of events, signed with v3 (or v1/v2 for older apps). Events are thin, so
/// they are stored as hints that make the engine re-read the object.
async fn hubspot(
    State(s): State<WebhookState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &s.hubspot_secret else {
        return reject(
            StatusCode::NOT_FOUND,
            "HubSpot webhooks are not configured (hubspot.client_secret)",
        );
    };
    let secret = secret.expose_secret().as_bytes();
    let proto = header(&headers, "x-forwarded-proto").unwrap_or("http");
    let host = header(&headers, "host").unwrap_or("localhost");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let full_uri = format!("{proto}://{host}{path}");
    let verified = match header(&headers, "x-hubspot-signature-version") {
        Some(v @ ("v1" | "v2")) => signature::verify_hubspot_legacy(
            v,
            secret,
            method.as_str(),
            &full_uri,
            &body,
            header(&headers, "x-hubspot-signature"),
        ),
        _ => signature::verify_hubspot_v3(
            secret,
            method.as_str(),
            &full_uri,
            &body,
            header(&headers, "x-hubspot-request-timestamp"),
            header(&headers, "x-hubspot-signature-v3"),
            (s.clock)(),
        ),
    };
    if let Err(e) = verified {
        return reject(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let changes = match parse_hubspot_events(&body) {
        Ok(c) => c,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e),
    };
    stage(&s, changes).await
}

/// Parses a HubSpot webhook body (a JSON array of events) into changes; subscriptions prmsync
/// does not sync are dropped. Pure, for the handler and the fuzz target.
pub fn parse_hubspot_events(body: &[u8]) -> Result<Vec<Change>, String> {
    let events: Vec<Value> = match serde_json::from_slice(body) {
        Ok(Value::Array(a)) => a,
        Ok(_) => return Err("expected a JSON array of events".into()),
        Err(e) => return Err(format!("malformed JSON: {e}")),
    };
    let mut changes = Vec::with_capacity(events.len());
    for (i, ev) in events.into_iter().enumerate() {
        if let Some(c) = hubspot_change(ev).map_err(|e| format!("event {i}: {e}"))? {
            changes.push(c);
        }
    }
    Ok(changes)
}

fn hubspot_change(ev: Value) -> Result<Option<Change>, String> {
    let field = |k: &str| ev.get(k).ok_or_else(|| format!("missing {k}"));
    let event_id = field("eventId")?.to_string();
    let portal = ev.get("portalId").map(Value::to_string).unwrap_or_default();
    let object_id = field("objectId")?.to_string().trim_matches('"').to_owned();
    let occurred = field("occurredAt")?
        .as_i64()
        .ok_or("occurredAt must be epoch milliseconds")?;
    let sub = field("subscriptionType")?
        .as_str()
        .ok_or("subscriptionType must be text")?;
    let (kind, action) = sub
        .split_once('.')
        .ok_or("subscriptionType must look like deal.creation")?;
    let object = match kind {
        "deal" => "deals",
        "company" => "companies",
        "contact" => "contacts",
        // Subscriptions prmsync does not sync are acknowledged and ignored.
        _ => return Ok(None),
    };
    let kind = if action == "deletion" {
        ChangeKind::Delete
    } else {
        ChangeKind::Hint
    };
    let fields = match ev {
        Value::Object(m) => m,
        _ => return Err("an event must be an object".into()),
    };
    Ok(Some(Change {
        event_id: format!("hubspot:{portal}:{event_id}"),
        object: ObjectRef {
            system: SystemKind::HubSpot,
            object: object.into(),
        },
        kind,
        record: Record {
            id: object_id,
            modified_ms: occurred,
            fields,
        },
    }))
}

/// PartnerStack: `{"event": "deal.updated", "data": {deal}}`, signed with prmsync's body HMAC.
async fn partnerstack(State(s): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &s.partnerstack_secret else {
        return reject(
            StatusCode::NOT_FOUND,
            "PartnerStack webhooks are not configured (partnerstack.webhook_secret)",
        );
    };
    if let Err(e) = signature::verify_body_hmac(
        secret.expose_secret().as_bytes(),
        &body,
        header(&headers, PRM_SIGNATURE_HEADER),
    ) {
        return reject(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let event = v.get("event").and_then(Value::as_str).unwrap_or_default();
    let Some(object) = event.split(['.', '_']).next().and_then(|k| match k {
        "deal" => Some("deals"),
        _ => None,
    }) else {
        // Events prmsync does not sync (partnerships, agreements, ...) are acknowledged.
        return (
            StatusCode::OK,
            Json(json!({ "received": 0, "ignored": event })),
        )
            .into_response();
    };
    let Some(Value::Object(data)) = v.get("data").cloned() else {
        return reject(StatusCode::BAD_REQUEST, "missing data object");
    };
    let Some(key) = data.get("key").and_then(Value::as_str).map(str::to_owned) else {
        return reject(StatusCode::BAD_REQUEST, "data.key is missing");
    };
    let Some(modified_ms) = data
        .get("updated_at")
        .or_else(|| data.get("created_at"))
        .and_then(Value::as_i64)
    else {
        return reject(
            StatusCode::BAD_REQUEST,
            "data.updated_at must be epoch milliseconds",
        );
    };
    let object = ObjectRef {
        system: SystemKind::PartnerStack,
        object: object.into(),
    };
    let mut change = Change::versioned(
        object,
        Record {
            id: key,
            modified_ms,
            fields: data,
        },
    );
    if event.ends_with("deleted") {
        change.kind = ChangeKind::Delete;
        change.event_id.push_str(":deleted");
    }
    stage(&s, vec![change]).await
}
