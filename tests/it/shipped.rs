//! Every shipped mapping file runs end to end: the flows in `mappings/` for HubSpot and for
//! Salesforce (with PartnerStack), and the REST-profile flows (with the generic REST PRM and
//! Salesforce), against the strict simulators, sync every seeded record with zero dead letters;
//! the CRM's 429s are waited out (no request inside a `Retry-After` window).

use std::path::{Path, PathBuf};

use prmsync::config::{Environment, PrmConfig, load};
use prmsync::sim::SimServer;
use prmsync::sim::rest::RestPrmSim;
use serde_json::{Map, Value, json};

use crate::harness::World;
use crate::rules_salesforce::{daemon as salesforce_daemon, salesforce};

const PARTNERS: usize = 5;
pub(crate) const DEALS: usize = 12;
const LEADS: usize = 6;
const ACTIONS: usize = 7;
const MDF: usize = 4;

fn object(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

pub(crate) fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

/// PartnerStack partnerships, co-marketing leads and partner activities beside the seeded deals
/// (`World::seeded`), each shaped as the shipped mappings read them.
pub(crate) fn seed_partnerstack(w: &World) {
    let tiers = ["Gold", "Silver", "Bronze"];
    for i in 1..=PARTNERS {
        w.ps.upsert_item(
            "partnerships",
            object(json!({
                "key": format!("part_{i}"), "status": "active",
                "email": format!("owner{i}@partner{i}.example"),
                "first_name": "Pat", "last_name": format!("Partner{i}"),
                "company": {"name": format!("Partner {i} Ltd"),
                    "website": format!("https://www.partner{i}.example"), "country": "de"},
                "group": {"name": tiers[i % 3]},
                "joined_at": 1_767_225_600_000_i64, "phone": format!("+49 30 {i:04}"),
            })),
        );
    }
    for i in 1..=LEADS {
        w.ps.upsert_item(
            "leads",
            object(json!({
                "key": format!("lead_{i}"), "type": "co_marketing",
                "email": format!("buyer{i}@customer{i}.example"),
                "first_name": "Max", "last_name": format!("Buyer{i}"),
                "company_name": format!("Customer {i}"), "status": "new",
                "partner_key": format!("part_{}", 1 + i % PARTNERS),
                "campaign": {"name": "Q1 webinar"}, "event_date": "02/03/2026",
            })),
        );
    }
    // Actions as PartnerStack lists them (GET /v2/actions): only the documented fields.
    for i in 1..=ACTIONS {
        w.ps.upsert_item(
            "actions",
            object(json!({
                "key": format!("act_{i}"), "archived": false, "company": {}, "customer": {},
                "partnership_key": format!("part_{}", 1 + i % PARTNERS),
                "type": if i % 2 == 0 { "call" } else { "meeting_held" }, "value": i,
            })),
        );
    }
}

/// Dead letters in the state file.
pub(crate) fn dead_letters(w: &World) -> Vec<String> {
    let conn = rusqlite::Connection::open(w.state_path()).expect("state file");
    let mut stmt = conn
        .prepare("SELECT flow || ' ' || record_id || ': ' || reason FROM dead_letters")
        .expect("query");
    stmt.query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("dead letters")
}

/// The keys `{prefix}1 .. {prefix}n`.
fn keys(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// A 429 asking for a one-second wait (`Retry-After: 1`).
fn rate_limited() -> prmsync::sim::Fault {
    prmsync::sim::Fault {
        status: 429,
        retry_after: Some(1),
    }
}

/// Both 429s of [`rate_limited`] reached the simulator's API under `prefix`, and the next
/// request after each came only when its wait was over.
fn assert_no_request_inside_the_wait(log: Vec<prmsync::sim::LoggedRequest>, prefix: &str) {
    let mut log: Vec<_> = log
        .into_iter()
        .filter(|r| r.path.starts_with(prefix))
        .collect();
    log.sort_by_key(|r| r.at_ms);
    let limited: Vec<usize> = (0..log.len()).filter(|&i| log[i].status == 429).collect();
    assert_eq!(limited.len(), 2, "{log:?}");
    for i in limited {
        if let Some(next) = log.get(i + 1) {
            assert!(
                next.at_ms - log[i].at_ms >= 1000,
                "{} {} came {} ms after a 429 that asked for 1 s",
                next.method,
                next.path,
                next.at_ms - log[i].at_ms
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_hubspot_flows_sync_every_seeded_record() {
    let w = World::seeded(DEALS).await;
    seed_partnerstack(&w);
    let mut config = w.config();
    config.daemon.mappings_dir = Some(shipped());
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts with every shipped mapping");
    w.hs.inject([rate_limited(), rate_limited()]);
    d.run_until_idle().await.expect("sync");
    assert_eq!(dead_letters(&w), Vec::<String>::new(), "no dead letters");
    assert_no_request_inside_the_wait(w.hs.request_log(), "/crm/");
    let has = |object: &str, property: &str, keys: Vec<String>| {
        for k in keys {
            assert!(
                w.hs.find(object, property, &k).is_some(),
                "{object} {property}={k} was not synced"
            );
        }
    };
    // One line per shipped HubSpot file.
    has("deals", "prm_deal_id", keys("deal_", DEALS)); // partnerstack-hubspot-deals
    has("companies", "prm_partner_key", keys("part_", PARTNERS)); // partnerstack-hubspot-companies
    has("contacts", "prm_partner_user_key", keys("part_", PARTNERS)); // partnerstack-hubspot-contacts
    has("contacts", "prm_lead_key", keys("lead_", LEADS)); // partnerstack-hubspot-leads
    has("tasks", "prm_activity_key", keys("act_", ACTIONS)); // partnerstack-hubspot-tasks
    assert_eq!(w.hs.objects("contacts").len(), PARTNERS + LEADS);
    // Each partner's person is on the partner's company.
    assert_eq!(w.hs.associations("contacts", "companies").len(), PARTNERS);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_salesforce_flows_sync_every_seeded_record() {
    let w = World::seeded(DEALS).await;
    seed_partnerstack(&w);
    let (sf, server) = salesforce().await;
    let d = salesforce_daemon(&w, shipped(), &server).await;
    sf.inject([rate_limited(), rate_limited()]);
    d.run_until_idle().await.expect("sync");
    assert_eq!(dead_letters(&w), Vec::<String>::new(), "no dead letters");
    assert_no_request_inside_the_wait(sf.request_log(), "/services/data/");
    let has = |object: &str, field: &str, keys: Vec<String>| {
        for k in keys {
            assert_eq!(
                sf.find(object, field, &k).len(),
                1,
                "{object} {field}={k} was not synced once"
            );
        }
    };
    // One line per shipped Salesforce file.
    has("Opportunity", "PRM_Deal_Id__c", keys("deal_", DEALS)); // partnerstack-salesforce-opportunities
    has("Account", "PRM_Partner_Key__c", keys("part_", PARTNERS)); // partnerstack-salesforce-accounts
    has("Contact", "PRM_User_Key__c", keys("part_", PARTNERS)); // partnerstack-salesforce-contacts
    has("Lead", "PRM_Lead_Id__c", keys("lead_", LEADS)); // partnerstack-salesforce-leads
    has("Task", "PRM_Activity_Key__c", keys("act_", ACTIONS)); // partnerstack-salesforce-tasks
    let account = |key: &str| sf.find("Account", "PRM_Partner_Key__c", key)[0]["Id"].clone();
    let contact = &sf.find("Contact", "PRM_User_Key__c", "part_2")[0];
    assert_eq!(
        contact["AccountId"],
        account("part_2"),
        "the contact is on its account"
    );
    d.shutdown().await;
}

/// A task whose partner is being written waits for it (above); one whose partner is not on its
/// way at all is dead-lettered once with the reason, and the run still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_whose_record_is_not_on_its_way_is_dead_lettered_once() {
    let w = World::seeded(0).await;
    w.ps.upsert_item(
        "partnerships",
        object(json!({"key": "part_1", "status": "active", "company": {"name": "P1"}})),
    );
    for (key, partner) in [("act_1", "part_1"), ("act_2", "part_99")] {
        w.ps.upsert_item(
            "actions",
            object(json!({"key": key, "partnership_key": partner, "type": "call", "value": 1})),
        );
    }
    let (sf, server) = salesforce().await;
    let d = salesforce_daemon(&w, shipped(), &server).await;
    d.run_until_idle().await.expect("sync");
    assert_eq!(sf.find("Task", "PRM_Activity_Key__c", "act_1").len(), 1);
    let dead = dead_letters(&w);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].starts_with("sf-partner-activity act_2: ")
            && dead[0].contains("has no linked record in flow \"sf-partner-organisation\""),
        "{dead:?}"
    );
    d.shutdown().await;
}

/// The shipped REST profile (tests/fixtures/rest-prm.toml) pointed at `server`.
pub(crate) fn rest_profile(server: &SimServer) -> prmsync::config::RestConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rest-prm.toml");
    let env = Environment {
        vars: [
            ("REST_PRM_KEY", "rest-prm-key".to_owned()),
            ("HS_TOKEN", "t".to_owned()),
            ("PRMSYNC__REST__BASE_URL", server.url("/api").to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    };
    let PrmConfig::Rest(r) = load(&path, &env).expect("the shipped profile loads").prm else {
        panic!("a rest PRM")
    };
    r
}

/// MDF requests in the generic REST PRM, shaped as the shipped campaign flow reads them.
pub(crate) fn seed_mdf(rest: &RestPrmSim) {
    for i in 1..=MDF {
        rest.put(
            "mdf_requests",
            &format!("mdf_{i}"),
            object(json!({
                "partner_name": format!("Partner {i}"), "title": format!("Roadshow {i}"),
                "start_date": "2026-03-02", "end_date": "2026-03-31",
                "requested_amount": 250_000 + i as i64, "status": "requested",
            })),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_rest_flows_sync_every_seeded_record() {
    let w = World::seeded(0).await;
    let rest = RestPrmSim::new("rest-prm-key");
    let rest_server = SimServer::start(rest.router()).await.expect("rest sim");
    seed_mdf(&rest);
    let (sf, server) = salesforce().await;
    let mut config = w.config();
    config.prm = PrmConfig::Rest(rest_profile(&rest_server));
    let d = rest_salesforce_daemon(config, &server).await;
    d.run_until_idle().await.expect("sync");
    assert_eq!(dead_letters(&w), Vec::<String>::new(), "no dead letters");
    for k in keys("mdf_", MDF) {
        let c = sf.find("Campaign", "PRM_MDF_Key__c", &k);
        assert_eq!(c.len(), 1, "campaign {k}");
        assert_eq!(c[0]["Status"], "Planned");
    }
    // The channel team approves one: the status comes back to the PRM by PATCH.
    let id = sf.find("Campaign", "PRM_MDF_Key__c", "mdf_2")[0]["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(sf.set_field("Campaign", &id, "Status", json!("In Progress")));
    d.run_until_idle().await.expect("sync back");
    let back = rest
        .items("mdf_requests")
        .into_iter()
        .find(|m| m["id"] == "mdf_2")
        .expect("mdf_2");
    assert_eq!(back["status"], "approved");
    assert_eq!(
        back["title"], "Roadshow 2",
        "the PATCH kept the partner's fields"
    );
    d.shutdown().await;
}

/// A daemon from `config` with Salesforce at `sf` and every shipped mapping.
pub(crate) async fn rest_salesforce_daemon(
    mut config: prmsync::config::Config,
    sf: &SimServer,
) -> prmsync::app::Daemon {
    use prmsync::config::{CrmConfig, SalesforceAuthConfig, SalesforceConfig};
    use secrecy::SecretString;
    config.daemon.mappings_dir = Some(shipped());
    config.daemon.state_key = Some(SecretString::from("shipped-test-state-key"));
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
    prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts with the REST PRM and Salesforce")
}
