//! End-to-end sync on the simulators: PRM -> CRM, CRM -> PRM, restart, idempotence, faults.

use std::time::Duration;

use prmsync::sim::Fault;
use serde_json::{Value, json};

use crate::harness::World;

fn str_field<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn deal_registrations_become_crm_deals_exactly_once() {
    let w = World::seeded(30).await;
    let d = w.daemon().await;
    let r = d.run_until_idle().await.unwrap();
    assert_eq!(r.created, 30);
    let deals = w.hs.objects("deals");
    assert_eq!(deals.len(), 30);
    let writes = w.hs.writes("deals");
    assert_eq!(writes.len(), 30);
    // One create each; at most one update: the rules-of-engagement decision on the new deal.
    assert!(
        writes.values().all(|c| c.0 == 1 && c.1 <= 1),
        "one create each: {writes:?}"
    );
    assert!(
        deals
            .iter()
            .all(|d| d.get("prm_registration_status").is_some()),
        "every deal carries its registration decision"
    );
    // Fields arrive mapped: cents -> currency units, stage through the value map.
    let one =
        w.hs.find("deals", "prm_deal_id", "deal_1")
            .expect("deal_1 synced");
    let src = w.ps.deal("deal_1").unwrap();
    let cents = src["amount"].as_i64().unwrap();
    assert_eq!(
        str_field(&one, "amount"),
        rust_decimal::Decimal::new(cents, 2).normalize().to_string()
    );
    assert_eq!(str_field(&one, "dealstage"), "appointmentscheduled");
    assert_eq!(
        str_field(&one, "prm_partner_key"),
        str_field(&src, "partner_key")
    );
    d.shutdown().await;
}

#[tokio::test]
async fn a_second_pass_over_unchanged_data_writes_nothing() {
    let w = World::seeded(20).await;
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    let (hs, ps) = (w.hs.stats(), w.ps.stats());
    d.run_until_idle().await.unwrap();
    d.run_until_idle().await.unwrap();
    assert_eq!(
        w.hs.stats().batch_upserts,
        hs.batch_upserts,
        "no CRM writes"
    );
    assert_eq!(w.ps.stats().patches, ps.patches, "no PRM writes");
    assert!(w.hs.stats().searches > hs.searches, "but it did poll");
    d.shutdown().await;
}

#[tokio::test]
async fn crm_stage_changes_flow_back_to_the_partner_deal() {
    let w = World::seeded(5).await;
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    let patches = w.ps.stats().patches;
    let deal = w.hs.find("deals", "prm_deal_id", "deal_2").unwrap();
    let id = str_field(&deal, "hs_object_id").to_owned();
    w.hs.set_property("deals", &id, "closed_lost_reason", "No budget");
    w.hs.set_property("deals", &id, "dealstage", "closedlost");
    d.run_until_idle().await.unwrap();
    let back = w.ps.deal("deal_2").unwrap();
    assert_eq!(back["stage"], json!("lost"));
    assert_eq!(back["lost_reason"], json!("No budget"));
    assert_eq!(
        w.ps.stats().patches - patches,
        1,
        "only the changed deal is written back"
    );
    // The PRM update we caused comes back on the next poll and is not echoed to the CRM.
    let before = w.hs.stats().batch_upserts;
    d.run_until_idle().await.unwrap();
    assert_eq!(w.hs.stats().batch_upserts, before);
    d.shutdown().await;
}

#[tokio::test]
async fn restart_resumes_from_the_cursor_without_duplicates() {
    let w = World::seeded(20).await;
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    d.shutdown().await;
    let before = w.hs.writes("deals");

    // While prmsync is down: five new registrations and one change.
    for mut deal in prmsync::sim::seed::deals(25, 5).into_iter().skip(20) {
        deal.insert("partner_key".into(), json!("part_9"));
        w.ps.upsert_deal(deal);
    }
    let mut changed = w.ps.deal("deal_3").unwrap();
    changed.insert("amount".into(), json!(4_200_000));
    w.ps.upsert_deal(changed);

    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    let writes = w.hs.writes("deals");
    assert_eq!(writes.len(), 25);
    for (key, (creates, updates)) in &writes {
        assert_eq!(*creates, 1, "{key} created once");
        if key != "deal_3"
            && let Some((_, old)) = before.get(key)
        {
            assert_eq!(
                updates, old,
                "{key}: unchanged at the source, not written again"
            );
        }
    }
    assert!(
        writes["deal_3"].1 > before["deal_3"].1,
        "deal_3 changed and was updated"
    );
    let deal3 = w.hs.find("deals", "prm_deal_id", "deal_3").unwrap();
    assert_eq!(str_field(&deal3, "amount"), "42000");
    d.shutdown().await;
}

#[tokio::test]
async fn crm_errors_and_rate_limits_lose_nothing() {
    let w = World::seeded(12).await;
    w.hs.inject([
        Fault {
            status: 500,
            retry_after: None,
        },
        Fault {
            status: 429,
            retry_after: Some(0),
        },
        Fault {
            status: 503,
            retry_after: Some(0),
        },
    ]);
    let d = w.daemon().await;
    let r = tokio::time::timeout(Duration::from_secs(60), d.run_until_idle())
        .await
        .expect("converges")
        .unwrap();
    assert!(
        r.retried >= 1 || r.poll_errors >= 1,
        "faults were seen: {r:?}"
    );
    assert_eq!(w.hs.objects("deals").len(), 12);
    assert!(
        w.hs.writes("deals").values().all(|c| c.0 == 1),
        "no duplicates"
    );
    let status = d.engine.store().status(0).await.unwrap();
    assert_eq!(status.dead_letters, 0);
    assert_eq!(status.outbox_depth, 0);
    d.shutdown().await;
}

#[tokio::test]
async fn an_unmappable_record_is_dead_lettered_and_the_rest_continue() {
    let w = World::seeded(6).await;
    let mut bad = w.ps.deal("deal_4").unwrap();
    bad.insert("stage".into(), json!("pending_legal"));
    w.ps.upsert_deal(bad);
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    assert_eq!(w.hs.objects("deals").len(), 5);
    assert!(w.hs.find("deals", "prm_deal_id", "deal_4").is_none());
    let status = d.engine.store().status(0).await.unwrap();
    // One dead letter per failing version of deal_4 (its registration decision is written back
    // to the partner deal, which makes a new version that fails the same way).
    assert!(status.dead_letters >= 1);
    assert!(
        status
            .last_errors
            .iter()
            .any(|e| e.contains("deal_4") && e.contains("pending_legal")),
        "{:?}",
        status.last_errors
    );
    // Fixed at the source, it syncs on the next pass.
    let mut fixed = w.ps.deal("deal_4").unwrap();
    fixed.insert("stage".into(), json!("approved"));
    w.ps.upsert_deal(fixed);
    d.run_until_idle().await.unwrap();
    let deal4 =
        w.hs.find("deals", "prm_deal_id", "deal_4")
            .expect("synced after the fix");
    assert_eq!(str_field(&deal4, "dealstage"), "qualifiedtobuy");
    d.shutdown().await;
}

#[tokio::test]
async fn a_bad_crm_token_keeps_writes_queued() {
    let w = World::seeded(3).await;
    let mut config = w.config();
    #[allow(irrefutable_let_patterns)] // one variant today; more systems come
    if let prmsync::config::CrmConfig::HubSpot(h) = &mut config.crm {
        h.access_token = "wrong".to_owned().into();
    }
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .unwrap();
    d.engine.tick().await.unwrap();
    assert_eq!(w.hs.stats().created, 0);
    assert!(w.hs.stats().unauthorized > 0);
    let status = d.engine.store().status(0).await.unwrap();
    assert_eq!(
        status.outbox_depth, 3,
        "the CRM writes are queued, not lost"
    );
    assert_eq!(status.dead_letters, 0);
    d.shutdown().await;
}
