//! Scenario "fleet": 1, 2 and 3 `prmsync run` processes sharing 100 tenants (10 at tiny size) on
//! one PostgreSQL (`bench --postgres URL`), each tenant with its own PartnerStack and HubSpot
//! simulators seeded with deals. Measures how long the fleet takes until every deal of every
//! tenant is one HubSpot deal (created once), and how the leases spread over the daemons. On two
//! cores the point is that the work spreads and nothing is lost, not a linear speed-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::million::{free_port, stop};
use super::report::ScenarioResult;
use super::{Size, world};
use crate::demo;
use crate::sim::hubspot::HubSpotSim;
use crate::sim::partnerstack::PartnerStackSim;
use crate::sim::{SimServer, seed};
use crate::store::pg::PgTarget;
use crate::store::pg::fleet::Leases;

const LEASE_SECS: u64 = 5;

fn tenants(size: Size) -> usize {
    match size {
        Size::Tiny => 10,
        Size::Full => 100,
    }
}

fn deals_per_tenant(size: Size) -> usize {
    match size {
        Size::Tiny => 3,
        Size::Full => 20,
    }
}

fn deadline(size: Size) -> Duration {
    match size {
        Size::Tiny => Duration::from_secs(120),
        Size::Full => Duration::from_secs(300),
    }
}

struct Tenant {
    ps: PartnerStackSim,
    hs: HubSpotSim,
    _servers: (SimServer, SimServer),
}

impl Tenant {
    /// Every deal is one HubSpot deal, created once.
    fn done(&self) -> bool {
        let want = self.ps.deals().len();
        self.hs.objects("deals").len() == want
            && self.hs.writes("deals").values().all(|(c, _)| *c == 1)
    }

    /// Deals created more than once in HubSpot.
    fn doubles(&self) -> usize {
        self.hs
            .writes("deals")
            .values()
            .filter(|(c, _)| *c > 1)
            .count()
    }
}

/// The scenario; without a PostgreSQL URL it is skipped (noted).
pub async fn scenario(
    size: Size,
    exe: &Path,
    postgres: Option<&str>,
) -> anyhow::Result<ScenarioResult> {
    let mut result = ScenarioResult::new(
        "fleet",
        "work spreads over the daemons; every deal reaches the CRM once",
    );
    let Some(url) = postgres else {
        result.notes.push(
            "skipped: needs --postgres URL (a PostgreSQL server it may create schemas on)".into(),
        );
        return Ok(result);
    };
    let mut all_ok = true;
    for daemons in 1..=3 {
        let (secs, spread, doubles, converged) = run_fleet(size, exe, url, daemons).await?;
        let deals = (tenants(size) * deals_per_tenant(size)) as f64;
        result.metric(&format!("{daemons} daemon(s): deals/s"), deals / secs, "/s");
        result.metric(&format!("{daemons} daemon(s): seconds"), secs, "s");
        result.metric(
            &format!("{daemons} daemon(s): most leases on one daemon at start"),
            spread.at_start as f64,
            "leases",
        );
        result.metric(
            &format!("{daemons} daemon(s): most leases on one daemon at end"),
            spread.at_end as f64,
            "leases",
        );
        result.metric(
            &format!("{daemons} daemon(s): lease moves during the run"),
            spread.moves as f64,
            "claims",
        );
        result.metric(
            &format!("{daemons} daemon(s): deals created twice"),
            doubles as f64,
            "deals",
        );
        if !converged {
            result.notes.push(format!(
                "{daemons} daemon(s): not every deal reached the CRM within {:?}",
                deadline(size)
            ));
        }
        all_ok &= converged && doubles == 0;
    }
    result.judge(size, all_ok);
    Ok(result)
}

/// How the leases were spread over the daemons during a run.
struct Spread {
    /// Most leases on one daemon when the deals arrived.
    at_start: usize,
    /// Most leases on one daemon when the last deal had reached the CRM.
    at_end: usize,
    /// Claims during the run (a lease given back and taken, or expired and taken over).
    moves: i64,
}

/// One fleet of `daemons` processes on a fresh schema: (seconds until every tenant converged,
/// how the leases were spread, deals created twice, whether it converged in time).
async fn run_fleet(
    size: Size,
    exe: &Path,
    url: &str,
    daemons: usize,
) -> anyhow::Result<(f64, Spread, usize, bool)> {
    let temp = world::TempState::new(&format!("fleet{daemons}"))?;
    let root = temp.path().with_file_name("");
    let mut list = Vec::new();
    for i in 0..tenants(size) {
        let ps = PartnerStackSim::new(demo::PS_KEY);
        let hs = HubSpotSim::new(demo::HS_TOKEN);
        let servers = (
            SimServer::start(ps.router()).await?,
            SimServer::start(hs.router()).await?,
        );
        let tdir = root.join("tenants").join(format!("t{i:03}"));
        std::fs::create_dir_all(&tdir)?;
        std::fs::write(
            tdir.join("tenant.toml"),
            format!(
                r#"[partnerstack]
base_url = "{ps}"
api_key = {{ env = "PRMSYNC_BENCH_PS_KEY" }}

[hubspot]
base_url = "{hs}"
access_token = {{ env = "PRMSYNC_BENCH_HS_TOKEN" }}
client_secret = {{ env = "PRMSYNC_BENCH_HS_SECRET" }}
"#,
                ps = servers.0.url("/api/v2"),
                hs = servers.1.url(""),
            ),
        )?;
        list.push(Tenant {
            ps,
            hs,
            _servers: servers,
        });
    }
    let schema = format!("bench_fleet_{}_{daemons}", std::process::id());
    let target = PgTarget {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let mut children = Vec::new();
    for d in 0..daemons {
        let config = write_config(&root, d, url, &schema)?;
        children.push(spawn(exe, &config)?);
    }
    // The deals arrive once the leases have spread (a daemon started alone takes every tenant
    // and gives the surplus back as the others join).
    let fair = tenants(size).div_ceil(daemons);
    let limit = deadline(size);
    let joined = Instant::now();
    let mut before = (0, 0, 0);
    while joined.elapsed() < limit {
        before = most_leases(&target).await;
        if before.1 == tenants(size) && before.0 <= fair {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    for t in &list {
        for d in seed::deals(deals_per_tenant(size), 3) {
            t.ps.upsert_deal(d);
        }
    }
    let mut converged = false;
    while started.elapsed() < limit {
        if list.iter().all(Tenant::done) {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = most_leases(&target).await;
    let spread = Spread {
        at_start: before.0,
        at_end: after.0,
        moves: after.2 - before.2,
    };
    for c in &mut children {
        stop(c);
    }
    let doubles = list.iter().map(Tenant::doubles).sum();
    Ok((secs, spread, doubles, converged))
}

/// (most live leases held by one daemon, live leases in all, sum of the generations: how many
/// claims there were); zeros while the fleet's schema is not there yet.
async fn most_leases(target: &PgTarget) -> (usize, usize, i64) {
    let Ok(leases) = Leases::open(target, Duration::from_secs(LEASE_SECS)) else {
        return (0, 0, 0);
    };
    let Ok(rows) = leases.list().await else {
        return (0, 0, 0);
    };
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for r in rows.iter().filter(|r| r.live) {
        *by.entry(r.holder.clone().unwrap_or_default()).or_default() += 1;
    }
    (
        by.values().copied().max().unwrap_or(0),
        by.values().sum(),
        rows.iter().map(|r| r.generation).sum(),
    )
}

fn write_config(root: &Path, d: usize, url: &str, schema: &str) -> anyhow::Result<PathBuf> {
    let path = root.join(format!("daemon-{d}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[daemon]
state_path = "{state}"
tenants_dir = "{tenants}"
poll_interval_secs = 1

[state]
url = "{url}"
schema = "{schema}"
lease_secs = {LEASE_SECS}

[log]
level = "warn"

[http]
listen = "127.0.0.1:{port}"

[admin]
listen = "127.0.0.1:{admin}"
"#,
            state = root.join("state/prmsync.db").display(),
            tenants = root.join("tenants").display(),
            port = free_port()?,
            admin = free_port()?,
        ),
    )?;
    Ok(path)
}

fn spawn(exe: &Path, config: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(config.with_extension("log"))?;
    Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("PRMSYNC_BENCH_PS_KEY", demo::PS_KEY)
        .env("PRMSYNC_BENCH_HS_TOKEN", demo::HS_TOKEN)
        .env("PRMSYNC_BENCH_HS_SECRET", demo::HS_SECRET)
        .env_remove(crate::failpoint::ENV_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting prmsync run")
}
