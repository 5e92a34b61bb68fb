//! Match rules end to end: partner organisations whose company already exists in HubSpot (same
//! web domain) are linked to it and updated, never duplicated; ambiguous matches go to the dead
//! letters naming every candidate; a failed lookup creates nothing and the next pass links.

use std::collections::BTreeMap;
use std::path::Path;

use prmsync::app::Daemon;
use prmsync::engine::system_clock;
use serde_json::{Map, Value, json};

use crate::harness::World;

const FLOW: &str = "partner-organisation";

fn partner(key: &str, name: &str, website: &str) -> Map<String, Value> {
    json!({
        "key": key, "status": "active",
        "company": {"name": name, "website": website}, "group": {"name": "Gold"},
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn company(name: &str, domain: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("name".to_owned(), name.to_owned()),
        ("domain".to_owned(), domain.to_owned()),
    ])
}

fn prop<'a>(o: &'a Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The flow's link for `source_id`: its target id, read from the state file.
fn link_target(state: &Path, source_id: &str) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open state read-only");
    conn.query_row(
        "SELECT target_id FROM links WHERE flow = ?1 AND source_id = ?2",
        [FLOW, source_id],
        |r| r.get(0),
    )
    .unwrap_or(None)
}

/// Every dead letter's (record id, reason).
fn dead_letters(state: &Path) -> Vec<(String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open state read-only");
    let mut stmt = conn
        .prepare("SELECT record_id, reason FROM dead_letters ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The simulators and a daemon running only the fixture flow (tests/fixtures/mappings-match).
async fn world() -> (World, Daemon) {
    let w = World::seeded(0).await;
    let mut config = w.config();
    config.daemon.mappings_dir =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-match"));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    (w, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_company_with_the_same_domain_is_linked_and_updated_not_duplicated() {
    let (w, d) = world().await;
    let acme =
        w.hs.create("companies", company("ACME (old)", "www.Acme.example"));
    let other = w.hs.create("companies", company("Other", "other.example"));
    w.ps.upsert_item(
        "partnerships",
        partner("part_7", "Acme Partners", "https://acme.example/partners"),
    );
    w.ps.upsert_item(
        "partnerships",
        partner("part_8", "Newco", "https://newco.example"),
    );
    d.run_until_idle().await.expect("sync");

    let companies = w.hs.objects("companies");
    assert_eq!(companies.len(), 3, "one new company (newco), no duplicate");
    let linked = companies
        .iter()
        .find(|c| prop(c, "hs_object_id") == acme)
        .expect("acme kept");
    assert_eq!(prop(linked, "prm_partner_key"), "part_7", "external id set");
    assert_eq!(
        prop(linked, "name"),
        "Acme Partners",
        "updated from the PRM"
    );
    assert_eq!(prop(linked, "prm_partner_tier"), "gold");
    let untouched = companies
        .iter()
        .find(|c| prop(c, "hs_object_id") == other)
        .expect("other kept");
    assert_eq!(prop(untouched, "prm_partner_key"), "");
    let writes = w.hs.writes("companies");
    assert_eq!(writes.get("part_7").map_or(0, |c| c.0), 0, "{writes:?}");
    assert_eq!(writes.get(&acme).map(|c| c.0), Some(0), "updated by id");
    assert!(
        w.hs.request_log()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/crm/v3/objects/companies/batch/update"),
        "linking uses the documented by-id batch/update"
    );
    assert_eq!(writes.get("part_8").map(|c| c.0), Some(1), "newco created");
    assert_eq!(
        link_target(&w.state_path(), "part_7").as_deref(),
        Some(acme.as_str())
    );

    // Later changes upsert by the external id the match wrote, and hit the same record.
    w.ps.upsert_item(
        "partnerships",
        partner(
            "part_7",
            "Acme Partners Intl",
            "https://acme.example/partners",
        ),
    );
    d.run_until_idle().await.expect("second pass");
    assert_eq!(w.hs.objects("companies").len(), 3);
    let now = w.hs.find("companies", "prm_partner_key", "part_7").unwrap();
    assert_eq!(prop(&now, "hs_object_id"), acme);
    assert_eq!(prop(&now, "name"), "Acme Partners Intl");
    assert_eq!(w.hs.writes("companies")["part_7"], (0, 1));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_is_linked_to_one_partner_only() {
    let (w, d) = world().await;
    // Already paired with a partner prmsync does not know yet: not a match for anyone else.
    let mut taken = company("Taken", "taken.example");
    taken.insert("prm_partner_key".into(), "part_1".into());
    let taken = w.hs.create("companies", taken);
    let shared =
        w.hs.create("companies", company("Shared", "shared.example"));
    w.ps.upsert_item(
        "partnerships",
        partner("part_2", "Taken Too", "taken.example"),
    );
    // Two partners with one domain in one batch: the first links, the second is created.
    w.ps.upsert_item(
        "partnerships",
        partner("part_3", "Shared A", "shared.example"),
    );
    w.ps.upsert_item(
        "partnerships",
        partner("part_4", "Shared B", "shared.example"),
    );
    d.run_until_idle().await.expect("sync");

    let state = w.state_path();
    let t2 = link_target(&state, "part_2").expect("part_2 linked");
    assert_ne!(t2, taken, "a paired company is not taken over");
    let (t3, t4) = (link_target(&state, "part_3"), link_target(&state, "part_4"));
    assert_eq!(t3.as_deref(), Some(shared.as_str()));
    assert!(t4.is_some() && t4 != t3, "{t3:?} {t4:?}");
    let owner = w.hs.find("companies", "hs_object_id", &taken).unwrap();
    assert_eq!(prop(&owner, "prm_partner_key"), "part_1");
    assert_eq!(
        w.hs.objects("companies").len(),
        4,
        "two created, none duplicated"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_existing_matches_go_to_the_dead_letters_naming_both() {
    let (w, d) = world().await;
    let a = w.hs.create("companies", company("Dup A", "dup.example"));
    let b =
        w.hs.create("companies", company("Dup B", "WWW.Dup.example"));
    w.ps.upsert_item(
        "partnerships",
        partner("part_9", "Dup Partners", "http://dup.example"),
    );
    d.run_until_idle().await.expect("sync");

    assert_eq!(w.hs.objects("companies").len(), 2, "nothing created");
    assert!(
        w.hs.find("companies", "prm_partner_key", "part_9")
            .is_none()
    );
    assert_eq!(w.hs.stats().created, 0);
    let dead = dead_letters(&w.state_path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (record, reason) = &dead[0];
    assert_eq!(record, "part_9");
    assert!(
        reason.contains(&a) && reason.contains(&b),
        "names both: {reason}"
    );
    assert!(reason.contains("domain"), "{reason}");
    assert_eq!(link_target(&w.state_path(), "part_9"), None);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_creates_nothing_and_the_next_pass_links() {
    let (w, d) = world().await;
    d.run_until_idle().await.expect("initial pass");
    let acme = w.hs.create("companies", company("Acme", "acme.example"));
    w.ps.upsert_item(
        "partnerships",
        partner("part_7", "Acme Partners", "acme.example"),
    );
    // More failures than the engine's quick retries (3 attempts): the pass gives up on the batch.
    w.hs.fail_match_searches(3);

    let r = d.engine.tick().await.expect("tick");
    assert!(r.poll_errors >= 1, "the failed lookup is reported: {r:?}");
    assert_eq!(w.hs.stats().created, 0, "no create while the lookup fails");
    assert_eq!(w.hs.objects("companies").len(), 1);
    let status = d.engine.store().status(0).await.unwrap();
    assert!(status.inbox_pending >= 1, "the change waits in the inbox");
    assert_eq!(status.dead_letters, 0);
    assert!(
        w.hs.find("companies", "prm_partner_key", "part_7")
            .is_none()
    );

    d.run_until_idle().await.expect("next pass");
    assert_eq!(w.hs.stats().created, 0, "still no duplicate");
    assert_eq!(w.hs.objects("companies").len(), 1);
    let linked = w.hs.find("companies", "prm_partner_key", "part_7").unwrap();
    assert_eq!(prop(&linked, "hs_object_id"), acme);
    assert_eq!(
        link_target(&w.state_path(), "part_7").as_deref(),
        Some(acme.as_str())
    );
    assert_eq!(d.engine.store().status(0).await.unwrap().inbox_pending, 0);
    d.shutdown().await;
}

/// `prmsync plan` makes the same read-only search and counts links, skips and ambiguities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_counts_what_match_rules_would_do() {
    let w = World::seeded(0).await;
    let acme = w.hs.create("companies", company("Acme", "acme.example"));
    w.hs.create("companies", company("Dup A", "dup.example"));
    w.hs.create("companies", company("Dup B", "dup.example"));
    w.ps.upsert_item("partnerships", partner("part_1", "Acme", "acme.example"));
    w.ps.upsert_item("partnerships", partner("part_2", "Dup", "dup.example"));
    w.ps.upsert_item("partnerships", partner("part_3", "New", "new.example"));
    let mut config = w.config();
    config.daemon.mappings_dir =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-match"));
    let before = w.hs.stats();
    let plans = prmsync::app::plan(&config, None).await.expect("dry run");
    assert_eq!(plans.len(), 1);
    let p = &plans[0];
    assert_eq!(
        (p.read, p.would_link, p.would_fail_match, p.would_create),
        (3, 1, 1, 1),
        "{p:?}"
    );
    let linked = p
        .samples
        .iter()
        .find(|s| s.outcome == "would_link")
        .unwrap();
    assert!(linked.detail.contains(&acme), "{linked:?}");
    let after = w.hs.stats();
    assert_eq!(
        (after.batch_upserts, after.created),
        (before.batch_upserts, 0),
        "nothing written"
    );
    assert!(!w.state_path().exists(), "no state file made");
}

/// A Salesforce accounts flow pairs a partner with the Account whose Website has the
/// same domain (stored with scheme and `www.`), writing by the Account's Id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_accounts_are_matched_by_website_domain() {
    use prmsync::config::{CrmConfig, SalesforceAuthConfig, SalesforceConfig};
    use prmsync::sim::SimServer;
    use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
    use secrecy::SecretString;

    let w = World::seeded(0).await;
    let sim = SalesforceSim::new(SalesforceAuth {
        client_id: "cid".into(),
        client_secret: "secret".into(),
        refresh_token: "5Aep.r".into(),
        rotate: false,
        jwt_public_key: None,
        username: "u@example.com".into(),
        token_ttl_ms: 3_600_000,
    });
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let mut config = w.config();
    config.daemon.mappings_dir = Some(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-match-salesforce"),
    );
    config.daemon.state_key = Some(SecretString::from("state-key"));
    config.crm = CrmConfig::Salesforce(SalesforceConfig {
        login_url: server.url(""),
        auth: SalesforceAuthConfig::RefreshToken {
            client_id: "cid".into(),
            client_secret: Some(SecretString::from("secret")),
            refresh_token: SecretString::from("5Aep.r"),
        },
        audience: None,
        rate_limit: None,
    });
    let site = json!({"Name": "ACME (old)", "Website": "https://www.acme.example"});
    let acme = sim.insert("Account", site.as_object().cloned().unwrap_or_default());
    w.ps.upsert_item(
        "partnerships",
        partner("part_7", "Acme Partners", "acme.example"),
    );
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    d.run_until_idle().await.expect("sync");
    let accounts = sim.records("Account");
    assert_eq!(accounts.len(), 1, "no duplicate: {accounts:?}");
    assert_eq!(prop(&accounts[0], "Id"), acme);
    assert_eq!(prop(&accounts[0], "PRM_Partner_Key__c"), "part_7");
    assert_eq!(prop(&accounts[0], "Name"), "Acme Partners");
    // The next change upserts by the external id the match wrote.
    w.ps.upsert_item(
        "partnerships",
        partner("part_7", "Acme Partners Intl", "acme.example"),
    );
    d.run_until_idle().await.expect("second pass");
    let accounts = sim.records("Account");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(prop(&accounts[0], "Name"), "Acme Partners Intl");
    assert!(dead_letters(&w.state_path()).is_empty());
    d.shutdown().await;
}

/// The typed lookup against each CRM simulator: chunked, case-insensitive, bounded.
mod lookup {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use prmsync::connector::hubspot::HubSpot;
    use prmsync::connector::salesforce::{Grant, Salesforce};
    use prmsync::connector::{Connector, http_client};
    use prmsync::sim::SimServer;
    use prmsync::sim::hubspot::HubSpotSim;
    use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
    use secrecy::SecretString;
    use serde_json::json;

    fn ids(found: &[prmsync::connector::MatchCandidate]) -> Vec<&str> {
        found.iter().map(|c| c.id.as_str()).collect()
    }

    #[tokio::test]
    async fn hubspot_finds_matches_in_chunks_ignoring_case() {
        let sim = HubSpotSim::new("pat-sim");
        sim.set_search_rate(None);
        let server = SimServer::start(sim.router()).await.expect("start sim");
        let conn = Connector::HubSpot(HubSpot::new(
            http_client(Duration::from_secs(5)),
            server.url(""),
            SecretString::from("pat-sim"),
        ));
        let domain = |d: &str| BTreeMap::from([("domain".to_owned(), d.to_owned())]);
        let a = sim.create("companies", domain("Acme.example"));
        let b = sim.create("companies", domain("acme.example"));
        let c = sim.create("companies", domain("v149.example"));
        sim.create("companies", domain("unrelated.example"));
        let mut values: Vec<String> = (0..150).map(|i| format!("v{i}.example")).collect();
        values.push("acme.example".into());
        let before = sim.stats().searches;
        let found = conn
            .find_matches("companies", "domain", &values, &[])
            .await
            .expect("lookup");
        assert_eq!(sim.stats().searches - before, 2, "100 values per search");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(ids(&found["acme.example"]), [a.as_str(), b.as_str()]);
        assert_eq!(ids(&found["v149.example"]), [c.as_str()]);
        assert!(found["acme.example"].iter().all(|m| m.created_ms > 0));
        let none = conn
            .find_matches("companies", "domain", &[], &[])
            .await
            .expect("no values");
        assert!(none.is_empty());
        assert_eq!(sim.stats().searches - before, 2, "no values, no call");
    }

    #[tokio::test]
    async fn salesforce_finds_matches_with_escaped_values() {
        let sim = SalesforceSim::new(SalesforceAuth {
            client_id: "cid".into(),
            client_secret: "secret".into(),
            refresh_token: "5Aep.r".into(),
            rotate: false,
            jwt_public_key: None,
            username: "u@example.com".into(),
            token_ttl_ms: 3_600_000,
        });
        let server = SimServer::start(sim.router()).await.expect("start sim");
        let conn = Connector::Salesforce(Salesforce::new(
            http_client(Duration::from_secs(5)),
            &server.url(""),
            Grant::RefreshToken {
                client_id: "cid".into(),
                client_secret: Some(SecretString::from("secret")),
                refresh_token: SecretString::from("5Aep.r"),
            },
            None,
        ));
        let account = |site: &str| {
            json!({"Name": "A", "Website": site})
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let a = sim.insert("Account", account("obrien.example"));
        let b = sim.insert("Account", account("OBRIEN.example"));
        let q = sim.insert("Account", account("o'brien\\co.example"));
        sim.insert("Account", account("other.example"));
        let values = vec![
            "obrien.example".to_owned(),
            "o'brien\\co.example".to_owned(),
            "x') OR (Name = 'A".to_owned(),
        ];
        let found = conn
            .find_matches("Account", "Website", &values, &["Name".into()])
            .await
            .expect("lookup");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(ids(&found["obrien.example"]), [a.as_str(), b.as_str()]);
        assert_eq!(ids(&found["o'brien\\co.example"]), [q.as_str()]);
        assert_eq!(
            found["obrien.example"][0].fields["Name"],
            json!("A"),
            "also read"
        );
        assert!(
            conn.find_matches("Account", "Website) OR (Name", &values, &[])
                .await
                .is_err(),
            "field names are checked"
        );
    }
}
