//! Several tenants in one daemon (`daemon.tenants_dir`): through the running daemon, a tenant with
//! a dead credential, one whose CRM answers 429 storms and one with a broken mapping leave the
//! healthy tenant syncing, and each problem shows in that tenant's own status only; webhook
//! routes, `/metrics`, the CLI's `--tenant` and a reload that picks up a repaired tenant.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use prmsync::config::{Environment, Loaded, load_any};
use prmsync::engine::system_clock;
use prmsync::failpoint::FailPoints;
use prmsync::sim::hubspot::HubSpotSim;
use prmsync::sim::partnerstack::PartnerStackSim;
use prmsync::sim::{Fault, SimServer, seed};
use prmsync::tenants::Fleet;
use prmsync::webhook::signature::hubspot_v3;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::{HS_TOKEN, PS_KEY, wait_ok, wait_until};

const WAIT: Duration = Duration::from_secs(90);

/// One tenant's PartnerStack and HubSpot.
struct Sims {
    ps: PartnerStackSim,
    hs: HubSpotSim,
    _servers: (SimServer, SimServer),
}

async fn sims(deals: usize) -> Sims {
    let ps = PartnerStackSim::new(PS_KEY);
    let hs = HubSpotSim::new(HS_TOKEN);
    let ps_server = SimServer::start(ps.router())
        .await
        .expect("PartnerStack sim");
    let hs_server = SimServer::start(hs.router()).await.expect("HubSpot sim");
    for d in seed::deals(deals, 3) {
        ps.upsert_deal(d);
    }
    let s = Sims {
        ps,
        hs,
        _servers: (ps_server, hs_server),
    };
    assert_eq!(s.ps.deals().len(), deals);
    s
}

/// Writes tenant `name`'s folder: its `tenant.toml` pointing at `sims`, with its credentials in
/// files it names by reference (the HubSpot token given, the webhook secret `NAME-secret`).
fn tenant(root: &Path, name: &str, sims: &Sims, hubspot_token: &str) -> PathBuf {
    crate::harness::tenant_folder(
        root,
        name,
        sims._servers.0.url("/api/v2").as_str(),
        sims._servers.1.url("").as_str(),
        hubspot_token,
    )
}

fn prmsync(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(args)
        .env_remove("PRMSYNC_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A HubSpot v3-signed POST of `body` to `url` with `secret`.
async fn signed_post(url: &str, secret: &str, body: &[u8]) -> (u16, String) {
    let ts = jiff::Timestamp::now().as_millisecond().to_string();
    let sig = hubspot_v3(secret.as_bytes(), "POST", url, body, &ts);
    post(
        url,
        &[
            ("content-type", "application/json".into()),
            ("x-hubspot-signature-v3", sig),
            ("x-hubspot-request-timestamp", ts),
        ],
        body,
    )
    .await
}

fn status_of(root: &Path, name: &str) -> prmsync::store::StatusReport {
    let path = root.join("state/tenants").join(format!("{name}.db"));
    prmsync::store::status_read_only(&path, jiff::Timestamp::now().as_millisecond())
        .expect("tenant state file reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenants_dead_credential_429_storm_or_broken_mapping_leaves_the_others_syncing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let healthy = sims(8).await;
    let dead = sims(4).await;
    let storm = sims(4).await;
    let broken = sims(4).await;
    tenant(root, "acme", &healthy, HS_TOKEN);
    tenant(root, "bolt", &dead, "a-revoked-token");
    tenant(root, "crest", &storm, HS_TOKEN);
    let broken_dir = tenant(root, "delta", &broken, HS_TOKEN);
    std::fs::create_dir(broken_dir.join("mappings")).unwrap();
    std::fs::write(
        broken_dir.join("mappings/deals.toml"),
        "name = \"deals\"\n[[field]\nsource = ",
    )
    .unwrap();
    // Every HubSpot call of crest's portal is refused with 429 + Retry-After, for the whole test.
    storm.hs.inject((0..100_000).map(|_| Fault {
        status: 429,
        retry_after: Some(1),
    }));
    let file = root.join("prmsync.toml");
    std::fs::write(
        &file,
        r#"[daemon]
state_path = "state/prmsync.db"
tenants_dir = "tenants"
poll_interval_secs = 1

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
min_free_bytes = 0
"#,
    )
    .unwrap();
    let Loaded::Tenants(config) = load_any(&file, &Environment::default()).unwrap() else {
        panic!("a config with daemon.tenants_dir runs tenants");
    };
    let fleet = Arc::new(
        Fleet::start(
            *config,
            Environment::default(),
            system_clock(),
            FailPoints::none(),
        )
        .await
        .expect("the fleet starts with a broken tenant among them"),
    );
    let tenants = fleet.tenants();
    let names: Vec<&str> = tenants.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["acme", "bolt", "crest", "delta"]);
    let delta = &tenants[3].1;
    assert!(
        delta.as_ref().is_err_and(|e| e.contains("deals.toml")),
        "the broken tenant is skipped with its mapping error located: {delta:?}"
    );
    assert!(tenants[..3].iter().all(|(_, r)| r.is_ok()), "{tenants:?}");

    let stop = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    let running = tokio::spawn({
        let fleet = fleet.clone();
        let stop = stop.clone();
        let reload = reload.clone();
        async move { fleet.run(stop, reload).await }
    });

    // The healthy tenant's records all reach its CRM, once each.
    wait_ok(WAIT, "acme's deals in its HubSpot", || async {
        let n = healthy.hs.objects("deals").len();
        if n == 8 {
            Ok(())
        } else {
            Err(format!("{n} of 8"))
        }
    })
    .await;
    assert!(healthy.hs.writes("deals").values().all(|(c, _)| *c == 1));
    // bolt's dead credential pauses bolt's HubSpot connection, in bolt's status only.
    wait_until(
        WAIT,
        "bolt's HubSpot paused for re-authorisation",
        || async {
            status_of(root, "bolt")
                .holds
                .iter()
                .any(|h| h.system == "hubspot" && h.state == "needs_reauth")
        },
    )
    .await;
    // crest's portal refused its calls with 429 all along: nothing reached it.
    wait_until(WAIT, "crest's HubSpot answering 429", || async {
        storm.hs.request_log().iter().any(|r| r.status == 429)
    })
    .await;
    assert!(storm.hs.objects("deals").is_empty());
    assert!(dead.hs.objects("deals").is_empty());
    assert!(broken.hs.objects("deals").is_empty());
    let acme = status_of(root, "acme");
    assert!(acme.holds.is_empty(), "{:?}", acme.holds);
    assert_eq!(acme.dead_letters, 0);
    assert!(
        status_of(root, "crest")
            .holds
            .iter()
            .all(|h| h.state != "needs_reauth"),
        "a 429 storm is a wait, not a dead credential"
    );
    assert!(!root.join("state/tenants/delta.db").exists());

    // Webhooks: the tenant's own secret, an unknown tenant, a skipped tenant, the old route.
    let base = format!("http://{}", fleet.http_addr);
    let body = br#"[]"#;
    let acme_url = format!("{base}/webhooks/acme/hubspot");
    assert_eq!(signed_post(&acme_url, "acme-secret", body).await.0, 200);
    let (status, _) = signed_post(&acme_url, "bolt-secret", body).await;
    assert_eq!(status, 401, "another tenant's secret does not verify");
    let (status, text) = signed_post(&format!("{base}/webhooks/zeta/hubspot"), "x", body).await;
    assert_eq!(status, 404);
    assert!(text.contains("unknown tenant \\\"zeta\\\""), "{text}");
    let (status, text) = signed_post(&format!("{base}/webhooks/delta/hubspot"), "x", body).await;
    assert_eq!(status, 404);
    assert!(text.contains("not running"), "{text}");
    let (status, text) = signed_post(&format!("{base}/webhooks/hubspot"), "x", body).await;
    assert_eq!(status, 404);
    assert!(text.contains("/webhooks/{tenant}/hubspot"), "{text}");

    // Metrics: each tenant's figures under its label, which tenants run.
    let scrape = || async {
        reqwest::get(format!("http://{}/metrics", fleet.admin_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    wait_ok(WAIT, "tenant-labelled metrics", || async {
        let metrics = scrape().await;
        let missing: Vec<&str> = [
            "prmsync_tenant_up{tenant=\"acme\"} 1",
            "prmsync_tenant_up{tenant=\"delta\"} 0",
            "prmsync_links{tenant=\"acme\"} 8",
            "prmsync_connection_paused{tenant=\"bolt\",system=\"hubspot\",state=\"needs_reauth\"} 1",
        ]
        .into_iter()
        .filter(|line| !metrics.lines().any(|l| l == *line))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{missing:?} missing from\n{metrics}"))
        }
    })
    .await;
    let metrics = scrape().await;
    assert_eq!(
        metrics.matches("# HELP prmsync_links ").count(),
        1,
        "one family per metric"
    );
    assert!(
        !metrics.contains("prmsync_connection_paused{tenant=\"acme\""),
        "{metrics}"
    );

    // The CLI: the tenant list, one tenant's status, and clear errors without or with a wrong name.
    let cfg = file.display().to_string();
    let (code, out, err) = prmsync(&["status", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_owned()
    };
    assert!(line("acme").contains("synced"), "{out}");
    assert!(line("bolt").contains("1 connection(s) paused"), "{out}");
    assert!(!line("acme").contains("paused"), "{out}");
    assert!(
        line("delta").contains("broken") && line("delta").contains("deals.toml"),
        "{out}"
    );
    let (code, out, err) = prmsync(&["status", "--config", &cfg, "--tenant", "bolt"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("bolt.db") && out.contains("NEEDS RE-AUTHORISATION"),
        "{out}"
    );
    let (code, _, err) = prmsync(&["dlq", "list", "--config", &cfg]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--tenant NAME") && err.contains("acme, bolt, crest, delta"),
        "{err}"
    );
    let (code, _, err) = prmsync(&[
        "registrations",
        "list",
        "--config",
        &cfg,
        "--tenant",
        "zeta",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown tenant \"zeta\""), "{err}");
    let (code, out, err) = prmsync(&["check", "--config", &cfg]);
    assert_eq!(
        code, 0,
        "a broken tenant is skipped, as the daemon does: {err}"
    );
    assert!(
        out.contains("tenant acme:")
            && err.contains("1 of 4 tenant(s) have problems")
            && err.ends_with("delta\n"),
        "{err}"
    );
    let (code, _, err) = prmsync(&["check", "--config", &cfg, "--tenant", "delta"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("deals.toml"), "{err}");

    // One reload: delta repaired (starts), bolt's tenant.toml changed with a working token
    // (restarts), crest's folder removed (stops), acme's file broken (keeps running as it was).
    std::fs::remove_file(broken_dir.join("mappings/deals.toml")).unwrap();
    std::fs::remove_dir(broken_dir.join("mappings")).unwrap();
    let bolt = tenant(root, "bolt", &dead, HS_TOKEN);
    let mut text = std::fs::read_to_string(bolt.join("tenant.toml")).unwrap();
    text.push_str("\n[daemon]\nbatch_size = 50\n");
    std::fs::write(bolt.join("tenant.toml"), text).unwrap();
    std::fs::remove_dir_all(root.join("tenants/crest")).unwrap();
    let acme_file = root.join("tenants/acme/tenant.toml");
    let acme_text = std::fs::read_to_string(&acme_file).unwrap();
    std::fs::write(
        &acme_file,
        acme_text.replace("[hubspot]", "[hubspot]\nnot_a_key = 1"),
    )
    .unwrap();
    reload.notify_one();
    let count = |sims: &Sims, want: usize| {
        let n = sims.hs.objects("deals").len();
        if n == want {
            Ok(())
        } else {
            Err(format!("{n} of {want}"))
        }
    };
    wait_ok(WAIT, "delta's deals after the reload", || async {
        count(&broken, 4)
    })
    .await;
    wait_ok(WAIT, "bolt's deals after the reload", || async {
        count(&dead, 4)
    })
    .await;
    wait_until(WAIT, "crest stopped", || async {
        fleet.tenants().iter().all(|(n, _)| n != "crest")
    })
    .await;
    let (status, text) = signed_post(
        &format!("{base}/webhooks/crest/hubspot"),
        "crest-secret",
        body,
    )
    .await;
    assert_eq!(status, 404);
    assert!(text.contains("unknown tenant"), "{text}");
    assert!(
        fleet.tenants().iter().all(|(_, r)| r.is_ok()),
        "acme keeps running on its loaded config: {:?}",
        fleet.tenants()
    );
    // acme still syncs: a new deal gets to its CRM.
    let ninth = seed::deals(9, 3).pop().unwrap();
    healthy.ps.upsert_deal(ninth);
    wait_ok(WAIT, "acme's new deal", || async { count(&healthy, 9) }).await;

    stop.cancel();
    running.await.unwrap();
    let fleet = Arc::try_unwrap(fleet).expect("the run task has ended");
    fleet.shutdown_within(Duration::from_secs(10)).await;
}

#[test]
fn the_example_tenants_folder_loads_with_its_mappings_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prmsync.toml");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tenants");
    std::fs::write(
        &file,
        format!("[daemon]\nstate_path = \"state/prmsync.db\"\ntenants_dir = \"{example}\"\n"),
    )
    .unwrap();
    let Loaded::Tenants(fleet) = load_any(&file, &Environment::default()).unwrap() else {
        panic!("the example runs tenants");
    };
    let list = prmsync::tenants::status::list(&fleet, &Environment::default(), 0).unwrap();
    let seen: Vec<(&str, &str)> = list.iter().map(|t| (t.tenant.as_str(), t.state)).collect();
    assert_eq!(
        seen,
        [("acme", "no state yet"), ("globex", "no state yet")],
        "{list:?}"
    );
}
