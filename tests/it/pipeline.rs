//! The pipelined engine: checkpointed reads (the cursor moves with every page; no page cap can
//! stall an object; a refused page token reads again from a safe position) and webhooks that
//! reach the CRM through the planner and writers without any poll.

use std::sync::Arc;
use std::time::Duration;

use prmsync::connector::{Connector, hubspot::HubSpot, partnerstack::PartnerStack};
use prmsync::engine::{Engine, EngineSettings};
use prmsync::model::{Cursor, ObjectRef, Resume, SystemKind};
use prmsync::webhook::PRM_SIGNATURE_HEADER;
use prmsync::webhook::signature::body_hmac;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::{World, wait_ok, wait_until};

fn ps_deals() -> ObjectRef {
    ObjectRef {
        system: SystemKind::PartnerStack,
        object: "deals".into(),
    }
}

/// An engine on the world's simulators with the built-in deal flow and `settings`.
fn engine(w: &World, settings: EngineSettings) -> Engine {
    let http = prmsync::connector::http_client(Duration::from_secs(10));
    let store = prmsync::store::Store::open(&w.state_path()).expect("state file");
    let set = prmsync::mapping::MappingSet::builtin().expect("built-in mappings");
    Engine::new(
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
        settings,
        prmsync::engine::system_clock(),
    )
}

#[tokio::test]
async fn an_object_with_more_pages_than_the_cap_finishes_and_its_cursor_moves_page_by_page() {
    // 600 deals are three PartnerStack pages of 250; each poll cycle may read only one.
    let w = World::seeded(600).await;
    let e = engine(
        &w,
        EngineSettings {
            max_pages_per_cycle: 1,
            ..EngineSettings::default()
        },
    );
    let mut tokens = Vec::new();
    for page in 1..=3 {
        let before = w.ps.stats().list_requests;
        let r = e.poll(&ps_deals()).await.expect("poll");
        assert_eq!((r.pages, r.finished), (1, page == 3), "page {page}");
        assert_eq!(
            w.ps.stats().list_requests,
            before + 1,
            "page {page}: one read"
        );
        let cursor = e
            .store()
            .cursor(ps_deals())
            .await
            .expect("cursor")
            .expect("a cursor after the first page");
        if page < 3 {
            let resume = cursor
                .resume
                .expect("an unfinished read keeps its next page");
            assert_eq!(resume.since_ms, 0, "a first read starts at the beginning");
            assert!(
                !tokens.contains(&resume.page),
                "page {page} moved the cursor"
            );
            tokens.push(resume.page);
        } else {
            assert_eq!(cursor.resume, None, "the read finished");
        }
    }
    assert_eq!(e.store().status(0).await.unwrap().inbox_pending, 600);
    // The daemon's cycles do the same, one after another, until the object is read to its end.
    e.run_until_idle(50).await.expect("sync");
    w.converged().expect("every deal synced");
    assert_eq!(w.hs.objects("deals").len(), 600);
}

#[tokio::test]
async fn a_refused_page_token_reads_the_object_again_and_loses_nothing() {
    let w = World::seeded(300).await;
    let e = engine(&w, EngineSettings::default());
    // A stored read whose next page names an item PartnerStack no longer has (it answers 400).
    let stale = Cursor {
        modified_ms: 0,
        id: String::new(),
        resume: Some(Resume {
            since_ms: 0,
            page: "deal_gone".into(),
        }),
    };
    e.store()
        .stage_changes(Vec::new(), Some((ps_deals(), stale)), 0)
        .await
        .expect("store the cursor");
    e.run_until_idle(50).await.expect("sync");
    w.converged()
        .expect("every deal synced after reading again");
    let cursor = e.store().cursor(ps_deals()).await.unwrap().unwrap();
    assert_eq!(cursor.resume, None);
    assert!(cursor.modified_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_reaches_the_crm_through_the_pipeline_without_any_poll() {
    let w = World::seeded(3).await;
    let mut config = w.config();
    // Pollers read once at start, then not for an hour: only the webhook can bring the deal.
    config.daemon.poll_interval = Duration::from_secs(3600);
    #[allow(irrefutable_let_patterns)] // one variant today; more systems come
    if let prmsync::config::PrmConfig::PartnerStack(p) = &mut config.prm {
        p.webhook_secret = Some("ps-hook-secret".to_owned().into());
    }
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    let stop = CancellationToken::new();
    let run = d.run(stop.clone(), Arc::new(tokio::sync::Notify::new()));
    let test = async {
        wait_ok(Duration::from_secs(30), "the first sync", || async {
            w.converged()
        })
        .await;
        let progress = d.engine.progress();
        let pollers = || {
            progress
                .snapshot()
                .into_iter()
                .filter(|(name, _)| name.starts_with("poller"))
                .map(|(name, s)| (name, s.cycles))
                .collect::<Vec<_>>()
        };
        let before = (w.ps.stats().list_requests, pollers());
        assert_eq!(
            before.1.len(),
            2,
            "one poller per polled object: {before:?}"
        );

        let mut deal = prmsync::sim::seed::deals(4, 1).remove(3);
        deal.insert(
            "updated_at".into(),
            json!(jiff::Timestamp::now().as_millisecond()),
        );
        let body = serde_json::to_vec(&json!({"event": "deal.created", "data": deal})).unwrap();
        let resp = prmsync::connector::http_client(Duration::from_secs(10))
            .post(format!("http://{}/webhooks/partnerstack", d.http_addr))
            .header(PRM_SIGNATURE_HEADER, body_hmac(b"ps-hook-secret", &body))
            .body(body)
            .send()
            .await
            .expect("webhook sent");
        assert_eq!(resp.status(), 200);
        wait_until(
            Duration::from_secs(30),
            "the webhook's deal in HubSpot",
            || async { w.hs.find("deals", "prm_deal_id", "deal_4").is_some() },
        )
        .await;
        assert_eq!(
            (w.ps.stats().list_requests, pollers()),
            before,
            "no poll after the webhook"
        );
        let alive = progress.snapshot();
        assert!(alive.values().all(|s| s.alive), "{alive:?}");
        assert!(
            [
                "planner",
                "decider",
                "writer hubspot",
                "writer partnerstack"
            ]
            .iter()
            .all(|n| alive.contains_key(*n)),
            "{alive:?}"
        );
        stop.cancel();
    };
    tokio::join!(run, test);
    let after = d.engine.progress().snapshot();
    assert!(
        after.values().all(|s| !s.alive),
        "all tasks stopped: {after:?}"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn the_reverse_poll_asks_hubspot_only_for_the_deals_prmsync_manages() {
    let w = World::seeded(3).await;
    let direct = w.hs.create(
        "deals",
        [("dealname".to_owned(), "Sales' own deal".to_owned())].into(),
    );
    let d = w.daemon().await;
    d.run_until_idle().await.expect("sync");
    let conn = rusqlite::Connection::open(w.state_path()).expect("state file");
    let staged = |id: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM inbox WHERE system = 'hubspot' AND record_id = ?1",
            [id],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(staged(&direct), 0, "a deal without prm_deal_id is not read");
    let managed =
        w.hs.find("deals", "prm_deal_id", "deal_1")
            .expect("synced deal");
    let id = managed["hs_object_id"].as_str().expect("an id").to_owned();
    assert!(staged(&id) > 0, "the deals prmsync wrote are read back");
    d.shutdown().await;
}

#[tokio::test]
async fn the_reverse_poll_asks_salesforce_only_for_the_opportunities_prmsync_manages() {
    use crate::lifecycle::{SF_OPPORTUNITIES, daemon, mappings_with, salesforce};
    let w = World::seeded(3).await;
    let (sf, sf_server) = salesforce().await;
    let direct = sf.insert(
        "Opportunity",
        serde_json::json!({"Name": "Sales' own opportunity", "StageName": "Prospecting"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let mappings = mappings_with(w.dir.path(), SF_OPPORTUNITIES, "");
    let d = daemon(&w, mappings, Some(&sf_server)).await;
    d.run_until_idle().await.expect("sync");
    let polls: Vec<String> = sf
        .soql_log()
        .into_iter()
        .filter(|q| q.contains("SystemModstamp >="))
        .collect();
    assert!(!polls.is_empty(), "Opportunities are polled back");
    assert!(
        polls
            .iter()
            .all(|q| q.contains("AND PRM_Deal_Id__c != null")),
        "{polls:?}"
    );
    let conn = rusqlite::Connection::open(w.state_path()).expect("state file");
    let staged = |id: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM inbox WHERE system = 'salesforce' AND record_id = ?1",
            [id],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(
        staged(&direct),
        0,
        "an opportunity without PRM_Deal_Id__c is not read"
    );
    let managed = sf.find("Opportunity", "PRM_Deal_Id__c", "deal_1").remove(0);
    let id = managed["Id"].as_str().expect("an id").to_owned();
    assert!(
        staged(&id) > 0,
        "the opportunities prmsync wrote are read back"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn plan_reads_an_object_page_by_page_to_its_end() {
    let w = World::seeded(600).await;
    let before = w.ps.stats().list_requests;
    let plans = prmsync::app::plan(&w.config(), Some("deal-registration"))
        .await
        .expect("plan");
    let p = &plans[0];
    assert_eq!(
        (p.read, p.would_create),
        (600, 600),
        "every deal of three pages is planned: {p:?}"
    );
    assert_eq!(
        w.ps.stats().list_requests - before,
        3,
        "250 deals a page, each read once"
    );
    let samples = p
        .samples
        .iter()
        .filter(|s| s.outcome == "would_create")
        .count();
    assert_eq!(samples, 3, "samples stay a few per outcome across pages");
}
