//! Shared setup: simulators on loopback, a temp state dir, a config pointing at them, and bounded
//! waits instead of sleeps.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use prmsync::app::Daemon;
use prmsync::config::Config;
use prmsync::engine::system_clock;
use prmsync::sim::hubspot::HubSpotSim;
use prmsync::sim::partnerstack::PartnerStackSim;
use prmsync::sim::{SimServer, seed};

pub use prmsync::demo::{HS_SECRET, HS_TOKEN, PS_KEY};

/// Two simulators and a state folder.
pub struct World {
    pub ps: PartnerStackSim,
    pub hs: HubSpotSim,
    pub ps_server: SimServer,
    pub hs_server: SimServer,
    pub dir: tempfile::TempDir,
}

impl World {
    /// Simulators seeded with `deals` deal registrations over 5 partners.
    pub async fn seeded(deals: usize) -> World {
        let ps = PartnerStackSim::new(PS_KEY);
        let hs = HubSpotSim::new(HS_TOKEN);
        let ps_server = SimServer::start(ps.router())
            .await
            .expect("start PartnerStack sim");
        let hs_server = SimServer::start(hs.router())
            .await
            .expect("start HubSpot sim");
        for d in seed::deals(deals, 5) {
            ps.upsert_deal(d);
        }
        World {
            ps,
            hs,
            ps_server,
            hs_server,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// The typed config `run` would build, pointing at the simulators.
    pub fn config(&self) -> Config {
        prmsync::demo::config_for(
            self.state_path(),
            self.ps_server.url("/api/v2"),
            self.hs_server.url(""),
        )
    }

    pub async fn daemon(&self) -> Daemon {
        Daemon::start(self.config(), system_clock())
            .await
            .expect("daemon starts")
    }
}

/// Polls `check` until it returns true or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
    }
}
