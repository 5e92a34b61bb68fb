//! Record lifecycle through the daemon, checked at the simulators: a partner's delete under each
//! source delete policy, a CRM delete that is not re-created (tombstone) or is (`recreate`), a
//! restore that relinks, on HubSpot and on Salesforce.

use std::path::{Path, PathBuf};

use prmsync::app::Daemon;
use prmsync::config::{CrmConfig, PrmConfig, SalesforceAuthConfig, SalesforceConfig};
use prmsync::sim::SimServer;
use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
use prmsync::webhook::signature::body_hmac;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::World;

const PS_HOOK_SECRET: &str = "ps-hook-secret";
const HS_DEALS: &str = "mappings/partnerstack-hubspot-deals.toml";
pub(crate) const SF_OPPORTUNITIES: &str =
    "tests/fixtures/mappings-salesforce/partnerstack-salesforce-opportunities.toml";

/// A mappings folder holding one shipped flow file with `extra` TOML appended.
pub(crate) fn mappings_with(dir: &Path, flow: &str, extra: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(flow)).expect("flow file");
    let out = dir.join("mappings");
    std::fs::create_dir_all(&out).expect("mappings dir");
    let name = Path::new(flow).file_name().expect("file name");
    std::fs::write(out.join(name), format!("{text}\n{extra}\n")).expect("write flow");
    out
}

/// A daemon for `world` with the given mappings, PartnerStack webhooks signed with
/// [`PS_HOOK_SECRET`], and Salesforce as the CRM when `sf` is given.
pub(crate) async fn daemon(world: &World, mappings: PathBuf, sf: Option<&SimServer>) -> Daemon {
    Daemon::start(config(world, mappings, sf), prmsync::engine::system_clock())
        .await
        .expect("daemon starts")
}

/// The config [`daemon`] starts with.
pub(crate) fn config(
    world: &World,
    mappings: PathBuf,
    sf: Option<&SimServer>,
) -> prmsync::config::Config {
    let mut config = world.config();
    config.daemon.mappings_dir = Some(mappings);
    let PrmConfig::PartnerStack(ps) = &mut config.prm else {
        panic!("the test world's PRM is PartnerStack");
    };
    ps.webhook_secret = Some(SecretString::from(PS_HOOK_SECRET));
    if let Some(sf) = sf {
        // Rotated Salesforce refresh tokens are kept sealed with the state key.
        config.daemon.state_key = Some(SecretString::from("lifecycle-test-state-key"));
        config.crm = CrmConfig::Salesforce(SalesforceConfig {
            login_url: sf.url(""),
            auth: SalesforceAuthConfig::RefreshToken {
                client_id: "3MVG9sim.consumer.key".into(),
                client_secret: Some(SecretString::from("sim-consumer-secret")),
                refresh_token: SecretString::from("5Aep.initial"),
            },
            audience: None,
            rate_limit: None,
        });
    }
    config
}

pub(crate) async fn salesforce() -> (SalesforceSim, SimServer) {
    let sim = SalesforceSim::new(SalesforceAuth {
        client_id: "3MVG9sim.consumer.key".into(),
        client_secret: "sim-consumer-secret".into(),
        refresh_token: "5Aep.initial".into(),
        rotate: false,
        jwt_public_key: None,
        username: "integration@prmsync.example".into(),
        token_ttl_ms: 3_600_000,
    });
    let server = SimServer::start(sim.router()).await.expect("start sim");
    (sim, server)
}

/// The partner deletes `key` in PartnerStack, which sends `deal.deleted` to the daemon.
async fn partner_deletes(world: &World, d: &Daemon, key: &str) {
    let event = world.ps.delete_deal(key).expect("the deal exists");
    let body = serde_json::to_vec(&event).expect("json");
    let status = prmsync::connector::http_client(std::time::Duration::from_secs(30))
        .post(format!("http://{}/webhooks/partnerstack", d.http_addr))
        .header(
            prmsync::webhook::PRM_SIGNATURE_HEADER,
            body_hmac(PS_HOOK_SECRET.as_bytes(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook answered")
        .status();
    assert!(status.is_success(), "webhook accepted: {status}");
}

/// The ledger's actions for one record of a flow, oldest first.
fn actions(world: &World, source_id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(world.state_path()).expect("state file");
    let mut stmt = conn
        .prepare("SELECT action FROM ledger WHERE source_id = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([source_id], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("actions")
}

/// The ledger's details for one record, oldest first.
fn details(world: &World, source_id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(world.state_path()).expect("state file");
    let mut stmt = conn
        .prepare("SELECT COALESCE(detail, '') FROM ledger WHERE source_id = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([source_id], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("details")
}

fn text<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// A partner changes a deal's amount (cents) in PartnerStack.
fn partner_edits(world: &World, key: &str, amount: i64) {
    let mut deal = world.ps.deal(key).expect("deal");
    deal.insert("amount".into(), json!(amount));
    world.ps.upsert_deal(deal);
}

#[tokio::test]
async fn a_partner_delete_follows_each_policy_in_hubspot() {
    // (delete section, live HubSpot deals after, archived, the deal's flag)
    let cases = [
        ("[delete]\npolicy = \"ignore\"", 3, 0, ""),
        (
            "[delete]\npolicy = \"flag\"\nfield = \"prm_registration_status\"\nvalue = \"deleted\"",
            3,
            0,
            "deleted",
        ),
        ("[delete]\npolicy = \"archive\"", 2, 1, ""),
    ];
    for (section, live, archived, flag) in cases {
        let world = World::seeded(3).await;
        let d = daemon(
            &world,
            mappings_with(world.dir.path(), HS_DEALS, section),
            None,
        )
        .await;
        d.run_until_idle().await.expect("first pass");
        assert_eq!(world.hs.objects("deals").len(), 3, "{section}");
        let before = world
            .hs
            .find("deals", "prm_deal_id", "deal_1")
            .expect("deal");
        partner_deletes(&world, &d, "deal_1").await;
        d.run_until_idle().await.expect("delete pass");
        assert_eq!(world.hs.objects("deals").len(), live, "{section}");
        assert_eq!(world.hs.archived("deals").len(), archived, "{section}");
        if archived > 0 {
            let gone = &world.hs.archived("deals")[0];
            assert_eq!(text(gone, "hs_object_id"), text(&before, "hs_object_id"));
            assert!(actions(&world, "deal_1").contains(&"deleted".to_owned()));
        } else {
            let after = world
                .hs
                .find("deals", "prm_deal_id", "deal_1")
                .expect("deal");
            assert_eq!(text(&after, "prm_registration_status"), flag, "{section}");
        }
        d.shutdown().await;
    }
}

#[tokio::test]
async fn a_deal_deleted_in_hubspot_is_not_recreated_and_a_restore_relinks() {
    let world = World::seeded(3).await;
    let d = daemon(&world, mappings_with(world.dir.path(), HS_DEALS, ""), None).await;
    d.run_until_idle().await.expect("first pass");
    let deal = world
        .hs
        .find("deals", "prm_deal_id", "deal_1")
        .expect("deal");
    let id = text(&deal, "hs_object_id").to_owned();
    assert!(world.hs.archive("deals", &id));
    d.run_until_idle().await.expect("the delete is read");
    partner_edits(&world, "deal_1", 77_700);
    d.run_until_idle().await.expect("the partner's edit");
    assert_eq!(
        world.hs.objects("deals").len(),
        2,
        "deal_1 is not re-created"
    );
    assert_eq!(world.hs.writes("deals")["deal_1"].0, 1, "created once");
    let seen = actions(&world, "deal_1");
    assert!(seen.contains(&"target_deleted".to_owned()), "{seen:?}");
    assert!(seen.contains(&"skip_tombstoned".to_owned()), "{seen:?}");

    // Sales restores the deal: the link is live again and the next edit reaches it.
    assert!(world.hs.restore("deals", &id));
    d.run_until_idle().await.expect("the restore is read");
    partner_edits(&world, "deal_1", 88_800);
    d.run_until_idle().await.expect("the next edit");
    let deal = world
        .hs
        .find("deals", "prm_deal_id", "deal_1")
        .expect("deal");
    assert_eq!(text(&deal, "hs_object_id"), id, "the same record");
    assert_eq!(text(&deal, "amount"), "888");
    let relinked = details(&world, "deal_1");
    assert!(
        relinked.iter().any(|d| d.contains("relinked")),
        "{relinked:?}"
    );
    assert_eq!(world.hs.objects("deals").len(), 3);
    d.shutdown().await;
}

#[tokio::test]
async fn on_target_delete_recreate_creates_the_deal_again_on_the_next_change() {
    let world = World::seeded(2).await;
    let extra = "[on_target_delete]\npolicy = \"recreate\"";
    let d = daemon(
        &world,
        mappings_with(world.dir.path(), HS_DEALS, extra),
        None,
    )
    .await;
    d.run_until_idle().await.expect("first pass");
    let deal = world
        .hs
        .find("deals", "prm_deal_id", "deal_1")
        .expect("deal");
    assert!(world.hs.archive("deals", text(&deal, "hs_object_id")));
    d.run_until_idle().await.expect("the delete is read");
    partner_edits(&world, "deal_1", 55_500);
    d.run_until_idle().await.expect("the partner's edit");
    let again = world
        .hs
        .find("deals", "prm_deal_id", "deal_1")
        .expect("re-created");
    assert_ne!(text(&again, "hs_object_id"), text(&deal, "hs_object_id"));
    assert_eq!(text(&again, "amount"), "555");
    assert_eq!(world.hs.objects("deals").len(), 2);
    d.shutdown().await;
}

#[tokio::test]
async fn salesforce_deletes_both_ways() {
    let world = World::seeded(3).await;
    let (sf, sf_server) = salesforce().await;
    let extra = "[delete]\npolicy = \"propagate\"";
    let mappings = mappings_with(world.dir.path(), SF_OPPORTUNITIES, extra);
    let d = daemon(&world, mappings, Some(&sf_server)).await;
    d.run_until_idle().await.expect("first pass");
    assert_eq!(sf.records("Opportunity").len(), 3);

    // A partner's delete deletes the opportunity (composite/sobjects DELETE).
    partner_deletes(&world, &d, "deal_3").await;
    d.run_until_idle().await.expect("delete pass");
    assert!(
        sf.find("Opportunity", "PRM_Deal_Id__c", "deal_3")
            .is_empty()
    );
    assert_eq!(sf.records("Opportunity").len(), 2);
    assert!(actions(&world, "deal_3").contains(&"deleted".to_owned()));

    // Sales deletes an opportunity: getDeleted tells prmsync, and the next edit does not
    // re-create it.
    let opp = sf.find("Opportunity", "PRM_Deal_Id__c", "deal_1").remove(0);
    assert!(sf.delete("Opportunity", text(&opp, "Id")));
    d.run_until_idle().await.expect("the delete is read");
    partner_edits(&world, "deal_1", 424_200);
    d.run_until_idle().await.expect("the partner's edit");
    assert!(
        sf.find("Opportunity", "PRM_Deal_Id__c", "deal_1")
            .is_empty()
    );
    let seen = actions(&world, "deal_1");
    assert!(seen.contains(&"target_deleted".to_owned()), "{seen:?}");
    assert!(seen.contains(&"skip_tombstoned".to_owned()), "{seen:?}");
    // The other opportunity still syncs.
    partner_edits(&world, "deal_2", 9_900);
    d.run_until_idle().await.expect("an edit elsewhere");
    let other = sf.find("Opportunity", "PRM_Deal_Id__c", "deal_2").remove(0);
    assert_eq!(text(&other, "Amount"), "99");
    d.shutdown().await;
}
