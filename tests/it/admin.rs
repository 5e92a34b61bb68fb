//! The admin listener: health and metrics apart from the webhooks, loopback unless configured,
//! and `/readyz` turning unready during drain and on a (nearly) full disk.

use std::time::Duration;

use prmsync::app::Daemon;
use prmsync::config::{Environment, load};
use prmsync::engine::system_clock;

use crate::harness::World;

fn client() -> reqwest::Client {
    prmsync::connector::http_client(Duration::from_secs(5))
}

async fn get(url: String) -> (u16, String) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn health_and_metrics_answer_on_the_admin_listener_only() {
    let w = World::seeded(3).await;
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    let admin = format!("http://{}", d.admin_addr);
    assert_eq!(get(format!("{admin}/livez")).await.0, 200);
    assert_eq!(get(format!("{admin}/readyz")).await, (200, "ready".into()));
    let (status, metrics) = get(format!("{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("prmsync_outbox_depth"), "{metrics}");
    // The internet-facing listener serves webhooks only.
    let hooks = format!("http://{}", d.http_addr);
    for path in ["/metrics", "/readyz", "/livez"] {
        assert_eq!(get(format!("{hooks}{path}")).await.0, 404, "{path}");
    }
    d.shutdown().await;
}

#[tokio::test]
async fn readyz_is_unready_during_drain() {
    let w = World::seeded(0).await;
    let d = w.daemon().await;
    let readyz = format!("http://{}/readyz", d.admin_addr);
    assert_eq!(get(readyz.clone()).await.0, 200);
    d.begin_drain();
    let (status, body) = get(readyz).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    d.shutdown().await;
}

#[tokio::test]
async fn readyz_is_unready_when_the_disk_is_nearly_full() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    // More than any volume has free: the state file's volume is "full".
    config.admin.min_free_bytes = u64::MAX;
    let d = Daemon::start(config, system_clock()).await.unwrap();
    let (status, body) = get(format!("http://{}/readyz", d.admin_addr)).await;
    assert_eq!(status, 503);
    assert!(body.contains("disk almost full"), "{body}");
    d.shutdown().await;
}

#[test]
fn a_non_loopback_admin_address_is_refused_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prmsync.toml");
    let base =
        "[partnerstack]\napi_key = { env = \"K\" }\n[hubspot]\naccess_token = { env = \"K\" }\n";
    let env = Environment {
        vars: [("K".to_owned(), "x".to_owned())].into(),
    };
    std::fs::write(&file, format!("{base}[admin]\nlisten = \"0.0.0.0:8788\"\n")).unwrap();
    let err = load(&file, &env).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].key, "admin.listen");
    assert!(
        err.errors[0].message.contains("not a loopback address"),
        "{err}"
    );
    std::fs::write(
        &file,
        format!("{base}[admin]\nlisten = \"0.0.0.0:8788\"\nallow_remote = true\n"),
    )
    .unwrap();
    let config = load(&file, &env).expect("allowed by configuration");
    assert!(config.admin.allow_remote);
}

/// The sample names `/metrics` exports (from its `# TYPE` lines: counters end in `_total`,
/// histograms have `_bucket`, `_sum` and `_count`).
fn exported(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .flat_map(|(name, kind)| match kind {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            _ => vec![name.to_owned()],
        })
        .collect()
}

/// The value of one sample (`name{labels}` exactly as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Metric names in a PromQL expression: `prmsync_*`, and Prometheus's own `up`.
fn named(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(prmsync_[a-z0-9_]+|up)\b").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_owned()).collect()
}

#[tokio::test]
async fn metrics_after_a_sync_and_every_dashboard_and_alert_query_names_an_exported_metric() {
    let w = World::seeded(4).await;
    let d = w.daemon().await;
    d.run_until_idle().await.unwrap();
    d.reload();
    // A paused connection, so that family has a sample too (empty families are not exported).
    d.engine
        .store()
        .set_connection_hold(
            prmsync::model::SystemKind::HubSpot,
            "needs_reauth",
            "test".into(),
            0,
        )
        .await
        .unwrap();
    // A drifted CRM field, so the schema drift family has a sample too.
    d.engine
        .store()
        .record_schema_drift(
            prmsync::model::SystemKind::HubSpot,
            vec![(
                "deals".into(),
                vec![prmsync::store::DriftRow {
                    object: "deals".into(),
                    field: "amount".into(),
                    flow: "deal-registration".into(),
                    location: "deals.toml:23:10".into(),
                    kind: "missing".into(),
                    problem: "does not exist any more".into(),
                }],
            )],
            vec!["deals".into()],
            0,
        )
        .await
        .unwrap();
    // A webhook with no signature: refused, and counted.
    let refused = client()
        .post(format!("http://{}/webhooks/hubspot", d.http_addr))
        .body("[]")
        .send()
        .await
        .expect("webhook sent");
    assert_eq!(refused.status(), 401);
    let (status, text) = get(format!("http://{}/metrics", d.admin_addr)).await;
    assert_eq!(status, 200);
    // The process's event counters (process-wide: other tests in this binary add to them, so
    // these are lower bounds; this test's own sync made each of them move).
    for (series, at_least) in [
        (
            "prmsync_http_client_requests_total{system=\"hubspot\",status_class=\"2xx\"}",
            1.0,
        ),
        (
            "prmsync_http_client_requests_total{system=\"partnerstack\",status_class=\"2xx\"}",
            1.0,
        ),
        (
            "prmsync_http_client_request_duration_seconds_count{system=\"hubspot\",status_class=\"2xx\"}",
            1.0,
        ),
        (
            "prmsync_polls_total{system=\"partnerstack\",object=\"deals\",result=\"ok\"}",
            1.0,
        ),
        (
            "prmsync_webhooks_total{system=\"hubspot\",result=\"rejected\"}",
            1.0,
        ),
        ("prmsync_errors_total{kind=\"store\"}", 0.0),
        ("prmsync_errors_total{kind=\"rate_limited\"}", 0.0),
        (
            "prmsync_rate_limit_waits_total{system=\"hubspot\",reason=\"retry_after\"}",
            0.0,
        ),
        (
            "prmsync_token_refreshes_total{system=\"hubspot\",result=\"ok\"}",
            0.0,
        ),
        ("prmsync_sqlite_busy_events_total", 0.0),
        (
            "prmsync_cursor_lag_seconds{system=\"partnerstack\",object=\"deals\"}",
            0.0,
        ),
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert!(
            value >= at_least,
            "{series} = {value}, want at least {at_least}"
        );
    }
    // A lag is how long ago the last complete read started: well under an hour here.
    let lag = sample(
        &text,
        "prmsync_cursor_lag_seconds{system=\"partnerstack\",object=\"deals\"}",
    );
    assert!(lag.is_some_and(|l| l < 3600.0), "{lag:?}");
    for line in [
        format!(
            "prmsync_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "prmsync_config_reloads_total{result=\"ok\"} 1".to_owned(),
        "prmsync_config_reloads_total{result=\"refused\"} 0".to_owned(),
        "prmsync_ledger_actions_total{flow=\"deal-registration\",direction=\"to_target\",action=\"created\"} 4".to_owned(),
        "prmsync_outbox_depth 0".to_owned(),
        "prmsync_dead_letters 0".to_owned(),
        "prmsync_connection_paused{system=\"hubspot\",state=\"needs_reauth\"} 1".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    let mut exported = exported(&text);
    // Prometheus's own series for a scrape target.
    exported.insert("up".into());

    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect();
    let panels = exprs.len();
    let alerts = std::fs::read_to_string(format!("{root}/deploy/prometheus-alerts.yml")).unwrap();
    exprs.extend(
        alerts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(|e| e.trim().to_owned()),
    );
    assert!(
        panels >= 10 && exprs.len() > panels,
        "queries found: {exprs:?}"
    );
    for expr in &exprs {
        let names = named(expr);
        assert!(!names.is_empty(), "{expr} names no metric");
        for n in names {
            assert!(exported.contains(&n), "{expr}: {n} is not exported");
        }
    }
    d.shutdown().await;
}
