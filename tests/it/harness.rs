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
    /// The PostgreSQL state this world's daemons use, when the suite runs on PostgreSQL.
    pub postgres: Option<prmsync::store::pg::PgTarget>,
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
            postgres: postgres_state(),
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// The typed config `run` would build, pointing at the simulators. With
    /// `PRMSYNC_TEST_POSTGRES` set, the state lives in a fresh schema of that PostgreSQL server
    /// instead of the SQLite file (see [`postgres_state`]).
    pub fn config(&self) -> Config {
        let mut config = prmsync::demo::config_for(
            self.state_path(),
            self.ps_server.url("/api/v2"),
            self.hs_server.url(""),
        );
        config.state.postgres = self.postgres.clone();
        config
    }

    pub async fn daemon(&self) -> Daemon {
        Daemon::start(self.config(), system_clock())
            .await
            .expect("daemon starts")
    }
}

/// A fresh schema on the server `PRMSYNC_TEST_POSTGRES` names, or `None` (SQLite) when unset.
/// Tests that read the SQLite file directly cannot run on PostgreSQL: `.ci/run` names the
/// subset that runs on both.
pub fn postgres_state() -> Option<prmsync::store::pg::PgTarget> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let url = std::env::var("PRMSYNC_TEST_POSTGRES").ok()?;
    Some(prmsync::store::pg::PgTarget {
        url,
        schema: format!(
            "it_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
    })
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

/// Like [`wait_until`], but `check` says why it is not there yet; the last reason is in the panic.
pub async fn wait_ok<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        let why = match check().await {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {why}"
        );
    }
}

impl World {
    /// The end state every guarantee promises, checked by counting at the simulators: each
    /// PartnerStack deal is exactly one HubSpot deal, created once, with every mapped field equal
    /// to its mapped value, and the CRM-owned fields mapped back onto the partner's deal.
    pub fn converged(&self) -> Result<(), String> {
        converged(&self.ps, &self.hs)
    }
}

/// [`World::converged`] for any pair of simulators (one tenant's).
pub fn converged(ps: &PartnerStackSim, hs: &HubSpotSim) -> Result<(), String> {
    use prmsync::mapping::{MappingSet, Op};
    use serde_json::Value;
    let set = MappingSet::builtin().map_err(|e| e.to_string())?;
    let m = &set.mappings[0];
    let prm = ps.deals();
    let crm = hs.objects("deals");
    if crm.len() != prm.len() {
        return Err(format!(
            "{} HubSpot deals for {} PartnerStack deals",
            crm.len(),
            prm.len()
        ));
    }
    let writes = hs.writes("deals");
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    for deal in &prm {
        let key = deal.get("key").and_then(Value::as_str).unwrap_or_default();
        let (creates, _) = writes.get(key).copied().unwrap_or_default();
        if creates != 1 {
            return Err(format!("{key} was created {creates} times in HubSpot"));
        }
        let Some(hs) = hs.find("deals", "prm_deal_id", key) else {
            return Err(format!("{key} has no HubSpot deal"));
        };
        let want = m.to_target(deal, Op::Update).map_err(|e| e.to_string())?;
        for (field, v) in &want {
            let have = hs.get(field).map(text);
            if have.as_deref() != Some(text(v).as_str()) {
                return Err(format!("{key}.{field}: HubSpot has {have:?}, mapped {v}"));
            }
        }
        let back = m.to_source(&hs).map_err(|e| e.to_string())?;
        for (field, v) in &back {
            if deal.get(field) != Some(v) {
                return Err(format!(
                    "{key}.{field}: PartnerStack has {:?}, HubSpot maps back to {v}",
                    deal.get(field)
                ));
            }
        }
    }
    Ok(())
}

/// Writes tenant `name`'s folder under `root/tenants` for a multi-tenant config: its
/// `tenant.toml` pointing at PartnerStack `ps` and HubSpot `hs`, with its credentials in files
/// under `root/secrets` that it names by reference (the HubSpot token given, the webhook secret
/// `NAME-secret`). Returns the folder.
pub fn tenant_folder(
    root: &std::path::Path,
    name: &str,
    ps: &str,
    hs: &str,
    hubspot_token: &str,
) -> PathBuf {
    let dir = root.join("tenants").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let secret = |file: &str, value: &str| {
        let p = root.join("secrets").join(format!("{name}-{file}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, value).unwrap();
        p.display().to_string()
    };
    let text = format!(
        r#"[partnerstack]
base_url = "{ps}"
api_key = {{ file = "{ps_key}" }}

[hubspot]
base_url = "{hs}"
access_token = {{ file = "{hs_token}" }}
client_secret = {{ file = "{hs_secret}" }}
"#,
        ps_key = secret("ps-key", PS_KEY),
        hs_token = secret("hs-token", hubspot_token),
        hs_secret = secret("hs-secret", &format!("{name}-secret")),
    );
    std::fs::write(dir.join("tenant.toml"), text).unwrap();
    dir
}
