//! Connector tests against their simulators: auth flows, paging, batch writes with partial
//! failures, deletes, rate limits and faults, each checked by counts at the simulator.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prmsync::connector::salesforce::{Grant, Salesforce, auth::parse_private_key};
use prmsync::connector::tokens::{
    BoxFuture, MemoryTokens, Saved, TokenStore, TokenStoreError, fingerprint,
};
use prmsync::connector::{ConnectorError, WriteRequest, http_client};
use prmsync::sim::salesforce::{SalesforceAuth, SalesforceSim};
use prmsync::sim::{Fault, Injected, SimServer};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

pub(crate) const CLIENT_ID: &str = "3MVG9sim.consumer.key";
pub(crate) const CLIENT_SECRET: &str = "sim-consumer-secret";
pub(crate) const REFRESH: &str = "5Aep.initial";
pub(crate) const STATE_KEY: &str = "test-state-key";
pub(crate) const USER: &str = "integration@prmsync.example";

/// A 2048-bit RSA key made once per test run (PKCS#8 PEM), for the JWT bearer flow.
fn test_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA keygen");
        key.to_pkcs8_pem(LineEnding::LF)
            .expect("PEM encoding")
            .to_string()
    })
}

pub(crate) fn sf_auth(rotate: bool, jwt: bool) -> SalesforceAuth {
    SalesforceAuth {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        refresh_token: REFRESH.into(),
        rotate,
        jwt_public_key: jwt.then(|| {
            let kp = parse_private_key(test_key_pem()).expect("test key parses");
            ring::signature::KeyPair::public_key(&kp).as_ref().to_vec()
        }),
        username: USER.into(),
        token_ttl_ms: 3_600_000,
    }
}

fn refresh_grant(token: &str) -> Grant {
    Grant::RefreshToken {
        client_id: CLIENT_ID.into(),
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
        refresh_token: SecretString::from(token),
    }
}

struct Sf {
    sim: SalesforceSim,
    server: SimServer,
    tokens: Arc<MemoryTokens>,
    conn: Salesforce,
}

async fn salesforce(rotate: bool) -> Sf {
    let sim = SalesforceSim::new(sf_auth(rotate, false));
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let tokens = Arc::new(MemoryTokens::default());
    let store: Arc<dyn TokenStore> = tokens.clone();
    let conn = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        refresh_grant(REFRESH),
        Some(store),
    );
    Sf {
        sim,
        server,
        tokens,
        conn,
    }
}

fn deal(i: usize) -> Map<String, Value> {
    let v = json!({
        "Name": format!("Deal {i}"),
        "StageName": "Prospecting",
        "CloseDate": "2027-01-31",
        "Amount": 1000 + i,
    });
    v.as_object().cloned().unwrap_or_default()
}

fn write(i: usize, fields: Map<String, Value>) -> WriteRequest {
    WriteRequest {
        key: format!("deal_{i}"),
        id_property: Some("PRM_Deal_Id__c".into()),
        target_id: None,
        fields,
    }
}

#[tokio::test]
async fn salesforce_rotated_refresh_token_is_saved_before_the_session_is_used() {
    let sf = salesforce(true).await;
    sf.conn.health().await.expect("health");
    let s = sf.sim.stats();
    assert_eq!((s.refresh_grants, s.api_requests), (1, 1));
    assert_ne!(sf.sim.current_refresh_token(), REFRESH, "rotation happened");
    assert_eq!(
        sf.tokens.get("salesforce.refresh_token").as_deref(),
        Some(sf.sim.current_refresh_token().as_str())
    );

    // Sessions expire; eight concurrent reads share one refresh and all succeed.
    sf.sim.expire_sessions();
    let reads = (0..8).map(|_| {
        let c = sf.conn.clone();
        async move { c.read_changes("Opportunity", 0, &[], None).await }
    });
    for r in futures_join(reads).await {
        r.expect("read after refresh");
    }
    let s = sf.sim.stats();
    assert_eq!(s.refresh_grants, 2, "exactly one refresh per expiry");
    assert_eq!(
        sf.tokens.get("salesforce.refresh_token").as_deref(),
        Some(sf.sim.current_refresh_token().as_str())
    );

    // A restarted connector starts from the saved (rotated) token, not the configured dead one.
    let store: Arc<dyn TokenStore> = sf.tokens.clone();
    let again = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &sf.server.url(""),
        refresh_grant(REFRESH),
        Some(store),
    );
    again
        .health()
        .await
        .expect("restart uses the rotated token");
    assert_eq!(sf.sim.stats().invalid_grants, 0);
}

/// Joins futures without pulling in the `futures` crate.
async fn futures_join<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let set: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(set.len());
    let mut handles = tokio::task::JoinSet::new();
    for (i, f) in set.into_iter().enumerate() {
        handles.spawn(async move { (i, f.await) });
    }
    while let Some(r) = handles.join_next().await {
        out.push(r.expect("task"));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, v)| v).collect()
}

#[derive(Debug)]
struct FailingTokens;

impl TokenStore for FailingTokens {
    fn load<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Saved>, TokenStoreError>> {
        Box::pin(async { Ok(None) })
    }
    fn save<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a SecretString,
        _configured: &'a str,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        Box::pin(async { Err(TokenStoreError("disk full".into())) })
    }
}

#[tokio::test]
async fn salesforce_withholds_the_session_when_the_rotated_token_cannot_be_saved() {
    let sim = SalesforceSim::new(sf_auth(true, false));
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let store: Arc<dyn TokenStore> = Arc::new(FailingTokens);
    let conn = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        refresh_grant(REFRESH),
        Some(store),
    );
    let err = conn.health().await.expect_err("save failed");
    assert!(
        matches!(err, ConnectorError::Transient(ref m) if m.contains("not persisted")),
        "{err}"
    );
    assert_eq!(
        sim.stats().api_requests,
        0,
        "no API call with an unsaved rotation"
    );
}

#[tokio::test]
async fn salesforce_invalid_grant_is_an_auth_error() {
    let sim = SalesforceSim::new(sf_auth(false, false));
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let conn = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        refresh_grant("revoked"),
        None,
    );
    let err = conn.health().await.expect_err("revoked token");
    assert!(
        matches!(err, ConnectorError::Auth(ref m) if m.contains("invalid_grant")),
        "{err}"
    );
    assert_eq!(sim.stats().invalid_grants, 1);
}

/// A My Domain login URL (here the simulator's own address) still gets the login URL as `aud`.
#[tokio::test]
async fn salesforce_jwt_audience_is_the_login_url_when_the_token_goes_to_a_my_domain() {
    use prmsync::config::{CrmConfig, SalesforceAuthConfig, SalesforceConfig};
    let sim = SalesforceSim::new(sf_auth(false, true));
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let world = crate::harness::World::seeded(0).await;
    let mut config = world.config();
    config.crm = CrmConfig::Salesforce(SalesforceConfig {
        login_url: server.url(""),
        auth: SalesforceAuthConfig::JwtBearer {
            client_id: CLIENT_ID.into(),
            username: USER.into(),
            private_key: SecretString::from(test_key_pem()),
        },
        audience: None,
        rate_limit: None,
    });
    let (_, crm) = prmsync::app::connectors(&config, None).expect("connectors");
    crm.health()
        .await
        .expect("the assertion names the login URL");
    assert_eq!(sim.stats().jwt_grants, 1);
}

#[tokio::test]
async fn salesforce_jwt_bearer_flow_signs_with_rs256() {
    let sim = SalesforceSim::new(sf_auth(false, true));
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let jwt = |user: &str| Grant::JwtBearer {
        client_id: CLIENT_ID.into(),
        username: user.into(),
        audience: "https://login.salesforce.com".into(),
        key: Arc::new(parse_private_key(test_key_pem()).expect("key")),
    };
    let conn = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        jwt(USER),
        None,
    );
    conn.health().await.expect("JWT bearer works");
    assert_eq!(sim.stats().jwt_grants, 1);
    let wrong = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        jwt("someone.else@example.com"),
        None,
    );
    assert!(matches!(wrong.health().await, Err(ConnectorError::Auth(_))));
    assert_eq!(sim.stats().jwt_grants, 1);
}

#[tokio::test]
async fn salesforce_reads_every_page_in_modstamp_order() {
    let sf = salesforce(false).await;
    for i in 0..450 {
        let mut f = deal(i);
        f.insert("PRM_Deal_Id__c".into(), json!(format!("deal_{i}")));
        sf.sim.insert("Opportunity", f);
    }
    sf.sim.set_page_cap(200);
    let fields = vec!["Name".to_owned(), "PRM_Deal_Id__c".to_owned()];
    let mut page = None;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let p = sf
            .conn
            .read_changes("Opportunity", 0, &fields, page.as_deref())
            .await
            .expect("page");
        pages += 1;
        got.extend(p.records);
        page = p.next_page;
        if page.is_none() {
            break;
        }
    }
    assert_eq!((pages, got.len()), (3, 450));
    assert!(
        got.windows(2)
            .all(|w| (w[0].modified_ms, &w[0].id) < (w[1].modified_ms, &w[1].id))
    );
    assert!(got.iter().all(|r| !r.fields.contains_key("attributes")));
    assert_eq!(got[0].fields["PRM_Deal_Id__c"], "deal_0");

    // `since` is inclusive: reading from record 300's stamp returns it and everything after.
    let since = got[300].modified_ms;
    let (mut page, mut again) = (None, Vec::new());
    loop {
        let p = sf
            .conn
            .read_changes("Opportunity", since, &fields, page.as_deref())
            .await
            .expect("since");
        again.extend(p.records);
        page = p.next_page;
        if page.is_none() {
            break;
        }
    }
    // SOQL datetimes are whole seconds: everything from record 300 on, perhaps a little more.
    let ids: std::collections::BTreeSet<&str> = again.iter().map(|r| r.id.as_str()).collect();
    assert!(got[300..].iter().all(|r| ids.contains(r.id.as_str())));
    assert!(again.iter().all(|r| r.modified_ms > since - 1000));

    // A field the org does not have is a permanent error, not a retry.
    let bad = sf
        .conn
        .read_changes("Opportunity", 0, &["Nope__c".to_owned()], None)
        .await;
    assert!(matches!(bad, Err(ConnectorError::Permanent(ref m)) if m.contains("INVALID_FIELD")));
}

#[tokio::test]
async fn salesforce_collections_upsert_reports_each_record_and_never_duplicates() {
    let sf = salesforce(false).await;
    let mut writes: Vec<WriteRequest> = (0..250).map(|i| write(i, deal(i))).collect();
    writes[7]
        .fields
        .insert("StageName".into(), json!("Pending legal"));
    writes[220].fields.insert("Bogus__c".into(), json!("x"));
    let results = sf
        .conn
        .write("Opportunity", &writes)
        .await
        .expect("batch answered");
    assert_eq!(results.len(), 250);
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![7, 220]);
    assert!(
        matches!(&results[7], Err(ConnectorError::Permanent(m)) if m.contains("RESTRICTED_PICKLIST"))
    );
    assert!(results[0].as_ref().is_ok_and(|a| a.created));
    let s = sf.sim.stats();
    assert_eq!(
        (s.collection_upserts, s.created),
        (2, 248),
        "200 + 50 per call"
    );
    assert_eq!(sf.sim.records("Opportunity").len(), 248);

    // The same batch again (a retry after an ambiguous failure) updates, never duplicates.
    writes[7] = write(7, deal(7));
    writes[220] = write(220, deal(220));
    let again = sf.conn.write("Opportunity", &writes).await.expect("again");
    assert!(again.iter().all(Result::is_ok));
    assert_eq!(
        again
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|a| a.created))
            .count(),
        2
    );
    assert_eq!(sf.sim.records("Opportunity").len(), 250);
    assert_eq!(
        sf.sim.find("Opportunity", "PRM_Deal_Id__c", "deal_7").len(),
        1
    );
}

#[tokio::test]
async fn salesforce_several_matches_are_a_conflict_for_the_operator() {
    let sf = salesforce(false).await;
    for _ in 0..2 {
        let mut f = deal(1);
        f.insert("PRM_Deal_Id__c".into(), json!("deal_1"));
        sf.sim.insert("Opportunity", f);
    }
    let r = sf
        .conn
        .write("Opportunity", &[write(1, deal(1)), write(2, deal(2))])
        .await
        .expect("answered");
    assert!(
        matches!(&r[0], Err(ConnectorError::Conflict(m)) if m.contains("DUPLICATE_EXTERNAL_ID"))
    );
    assert!(!r[0].as_ref().unwrap_err().is_retryable());
    assert!(r[1].is_ok());
    let single = sf
        .conn
        .upsert_one("Opportunity", "PRM_Deal_Id__c", "deal_1", &Map::new())
        .await;
    assert!(
        matches!(single, Err(ConnectorError::Conflict(_))),
        "{single:?}"
    );
    let created = sf
        .conn
        .upsert_one("Opportunity", "PRM_Deal_Id__c", "deal_9", &deal(9))
        .await
        .expect("single upsert");
    assert!(created.created);
    assert_eq!(sf.sim.records("Opportunity").len(), 4);
}

#[tokio::test]
async fn salesforce_reports_deletes_from_get_deleted() {
    let sf = salesforce(false).await;
    // getDeleted windows are at least a minute long.
    let start = jiff::Timestamp::now().as_millisecond() - 60_000;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let mut f = deal(i);
            f.insert("PRM_Deal_Id__c".into(), json!(format!("deal_{i}")));
            sf.sim.insert("Opportunity", f)
        })
        .collect();
    assert!(sf.sim.delete("Opportunity", &ids[0]));
    assert!(sf.sim.delete("Opportunity", &ids[2]));
    let end = jiff::Timestamp::now().as_millisecond() + 1000;
    let gone = sf
        .conn
        .read_deletes("Opportunity", start, end)
        .await
        .expect("getDeleted");
    let mut got: Vec<_> = gone.iter().map(|d| d.id.clone()).collect();
    got.sort();
    assert_eq!(got, vec![ids[0].clone(), ids[2].clone()]);
    assert!(
        gone.iter()
            .all(|d| d.deleted_ms >= start && d.deleted_ms <= end)
    );
}

#[tokio::test]
async fn salesforce_limits_header_and_request_limit_exceeded() {
    let sf = salesforce(false).await;
    sf.conn.health().await.expect("health");
    let l = sf.conn.limits().expect("Sforce-Limit-Info parsed");
    assert_eq!((l.used, l.max), (1, 100_000));
    sf.sim.set_api_limit(1);
    let err = sf.conn.health().await.expect_err("over the daily limit");
    assert!(
        matches!(err, ConnectorError::RateLimited { .. }),
        "403 REQUEST_LIMIT_EXCEEDED is a rate limit: {err}"
    );
    assert!(err.is_retryable());

    // The inspection endpoints show the request log and stored records over HTTP.
    let http = http_client(Duration::from_secs(5));
    let log: Vec<Value> = http
        .get(sf.server.url("/_sim/requests"))
        .send()
        .await
        .expect("inspect")
        .json()
        .await
        .expect("json");
    let statuses: Vec<u64> = log.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(
        statuses,
        vec![200, 200, 403],
        "token, limits, limits over the allocation"
    );
    let records: Vec<Value> = http
        .get(sf.server.url("/_sim/records/Opportunity"))
        .send()
        .await
        .expect("inspect")
        .json()
        .await
        .expect("json");
    assert!(records.is_empty());
}

#[tokio::test]
async fn salesforce_faults_are_typed_and_lose_nothing() {
    let sf = salesforce(false).await;
    sf.sim.inject([
        Injected::Fault(Fault {
            status: 429,
            retry_after: Some(7),
        }),
        Injected::RetryAtDate {
            status: 429,
            secs: 120,
        },
        Injected::Fault(Fault {
            status: 500,
            retry_after: None,
        }),
        Injected::Fault(Fault {
            status: 503,
            retry_after: None,
        }),
        Injected::Malformed,
        Injected::Fault(Fault {
            status: 401,
            retry_after: None,
        }),
    ]);
    let writes: Vec<WriteRequest> = (0..10).map(|i| write(i, deal(i))).collect();
    let mut errors = Vec::new();
    let results = loop {
        match sf.conn.write("Opportunity", &writes).await {
            Ok(r) => break r,
            Err(e) => {
                if e.retry_after().is_some() {
                    let sent = sf.sim.request_log().len();
                    let held = sf.conn.write("Opportunity", &writes).await;
                    assert!(matches!(held, Err(ConnectorError::RateLimited { .. })));
                    assert_eq!(sf.sim.request_log().len(), sent, "nothing sent in the hold");
                    sf.conn.pacer().release();
                }
                errors.push(e);
            }
        }
        assert!(errors.len() < 10, "faults never cleared: {errors:?}");
    };
    assert!(
        matches!(errors[0], ConnectorError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(7))
    );
    assert!(
        matches!(errors[1], ConnectorError::RateLimited { retry_after, .. }
        if retry_after > Duration::from_secs(100) && retry_after <= Duration::from_secs(120))
    );
    assert!(matches!(errors[2], ConnectorError::Transient(_)));
    assert!(matches!(errors[3], ConnectorError::Transient(_)));
    assert!(
        matches!(&errors[4], ConnectorError::Transient(m) if m.contains("unexpected Salesforce upsert shape"))
    );
    assert_eq!(
        errors.len(),
        5,
        "the injected 401 is healed by one refresh: {errors:?}"
    );
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(sf.sim.records("Opportunity").len(), 10);
    assert_eq!(sf.sim.stats().refresh_grants, 2);
    let log = sf.sim.request_log();
    assert!(log.iter().any(|r| r.status == 429));
}

#[tokio::test]
async fn salesforce_lost_answers_and_slow_answers_lose_nothing() {
    let sf = salesforce(false).await;
    sf.conn.health().await.expect("session first");
    sf.sim.turbulence().lose_next_write_responses(1);
    let writes: Vec<WriteRequest> = (0..20).map(|i| write(i, deal(i))).collect();
    let err = sf
        .conn
        .write("Opportunity", &writes)
        .await
        .expect_err("answer lost");
    assert!(matches!(err, ConnectorError::Transient(_)), "{err}");
    assert_eq!(
        sf.sim.records("Opportunity").len(),
        20,
        "committed before the answer was lost"
    );
    let again = sf.conn.write("Opportunity", &writes).await.expect("retry");
    assert!(again.iter().all(|r| r.as_ref().is_ok_and(|a| !a.created)));
    assert_eq!(
        (sf.sim.records("Opportunity").len(), sf.sim.stats().created),
        (20, 20)
    );

    let impatient = Salesforce::new(
        http_client(Duration::from_millis(300)),
        &sf.server.url(""),
        refresh_grant(REFRESH),
        None,
    );
    impatient.health().await.expect("fast enough");
    sf.sim.turbulence().set_latency(Duration::from_millis(800));
    let slow = impatient.health().await.expect_err("timed out");
    assert!(matches!(slow, ConnectorError::Transient(_)), "{slow}");
    sf.sim.turbulence().set_latency(Duration::ZERO);
    impatient.health().await.expect("fast again");
}

#[tokio::test]
async fn partnerstack_deals_become_salesforce_opportunities_and_stage_flows_back() {
    let world = crate::harness::World::seeded(12).await;
    let ps = &world.ps;
    let sim = SalesforceSim::new(sf_auth(true, false));
    let sf_server = SimServer::start(sim.router())
        .await
        .expect("start Salesforce sim");
    let daemon = salesforce_daemon(&world, &sf_server).await;
    let report = daemon.run_until_idle().await.expect("first pass");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let opps = sim.records("Opportunity");
    assert_eq!(opps.len(), 12);
    let one = &sim.find("Opportunity", "PRM_Deal_Id__c", "deal_1")[0];
    let ps1 = ps.deal("deal_1").expect("deal_1");
    assert_eq!(
        one["Name"],
        json!(format!(
            "{} (partner registration)",
            ps1["account_name"].as_str().unwrap_or_default()
        ))
    );
    let cents = ps1["amount"].as_i64().expect("cents");
    let amount: f64 = one["Amount"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("amount");
    assert!(
        (amount * 100.0 - cents as f64).abs() < 0.5,
        "{amount} vs {cents} cents"
    );
    assert_eq!(one["StageName"], "Prospecting");

    // The rotated refresh token is in the state file, sealed (never in plain text).
    let raw = daemon
        .engine
        .store()
        .credential("salesforce.refresh_token".into())
        .await
        .expect("read credential")
        .expect("saved");
    assert!(!raw.contains(&sim.current_refresh_token()), "{raw}");
    let tokens = prmsync::credentials::StateTokens::owner(
        daemon.engine.store().clone(),
        Some(&SecretString::from(STATE_KEY)),
    );
    let saved = tokens
        .load("salesforce.refresh_token")
        .await
        .expect("opens with the state key")
        .expect("saved");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&saved.value),
        sim.current_refresh_token()
    );

    // Sales closes the deal as lost in Salesforce; the partner's deal follows.
    let id = one["Id"].as_str().expect("Id").to_owned();
    assert!(sim.set_field("Opportunity", &id, "StageName", json!("Closed Lost")));
    assert!(sim.set_field("Opportunity", &id, "Loss_Reason__c", json!("No budget")));
    let before = sim.stats();
    daemon.run_until_idle().await.expect("second pass");
    let ps1 = ps.deal("deal_1").expect("deal_1");
    assert_eq!(
        (ps1["stage"].as_str(), ps1["lost_reason"].as_str()),
        (Some("lost"), Some("No budget"))
    );
    let after = sim.stats();
    assert_eq!(
        after.created, before.created,
        "no opportunity created twice"
    );
    assert_eq!(sim.records("Opportunity").len(), 12);
    daemon.shutdown().await;
}

mod hubspot {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use prmsync::connector::hubspot::{HubSpot, OAuthClient};
    use prmsync::connector::{ConnectorError, WriteRequest, http_client};
    use prmsync::sim::hubspot::{HubSpotOAuth, HubSpotSim};
    use prmsync::sim::{Fault, Injected, SimServer};
    use secrecy::SecretString;
    use serde_json::json;

    const TOKEN: &str = "pat-na1-sim";

    async fn start() -> (HubSpotSim, SimServer, HubSpot) {
        let sim = HubSpotSim::new(TOKEN);
        let server = SimServer::start(sim.router()).await.expect("start sim");
        let conn = HubSpot::new(
            http_client(Duration::from_secs(5)),
            server.url(""),
            SecretString::from(TOKEN),
        );
        (sim, server, conn)
    }

    fn deal(i: usize, stage: &str) -> WriteRequest {
        let v = json!({"dealname": format!("Deal {i}"), "amount": 1000 + i, "dealstage": stage});
        WriteRequest {
            key: format!("deal_{i}"),
            id_property: Some("prm_deal_id".into()),
            target_id: None,
            fields: v.as_object().cloned().unwrap_or_default(),
        }
    }

    fn props(i: usize) -> BTreeMap<String, String> {
        BTreeMap::from([("dealname".to_owned(), format!("Deal {i}"))])
    }

    #[tokio::test]
    async fn hubspot_batch_partial_failures_and_faults_lose_nothing() {
        let (sim, _server, conn) = start().await;
        let mut writes: Vec<WriteRequest> = (0..100).map(|i| deal(i, "qualifiedtobuy")).collect();
        writes[3] = deal(3, "not-a-stage");
        writes[50] = deal(50, "also-not");
        // A property error refuses the whole batch (HubSpot's 400): the writer bisects it.
        let r = conn.write("deals", &writes).await;
        assert!(
            matches!(&r, Err(ConnectorError::Permanent(m)) if m.contains("VALIDATION_ERROR")),
            "{r:?}"
        );
        assert_eq!(sim.objects("deals").len(), 0);
        let good: Vec<WriteRequest> = (0..100)
            .filter(|i| ![3, 50].contains(i))
            .map(|i| deal(i, "qualifiedtobuy"))
            .collect();
        let r = conn.write("deals", &good).await.expect("200 answered");
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        assert_eq!(sim.objects("deals").len(), 98);
        // Numbers went out as strings (HubSpot property values are strings).
        assert_eq!(
            sim.find("deals", "prm_deal_id", "deal_0").expect("deal_0")["amount"],
            "1000"
        );

        sim.inject([
            Injected::Fault(Fault {
                status: 500,
                retry_after: None,
            }),
            Injected::Fault(Fault {
                status: 502,
                retry_after: None,
            }),
            Injected::Fault(Fault {
                status: 429,
                retry_after: Some(3),
            }),
            Injected::RetryAtDate {
                status: 429,
                secs: 90,
            },
            Injected::Malformed,
            Injected::Fault(Fault {
                status: 401,
                retry_after: None,
            }),
        ]);
        writes[3] = deal(3, "qualifiedtobuy");
        writes[50] = deal(50, "qualifiedtobuy");
        let mut errors = Vec::new();
        let r = loop {
            match conn.write("deals", &writes).await {
                Ok(r) => break r,
                Err(e) => {
                    if e.retry_after().is_some() {
                        // The 429 holds the portal: the next call is refused unsent.
                        let sent = sim.request_log().len();
                        let held = conn.write("deals", &writes).await.expect_err("held");
                        assert!(
                            matches!(&held, ConnectorError::RateLimited { detail, .. } if detail.contains("not sent")),
                            "{held:?}"
                        );
                        assert_eq!(sim.request_log().len(), sent, "nothing sent in the hold");
                        conn.pacer().release();
                    }
                    errors.push(e);
                }
            }
            assert!(errors.len() < 10, "{errors:?}");
        };
        assert!(matches!(errors[0], ConnectorError::Transient(_)));
        assert!(matches!(errors[1], ConnectorError::Transient(_)));
        assert_eq!(errors[2].retry_after(), Some(Duration::from_secs(3)));
        let dated = errors[3].retry_after().expect("HTTP-date honoured");
        assert!(
            dated > Duration::from_secs(60) && dated <= Duration::from_secs(90),
            "{dated:?}"
        );
        assert!(
            matches!(&errors[4], ConnectorError::Transient(m) if m.contains("unexpected HubSpot batch shape"))
        );
        assert!(matches!(errors[5], ConnectorError::Auth(_)));
        assert!(r.iter().all(Result::is_ok));
        assert_eq!(sim.objects("deals").len(), 100);
        assert!(
            sim.writes("deals")
                .values()
                .all(|(created, _)| *created == 1),
            "never created twice"
        );
    }

    #[tokio::test]
    async fn hubspot_lost_batch_answer_is_retried_without_duplicates() {
        let (sim, _server, conn) = start().await;
        sim.turbulence().lose_next_write_responses(1);
        let writes: Vec<WriteRequest> = (0..30).map(|i| deal(i, "qualifiedtobuy")).collect();
        let err = conn.write("deals", &writes).await.expect_err("answer lost");
        assert!(matches!(err, ConnectorError::Transient(_)), "{err}");
        let r = conn.write("deals", &writes).await.expect("retry");
        assert!(r.iter().all(|r| r.as_ref().is_ok_and(|a| !a.created)));
        assert_eq!(sim.objects("deals").len(), 30);
        assert!(sim.writes("deals").values().all(|c| *c == (1, 1)));
    }

    #[tokio::test]
    async fn hubspot_rate_limit_headers_and_daily_policy() {
        let (sim, _server, conn) = start().await;
        conn.write("deals", &[deal(1, "qualifiedtobuy")])
            .await
            .expect("write");
        let l = conn.rate_limits();
        assert_eq!(
            (l.daily, l.secondly, l.max),
            (Some(500_000), Some(10), Some(100))
        );
        assert!(l.daily_remaining.is_some() && l.interval_ms == Some(10_000));
        assert_eq!((l.remaining, l.secondly_remaining), (Some(99), Some(9)));
        sim.set_daily_limit(1);
        let err = conn.health().await.expect_err("daily limit");
        let wait = err.retry_after().expect("rate limited");
        assert!(
            wait >= Duration::from_secs(60),
            "DAILY waits for the reset: {wait:?}"
        );
        assert!(err.to_string().contains("DAILY"));
        assert_eq!(sim.stats().daily_rate_limited, 1);
    }

    /// The simulator's limits as HubSpot documents them: live `X-HubSpot-RateLimit-*` headers
    /// from the rolling window, a 429 past the burst with `category: RATE_LIMITS` and
    /// `policyName`, and search at four per second (the fifth gets a 429 `SECONDLY`).
    #[tokio::test]
    async fn hubspot_simulator_limits_are_a_rolling_window_with_live_headers() {
        let (sim, server, _conn) = start().await;
        sim.set_burst_limit(Some(prmsync::sim::hubspot::BurstLimit {
            max: 3,
            window: Duration::from_secs(60),
        }));
        let http = http_client(Duration::from_secs(5));
        let get = || {
            http.get(server.url("/crm/v3/objects/deals"))
                .bearer_auth(TOKEN)
                .send()
        };
        let header = |r: &reqwest::Response, k: &str| {
            r.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let r = get().await.expect("answered");
            assert_eq!(r.status(), 200);
            remaining.push(header(&r, "x-hubspot-ratelimit-remaining"));
            assert_eq!(header(&r, "x-hubspot-ratelimit-max"), Some(3));
            assert_eq!(
                header(&r, "x-hubspot-ratelimit-interval-milliseconds"),
                Some(60_000)
            );
        }
        assert_eq!(remaining, vec![Some(2), Some(1), Some(0)]);
        let r = get().await.expect("answered");
        assert_eq!(r.status(), 429);
        assert_eq!(header(&r, "x-hubspot-ratelimit-remaining"), Some(0));
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["category"], "RATE_LIMITS");
        assert_eq!(body["errorType"], "RATE_LIMIT");
        assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(sim.stats().burst_rate_limited, 1);

        // Search has its own limit: four per second, not counted in the burst window.
        let search = || {
            http.post(server.url("/crm/v3/objects/deals/search"))
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
        };
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(search().await.expect("answered").status().as_u16());
        }
        // Five searches sent back to back usually land within one second, and the fifth is
        // refused; either way no more than four pass inside any second.
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
        assert_eq!(refused, sim.stats().search_rate_limited as usize);
        let log = sim.request_log();
        let passed: Vec<i64> = log
            .iter()
            .filter(|r| r.path.ends_with("/search") && r.status == 200)
            .map(|r| r.at_ms)
            .collect();
        assert!(passed.windows(5).all(|w| w[4] - w[0] >= 1000), "{passed:?}");
    }

    #[tokio::test]
    async fn hubspot_searches_are_paced_under_four_per_second() {
        let (sim, _server, conn) = start().await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = conn.clone();
                tokio::spawn(async move { c.read_changes("deals", 0, &[], None).await })
            })
            .collect();
        for t in tasks {
            t.await
                .expect("task")
                .expect("a paced search is never refused");
        }
        assert_eq!(
            sim.stats().search_rate_limited,
            0,
            "the simulator's 4/s limit was never hit"
        );
        // The request log shows the pacing: no five searches inside one second (a lower bound,
        // so a slow machine cannot make it flaky).
        let mut at: Vec<i64> = sim
            .request_log()
            .iter()
            .filter(|r| r.path.ends_with("/search"))
            .map(|r| r.at_ms)
            .collect();
        at.sort_unstable();
        assert_eq!(at.len(), 8);
        assert!(at.windows(5).all(|w| w[4] - w[0] >= 1000), "{at:?}");
    }

    #[tokio::test]
    async fn hubspot_search_moves_its_window_at_the_result_cap() {
        let (sim, _server, conn) = start().await;
        sim.set_search_rate(None);
        sim.set_search_cap(400);
        let conn = conn.with_search_cap(400);
        for i in 0..1000 {
            sim.create("deals", props(i));
        }
        let mut page: Option<String> = None;
        let mut ids = std::collections::BTreeSet::new();
        let mut pages = 0;
        loop {
            let p = conn
                .read_changes("deals", 0, &["dealname".into()], page.as_deref())
                .await
                .expect("no cap error");
            pages += 1;
            ids.extend(p.records.into_iter().map(|r| r.id));
            page = p.next_page;
            if page.is_none() {
                break;
            }
            assert!(pages < 50, "runaway paging");
        }
        assert_eq!(ids.len(), 1000, "every object read across windows");
        assert!(pages > 5);
    }

    #[tokio::test]
    async fn hubspot_oauth_refreshes_ahead_of_expiry_and_not_on_401() {
        let (sim, server, _) = start().await;
        let client = OAuthClient {
            client_id: "app-1".into(),
            client_secret: SecretString::from("app-secret"),
            refresh_token: SecretString::from("rt-1"),
        };
        let oauth = |expires_in| HubSpotOAuth {
            client_id: "app-1".into(),
            client_secret: "app-secret".into(),
            refresh_token: "rt-1".into(),
            expires_in,
        };
        sim.enable_oauth(oauth(3600));
        let conn = HubSpot::with_oauth(
            http_client(Duration::from_secs(5)),
            server.url(""),
            client.clone(),
        );
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let c = conn.clone();
                tokio::spawn(async move { c.health().await })
            })
            .collect();
        for c in calls {
            c.await.expect("task").expect("health");
        }
        assert_eq!(
            (conn.token_refreshes(), sim.stats().token_refreshes),
            (1, 1),
            "eight concurrent calls share one token fetch"
        );
        sim.inject([Fault {
            status: 401,
            retry_after: None,
        }]);
        assert!(matches!(conn.health().await, Err(ConnectorError::Auth(_))));
        assert_eq!(
            sim.stats().token_refreshes,
            1,
            "a 401 is no reason to refresh"
        );

        // A token within the margin of its expiry is refreshed before use.
        sim.enable_oauth(oauth(120));
        let short =
            HubSpot::with_oauth(http_client(Duration::from_secs(5)), server.url(""), client);
        short.health().await.expect("first");
        short.health().await.expect("second");
        assert_eq!(short.token_refreshes(), 2);
        assert_eq!(
            sim.stats().unauthorized,
            0,
            "no request went out with an expired token"
        );
    }

    #[tokio::test]
    async fn hubspot_associates_deals_with_companies() {
        let (sim, _server, conn) = start().await;
        let company = sim.create(
            "companies",
            BTreeMap::from([("name".to_owned(), "Acme".to_owned())]),
        );
        let d1 = sim.create("deals", props(1));
        let d2 = sim.create("deals", props(2));
        let pairs = vec![
            (d1.clone(), company.clone()),
            (d2.clone(), company.clone()),
            ("404".to_owned(), company.clone()),
        ];
        let r = conn
            .associate("deals", "companies", &pairs)
            .await
            .expect("answered");
        assert!(r[0].is_ok() && r[1].is_ok());
        assert!(matches!(&r[2], Err(ConnectorError::Permanent(_))));
        let mut got = sim.associations("deals", "companies");
        got.sort();
        let mut want = vec![(d1, company.clone()), (d2, company.clone())];
        want.sort();
        assert_eq!(got, want);
        let contact = sim.create(
            "contacts",
            BTreeMap::from([("email".to_owned(), "ann@acme.example".to_owned())]),
        );
        let r = conn
            .associate(
                "contacts",
                "companies",
                &[(contact.clone(), company.clone())],
            )
            .await
            .expect("answered");
        assert!(r[0].is_ok());
        assert_eq!(
            sim.associations("contacts", "companies"),
            vec![(contact, company)]
        );
    }
}

#[tokio::test]
async fn partnerstack_deals_reach_hubspot_and_a_signed_webhook_brings_the_stage_back() {
    use crate::harness::{HS_SECRET, World, wait_until};
    use prmsync::sim::hubspot::{deliver_webhook, property_change_event};

    let world = World::seeded(15).await;
    let daemon = world.daemon().await;
    daemon.run_until_idle().await.expect("first pass");
    assert_eq!(world.hs.objects("deals").len(), 15);
    let deal = world
        .hs
        .find("deals", "prm_deal_id", "deal_4")
        .expect("deal_4 in HubSpot");
    let id = deal["hs_object_id"].as_str().expect("id").to_owned();
    assert!(
        world
            .hs
            .set_property("deals", &id, "dealstage", "closedwon")
    );
    let url = reqwest::Url::parse(&format!("http://{}/webhooks/hubspot", daemon.http_addr))
        .expect("webhook URL");
    let status = deliver_webhook(
        &http_client(Duration::from_secs(5)),
        &url,
        HS_SECRET,
        &[property_change_event(77, &id, "dealstage", "closedwon")],
    )
    .await
    .expect("delivered");
    assert!(status.is_success(), "{status}");
    wait_until(
        Duration::from_secs(20),
        "the stage to reach PartnerStack",
        || async {
            daemon.run_until_idle().await.expect("pass");
            world
                .ps
                .deal("deal_4")
                .and_then(|d| d["stage"].as_str().map(str::to_owned))
                == Some("won".to_owned())
        },
    )
    .await;
    assert_eq!(world.hs.objects("deals").len(), 15, "nothing duplicated");
    daemon.shutdown().await;
}

mod partnerstack {
    use std::time::Duration;

    use prmsync::connector::partnerstack::PartnerStack;
    use prmsync::connector::{ConnectorError, WriteRequest, http_client};
    use prmsync::sim::partnerstack::PartnerStackSim;
    use prmsync::sim::{Fault, Injected, SimServer, seed};
    use secrecy::SecretString;
    use serde_json::json;

    const KEY: &str = "ps-sim-key";

    async fn start() -> (PartnerStackSim, SimServer, PartnerStack) {
        let sim = PartnerStackSim::new(KEY);
        let server = SimServer::start(sim.router()).await.expect("start sim");
        let conn = PartnerStack::new(
            http_client(Duration::from_secs(5)),
            server.url("/api/v2"),
            SecretString::from(KEY),
        );
        (sim, server, conn)
    }

    fn stage(key: &str, stage: &str) -> WriteRequest {
        WriteRequest {
            key: key.into(),
            id_property: None,
            target_id: None,
            fields: json!({"stage": stage})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn partnerstack_reads_partnerships_customers_and_leads_in_pages() {
        let (sim, _server, conn) = start().await;
        for p in seed::partners(600) {
            sim.upsert_item("partnerships", p);
        }
        sim.upsert_item(
            "customers",
            json!({"key": "cust_1", "name": "Acme"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let mut page = None;
        let (mut keys, mut pages) = (std::collections::BTreeSet::new(), 0);
        loop {
            let p = conn
                .read_changes("partnerships", 0, page.as_deref())
                .await
                .expect("page");
            pages += 1;
            keys.extend(p.records.into_iter().map(|r| r.id));
            page = p.next_page;
            if page.is_none() {
                break;
            }
        }
        assert_eq!((keys.len(), pages), (600, 3), "limit 250 per page");
        let c = conn
            .read_changes("customers", 0, None)
            .await
            .expect("customers");
        assert_eq!(c.records.len(), 1);
        let l = conn.read_changes("leads", 0, None).await.expect("leads");
        assert!(l.records.is_empty());
        // Only changes at or after `since`.
        let newest = sim
            .items("partnerships")
            .iter()
            .filter_map(|p| p["updated_at"].as_i64())
            .max()
            .expect("max");
        let p = conn
            .read_changes("partnerships", newest, None)
            .await
            .expect("since");
        assert_eq!(p.records.len(), 1);
    }

    #[tokio::test]
    async fn partnerstack_patches_per_record_and_faults_lose_nothing() {
        let (sim, server, conn) = start().await;
        for d in seed::deals(5, 2) {
            sim.upsert_deal(d);
        }
        let writes = vec![
            stage("deal_1", "won"),
            stage("deal_2", "pending-legal"),
            stage("deal_404", "won"),
            stage("deal_3", "lost"),
        ];
        let r = conn.write("deals", &writes).await;
        assert!(r[0].is_ok() && r[3].is_ok());
        assert!(
            matches!(&r[1], Err(ConnectorError::Permanent(m)) if m.contains("Deals Stage list"))
        );
        assert!(matches!(&r[2], Err(ConnectorError::Permanent(m)) if m.contains("404")));
        assert_eq!(sim.stats().patches, 2);

        sim.inject([
            Injected::Fault(Fault {
                status: 429,
                retry_after: Some(5),
            }),
            Injected::RetryAtDate {
                status: 429,
                secs: 45,
            },
            Injected::Fault(Fault {
                status: 500,
                retry_after: None,
            }),
            Injected::Malformed,
        ]);
        let w = [stage("deal_4", "won")];
        let errs: Vec<ConnectorError> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(conn.write("deals", &w).await.remove(0).expect_err("fault"));
                conn.pacer().release();
            }
            v
        };
        assert_eq!(errs[0].retry_after(), Some(Duration::from_secs(5)));
        let dated = errs[1].retry_after().expect("date");
        assert!(dated > Duration::from_secs(30) && dated <= Duration::from_secs(45));
        assert!(matches!(errs[2], ConnectorError::Transient(_)));
        assert!(matches!(&errs[3], ConnectorError::Transient(m) if m.contains("unreadable")));
        conn.write("deals", &w)
            .await
            .remove(0)
            .expect("after the faults");
        assert_eq!(sim.deal("deal_4").expect("deal_4")["stage"], "won");
        assert_eq!(sim.deals().len(), 5, "PATCH never creates");

        // A PATCH that lands but whose answer is lost is safe to send again.
        sim.turbulence().lose_next_write_responses(1);
        let w = [stage("deal_5", "lost")];
        let lost = conn.write("deals", &w).await.remove(0);
        assert!(
            matches!(lost, Err(ConnectorError::Transient(_))),
            "{lost:?}"
        );
        assert_eq!(sim.deal("deal_5").expect("deal_5")["stage"], "lost");
        conn.write("deals", &w).await.remove(0).expect("again");
        assert_eq!(sim.deals().len(), 5);

        let wrong = PartnerStack::new(
            http_client(Duration::from_secs(5)),
            server.url("/api/v2"),
            SecretString::from("wrong"),
        );
        assert!(matches!(wrong.health().await, Err(ConnectorError::Auth(_))));
        assert_eq!(sim.stats().unauthorized, 1);
    }

    /// The first 429 stops the PATCH loop: the deals after it are not sent (each gets the
    /// rate limit as its error), and nothing goes to PartnerStack until the wait ends.
    #[tokio::test]
    async fn partnerstack_write_loop_stops_at_the_first_429() {
        let (sim, _server, conn) = start().await;
        for d in seed::deals(4, 2) {
            sim.upsert_deal(d);
        }
        let writes: Vec<WriteRequest> = (1..=4)
            .map(|i| stage(&format!("deal_{i}"), "won"))
            .collect();
        sim.inject([Injected::Fault(Fault {
            status: 429,
            retry_after: Some(30),
        })]);
        let before = sim.stats().requests;
        let r = conn.write("deals", &writes).await;
        assert_eq!(r.len(), 4);
        assert!(
            r.iter()
                .all(|x| matches!(x, Err(ConnectorError::RateLimited { .. }))),
            "{r:?}"
        );
        assert_eq!(sim.stats().requests - before, 1, "one request, then none");
        assert_eq!(sim.stats().patches, 0);
        let again = conn.write("deals", &writes).await;
        assert!(again.iter().all(Result::is_err), "still inside the wait");
        assert_eq!(
            sim.stats().requests - before,
            1,
            "nothing sent inside the wait"
        );
        conn.pacer().release();
        assert!(conn.write("deals", &writes).await.iter().all(Result::is_ok));
        assert_eq!(sim.stats().patches, 4);
    }

    /// Custom `fields` go out as the contract's array, merged into the deal as it is at write
    /// time: a partner's edit after the poll survives, and only prmsync's entries change.
    #[tokio::test]
    async fn partnerstack_custom_fields_are_an_array_merged_into_a_fresh_read() {
        let (sim, server, conn) = start().await;
        let mut deal = seed::deals(1, 1).remove(0);
        deal.insert(
            "fields".into(),
            json!([{"key": "partner_note", "value": "first"}]),
        );
        let key = sim.upsert_deal(deal);
        let polled = conn.read_changes("deals", 0, None).await.expect("poll");
        assert_eq!(polled.records.len(), 1);
        // The partner edits the deal after prmsync polled it.
        let mut edited = sim.deal(&key).expect("deal");
        edited.insert(
            "fields".into(),
            json!([{"key": "partner_note", "value": "edited"}]),
        );
        sim.upsert_deal(edited);
        let owned = json!({"fields": {"registration_status": "approved"}});
        let w = WriteRequest {
            key: key.clone(),
            id_property: None,
            target_id: None,
            fields: owned.as_object().cloned().unwrap_or_default(),
        };
        conn.write("deals", &[w]).await.remove(0).expect("patched");
        let f = sim.custom_fields(&key);
        assert_eq!(f["partner_note"], "edited", "the partner's edit is kept");
        assert_eq!(f["registration_status"], "approved");
        // The simulator refuses the object form, as the contract's array type does.
        let bad = reqwest::Client::new()
            .patch(server.url(&format!("/api/v2/deals/{key}")))
            .bearer_auth(KEY)
            .json(&json!({"fields": {"registration_status": "x"}}))
            .send()
            .await
            .expect("answered");
        assert_eq!(bad.status().as_u16(), 400);
    }

    /// `partnerstack.public_key` switches to HTTP Basic (public key : secret key), which the
    /// vendor's reference pages show; a wrong pair is an auth error.
    #[tokio::test]
    async fn partnerstack_basic_auth_with_the_public_key_from_the_config() {
        use prmsync::config::{Environment, PrmConfig, load};
        let sim = PartnerStackSim::new(KEY).with_public_key("pk_live_1");
        let server = SimServer::start(sim.router()).await.expect("start sim");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prmsync.toml");
        let toml = format!(
            "[partnerstack]\nbase_url = \"{}\"\napi_key = {{ env = \"PS_SECRET\" }}\npublic_key = {{ env = \"PS_PUBLIC\" }}\n\n[hubspot]\naccess_token = {{ env = \"PS_SECRET\" }}\n",
            server.url("/api/v2")
        );
        std::fs::write(&path, toml).expect("write config");
        let env = |public: &str| Environment {
            vars: [("PS_SECRET", KEY), ("PS_PUBLIC", public)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let config = load(&path, &env("pk_live_1")).expect("public_key is a known key");
        assert!(matches!(&config.prm, PrmConfig::PartnerStack(p) if p.public_key.is_some()));
        let (prm, _) = prmsync::app::connectors(&config, None).expect("connectors");
        prm.health().await.expect("Basic public:secret is accepted");
        let config = load(&path, &env("pk_wrong")).expect("config");
        let (prm, _) = prmsync::app::connectors(&config, None).expect("connectors");
        assert!(matches!(prm.health().await, Err(ConnectorError::Auth(_))));
        assert_eq!(sim.stats().unauthorized, 1);
    }
}

mod rest {
    use std::time::Duration;

    use prmsync::config::{Environment, PrmConfig, load};
    use prmsync::connector::rest::{Rest, RestProfile};
    use prmsync::connector::{ConnectorError, WriteRequest, http_client};
    use prmsync::sim::rest::RestPrmSim;
    use prmsync::sim::{Fault, Injected, SimServer};
    use serde_json::{Map, Value, json};

    const KEY: &str = "rest-prm-key";

    /// The shipped profile (tests/fixtures/rest-prm.toml), pointed at `server`.
    fn profile_for(server: &SimServer) -> RestProfile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rest-prm.toml");
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rest-prm.toml");
        std::fs::copy(fixture, &path).expect("copy fixture");
        let env = Environment {
            vars: [
                ("REST_PRM_KEY", KEY.to_owned()),
                ("HS_TOKEN", "t".to_owned()),
                ("PRMSYNC__REST__BASE_URL", server.url("/api").to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        let config = load(&path, &env).expect("the shipped profile is valid");
        let PrmConfig::Rest(r) = config.prm else {
            panic!("rest PRM expected")
        };
        assert_eq!(r.rate_limit_per_second, Some(5));
        r.profile
    }

    async fn start() -> (RestPrmSim, SimServer, Rest) {
        let sim = RestPrmSim::new(KEY);
        let server = SimServer::start(sim.router()).await.expect("start sim");
        let conn = Rest::new(http_client(Duration::from_secs(5)), profile_for(&server));
        (sim, server, conn)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn write(id: &str, stage: &str) -> WriteRequest {
        WriteRequest {
            key: id.into(),
            id_property: None,
            target_id: None,
            fields: obj(json!({"stage": stage, "crm_id": format!("crm-{id}")})),
        }
    }

    async fn read_all(conn: &Rest, object: &str, since: i64) -> (usize, Vec<String>) {
        let (mut page, mut pages, mut ids) = (None, 0, Vec::new());
        loop {
            let p = conn
                .read_changes(object, since, page.as_deref())
                .await
                .expect("page");
            pages += 1;
            ids.extend(p.records.into_iter().map(|r| r.id));
            page = p.next_page;
            if page.is_none() {
                return (pages, ids);
            }
        }
    }

    #[tokio::test]
    async fn rest_prm_deals_reach_hubspot_and_the_stage_comes_back() {
        let world = crate::harness::World::seeded(0).await;
        world.hs.set_search_rate(None);
        let (sim, server, _) = start().await;
        for i in 0..7 {
            sim.put(
                "deals",
                &format!("d{i}"),
                obj(json!({"name": format!("Deal {i}"), "amount": "99.5", "stage": "registered"})),
            );
        }
        let mut config = world.config();
        config.prm = PrmConfig::Rest(prmsync::config::RestConfig {
            profile: profile_for(&server),
            rate_limit_per_second: None,
            webhook_secret: None,
        });
        config.daemon.mappings_dir = Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-rest"),
        );
        let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
            .await
            .expect("daemon starts with the rest PRM");
        daemon.run_until_idle().await.expect("first pass");
        assert_eq!(world.hs.objects("deals").len(), 7);
        let d3 = world.hs.find("deals", "prm_deal_id", "d3").expect("d3");
        assert_eq!(
            (d3["dealname"].as_str(), d3["amount"].as_str()),
            (Some("Deal 3"), Some("99.5"))
        );
        let id = d3["hs_object_id"].as_str().expect("id").to_owned();
        assert!(
            world
                .hs
                .set_property("deals", &id, "dealstage", "closedwon")
        );
        daemon.run_until_idle().await.expect("second pass");
        let back = sim
            .items("deals")
            .into_iter()
            .find(|d| d["id"] == "d3")
            .expect("d3");
        assert_eq!(back["stage"], "won");
        assert_eq!(
            sim.items("deals").len(),
            7,
            "the PUT updated, never created"
        );
        daemon.shutdown().await;
    }

    /// `rest.webhook_secret` opens `/webhooks/rest` on the real listener: a signed event is parsed
    /// by the REST connector with the profile, staged, and synced without any poll result.
    #[tokio::test]
    async fn rest_prm_webhook_is_signed_parsed_by_the_profile_and_synced() {
        use prmsync::webhook::PRM_SIGNATURE_HEADER;
        use prmsync::webhook::signature::body_hmac;
        let world = crate::harness::World::seeded(0).await;
        world.hs.set_search_rate(None);
        let (_sim, server, _) = start().await;
        let mut config = world.config();
        config.prm = PrmConfig::Rest(prmsync::config::RestConfig {
            profile: profile_for(&server),
            rate_limit_per_second: None,
            webhook_secret: Some("rest-hook".to_owned().into()),
        });
        config.daemon.mappings_dir = Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-rest"),
        );
        let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
            .await
            .expect("daemon starts");
        let url = format!("http://{}/webhooks/rest", daemon.http_addr);
        let post = |body: Vec<u8>, secret: &'static [u8]| {
            let url = url.clone();
            async move {
                let r = http_client(Duration::from_secs(5))
                    .post(url)
                    .header(PRM_SIGNATURE_HEADER, body_hmac(secret, &body))
                    .body(body)
                    .send()
                    .await
                    .expect("answered");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let event = json!({"object": "deals", "action": "upsert", "data": {
            "id": "w1", "name": "Webhook deal", "amount": "10", "stage": "registered",
            "updated_at": "2026-11-30T10:00:00Z"}});
        let body = serde_json::to_vec(&event).expect("json");
        assert_eq!(post(body.clone(), b"wrong").await.0, 401);
        let (status, answer) = post(body, b"rest-hook").await;
        assert_eq!((status, answer["new"].as_u64()), (200, Some(1)), "{answer}");
        let no_time =
            serde_json::to_vec(&json!({"object": "deals", "data": {"id": "w2"}})).expect("json");
        let (status, answer) = post(no_time, b"rest-hook").await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("updated_at"))
        );
        daemon.run_until_idle().await.expect("sync");
        let deal = world
            .hs
            .find("deals", "prm_deal_id", "w1")
            .expect("created from the webhook");
        assert_eq!(deal["dealname"], "Webhook deal");
        daemon.shutdown().await;
    }

    /// `rest.rate_limit_per_second` paces every request, writes one by one included: six
    /// requests at 5 per second cannot take less than one second (a lower bound only).
    #[tokio::test]
    async fn rest_rate_limit_per_second_paces_every_request() {
        let sim = RestPrmSim::new(KEY);
        let server = SimServer::start(sim.router()).await.expect("start sim");
        for i in 0..6 {
            sim.put(
                "deals",
                &format!("r{i}"),
                obj(json!({"stage": "registered"})),
            );
        }
        let world = crate::harness::World::seeded(0).await;
        let mut config = world.config();
        config.prm = PrmConfig::Rest(prmsync::config::RestConfig {
            profile: profile_for(&server),
            rate_limit_per_second: Some(5),
            webhook_secret: None,
        });
        let (prm, _) = prmsync::app::connectors(&config, None).expect("connectors");
        let writes: Vec<WriteRequest> = (0..6).map(|i| write(&format!("r{i}"), "won")).collect();
        let started = std::time::Instant::now();
        let results = prm.write("deals", &writes).await.expect("batch");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "six requests at 5/s: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn rest_profile_reads_with_page_tokens_and_offsets() {
        let (sim, _server, conn) = start().await;
        conn.health().await.expect("health");
        for i in 0..250 {
            sim.put(
                "deals",
                &format!("d{i:03}"),
                obj(json!({"stage": "registered"})),
            );
        }
        for i in 0..130 {
            sim.put("partners", &format!("p{i:03}"), obj(json!({"name": "x"})));
        }
        let (pages, ids) = read_all(&conn, "deals", 0).await;
        assert_eq!((pages, ids.len()), (3, 250));
        let (pages, ids) = read_all(&conn, "partners", 0).await;
        assert_eq!((pages, ids.len()), (2, 130));
        let since = conn
            .read_changes("deals", 0, None)
            .await
            .expect("first")
            .records[10]
            .modified_ms;
        let (_, ids) = read_all(&conn, "deals", since).await;
        assert_eq!(ids.len(), 240, "updated_since is inclusive");
        assert!(matches!(
            conn.read_changes("invoices", 0, None).await,
            Err(ConnectorError::Permanent(m)) if m.contains("no object")
        ));
        assert!(matches!(
            conn.write("partners", &[write("p1", "won")]).await,
            Err(ConnectorError::Permanent(m)) if m.contains("read-only")
        ));
    }

    #[tokio::test]
    async fn rest_write_loop_stops_at_the_first_429() {
        let (sim, _server, conn) = start().await;
        let writes: Vec<WriteRequest> = (1..=3)
            .map(|i| write(&format!("d{i}"), "registered"))
            .collect();
        sim.inject([Injected::Fault(Fault {
            status: 429,
            retry_after: Some(30),
        })]);
        let before = sim.stats().requests;
        let r = conn.write("deals", &writes).await.expect("answered");
        assert!(
            r.iter()
                .all(|x| matches!(x, Err(ConnectorError::RateLimited { .. }))),
            "{r:?}"
        );
        assert_eq!(sim.stats().requests - before, 1, "one request, then none");
        assert_eq!(sim.items("deals").len(), 0);
        conn.pacer().release();
        let r = conn.write("deals", &writes).await.expect("answered");
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        assert_eq!(sim.items("deals").len(), 3);
    }

    #[tokio::test]
    async fn rest_profile_upserts_per_record_and_faults_lose_nothing() {
        let (sim, server, conn) = start().await;
        sim.put("deals", "d1", obj(json!({"stage": "registered"})));
        let r = conn
            .write(
                "deals",
                &[
                    write("d1", "approved"),
                    write("d2", "maybe"),
                    write("d3", "won"),
                ],
            )
            .await
            .expect("answered");
        assert!(r[0].as_ref().is_ok_and(|a| !a.created));
        assert!(matches!(&r[1], Err(ConnectorError::Permanent(m)) if m.contains("422")));
        assert!(r[2].as_ref().is_ok_and(|a| a.created && a.id == "d3"));
        assert_eq!(sim.items("deals").len(), 2);

        sim.inject([
            Injected::Fault(Fault {
                status: 429,
                retry_after: Some(2),
            }),
            Injected::RetryAtDate {
                status: 429,
                secs: 30,
            },
            Injected::Fault(Fault {
                status: 503,
                retry_after: None,
            }),
            Injected::Malformed,
        ]);
        let w = [write("d2", "registered")];
        let mut errs = Vec::new();
        for _ in 0..4 {
            let mut r = conn.write("deals", &w).await.expect("answered");
            errs.push(r.remove(0).expect_err("fault"));
            conn.pacer().release();
        }
        assert_eq!(errs[0].retry_after(), Some(Duration::from_secs(2)));
        assert!(
            errs[1]
                .retry_after()
                .is_some_and(|d| d > Duration::from_secs(20))
        );
        assert!(matches!(errs[2], ConnectorError::Transient(_)));
        assert!(matches!(&errs[3], ConnectorError::Transient(m) if m.contains("unreadable")));
        conn.write("deals", &w)
            .await
            .expect("answered")
            .remove(0)
            .expect("after faults");
        assert_eq!(sim.items("deals").len(), 3);
        assert_eq!(sim.stats().created, 2);

        sim.turbulence().lose_next_write_responses(1);
        let w = [write("d4", "registered")];
        assert!(conn.write("deals", &w).await.expect("answered")[0].is_err());
        let r = conn.write("deals", &w).await.expect("answered").remove(0);
        assert!(r.is_ok_and(|a| !a.created), "the lost PUT had created it");
        assert_eq!((sim.items("deals").len(), sim.stats().created), (4, 3));

        // A wrong key is an authentication error, and nothing is written.
        let mut profile = profile_for(&server);
        profile.auth_value = secrecy::SecretString::from("prm-key wrong");
        let wrong = Rest::new(http_client(Duration::from_secs(5)), profile);
        let r = wrong
            .write("deals", &[write("d9", "registered")])
            .await
            .expect("answered");
        assert!(matches!(&r[0], Err(ConnectorError::Auth(_))), "{r:?}");
        assert_eq!((sim.stats().unauthorized, sim.items("deals").len()), (1, 4));
    }
}

/// The world's config with a Salesforce simulator as the CRM (refresh-token flow).
pub(crate) fn salesforce_config(
    world: &crate::harness::World,
    sf_server: &SimServer,
) -> prmsync::config::Config {
    use prmsync::config::{CrmConfig, SalesforceAuthConfig, SalesforceConfig};
    let mut config = world.config();
    config.daemon.mappings_dir = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-salesforce"),
    );
    config.daemon.state_key = Some(SecretString::from(STATE_KEY));
    config.crm = CrmConfig::Salesforce(SalesforceConfig {
        login_url: sf_server.url(""),
        auth: SalesforceAuthConfig::RefreshToken {
            client_id: CLIENT_ID.into(),
            client_secret: Some(SecretString::from(CLIENT_SECRET)),
            refresh_token: SecretString::from(REFRESH),
        },
        audience: None,
        rate_limit: None,
    });
    config
}

/// A daemon syncing the world's PartnerStack with a Salesforce simulator (refresh-token flow).
async fn salesforce_daemon(
    world: &crate::harness::World,
    sf_server: &SimServer,
) -> prmsync::app::Daemon {
    prmsync::app::Daemon::start(
        salesforce_config(world, sf_server),
        prmsync::engine::system_clock(),
    )
    .await
    .expect("daemon starts with Salesforce as the CRM")
}

/// One owner of the token per state file: `prmsync plan` never sends the refresh grant (which
/// rotates the token under the daemon); it uses the session the daemon saved, and without one
/// it says why. The daemon keeps working after plans, across session expiries.
#[tokio::test]
async fn plan_never_rotates_the_salesforce_token_the_daemon_owns() {
    let world = crate::harness::World::seeded(3).await;
    let sim = SalesforceSim::new(sf_auth(true, false));
    let sf_server = SimServer::start(sim.router())
        .await
        .expect("start Salesforce sim");
    // The plan runs a flow with a Salesforce match rule, so it must search Salesforce.
    let mut config = salesforce_config(&world, &sf_server);
    config.daemon.mappings_dir = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mappings-match-salesforce"),
    );
    world.ps.upsert_item(
        "partnerships",
        json!({"key": "part_1", "status": "active", "group": {"name": "Gold"},
               "company": {"name": "Acme", "website": "https://acme.example"}})
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    let err = prmsync::app::plan(&config, None)
        .await
        .expect_err("no saved session yet");
    assert!(format!("{err:#}").contains("does not refresh"), "{err:#}");
    assert_eq!(sim.stats().refresh_grants, 0);

    let daemon = salesforce_daemon(&world, &sf_server).await;
    daemon.run_until_idle().await.expect("first pass");
    let grants = sim.stats().refresh_grants;
    let token = sim.current_refresh_token();
    let before = sim.stats().api_requests;
    let plans = prmsync::app::plan(&config, None).await.expect("plan runs");
    assert_eq!(plans.len(), 1);
    assert!(
        sim.stats().api_requests > before,
        "plan searched Salesforce"
    );
    assert_eq!(sim.stats().refresh_grants, grants, "plan refreshed nothing");
    assert_eq!(sim.current_refresh_token(), token, "nothing rotated");

    sim.expire_sessions();
    let err = prmsync::app::plan(&config, None)
        .await
        .expect_err("the saved session expired");
    assert!(format!("{err:#}").contains("does not refresh"), "{err:#}");
    world
        .ps
        .upsert_deal(prmsync::sim::seed::deals(4, 1).remove(3));
    let report = daemon.run_until_idle().await.expect("the daemon refreshes");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(
        sim.stats().invalid_grants,
        0,
        "its token was never rotated away"
    );
    assert_eq!(sim.records("Opportunity").len(), 4);
    daemon.shutdown().await;
}

/// The owner re-reads the saved token before each refresh: a token rotated by another owner is
/// picked up instead of dying on the stale in-memory copy.
#[tokio::test]
async fn salesforce_rereads_the_saved_token_before_each_refresh() {
    let sf = salesforce(true).await;
    sf.conn.health().await.expect("health");
    let store: Arc<dyn TokenStore> = sf.tokens.clone();
    let other = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &sf.server.url(""),
        refresh_grant(REFRESH),
        Some(store),
    );
    other
        .health()
        .await
        .expect("the other owner rotates the saved token");
    assert_eq!(sf.sim.stats().refresh_grants, 2);
    sf.sim.expire_sessions();
    sf.conn
        .read_changes("Opportunity", 0, &[], None)
        .await
        .expect("the first owner reads the rotated token");
    assert_eq!(sf.sim.stats().invalid_grants, 0);
}

/// A configured token that changed since one was saved wins (the operator re-authorised);
/// the same configured token keeps using the saved, newer one.
#[tokio::test]
async fn a_newly_configured_refresh_token_wins_over_the_saved_one() {
    let sim = SalesforceSim::new(sf_auth(false, false));
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let tokens = Arc::new(MemoryTokens::default());
    tokens.put(
        "salesforce.refresh_token",
        "5Aep.revoked",
        &fingerprint(&SecretString::from("5Aep.previously-configured")),
    );
    let store: Arc<dyn TokenStore> = tokens.clone();
    let conn = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        refresh_grant(REFRESH),
        Some(store.clone()),
    );
    conn.health().await.expect("the configured token is used");
    assert_eq!(sim.stats().invalid_grants, 0);
    // Saved from this configuration: the saved one is used (here a dead one, to tell them apart).
    tokens.put(
        "salesforce.refresh_token",
        "5Aep.revoked",
        &fingerprint(&SecretString::from(REFRESH)),
    );
    let again = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        refresh_grant(REFRESH),
        Some(store),
    );
    assert!(matches!(again.health().await, Err(ConnectorError::Auth(_))));
    assert_eq!(sim.stats().invalid_grants, 1);
}

#[tokio::test]
async fn the_engine_sends_nothing_to_salesforce_before_retry_after_ends() {
    let world = crate::harness::World::seeded(5).await;
    let sim = SalesforceSim::new(sf_auth(false, false));
    let sf_server = SimServer::start(sim.router())
        .await
        .expect("start Salesforce sim");
    sim.inject([
        Injected::Fault(Fault {
            status: 429,
            retry_after: Some(1),
        }),
        Injected::RetryAtDate {
            status: 429,
            secs: 2,
        },
    ]);
    let daemon = salesforce_daemon(&world, &sf_server).await;
    daemon.run_until_idle().await.expect("passes");
    assert_eq!(
        sim.records("Opportunity").len(),
        5,
        "everything arrived in the end"
    );
    let log: Vec<_> = sim
        .request_log()
        .into_iter()
        .filter(|r| r.path.starts_with("/services/data/"))
        .collect();
    let limited: Vec<usize> = (0..log.len()).filter(|i| log[*i].status == 429).collect();
    assert_eq!(limited.len(), 2, "{log:?}");
    let next = |i: usize| log.get(i + 1).expect("a request after the 429").at_ms;
    assert!(
        next(limited[0]) - log[limited[0]].at_ms >= 1000,
        "Retry-After: 1 honoured"
    );
    let said = (log[limited[1]].at_ms + 2000) / 1000 * 1000;
    assert!(next(limited[1]) >= said, "the HTTP-date honoured");
    daemon.shutdown().await;
}

#[tokio::test]
async fn hubspot_webhooks_on_every_change_bring_sales_edits_back_and_echoes_write_nothing() {
    use crate::harness::{HS_SECRET, World, wait_until};

    let world = World::seeded(10).await;
    world.hs.enable_webhooks();
    let daemon = world.daemon().await;
    daemon.run_until_idle().await.expect("first pass");
    // A creation event per deal, and property changes for the registration decisions.
    let queued = world.hs.pending_events();
    assert!(
        queued >= 10,
        "one creation event per deal prmsync wrote: {queued}"
    );
    let patches = world.ps.stats().patches;
    for (key, stage) in [("deal_2", "closedwon"), ("deal_7", "closedlost")] {
        let d = world.hs.find("deals", "prm_deal_id", key).expect("deal");
        let id = d["hs_object_id"].as_str().expect("id").to_owned();
        assert!(world.hs.set_property("deals", &id, "dealstage", stage));
    }
    let url = reqwest::Url::parse(&format!("http://{}/webhooks/hubspot", daemon.http_addr))
        .expect("webhook URL");
    let sent = world
        .hs
        .deliver_pending(&http_client(Duration::from_secs(5)), &url, HS_SECRET)
        .await
        .expect("delivered");
    assert_eq!((sent, world.hs.pending_events()), (queued + 2, 0));
    let stage = |k: &str| {
        world
            .ps
            .deal(k)
            .and_then(|d| d["stage"].as_str().map(str::to_owned))
    };
    wait_until(
        Duration::from_secs(20),
        "both stages in PartnerStack",
        || async {
            daemon.run_until_idle().await.expect("pass");
            stage("deal_2").as_deref() == Some("won") && stage("deal_7").as_deref() == Some("lost")
        },
    )
    .await;
    assert_eq!(
        world.ps.stats().patches - patches,
        2,
        "the echoes of prmsync's own writes wrote nothing"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn salesforce_refreshes_once_then_reports_a_session_the_org_keeps_rejecting() {
    let mut auth = sf_auth(false, false);
    auth.token_ttl_ms = 0; // every session is already expired when it is used
    let sim = SalesforceSim::new(auth);
    let server = SimServer::start(sim.router()).await.expect("start sim");
    let conn = Salesforce::new(
        http_client(Duration::from_secs(5)),
        &server.url(""),
        refresh_grant(REFRESH),
        None,
    );
    let err = conn.health().await.expect_err("no usable session");
    assert!(
        matches!(err, ConnectorError::Auth(ref m) if m.contains("freshly issued")),
        "{err}"
    );
    let s = sim.stats();
    assert_eq!(
        (s.refresh_grants, s.invalid_sessions),
        (2, 2),
        "one retry, no loop"
    );
}

/// `prmsync auth status|reset` on a state file holding a sealed Salesforce token: status names it
/// (never its value) and whether it descends from the configured token; reset deletes it.
#[tokio::test]
async fn auth_status_and_reset_on_the_saved_salesforce_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state.db");
    let store = prmsync::store::Store::open(&state).expect("state");
    let tokens = prmsync::credentials::StateTokens::owner(
        store.clone(),
        Some(&SecretString::from(STATE_KEY)),
    );
    tokens
        .save(
            "salesforce.refresh_token",
            &SecretString::from("5Aep.rotated-secret"),
            &fingerprint(&SecretString::from(REFRESH)),
        )
        .await
        .expect("saved");
    drop(tokens);
    drop(store);
    let path = dir.path().join("prmsync.toml");
    let toml = format!(
        "[daemon]\nstate_path = \"{}\"\nstate_key = {{ env = \"SK\" }}\n\n[partnerstack]\napi_key = {{ env = \"PK\" }}\n\n[salesforce]\nauth = \"refresh_token\"\nclient_id = \"cid\"\nrefresh_token = {{ env = \"RT\" }}\n",
        state.display()
    );
    std::fs::write(&path, toml).expect("config");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
            .args(args)
            .env("SK", STATE_KEY)
            .env("PK", "k")
            .env("RT", REFRESH)
            .output()
            .expect("run prmsync")
    };
    let p = path.to_str().expect("utf-8");
    let out = run(&["auth", "--config", p, "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.contains("salesforce.refresh_token") && text.contains("sealed"),
        "{text}"
    );
    assert!(text.contains("configured token: current"), "{text}");
    assert!(!text.contains("rotated-secret"), "never the value: {text}");
    let out = run(&["auth", "--config", p, "reset"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deleted 1"),
        "{out:?}"
    );
    let out = run(&["auth", "--config", p, "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no saved credentials"),
        "{out:?}"
    );
}

/// A deal without a key and one without a modification time are dead-lettered with their raw
/// payload, once, and every other deal syncs: one bad item no longer fails the object's poll.
#[tokio::test]
async fn unreadable_list_items_are_dead_lettered_once_and_the_poll_goes_on() {
    let world = crate::harness::World::seeded(3).await;
    let raw = |v: Value| v.as_object().cloned().unwrap_or_default();
    let now = jiff::Timestamp::now().as_millisecond();
    world.ps.insert_raw(
        "deals",
        raw(json!({"account_name": "No Key Inc", "updated_at": now})),
    );
    world.ps.insert_raw(
        "deals",
        raw(json!({"key": "deal_untimed", "account_name": "Untimed"})),
    );
    let daemon = world.daemon().await;
    daemon.run_until_idle().await.expect("first pass");
    assert_eq!(
        world.hs.objects("deals").len(),
        3,
        "the readable deals synced"
    );
    let letters = || async {
        daemon
            .engine
            .store()
            .dead_letters(50)
            .await
            .expect("dead letters")
            .into_iter()
            .filter(|d| d.origin == "poll")
            .collect::<Vec<_>>()
    };
    let first = letters().await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().any(|d| d.record_id == "deal_untimed"));
    assert!(first.iter().any(|d| d.reason.contains("no key")));
    let shown = daemon
        .engine
        .store()
        .dead_letter(first[0].id)
        .await
        .expect("show")
        .expect("row");
    assert!(
        shown.payload.to_string().contains("account_name"),
        "raw payload kept"
    );
    daemon.run_until_idle().await.expect("second pass");
    assert_eq!(letters().await.len(), 2, "met again, dead-lettered once");
    daemon.shutdown().await;
}
