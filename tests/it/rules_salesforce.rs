//! The rules of engagement with Salesforce as the CRM, end to end through the daemon: decisions
//! are written back to the Opportunity under the `[crm.salesforce]` field names, and Salesforce
//! facts read with SOQL (an Account flagged as direct-reserved, an open direct Opportunity on the
//! customer's Account) decide registrations, mirroring `crm_facts.rs` for HubSpot.

use std::path::{Path, PathBuf};

use prmsync::app::Daemon;
use prmsync::config::{CrmConfig, SalesforceAuthConfig, SalesforceConfig};
use prmsync::sim::SimServer;
use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::harness::World;

const SF_OPPORTUNITIES: &str =
    "tests/fixtures/mappings-salesforce/partnerstack-salesforce-opportunities.toml";

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub(crate) fn deal(key: &str, partner: &str, email: &str) -> Map<String, Value> {
    object(json!({
        "key": key,
        "account_name": "Customer",
        "amount": 2_500_000,
        "close_date": "2027-03-31",
        "contact_first_name": "Pat",
        "contact_last_name": "Lee",
        "contact_email": email,
        "partner_key": partner,
        "source": "partner",
        "stage": "submitted",
    }))
}

/// A mappings folder with the Salesforce opportunity flow and the shipped rules file as shipped
/// (its CRM criterion names the HubSpot property and the Salesforce checkbox).
pub(crate) fn salesforce_mappings(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("mappings");
    std::fs::create_dir_all(&out).expect("mappings dir");
    let flow = std::fs::read_to_string(root.join(SF_OPPORTUNITIES)).expect("flow file");
    std::fs::write(out.join("partnerstack-salesforce-opportunities.toml"), flow).expect("flow");
    std::fs::write(
        out.join(prmsync::rules::RULES_FILE),
        prmsync::rules::BUILTIN.1,
    )
    .expect("rules");
    out
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

/// A daemon syncing `world`'s PartnerStack to the Salesforce simulator at `sf`.
pub(crate) async fn daemon(world: &World, mappings: PathBuf, sf: &SimServer) -> Daemon {
    let mut config = world.config();
    config.daemon.mappings_dir = Some(mappings);
    config.daemon.state_key = Some(SecretString::from("rules-test-state-key"));
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
    Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts")
}

/// The decision prmsync wrote on a PartnerStack deal: (status, reason).
fn decision(w: &World, key: &str) -> (Option<String>, String) {
    let f = w.ps.custom_fields(key);
    let s = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
    (
        s("registration_status"),
        s("registration_reason").unwrap_or_default(),
    )
}

/// The Opportunity the deal flow made from registration `key`.
pub(crate) fn opportunity(sf: &SalesforceSim, key: &str) -> Map<String, Value> {
    let mut found = sf.find("Opportunity", "PRM_Deal_Id__c", key);
    assert_eq!(found.len(), 1, "one opportunity for {key}");
    found.remove(0)
}

/// SOQL queries sent to the simulator whose text contains `fragment`.
fn queries(sf: &SalesforceSim, fragment: &str) -> Vec<String> {
    sf.soql_log()
        .into_iter()
        .filter(|q| q.contains(fragment))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_written_back_to_salesforce_under_its_field_names() {
    let w = World::seeded(0).await;
    let (sf, sf_server) = salesforce().await;
    w.ps.upsert_deal(deal("reg_a", "part_1", "ann@acme.example"));
    w.ps.upsert_deal(deal("reg_b", "part_2", "bo@www.acme.example"));
    let d = daemon(&w, salesforce_mappings(w.dir.path()), &sf_server).await;
    d.run_until_idle().await.expect("sync");

    let (a, _) = decision(&w, "reg_a");
    let (b, reason) = decision(&w, "reg_b");
    assert_eq!(a.as_deref(), Some("approved"));
    assert_eq!(b.as_deref(), Some("duplicate"), "{reason}");
    let won = opportunity(&sf, "reg_a");
    assert_eq!(won["PRM_Registration_Status__c"], "approved");
    assert_eq!(won["PRM_Attribution__c"], "partner_sourced");
    let until = won["PRM_Protected_Until__c"]
        .as_str()
        .expect("protected until");
    assert!(until.parse::<jiff::Timestamp>().is_ok(), "{until}");
    let lost = opportunity(&sf, "reg_b");
    assert_eq!(lost["PRM_Registration_Status__c"], "duplicate");
    assert_eq!(lost["PRM_Attribution__c"], "none");
    assert_eq!(lost["PRM_Protected_Until__c"], Value::Null);
    // No HubSpot property name was sent to Salesforce, and nothing was dead-lettered.
    assert!(won.keys().all(|k| !k.starts_with("prm_")), "{won:?}");
    let conn = rusqlite::Connection::open(w.state_path()).expect("state file");
    let dead: i64 = conn
        .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
        .expect("count");
    assert_eq!(dead, 0);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_field_names_come_from_the_rules_file() {
    let w = World::seeded(0).await;
    let (sf, sf_server) = salesforce().await;
    w.ps.upsert_deal(deal("reg_a", "part_1", "ann@acme.example"));
    // The org keeps the status in a field of its own: any Opportunity field works; here the
    // description.
    let mappings = salesforce_mappings(w.dir.path());
    let rules = mappings.join(prmsync::rules::RULES_FILE);
    let text = std::fs::read_to_string(&rules).expect("rules");
    let renamed = text.replace(
        "status = \"PRM_Registration_Status__c\"",
        "status = \"Description\"",
    );
    assert_ne!(
        renamed, text,
        "the shipped rules name the Salesforce status field"
    );
    std::fs::write(&rules, renamed).expect("rules");
    let d = daemon(&w, mappings, &sf_server).await;
    d.run_until_idle().await.expect("sync");
    let opp = opportunity(&sf, "reg_a");
    assert_eq!(opp["Description"], "approved");
    assert_eq!(opp["PRM_Attribution__c"], "partner_sourced");
    assert!(!opp.contains_key("PRM_Registration_Status__c"), "{opp:?}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_flagged_in_salesforce_is_reserved_for_direct_sales() {
    let w = World::seeded(0).await;
    let (sf, sf_server) = salesforce().await;
    let flagged = sf.insert(
        "Account",
        object(json!({"Name": "Hooli", "Website": "https://www.Hooli.example/about", "PRM_Direct_Reserved__c": true})),
    );
    sf.insert(
        "Account",
        object(
            json!({"Name": "Globex", "Website": "globex.example", "PRM_Direct_Reserved__c": false}),
        ),
    );
    // LIKE '%hooli.example%' also finds this one; its domain is not the customer's.
    sf.insert(
        "Account",
        object(json!({"Name": "Not Hooli", "Website": "nothooli.example", "PRM_Direct_Reserved__c": true})),
    );
    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@eu.hooli.example"));
    w.ps.upsert_deal(deal("reg_g", "part_2", "hank@globex.example"));
    let d = daemon(&w, salesforce_mappings(w.dir.path()), &sf_server).await;
    d.engine.tick().await.expect("first pass");
    // Both domains were read in one Account query.
    let accounts = queries(&sf, "FROM Account");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    d.run_until_idle().await.expect("sync");

    let (status, reason) = decision(&w, "reg_h");
    assert_eq!(status.as_deref(), Some("rejected"), "{reason}");
    assert!(
        reason.contains(&format!(
            "CRM account {flagged} (hooli.example) has PRM_Direct_Reserved__c = \"true\""
        )) && reason.contains("(reserved_accounts line 46)"),
        "{reason}"
    );
    assert_eq!(decision(&w, "reg_g").0.as_deref(), Some("approved"));
    let opp = opportunity(&sf, "reg_h");
    assert_eq!(opp["PRM_Registration_Status__c"], "rejected");
    assert_eq!(opp["PRM_Attribution__c"], "none");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_direct_opportunity_in_salesforce_rejects_a_new_registration() {
    let w = World::seeded(0).await;
    let (sf, sf_server) = salesforce().await;
    let hooli = sf.insert(
        "Account",
        object(json!({"Name": "Hooli", "Website": "hooli.example"})),
    );
    let direct = sf.insert(
        "Opportunity",
        object(json!({"Name": "Hooli platform", "StageName": "Qualification", "CloseDate": "2027-01-31", "AccountId": hooli})),
    );
    // Globex has a closed direct opportunity and an open partner-sourced one: neither counts.
    let globex = sf.insert(
        "Account",
        object(json!({"Name": "Globex", "Website": "www.globex.example"})),
    );
    sf.insert(
        "Opportunity",
        object(json!({"Name": "Globex 2025", "StageName": "Closed Won", "CloseDate": "2025-06-30", "AccountId": globex})),
    );
    sf.insert(
        "Opportunity",
        object(json!({"Name": "Globex via partner", "StageName": "Qualification", "CloseDate": "2027-01-31", "AccountId": globex, "PRM_Deal_Id__c": "reg_old"})),
    );
    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@hooli.example"));
    w.ps.upsert_deal(deal("reg_g", "part_2", "hank@globex.example"));
    let d = daemon(&w, salesforce_mappings(w.dir.path()), &sf_server).await;
    d.engine.tick().await.expect("first pass");
    // One Account query and one Opportunity query for both domains.
    assert_eq!(queries(&sf, "FROM Account").len(), 1);
    let opps = queries(&sf, "IsClosed = false");
    assert_eq!(opps.len(), 1, "{opps:?}");
    d.run_until_idle().await.expect("sync");

    let (status, reason) = decision(&w, "reg_h");
    assert_eq!(status.as_deref(), Some("rejected"), "{reason}");
    assert!(
        reason.contains(&format!(
            "the direct team already has open opportunity {direct} on hooli.example"
        )) && reason.contains("(open_direct_opportunity line 48)"),
        "{reason}"
    );
    let (status, reason) = decision(&w, "reg_g");
    assert_eq!(status.as_deref(), Some("approved"), "{reason}");
    assert_eq!(
        opportunity(&sf, "reg_h")["PRM_Attribution__c"],
        "none",
        "the rejected registration's opportunity carries no attribution"
    );
    assert_eq!(
        opportunity(&sf, "reg_g")["PRM_Attribution__c"],
        "partner_sourced"
    );
    d.shutdown().await;
}
