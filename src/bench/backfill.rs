//! Backfill scenarios: deal registrations seeded in the PartnerStack simulator flow into an empty
//! CRM simulator through the real daemon; the minimal client's backfill is the ceiling.

use std::time::{Duration, Instant};

use super::report::ScenarioResult;
use super::{Size, ceiling, world};
use crate::app::Daemon;
use crate::engine::system_clock;
use crate::sim::hubspot::BurstLimit;

/// How long a backfill may take before the scenario reports how far it got.
fn deadline(size: Size) -> Duration {
    match size {
        Size::Tiny => Duration::from_secs(60),
        // The whole suite must finish in 10 minutes on 2 cores (issue 9): a backfill slower
        // than the target reports how far it got in a minute.
        Size::Full => Duration::from_secs(60),
    }
}

/// Scenario "backfill-hubspot": 100k deals PRM -> HubSpot, no latency.
pub async fn hubspot(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new(
        "backfill-hubspot",
        ">= 0.7 of the ceiling and >= 20,000 records/s",
    );
    let n = size.backfill_deals();
    let (ps, ps_server) = world::partnerstack(n).await?;
    let http = crate::connector::http_client(Duration::from_secs(60));

    let (_, ceiling_server) = world::hubspot().await?;
    let ceiling =
        ceiling::hubspot_backfill(&http, &ps_server.url("/"), &ceiling_server.url("/")).await?;
    ceiling_server.stop().await;

    let (hs, hs_server) = world::hubspot().await?;
    let state = world::TempState::new("backfill-hubspot")?;
    let daemon = Daemon::start(
        world::config(&state, &ps_server, &hs_server),
        system_clock(),
    )
    .await?;
    let started = Instant::now();
    let mut first_write: Option<Duration> = None;
    let drive = world::drive(
        &daemon,
        world::until(|| {
            let created = hs.stats().created;
            if created > 0 && first_write.is_none() {
                first_write = Some(started.elapsed());
            }
            created >= n as u64
        }),
        deadline(size),
    )
    .await;
    let created = hs.stats().created;
    let rate = world::rate(created as f64, drive.elapsed);
    let dead = world::dead_letters(&daemon).await?;
    daemon.shutdown().await;
    let state_bytes = state.bytes();
    r.metric("daemon", rate, "records/s");
    r.metric("ceiling", ceiling, "records/s");
    r.metric("ratio", world::ratio(rate, ceiling), "");
    r.metric(
        "first CRM write after",
        first_write.map_or(f64::NAN, |d| d.as_secs_f64()),
        "s",
    );
    r.metric("HubSpot requests", hs.stats().requests as f64, "");
    r.metric("PartnerStack requests", ps.stats().requests as f64, "");
    r.metric("dead letters", dead as f64, "");
    r.metric(
        "state file",
        state_bytes as f64 / created.max(1) as f64,
        "bytes/deal",
    );
    if !drive.done {
        r.notes.push(format!(
            "stopped at the {:.0} s deadline with {created} of {n} deals in HubSpot",
            deadline(size).as_secs_f64()
        ));
    }
    r.judge(
        size,
        drive.done && rate >= 20_000.0 && rate >= 0.7 * ceiling,
    );
    hs_server.stop().await;
    ps_server.stop().await;
    Ok(r)
}

/// Scenario "backfill-salesforce": 100k deals PRM -> Salesforce in collections of 200, no latency.
pub async fn salesforce(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new("backfill-salesforce", ">= 0.7 of the ceiling");
    let n = size.backfill_deals();
    let (ps, ps_server) = world::partnerstack(n).await?;
    let http = crate::connector::http_client(Duration::from_secs(60));

    let (_, ceiling_server) = world::salesforce().await?;
    let ceiling =
        ceiling::salesforce_backfill(&http, &ps_server.url("/"), &ceiling_server.url("/")).await?;
    ceiling_server.stop().await;

    let (sf, sf_server) = world::salesforce().await?;
    let state = world::TempState::new("backfill-salesforce")?;
    let config = world::salesforce_config(&state, &ps_server, &sf_server)?;
    let daemon = Daemon::start(config, system_clock()).await?;
    let drive = world::drive(
        &daemon,
        world::until(|| sf.stats().created >= n as u64),
        deadline(size),
    )
    .await;
    let created = sf.stats().created;
    let rate = world::rate(created as f64, drive.elapsed);
    let dead = world::dead_letters(&daemon).await?;
    daemon.shutdown().await;
    r.metric("daemon", rate, "records/s");
    r.metric("ceiling", ceiling, "records/s");
    r.metric("ratio", world::ratio(rate, ceiling), "");
    r.metric("Salesforce requests", sf.stats().api_requests as f64, "");
    r.metric("PartnerStack requests", ps.stats().requests as f64, "");
    r.metric("dead letters", dead as f64, "");
    if !drive.done {
        r.notes.push(format!(
            "stopped at the {:.0} s deadline with {created} of {n} deals in Salesforce",
            deadline(size).as_secs_f64()
        ));
    }
    r.judge(size, drive.done && rate >= 0.7 * ceiling);
    sf_server.stop().await;
    ps_server.stop().await;
    Ok(r)
}

/// The burst limit the "backfill-burst" scenario runs under: HubSpot's 100 requests per 10 s,
/// with the window scaled down to one second (10 per second: the same rate, many windows a run).
pub const SCALED_BURST: BurstLimit = BurstLimit {
    max: 10,
    window: Duration::from_secs(1),
};

/// Scenario "backfill-burst": a backfill into HubSpot with 150 ms latency on every simulator call
/// and HubSpot's burst limit (scaled-down window).
pub async fn burst(size: Size) -> anyhow::Result<ScenarioResult> {
    let mut r = ScenarioResult::new(
        "backfill-burst",
        ">= 90 % of the allowed request rate used, batches >= 95 % full, 429s <= 1 %, 0 dead letters",
    );
    let n = match size {
        Size::Tiny => 300,
        Size::Full => 15_000,
    };
    let latency = world::REALISTIC_LATENCY;
    let (ps, ps_server) = world::partnerstack(n).await?;
    ps.turbulence().set_latency(latency);
    let http = crate::connector::http_client(Duration::from_secs(60));

    // The ceiling: a minimal client paced at the allowed rate, same batches, same latency.
    let (ceiling_hs, ceiling_server) = world::hubspot().await?;
    ceiling_hs.turbulence().set_latency(latency);
    ceiling_hs.set_burst_limit(Some(SCALED_BURST));
    let m = ceiling::flow(crate::model::SystemKind::HubSpot, "deal-registration")?;
    let deals = crate::sim::seed::program(n, 50);
    let bodies = ceiling::hubspot_batches(&m, &deals)?;
    let started = Instant::now();
    ceiling::send_paced(
        &http,
        ceiling_server.url("/crm/v3/objects/deals/batch/upsert"),
        &format!("Bearer {}", crate::demo::HS_TOKEN),
        bodies,
        SCALED_BURST,
    )
    .await?;
    let ceiling_used = used_share(&ceiling_hs.stats(), started.elapsed());
    ceiling_server.stop().await;

    let (hs, hs_server) = world::hubspot().await?;
    hs.turbulence().set_latency(latency);
    hs.set_burst_limit(Some(SCALED_BURST));
    let state = world::TempState::new("backfill-burst")?;
    // The daemon is told the portal's limit, as an admin sets `hubspot.rate_limit` for a tier.
    let mut config = world::config(&state, &ps_server, &hs_server);
    if let crate::config::CrmConfig::HubSpot(h) = &mut config.crm {
        h.rate_limit = Some(crate::connector::Rate {
            n: u32::try_from(SCALED_BURST.max).unwrap_or(u32::MAX),
            per: SCALED_BURST.window,
        });
    }
    let daemon = Daemon::start(config, system_clock()).await?;
    let drive = world::drive(
        &daemon,
        world::until(|| hs.stats().created >= n as u64),
        deadline(size),
    )
    .await;
    let s = hs.stats();
    let dead = world::dead_letters(&daemon).await?;
    daemon.shutdown().await;
    let used = used_share(&s, drive.elapsed);
    let records = s.created + s.updated + s.unchanged;
    let fill = if s.batch_upserts > 0 {
        records as f64 / (s.batch_upserts as f64 * 100.0)
    } else {
        0.0
    };
    let limited = if s.requests > 0 {
        s.burst_rate_limited as f64 / s.requests as f64
    } else {
        0.0
    };
    r.metric("allowed request rate used", used * 100.0, "%");
    r.metric("batch fill", fill * 100.0, "%");
    r.metric("429s", limited * 100.0, "% of requests");
    r.metric("dead letters", dead as f64, "");
    r.metric(
        "records/s",
        world::rate(s.created as f64, drive.elapsed),
        "",
    );
    r.metric("ceiling: allowed rate used", ceiling_used * 100.0, "%");
    if !drive.done {
        r.notes.push(format!(
            "stopped at the deadline with {} of {n} deals in HubSpot",
            s.created
        ));
    }
    r.judge(
        size,
        drive.done && used >= 0.9 && fill >= 0.95 && limited <= 0.01 && dead == 0,
    );
    hs_server.stop().await;
    ps_server.stop().await;
    Ok(r)
}

/// Accepted burst-counted requests (everything but searches) over what the limit allows in
/// `elapsed`.
fn used_share(s: &crate::sim::hubspot::Stats, elapsed: Duration) -> f64 {
    let counted = s.requests - s.searches - s.burst_rate_limited - s.unauthorized;
    let windows = elapsed.as_secs_f64() / SCALED_BURST.window.as_secs_f64();
    let allowed = SCALED_BURST.max as f64 * windows;
    if allowed > 0.0 {
        counted as f64 / allowed
    } else {
        0.0
    }
}
