//! Minimal clients: the requests the daemon makes, sent straight to a simulator with nothing in
//! between (no state file, no planning), so each scenario knows the ceiling it runs under.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Map, Value, json};

use super::report::ScenarioResult;
use super::{Size, world};
use crate::demo;
use crate::mapping::{Mapping, MappingSet, Op};
use crate::model::SystemKind;
use crate::sim::seed;

/// Requests in flight at once from a minimal client (as many as the daemon may keep).
pub const CONCURRENCY: usize = 4;

/// The shipped flow `name` for PartnerStack and `crm`.
pub fn flow(crm: SystemKind, name: &str) -> anyhow::Result<Arc<Mapping>> {
    let set = MappingSet::builtin().map_err(|e| anyhow::anyhow!("built-in mappings: {e}"))?;
    set.active_for(SystemKind::PartnerStack, crm)
        .into_iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no built-in flow {name}"))
}

/// A deal as the HubSpot connector sends it: the mapped fields as strings.
pub fn hubspot_input(m: &Mapping, deal: &Map<String, Value>) -> anyhow::Result<Value> {
    let key = deal.get("key").and_then(Value::as_str).unwrap_or_default();
    let props: Map<String, Value> = m
        .to_target(deal, Op::Create)?
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, Value::String(s))
        })
        .collect();
    Ok(json!({"id": key, "idProperty": m.external_id, "properties": props}))
}

/// Sends `bodies` to `url` (POST or PATCH) from `CONCURRENCY` workers; returns the time taken.
/// Every answer must be a 2xx.
pub async fn send_all(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    auth: &str,
    bodies: Vec<Vec<u8>>,
) -> anyhow::Result<Duration> {
    let queue = Arc::new(Mutex::new(VecDeque::from(bodies)));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, method, url, auth, queue) = (
            http.clone(),
            method.clone(),
            url.clone(),
            auth.to_owned(),
            queue.clone(),
        );
        workers.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some(body) = next else {
                    return Ok::<(), anyhow::Error>(());
                };
                let resp = http
                    .request(method.clone(), url.clone())
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                ensure!(
                    resp.status().is_success(),
                    "the simulator answered {}",
                    resp.status()
                );
                resp.bytes().await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// Reads every deal from the PartnerStack simulator as the connector does (pages of 250 after
/// the last key); returns the deals and the time taken.
pub async fn read_partnerstack(
    http: &reqwest::Client,
    base: &reqwest::Url,
) -> anyhow::Result<(Vec<Map<String, Value>>, Duration)> {
    let started = Instant::now();
    let mut deals = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = base.join("api/v2/deals")?;
        url.query_pairs_mut().append_pair("limit", "250");
        if let Some(a) = &after {
            url.query_pairs_mut().append_pair("starting_after", a);
        }
        let page: Value = http
            .get(url)
            .bearer_auth(demo::PS_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = page
            .pointer("/data/items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        after = items
            .last()
            .and_then(|d| d.get("key"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        deals.extend(items.into_iter().filter_map(|d| match d {
            Value::Object(m) => Some(m),
            _ => None,
        }));
        if page.pointer("/data/has_more") != Some(&Value::Bool(true)) || after.is_none() {
            return Ok((deals, started.elapsed()));
        }
    }
}

/// HubSpot batch-upsert bodies of 100 for `deals`.
pub fn hubspot_batches(m: &Mapping, deals: &[Map<String, Value>]) -> anyhow::Result<Vec<Vec<u8>>> {
    deals
        .chunks(100)
        .map(|chunk| {
            let inputs = chunk
                .iter()
                .map(|d| hubspot_input(m, d))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(serde_json::to_vec(&json!({ "inputs": inputs }))?)
        })
        .collect()
}

/// The minimal client's whole backfill: read every PartnerStack page, map, and upsert into
/// HubSpot in batches of 100. Returns records per second.
pub async fn hubspot_backfill(
    http: &reqwest::Client,
    ps: &reqwest::Url,
    hs: &reqwest::Url,
) -> anyhow::Result<f64> {
    let m = flow(SystemKind::HubSpot, "deal-registration")?;
    let started = Instant::now();
    let (deals, _) = read_partnerstack(http, ps).await?;
    let bodies = hubspot_batches(&m, &deals)?;
    send_all(
        http,
        reqwest::Method::POST,
        hs.join("crm/v3/objects/deals/batch/upsert")?,
        &format!("Bearer {}", demo::HS_TOKEN),
        bodies,
    )
    .await?;
    Ok(world::rate(deals.len() as f64, started.elapsed()))
}

/// Scenario "simulator-ceiling": 100-record batch upserts straight to the HubSpot simulator.
pub async fn scenario(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new(
        "simulator-ceiling",
        ">= 50,000 records/s (minimal client, batch upserts, no latency)",
    );
    let n = size.backfill_deals();
    let m = flow(SystemKind::HubSpot, "deal-registration")?;
    let deals = seed::program(n, 50);
    let bodies = hubspot_batches(&m, &deals)?;
    let (hs, server) = world::hubspot().await?;
    let http = crate::connector::http_client(Duration::from_secs(30));
    let took = send_all(
        &http,
        reqwest::Method::POST,
        server.url("/crm/v3/objects/deals/batch/upsert"),
        &format!("Bearer {}", demo::HS_TOKEN),
        bodies,
    )
    .await?;
    ensure!(
        hs.stats().created == n as u64,
        "the simulator created {} of {n} deals",
        hs.stats().created
    );
    let creates = world::rate(n as f64, took);
    // The same batches again: every record exists, so each is an update found by its id property.
    let bodies = hubspot_batches(&m, &deals)?;
    let took = send_all(
        &http,
        reqwest::Method::POST,
        server.url("/crm/v3/objects/deals/batch/upsert"),
        &format!("Bearer {}", demo::HS_TOKEN),
        bodies,
    )
    .await?;
    let updates = world::rate(n as f64, took);
    r.metric("creates", creates, "records/s");
    r.metric("upserts of existing", updates, "records/s");
    r.judge(size, creates >= 50_000.0 && updates >= 50_000.0);
    server.stop().await;
    Ok(r)
}

/// The Salesforce flow the simulator's Opportunity fits (the test suite's Salesforce mapping).
pub const SALESFORCE_MAPPING: (&str, &str) = (
    "partnerstack-salesforce-opportunities.toml",
    include_str!(
        "../../tests/fixtures/mappings-salesforce/partnerstack-salesforce-opportunities.toml"
    ),
);

/// The compiled Salesforce deal flow.
pub fn salesforce_flow() -> anyhow::Result<Arc<Mapping>> {
    let set = MappingSet::compile(&[(
        SALESFORCE_MAPPING.0.to_owned(),
        SALESFORCE_MAPPING.1.to_owned(),
    )])
    .map_err(|e| anyhow::anyhow!("the bench's Salesforce mapping: {e}"))?;
    set.active_for(SystemKind::PartnerStack, SystemKind::Salesforce)
        .into_iter()
        .next()
        .context("the bench's Salesforce mapping has no active flow")
}

/// sObject Collections upsert bodies of 200 for `deals`, as the Salesforce connector sends them.
pub fn salesforce_collections(
    m: &Mapping,
    deals: &[Map<String, Value>],
) -> anyhow::Result<Vec<Vec<u8>>> {
    deals
        .chunks(200)
        .map(|chunk| {
            let records = chunk
                .iter()
                .map(|d| {
                    let mut rec = Map::new();
                    rec.insert("attributes".into(), json!({"type": m.target.object}));
                    rec.extend(m.to_target(d, Op::Create)?);
                    let key = d.get("key").cloned().unwrap_or(Value::Null);
                    rec.insert(m.external_id.clone(), key);
                    Ok(Value::Object(rec))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(serde_json::to_vec(
                &json!({"allOrNone": false, "records": records}),
            )?)
        })
        .collect()
}

/// An access token from the Salesforce simulator's token endpoint (refresh-token grant).
pub async fn salesforce_token(
    http: &reqwest::Client,
    base: &reqwest::Url,
) -> anyhow::Result<String> {
    let auth = world::salesforce_auth();
    let resp: Value = http
        .post(base.join("services/oauth2/token")?)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", auth.client_id.as_str()),
            ("client_secret", auth.client_secret.as_str()),
            ("refresh_token", auth.refresh_token.as_str()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    resp.get("access_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the token endpoint sent no access_token")
}

/// The minimal client's Salesforce backfill: read every PartnerStack page, map, and upsert in
/// collections of 200. Returns records per second.
pub async fn salesforce_backfill(
    http: &reqwest::Client,
    ps: &reqwest::Url,
    sf: &reqwest::Url,
) -> anyhow::Result<f64> {
    let m = salesforce_flow()?;
    let token = salesforce_token(http, sf).await?;
    let started = Instant::now();
    let (deals, _) = read_partnerstack(http, ps).await?;
    let bodies = salesforce_collections(&m, &deals)?;
    let path = format!(
        "services/data/v62.0/composite/sobjects/{}/{}",
        m.target.object, m.external_id
    );
    send_all(
        http,
        reqwest::Method::PATCH,
        sf.join(&path)?,
        &format!("Bearer {token}"),
        bodies,
    )
    .await?;
    Ok(world::rate(deals.len() as f64, started.elapsed()))
}

/// Sends `bodies` as POSTs from `CONCURRENCY` workers, paced to `limit` (a GCRA quota of `max`
/// per `window`); returns the time taken. Every answer must be a 2xx.
pub async fn send_paced(
    http: &reqwest::Client,
    url: reqwest::Url,
    auth: &str,
    bodies: Vec<Vec<u8>>,
    limit: crate::sim::hubspot::BurstLimit,
) -> anyhow::Result<Duration> {
    let max = u32::try_from(limit.max)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .context("a burst limit of at least one request")?;
    let quota = governor::Quota::with_period(limit.window / max.get())
        .context("a burst window longer than zero")?;
    let pace = Arc::new(governor::RateLimiter::direct(quota));
    let queue = Arc::new(Mutex::new(VecDeque::from(bodies)));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, url, auth, queue, pace) = (
            http.clone(),
            url.clone(),
            auth.to_owned(),
            queue.clone(),
            pace.clone(),
        );
        workers.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some(body) = next else {
                    return Ok::<(), anyhow::Error>(());
                };
                pace.until_ready().await;
                let resp = http
                    .post(url.clone())
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    // Arrivals bunch up on a busy machine: send it again (the 429 is counted).
                    queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_front(body);
                    continue;
                }
                ensure!(
                    resp.status().is_success(),
                    "the simulator answered {}",
                    resp.status()
                );
                resp.bytes().await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}
