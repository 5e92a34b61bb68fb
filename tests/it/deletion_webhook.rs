//! HubSpot's deletion and restore webhooks through the running pipeline (pollers read once at
//! start and then not for an hour, so only the webhooks can tell prmsync): a deal deleted in
//! HubSpot is tombstoned from its `deal.deletion` event and not re-created by the partner's next
//! edit; `deal.restore` relinks it.

use std::sync::Arc;
use std::time::Duration;

use prmsync::webhook::PRM_SIGNATURE_HEADER;
use prmsync::webhook::signature::body_hmac;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{HS_SECRET, World, wait_until};

const PS_HOOK_SECRET: &[u8] = b"ps-hook-secret";

/// The ledger's actions for one record, oldest first.
fn actions(world: &World, source_id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(world.state_path()).expect("state file");
    let mut stmt = conn
        .prepare("SELECT action FROM ledger WHERE source_id = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([source_id], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("actions")
}

/// Staged HubSpot deletes of `id`: (from a webhook, from the archived listing).
fn staged_deletes(world: &World, id: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(world.state_path()).expect("state file");
    conn.query_row(
        "SELECT COALESCE(SUM(event_id LIKE 'hubspot:%'), 0), COALESCE(SUM(event_id LIKE '%:deleted:%'), 0)
         FROM inbox WHERE system = 'hubspot' AND record_id = ?1 AND kind = 'delete'",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("inbox")
}

#[tokio::test]
async fn a_hubspot_deletion_webhook_tombstones_the_deal_and_a_restore_webhook_relinks_it() {
    let w = World::seeded(3).await;
    let mut config = w.config();
    config.daemon.poll_interval = Duration::from_secs(3600);
    #[allow(irrefutable_let_patterns)] // one PRM variant in the test world
    if let prmsync::config::PrmConfig::PartnerStack(p) = &mut config.prm {
        p.webhook_secret = Some("ps-hook-secret".to_owned().into());
    }
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    let stop = CancellationToken::new();
    let run = d.run(stop.clone(), Arc::new(tokio::sync::Notify::new()));
    let test = async {
        wait_until(Duration::from_secs(30), "3 deals in HubSpot", || async {
            w.hs.objects("deals").len() == 3
        })
        .await;
        // The rules' decisions are written back after the deals: wait until nothing is left.
        wait_until(Duration::from_secs(30), "the daemon is idle", || async {
            let conn = rusqlite::Connection::open(w.state_path()).expect("state");
            conn.query_row(
                "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'pending')
                      + (SELECT COUNT(*) FROM outbox)
                      + (SELECT COUNT(*) FROM registrations WHERE dirty = 1 OR status IS NULL)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("counts")
                == 0
        })
        .await;
        let deal = w.hs.find("deals", "prm_deal_id", "deal_1").expect("deal");
        let id = deal
            .get("hs_object_id")
            .and_then(Value::as_str)
            .expect("id")
            .to_owned();
        let http = prmsync::connector::http_client(Duration::from_secs(5));
        let hook =
            reqwest::Url::parse(&format!("http://{}/webhooks/hubspot", d.http_addr)).expect("url");

        // Sales deletes the deal; HubSpot sends deal.deletion.
        w.hs.enable_webhooks();
        assert!(w.hs.archive("deals", &id));
        let sent =
            w.hs.deliver_pending(&http, &hook, HS_SECRET)
                .await
                .expect("delivered");
        assert_eq!(sent, 1);
        wait_until(
            Duration::from_secs(30),
            "the deletion is planned",
            || async { actions(&w, "deal_1").contains(&"target_deleted".to_owned()) },
        )
        .await;
        assert_eq!(
            staged_deletes(&w, &id),
            (1, 0),
            "the delete came from the webhook, not from a poll of the archive"
        );

        // The partner edits the deal; PartnerStack tells prmsync. The deal is not re-created.
        let mut edited = w.ps.deal("deal_1").expect("deal");
        edited.insert("amount".into(), json!(31_400));
        w.ps.upsert_deal(edited.clone());
        let body =
            serde_json::to_vec(&json!({"event": "deal.updated", "data": edited})).expect("json");
        let resp = http
            .post(format!("http://{}/webhooks/partnerstack", d.http_addr))
            .header(PRM_SIGNATURE_HEADER, body_hmac(PS_HOOK_SECRET, &body))
            .body(body)
            .send()
            .await
            .expect("webhook sent");
        assert_eq!(resp.status(), 200);
        wait_until(Duration::from_secs(30), "the edit is planned", || async {
            actions(&w, "deal_1").contains(&"skip_tombstoned".to_owned())
        })
        .await;
        assert!(
            w.hs.find("deals", "prm_deal_id", "deal_1").is_none(),
            "not re-created"
        );
        assert_eq!(w.hs.writes("deals")["deal_1"].0, 1, "created once");

        // Sales restores it; deal.restore makes the poller read it, and the link is live again.
        assert!(w.hs.restore("deals", &id));
        w.hs.deliver_pending(&http, &hook, HS_SECRET)
            .await
            .expect("delivered");
        wait_until(Duration::from_secs(30), "the restore relinks", || async {
            let conn = rusqlite::Connection::open(w.state_path()).expect("state");
            conn.query_row(
                "SELECT tombstone IS NULL FROM links WHERE source_id = 'deal_1'",
                [],
                |r| r.get::<_, bool>(0),
            )
            .unwrap_or(false)
        })
        .await;
        stop.cancel();
    };
    tokio::join!(run, test);
}
