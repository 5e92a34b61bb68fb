//! Fleet mode through one in-process daemon on PostgreSQL: a daemon that starts does not clear the
//! connection pause another daemon recorded for a tenant it does not hold; it clears it when it
//! takes the tenant's lease (as a daemon starting up would). `prmsync erase --tenant` hands the
//! erasure to the daemon holding the lease, which carries it out. Runs only with
//! `PRMSYNC_TEST_POSTGRES` (it prints why it is skipped otherwise).

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

/// The fleet file (PostgreSQL `url`, fleet schema `schema`) and tenant `acme`'s folder, its
/// credentials in files it names by reference.
fn write_fleet(root: &Path, url: &str, schema: &str, ps: &str, hs: &str) -> std::path::PathBuf {
    let dir = root.join("tenants/acme");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = |file: &str, value: &str| {
        let p = root.join("secrets").join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, value).unwrap();
        p.display().to_string()
    };
    std::fs::write(
        dir.join("tenant.toml"),
        format!(
            r#"[partnerstack]
base_url = "{ps}"
api_key = {{ file = "{ps_key}" }}

[hubspot]
base_url = "{hs}"
access_token = {{ file = "{hs_token}" }}
client_secret = {{ file = "{hs_secret}" }}
"#,
            ps_key = secret("ps-key", PS_KEY),
            hs_token = secret("hs-token", HS_TOKEN),
            hs_secret = secret("hs-secret", "acme-secret"),
        ),
    )
    .unwrap();
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
lease_secs = 2

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_daemon_clears_a_pause_only_once_it_holds_the_lease_and_erases_for_its_tenant() {
    let Ok(url) = std::env::var("PRMSYNC_TEST_POSTGRES") else {
        println!(
            "skipped fleet_ops: PRMSYNC_TEST_POSTGRES is not set (see docs/postgres.md, Tests)"
        );
        return;
    };
    let schema = format!("flops_{}", std::process::id());
    let ps = PartnerStackSim::new(PS_KEY);
    let hs = HubSpotSim::new(HS_TOKEN);
    let ps_server = SimServer::start(ps.router()).await.expect("PartnerStack");
    let hs_server = SimServer::start(hs.router()).await.expect("HubSpot");
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
    let file = write_fleet(
        root.path(),
        &url,
        &schema,
        ps_server.url("/api/v2").as_str(),
        hs_server.url("").as_str(),
    );
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

    let fleet = Arc::new(
        Fleet::start(
            *config,
            Environment::default(),
            system_clock(),
            FailPoints::none(),
        )
        .await
        .expect("the fleet starts"),
    );
    // Started, not holding the lease: the pause recorded for the holder stays.
    let before = holds().await;
    assert!(
        before
            .iter()
            .any(|h| h.system == "partnerstack" && h.state == "needs_reauth"),
        "a daemon that does not hold the lease left the pause alone: {before:?}"
    );

    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let fleet = fleet.clone();
        let stop = stop.clone();
        async move { fleet.run(stop, Arc::new(Notify::new())).await }
    });
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

    stop.cancel();
    running.await.unwrap();
    let fleet = Arc::into_inner(fleet).expect("the fleet is no longer shared");
    fleet.shutdown_within(Duration::from_secs(10)).await;
}
