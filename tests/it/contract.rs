//! Contract tests: what the connectors really send and what the simulators really answer,
//! captured on the wire while the shipped flows run (and while faults are injected), is checked
//! against the JSON Schemas in `tests/contract/`, which are written from CONTRACTS.md and the
//! Salesforce OpenAPI subset, never from prmsync's own wire types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use prmsync::connector::hubspot::HubSpot;
use prmsync::connector::partnerstack::PartnerStack;
use prmsync::connector::salesforce::{Grant, Salesforce};
use prmsync::connector::{Connector, ConnectorError, WriteRequest, http_client};
use prmsync::sim::hubspot::HubSpotSim;
use prmsync::sim::partnerstack::PartnerStackSim;
use prmsync::sim::rest::RestPrmSim;
use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
use prmsync::sim::{Fault, SimServer, seed};
use regex::Regex;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::harness::{HS_TOKEN, PS_KEY, World};
use crate::shipped;

/// One request and its answer as they crossed the wire.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    /// The query string as an object of strings (`None`: no query).
    query: Option<Value>,
    /// The body: JSON, or a form as an object of strings (`None`: empty).
    request: Option<Value>,
    status: u16,
    response: Option<Value>,
}

/// Records every exchange that passes through the routers it wraps.
#[derive(Debug, Clone, Default)]
struct Wire(Arc<Mutex<Vec<Exchange>>>);

impl Wire {
    /// `router` with every exchange recorded (the simulators' inspection routes excepted).
    fn around(&self, router: Router) -> Router {
        let wire = self.clone();
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let wire = wire.clone();
                async move { wire.record(req, next).await }
            },
        ))
    }

    async fn record(&self, req: Request, next: Next) -> Response {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(form_object);
        let form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("request body");
        let request = body_value(&bytes, form);
        let resp = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("response body");
        if !path.starts_with("/_sim") {
            self.0.lock().expect("wire").push(Exchange {
                method,
                path,
                query,
                request,
                status: parts.status.as_u16(),
                response: body_value(&bytes, false),
            });
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.0.lock().expect("wire").clone()
    }
}

/// `a=1&b=2` as `{"a": "1", "b": "2"}`.
fn form_object(text: &str) -> Value {
    let url = reqwest::Url::parse(&format!("http://form.invalid/?{text}")).expect("form parses");
    Value::Object(
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect(),
    )
}

/// A body as JSON (a form as an object of strings); text that is not JSON stays a string, so a
/// schema that wants an object refuses it.
fn body_value(bytes: &[u8], form: bool) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    if form {
        return Some(form_object(&text));
    }
    Some(serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(text.into_owned())))
}

/// One call of a contract file's `x-routes`.
#[derive(Debug)]
struct Route {
    method: String,
    path: Regex,
    request: Option<String>,
    query: Option<String>,
    /// Status → the schema of the answer's body (`None`: no body).
    responses: BTreeMap<u16, Option<String>>,
}

/// A vendor's contract: its calls and the compiled schemas of its `$defs`.
struct Contract {
    name: String,
    routes: Vec<Route>,
    schemas: jsonschema::ValidatorMap,
}

impl Contract {
    fn load(name: &str) -> Contract {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/contract/{name}.json"));
        let text = std::fs::read_to_string(&path).expect("contract file");
        let doc: Value = serde_json::from_str(&text).expect("contract is JSON");
        let schemas = jsonschema::validator_map_for(&doc).expect("contract schemas compile");
        let text_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let routes = doc["x-routes"]
            .as_array()
            .expect("x-routes")
            .iter()
            .map(|r| Route {
                method: text_of(r, "method").expect("method"),
                path: Regex::new(&text_of(r, "path").expect("path")).expect("path regex"),
                request: text_of(r, "request"),
                query: text_of(r, "query"),
                responses: r["responses"]
                    .as_object()
                    .expect("responses")
                    .iter()
                    .map(|(s, schema)| {
                        (
                            s.parse().expect("status"),
                            schema.as_str().map(str::to_owned),
                        )
                    })
                    .collect(),
            })
            .collect();
        let c = Contract {
            name: name.to_owned(),
            routes,
            schemas,
        };
        for r in &c.routes {
            let names = r
                .request
                .iter()
                .chain(&r.query)
                .chain(r.responses.values().flatten());
            for n in names {
                assert!(c.schema(n).is_some(), "{name}: no $defs/{n}");
            }
        }
        c
    }

    fn schema(&self, def: &str) -> Option<&jsonschema::Validator> {
        self.schemas.get(&format!("#/$defs/{def}"))
    }

    /// Why `value` is not a `def` (empty: it is).
    fn violations(&self, def: &str, value: &Value) -> Vec<String> {
        let schema = self.schema(def).expect("schema exists (checked at load)");
        schema
            .iter_errors(value)
            .map(|e| format!("{def} at {}: {e}", e.instance_path()))
            .collect()
    }

    /// Every exchange checked against its call's schemas; returns the failures and which
    /// (route, status) pairs were seen.
    fn check(&self, exchanges: &[Exchange]) -> (Vec<String>, BTreeSet<(usize, u16)>) {
        let mut failures = Vec::new();
        let mut seen = BTreeSet::new();
        for x in exchanges {
            let at = format!("{} {} {} -> {}", self.name, x.method, x.path, x.status);
            let Some((i, route)) = self
                .routes
                .iter()
                .enumerate()
                .find(|(_, r)| r.method == x.method && r.path.is_match(&x.path))
            else {
                failures.push(format!("{at}: no call in the contract"));
                continue;
            };
            seen.insert((i, x.status));
            let mut fail = |why: String| failures.push(format!("{at}: {why}"));
            match (&route.request, &x.request) {
                (Some(def), Some(body)) => {
                    self.violations(def, body).into_iter().for_each(&mut fail)
                }
                (Some(def), None) => fail(format!("request: no body, the contract wants {def}")),
                (None, Some(body)) => {
                    fail(format!("request: a body the call takes none of: {body}"))
                }
                (None, None) => {}
            }
            match (&route.query, &x.query) {
                (Some(def), q) => {
                    let q = q.clone().unwrap_or_else(|| json!({}));
                    self.violations(def, &q).into_iter().for_each(&mut fail);
                }
                (None, Some(q)) => fail(format!("query: the call takes none: {q}")),
                (None, None) => {}
            }
            match (route.responses.get(&x.status), &x.response) {
                (None, _) => fail("answer: a status the contract does not list".into()),
                (Some(Some(def)), Some(body)) => {
                    self.violations(def, body).into_iter().for_each(&mut fail);
                }
                (Some(Some(def)), None) => {
                    fail(format!("answer: no body, the contract wants {def}"))
                }
                (Some(None), Some(body)) => fail(format!("answer: a body where none is: {body}")),
                (Some(None), None) => {}
            }
        }
        (failures, seen)
    }

    /// Checks `exchanges`, and that every call and status the contract lists was seen.
    fn assert_all(&self, exchanges: &[Exchange]) {
        let (mut failures, seen) = self.check(exchanges);
        for (i, r) in self.routes.iter().enumerate() {
            for status in r.responses.keys() {
                if !seen.contains(&(i, *status)) {
                    failures.push(format!(
                        "{}: {} {} -> {status} was never exercised",
                        self.name,
                        r.method,
                        r.path.as_str()
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} exchanges broke the contract:\n{}",
            failures.len(),
            exchanges.len(),
            failures.into_iter().take(40).collect::<Vec<_>>().join("\n")
        );
    }
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn write(key: &str, id_property: &str, fields: Value) -> WriteRequest {
    WriteRequest {
        key: key.into(),
        id_property: Some(id_property.into()),
        target_id: None,
        fields: object(fields),
    }
}

fn rate_limit(status: u16) -> Fault {
    Fault {
        status,
        retry_after: Some(1),
    }
}

/// PartnerStack and HubSpot simulators with their routers on `wire`, seeded like the shipped
/// end-to-end test.
async fn hubspot_world(wire: &Wire) -> World {
    let ps = PartnerStackSim::new(PS_KEY);
    let hs = HubSpotSim::new(HS_TOKEN);
    let ps_server = SimServer::start(wire.around(ps.router()))
        .await
        .expect("PartnerStack sim");
    let hs_server = SimServer::start(wire.around(hs.router()))
        .await
        .expect("HubSpot sim");
    for d in seed::deals(shipped::DEALS, 5) {
        ps.upsert_deal(d);
    }
    let w = World {
        ps,
        hs,
        ps_server,
        hs_server,
        dir: tempfile::tempdir().expect("temp dir"),
        postgres: crate::harness::postgres_state(),
    };
    shipped::seed_partnerstack(&w);
    w
}

fn salesforce_sim() -> SalesforceSim {
    SalesforceSim::new(SalesforceAuth {
        client_id: "3MVG9sim.consumer.key".into(),
        client_secret: "sim-consumer-secret".into(),
        refresh_token: "5Aep.initial".into(),
        rotate: false,
        jwt_public_key: None,
        username: "integration@prmsync.example".into(),
        token_ttl_ms: 3_600_000,
    })
}

fn salesforce_client(server: &SimServer, refresh_token: &str) -> Connector {
    Connector::Salesforce(Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        Grant::RefreshToken {
            client_id: "3MVG9sim.consumer.key".into(),
            client_secret: Some(SecretString::from("sim-consumer-secret")),
            refresh_token: SecretString::from(refresh_token.to_owned()),
        },
        None,
    ))
}

/// The shipped HubSpot flows run end to end, then a property error, a rate limit and the live
/// schema read: every HubSpot and PartnerStack exchange keeps its vendor's contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_and_partnerstack_exchanges_keep_the_vendor_contracts() {
    let wire = Wire::default();
    let w = hubspot_world(&wire).await;
    // Records that were in HubSpot before the first sync: a partner's company (found by its
    // domain and linked by id) and a customer's company with a direct deal (the rules' facts).
    let text = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    w.hs.create(
        "companies",
        text(&[("name", "Partner 1 Ltd"), ("domain", "partner1.example")]),
    );
    let customer = w.hs.create(
        "companies",
        text(&[("name", "Acme Corp"), ("domain", "acmecorp.example")]),
    );
    let direct = w.hs.create(
        "deals",
        text(&[
            ("dealname", "Direct"),
            ("dealstage", "qualifiedtobuy"),
            ("pipeline", "default"),
        ]),
    );
    w.hs.associate("companies", &customer, "deals", &direct);
    let mut config = w.config();
    config.daemon.mappings_dir = Some(shipped::shipped());
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts with every shipped mapping");
    d.run_until_idle().await.expect("sync");
    assert_eq!(shipped::dead_letters(&w), Vec::<String>::new());
    // The daemon's live-schema check reads every object the shipped flows write.
    let checked = d.engine.check_schema().await.expect("schema check");
    assert!(checked.objects >= 4 && checked.drifted == 0, "{checked:?}");
    d.shutdown().await;

    // Faults and refusals, through the connectors themselves.
    let hs = Connector::HubSpot(HubSpot::new(
        http_client(Duration::from_secs(5)),
        w.hs_server.url(""),
        SecretString::from(HS_TOKEN),
    ));
    let bad = write("deal_x", "prm_deal_id", json!({"no_such_property": "1"}));
    let refused = hs.write("deals", &[bad]).await;
    assert!(
        matches!(&refused, Err(ConnectorError::Permanent(_))),
        "{refused:?}"
    );
    w.hs.inject([rate_limit(429)]);
    let limited = hs.read_changes("deals", 0, &[], None).await;
    assert!(
        matches!(limited, Err(ConnectorError::RateLimited { .. })),
        "{limited:?}"
    );
    hs.pacer().release();
    w.hs.inject([rate_limit(429)]);
    let limited = hs
        .write(
            "deals",
            &[write("deal_1", "prm_deal_id", json!({"dealname": "x"}))],
        )
        .await;
    assert!(
        matches!(limited, Err(ConnectorError::RateLimited { .. })),
        "{limited:?}"
    );
    hs.pacer().release();
    let gone = w.hs.find("deals", "prm_deal_id", "deal_1").expect("deal_1")["hs_object_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let archived = hs
        .delete("deals", &[gone])
        .await
        .expect("one result per id");
    assert!(archived.iter().all(Result::is_ok), "{archived:?}");
    let properties = reqwest::Client::new()
        .get(w.hs_server.url("/crm/v3/properties/deals"))
        .bearer_auth(HS_TOKEN)
        .send()
        .await
        .expect("properties");
    assert_eq!(properties.status(), 200);

    let ps = Connector::PartnerStack(PartnerStack::new(
        http_client(Duration::from_secs(5)),
        w.ps_server.url("/api/v2"),
        SecretString::from(PS_KEY),
    ));
    w.ps.inject([rate_limit(429)]);
    let limited = ps.read_changes("deals", 0, &[], None).await;
    assert!(
        matches!(limited, Err(ConnectorError::RateLimited { .. })),
        "{limited:?}"
    );
    ps.pacer().release();
    let not_a_stage = ps
        .write(
            "deals",
            &[WriteRequest {
                key: "deal_1".into(),
                id_property: None,
                target_id: None,
                fields: object(json!({"stage": "not-a-stage"})),
            }],
        )
        .await
        .expect("per-record results");
    assert!(not_a_stage[0].is_err(), "{not_a_stage:?}");
    let wrong_key = Connector::PartnerStack(PartnerStack::new(
        http_client(Duration::from_secs(5)),
        w.ps_server.url("/api/v2"),
        SecretString::from("not-the-key"),
    ));
    assert!(matches!(
        wrong_key.health().await,
        Err(ConnectorError::Auth(_))
    ));

    let exchanges = wire.exchanges();
    let (hubspot, partnerstack): (Vec<_>, Vec<_>) = exchanges
        .into_iter()
        .partition(|x| x.path.starts_with("/crm/") || x.path.starts_with("/oauth/"));
    Contract::load("hubspot").assert_all(&hubspot);
    Contract::load("partnerstack").assert_all(&partnerstack);
}

/// The shipped Salesforce flows run end to end and the daemon's schema check reads `describe`,
/// then a refused grant, a malformed query, a daily limit and per-record refusals: every
/// Salesforce exchange keeps the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_exchanges_keep_the_vendor_contract() {
    let wire = Wire::default();
    let sf_wire = Wire::default();
    let w = hubspot_world(&wire).await;
    let sf = salesforce_sim();
    let server = SimServer::start(sf_wire.around(sf.router()))
        .await
        .expect("Salesforce sim");
    sf.set_page_cap(5); // reads follow nextRecordsUrl
    let d = crate::rules_salesforce::daemon(&w, shipped::shipped(), &server).await;
    d.run_until_idle().await.expect("sync");
    assert_eq!(shipped::dead_letters(&w), Vec::<String>::new());
    // The daemon's live-schema check reads every object the shipped flows write.
    let checked = d.engine.check_schema().await.expect("schema check");
    assert!(checked.objects >= 4 && checked.drifted == 0, "{checked:?}");
    d.shutdown().await;

    let conn = salesforce_client(&server, "5Aep.initial");
    let refused = conn
        .write(
            "Opportunity",
            &[write(
                "deal_x",
                "PRM_Deal_Id__c",
                json!({"Name": "X", "StageName": "Nope", "CloseDate": "2027-01-01"}),
            )],
        )
        .await
        .expect("per-record results");
    assert!(refused[0].is_err(), "{refused:?}");
    let unknown = conn
        .read_changes("Opportunity", 0, &["No_Such_Field__c".to_owned()], None)
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    sf.inject([Fault {
        status: 400,
        retry_after: None,
    }]);
    let malformed = conn
        .write(
            "Opportunity",
            &[write("deal_1", "PRM_Deal_Id__c", json!({"Name": "X"}))],
        )
        .await;
    assert!(malformed.is_err(), "{malformed:?}");
    let gone = sf.find("Opportunity", "PRM_Deal_Id__c", "deal_1")[0]["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deleted = conn
        .delete("Opportunity", &[gone, "006000000000000AAA".to_owned()])
        .await
        .expect("one result per id");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    sf.inject([rate_limit(403)]);
    let limited = conn.read_changes("Opportunity", 0, &[], None).await;
    assert!(
        matches!(limited, Err(ConnectorError::RateLimited { .. })),
        "{limited:?}"
    );
    let dead = salesforce_client(&server, "5Aep.revoked");
    assert!(matches!(dead.health().await, Err(ConnectorError::Auth(_))));

    Contract::load("salesforce").assert_all(&sf_wire.exchanges());
}

/// The shipped REST-profile flows run end to end against the generic PRM, with a rate limit and
/// a refused value: every exchange keeps the profile's contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_profile_exchanges_keep_its_contract() {
    let wire = Wire::default();
    let w = World::seeded(0).await;
    let rest = RestPrmSim::new("rest-prm-key");
    let rest_server = SimServer::start(wire.around(rest.router()))
        .await
        .expect("rest sim");
    shipped::seed_mdf(&rest);
    let sf = salesforce_sim();
    let server = SimServer::start(sf.router()).await.expect("Salesforce sim");
    let mut config = w.config();
    let profile = shipped::rest_profile(&rest_server);
    config.prm = prmsync::config::PrmConfig::Rest(profile.clone());
    let d = shipped::rest_salesforce_daemon(config, &server).await;
    d.run_until_idle().await.expect("sync");
    assert_eq!(shipped::dead_letters(&w), Vec::<String>::new());
    let id = sf.find("Campaign", "PRM_MDF_Key__c", "mdf_2")[0]["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(sf.set_field("Campaign", &id, "Status", json!("In Progress")));
    d.run_until_idle().await.expect("sync back");
    d.shutdown().await;

    let conn = Connector::Rest(prmsync::connector::rest::Rest::new(
        http_client(Duration::from_secs(5)),
        profile.profile.clone(),
    ));
    let refused = conn
        .write(
            "deals",
            &[WriteRequest {
                key: "d1".into(),
                id_property: None,
                target_id: None,
                fields: object(json!({"stage": "not-a-stage"})),
            }],
        )
        .await
        .expect("per-record results");
    assert!(refused[0].is_err(), "{refused:?}");
    rest.inject([rate_limit(429)]);
    let limited = conn.read_changes("deals", 0, &[], None).await;
    assert!(
        matches!(limited, Err(ConnectorError::RateLimited { .. })),
        "{limited:?}"
    );
    Contract::load("rest").assert_all(&wire.exchanges());
}

/// PartnerStack webhook bodies: the documented events (both spellings) are in the contract and
/// the connector stages each; a body the contract refuses (no key) the connector refuses too.
#[test]
fn partnerstack_webhook_events_keep_the_contract_and_parse() {
    let contract = Contract::load("partnerstack");
    for event in [
        "deal.created",
        "deal.updated",
        "partnership.created",
        "partnership.updated",
        "partnership.tags_updated",
        "customer_created",
        "customer_updated",
        "customer_deleted",
        "lead.created",
    ] {
        let body = json!({"event": event, "data": {"key": "k_1", "created_at": 1_767_225_600_000_i64, "updated_at": 1_767_225_600_000_i64}});
        assert_eq!(
            contract.violations("WebhookEvent", &body),
            Vec::<String>::new()
        );
        let change = prmsync::connector::partnerstack::webhook::parse(body.to_string().as_bytes())
            .expect("parses");
        assert!(change.is_some(), "{event} is staged");
    }
    let keyless = json!({"event": "deal.updated", "data": {"updated_at": 1}});
    assert!(!contract.violations("WebhookEvent", &keyless).is_empty());
    assert!(
        prmsync::connector::partnerstack::webhook::parse(keyless.to_string().as_bytes()).is_err()
    );
    let agreement = json!({"event": "agreement.accepted", "data": {"key": "agr_1"}});
    assert_eq!(
        contract.violations("WebhookEvent", &agreement),
        Vec::<String>::new()
    );
    assert_eq!(
        prmsync::connector::partnerstack::webhook::parse(agreement.to_string().as_bytes()),
        Ok(None),
        "an event prmsync does not sync is acknowledged"
    );
}

/// The contract files refuse what the vendors refuse (the schemas are not vacuous).
#[test]
fn the_contracts_refuse_what_the_vendors_refuse() {
    let hs = Contract::load("hubspot");
    let number = json!({"inputs": [{"id": "d1", "idProperty": "prm_deal_id", "properties": {"amount": 1000}}]});
    assert!(
        !hs.violations("BatchUpsertRequest", &number).is_empty(),
        "values are strings"
    );
    let groups = json!({"filterGroups": vec![json!({"filters": []}); 6]});
    assert!(
        !hs.violations("SearchRequest", &groups).is_empty(),
        "at most 5 groups"
    );
    let sf = Contract::load("salesforce");
    let with_id =
        json!({"allOrNone": false, "records": [{"attributes": {"type": "Account"}, "Id": "001"}]});
    assert!(
        !sf.violations("CollectionUpsertRequest", &with_id)
            .is_empty()
    );
    let object_error = json!({"message": "x", "errorCode": "INVALID_FIELD"});
    assert!(
        !sf.violations("ErrorArray", &object_error).is_empty(),
        "errors are arrays"
    );
    let ps = Contract::load("partnerstack");
    let unknown = json!({"stage": "won", "contact_email": "a@b.example"});
    assert!(
        !ps.violations("DealPatch", &unknown).is_empty(),
        "contact_email is not patchable"
    );
    let fields_object = json!({"fields": {"k": "v"}});
    assert!(
        !ps.violations("DealPatch", &fields_object).is_empty(),
        "fields is an array"
    );
}
