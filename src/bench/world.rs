//! What every scenario starts from: simulators on loopback, a fresh temporary state file, the real
//! daemon configured like `prmsync demo` configures it, and a way to run it until a condition holds.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::Daemon;
use secrecy::SecretString;

use crate::config::{Config, CrmConfig, PrmConfig, SalesforceAuthConfig, SalesforceConfig};
use crate::connector::Rate;
use crate::demo;
use crate::sim::hubspot::HubSpotSim;
use crate::sim::partnerstack::PartnerStackSim;
use crate::sim::salesforce::{SalesforceAuth, SalesforceSim};
use crate::sim::{SimServer, seed};

/// A state file in a fresh folder of the system's temp dir, removed on drop.
#[derive(Debug)]
pub struct TempState {
    dir: PathBuf,
}

impl TempState {
    pub fn new(label: &str) -> anyhow::Result<TempState> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "prmsync-bench-{}-{label}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempState { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// Bytes of the state file with its WAL and shared-memory files.
    pub fn bytes(&self) -> u64 {
        ["state.db", "state.db-wal", "state.db-shm"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for TempState {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "could not remove a bench state folder");
        }
    }
}

/// A PartnerStack simulator seeded with `deals` deal registrations.
pub async fn partnerstack(deals: usize) -> anyhow::Result<(PartnerStackSim, SimServer)> {
    let ps = PartnerStackSim::new(demo::PS_KEY);
    for deal in seed::program(deals, 50) {
        ps.upsert_deal(deal);
    }
    let server = SimServer::start(ps.router()).await?;
    Ok((ps, server))
}

/// An empty HubSpot simulator without the burst limit (the daemon paces itself, and the
/// ceiling's minimal client measures the simulator, not the limit; the limit has its own tests
/// and the `backfill-burst` scenario sets one) and with a daily allowance no run reaches.
pub async fn hubspot() -> anyhow::Result<(HubSpotSim, SimServer)> {
    let hs = HubSpotSim::new(demo::HS_TOKEN);
    hs.set_daily_limit(u64::MAX / 2);
    hs.set_burst_limit(None);
    let server = SimServer::start(hs.router()).await?;
    Ok((hs, server))
}

/// The demo's config for these simulators and state file.
pub fn config(state: &TempState, ps: &SimServer, hs: &SimServer) -> Config {
    let mut config = demo::config_for(state.path(), ps.url("/api/v2"), hs.url(""));
    if let PrmConfig::PartnerStack(p) = &mut config.prm {
        p.rate_limit = Some(NO_SHORT_WINDOW);
    }
    if let CrmConfig::HubSpot(h) = &mut config.crm {
        h.rate_limit = Some(NO_SHORT_WINDOW);
    }
    config
}

/// The bench simulators enforce no short-window limit (only "backfill-burst" sets one, and tells
/// the daemon), so the daemon is told so, as an admin sets `rate_limit` for a tier: otherwise
/// the scenarios would measure the pacer's documented defaults (HubSpot 100 per 10 s,
/// PartnerStack and Salesforce 25 per second), not the daemon. Daily quotas stay as documented.
pub const NO_SHORT_WINDOW: Rate = Rate {
    n: 1_000_000,
    per: Duration::from_secs(1),
};

/// "Realistic" vendor latency: every simulator call waits this long before it is answered.
pub const REALISTIC_LATENCY: Duration = Duration::from_millis(150);

/// How a run of the daemon ended.
#[derive(Debug, Clone)]
pub struct Drive<T> {
    /// Whether `done` resolved before the deadline.
    pub done: bool,
    /// What `done` resolved to.
    pub value: Option<T>,
    pub elapsed: Duration,
}

/// Runs the daemon (its real run loop) until `done` resolves or `deadline` passes, then stops it.
pub async fn drive<T>(
    daemon: &Daemon,
    done: impl Future<Output = T>,
    deadline: Duration,
) -> Drive<T> {
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = daemon.run(stop.clone(), Arc::new(Notify::new()));
    tokio::pin!(run);
    let value = tokio::select! {
        () = &mut run => None,
        v = done => Some(v),
        () = tokio::time::sleep(deadline) => None,
    };
    let elapsed = started.elapsed();
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .is_err()
    {
        tracing::warn!("the daemon's run loop did not stop within 60 s of the bench's stop");
    }
    Drive {
        done: value.is_some(),
        value,
        elapsed,
    }
}

/// Resolves once `cond` holds, checking every few milliseconds.
pub async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The daemon's dead letters now (from the store's kept counters).
pub async fn dead_letters(daemon: &Daemon) -> anyhow::Result<u64> {
    let now = jiff::Timestamp::now().as_millisecond();
    Ok(daemon.engine.store().status(now).await?.dead_letters as u64)
}

/// `rate` as a share of `ceiling`, 0 when the ceiling is unknown.
pub fn ratio(rate: f64, ceiling: f64) -> f64 {
    if ceiling > 0.0 { rate / ceiling } else { 0.0 }
}

/// Records per second, 0 when no time passed.
pub fn rate(n: f64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { n / s } else { 0.0 }
}

/// The connected app the Salesforce simulator accepts and the daemon's config presents.
pub fn salesforce_auth() -> SalesforceAuth {
    SalesforceAuth {
        client_id: "bench-client".into(),
        client_secret: "bench-secret".into(),
        refresh_token: "5Aep.bench".into(),
        rotate: false,
        jwt_public_key: None,
        username: "bench@example.com".into(),
        token_ttl_ms: 3_600_000,
    }
}

/// An empty Salesforce simulator with a daily allocation no run reaches.
pub async fn salesforce() -> anyhow::Result<(SalesforceSim, SimServer)> {
    let sf = SalesforceSim::new(salesforce_auth());
    sf.set_api_limit(u64::MAX / 2);
    let server = SimServer::start(sf.router()).await?;
    Ok((sf, server))
}

/// The demo's config, with Salesforce as the CRM and the bench's Salesforce mapping written into
/// a mappings folder beside the state file.
pub fn salesforce_config(
    state: &TempState,
    ps: &SimServer,
    sf: &SimServer,
) -> anyhow::Result<Config> {
    let dir = state.dir.join("mappings");
    std::fs::create_dir_all(&dir)?;
    let (name, text) = super::ceiling::SALESFORCE_MAPPING;
    std::fs::write(dir.join(name), text)?;
    let auth = salesforce_auth();
    let mut config = demo::config_for(state.path(), ps.url("/api/v2"), sf.url(""));
    config.daemon.mappings_dir = Some(dir);
    config.daemon.state_key = Some(SecretString::from("bench-state-key"));
    config.crm = CrmConfig::Salesforce(SalesforceConfig {
        login_url: sf.url(""),
        auth: SalesforceAuthConfig::RefreshToken {
            client_id: auth.client_id,
            client_secret: Some(SecretString::from(auth.client_secret)),
            refresh_token: SecretString::from(auth.refresh_token),
        },
        audience: None,
        rate_limit: Some(NO_SHORT_WINDOW),
    });
    Ok(config)
}
