//! Delivery guarantees, one test each: inject the fault at the simulator, then count what reached
//! each side (creates vs updates per external id, request-log timestamps, dead letters).

use std::time::Duration;

use prmsync::cli::DlqAction;
use prmsync::config::PrmConfig;
use prmsync::engine::Hold;
use prmsync::model::SystemKind;
use prmsync::sim::Fault;
use prmsync::webhook::signature::body_hmac;
use secrecy::SecretString;
use serde_json::json;

use crate::harness::World;

const PS_HOOK_SECRET: &str = "ps-hook-secret";

fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The world's config without rules of engagement (only the built-in deal mapping). For tests whose
/// guarantee is about exact write, try or dead-letter counts of the deal flow: the rules' decision
/// write-backs to the partner deal make new PRM versions (legitimately new changes) and add CRM
/// writes, which would blur those counts. The rules' own writes are tested in sync and rules.
fn config_without_rules(w: &World) -> prmsync::config::Config {
    let dir = w.state_path().with_file_name("mappings-without-rules");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in prmsync::mapping::BUILTIN {
        let file = std::path::Path::new(name).file_name().unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }
    let mut config = w.config();
    config.daemon.mappings_dir = Some(dir);
    config
}

async fn daemon_without_rules(w: &World) -> prmsync::app::Daemon {
    prmsync::app::Daemon::start(config_without_rules(w), prmsync::engine::system_clock())
        .await
        .expect("daemon")
}

/// How many writes the rules of engagement made to the CRM record of registration `id` (their
/// decision write-backs), from the ledger: the deal flow's own writes are the rest.
fn rules_crm_writes(w: &World, id: &str) -> u32 {
    let conn = rusqlite::Connection::open(w.state_path()).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM ledger WHERE flow = ?1 AND source_id = ?2 AND direction = 'to_target' \
         AND action IN ('created', 'updated')",
        [prmsync::engine::registrations::FLOW, id],
        |r| r.get(0),
    )
    .unwrap()
}

async fn status(d: &prmsync::app::Daemon) -> prmsync::store::StatusReport {
    d.engine.store().status(now()).await.expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_event_delivered_many_times_at_once_is_applied_once() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    let PrmConfig::PartnerStack(ps) = &mut config.prm else {
        panic!("the test world's PRM is PartnerStack");
    };
    ps.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon");
    let mut deal = prmsync::sim::seed::deals(1, 1).remove(0);
    deal.insert("updated_at".into(), json!(now()));
    let body = serde_json::to_vec(&json!({"event": "deal.created", "data": deal})).unwrap();
    let url = format!("http://{}/webhooks/partnerstack", d.http_addr);
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..16 {
        sends.spawn(
            http.post(&url)
                .header(
                    prmsync::webhook::PRM_SIGNATURE_HEADER,
                    body_hmac(PS_HOOK_SECRET.as_bytes(), &body),
                )
                .header("content-type", "application/json")
                .body(body.clone())
                .send(),
        );
    }
    while let Some(r) = sends.join_next().await {
        assert_eq!(r.expect("send task").expect("delivered").status(), 200);
    }
    d.run_until_idle().await.expect("sync");
    let writes = w.hs.writes("deals");
    // One create; the only update is the rules' decision written back (at most one).
    let decisions = rules_crm_writes(&w, "deal_1");
    assert!(decisions <= 1, "{decisions} decision write-backs");
    assert_eq!(writes.get("deal_1"), Some(&(1, decisions)), "{writes:?}");
    let conn = rusqlite::Connection::open(w.state_path()).unwrap();
    let staged: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM inbox WHERE record_id = 'deal_1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(staged, 1, "one inbox row for 16 deliveries");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_retried_as_an_update_never_a_second_create() {
    let w = World::seeded(150).await;
    // Both batches (100 + 50) commit at HubSpot, then their responses are lost.
    w.hs.inject_lost_responses(2);
    let d = w.daemon().await;
    d.run_until_idle().await.expect("sync");
    w.converged().expect("converged");
    let writes = w.hs.writes("deals");
    assert_eq!(writes.len(), 150);
    assert!(
        writes
            .values()
            .all(|(creates, updates)| *creates == 1 && (1..=2).contains(updates)),
        // A retry can itself be one of the two lost batches when the first retry is sent
        // before the second batch (the writers' timing): its deals are updated twice.
        "every deal created once and updated by the retry: {writes:?}"
    );
    assert_eq!(w.hs.stats().created, 150);
    assert_eq!(status(&d).await.dead_letters, 0);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_system_gets_no_request_before_its_retry_after_ends() {
    let w = World::seeded(20).await;
    let limited = Fault {
        status: 429,
        retry_after: Some(2),
    };
    // The first HubSpot request (a read) and the first batch upsert are both told to wait 2s.
    w.hs.inject([limited.clone()]);
    w.hs.inject_upsert_faults([limited]);
    let d = w.daemon().await;
    d.run_until_idle().await.expect("sync");
    w.converged().expect("converged");
    let log = w.hs.request_log();
    let limits: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == 429)
        .map(|(i, r)| (i, r.at_ms))
        .collect();
    assert_eq!(limits.len(), 2, "{log:?}");
    for (i, t) in limits {
        // Any other request that arrived in the same millisecond or later counts.
        let next = log
            .iter()
            .enumerate()
            .filter(|(j, r)| *j != i && r.at_ms >= t)
            .map(|(_, r)| r.at_ms)
            .min()
            .expect("a request after the wait");
        assert!(
            next - t >= 2000,
            "a request came {} ms after a 429 with Retry-After: 2",
            next - t
        );
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_dead_letter_at_once_and_replay_puts_them_back() {
    let w = World::seeded(20).await;
    // An unmapped value: refused by the mapping, never sent.
    let mut bad = prmsync::sim::seed::deals(21, 1).pop().unwrap();
    bad.insert("stage".into(), json!("pending_legal"));
    w.ps.upsert_deal(bad.clone());
    // A validation error from HubSpot for the batch of 20, and again for each half it is split
    // into down to single deals (2 * 20 - 1 calls): each deal is refused once, not retried.
    w.hs.inject_upsert_faults((0..39).map(|_| Fault {
        status: 400,
        retry_after: None,
    }));
    let d = daemon_without_rules(&w).await;
    d.run_until_idle().await.expect("sync");
    let s = status(&d).await;
    assert_eq!(s.dead_letters, 21, "{:?}", s.last_errors);
    let refused =
        w.hs.request_log()
            .iter()
            .filter(|r| r.status == 400)
            .count();
    assert_eq!(refused, 39, "a permanent error is bisected, not retried");
    assert!(w.hs.objects("deals").is_empty());
    let letters = d.engine.store().dead_letters(100).await.unwrap();
    let unmapped = letters
        .iter()
        .find(|l| l.origin == "inbox")
        .expect("mapping failure");
    assert!(
        unmapped.reason.contains("pending_legal"),
        "{}",
        unmapped.reason
    );
    assert!(
        letters
            .iter()
            .filter(|l| l.origin == "outbox")
            .all(|l| l.reason.contains("HTTP 400"))
    );

    // The operator fixes the partner's deal and replays everything.
    bad.insert("stage".into(), json!("submitted"));
    let key = w.ps.upsert_deal(bad);
    let state = w.state_path();
    let out = prmsync::ops::dlq::run(
        &state,
        DlqAction::Replay {
            ids: vec![],
            all: true,
        },
        false,
        now(),
    )
    .await
    .expect("replay");
    assert!(
        out.contains("requeued 20 write(s), restaged 1 change(s)"),
        "{out}"
    );
    d.run_until_idle().await.expect("sync after replay");
    w.converged().expect("converged after replay");
    assert_eq!(w.hs.writes("deals").get(&key).map(|c| c.0), Some(1));
    assert_eq!(status(&d).await.dead_letters, 0);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_retry_until_the_cap_then_dead_letter() {
    let w = World::seeded(5).await;
    let mut config = config_without_rules(&w);
    config.daemon.max_attempts = 3;
    w.hs.inject_upsert_faults(vec![
        Fault {
            status: 503,
            retry_after: None,
        };
        3
    ]);
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("sync");
    let tries =
        w.hs.request_log()
            .iter()
            .filter(|r| r.status == 503)
            .count();
    assert_eq!(tries, 3, "exactly max_attempts tries");
    assert_eq!(w.hs.stats().created, 0, "no fourth try");
    let letters = d.engine.store().dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 5);
    assert!(
        letters
            .iter()
            .all(|l| l.attempts == 3 && l.reason.contains("503")),
        "{letters:?}"
    );
    let (dropped, missing) = d
        .engine
        .store()
        .drop_dead_letters(prmsync::store::dlq::Selection::Ids(vec![
            letters[0].id,
            999,
        ]))
        .await
        .unwrap();
    assert_eq!((dropped, missing), (1, vec![999]));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_credential_pauses_only_that_connection_until_it_works_again() {
    let w = World::seeded(10).await;
    let d = daemon_without_rules(&w).await;
    d.engine.tick().await.expect("first pass");
    w.converged().expect("first sync");
    // HubSpot revokes the token (the app must be re-authorised).
    w.hs.set_token("re-authorised-token");
    for deal in w.ps.deals().into_iter().take(3) {
        let mut deal = deal;
        deal.insert("amount".into(), json!(420_000));
        w.ps.upsert_deal(deal);
    }
    d.engine.tick().await.expect("pass with a dead token");
    assert!(matches!(
        d.engine.hold(SystemKind::HubSpot),
        Some(Hold::NeedsReauth { .. })
    ));
    assert_eq!(
        d.engine.hold(SystemKind::PartnerStack),
        None,
        "the PRM side keeps running"
    );
    let s = status(&d).await;
    assert_eq!(s.holds.len(), 1);
    assert_eq!(
        (s.holds[0].system.as_str(), s.holds[0].state.as_str()),
        ("hubspot", "needs_reauth")
    );
    assert_eq!(s.outbox_depth, 3, "the changes keep queueing");
    assert!(prmsync::status::render(&s).contains("NEEDS RE-AUTHORISATION"));
    // While paused, a pass sends HubSpot nothing (a probe goes out at most every 30 s);
    // PartnerStack is still polled.
    let (hs_before, ps_before) = (w.hs.stats().requests, w.ps.stats().list_requests);
    d.engine.tick().await.expect("pass while paused");
    assert_eq!(w.hs.stats().requests, hs_before, "no request while paused");
    assert!(w.ps.stats().list_requests > ps_before);
    // The app is re-authorised and the new credential loaded: the connection resumes and the
    // queue is delivered on the next pass.
    w.hs.set_token(crate::harness::HS_TOKEN);
    d.engine
        .credential_loaded(SystemKind::HubSpot)
        .await
        .expect("resume");
    d.engine.tick().await.expect("pass after re-auth");
    assert_eq!(d.engine.hold(SystemKind::HubSpot), None);
    w.converged().expect("converged after re-auth");
    let s = status(&d).await;
    assert!(
        s.holds.is_empty() && s.outbox_depth == 0 && s.dead_letters == 0,
        "{s:?}"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_convergence_oracle_reports_the_record_and_field_that_differ() {
    let w = World::seeded(1).await;
    let d = w.daemon().await;
    d.run_until_idle().await.expect("sync");
    w.converged().expect("converged");
    let id = w.hs.objects("deals")[0]["hs_object_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.hs.set_property("deals", &id, "amount", "1");
    let err = w.converged().unwrap_err();
    assert!(err.contains("deal_1.amount"), "{err}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_arriving_after_a_newer_one_never_overwrites_it() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    let PrmConfig::PartnerStack(ps) = &mut config.prm else {
        panic!("the test world's PRM is PartnerStack");
    };
    ps.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon");
    let mut deal = prmsync::sim::seed::deals(1, 1).remove(0);
    deal.insert("amount".into(), json!(100_000));
    let key = w.ps.upsert_deal(deal.clone());
    let old = w.ps.deal(&key).unwrap();
    deal.insert("amount".into(), json!(200_000));
    w.ps.upsert_deal(deal);
    d.run_until_idle().await.expect("sync the newest version");
    w.converged().expect("converged");
    let before = w.hs.writes("deals");
    let decisions_before = rules_crm_writes(&w, &key);
    // The webhook for the first version was delayed in the sender's retry queue; it lands now.
    let body = serde_json::to_vec(&json!({"event": "deal.updated", "data": old})).unwrap();
    let resp = prmsync::connector::http_client(Duration::from_secs(5))
        .post(format!("http://{}/webhooks/partnerstack", d.http_addr))
        .header(
            prmsync::webhook::PRM_SIGNATURE_HEADER,
            body_hmac(PS_HOOK_SECRET.as_bytes(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("delivered");
    assert_eq!(resp.status(), 200);
    d.run_until_idle().await.expect("process the late webhook");
    // The deal flow writes nothing for the old version; a late rules decision write-back (the
    // group re-decided when the CRM deal came back) is counted separately.
    let decisions = rules_crm_writes(&w, &key) - decisions_before;
    assert!(decisions <= 1, "{decisions} decision write-backs");
    let (creates, updates) = before[&key];
    assert_eq!(
        w.hs.writes("deals"),
        [(key.clone(), (creates, updates + decisions))].into(),
        "nothing written for the old version"
    );
    let hs = w.hs.find("deals", "prm_deal_id", &key).unwrap();
    assert_eq!(hs["amount"], json!("2000"));
    let conn = rusqlite::Connection::open(w.state_path()).unwrap();
    let stale: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE source_id = ?1 AND action = 'skip_stale'",
            [&key],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stale, 1, "the late version is recorded as stale");
    d.shutdown().await;
}

async fn post_ps_webhook(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    deal: &serde_json::Map<String, serde_json::Value>,
) -> reqwest::Response {
    let body = serde_json::to_vec(&json!({"event": "deal.updated", "data": deal})).unwrap();
    http.post(format!("http://{addr}/webhooks/partnerstack"))
        .header(
            prmsync::webhook::PRM_SIGNATURE_HEADER,
            body_hmac(PS_HOOK_SECRET.as_bytes(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_burst_beyond_capacity_gets_503_with_retry_after_not_a_queue() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use prmsync::webhook::{WebhookState, router};
    use tokio::sync::{Notify, Semaphore};

    let dir = tempfile::tempdir().unwrap();
    let store = prmsync::store::Store::open(&dir.path().join("state.db")).unwrap();
    let intake = Arc::new(Semaphore::new(2));
    let state = WebhookState {
        store: store.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        wake: Arc::new(Notify::new()),
        hubspot_secret: None,
        partnerstack_secret: Some(SecretString::from(PS_HOOK_SECRET)),
        rest: None,
        clock: prmsync::engine::system_clock(),
        failpoints: prmsync::failpoint::FailPoints::none(),
        intake: intake.clone(),
    };
    let server = prmsync::sim::SimServer::start(router(state, 1 << 20))
        .await
        .unwrap();
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    let mut deal = prmsync::sim::seed::deals(1, 1).remove(0);
    deal.insert("updated_at".into(), json!(now()));
    // Every slot is busy storing other requests.
    let busy = intake.clone().acquire_many_owned(2).await.unwrap();
    let r = post_ps_webhook(&http, server.addr, &deal).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(store.status(now()).await.unwrap().inbox_pending, 0);
    drop(busy);
    let r = post_ps_webhook(&http, server.addr, &deal).await;
    assert_eq!(r.status(), 200);
    assert_eq!(store.status(now()).await.unwrap().inbox_pending, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acks_and_cursors_then_resumes_by_itself() {
    let w = World::seeded(300).await;
    let mut config = w.config();
    let PrmConfig::PartnerStack(ps) = &mut config.prm else {
        panic!("the test world's PRM is PartnerStack");
    };
    ps.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon");
    let store = d.engine.store().clone();
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    let readyz = || async {
        http.get(format!("http://{}/readyz", d.admin_addr))
            .send()
            .await
            .expect("readyz")
            .status()
    };
    assert_eq!(readyz().await, 200);
    // The volume fills up: the state file cannot grow.
    store.set_size_limit(Some(0)).await.unwrap();
    let err = d.engine.tick().await.expect_err("a pass cannot commit");
    assert!(err.is_retryable(), "{err}");
    let s = store.status(now()).await.unwrap();
    assert!(s.cursors.is_empty(), "no cursor moved: {:?}", s.cursors);
    assert_eq!(s.inbox_pending, 0);
    // An event too big for the free space left in the file's pages.
    let mut deal = w.ps.deal("deal_1").unwrap();
    deal.insert("notes".into(), json!("x".repeat(64 * 1024)));
    let r = post_ps_webhook(&http, d.http_addr, &deal).await;
    assert_eq!(r.status(), 503, "no ack for an event that is not stored");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(readyz().await, 503);
    assert!(w.hs.objects("deals").is_empty());
    // Space returns: the sender's retry is stored, readiness comes back, the sync completes.
    store.set_size_limit(None).await.unwrap();
    let r = post_ps_webhook(&http, d.http_addr, &deal).await;
    assert_eq!(r.status(), 200);
    assert_eq!(readyz().await, 200);
    d.run_until_idle().await.expect("sync");
    w.converged()
        .expect("converged after the disk had room again");
    let conn = rusqlite::Connection::open(w.state_path()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_values_flip_back_and_forth_is_quarantined_not_looped() {
    let w = World::seeded(1).await;
    // This test ticks faster than HubSpot's 4 searches per second allow; the search limit (a 429,
    // then the read held for the window) is not what it is about.
    w.hs.set_search_rate(None);
    let d = daemon_without_rules(&w).await;
    d.run_until_idle().await.expect("first sync");
    let id = w.hs.objects("deals")[0]["hs_object_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Something on the CRM side (a workflow fighting a user) keeps flipping the stage.
    let flip = |i: usize| {
        let stage = if i.is_multiple_of(2) {
            "closedwon"
        } else {
            "closedlost"
        };
        w.hs.set_property("deals", &id, "dealstage", stage);
    };
    for i in 0..4 {
        flip(i);
        d.engine.tick().await.expect("pass");
    }
    assert_eq!(
        w.ps.stats().patches,
        4,
        "the first flips are ordinary changes"
    );
    flip(4);
    d.engine.tick().await.expect("pass");
    assert_eq!(w.ps.stats().patches, 4, "the fifth is held back");
    let letters = d.engine.store().dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].origin, "quarantine");
    assert!(
        letters[0].reason.contains("flipped back and forth"),
        "{}",
        letters[0].reason
    );
    let s = status(&d).await;
    assert!(
        s.last_errors.iter().any(|e| e.contains("quarantined")),
        "{:?}",
        s.last_errors
    );
    // While quarantined, nothing more is written for the record.
    flip(5);
    d.engine.tick().await.expect("pass");
    flip(6);
    d.engine.tick().await.expect("pass");
    assert_eq!(w.ps.stats().patches, 4);
    // The operator looks, settles it (closedwon stays) and releases the record.
    let out = prmsync::ops::dlq::run(
        &w.state_path(),
        DlqAction::Replay {
            ids: vec![letters[0].id],
            all: false,
        },
        false,
        now(),
    )
    .await
    .expect("replay");
    assert!(out.contains("requeued 1 write(s)"), "{out}");
    d.run_until_idle().await.expect("sync after release");
    assert_eq!(w.ps.stats().patches, 5);
    w.converged().expect("converged after release");
    assert_eq!(status(&d).await.dead_letters, 0);
    d.shutdown().await;
}

fn prmsync_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(args)
        .output()
        .expect("run prmsync");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_cli_lists_shows_replays_and_drops() {
    let w = World::seeded(2).await;
    // The batch of two and each half it is split into are refused.
    w.hs.inject_upsert_faults((0..3).map(|_| Fault {
        status: 400,
        retry_after: None,
    }));
    let d = daemon_without_rules(&w).await;
    d.run_until_idle().await.expect("sync");
    d.shutdown().await;
    let state = w.state_path();
    let state = state.to_str().unwrap();

    let (code, out, _) = prmsync_cli(&["dlq", "list", "--state", state]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("HTTP 400")).count(),
        2,
        "{out}"
    );
    let (code, out, _) = prmsync_cli(&["dlq", "show", "1", "--state", state, "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["origin"], "outbox");
    assert_eq!(shown["replayable"], true);
    assert!(shown["payload"]["dealname"].is_string(), "{shown}");
    let (code, _, err) = prmsync_cli(&["dlq", "show", "99", "--state", state]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter with id 99"), "{err}");
    let (code, out, _) = prmsync_cli(&["dlq", "drop", "2", "--state", state]);
    assert_eq!((code, out.trim()), (0, "dropped 1 dead letter(s)"));
    let (code, out, _) = prmsync_cli(&["dlq", "replay", "--all", "--state", state]);
    assert_eq!(code, 0);
    assert!(out.contains("requeued 1 write(s)"), "{out}");
    let (code, _, err) = prmsync_cli(&["dlq", "replay", "--state", state]);
    assert_eq!(code, 2, "ids or --all are required: {err}");
    // The replayed write goes out on the next pass; the dropped one is gone for good.
    let d = daemon_without_rules(&w).await;
    d.run_until_idle().await.expect("sync");
    assert_eq!(w.hs.objects("deals").len(), 1);
    let s = status(&d).await;
    assert_eq!(s.dead_letters, 0, "{:?}", s.last_errors);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_budget_paces_requests_under_its_burst_limit() {
    use std::sync::Arc;

    use prmsync::connector::{Connector, hubspot::HubSpot, partnerstack::PartnerStack};
    use prmsync::connector::{Limits, Rate};
    use prmsync::engine::{Engine, EngineSettings, RetryPolicy};

    let w = World::seeded(300).await;
    let http = prmsync::connector::http_client(Duration::from_secs(10));
    let store = prmsync::store::Store::open(&w.state_path()).unwrap();
    let set = prmsync::mapping::MappingSet::builtin().unwrap();
    let engine = Engine::new(
        store,
        Connector::PartnerStack(PartnerStack::new(
            http.clone(),
            w.ps_server.url("/api/v2"),
            SecretString::from(crate::harness::PS_KEY),
        )),
        Connector::HubSpot(HubSpot::new(
            http,
            w.hs_server.url(""),
            SecretString::from(crate::harness::HS_TOKEN),
        )),
        set.mappings.iter().map(Arc::clone).collect(),
        EngineSettings {
            batch_size: 100,
            retry: RetryPolicy::default(),
            overlap: Duration::from_secs(2),
            ..EngineSettings::default()
        },
        prmsync::engine::system_clock(),
    )
    // A tier allowing 3 requests in any 600 ms (searches have their own lane).
    .with_limits(
        SystemKind::HubSpot,
        Limits {
            burst: Rate {
                n: 3,
                per: Duration::from_millis(600),
            },
            daily: Rate {
                n: 1000,
                per: Duration::from_secs(86_400),
            },
            search: None,
        },
    );
    engine.run_until_idle(50).await.expect("sync");
    w.converged().expect("converged under a tight budget");
    let log = w.hs.request_log();
    let mut at: Vec<i64> = log
        .iter()
        .filter(|r| !r.path.ends_with("/search"))
        .map(|r| r.at_ms)
        .collect();
    assert!(at.len() >= 3, "3 batches at least: {}", at.len());
    at.sort_unstable();
    // Never more than 3 inside any window of 600 ms (less 50 ms for arrival jitter).
    for (i, t) in at.iter().enumerate() {
        let in_window = at[i..].iter().take_while(|u| **u - *t < 550).count();
        assert!(in_window <= 3, "{in_window} requests within 550 ms: {at:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_gets_503_not_an_ack_and_recovers_when_released() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    let PrmConfig::PartnerStack(ps) = &mut config.prm else {
        panic!("the test world's PRM is PartnerStack");
    };
    ps.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon");
    let http = prmsync::connector::http_client(Duration::from_secs(30));
    let mut deal = prmsync::sim::seed::deals(1, 1).remove(0);
    deal.insert("updated_at".into(), json!(now()));
    // Another process (a careless backup, a sqlite3 shell) holds the write lock.
    let other = rusqlite::Connection::open(w.state_path()).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = post_ps_webhook(&http, d.http_addr, &deal).await;
    assert_eq!(r.status(), 503, "no ack while the event cannot be stored");
    assert!(r.headers().contains_key("retry-after"));
    other.execute_batch("ROLLBACK").unwrap();
    let r = post_ps_webhook(&http, d.http_addr, &deal).await;
    assert_eq!(r.status(), 200);
    d.run_until_idle().await.expect("sync");
    // One create; the only update is the rules' decision written back (at most one).
    let decisions = rules_crm_writes(&w, "deal_1");
    assert!(decisions <= 1, "{decisions} decision write-backs");
    assert_eq!(w.hs.writes("deals").get("deal_1"), Some(&(1, decisions)));
    d.shutdown().await;
}

#[tokio::test]
async fn live_changes_and_new_registrations_drain_before_backfill_updates() {
    use prmsync::model::Direction;
    use prmsync::store::{PlanCommit, PlannedWrite, Store};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let write = |id: &str, target: Option<&str>| PlannedWrite {
        flow: "deal-registration".into(),
        direction: Direction::ToTarget,
        source_id: id.into(),
        target_id: target.map(str::to_owned),
        system: SystemKind::HubSpot,
        object: "deals".into(),
        id_property: Some("prm_deal_id".into()),
        payload: serde_json::Map::new(),
        state_after: prmsync::store::StateDigest::default(),
        content_hash: format!("hash-{id}"),
        mapping_version: "v".into(),
        op: prmsync::store::WriteOp::Upsert,
    };
    let backfill: Vec<_> = (0..5)
        .map(|i| write(&format!("old_{i}"), Some("1")))
        .collect();
    let keys = backfill
        .iter()
        .map(|w| (w.flow.clone(), w.direction, w.source_id.clone()))
        .collect();
    // The backfill was planned first; a live registration arrives after it.
    store
        .commit_plan(
            PlanCommit {
                writes: backfill,
                backfill: keys,
                ..PlanCommit::default()
            },
            now(),
        )
        .await
        .unwrap();
    store
        .commit_plan(
            PlanCommit {
                writes: vec![write("new_registration", None)],
                ..PlanCommit::default()
            },
            now() + 1,
        )
        .await
        .unwrap();
    let due = store
        .due_outbox(SystemKind::HubSpot, now() + 10, 2)
        .await
        .unwrap();
    let order: Vec<&str> = due.iter().map(|i| i.write.source_id.as_str()).collect();
    assert_eq!(order, ["new_registration", "old_0"]);
}
