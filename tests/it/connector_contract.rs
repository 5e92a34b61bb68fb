//! One contract suite run against all four connectors through the `Connector` enum, each on its
//! simulator: health, paging, inclusive `since` at a tie boundary, per-record write results, and
//! 429 with `Retry-After` as a typed wait.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prmsync::connector::hubspot::HubSpot;
use prmsync::connector::partnerstack::PartnerStack;
use prmsync::connector::rest::{Paging, RestObject, RestProfile, SinceFormat, UpsertMethod};
use prmsync::connector::salesforce::{Grant, Salesforce};
use prmsync::connector::{Connector, ConnectorError, WriteRequest, http_client};
use prmsync::sim::hubspot::HubSpotSim;
use prmsync::sim::partnerstack::PartnerStackSim;
use prmsync::sim::rest::RestPrmSim;
use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
use prmsync::sim::{Fault, SimServer};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

const RECORDS: usize = 300;

/// One connector wired to its simulator, with the system-specific bits the suite needs.
struct Case {
    name: &'static str,
    conn: Connector,
    object: &'static str,
    seed: Box<dyn Fn(usize)>,
    inject_429: Box<dyn Fn(u64)>,
    /// Valid writes, then one the system refuses.
    writes: Vec<WriteRequest>,
    /// The system refuses the whole batch for that one (HubSpot's 400), not just the record.
    refuses_whole_batch: bool,
    _server: SimServer,
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn req(key: &str, id_property: Option<&str>, fields: Value) -> WriteRequest {
    WriteRequest {
        key: key.into(),
        id_property: id_property.map(str::to_owned),
        target_id: None,
        fields: obj(fields),
    }
}

fn rate(status: u16, secs: u64) -> Fault {
    Fault {
        status,
        retry_after: Some(secs),
    }
}

async fn partnerstack() -> Case {
    let sim = PartnerStackSim::new("k");
    let server = SimServer::start(sim.router()).await.expect("sim");
    let conn = Connector::PartnerStack(PartnerStack::new(
        http_client(Duration::from_secs(5)),
        server.url("/api/v2"),
        SecretString::from("k"),
    ));
    let (a, b) = (sim.clone(), sim.clone());
    Case {
        name: "partnerstack",
        conn,
        object: "deals",
        seed: Box::new(move |i| {
            a.upsert_deal(obj(
                json!({"key": format!("deal_{i}"), "stage": "submitted"}),
            ));
        }),
        inject_429: Box::new(move |s| b.inject([rate(429, s)])),
        writes: vec![
            req("deal_1", None, json!({"stage": "won"})),
            req("deal_2", None, json!({"stage": "approved"})),
            req("deal_3", None, json!({"stage": "not-a-stage"})),
        ],
        refuses_whole_batch: false,
        _server: server,
    }
}

async fn hubspot() -> Case {
    let sim = HubSpotSim::new("t");
    sim.set_search_rate(None); // the suite reads fast; the 4/s limit has its own test
    let server = SimServer::start(sim.router()).await.expect("sim");
    let conn = Connector::HubSpot(HubSpot::new(
        http_client(Duration::from_secs(5)),
        server.url(""),
        SecretString::from("t"),
    ));
    let (a, b) = (sim.clone(), sim.clone());
    let deal = |i: usize, stage: &str| {
        req(
            &format!("deal_{i}"),
            Some("prm_deal_id"),
            json!({"dealname": format!("D{i}"), "dealstage": stage}),
        )
    };
    Case {
        name: "hubspot",
        conn,
        object: "deals",
        seed: Box::new(move |i| {
            a.create(
                "deals",
                BTreeMap::from([("dealname".to_owned(), format!("D{i}"))]),
            );
        }),
        inject_429: Box::new(move |s| b.inject([rate(429, s)])),
        writes: vec![
            deal(1, "closedwon"),
            deal(2, "qualifiedtobuy"),
            deal(3, "nope"),
        ],
        refuses_whole_batch: true,
        _server: server,
    }
}

async fn salesforce() -> Case {
    let sim = SalesforceSim::new(SalesforceAuth {
        client_id: "c".into(),
        client_secret: "s".into(),
        refresh_token: "r".into(),
        rotate: false,
        jwt_public_key: None,
        username: "u".into(),
        token_ttl_ms: 3_600_000,
    });
    let server = SimServer::start(sim.router()).await.expect("sim");
    let conn = Connector::Salesforce(Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        Grant::RefreshToken {
            client_id: "c".into(),
            client_secret: Some(SecretString::from("s")),
            refresh_token: SecretString::from("r"),
        },
        None,
    ));
    sim.set_page_cap(200);
    let (a, b) = (sim.clone(), sim.clone());
    let opp = |i: usize, stage: &str| {
        req(
            &format!("deal_{i}"),
            Some("PRM_Deal_Id__c"),
            json!({"Name": format!("D{i}"), "StageName": stage, "CloseDate": "2027-01-01"}),
        )
    };
    Case {
        name: "salesforce",
        conn,
        object: "Opportunity",
        seed: Box::new(move |i| {
            a.insert(
                "Opportunity",
                obj(json!({"Name": format!("D{i}"), "StageName": "Prospecting", "CloseDate": "2027-01-01"})),
            );
        }),
        inject_429: Box::new(move |s| b.inject([rate(429, s)])),
        writes: vec![
            opp(1, "Closed Won"),
            opp(2, "Qualification"),
            opp(3, "Nope"),
        ],
        refuses_whole_batch: false,
        _server: server,
    }
}

async fn rest() -> Case {
    let sim = RestPrmSim::new("k");
    let server = SimServer::start(sim.router()).await.expect("sim");
    let profile = RestProfile {
        base_url: server.url("/api"),
        auth_header: "Authorization".into(),
        auth_value: SecretString::from("prm-key k"),
        page_size: 100,
        objects: BTreeMap::from([(
            "deals".to_owned(),
            RestObject {
                list_path: "/deals".into(),
                upsert_path: Some("/deals/{id}".into()),
                upsert_method: UpsertMethod::Put,
                items_field: "data.results".into(),
                id_field: "id".into(),
                cursor_field: "updated_at".into(),
                since_param: "updated_since".into(),
                since_format: SinceFormat::EpochMs,
                limit_param: "limit".into(),
                paging: Paging::PageToken {
                    param: "page_token".into(),
                    next_field: "data.next_page_token".into(),
                },
            },
        )]),
    };
    let conn = Connector::Rest(prmsync::connector::rest::Rest::new(
        http_client(Duration::from_secs(5)),
        profile,
    ));
    let (a, b) = (sim.clone(), sim.clone());
    Case {
        name: "rest",
        conn,
        object: "deals",
        seed: Box::new(move |i| {
            a.put(
                "deals",
                &format!("d{i}"),
                obj(json!({"stage": "registered"})),
            )
        }),
        inject_429: Box::new(move |s| b.inject([rate(429, s)])),
        writes: vec![
            req("d1", None, json!({"stage": "won"})),
            req("d2", None, json!({"stage": "approved"})),
            req("d3", None, json!({"stage": "maybe"})),
        ],
        refuses_whole_batch: false,
        _server: server,
    }
}

async fn read_all(c: &Case, since: i64) -> Vec<prmsync::model::Record> {
    let mut page: Option<String> = None;
    let mut out = Vec::new();
    for _ in 0..100 {
        let p = c
            .conn
            .read_changes(c.object, since, &[], page.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{}: read failed: {e}", c.name));
        assert!(
            p.records
                .windows(2)
                .all(|w| (w[0].modified_ms, &w[0].id) <= (w[1].modified_ms, &w[1].id)),
            "{}: a page is oldest first",
            c.name
        );
        out.extend(p.records);
        page = p.next_page;
        if page.is_none() {
            return out;
        }
    }
    panic!("{}: paging never ended", c.name)
}

async fn check(c: Case) {
    c.conn
        .health()
        .await
        .unwrap_or_else(|e| panic!("{}: health: {e}", c.name));
    for i in 0..RECORDS {
        (c.seed)(i);
    }
    let all = read_all(&c, 0).await;
    let ids: BTreeSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), RECORDS, "{}: every record, once", c.name);

    // `since` is inclusive: a record modified exactly at the cursor time is read again, so a
    // record sharing the boundary millisecond with it cannot be skipped.
    let mut stamps: Vec<(i64, String)> =
        all.iter().map(|r| (r.modified_ms, r.id.clone())).collect();
    stamps.sort();
    let (boundary, boundary_id) = stamps[RECORDS / 2].clone();
    let after = read_all(&c, boundary).await;
    assert!(
        after.iter().any(|r| r.id == boundary_id),
        "{}: the boundary record is included",
        c.name
    );
    // Nothing at or after `since` is missing; a system whose filter is coarser (Salesforce
    // datetimes are whole seconds) may return a little more, never less.
    let got: BTreeSet<&str> = after.iter().map(|r| r.id.as_str()).collect();
    assert!(
        stamps
            .iter()
            .filter(|(t, _)| *t >= boundary)
            .all(|(_, id)| got.contains(id.as_str())),
        "{}: every record at or after since",
        c.name
    );
    assert!(
        after.iter().all(|r| r.modified_ms > boundary - 1000),
        "{}: nothing older than the filter's precision",
        c.name
    );

    let results = match c.conn.write(c.object, &c.writes).await {
        Ok(results) => results,
        // HubSpot refuses a whole batch for one bad input (400, nothing written); the writer
        // then sends it in halves, so the good ones go on without it.
        Err(e @ ConnectorError::Permanent(_)) if c.refuses_whole_batch => {
            let good = &c.writes[..c.writes.len() - 1];
            let mut results = c
                .conn
                .write(c.object, good)
                .await
                .unwrap_or_else(|e| panic!("{}: the good ones failed whole: {e}", c.name));
            results.push(Err(e));
            results
        }
        Err(e) => panic!("{}: batch failed whole: {e}", c.name),
    };
    assert_eq!(
        results.len(),
        c.writes.len(),
        "{}: one result per record",
        c.name
    );
    let n = results.len();
    assert!(
        results[..n - 1].iter().all(Result::is_ok),
        "{}: valid records succeed: {results:?}",
        c.name
    );
    assert!(
        matches!(&results[n - 1], Err(ConnectorError::Permanent(_))),
        "{}: the bad record alone fails, permanently: {:?}",
        c.name,
        results[n - 1]
    );

    (c.inject_429)(3);
    let err = c
        .conn
        .read_changes(c.object, 0, &[], None)
        .await
        .expect_err("429 injected");
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(3)),
        "{}: Retry-After is the typed wait: {err}",
        c.name
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn every_connector_keeps_the_contract() {
    let cases = vec![
        partnerstack().await,
        hubspot().await,
        salesforce().await,
        rest().await,
    ];
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 4);
    for c in cases {
        check(c).await;
    }
}
