//! Webhook scenarios: signed HubSpot and PartnerStack webhooks into the running daemon. "intake"
//! measures accepted requests per second and their latency against a minimal receiver that only
//! checks the signature; "webhook-to-crm" measures how long a registration takes from its webhook
//! to the record in the CRM simulator, against one direct upsert under the same latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::report::ScenarioResult;
use super::{Size, ceiling, world};
use crate::app::Daemon;
use crate::config::PrmConfig;
use crate::demo;
use crate::engine::system_clock;
use crate::sim::SimServer;
use crate::sim::hubspot::{deliver_webhook, property_change_event};
use crate::sim::seed;
use crate::webhook::PRM_SIGNATURE_HEADER;
use crate::webhook::signature::{body_hmac, verify_body_hmac, verify_hubspot_v3};

/// The PartnerStack webhook secret the bench configures.
const PS_HOOK_SECRET: &str = "bench-partnerstack-webhook-secret";

/// Requests in flight at once while flooding the listener.
const SENDERS: usize = 32;

/// The `q` quantile (0..1) of sorted `xs`.
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let i = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs[i.min(xs.len() - 1)]
}

/// One webhook request, ready to send.
#[derive(Debug, Clone)]
enum Hook {
    HubSpot(Value),
    PartnerStack(Vec<u8>),
}

/// A PartnerStack `deal.updated` event body for a seeded deal.
fn partnerstack_event(deal: serde_json::Map<String, Value>, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": kind, "data": deal})).unwrap_or_default()
}

/// Sends one hook to `base` (`/webhooks/hubspot` or `/webhooks/partnerstack`); returns whether
/// it was accepted (2xx).
async fn send(http: &reqwest::Client, base: &str, hook: &Hook) -> anyhow::Result<bool> {
    match hook {
        Hook::HubSpot(event) => {
            let url = reqwest::Url::parse(&format!("{base}/webhooks/hubspot"))?;
            let status =
                deliver_webhook(http, &url, demo::HS_SECRET, std::slice::from_ref(event)).await?;
            Ok(status.is_success())
        }
        Hook::PartnerStack(body) => {
            let resp = http
                .post(format!("{base}/webhooks/partnerstack"))
                .header(
                    PRM_SIGNATURE_HEADER,
                    body_hmac(PS_HOOK_SECRET.as_bytes(), body),
                )
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            Ok(resp.status().is_success())
        }
    }
}

/// Sends every hook from `SENDERS` workers; returns (accepted, seconds, latencies in ms sorted).
async fn flood(
    http: &reqwest::Client,
    base: &str,
    hooks: Vec<Hook>,
) -> anyhow::Result<(usize, Duration, Vec<f64>)> {
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        hooks,
    )));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (http, base, queue) = (http.clone(), base.to_owned(), queue.clone());
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut accepted = 0;
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some(hook) = next else {
                    return Ok::<_, anyhow::Error>((accepted, lat));
                };
                let t = Instant::now();
                if send(&http, &base, &hook).await? {
                    accepted += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let mut accepted = 0;
    let mut lat = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (a, l) = done??;
        accepted += a;
        lat.extend(l);
    }
    let took = started.elapsed();
    lat.sort_by(f64::total_cmp);
    Ok((accepted, took, lat))
}

/// A receiver that checks the signature and answers 200, storing nothing: the intake ceiling.
async fn minimal_receiver() -> anyhow::Result<SimServer> {
    use axum::routing::post;
    let hubspot = |headers: HeaderMap, body: Bytes| async move {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
        let ts = h("x-hubspot-request-timestamp").map(str::to_owned);
        let sig = h("x-hubspot-signature-v3").map(str::to_owned);
        let host = h("host").unwrap_or_default().to_owned();
        let uri = format!("http://{host}/webhooks/hubspot");
        let now = jiff::Timestamp::now().as_millisecond();
        match verify_hubspot_v3(
            demo::HS_SECRET.as_bytes(),
            "POST",
            &uri,
            &body,
            ts.as_deref(),
            sig.as_deref(),
            now,
        ) {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::UNAUTHORIZED,
        }
    };
    let partnerstack = |headers: HeaderMap, body: Bytes| async move {
        let sig = headers
            .get(PRM_SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        match verify_body_hmac(PS_HOOK_SECRET.as_bytes(), &body, sig) {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::UNAUTHORIZED,
        }
    };
    let router = axum::Router::new()
        .route("/webhooks/hubspot", post(hubspot))
        .route("/webhooks/partnerstack", post(partnerstack));
    Ok(SimServer::start(router).await?)
}

/// `n` hooks, alternating HubSpot property changes and PartnerStack deal updates.
fn hooks(n: usize) -> Vec<Hook> {
    let deals = seed::program(n.div_ceil(2), 50);
    let mut out = Vec::with_capacity(n);
    let now = jiff::Timestamp::now().as_millisecond();
    for (i, mut deal) in deals.into_iter().enumerate() {
        deal.insert("created_at".into(), json!(now));
        deal.insert("updated_at".into(), json!(now + i as i64));
        out.push(Hook::PartnerStack(partnerstack_event(deal, "deal.updated")));
        let id = (9_000_000_001 + i as u64).to_string();
        out.push(Hook::HubSpot(property_change_event(
            i as u64 + 1,
            &id,
            "dealstage",
            "closedwon",
        )));
    }
    out.truncate(n);
    out
}

/// Scenario "webhook-intake": signed webhooks flooding the running daemon.
pub async fn intake(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new(
        "webhook-intake",
        ">= 5,000 accepted requests/s, p99 <= 25 ms (durable before 2xx)",
    );
    let n = match size {
        Size::Tiny => 1_000,
        Size::Full => 40_000,
    };
    let http = crate::connector::http_client(Duration::from_secs(30));

    let receiver = minimal_receiver().await?;
    let (ok, took, _) = flood(&http, &format!("http://{}", receiver.addr), hooks(n)).await?;
    ensure!(ok == n, "the minimal receiver refused {} webhooks", n - ok);
    let ceiling = world::rate(n as f64, took);
    receiver.stop().await;

    let (ps, ps_server) = world::partnerstack(0).await?;
    let (_, hs_server) = world::hubspot().await?;
    let state = world::TempState::new("webhook-intake")?;
    let mut config = world::config(&state, &ps_server, &hs_server);
    if let PrmConfig::PartnerStack(p) = &mut config.prm {
        p.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    }
    let daemon = Daemon::start(config, system_clock()).await?;
    let base = format!("http://{}", daemon.http_addr);
    let all = hooks(n);
    let sent = world::drive(
        &daemon,
        async {
            match flood(&http, &base, all).await {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::error!(error = %e, "webhook flood failed");
                    None
                }
            }
        },
        Duration::from_secs(300),
    )
    .await;
    daemon.shutdown().await;
    let Some(Some((accepted, took, lat))) = sent.value else {
        anyhow::bail!("sending webhooks to the daemon failed (see the log)");
    };
    let rate = world::rate(accepted as f64, took);
    let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));
    r.metric("accepted", rate, "requests/s");
    r.metric("p50", p50, "ms");
    r.metric("p99", p99, "ms");
    r.metric("refused", (n - accepted) as f64, "");
    r.metric("ceiling", ceiling, "requests/s");
    r.metric("ratio", world::ratio(rate, ceiling), "");
    r.metric("PartnerStack requests", ps.stats().requests as f64, "");
    r.judge(size, accepted == n && rate >= 5_000.0 && p99 <= 25.0);
    hs_server.stop().await;
    ps_server.stop().await;
    Ok(r)
}

/// Scenario "webhook-to-crm": 100 registrations/s, each told by a signed PartnerStack webhook,
/// with 150 ms latency on every simulator call.
pub async fn to_crm(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new(
        "webhook-to-crm",
        "p50 <= 300 ms, p99 <= 1 s at 100 registrations/s, realistic latency; no poll caused by a webhook",
    );
    let seconds = match size {
        Size::Tiny => 1,
        Size::Full => 30,
    };
    let n = seconds * 100;
    let latency = world::REALISTIC_LATENCY;
    let http = crate::connector::http_client(Duration::from_secs(30));

    // The floor: one direct 1-record upsert per registration under the same latency.
    let (floor_hs, floor_server) = world::hubspot().await?;
    floor_hs.turbulence().set_latency(latency);
    let m = ceiling::flow(crate::model::SystemKind::HubSpot, "deal-registration")?;
    let floor_deals = seed::program(50, 50);
    let mut floor = Vec::new();
    let url = floor_server.url("/crm/v3/objects/deals/batch/upsert");
    for d in &floor_deals {
        let body = serde_json::to_vec(&json!({"inputs": [ceiling::hubspot_input(&m, d)?]}))?;
        let t = Instant::now();
        http.post(url.clone())
            .bearer_auth(demo::HS_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    floor.sort_by(f64::total_cmp);
    floor_server.stop().await;

    let (ps, ps_server) = world::partnerstack(0).await?;
    let (hs, hs_server) = world::hubspot().await?;
    ps.turbulence().set_latency(latency);
    hs.turbulence().set_latency(latency);
    let state = world::TempState::new("webhook-to-crm")?;
    let mut config = world::config(&state, &ps_server, &hs_server);
    if let PrmConfig::PartnerStack(p) = &mut config.prm {
        p.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    }
    let daemon = Daemon::start(config, system_clock()).await?;
    let base = format!("http://{}", daemon.http_addr);
    let deals = seed::program(n, 50);
    // Let the daemon's first polls (start-up) pass before counting polls.
    world::drive(
        &daemon,
        tokio::time::sleep(Duration::from_secs(2)),
        Duration::from_secs(10),
    )
    .await;
    let (ps_lists, hs_searches) = (ps.stats().list_requests, hs.stats().searches);
    let cycles = crate::telemetry::meters::meters().poll_cycles();
    let sends = async {
        let mut sent_at = Vec::with_capacity(n);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for deal in deals {
            tick.tick().await;
            let key = ps.upsert_deal(deal);
            let body = partnerstack_event(ps.deal(&key).unwrap_or_default(), "deal.created");
            let at = jiff::Timestamp::now().as_millisecond();
            let ok = send(&http, &base, &Hook::PartnerStack(body))
                .await
                .unwrap_or(false);
            sent_at.push((key, at, ok));
        }
        // Then wait for every registration to reach HubSpot.
        world::until(|| hs.stats().created >= n as u64).await;
        sent_at
    };
    let driven = world::drive(&daemon, sends, Duration::from_secs(seconds as u64 + 60)).await;
    daemon.shutdown().await;
    // Poll cycles the daemon ran (each reads its object: one request or more), and the reads
    // the simulators saw: PartnerStack lists are polls; HubSpot searches are the reverse poll
    // and the rules' CRM facts (reserved accounts, open deals) for each decided group.
    let polls = crate::telemetry::meters::meters().poll_cycles() - cycles;
    let (lists, searches) = (
        ps.stats().list_requests - ps_lists,
        hs.stats().searches - hs_searches,
    );
    let mut e2e = Vec::new();
    if let Some(sent) = &driven.value {
        for (key, at, _) in sent {
            if let Some(o) = hs.find("deals", "prm_deal_id", key) {
                let created = o
                    .get("createdate")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_millisecond());
                if let Some(c) = created {
                    e2e.push((c - at) as f64);
                }
            }
        }
    }
    e2e.sort_by(f64::total_cmp);
    let (p50, p99) = (quantile(&e2e, 0.5), quantile(&e2e, 0.99));
    r.metric("p50", p50, "ms");
    r.metric("p99", p99, "ms");
    r.metric("reached the CRM", e2e.len() as f64, "");
    r.metric("floor p50 (one direct upsert)", quantile(&floor, 0.5), "ms");
    r.metric("poll cycles during the run", polls as f64, "");
    r.metric(
        "poll cycles/s",
        world::rate(polls as f64, driven.elapsed),
        "",
    );
    r.metric("PartnerStack list requests", lists as f64, "");
    r.metric(
        "HubSpot searches (reverse poll, CRM facts)",
        searches as f64,
        "",
    );
    if e2e.len() < n {
        r.notes.push(format!(
            "{} of {n} registrations reached HubSpot before the deadline",
            e2e.len()
        ));
    }
    // Polls on the daemon's own interval come to well under one a second; polls caused by
    // webhooks (100 a second) would not.
    let polls_per_sec = world::rate(polls as f64, driven.elapsed);
    r.judge(
        size,
        e2e.len() == n && p50 <= 300.0 && p99 <= 1_000.0 && polls_per_sec < 1.0,
    );
    hs_server.stop().await;
    ps_server.stop().await;
    Ok(r)
}
