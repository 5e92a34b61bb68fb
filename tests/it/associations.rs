//! HubSpot associations through the daemon, checked at the simulator: a deal with its partner's
//! company (by a portal label) and a task with its company (by type id), made once both
//! records exist; an association whose other record is not synced yet waits and is made when it
//! is; the simulator refuses what HubSpot refuses.

use std::path::{Path, PathBuf};

use prmsync::app::Daemon;
use prmsync::engine::system_clock;
use serde_json::{Map, Value, json};

use crate::harness::{HS_TOKEN, World};

const SOURCING: &str = "Sourcing partner";

/// A mappings folder with the shipped HubSpot deal, company and task flows; the deal flow gets
/// an association with the partner's company by the portal's label.
fn mappings(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let out = dir.join("mappings");
    std::fs::create_dir_all(&out).expect("mappings dir");
    for f in [
        "partnerstack-hubspot-companies.toml",
        "partnerstack-hubspot-tasks.toml",
    ] {
        std::fs::copy(root.join(f), out.join(f)).expect("copy flow");
    }
    let deals =
        std::fs::read_to_string(root.join("partnerstack-hubspot-deals.toml")).expect("deal flow");
    let extra = format!(
        "\n[[association]]\nflow = \"partner-organisation\"\nsource = \"partner_key\"\nlabel = \"{SOURCING}\"\n"
    );
    std::fs::write(
        out.join("partnerstack-hubspot-deals.toml"),
        format!("{deals}{extra}"),
    )
    .expect("write deal flow");
    out
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn id_of(w: &World, object_type: &str, property: &str, key: &str) -> String {
    let o = w.hs.find(object_type, property, key).expect(key);
    o.get("hs_object_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The ledger's (action, detail) lines for one source record.
fn ledger(w: &World, source_id: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(w.state_path()).expect("state file");
    let mut stmt = conn
        .prepare("SELECT action, COALESCE(detail, '') FROM ledger WHERE source_id = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([source_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deals_and_tasks_are_associated_once_both_records_exist() {
    let w = World::seeded(0).await;
    let label_id = w.hs.define_label("deals", "companies", SOURCING);
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings(w.dir.path()));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");

    // The partner's deal and action arrive before the partner's organisation is synced.
    w.ps.upsert_deal(object(json!({
        "key": "deal_1", "account_name": "Initech", "amount": 2_500_000,
        "stage": "submitted", "partner_key": "part_7", "source": "partner",
    })));
    w.ps.upsert_item(
        "actions",
        object(json!({
            "key": "act_1", "partnership_key": "part_7", "type": "meeting_held", "value": 1,
        })),
    );
    d.run_until_idle().await.expect("first pass");
    let deal = id_of(&w, "deals", "prm_deal_id", "deal_1");
    let task = id_of(&w, "tasks", "prm_activity_key", "act_1");
    assert!(w.hs.associations("deals", "companies").is_empty());
    assert!(w.hs.associations("tasks", "companies").is_empty());

    // The partner's organisation is synced: the waiting associations are made.
    w.ps.upsert_item(
        "partnerships",
        object(json!({
            "key": "part_7", "status": "active",
            "company": {"name": "Acme Partners", "website": "https://acme.example"},
        })),
    );
    d.run_until_idle().await.expect("second pass");
    let company = id_of(&w, "companies", "prm_partner_key", "part_7");
    assert_eq!(
        w.hs.associations("deals", "companies"),
        [(deal.clone(), company.clone())]
    );
    assert_eq!(
        w.hs.association_types("deals", &deal, "companies", &company),
        [label_id],
        "the deal carries the portal's label"
    );
    assert_eq!(
        w.hs.associations("tasks", "companies"),
        [(task.clone(), company.clone())]
    );
    assert_eq!(
        w.hs.association_types("tasks", &task, "companies", &company),
        [192]
    );
    let lines = ledger(&w, "deal_1");
    assert!(
        lines.iter().any(|(a, detail)| a == "associated"
            && detail.contains(&company)
            && detail.contains(SOURCING)),
        "{lines:?}"
    );

    // Another pass makes nothing again.
    let made = w.hs.stats().associations_created;
    w.ps.upsert_deal(object(json!({
        "key": "deal_1", "account_name": "Initech", "amount": 2_600_000,
        "stage": "submitted", "partner_key": "part_7", "source": "partner",
    })));
    d.run_until_idle().await.expect("third pass");
    assert_eq!(w.hs.stats().associations_created, made);
    d.shutdown().await;
}

#[tokio::test]
async fn a_label_the_portal_lacks_is_refused_and_recorded() {
    let w = World::seeded(0).await;
    // No label defined in the portal.
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings(w.dir.path()));
    let d = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    w.ps.upsert_item(
        "partnerships",
        object(json!({"key": "part_7", "status": "active", "company": {"name": "Acme"}})),
    );
    w.ps.upsert_deal(object(json!({
        "key": "deal_1", "account_name": "Initech", "stage": "submitted", "partner_key": "part_7",
    })));
    d.run_until_idle().await.expect("pass");
    assert!(w.hs.associations("deals", "companies").is_empty());
    let lines = ledger(&w, "deal_1");
    assert!(
        lines.iter().any(|(a, detail)| a == "association_failed"
            && detail.contains("no association label \"Sourcing partner\"")),
        "{lines:?}"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn the_simulator_refuses_what_hubspot_refuses() {
    let w = World::seeded(0).await;
    let deal =
        w.hs.create("deals", [("dealname".to_owned(), "D".to_owned())].into());
    let company =
        w.hs.create("companies", [("name".to_owned(), "C".to_owned())].into());
    let http = prmsync::connector::http_client(std::time::Duration::from_secs(5));
    let create = |types: Value, to: &str| {
        let body = json!({"inputs": [{"from": {"id": deal}, "to": {"id": to}, "types": types}]});
        http.post(
            w.hs_server
                .url("/crm/v4/associations/deals/companies/batch/create"),
        )
        .bearer_auth(HS_TOKEN)
        .json(&body)
        .send()
    };
    let typed = |category: &str, id: u32| json!([{"associationCategory": category, "associationTypeId": id}]);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            create(typed("HUBSPOT_DEFINED", 341), &company)
                .await
                .expect("sent")
        ),
        201
    );
    // A type the pair does not have (216 is task to deal), an unknown label id, a bad category.
    assert_eq!(
        status(
            create(typed("HUBSPOT_DEFINED", 216), &company)
                .await
                .expect("sent")
        ),
        400
    );
    assert_eq!(
        status(
            create(typed("USER_DEFINED", 999), &company)
                .await
                .expect("sent")
        ),
        400
    );
    assert_eq!(
        status(create(typed("HUBSPOT", 341), &company).await.expect("sent")),
        422
    );
    // A record that does not exist: 207 with the error.
    let missing = create(typed("HUBSPOT_DEFINED", 341), "987654")
        .await
        .expect("sent");
    assert_eq!(missing.status().as_u16(), 207);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["numErrors"], 1);
    assert_eq!(
        w.hs.associations("deals", "companies"),
        [(deal.clone(), company.clone())]
    );
    // The labels: HubSpot's own, then the portal's.
    let id = w.hs.define_label("deals", "companies", SOURCING);
    let labels: Value = http
        .get(
            w.hs_server
                .url("/crm/v4/associations/deals/companies/labels"),
        )
        .bearer_auth(HS_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        labels["results"],
        json!([
            {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": null},
            {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
            {"category": "USER_DEFINED", "typeId": id, "label": SOURCING},
        ])
    );
}
