//! CRM facts for the rules of engagement, end to end: HubSpot companies flagged as direct-reserved
//! and open direct deals on a customer's company decide registrations in the running daemon, and a
//! failed facts read leaves a registration undecided until a later pass.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::harness::World;
use prmsync::store::Store;

fn deal(key: &str, partner: &str, email: &str) -> Map<String, Value> {
    match json!({
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
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
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

/// Requests to HubSpot whose path ends with `suffix`, and how many of them failed.
fn requests(w: &World, suffix: &str) -> (usize, usize) {
    let log = w.hs.request_log();
    let hits: Vec<_> = log.iter().filter(|r| r.path.ends_with(suffix)).collect();
    (hits.len(), hits.iter().filter(|r| r.status >= 500).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_flagged_in_hubspot_is_reserved_for_direct_sales() {
    let w = World::seeded(0).await;
    let flagged = w.hs.create(
        "companies",
        props(&[
            ("name", "Hooli"),
            ("domain", "hooli.example"),
            ("prm_direct_reserved", "true"),
        ]),
    );
    w.hs.create(
        "companies",
        props(&[
            ("name", "Globex"),
            ("domain", "globex.example"),
            ("prm_direct_reserved", "false"),
        ]),
    );
    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@eu.hooli.example"));
    w.ps.upsert_deal(deal("reg_g", "part_2", "hank@globex.example"));
    let daemon = w.daemon().await;
    daemon.engine.tick().await.expect("first pass");
    // Both domains were read in one batched company search.
    assert_eq!(requests(&w, "/companies/search"), (1, 0));
    daemon.run_until_idle().await.expect("sync");

    let (status, reason) = decision(&w, "reg_h");
    assert_eq!(status.as_deref(), Some("rejected"), "{reason}");
    assert!(
        reason.contains(&format!(
            "CRM account {flagged} (hooli.example) has prm_direct_reserved = \"true\""
        )) && reason.contains("(reserved_accounts line 46)"),
        "{reason}"
    );
    // The other company is not flagged: its registration wins as usual.
    assert_eq!(decision(&w, "reg_g").0.as_deref(), Some("approved"));
    let store = Store::open(&w.state_path()).expect("open state");
    let (h, _) = store
        .registration("reg_h".into())
        .await
        .expect("show")
        .expect("reg_h exists");
    assert_eq!(h.status.as_deref(), Some("rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_direct_deal_on_the_company_rejects_a_new_registration() {
    let w = World::seeded(0).await;
    let hooli = w.hs.create(
        "companies",
        props(&[("name", "Hooli"), ("domain", "hooli.example")]),
    );
    let direct = w.hs.create(
        "deals",
        props(&[
            ("dealname", "Hooli platform"),
            ("dealstage", "qualifiedtobuy"),
        ]),
    );
    w.hs.associate("deals", &direct, "companies", &hooli);
    // Globex has only a closed direct deal and a partner-sourced open one: neither counts.
    let globex = w.hs.create(
        "companies",
        props(&[("name", "Globex"), ("domain", "globex.example")]),
    );
    let won = w.hs.create(
        "deals",
        props(&[("dealname", "Globex 2025"), ("dealstage", "closedwon")]),
    );
    let sourced = w.hs.create(
        "deals",
        props(&[
            ("dealname", "Globex via partner"),
            ("dealstage", "qualifiedtobuy"),
            ("prm_deal_id", "reg_old"),
        ]),
    );
    w.hs.associate("companies", &globex, "deals", &won);
    w.hs.associate("deals", &sourced, "companies", &globex);

    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@hooli.example"));
    w.ps.upsert_deal(deal("reg_g", "part_2", "hank@globex.example"));
    let daemon = w.daemon().await;
    daemon.engine.tick().await.expect("first pass");
    // One company search, one associations read, one deal search for both domains.
    assert_eq!(requests(&w, "/companies/search"), (1, 0));
    assert_eq!(requests(&w, "/companies/deals/batch/read"), (1, 0));
    assert_eq!(decision(&w, "reg_h").0.as_deref(), Some("rejected"));
    daemon.run_until_idle().await.expect("sync");

    // The shipped rules say `action = "reject"`.
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
    // The rejected registration's CRM deal (made by the deal flow) carries no attribution.
    let crm =
        w.hs.find("deals", "prm_deal_id", "reg_h")
            .expect("CRM deal");
    assert_eq!(crm["prm_attribution"], "none");
    // Later passes re-decide the groups when their CRM deals change, reading the facts again.
    let (searches, failed) = requests(&w, "/companies/search");
    assert!(searches >= 1 && failed == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_facts_read_leaves_the_registration_undecided_until_the_next_pass() {
    let w = World::seeded(0).await;
    w.hs.create(
        "companies",
        props(&[
            ("name", "Hooli"),
            ("domain", "hooli.example"),
            ("prm_direct_reserved", "true"),
        ]),
    );
    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@hooli.example"));
    // Every attempt of the first pass's company search fails (the engine reads with 3 attempts).
    w.hs.fail_searches("companies", 3);
    let daemon = w.daemon().await;
    daemon.engine.tick().await.expect("first pass");

    assert_eq!(requests(&w, "/companies/search"), (3, 3));
    let store = Store::open(&w.state_path()).expect("open state");
    let (h, _) = store
        .registration("reg_h".into())
        .await
        .expect("show")
        .expect("the registration is recorded");
    assert_eq!(h.status, None, "undecided without the CRM facts: {h:?}");
    assert_eq!(decision(&w, "reg_h").0, None, "nothing written to the PRM");
    // The deal itself still syncs to HubSpot; only the decision waits.
    assert!(w.hs.find("deals", "prm_deal_id", "reg_h").is_some());

    daemon.engine.tick().await.expect("next pass");
    assert_eq!(requests(&w, "/companies/search"), (4, 3));
    let (status, reason) = decision(&w, "reg_h");
    assert_eq!(status.as_deref(), Some("rejected"), "{reason}");
    assert!(reason.contains("prm_direct_reserved"), "{reason}");
    daemon.run_until_idle().await.expect("settle");
    let (h, history) = store
        .registration("reg_h".into())
        .await
        .expect("show")
        .expect("reg_h exists");
    assert_eq!(h.status.as_deref(), Some("rejected"));
    assert_eq!(history.len(), 1, "decided once, never wrongly: {history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubspot_facts_read_is_batched_typed_and_filters_closed_and_partner_deals() {
    use std::time::Duration;

    use prmsync::connector::hubspot::HubSpot;
    use prmsync::connector::{FactsQuery, http_client};
    use prmsync::sim::SimServer;
    use prmsync::sim::hubspot::HubSpotSim;
    use secrecy::SecretString;

    let sim = HubSpotSim::new("pat-na1-sim");
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let conn = HubSpot::new(
        http_client(Duration::from_secs(5)),
        server.url(""),
        SecretString::from("pat-na1-sim"),
    );
    // 120 companies, every tenth flagged; a company elsewhere that must not be read.
    let mut ids = Vec::new();
    for i in 0..120 {
        let flag = if i % 10 == 0 { "true" } else { "false" };
        // Some companies were typed with `www.`; they are found all the same.
        let domain = if i % 7 == 0 {
            format!("www.c{i}.example")
        } else {
            format!("c{i}.example")
        };
        ids.push(sim.create(
            "companies",
            props(&[
                ("domain", &domain),
                ("prm_direct_reserved", flag),
                ("name", "x"),
            ]),
        ));
    }
    sim.create("companies", props(&[("domain", "other.example")]));
    let deal = |stage: &str, prm: Option<&str>| {
        let mut p = props(&[("dealname", "d"), ("dealstage", stage)]);
        if let Some(v) = prm {
            p.insert("prm_deal_id".into(), v.into());
        }
        sim.create("deals", p)
    };
    let open = deal("qualifiedtobuy", None);
    let blank = deal("appointmentscheduled", Some("")); // empty = no value, as in HubSpot
    let won = deal("closedwon", None);
    let lost = deal("closedlost", None);
    let sourced = deal("qualifiedtobuy", Some("reg_1"));
    sim.associate("deals", &open, "companies", &ids[3]);
    sim.associate("companies", &ids[3], "deals", &won);
    sim.associate("companies", &ids[4], "deals", &lost);
    sim.associate("companies", &ids[4], "deals", &sourced);
    // One deal on two companies: one fact per company.
    sim.associate("deals", &blank, "companies", &ids[5]);
    sim.associate("deals", &blank, "companies", &ids[6]);

    let query = FactsQuery {
        domains: (0..150).map(|i| format!("c{i}.example")).collect(),
        company_fields: vec!["prm_direct_reserved".into()],
        open_deals: true,
        domain_field: String::new(),
        prm_id_property: "prm_deal_id".into(),
    };
    let facts = conn.crm_facts(&query).await.expect("facts");

    assert_eq!(facts.companies.len(), 120);
    let flagged = facts
        .companies
        .iter()
        .filter(|c| c.fields.get("prm_direct_reserved") == Some(&json!("true")))
        .count();
    assert_eq!(flagged, 12);
    assert!(facts.companies.iter().all(|c| c.domain != "other.example"));
    assert!(facts.companies.iter().any(|c| c.domain == "www.c7.example"));
    assert!(
        facts.companies.iter().all(|c| c.fields.len() == 1),
        "only the fields the rules name"
    );
    let mut deals: Vec<(String, String, String)> = facts
        .open_direct_deals
        .iter()
        .map(|d| (d.id.clone(), d.domain.clone(), d.stage.clone()))
        .collect();
    deals.sort();
    let mut want = vec![
        (
            open.clone(),
            "c3.example".to_owned(),
            "qualifiedtobuy".to_owned(),
        ),
        (
            blank.clone(),
            "c5.example".to_owned(),
            "appointmentscheduled".to_owned(),
        ),
        (
            blank.clone(),
            "c6.example".to_owned(),
            "appointmentscheduled".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(deals, want);
    // 150 domains: three company searches (50 domains, 100 values per IN), two associations
    // reads (100 inputs each), one deal search.
    let count = |suffix: &str| {
        sim.request_log()
            .iter()
            .filter(|r| r.path.ends_with(suffix) && r.status < 300)
            .count()
    };
    assert_eq!(count("/companies/search"), 3);
    assert_eq!(count("/companies/deals/batch/read"), 2);
    assert_eq!(count("/deals/search"), 1);
}

/// A mappings folder with the built-in deal flow and the shipped rules with `edit` applied;
/// returns the config that uses it.
fn with_rules(w: &World, edit: impl Fn(String) -> String) -> prmsync::config::Config {
    let dir = w.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).expect("mappings dir");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let deals = "partnerstack-hubspot-deals.toml";
    std::fs::copy(shipped.join(deals), dir.join(deals)).expect("copy the deal flow");
    let rules = std::fs::read_to_string(shipped.join(prmsync::rules::RULES_FILE)).expect("rules");
    std::fs::write(dir.join(prmsync::rules::RULES_FILE), edit(rules)).expect("write rules");
    let mut config = w.config();
    config.daemon.mappings_dir = Some(dir);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_name_no_crm_facts_read_none() {
    let w = World::seeded(0).await;
    let config = with_rules(&w, |rules| {
        let out = rules.replace("  \"open_direct_opportunity\",", "").replace(
            "crm = [{ hubspot = \"prm_direct_reserved\", salesforce = \"PRM_Direct_Reserved__c\", equals = \"true\" }]",
            "crm = []",
        );
        assert_ne!(out, rules);
        // The example that needs an open opportunity no longer holds; drop the examples.
        out.split("[[example]]")
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    w.hs.create(
        "companies",
        props(&[("domain", "hooli.example"), ("prm_direct_reserved", "true")]),
    );
    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@hooli.example"));
    let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    daemon.run_until_idle().await.expect("sync");

    assert_eq!(decision(&w, "reg_h").0.as_deref(), Some("approved"));
    assert_eq!(requests(&w, "/companies/search"), (0, 0));
    assert_eq!(requests(&w, "/batch/read"), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_action_influenced_an_open_direct_deal_credits_the_partner_as_influencing() {
    let w = World::seeded(0).await;
    // The shipped rules with the open-direct action "influenced".
    let config = with_rules(&w, |rules| {
        assert!(rules.contains("action = \"reject\""));
        rules.replacen("action = \"reject\"", "action = \"influenced\"", 1)
    });

    let hooli = w.hs.create(
        "companies",
        props(&[("name", "Hooli"), ("domain", "hooli.example")]),
    );
    let direct = w.hs.create(
        "deals",
        props(&[
            ("dealname", "Hooli platform"),
            ("dealstage", "qualifiedtobuy"),
        ]),
    );
    w.hs.associate("companies", &hooli, "deals", &direct);
    w.ps.upsert_deal(deal("reg_h", "part_1", "gavin@hooli.example"));
    let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    daemon.run_until_idle().await.expect("sync");

    let (status, reason) = decision(&w, "reg_h");
    assert_eq!(status.as_deref(), Some("influenced"), "{reason}");
    assert!(
        reason.contains(&format!("open opportunity {direct} on hooli.example"))
            && reason.contains("credited as influencing"),
        "{reason}"
    );
    let crm =
        w.hs.find("deals", "prm_deal_id", "reg_h")
            .expect("CRM deal");
    assert_eq!(crm["prm_attribution"], "partner_influenced");
    // The direct deal itself is left alone.
    let d =
        w.hs.find("deals", "hs_object_id", &direct)
            .expect("direct deal");
    assert!(d.get("prm_attribution").is_none(), "{d:?}");
}
