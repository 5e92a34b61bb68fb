//! Bounded state: retention prunes the history, the file stops growing in steady state, a pruned
//! inbox row never lets an old version be applied again, and the kept counters equal a recount.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prmsync::config::PrmConfig;
use prmsync::store::RetentionPolicy;
use prmsync::webhook::signature::body_hmac;
use secrecy::SecretString;
use serde_json::json;

use crate::harness::World;

const PS_HOOK_SECRET: &str = "ps-hook-secret";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The world's config with only the built-in deal mapping (no rules of engagement, whose
/// decision write-backs would add writes this file's tests do not count) and PartnerStack
/// webhooks on.
fn config(w: &World) -> prmsync::config::Config {
    let dir = w.state_path().with_file_name("mappings-without-rules");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in prmsync::mapping::BUILTIN {
        let file = std::path::Path::new(name).file_name().unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }
    let mut config = w.config();
    config.daemon.mappings_dir = Some(dir);
    let PrmConfig::PartnerStack(ps) = &mut config.prm else {
        panic!("the test world's PRM is PartnerStack");
    };
    ps.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    config
}

async fn post_ps_webhook(
    addr: std::net::SocketAddr,
    deal: &serde_json::Map<String, serde_json::Value>,
) -> reqwest::StatusCode {
    let body = serde_json::to_vec(&json!({"event": "deal.updated", "data": deal})).unwrap();
    prmsync::connector::http_client(Duration::from_secs(5))
        .post(format!("http://{addr}/webhooks/partnerstack"))
        .header(
            prmsync::webhook::PRM_SIGNATURE_HEADER,
            body_hmac(PS_HOOK_SECRET.as_bytes(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request answered")
        .status()
}

/// The deal flow's decisions for the partner deal `key`, oldest first.
fn forward_actions(w: &World, key: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(w.state_path()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT action FROM ledger WHERE source_id = ?1 AND direction = 'to_target' ORDER BY id",
        )
        .unwrap();
    stmt.query_map([key], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_offered_again_after_their_inbox_rows_are_pruned_are_not_applied_again() {
    let w = World::seeded(0).await;
    let d = prmsync::app::Daemon::start(config(&w), prmsync::engine::system_clock())
        .await
        .expect("daemon");
    let mut deal = prmsync::sim::seed::deals(1, 1).remove(0);
    deal.insert("amount".into(), json!(100_000));
    let key = w.ps.upsert_deal(deal.clone());
    let old = w.ps.deal(&key).unwrap();
    deal.insert("amount".into(), json!(200_000));
    w.ps.upsert_deal(deal);
    let newest = w.ps.deal(&key).unwrap();
    assert_eq!(post_ps_webhook(d.http_addr, &old).await, 200);
    assert_eq!(post_ps_webhook(d.http_addr, &newest).await, 200);
    d.run_until_idle().await.expect("sync");
    w.converged().expect("converged");
    let writes = w.hs.writes("deals");

    // Every processed inbox row goes: the dedupe rows for both versions are gone.
    let store = d.engine.store();
    let policy = RetentionPolicy {
        inbox: Duration::ZERO,
        ledger: None,
        registration_events: None,
    };
    let report = store.prune(policy, now() + 1).await.expect("prune");
    assert!(report.inbox >= 2, "{report:?}");

    // Both versions arrive again (a sender's late retries): with their dedupe rows gone they
    // are staged again, and the planner drops them from the link alone: the old one as stale
    // (or superseded by the newest in the same batch), the newest because the CRM has it.
    let before = forward_actions(&w, &key).len();
    assert_eq!(post_ps_webhook(d.http_addr, &old).await, 200);
    assert_eq!(post_ps_webhook(d.http_addr, &newest).await, 200);
    assert_eq!(store.status(now()).await.unwrap().inbox_pending, 2);
    d.run_until_idle().await.expect("process the repeats");
    let decided = forward_actions(&w, &key)[before..].to_vec();
    assert!(
        !decided.is_empty()
            && decided
                .iter()
                .all(|a| a == "skip_stale" || a == "skip_unchanged"),
        "{decided:?}"
    );
    assert_eq!(w.hs.writes("deals"), writes, "nothing written again");
    let hs = w.hs.find("deals", "prm_deal_id", &key).unwrap();
    assert_eq!(hs["amount"], json!("2000"));
    d.shutdown().await;
}

/// A clock the test moves forward, so retention windows pass without waiting.
fn test_clock(start: i64) -> (Arc<AtomicI64>, prmsync::engine::Clock) {
    let at = Arc::new(AtomicI64::new(start));
    let read = at.clone();
    (at, Arc::new(move || read.load(Ordering::SeqCst)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_stops_growing_in_steady_state() {
    const DEALS: usize = 150;
    const ROUNDS: usize = 8;
    let w = World::seeded(DEALS).await;
    // The default config: the rules of engagement record a registration version per change.
    let (at, clock) = test_clock(now());
    let d = prmsync::app::Daemon::start(w.config(), clock)
        .await
        .expect("daemon");
    let store = d.engine.store().clone();
    let policy = RetentionPolicy {
        inbox: DAY,
        ledger: Some(DAY),
        registration_events: Some(DAY),
    };
    let mut pages = Vec::new();
    for round in 0..ROUNDS {
        // Every partner deal changes once per round.
        for mut deal in w.ps.deals() {
            deal.insert("amount".into(), json!(1_000 + round));
            w.ps.upsert_deal(deal);
        }
        d.run_until_idle().await.expect("sync round");
        at.fetch_add(2 * DAY.as_millis() as i64, Ordering::SeqCst);
        let report = store
            .prune(policy, at.load(Ordering::SeqCst))
            .await
            .expect("prune");
        assert!(report.inbox >= DEALS, "round {round}: {report:?}");
        pages.push(store.file_pages().await.expect("pages").page_count);
    }
    w.converged().expect("converged");
    // The first rounds build the links and the tables' fixed overhead; after that, each round
    // writes as much as retention takes away. B-tree splits move the count by a page or two;
    // without pruning, every round would add its inbox rows, ledger lines and versions.
    let settled = pages[2];
    assert!(
        pages[3..].iter().all(|p| *p <= settled + settled / 20),
        "page counts per round: {pages:?}"
    );
    let (kept, recounted) = store.counts_kept_and_recounted().await.unwrap();
    assert_eq!(kept.links, recounted.links);
    assert_eq!(kept.inbox_pending, 0);
    d.shutdown().await;
}

async fn counters_match_a_recount(store: &prmsync::store::Store, when: &str) {
    let (kept, recounted) = store.counts_kept_and_recounted().await.expect("counts");
    assert_eq!(
        kept, recounted,
        "kept counters differ from a full recount {when}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_counters_equal_a_full_recount_through_retries_dead_letters_and_replays() {
    let w = World::seeded(12).await;
    let mut bad = prmsync::sim::seed::deals(13, 1).pop().unwrap();
    bad.insert("stage".into(), json!("pending_legal"));
    w.ps.upsert_deal(bad);
    // One batch refused for good, one retried.
    w.hs.inject_upsert_faults([
        prmsync::sim::Fault {
            status: 503,
            retry_after: None,
        },
        prmsync::sim::Fault {
            status: 400,
            retry_after: None,
        },
    ]);
    // The default config: the rules of engagement decide registrations too.
    let d = w.daemon().await;
    let store = d.engine.store().clone();
    counters_match_a_recount(&store, "on a new file").await;
    d.run_until_idle().await.expect("sync");
    let status = store.status(now()).await.unwrap();
    assert!(status.dead_letters > 0, "{status:?}");
    assert!(!status.registrations.is_empty(), "{status:?}");
    counters_match_a_recount(&store, "after dead letters").await;
    store
        .replay_dead_letters(prmsync::store::dlq::Selection::All, now())
        .await
        .expect("replay");
    counters_match_a_recount(&store, "after a replay").await;
    d.run_until_idle().await.expect("sync after replay");
    counters_match_a_recount(&store, "after the replayed writes").await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_retention_a_synced_link_costs_under_300_bytes_of_state_file() {
    const DEALS: usize = 1_000;
    let w = World::seeded(DEALS).await;
    let (at, clock) = test_clock(now());
    let d = prmsync::app::Daemon::start(config(&w), clock)
        .await
        .expect("daemon");
    let store = d.engine.store().clone();
    // Every table and index of an empty file takes its first page.
    let empty = store.file_pages().await.expect("pages");
    d.run_until_idle().await.expect("sync");
    w.converged().expect("converged");
    at.fetch_add(200 * DAY.as_millis() as i64, Ordering::SeqCst);
    store
        .prune(RetentionPolicy::default(), at.load(Ordering::SeqCst))
        .await
        .expect("prune");
    let after = store.file_pages().await.expect("pages");
    let links = store.status(now()).await.expect("status").links;
    assert_eq!(links, DEALS as i64);
    let per_link = (after.bytes() - empty.bytes()) / links;
    eprintln!(
        "state file: {} bytes empty, {} bytes for {links} links after retention: {per_link} bytes per link",
        empty.bytes(),
        after.bytes()
    );
    assert!(per_link <= 300, "{per_link} bytes per link");
    d.shutdown().await;
}
