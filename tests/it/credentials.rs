//! Credentials through the running daemon: a reload that loads a new credential resumes a paused
//! connection at once, a newly configured Salesforce token wins over the saved one, the saved
//! token is re-read (another writer rotated it) before one is declared dead, and a restart
//! clears a pause recorded by the process before.

use prmsync::app::Daemon;
use prmsync::config::{CrmConfig, SalesforceAuthConfig};
use prmsync::engine::Hold;
use prmsync::engine::system_clock;
use prmsync::model::SystemKind;
use prmsync::sim::SimServer;
use prmsync::sim::salesforce::SalesforceSim;
use secrecy::SecretString;
use serde_json::json;

use crate::connectors::{salesforce_config, sf_auth};
use crate::harness::{HS_TOKEN, World};

fn with_refresh_token(config: &mut prmsync::config::Config, token: &str) {
    let CrmConfig::Salesforce(sf) = &mut config.crm else {
        panic!("a Salesforce config");
    };
    let SalesforceAuthConfig::RefreshToken { refresh_token, .. } = &mut sf.auth else {
        panic!("the refresh-token flow");
    };
    *refresh_token = SecretString::from(token.to_owned());
}

/// HubSpot revokes the token: the connection pauses and changes queue. A reload whose config
/// names the new token resumes it at once (no probe wait) and the queue is delivered; a reload
/// with the same credentials changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_hubspot_token_resumes_the_paused_connection() {
    let w = World::seeded(4).await;
    let config = w.config();
    let d = Daemon::start(config.clone(), system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("first sync");
    w.converged().expect("converged");
    w.hs.set_token("hs-reauthorised");
    for mut deal in w.ps.deals().into_iter().take(2) {
        deal.insert("amount".into(), json!(777_000));
        w.ps.upsert_deal(deal);
    }
    d.engine.tick().await.expect("pass with a dead token");
    assert!(matches!(
        d.engine.hold(SystemKind::HubSpot),
        Some(Hold::NeedsReauth { .. })
    ));
    assert_eq!(
        d.reload_credentials(&config).await.expect("reload"),
        Vec::<SystemKind>::new(),
        "the same credentials: nothing changes"
    );
    assert!(d.engine.hold(SystemKind::HubSpot).is_some());

    let mut reloaded = config.clone();
    let CrmConfig::HubSpot(h) = &mut reloaded.crm else {
        panic!("a HubSpot config");
    };
    h.access_token = SecretString::from("hs-reauthorised");
    assert_eq!(
        d.reload_credentials(&reloaded).await.expect("reload"),
        vec![SystemKind::HubSpot]
    );
    assert_eq!(d.engine.hold(SystemKind::HubSpot), None, "resumed at once");
    let s = d.engine.store().status(0).await.expect("status");
    assert!(s.holds.is_empty(), "{s:?}");
    d.run_until_idle().await.expect("pass after the reload");
    w.converged().expect("the queued changes are delivered");
    assert_eq!(
        d.engine
            .store()
            .status(0)
            .await
            .expect("status")
            .dead_letters,
        0
    );
    d.shutdown().await;
    // The token in the simulator is what the world's checks use from now on.
    w.hs.set_token(HS_TOKEN);
}

/// The connected app is re-authorised after the daemon's token was revoked: the daemon pauses
/// on `invalid_grant`; a reload with the new configured token wins over the saved (rotated, now
/// dead) one, resumes, and the new token's rotations are saved under its own fingerprint, so a
/// restart with the same config keeps using the saved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_configured_salesforce_token_wins_over_the_saved_one_and_resumes() {
    let w = World::seeded(2).await;
    let sim = SalesforceSim::new(sf_auth(true, false));
    let server = SimServer::start(sim.router()).await.expect("sim");
    let config = salesforce_config(&w, &server);
    let d = Daemon::start(config.clone(), system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("first pass");
    assert_eq!(sim.records("Opportunity").len(), 2);

    sim.reauthorise("5Aep.reauthorised");
    w.ps.upsert_deal(prmsync::sim::seed::deals(3, 1).remove(2));
    d.engine.tick().await.expect("pass with a revoked token");
    assert!(matches!(
        d.engine.hold(SystemKind::Salesforce),
        Some(Hold::NeedsReauth { .. })
    ));
    let invalid = sim.stats().invalid_grants;
    assert!(invalid >= 1, "the revoked token was refused");

    let mut reloaded = config.clone();
    with_refresh_token(&mut reloaded, "5Aep.reauthorised");
    assert_eq!(
        d.reload_credentials(&reloaded).await.expect("reload"),
        vec![SystemKind::Salesforce]
    );
    assert_eq!(d.engine.hold(SystemKind::Salesforce), None);
    let report = d.run_until_idle().await.expect("pass after the reload");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(sim.records("Opportunity").len(), 3);
    assert_eq!(
        sim.stats().invalid_grants,
        invalid,
        "no refused grant since"
    );
    d.shutdown().await;

    // A restart with the new config uses the token saved from it (rotated since), not the
    // configured one, which rotation revoked.
    let d = Daemon::start(reloaded, system_clock())
        .await
        .expect("restart");
    sim.expire_sessions();
    w.ps.upsert_deal(prmsync::sim::seed::deals(4, 1).remove(3));
    let report = d.run_until_idle().await.expect("pass after the restart");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(sim.records("Opportunity").len(), 4);
    assert_eq!(sim.stats().invalid_grants, invalid);
    d.shutdown().await;
}

/// Another writer of the same state file rotates the token under the running daemon (here a
/// second connector on the daemon's store, as an overlapping old process would): the daemon
/// re-reads the saved token before refreshing and keeps syncing, with no refused grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rereads_a_token_rotated_by_another_writer_instead_of_pausing() {
    let w = World::seeded(1).await;
    let sim = SalesforceSim::new(sf_auth(true, false));
    let server = SimServer::start(sim.router()).await.expect("sim");
    let config = salesforce_config(&w, &server);
    let d = Daemon::start(config.clone(), system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("first pass");
    let (_, other) = prmsync::app::connectors(&config, Some(d.engine.store())).expect("connectors");
    other.health().await.expect("the other writer rotates");
    let rotated = sim.current_refresh_token();
    sim.expire_sessions();
    w.ps.upsert_deal(prmsync::sim::seed::deals(2, 1).remove(1));
    let report = d.run_until_idle().await.expect("pass");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(d.engine.hold(SystemKind::Salesforce), None);
    assert_eq!(sim.stats().invalid_grants, 0);
    assert_ne!(
        sim.current_refresh_token(),
        rotated,
        "the daemon rotated it on"
    );
    assert_eq!(sim.records("Opportunity").len(), 2);
    d.shutdown().await;
}

/// A pause recorded by the previous process (status shows it) ends when a new process starts
/// with the credentials configured now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_clears_the_pause_recorded_before_it() {
    let w = World::seeded(1).await;
    let d = w.daemon().await;
    d.run_until_idle().await.expect("first sync");
    w.hs.set_token("hs-other");
    w.ps.upsert_deal(prmsync::sim::seed::deals(2, 1).remove(1));
    d.engine.tick().await.expect("pass with a dead token");
    let s = d.engine.store().status(0).await.expect("status");
    assert_eq!(s.holds.len(), 1, "{s:?}");
    d.shutdown().await;

    w.hs.set_token(HS_TOKEN);
    let d = w.daemon().await;
    let s = d.engine.store().status(0).await.expect("status");
    assert!(s.holds.is_empty(), "{s:?}");
    d.run_until_idle().await.expect("sync");
    w.converged().expect("converged");
    d.shutdown().await;
}

/// A refresh token an older prmsync saved in plain text is sealed when the daemon starts (not
/// only at its next rotation, which a connected app without rotation never makes), and it is
/// still the token used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_token_from_an_older_prmsync_is_sealed_at_start_and_still_used() {
    let w = World::seeded(1).await;
    let sim = SalesforceSim::new(sf_auth(false, false));
    let server = SimServer::start(sim.router()).await.expect("sim");
    let config = salesforce_config(&w, &server);
    let store = prmsync::store::Store::open(&config.daemon.state_path).expect("state file");
    store
        .save_credential(
            "salesforce.refresh_token".into(),
            crate::connectors::REFRESH.into(),
            0,
        )
        .await
        .expect("saved as an older prmsync did");
    drop(store);

    let d = Daemon::start(config.clone(), system_clock())
        .await
        .expect("daemon");
    let raw = d
        .engine
        .store()
        .credential("salesforce.refresh_token".into())
        .await
        .expect("read")
        .expect("still saved");
    assert!(!raw.contains(crate::connectors::REFRESH), "{raw}");
    let report = d.run_until_idle().await.expect("sync");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(sim.records("Opportunity").len(), 1);
    assert_eq!(sim.stats().invalid_grants, 0);
    d.shutdown().await;
}

/// The real reload path: the daemon runs from a config file whose HubSpot token is a
/// `{ file = … }` secret; HubSpot revokes the token and the running pipeline pauses the
/// connection; the operator writes the new token to the file and reloads (SIGHUP's notify): the
/// file is read again, the connection resumes and the queued change is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_config_files_new_token_and_the_running_pipeline_resumes() {
    use std::sync::Arc;
    use std::time::Duration;

    let w = World::seeded(2).await;
    let secrets = w.dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    for (name, value) in [
        ("partnerstack_api_key", prmsync::demo::PS_KEY),
        ("hubspot_access_token", HS_TOKEN),
        ("hubspot_client_secret", prmsync::demo::HS_SECRET),
    ] {
        std::fs::write(secrets.join(name), value).expect("secret file");
    }
    let loopback = "127.0.0.1:0".parse().expect("addr");
    let text = prmsync::ops::sim::config_text(
        &w.ps_server.url("/api/v2"),
        &w.hs_server.url(""),
        &secrets,
        loopback,
        loopback,
    )
    .replace("poll_interval_secs = 5", "poll_interval_secs = 1");
    let path = w.dir.path().join("prmsync.toml");
    std::fs::write(&path, text).expect("config file");
    let env = prmsync::config::Environment::default();
    let config = prmsync::config::load(&path, &env).expect("config loads");
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon")
        .with_config_file(path.clone());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reload = Arc::new(tokio::sync::Notify::new());
    let steps = async {
        crate::harness::wait_until(Duration::from_secs(60), "first sync", || async {
            w.converged().is_ok()
        })
        .await;
        w.hs.set_token("hs-rotated-by-admin");
        let mut deal = w.ps.deals().remove(0);
        deal.insert("amount".into(), json!(123_400));
        w.ps.upsert_deal(deal);
        crate::harness::wait_until(Duration::from_secs(60), "the pause", || async {
            matches!(
                d.engine.hold(SystemKind::HubSpot),
                Some(Hold::NeedsReauth { .. })
            )
        })
        .await;
        std::fs::write(secrets.join("hubspot_access_token"), "hs-rotated-by-admin")
            .expect("new token");
        reload.notify_one();
        crate::harness::wait_until(Duration::from_secs(60), "resumed and delivered", || async {
            d.engine.hold(SystemKind::HubSpot).is_none() && w.converged().is_ok()
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(d.run(shutdown.clone(), reload.clone()), steps);
    let s = d.engine.store().status(0).await.expect("status");
    assert!(s.holds.is_empty() && s.dead_letters == 0, "{s:?}");
    d.shutdown().await;
}

/// `prmsync plan` with rules of engagement on Salesforce: the registrations part reads the CRM
/// facts with the daemon's saved session too, so neither part sends the refresh grant, rotates
/// the token, or opens the state file for writing; the daemon goes on with its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_with_rules_on_salesforce_never_refreshes_the_daemons_token() {
    let w = World::seeded(2).await;
    let sim = SalesforceSim::new(sf_auth(true, false));
    let server = SimServer::start(sim.router()).await.expect("sim");
    let mut config = salesforce_config(&w, &server);
    config.daemon.mappings_dir = Some(crate::rules_salesforce::salesforce_mappings(w.dir.path()));
    let d = Daemon::start(config.clone(), system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("first pass");
    let (grants, token) = (sim.stats().refresh_grants, sim.current_refresh_token());

    prmsync::app::plan(&config, None).await.expect("flows plan");
    let (version, _) = prmsync::app::plan_registrations(&config)
        .await
        .expect("registrations plan")
        .expect("a rules file");
    assert!(!version.is_empty());
    assert_eq!(sim.stats().refresh_grants, grants, "plan refreshed nothing");
    assert_eq!(sim.current_refresh_token(), token, "nothing rotated");

    sim.expire_sessions();
    w.ps.upsert_deal(prmsync::sim::seed::deals(3, 1).remove(2));
    let report = d.run_until_idle().await.expect("the daemon refreshes");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(sim.stats().invalid_grants, 0);
    d.shutdown().await;
}

/// A new credential brings its own budgets, with the limits the reloaded config names (the new
/// private app's tier: `hubspot.rate_limit`); before, the connection kept the old credential's
/// pacer and limits, and the reload lifted a rate-limit wait in force. The wait the vendor asked
/// for stays, and nothing is sent inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_credential_takes_its_tier_s_limits_and_keeps_the_wait() {
    use prmsync::connector::{Limits, Rate};
    use prmsync::sim::Fault;
    use std::time::Duration;

    let w = World::seeded(4).await;
    let config = w.config();
    let d = Daemon::start(config.clone(), system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("first sync");
    let pacer = || {
        d.engine
            .connector(SystemKind::HubSpot)
            .expect("HubSpot")
            .pacer()
            .clone()
    };
    assert_eq!(pacer().limits(), Limits::documented(SystemKind::HubSpot));
    w.hs.inject([Fault {
        status: 429,
        retry_after: Some(30),
    }]);
    for mut deal in w.ps.deals().into_iter().take(2) {
        deal.insert("amount".into(), json!(777_000));
        w.ps.upsert_deal(deal);
    }
    d.engine.tick().await.expect("a pass that meets the 429");
    assert!(matches!(
        d.engine.hold(SystemKind::HubSpot),
        Some(Hold::RateLimited { .. })
    ));

    w.hs.set_token("hs-professional");
    let mut reloaded = config.clone();
    let CrmConfig::HubSpot(h) = &mut reloaded.crm else {
        panic!("a HubSpot config");
    };
    h.access_token = SecretString::from("hs-professional");
    let tier = Rate {
        n: 190,
        per: Duration::from_secs(10),
    };
    h.rate_limit = Some(tier);
    assert_eq!(
        d.reload_credentials(&reloaded).await.expect("reload"),
        vec![SystemKind::HubSpot]
    );
    assert_eq!(pacer().limits().burst, tier, "the new tier's window");
    assert!(
        matches!(
            d.engine.hold(SystemKind::HubSpot),
            Some(Hold::RateLimited { .. })
        ),
        "the wait stays"
    );
    assert!(
        pacer()
            .held_for()
            .is_some_and(|w| w > Duration::from_secs(20))
    );
    let sent = w.hs.request_log().len();
    d.engine.tick().await.expect("a pass inside the wait");
    assert_eq!(
        w.hs.request_log().len(),
        sent,
        "nothing sent inside the wait"
    );
    d.shutdown().await;
}
