//! Multi-partner credit through the running engine, checked at both CRM simulators: a deal with a
//! sourcing and an influencing partner carries both roles (HubSpot: deal-to-company labels;
//! Salesforce: `Partner` rows, one primary), a re-run writes nothing new, a role change moves the
//! label or row, and the attribution report counts the influenced pipeline from it.

use std::path::{Path, PathBuf};

use prmsync::app::Daemon;
use prmsync::engine::system_clock;
use serde_json::{Map, Value, json};

use crate::harness::World;
use crate::rules_salesforce::{daemon, deal, opportunity, salesforce};

fn object(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn partnership(key: &str, name: &str) -> Map<String, Value> {
    object(json!({
        "key": key, "status": "active",
        "company": {"name": name, "website": format!("https://{key}.example")},
    }))
}

/// The shipped deal and partner flows for one CRM, with the shipped rules.
fn mappings(dir: &Path, files: &[&str], rules: String) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let out = dir.join("mappings");
    std::fs::create_dir_all(&out).expect("mappings dir");
    for f in files {
        std::fs::copy(root.join(f), out.join(f)).expect("copy flow");
    }
    std::fs::write(out.join(prmsync::rules::RULES_FILE), rules).expect("rules");
    out
}

/// Blue Harbor (part_2) registers the customer first and wins; Northwind (part_1) registers the
/// same customer right after: it is a duplicate and, within 90 days, an influencing partner.
fn register(w: &World) {
    w.ps.upsert_item("partnerships", partnership("part_1", "Northwind"));
    w.ps.upsert_item("partnerships", partnership("part_2", "Blue Harbor"));
    w.ps.upsert_deal(deal("reg_a", "part_2", "pat@initech.example"));
    w.ps.upsert_deal(deal("reg_b", "part_1", "lee@initech.example"));
}

/// `prmsync report attribution --format json` on the state file.
fn report(w: &World) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args([
            "report",
            "attribution",
            "--format",
            "json",
            "--by",
            "partner",
            "--state",
        ])
        .arg(w.state_path())
        .output()
        .expect("run prmsync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report")
}

fn assert_report_counts_the_influence(w: &World) {
    let r = report(w);
    assert_eq!(r["co_influenced"]["deals"], 1, "{r}");
    assert_eq!(r["co_influenced"]["pipeline_cents"], 2_500_000, "{r}");
    let groups = r["groups"].as_array().expect("groups");
    let northwind = groups
        .iter()
        .find(|g| g["group"] == "Northwind (part_1)")
        .unwrap_or_else(|| panic!("Northwind is credited: {r}"));
    assert_eq!(northwind["influenced"]["deals"], 1, "{r}");
    assert_eq!(northwind["influenced"]["pipeline_cents"], 2_500_000, "{r}");
    assert_eq!(northwind["sourced"]["deals"], 0, "{r}");
}

fn hs_id(w: &World, object_type: &str, property: &str, key: &str) -> String {
    w.hs.find(object_type, property, key)
        .and_then(|o| {
            o.get("hs_object_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{object_type} {key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_deal_carries_the_sourcing_and_the_influencing_partner() {
    let w = World::seeded(0).await;
    let sourcing = w.hs.define_label("deals", "companies", "Sourcing partner");
    let influencing =
        w.hs.define_label("deals", "companies", "Influencing partner");
    let referral = w.hs.define_label("deals", "companies", "Referral partner");
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings(
        w.dir.path(),
        &[
            "partnerstack-hubspot-deals.toml",
            "partnerstack-hubspot-companies.toml",
        ],
        prmsync::rules::BUILTIN.1.to_owned(),
    ));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    register(&w);
    d.run_until_idle().await.expect("sync");

    let deal_a = hs_id(&w, "deals", "prm_deal_id", "reg_a");
    let blue = hs_id(&w, "companies", "prm_partner_key", "part_2");
    let north = hs_id(&w, "companies", "prm_partner_key", "part_1");
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &blue),
        [sourcing]
    );
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &north),
        [influencing]
    );
    let deal_b = hs_id(&w, "deals", "prm_deal_id", "reg_b");
    assert!(
        w.hs.association_types("deals", &deal_b, "companies", &north)
            .is_empty(),
        "the duplicate's own deal credits no one"
    );
    assert_report_counts_the_influence(&w);

    // A re-run writes nothing new.
    let requests = |w: &World| {
        w.hs.request_log()
            .iter()
            .filter(|r| r.path.contains("/associations/deals/companies/batch/"))
            .count()
    };
    let before = requests(&w);
    w.ps.upsert_deal(deal("reg_c", "part_3", "x@elsewhere.example"));
    d.run_until_idle().await.expect("another pass");
    assert_eq!(requests(&w), before, "no credit call for unchanged credits");

    // Northwind says it referred the customer: its label moves from influencing to referral.
    let mut b = deal("reg_b", "part_1", "lee@initech.example");
    b.insert("partner_role".into(), json!("referral"));
    w.ps.upsert_deal(b);
    d.run_until_idle().await.expect("role change");
    // (The pair keeps its unlabeled default type, 341, once a label was archived.)
    let labels: Vec<u32> =
        w.hs.association_types("deals", &deal_a, "companies", &north)
            .into_iter()
            .filter(|t| *t != 341)
            .collect();
    assert_eq!(labels, [referral]);
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &blue),
        [sourcing]
    );
    d.shutdown().await;
}

/// The opportunity's `Partner` rows: (account id, role, primary), sorted.
fn partner_rows(
    sf: &prmsync::sim::salesforce::SalesforceSim,
    opp: &str,
) -> Vec<(String, String, bool)> {
    let mut rows: Vec<(String, String, bool)> = sf
        .find("Partner", "OpportunityId", opp)
        .iter()
        .map(|r| {
            (
                r["AccountToId"].as_str().unwrap_or_default().to_owned(),
                r["Role"].as_str().unwrap_or_default().to_owned(),
                r["IsPrimary"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn account(sf: &prmsync::sim::salesforce::SalesforceSim, key: &str) -> String {
    let found = sf.find("Account", "PRM_Partner_Key__c", key);
    assert_eq!(found.len(), 1, "one account for {key}");
    found[0]["Id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_opportunity_carries_the_sourcing_and_the_influencing_partner() {
    let w = World::seeded(0).await;
    let (sf, server) = salesforce().await;
    let rules = prmsync::rules::BUILTIN.1.to_owned();
    let dir = mappings(
        w.dir.path(),
        &[
            "partnerstack-salesforce-opportunities.toml",
            "partnerstack-salesforce-accounts.toml",
        ],
        rules,
    );
    let d = daemon(&w, dir, &server).await;
    register(&w);
    d.run_until_idle().await.expect("sync");

    let opp = opportunity(&sf, "reg_a")["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (blue, north) = (account(&sf, "part_2"), account(&sf, "part_1"));
    let mut want = vec![
        (blue.clone(), "Sourcing Partner".to_owned(), true),
        (north.clone(), "Influencer".to_owned(), false),
    ];
    want.sort();
    assert_eq!(partner_rows(&sf, &opp), want);
    let opp_b = opportunity(&sf, "reg_b")["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(partner_rows(&sf, &opp_b).is_empty());
    assert_report_counts_the_influence(&w);

    // A re-run writes nothing new (no Partner call at all).
    let partner_calls = |sf: &prmsync::sim::salesforce::SalesforceSim| {
        sf.request_log()
            .iter()
            .filter(|r| r.path.contains("/sobjects/Partner"))
            .count()
    };
    let before = partner_calls(&sf);
    w.ps.upsert_deal(deal("reg_c", "part_3", "x@elsewhere.example"));
    d.run_until_idle().await.expect("another pass");
    assert_eq!(partner_calls(&sf), before);
    assert_eq!(partner_rows(&sf, &opp), want);

    // A role change moves the row: Partner rows cannot be updated, so the old one is deleted.
    let mut b = deal("reg_b", "part_1", "lee@initech.example");
    b.insert("partner_role".into(), json!("reseller"));
    w.ps.upsert_deal(b);
    d.run_until_idle().await.expect("role change");
    let mut want = vec![
        (blue, "Sourcing Partner".to_owned(), true),
        (north, "Reseller".to_owned(), false),
    ];
    want.sort();
    assert_eq!(partner_rows(&sf, &opp), want);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_simulator_refuses_what_salesforce_refuses_for_partners() {
    let (sf, server) = salesforce().await;
    let http = prmsync::connector::http_client(std::time::Duration::from_secs(30));
    let token: Value = http
        .post(server.url("/services/oauth2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "3MVG9sim.consumer.key"),
            ("client_secret", "sim-consumer-secret"),
            ("refresh_token", "5Aep.initial"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let bearer = token["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let opp = sf.insert(
        "Opportunity",
        object(json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2027-01-31"})),
    );
    let acct = sf.insert("Account", object(json!({"Name": "Northwind"})));
    let other = sf.insert("Account", object(json!({"Name": "Blue Harbor"})));
    let post = |path: &'static str, body: Value| {
        let (http, bearer, url) = (http.clone(), bearer.clone(), server.url(path));
        async move {
            let r = http
                .post(url)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let partner = "/services/data/v62.0/sobjects/Partner";
    let code = |v: &Value| v[0]["errorCode"].as_str().unwrap_or_default().to_owned();
    for (body, want) in [
        (
            json!({"OpportunityId": opp, "AccountFromId": acct, "AccountToId": other}),
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (json!({"OpportunityId": opp}), "REQUIRED_FIELD_MISSING"),
        (
            json!({"OpportunityId": acct, "AccountToId": other}),
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        (
            json!({"OpportunityId": opp, "AccountToId": acct, "Role": "Kingmaker"}),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            json!({"OpportunityId": opp, "AccountToId": acct, "IsPrimary": "yes"}),
            "JSON_PARSER_ERROR",
        ),
    ] {
        let (status, v) = post(partner, body.clone()).await;
        assert_eq!((status, code(&v)), (400, want.to_owned()), "{body}");
    }
    assert!(sf.records("Partner").is_empty(), "nothing was created");

    // Two primaries in turn: the newer takes the flag.
    let (status, first) = post(
        partner,
        json!({"OpportunityId": opp, "AccountToId": acct, "Role": "Influencer", "IsPrimary": true}),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let (status, _) = post(
        partner,
        json!({"OpportunityId": opp, "AccountToId": other, "Role": "Sourcing Partner", "IsPrimary": true}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        partner_rows(&sf, &opp)
            .iter()
            .filter(|(_, _, primary)| *primary)
            .map(|(a, _, _)| a.clone())
            .collect::<Vec<_>>(),
        [other]
    );
    // OpportunityPartner is read-only, and Partner rows cannot be updated.
    let (status, v) = post(
        "/services/data/v62.0/sobjects/OpportunityPartner",
        json!({"OpportunityId": opp, "AccountToId": acct}),
    )
    .await;
    assert_eq!(
        (status, code(&v).as_str()),
        (400, "INVALID_TYPE_FOR_OPERATION")
    );
    let id = first["id"].as_str().expect("id");
    let r = http
        .patch(server.url(&format!("{partner}/{id}")))
        .bearer_auth(&bearer)
        .json(&json!({"Role": "Reseller"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 400);
}

/// A co-marketing lead as a partner brings it in (PartnerStack `leads`).
fn lead(key: &str, partner: &str, email: &str) -> Map<String, Value> {
    object(json!({
        "key": key, "type": "co_marketing", "email": email, "first_name": "Sam",
        "last_name": "Roe", "company_name": "Initech", "status": "new", "partner_key": partner,
    }))
}

const DAY_MS: i64 = 86_400_000;

/// Blue Harbor (part_2) registers the customer and wins; Summit (part_3) brought in a lead on the
/// same customer 10 days before, and Contoso (part_4) one 200 days before (outside the 90 days).
fn register_with_leads(w: &World) {
    w.ps.upsert_item("partnerships", partnership("part_2", "Blue Harbor"));
    w.ps.upsert_item("partnerships", partnership("part_3", "Summit"));
    w.ps.upsert_item("partnerships", partnership("part_4", "Contoso"));
    let now = jiff::Timestamp::now().as_millisecond();
    w.ps.upsert_item_created(
        "leads",
        lead("L1", "part_3", "sam@eu.initech.example"),
        now - 10 * DAY_MS,
    );
    w.ps.upsert_item_created(
        "leads",
        lead("L2", "part_4", "kim@initech.example"),
        now - 200 * DAY_MS,
    );
    w.ps.upsert_deal(deal("reg_a", "part_2", "pat@initech.example"));
}

/// The report counts the lead's influence under Summit, like a registration's.
fn assert_report_counts_the_lead(w: &World) {
    let r = report(w);
    assert_eq!(r["co_influenced"]["deals"], 1, "{r}");
    let groups = r["groups"].as_array().expect("groups");
    let summit = groups
        .iter()
        .find(|g| g["group"] == "Summit (part_3)")
        .unwrap_or_else(|| panic!("Summit is credited by its lead: {r}"));
    assert_eq!(summit["influenced"]["deals"], 1, "{r}");
    assert_eq!(summit["influenced"]["pipeline_cents"], 2_500_000, "{r}");
    assert!(
        !groups.iter().any(|g| g["group"] == "Contoso (part_4)"),
        "a lead outside the window earns nothing: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_a_partners_lead_on_the_customer_makes_it_influencing() {
    let w = World::seeded(0).await;
    let sourcing = w.hs.define_label("deals", "companies", "Sourcing partner");
    let influencing =
        w.hs.define_label("deals", "companies", "Influencing partner");
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings(
        w.dir.path(),
        &[
            "partnerstack-hubspot-deals.toml",
            "partnerstack-hubspot-companies.toml",
            "partnerstack-hubspot-leads.toml",
        ],
        prmsync::rules::BUILTIN.1.to_owned(),
    ));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    register_with_leads(&w);
    d.run_until_idle().await.expect("sync");

    let deal_a = hs_id(&w, "deals", "prm_deal_id", "reg_a");
    let blue = hs_id(&w, "companies", "prm_partner_key", "part_2");
    let summit = hs_id(&w, "companies", "prm_partner_key", "part_3");
    let contoso = hs_id(&w, "companies", "prm_partner_key", "part_4");
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &blue),
        [sourcing]
    );
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &summit),
        [influencing]
    );
    assert!(
        w.hs.association_types("deals", &deal_a, "companies", &contoso)
            .is_empty(),
        "a lead outside the window earns nothing"
    );
    assert_report_counts_the_lead(&w);
    d.shutdown().await;

    // `registrations show` gives each credit with its reason, the lead cited.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["registrations", "show", "reg_a", "--state"])
        .arg(w.state_path())
        .output()
        .expect("run prmsync");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("partner credits:"), "{text}");
    assert!(
        text.contains("sourced (primary)") && text.contains("part_2 won the registration reg_a"),
        "{text}"
    );
    assert!(
        text.contains("part_3's lead L1 on ")
            && text.contains(
                "was on the same customer, within 90 days of the opportunity's creation on"
            ),
        "{text}"
    );
    assert!(!text.contains("part_4"), "{text}");
    assert!(text.contains("in the CRM: confirmed by the CRM"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_a_partners_lead_on_the_customer_makes_it_influencing() {
    let w = World::seeded(0).await;
    let (sf, server) = salesforce().await;
    let dir = mappings(
        w.dir.path(),
        &[
            "partnerstack-salesforce-opportunities.toml",
            "partnerstack-salesforce-accounts.toml",
            "partnerstack-salesforce-leads.toml",
        ],
        prmsync::rules::BUILTIN.1.to_owned(),
    );
    let d = daemon(&w, dir, &server).await;
    register_with_leads(&w);
    d.run_until_idle().await.expect("sync");

    let opp = opportunity(&sf, "reg_a")["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut want = vec![
        (account(&sf, "part_2"), "Sourcing Partner".to_owned(), true),
        (account(&sf, "part_3"), "Influencer".to_owned(), false),
    ];
    want.sort();
    assert_eq!(
        partner_rows(&sf, &opp),
        want,
        "no row for part_4's old lead"
    );
    assert_report_counts_the_lead(&w);
    d.shutdown().await;
}

/// The rows of the custom partner object on `opp`: (account id, role, primary), sorted.
fn custom_rows(
    sf: &prmsync::sim::salesforce::SalesforceSim,
    opp: &str,
) -> Vec<(String, String, bool)> {
    let mut rows: Vec<(String, String, bool)> = sf
        .find("Partner_Credit__c", "Opportunity__c", opp)
        .iter()
        .map(|r| {
            (
                r["Account__c"].as_str().unwrap_or_default().to_owned(),
                r["Role__c"].as_str().unwrap_or_default().to_owned(),
                r["Primary__c"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_credits_go_to_the_configured_custom_object_instead_of_partner() {
    let w = World::seeded(0).await;
    let (sf, server) = salesforce().await;
    let rules = prmsync::rules::BUILTIN.1.replacen(
        "account_domain = \"Website\"\n",
        "account_domain = \"Website\"\npartner_object = \"Partner_Credit__c\"\n\
         partner_fields = { opportunity = \"Opportunity__c\", account = \"Account__c\", role = \"Role__c\", primary = \"Primary__c\" }\n",
        1,
    );
    assert_ne!(rules, prmsync::rules::BUILTIN.1);
    let dir = mappings(
        w.dir.path(),
        &[
            "partnerstack-salesforce-opportunities.toml",
            "partnerstack-salesforce-accounts.toml",
        ],
        rules,
    );
    let d = daemon(&w, dir, &server).await;
    register(&w);
    d.run_until_idle().await.expect("sync");

    let opp = opportunity(&sf, "reg_a")["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (blue, north) = (account(&sf, "part_2"), account(&sf, "part_1"));
    let mut want = vec![
        (blue.clone(), "Sourcing Partner".to_owned(), true),
        (north.clone(), "Influencer".to_owned(), false),
    ];
    want.sort();
    assert_eq!(custom_rows(&sf, &opp), want);
    assert!(sf.records("Partner").is_empty(), "no Partner row is made");
    let created = |sf: &prmsync::sim::salesforce::SalesforceSim| {
        sf.request_log()
            .iter()
            .filter(|r| r.path.ends_with("/sobjects/Partner_Credit__c"))
            .count()
    };
    assert_eq!(created(&sf), 2);

    // A role change deletes the old row and makes the new one, in the custom object too.
    let mut b = deal("reg_b", "part_1", "lee@initech.example");
    b.insert("partner_role".into(), json!("reseller"));
    w.ps.upsert_deal(b);
    d.run_until_idle().await.expect("role change");
    let mut want = vec![
        (blue, "Sourcing Partner".to_owned(), true),
        (north, "Reseller".to_owned(), false),
    ];
    want.sort();
    assert_eq!(custom_rows(&sf, &opp), want);
    assert_eq!(created(&sf), 3);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_simulator_describes_and_checks_the_custom_partner_object() {
    let (sf, server) = salesforce().await;
    let http = prmsync::connector::http_client(std::time::Duration::from_secs(30));
    let token: Value = http
        .post(server.url("/services/oauth2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "3MVG9sim.consumer.key"),
            ("client_secret", "sim-consumer-secret"),
            ("refresh_token", "5Aep.initial"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let bearer = token["access_token"].as_str().expect("token").to_owned();
    let path = "/services/data/v62.0/sobjects/Partner_Credit__c";
    let describe: Value = http
        .get(server.url(&format!("{path}/describe")))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("describe")
        .json()
        .await
        .expect("describe json");
    assert_eq!(describe["custom"], true);
    let field = |n: &str| {
        describe["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == n).cloned())
            .unwrap_or_else(|| panic!("{n} in {describe}"))
    };
    assert_eq!(field("Opportunity__c")["type"], "reference");
    assert_eq!(field("Primary__c")["type"], "boolean");
    assert_eq!(field("Role__c")["restrictedPicklist"], true);
    assert_eq!(field("Account__c")["nillable"], false);

    let opp = sf.insert(
        "Opportunity",
        object(json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2027-01-31"})),
    );
    let acct = sf.insert("Account", object(json!({"Name": "Northwind"})));
    let code = |v: &Value| v[0]["errorCode"].as_str().unwrap_or_default().to_owned();
    for (body, want) in [
        (
            json!({"Opportunity__c": opp, "Account__c": acct, "Role__c": "Kingmaker"}),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (json!({"Opportunity__c": opp}), "REQUIRED_FIELD_MISSING"),
        (
            json!({"Opportunity__c": acct, "Account__c": acct}),
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        (
            json!({"Opportunity__c": opp, "Account__c": acct, "Primary__c": "yes"}),
            "JSON_PARSER_ERROR",
        ),
        (
            json!({"Opportunity__c": opp, "Account__c": acct, "Weight__c": 1}),
            "INVALID_FIELD",
        ),
    ] {
        let r = http
            .post(server.url(path))
            .bearer_auth(&bearer)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!((status, code(&v)), (400, want.to_owned()), "{body}");
    }
    assert!(sf.records("Partner_Credit__c").is_empty());
    let r = http
        .post(server.url(path))
        .bearer_auth(&bearer)
        .json(&json!({"Opportunity__c": opp, "Account__c": acct, "Role__c": "Influencer", "Primary__c": false}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(sf.records("Partner_Credit__c").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_a_partners_activity_on_the_customer_makes_it_influencing() {
    let w = World::seeded(0).await;
    let sourcing = w.hs.define_label("deals", "companies", "Sourcing partner");
    let influencing =
        w.hs.define_label("deals", "companies", "Influencing partner");
    // Activity evidence, its customer read from the action's `customer.email`.
    let rules = prmsync::rules::BUILTIN.1.replacen(
        r#"influence_from = ["registration", "lead"]"#,
        "influence_from = [\"registration\", \"activity\"]\n\
         activity = { customer = [\"customer.email\"] }",
        1,
    );
    assert_ne!(rules, prmsync::rules::BUILTIN.1);
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings(
        w.dir.path(),
        &[
            "partnerstack-hubspot-deals.toml",
            "partnerstack-hubspot-companies.toml",
            "partnerstack-hubspot-tasks.toml",
        ],
        rules,
    ));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    w.ps.upsert_item("partnerships", partnership("part_2", "Blue Harbor"));
    w.ps.upsert_item("partnerships", partnership("part_3", "Summit"));
    w.ps.upsert_item("partnerships", partnership("part_4", "Contoso"));
    let action = |key: &str, partner: &str, email: &str| {
        object(json!({
            "key": key, "partnership_key": partner, "type": "meeting_held", "value": 1,
            "archived": false, "customer": {"email": email},
        }))
    };
    // Summit held a meeting with the customer; Contoso's meeting was with someone else.
    w.ps.upsert_item("actions", action("A1", "part_3", "cfo@initech.example"));
    w.ps.upsert_item("actions", action("A2", "part_4", "cfo@globex.example"));
    w.ps.upsert_deal(deal("reg_a", "part_2", "pat@initech.example"));
    d.run_until_idle().await.expect("sync");

    let deal_a = hs_id(&w, "deals", "prm_deal_id", "reg_a");
    let blue = hs_id(&w, "companies", "prm_partner_key", "part_2");
    let summit = hs_id(&w, "companies", "prm_partner_key", "part_3");
    let contoso = hs_id(&w, "companies", "prm_partner_key", "part_4");
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &blue),
        [sourcing]
    );
    assert_eq!(
        w.hs.association_types("deals", &deal_a, "companies", &summit),
        [influencing]
    );
    assert!(
        w.hs.association_types("deals", &deal_a, "companies", &contoso)
            .is_empty(),
        "an action on another customer earns nothing"
    );
    d.shutdown().await;
}
