//! The webhook endpoints: signatures, malformed and oversized bodies, duplicates, durability.

use prmsync::sim::hubspot::{deliver_webhook, property_change_event};
use prmsync::webhook::PRM_SIGNATURE_HEADER;
use prmsync::webhook::signature::{body_hmac, hubspot_v3};
use serde_json::{Value, json};

use crate::harness::{HS_SECRET, World};

fn client() -> reqwest::Client {
    prmsync::connector::http_client(std::time::Duration::from_secs(10))
}

async fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = client().post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(Value::Null);
    (status, json)
}

fn v3_headers(url: &str, body: &[u8], secret: &str, ts: i64) -> Vec<(&'static str, String)> {
    let ts = ts.to_string();
    vec![
        ("content-type", "application/json".into()),
        (
            "x-hubspot-signature-v3",
            hubspot_v3(secret.as_bytes(), "POST", url, body, &ts),
        ),
        ("x-hubspot-request-timestamp", ts),
    ]
}

fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[tokio::test]
async fn health_endpoints_answer() {
    let w = World::seeded(0).await;
    let d = w.daemon().await;
    let base = format!("http://{}", d.admin_addr);
    let live = client().get(format!("{base}/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    d.shutdown().await;
}

#[tokio::test]
async fn metrics_expose_queue_depths_cursors_and_decisions() {
    let w = World::seeded(6).await;
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    let resp = client()
        .get(format!("http://{}/metrics", d.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for line in [
        "prmsync_inbox_pending 0",
        "prmsync_outbox_depth 0",
        "prmsync_dead_letters 0",
        "# TYPE prmsync_cursor_age_seconds gauge",
        "prmsync_ledger_actions_total{flow=\"deal-registration\",direction=\"to_target\",action=\"created\"} 6",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert!(
        text.contains("prmsync_cursor_age_seconds{system=\"partnerstack\",object=\"deals\"}"),
        "{text}"
    );
    assert!(text.contains("prmsync_registrations{status="), "{text}");
    d.shutdown().await;
}

#[tokio::test]
async fn hubspot_webhooks_are_verified_before_anything_is_stored() {
    let w = World::seeded(0).await;
    let d = w.daemon().await;
    let url = format!("http://{}/webhooks/hubspot", d.http_addr);
    let body = serde_json::to_vec(&[property_change_event(
        7,
        "9000000001",
        "dealstage",
        "closedwon",
    )])
    .unwrap();

    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "good signature",
            v3_headers(&url, &body, HS_SECRET, now()),
            body.clone(),
            200,
        ),
        (
            "wrong secret",
            v3_headers(&url, &body, "not-the-secret", now()),
            body.clone(),
            401,
        ),
        (
            "stale timestamp",
            v3_headers(&url, &body, HS_SECRET, now() - 6 * 60 * 1000),
            body.clone(),
            401,
        ),
        ("no signature", vec![], body.clone(), 401),
        (
            "tampered body",
            v3_headers(&url, &body, HS_SECRET, now()),
            b"[]".to_vec(),
            401,
        ),
        (
            "malformed JSON, signed",
            v3_headers(&url, b"[{oops", HS_SECRET, now()),
            b"[{oops".to_vec(),
            400,
        ),
        (
            "not an array, signed",
            v3_headers(&url, b"{}", HS_SECRET, now()),
            b"{}".to_vec(),
            400,
        ),
        (
            "event without objectId, signed",
            v3_headers(&url, br#"[{"eventId":1}]"#, HS_SECRET, now()),
            br#"[{"eventId":1}]"#.to_vec(),
            400,
        ),
    ];
    for (name, headers, body, want) in cases {
        let (status, json) = post(&url, &headers, body).await;
        assert_eq!(status, want, "{name}: {json}");
        if want != 200 {
            assert!(
                json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{name} explains itself: {json}"
            );
        }
    }
    let status = d.engine.store().status(0).await.unwrap();
    assert_eq!(
        status.inbox_pending, 1,
        "only the verified event was stored"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn duplicate_deliveries_are_stored_once() {
    let w = World::seeded(0).await;
    let d = w.daemon().await;
    let url: reqwest::Url = format!("http://{}/webhooks/hubspot", d.http_addr)
        .parse()
        .unwrap();
    let event = property_change_event(99, "9000000001", "dealstage", "closedwon");
    for _ in 0..3 {
        let s = deliver_webhook(&client(), &url, HS_SECRET, std::slice::from_ref(&event))
            .await
            .unwrap();
        assert_eq!(s, 200);
    }
    assert_eq!(d.engine.store().status(0).await.unwrap().inbox_pending, 1);
    d.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let w = World::seeded(0).await;
    let d = w.daemon().await;
    let url = format!("http://{}/webhooks/hubspot", d.http_addr);
    let body = vec![b' '; 2 * 1024 * 1024];
    let (status, _) = post(&url, &v3_headers(&url, &body, HS_SECRET, now()), body).await;
    assert_eq!(status, 413);
    assert_eq!(d.engine.store().status(0).await.unwrap().inbox_pending, 0);
    d.shutdown().await;
}

#[tokio::test]
async fn partnerstack_webhook_is_signed_and_syncs_the_deal() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    #[allow(irrefutable_let_patterns)] // one variant today; more systems come
    if let prmsync::config::PrmConfig::PartnerStack(p) = &mut config.prm {
        p.webhook_secret = Some("ps-hook-secret".to_owned().into());
    }
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .unwrap();
    let url = format!("http://{}/webhooks/partnerstack", d.http_addr);
    let mut deal = prmsync::sim::seed::deals(1, 1).remove(0);
    deal.insert("updated_at".into(), json!(now()));
    let body = serde_json::to_vec(&json!({"event": "deal.updated", "data": deal})).unwrap();

    let (status, _) = post(
        &url,
        &[(PRM_SIGNATURE_HEADER, body_hmac(b"wrong", &body))],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, json) = post(
        &url,
        &[(PRM_SIGNATURE_HEADER, body_hmac(b"ps-hook-secret", &body))],
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["new"], 1);
    // Partnership, customer and lead events are read and staged too (the connector's parser).
    for (event, key) in [
        ("partnership.created", "part_1"),
        ("customer_updated", "cust_1"),
        ("lead.created", "lead_1"),
    ] {
        let body =
            serde_json::to_vec(&json!({"event": event, "data": {"key": key, "updated_at": now()}}))
                .unwrap();
        let (status, json) = post(
            &url,
            &[(PRM_SIGNATURE_HEADER, body_hmac(b"ps-hook-secret", &body))],
            body,
        )
        .await;
        assert_eq!(
            (status, json["new"].as_u64()),
            (200, Some(1)),
            "{event}: {json}"
        );
    }
    let pending = d.engine.store().status(now()).await.unwrap();
    assert!(pending.inbox_pending >= 3, "{pending:?}");
    // Each reached the engine's inbox as a change of its own object, keyed by the record.
    let staged: Vec<(String, String)> = d
        .engine
        .store()
        .pending_inbox(100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.change.object.object, i.change.record.id))
        .collect();
    for (object, key) in [
        ("deals", "deal_1"),
        ("partnerships", "part_1"),
        ("customers", "cust_1"),
        ("leads", "lead_1"),
    ] {
        assert!(
            staged.contains(&(object.to_owned(), key.to_owned())),
            "{object} {key}: {staged:?}"
        );
    }
    let bad =
        serde_json::to_vec(&json!({"event": "partnership.updated", "data": {"key": "p"}})).unwrap();
    let (status, _) = post(
        &url,
        &[(PRM_SIGNATURE_HEADER, body_hmac(b"ps-hook-secret", &bad))],
        bad,
    )
    .await;
    assert_eq!(
        status, 400,
        "a synced event without a time is refused, not dropped"
    );
    let (status, json) = post(
        &url,
        &[(
            PRM_SIGNATURE_HEADER,
            body_hmac(b"ps-hook-secret", b"{\"event\""),
        )],
        b"{\"event\"".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("malformed JSON")),
        "{json}"
    );
    let ignored = serde_json::to_vec(&json!({"event": "agreement.accepted", "data": {}})).unwrap();
    let (status, _) = post(
        &url,
        &[(PRM_SIGNATURE_HEADER, body_hmac(b"ps-hook-secret", &ignored))],
        ignored,
    )
    .await;
    assert_eq!(status, 200, "events we do not sync are acknowledged");

    // The webhook alone (the PRM simulator has no deals) is enough to create the CRM deal.
    d.run_until_idle().await.unwrap();
    assert!(w.hs.find("deals", "prm_deal_id", "deal_1").is_some());
    d.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_refused_when_not_configured() {
    let w = World::seeded(0).await;
    let d = w.daemon().await;
    let (status, json) = post(
        &format!("http://{}/webhooks/partnerstack", d.http_addr),
        &[],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(json["error"].as_str().unwrap().contains("webhook_secret"));
    d.shutdown().await;
}
