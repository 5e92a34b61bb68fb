//! The simulators refuse what their vendors refuse, with the vendors' error shapes, and prmsync
//! copes: HubSpot validates every object's properties and its search limits; Salesforce keeps
//! whole-second `SystemModstamp`s, answers getDeleted for 30 days only and expires query locators.

use prmsync::sim::SimServer;
use prmsync::sim::hubspot::HubSpotSim;
use serde_json::{Value, json};

use crate::harness::{HS_TOKEN, World};
use crate::rules_salesforce::{daemon as salesforce_daemon, salesforce};

fn http() -> reqwest::Client {
    prmsync::connector::http_client(std::time::Duration::from_secs(5))
}

async fn hubspot() -> (HubSpotSim, SimServer) {
    let sim = HubSpotSim::new(HS_TOKEN);
    let server = SimServer::start(sim.router()).await.expect("start sim");
    (sim, server)
}

async fn post(server: &SimServer, path: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(server.url(path))
        .bearer_auth(HS_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// HubSpot's error shape: `category`, `correlationId` (a UUID) and `message`.
fn assert_hubspot_error(e: &Value, category: &str, message: &str) {
    assert_eq!(e["category"], category, "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains(message)),
        "{e}"
    );
    let id = e["correlationId"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 36, "a UUID correlation id: {e}");
}

#[tokio::test]
async fn hubspot_refuses_unknown_properties_and_bad_options_on_every_object() {
    let (sim, server) = hubspot().await;
    for (object, good, bad, why) in [
        (
            "contacts",
            json!({"email": "a@b.example"}),
            json!({"emial": "a@b.example"}),
            "Property \"emial\" does not exist",
        ),
        (
            "companies",
            json!({"name": "Acme"}),
            json!({"type": "FRIEND"}),
            "allowed options",
        ),
        (
            "tasks",
            json!({"hs_timestamp": "2026-03-02T10:00:00Z"}),
            json!({"hs_task_type": "MEETING"}),
            "allowed options",
        ),
        (
            "deals",
            json!({"dealname": "D"}),
            json!({"amount": "lots"}),
            "not a valid number",
        ),
    ] {
        let id_property = format!(
            "prm_{}",
            if object == "tasks" {
                "activity_key"
            } else if object == "contacts" {
                "lead_key"
            } else if object == "companies" {
                "partner_key"
            } else {
                "deal_id"
            }
        );
        let (status, body) = post(
            &server,
            &format!("/crm/v3/objects/{object}/batch/upsert"),
            json!({"inputs": [
                {"id": "k1", "idProperty": id_property, "properties": good},
                {"id": "k2", "idProperty": id_property, "properties": bad},
            ]}),
        )
        .await;
        // HubSpot refuses the whole batch (no `objectWriteTraceId`): nothing is written.
        assert_eq!(status, 400, "{object}: {body}");
        assert_hubspot_error(&body, "VALIDATION_ERROR", why);
        assert_eq!(
            body["errors"][0]["context"]["ids"][0], "k2",
            "{object}: {body}"
        );
        assert_eq!(
            sim.objects(object).len(),
            0,
            "{object}: nothing was written"
        );
        let (status, body) = post(
            &server,
            &format!("/crm/v3/objects/{object}/batch/upsert"),
            json!({"inputs": [{"id": "k1", "idProperty": id_property, "properties": good}]}),
        )
        .await;
        assert_eq!(status, 200, "{object}: {body}");
        assert_eq!(
            sim.objects(object).len(),
            1,
            "{object}: the valid input alone"
        );
    }
}

#[tokio::test]
async fn hubspot_serves_the_properties_it_validates_with() {
    let (_sim, server) = hubspot().await;
    let resp = http()
        .get(server.url("/crm/v3/properties/tasks"))
        .bearer_auth(HS_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let types = body["results"]
        .as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == "hs_task_type"))
        .expect("hs_task_type is listed");
    assert_eq!(types["type"], "enumeration");
    let options: Vec<&str> = types["options"]
        .as_array()
        .map(|o| o.iter().filter_map(|x| x["value"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(options, ["CALL", "EMAIL", "TODO"]);
    let id = body["results"]
        .as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == "hs_object_id"))
        .expect("hs_object_id");
    assert_eq!(id["modificationMetadata"]["readOnlyValue"], true);
}

#[tokio::test]
async fn hubspot_search_refuses_more_filters_than_documented() {
    let (_sim, server) = hubspot().await;
    let filter = json!({"propertyName": "email", "operator": "EQ", "value": "a@b.example"});
    for groups in [
        vec![json!({"filters": [filter]}); 6],
        vec![json!({"filters": vec![filter.clone(); 11]})],
        vec![json!({"filters": vec![filter.clone(); 9]}); 3],
    ] {
        let (status, body) = post(
            &server,
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": groups, "limit": 10}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_hubspot_error(&body, "VALIDATION_ERROR", "Too many filter");
    }
    let (status, _) = post(
        &server,
        "/crm/v3/objects/contacts/search",
        json!({"filterGroups": vec![json!({"filters": vec![filter.clone(); 5]}); 5], "limit": 10}),
    )
    .await;
    assert_eq!(status, 200, "5 groups of 5 filters are allowed");
}

#[tokio::test]
async fn salesforce_get_deleted_answers_for_30_days_only() {
    let (sf, server) = salesforce().await;
    let http = http();
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
        .expect("json");
    let bearer = token["access_token"].as_str().expect("access token");
    let id = sf.insert(
        "Account",
        serde_json::Map::from_iter([("Name".into(), json!("Gone"))]),
    );
    assert!(sf.delete("Account", &id));
    let now = jiff::Timestamp::now();
    let at = |days: i64, mins: i64| {
        (now - jiff::SignedDuration::from_hours(24 * days) - jiff::SignedDuration::from_mins(mins))
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let get = |start: String, end: String| {
        let req = http
            .get(server.url("/services/data/v62.0/sobjects/Account/deleted/"))
            .bearer_auth(bearer)
            .query(&[("start", start), ("end", end)]);
        async move {
            let r = req.send().await.expect("request");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = get(at(31, 0), at(0, -1)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_REPLICATION_DATE", "{body}");
    let (status, body) = get(at(0, 0), at(0, 0)).await;
    assert_eq!(status, 400, "a window under a minute: {body}");
    let (status, body) = get(at(29, 0), at(0, -1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deletedRecords"][0]["id"], id.as_str());
    let earliest = body["earliestDateAvailable"].as_str().unwrap_or_default();
    assert!(earliest > at(31, 0).as_str(), "{earliest}");
}

/// Sales moves every opportunity within the same second (Salesforce keeps whole seconds) while
/// query locators expire after one further page: the reverse read restarts from its keyset and
/// every stage reaches its partner deal once, with no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_locators_and_shared_seconds_lose_no_salesforce_change() {
    const DEALS: usize = 12;
    let w = World::seeded(DEALS).await;
    let (sf, server) = salesforce().await;
    let mappings = crate::rules_salesforce::salesforce_mappings(w.dir.path());
    let d = salesforce_daemon(&w, mappings, &server).await;
    d.run_until_idle().await.expect("first pass");
    let opps = sf.records("Opportunity");
    assert_eq!(opps.len(), DEALS);
    sf.set_page_cap(2);
    sf.expire_locators_after(Some(1));
    for o in &opps {
        let id = o["Id"].as_str().expect("Id");
        assert!(sf.set_field("Opportunity", id, "StageName", json!("Closed Won")));
    }
    d.run_until_idle().await.expect("second pass");
    for deal in w.ps.deals() {
        assert_eq!(deal["stage"], "won", "{}", deal["key"]);
    }
    assert!(
        sf.expired_locators() > 0,
        "a locator expired during the read"
    );
    let conn = rusqlite::Connection::open(w.state_path()).expect("state");
    let dead: i64 = conn
        .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
        .expect("count");
    assert_eq!(dead, 0);
    d.shutdown().await;
}

#[tokio::test]
async fn the_rest_prm_put_replaces_the_record_and_patch_changes_only_what_it_sends() {
    let sim = prmsync::sim::rest::RestPrmSim::new("k");
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let send = |method: reqwest::Method, body: Value| {
        let req = http()
            .request(method, server.url("/api/deals/d1"))
            .header("authorization", "prm-key k")
            .json(&body);
        async move { req.send().await.expect("request").status().as_u16() }
    };
    let d1 = |sim: &prmsync::sim::rest::RestPrmSim| {
        sim.items("deals")
            .into_iter()
            .find(|d| d["id"] == "d1")
            .expect("d1")
    };
    assert_eq!(
        send(reqwest::Method::PUT, json!({"name": "Acme", "amount": "5"})).await,
        200
    );
    assert_eq!(
        send(reqwest::Method::PATCH, json!({"stage": "won"})).await,
        200
    );
    let d = d1(&sim);
    assert_eq!(
        (d["name"].as_str(), d["stage"].as_str()),
        (Some("Acme"), Some("won"))
    );
    assert_eq!(
        send(reqwest::Method::PUT, json!({"stage": "lost"})).await,
        200
    );
    let d = d1(&sim);
    assert_eq!(d["stage"], "lost");
    assert!(d.get("name").is_none(), "PUT replaced the record: {d:?}");
}
