//! Fleet mode through daemons in the test process on PostgreSQL. A daemon that starts does not
//! clear the connection pause another daemon recorded for a tenant it does not hold; it clears it
//! when it takes the tenant's lease (as a daemon starting up would). `prmsync erase --tenant`
//! hands the erasure to the daemon holding the lease, which carries it out. With two daemons on
//! two tenants, each keeps PostgreSQL connections only to the tenant it runs (the other's close
//! when idle and come back on demand) and reports only that tenant's figures in `/metrics`. Run
//! only with `PRMSYNC_TEST_POSTGRES` (they print why they are skipped otherwise).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prmsync::config::{Environment, Loaded, load_any};
use prmsync::engine::system_clock;
use prmsync::failpoint::FailPoints;
use prmsync::model::SystemKind;
use prmsync::sim::hubspot::HubSpotSim;
use prmsync::sim::partnerstack::PartnerStackSim;
use prmsync::sim::{SimServer, seed};
use prmsync::store::Store;
use prmsync::tenants::Fleet;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::{HS_TOKEN, PS_KEY, wait_ok, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// The server `PRMSYNC_TEST_POSTGRES` names, or `None` with the reason printed.
fn server(test: &str) -> Option<String> {
    let url = std::env::var("PRMSYNC_TEST_POSTGRES").ok();
    if url.is_none() {
        println!("skipped {test}: PRMSYNC_TEST_POSTGRES is not set (see docs/postgres.md, Tests)");
    }
    url
}

/// `prmsync ARGS` as a separate process: (exit code, stdout + stderr).
async fn prmsync(args: Vec<String>) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(&args)
        .env_remove("PRMSYNC_CONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("prmsync runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The fleet file: PostgreSQL `url`, fleet schema `schema`, leases of `lease_secs`.
fn write_fleet(root: &Path, url: &str, schema: &str, lease_secs: u64) -> std::path::PathBuf {
    let file = root.join("prmsync.toml");
    std::fs::write(
        &file,
        format!(
            r#"[daemon]
state_path = "state/prmsync.db"
tenants_dir = "tenants"
poll_interval_secs = 1

[state]
url = "{url}"
schema = "{schema}"
lease_secs = {lease_secs}

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
min_free_bytes = 0
"#
        ),
    )
    .unwrap();
    file
}

/// One tenant's PartnerStack (seeded with `deals` deals) and empty HubSpot, on loopback.
struct Sims {
    ps: PartnerStackSim,
    hs: HubSpotSim,
    servers: (SimServer, SimServer),
}

impl Sims {
    async fn start(deals: usize) -> Sims {
        let ps = PartnerStackSim::new(PS_KEY);
        let hs = HubSpotSim::new(HS_TOKEN);
        let ps_server = SimServer::start(ps.router()).await.expect("PartnerStack");
        let hs_server = SimServer::start(hs.router()).await.expect("HubSpot");
        for d in seed::deals(deals, 3) {
            ps.upsert_deal(d);
        }
        Sims {
            ps,
            hs,
            servers: (ps_server, hs_server),
        }
    }

    fn tenant(&self, root: &Path, name: &str) {
        crate::harness::tenant_folder(
            root,
            name,
            self.servers.0.url("/api/v2").as_str(),
            self.servers.1.url("").as_str(),
            HS_TOKEN,
        );
    }
}

/// A fleet daemon in this process, started on `file`.
async fn start(file: &Path) -> Arc<Fleet> {
    let Loaded::Tenants(config) = load_any(file, &Environment::default()).unwrap() else {
        panic!("a config with daemon.tenants_dir runs tenants");
    };
    Arc::new(
        Fleet::start(
            *config,
            Environment::default(),
            system_clock(),
            FailPoints::none(),
        )
        .await
        .expect("the fleet starts"),
    )
}

/// Runs `fleet` until `stop`.
fn run(fleet: &Arc<Fleet>, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let fleet = fleet.clone();
    let stop = stop.clone();
    tokio::spawn(async move { fleet.run(stop, Arc::new(Notify::new())).await })
}

/// Stops a fleet daemon started with [`start`] and [`run`].
async fn finish(fleet: Arc<Fleet>, stop: &CancellationToken, running: tokio::task::JoinHandle<()>) {
    stop.cancel();
    running.await.unwrap();
    let fleet = Arc::into_inner(fleet).expect("the fleet is no longer shared");
    fleet.shutdown_within(Duration::from_secs(10)).await;
}

/// `f` on a connection of its own to the server at `url`.
async fn with_pg<R: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> R + Send + 'static,
) -> R {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        f(&mut c)
    })
    .await
    .expect("PostgreSQL check")
}

/// The `/metrics` text of a daemon's admin listener.
async fn metrics(fleet: &Fleet) -> String {
    reqwest::get(format!("http://{}/metrics", fleet.admin_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_daemon_clears_a_pause_only_once_it_holds_the_lease_and_erases_for_its_tenant() {
    let Some(url) = server("the fleet pause and erase test") else {
        return;
    };
    let schema = format!("flops_{}", std::process::id());
    let sims = Sims::start(0).await;
    let (ps, hs) = (&sims.ps, &sims.hs);
    let deals = seed::deals(3, 3);
    let email = deals[0]
        .get("contact_email")
        .and_then(|v| v.as_str())
        .expect("a seeded deal has a contact")
        .to_owned();
    for d in deals {
        ps.upsert_deal(d);
    }
    hs.create(
        "contacts",
        BTreeMap::from([("email".to_owned(), email.clone())]),
    );
    let root = tempfile::tempdir().unwrap();
    sims.tenant(root.path(), "acme");
    let file = write_fleet(root.path(), &url, &schema, 2);
    let Loaded::Tenants(config) = load_any(&file, &Environment::default()).unwrap() else {
        panic!("a config with daemon.tenants_dir runs tenants");
    };
    let target = config
        .tenant_schema("acme")
        .expect("a fleet tenant's schema");

    // Another daemon (gone now) recorded a paused PartnerStack connection for acme.
    let earlier = Store::open_postgres(&target).expect("the tenant's schema");
    earlier
        .set_connection_hold(
            SystemKind::PartnerStack,
            "needs_reauth",
            "401 from an earlier holder".into(),
            jiff::Timestamp::now().as_millisecond(),
        )
        .await
        .unwrap();
    drop(earlier);
    let holds = || async {
        Store::open_postgres(&target)
            .unwrap()
            .status(jiff::Timestamp::now().as_millisecond())
            .await
            .unwrap()
            .holds
    };

    let fleet = start(&file).await;
    // Started, not holding the lease: the pause recorded for the holder stays.
    let before = holds().await;
    assert!(
        before
            .iter()
            .any(|h| h.system == "partnerstack" && h.state == "needs_reauth"),
        "a daemon that does not hold the lease left the pause alone: {before:?}"
    );

    let stop = CancellationToken::new();
    let running = run(&fleet, &stop);
    // Holding the lease, it runs the tenant as a daemon starting up would: the pause ends and
    // the deals reach the CRM.
    wait_ok(WAIT, "acme's deals in HubSpot, pause cleared", || async {
        let n = hs.objects("deals").len();
        let left = holds().await;
        if n == 3 && left.is_empty() {
            Ok(())
        } else {
            Err(format!("{n} of 3 deals; holds {left:?}"))
        }
    })
    .await;

    // `prmsync erase --tenant` hands the erasure to the lease holder, which carries it out.
    let cfg = file.display().to_string();
    let (code, out) = prmsync(
        [
            "erase", "--config", &cfg, "--tenant", "acme", "--email", &email,
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("carried out by the running daemon"), "{out}");
    wait_until(WAIT, "the contact gdpr-deleted in HubSpot", || async {
        hs.objects("contacts").is_empty()
    })
    .await;
    let (code, audit) = prmsync(
        ["erase", "--config", &cfg, "--tenant", "acme"]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0), "{audit}");
    assert!(audit.contains("#1"), "{audit}");
    assert!(
        !audit.to_lowercase().contains(&email.to_lowercase()),
        "{audit}"
    );

    finish(fleet, &stop, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_keep_connections_and_report_metrics_only_for_the_tenants_they_run() {
    let Some(url) = server("the fleet connections test") else {
        return;
    };
    let schema = format!("flconn_{}", std::process::id());
    let root = tempfile::tempdir().unwrap();
    let acme = Sims::start(3).await;
    let bolt = Sims::start(3).await;
    acme.tenant(root.path(), "acme");
    bolt.tenant(root.path(), "bolt");
    // 1 s leases: a connection unused for two of them closes.
    let file = write_fleet(root.path(), &url, &schema, 1);
    let first = start(&file).await;
    let second = start(&file).await;
    let stop = CancellationToken::new();
    let runs = (run(&first, &stop), run(&second, &stop));

    // Each daemon holds one lease, and each tenant's deals reach its CRM.
    let leases = {
        let (url, schema) = (url.clone(), schema.clone());
        move || {
            let (url, schema) = (url.clone(), schema.clone());
            async move {
                with_pg(&url, move |c| {
                    c.query(
                        &format!(
                            "SELECT tenant, holder FROM {schema}.leases WHERE expires_at > now() ORDER BY tenant"
                        ),
                        &[],
                    )
                    .map(|rows| {
                        rows.iter()
                            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                })
                .await
            }
        }
    };
    wait_ok(
        WAIT,
        "one lease on each daemon, every deal synced",
        || async {
            let held = leases().await;
            let synced = (
                acme.hs.objects("deals").len(),
                bolt.hs.objects("deals").len(),
            );
            if held.len() == 2 && held[0].1 != held[1].1 && synced == (3, 3) {
                Ok(())
            } else {
                Err(format!("leases {held:?}; deals {synced:?}"))
            }
        },
    )
    .await;

    // Each tenant's schema keeps connections from one daemon only: the other's two closed.
    let connections = || async {
        let (a, b) = (format!("{schema}_acme"), format!("{schema}_bolt"));
        with_pg(&url, move |c| {
            let mut count = |s: &str| -> i64 {
                c.query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE application_name IN ('prmsync writer ' || $1, 'prmsync reader ' || $1)",
                    &[&s],
                )
                .map(|r| r.get(0))
                .unwrap_or(-1)
            };
            (count(&a), count(&b))
        })
        .await
    };
    // The holder polls every second, so its writer stays connected.
    wait_ok(WAIT, "one or two connections per tenant schema", || async {
        let n = connections().await;
        if (1..=2).contains(&n.0) && (1..=2).contains(&n.1) {
            Ok(())
        } else {
            Err(format!("connections (acme, bolt): {n:?}"))
        }
    })
    .await;

    // `/metrics`: each daemon reports the state figures of the tenant it runs, and no other.
    let (m1, m2) = (metrics(&first).await, metrics(&second).await);
    let reports = |m: &str, t: &str| m.contains(&format!("prmsync_outbox_depth{{tenant=\"{t}\"}}"));
    for t in ["acme", "bolt"] {
        assert!(
            reports(&m1, t) != reports(&m2, t),
            "{t} in exactly one scrape:\n{m1}\n---\n{m2}"
        );
    }
    assert!(m1.contains("prmsync_tenant_up{tenant=\"acme\"} 1"), "{m1}");

    // A closed connection comes back on demand: the daemon not running acme still reads its state.
    let elsewhere = if reports(&m1, "acme") {
        &second
    } else {
        &first
    };
    let engine = elsewhere
        .engine("acme")
        .await
        .expect("every daemon opens every tenant");
    let status = engine
        .store()
        .status(jiff::Timestamp::now().as_millisecond())
        .await
        .expect("a closed connection is made again for the next read");
    assert_eq!(status.dead_letters, 0);

    finish(first, &stop, runs.0).await;
    finish(second, &stop, runs.1).await;
}
