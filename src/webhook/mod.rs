//! The HTTP listener for the webhook endpoints (health and metrics are on the admin listener,
//! `crate::admin`). Handlers only verify, hand the body to its connector's parser, store durably
//! and answer: a 2xx means the events are committed to the inbox. No vendor wire format is read
//! here.

pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tower_http::limit::RequestBodyLimitLayer;

use crate::connector::hubspot::webhook as hubspot_webhook;
use crate::connector::{partnerstack, rest};
use crate::engine::Clock;
use crate::failpoint::FailPoints;
use crate::model::Change;
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
    /// The planner's signal: woken after each stored event so it is planned at once (a webhook
    /// never makes a poller read).
    pub wake: Arc<Notify>,
    pub hubspot_secret: Option<SecretString>,
    pub partnerstack_secret: Option<SecretString>,
    /// The REST PRM's webhook secret and the profile its bodies are read with.
    pub rest: Option<RestHook>,
    pub clock: Clock,
    pub failpoints: FailPoints,
    /// Webhook requests being stored at once; beyond it a request gets 503 + Retry-After at
    /// once instead of waiting in memory.
    pub intake: Arc<Semaphore>,
}

/// What `/webhooks/rest` needs: the shared secret and the PRM's profile.
#[derive(Clone)]
pub struct RestHook {
    pub secret: SecretString,
    pub profile: Arc<rest::RestProfile>,
}

impl std::fmt::Debug for RestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestHook")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .field("hubspot", &self.hubspot_secret.is_some())
            .field("partnerstack", &self.partnerstack_secret.is_some())
            .field("rest", &self.rest.is_some())
            .finish_non_exhaustive()
    }
}

/// The routes, with a body-size limit (oversized bodies get 413).
pub fn router(state: WebhookState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/webhooks/hubspot", post(hubspot))
        .route("/webhooks/partnerstack", post(partnerstack))
        .route("/webhooks/rest", post(rest))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(axum::middleware::from_fn(count_result))
        .with_state(state)
}

/// Counts every webhook answer in `prmsync_webhooks_total{system, result}`.
async fn count_result(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let system = match req.uri().path() {
        "/webhooks/hubspot" => "hubspot",
        "/webhooks/partnerstack" => "partnerstack",
        "/webhooks/rest" => "rest",
        _ => "other",
    };
    let resp = next.run(req).await;
    crate::telemetry::meters::meters().webhook(system, webhook_result(resp.status()));
    resp
}

/// The `result` label of a webhook answer.
fn webhook_result(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "accepted",
        401 => "rejected",
        400 | 422 => "malformed",
        413 => "too_large",
        503 => "unavailable",
        404 | 405 => "not_configured",
        _ => "error",
    }
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
    // The URL the sender signed: a multi-tenant listener hands the request on under
    // `/webhooks/hubspot`, keeping `/webhooks/{tenant}/hubspot` here (`crate::tenants::routes`).
    OriginalUri(uri): OriginalUri,
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
    let changes = match hubspot_webhook::parse_events(&body) {
        Ok(c) => c,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e),
    };
    stage(&s, changes).await
}

/// PartnerStack: `{"event": "...", "data": {...}}`, signed with prmsync's body HMAC. The
/// connector's parser reads every event prmsync syncs (deals, partnerships, customers, leads);
/// the others are acknowledged and dropped.
async fn partnerstack(State(s): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &s.partnerstack_secret else {
        return reject(
            StatusCode::NOT_FOUND,
            "PartnerStack webhooks are not configured (partnerstack.webhook_secret)",
        );
    };
    if let Err(r) = verify_prm(secret, &headers, &body) {
        return r;
    }
    match partnerstack::webhook::parse(&body) {
        Ok(Some(change)) => stage(&s, vec![change]).await,
        Ok(None) => ignored(),
        Err(e) => reject(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The declarative REST PRM: prmsync's event shape (see `connector::rest::webhook`), signed
/// with prmsync's body HMAC under `rest.webhook_secret`.
async fn rest(State(s): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hook) = &s.rest else {
        return reject(
            StatusCode::NOT_FOUND,
            "REST PRM webhooks are not configured (rest.webhook_secret)",
        );
    };
    if let Err(r) = verify_prm(&hook.secret, &headers, &body) {
        return r;
    }
    match rest::webhook::parse(&hook.profile, &body) {
        Ok(changes) if changes.is_empty() => ignored(),
        Ok(changes) => stage(&s, changes).await,
        Err(e) => reject(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Checks prmsync's body HMAC header; the error is the response to send.
#[allow(clippy::result_large_err)] // the response is the natural error here
fn verify_prm(secret: &SecretString, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    signature::verify_body_hmac(
        secret.expose_secret().as_bytes(),
        body,
        header(headers, PRM_SIGNATURE_HEADER),
    )
    .map_err(|e| reject(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// 200 for a verified event prmsync does not sync (the sender must not retry it).
fn ignored() -> Response {
    (StatusCode::OK, Json(json!({ "received": 0, "new": 0 }))).into_response()
}
