//! One bad record stops only itself: a match search the CRM refuses for one record dead-letters
//! that record while the rest of its batch is planned, and a batch the CRM refuses as a whole for
//! one bad record is split until the bad one is alone, so the good ones are written.

use std::path::Path;

use prmsync::app::Daemon;
use prmsync::engine::system_clock;
use serde_json::{Map, Value, json};

use crate::harness::World;

fn partner(key: &str, website: &str) -> Map<String, Value> {
    json!({
        "key": key, "status": "active",
        "company": {"name": format!("{key} Inc"), "website": website}, "group": {"name": "Gold"},
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// A 400 for one partner's domain search: before, the whole inbox batch stayed pending on every
/// pass; now that partner is dead-lettered with the refusal and the others are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_match_search_dead_letters_that_record_and_the_batch_goes_on() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    config.daemon.mappings_dir =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-match"));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    for (key, site) in [
        ("part_1", "acme.example"),
        ("part_2", "bad.example"),
        ("part_3", "beta.example"),
        ("part_4", "gamma.example"),
    ] {
        w.ps.upsert_item("partnerships", partner(key, site));
    }
    w.hs.refuse_searches_for("bad.example");
    d.run_until_idle().await.expect("passes");

    for key in ["part_1", "part_3", "part_4"] {
        assert!(
            w.hs.find("companies", "prm_partner_key", key).is_some(),
            "{key} created"
        );
    }
    assert!(
        w.hs.find("companies", "prm_partner_key", "part_2")
            .is_none()
    );
    let status = d.engine.store().status(0).await.expect("status");
    assert_eq!(status.inbox_pending, 0, "nothing left waiting");
    let letters = d.engine.store().dead_letters(10).await.expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].record_id, "part_2");
    assert!(
        letters[0].reason.contains("refused the match search"),
        "{}",
        letters[0].reason
    );
    d.shutdown().await;
}

/// HubSpot refuses any batch that carries `deal_7` with a 400: before, all 20 deals of the batch
/// were dead-lettered; now the batch is bisected, only `deal_7` is dead-lettered and the other
/// 19 are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_one_record_is_bisected_and_the_good_ones_are_written() {
    let w = World::seeded(20).await;
    w.hs.refuse_batches_with("deal_7");
    let d = w.daemon().await;
    d.run_until_idle().await.expect("passes");

    let deals = w.hs.objects("deals");
    assert_eq!(deals.len(), 19, "every deal but the bad one");
    assert!(w.hs.find("deals", "prm_deal_id", "deal_7").is_none());
    let letters = d.engine.store().dead_letters(50).await.expect("letters");
    // Only deal_7 (each plan of it that was sent, e.g. again after the rules decided).
    let mut ids: Vec<&str> = letters.iter().map(|l| l.record_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids, vec!["deal_7"], "{letters:?}");
    assert!(letters[0].reason.contains("400"), "{}", letters[0].reason);
    d.shutdown().await;
}

/// HubSpot refuses a whole batch upsert with 400 `VALIDATION_ERROR` when one input has a bad
/// property value (the simulator now does too; it answered 207 before). One deal
/// whose stage HubSpot does not have, among 100: the batch is split down to it, 99 are written
/// and that one alone is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_property_value_in_100_is_isolated_and_99_are_written() {
    let w = World::seeded(100).await;
    let mut bad = w.ps.deal("deal_42").expect("deal_42");
    bad.insert("stage".into(), json!("not-a-hubspot-stage"));
    w.ps.upsert_deal(bad);
    let dir = tempfile::tempdir().expect("mappings dir");
    // A stage the value map does not list is passed through as written, so HubSpot judges it.
    std::fs::write(
        dir.path().join("deals.toml"),
        r#"
name = "deal-registration"
[source]
system = "partnerstack"
object = "deals"
[target]
system = "hubspot"
object = "deals"
external_id = "prm_deal_id"
[[field]]
source = "account_name"
target = "dealname"
required = true
[[field]]
source = "stage"
target = "dealstage"
type = "enum"
values = { submitted = "appointmentscheduled", approved = "qualifiedtobuy", demo = "presentationscheduled", evaluation = "decisionmakerboughtin", negotiation = "contractsent", won = "closedwon", lost = "closedlost" }
unmapped = "pass"
"#,
    )
    .expect("mapping");
    let mut config = w.config();
    config.daemon.mappings_dir = Some(dir.path().to_path_buf());
    let d = Daemon::start(config, system_clock()).await.expect("daemon");
    d.run_until_idle().await.expect("passes");

    assert_eq!(
        w.hs.objects("deals").len(),
        99,
        "every deal but the bad one"
    );
    assert!(w.hs.find("deals", "prm_deal_id", "deal_42").is_none());
    let letters = d.engine.store().dead_letters(50).await.expect("letters");
    let mut ids: Vec<&str> = letters.iter().map(|l| l.record_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids, vec!["deal_42"], "{letters:?}");
    assert!(
        letters[0].reason.contains("VALIDATION_ERROR")
            && letters[0].reason.contains("not-a-hubspot-stage"),
        "{}",
        letters[0].reason
    );
    // The refusals were whole-batch 400s, halved down to the bad deal: one per level.
    let refused =
        w.hs.request_log()
            .into_iter()
            .filter(|r| r.path.ends_with("/deals/batch/upsert") && r.status == 400)
            .count();
    assert!((2..=8).contains(&refused), "{refused} refused batches");
    d.shutdown().await;
}
