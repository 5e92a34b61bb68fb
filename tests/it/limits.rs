//! Limits and budgets end to end: a 429 holds the whole system (no request inside the wait) and
//! back-pressure never counts as a failed attempt, so it alone never dead-letters.

use prmsync::app::Daemon;
use prmsync::engine::system_clock;
use prmsync::sim::{Fault, Injected, LoggedRequest};

use crate::harness::World;

/// HubSpot API requests (token requests aside), in arrival order.
fn api_requests(log: Vec<LoggedRequest>) -> Vec<LoggedRequest> {
    let mut log: Vec<_> = log
        .into_iter()
        .filter(|r| r.path.starts_with("/crm/"))
        .collect();
    log.sort_by_key(|r| r.at_ms);
    log
}

/// Five 429s in a row on the batch upserts, with `max_attempts = 2`: before, the second one
/// dead-lettered every deal; now every deal arrives, nothing is dead-lettered, and no request of
/// any kind (upserts, searches) reaches HubSpot inside a `Retry-After` window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_alone_never_dead_letters_and_no_request_goes_inside_the_wait() {
    let world = World::seeded(5).await;
    world.hs.inject_upsert_faults((0..5).map(|_| {
        Injected::Fault(Fault {
            status: 429,
            retry_after: Some(1),
        })
    }));
    let mut config = world.config();
    config.daemon.max_attempts = 2;
    let daemon = Daemon::start(config, system_clock()).await.expect("daemon");
    daemon.run_until_idle().await.expect("passes");
    assert_eq!(world.hs.objects("deals").len(), 5, "every deal arrived");
    let now = jiff::Timestamp::now().as_millisecond();
    let status = daemon.engine.store().status(now).await.expect("status");
    assert_eq!(status.dead_letters, 0, "{:?}", status.last_errors);

    let log = api_requests(world.hs.request_log());
    let limited: Vec<&LoggedRequest> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 5, "{log:?}");
    for hit in limited {
        let inside: Vec<_> = log
            .iter()
            .filter(|r| r.at_ms > hit.at_ms && r.at_ms < hit.at_ms + 1000)
            .collect();
        assert!(
            inside.is_empty(),
            "sent inside the Retry-After window of the 429 at {}: {inside:?}",
            hit.at_ms
        );
    }
    daemon.shutdown().await;
}

/// Salesforce can refuse one record of a collections call with `REQUEST_LIMIT_EXCEEDED` in its
/// result (the org's limit reached mid-call) while answering 200. Before, only a 403 answer held
/// the system: the per-record refusal put no hold on the pacer, so pollers and later chunks kept
/// sending. Now it holds Salesforce like a 403 (nothing is sent inside the wait) and the record
/// is queued again uncounted: a hold, not an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_record_request_limit_from_salesforce_holds_the_system_and_counts_no_attempt() {
    use prmsync::engine::Hold;
    use prmsync::model::SystemKind;
    use secrecy::SecretString;

    let world = World::seeded(5).await;
    let (sf, server) = crate::rules_salesforce::salesforce().await;
    sf.limit_record("deal_3");
    let mut config = world.config();
    config.daemon.mappings_dir = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-salesforce"),
    );
    config.daemon.state_key = Some(SecretString::from("limits-test-state-key"));
    config.crm = prmsync::config::CrmConfig::Salesforce(prmsync::config::SalesforceConfig {
        login_url: server.url(""),
        auth: prmsync::config::SalesforceAuthConfig::RefreshToken {
            client_id: "3MVG9sim.consumer.key".into(),
            client_secret: Some(SecretString::from("sim-consumer-secret")),
            refresh_token: SecretString::from("5Aep.initial"),
        },
        audience: None,
        rate_limit: None,
    });
    config.daemon.max_attempts = 1;
    let daemon = Daemon::start(config, system_clock()).await.expect("daemon");
    daemon.engine.tick().await.expect("one pass");

    assert_eq!(
        sf.records("Opportunity").len(),
        4,
        "the others were written"
    );
    let hold = daemon.engine.hold(SystemKind::Salesforce);
    assert!(
        matches!(hold, Some(Hold::RateLimited { until_ms }) if until_ms > jiff::Timestamp::now().as_millisecond() + 60_000),
        "{hold:?}"
    );
    let pacer = daemon
        .engine
        .connector(SystemKind::Salesforce)
        .expect("Salesforce")
        .pacer()
        .clone();
    assert!(
        pacer.held_for().is_some(),
        "every request to Salesforce waits, whoever sends it"
    );
    let sent = sf.request_log().len();
    daemon.engine.tick().await.expect("a pass inside the wait");
    assert_eq!(sf.request_log().len(), sent, "nothing sent inside the wait");
    let now = jiff::Timestamp::now().as_millisecond();
    let status = daemon.engine.store().status(now).await.expect("status");
    assert_eq!(status.dead_letters, 0, "{:?}", status.last_errors);
    let attempts: i64 = rusqlite::Connection::open(world.state_path())
        .expect("state")
        .query_row(
            "SELECT attempts FROM outbox WHERE source_id = 'deal_3'",
            [],
            |r| r.get(0),
        )
        .expect("deal_3 is queued again");
    assert_eq!(attempts, 0, "a hold is not an attempt");
    daemon.shutdown().await;
}
