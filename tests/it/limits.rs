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
