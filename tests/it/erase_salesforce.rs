//! Erasure on Salesforce by `--record`, through `prmsync erase`'s own code: while a daemon holds
//! the state file the erasure is a request the daemon carries out under its planning lock (a
//! PRM record named); with no daemon the command carries it out itself (a Salesforce record
//! named). Either way the Opportunity's contact field and the partner deal's contact are blanked,
//! a Salesforce Lead with the address is deleted, and the state file keeps no byte of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prmsync::erase_cli::{self, EraseArgs};
use serde_json::{Value, json};

use crate::harness::{World, wait_until};
use crate::lifecycle::{SF_OPPORTUNITIES, config, mappings_with, salesforce};

fn text<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn by_record(record: String) -> EraseArgs {
    EraseArgs {
        email: None,
        record: Some(record),
        dry_run: false,
    }
}

/// Whether the state file or its WAL holds `needle` (any case), after a checkpoint.
fn state_holds(state: &Path, needle: &str) -> bool {
    let conn = rusqlite::Connection::open(state).expect("state");
    let _: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .expect("checkpoint");
    drop(conn);
    let wal = PathBuf::from(format!("{}-wal", state.display()));
    [state.to_path_buf(), wal].iter().any(|p| {
        std::fs::read(p).is_ok_and(|b| {
            let (hay, needle) = (b.to_ascii_lowercase(), needle.to_lowercase().into_bytes());
            hay.windows(needle.len()).any(|w| w == needle.as_slice())
        })
    })
}

fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_by_record_on_salesforce_with_and_without_a_running_daemon() {
    let w = World::seeded(2).await;
    let (sf, sf_server) = salesforce().await;
    let mappings = mappings_with(w.dir.path(), SF_OPPORTUNITIES, "");
    let config = config(&w, mappings, Some(&sf_server));
    let email = |key: &str| text(&w.ps.deal(key).expect("deal"), "contact_email").to_owned();
    let (first, second) = (email("deal_1"), email("deal_2"));
    // Sales keeps the first buyer as a Lead too: an erasure finds it by the address.
    let lead = sf.insert(
        "Lead",
        json!({"LastName": "Buyer", "Company": "Initech", "Email": first.to_uppercase()})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let d = prmsync::app::Daemon::start(config.clone(), prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    d.run_until_idle().await.expect("first pass");
    let opp = |key: &str| sf.find("Opportunity", "PRM_Deal_Id__c", key).remove(0);
    assert_eq!(text(&opp("deal_1"), "PRM_Contact_Email__c"), first);
    assert!(state_holds(&w.state_path(), &first));

    // The daemon holds the state file: `prmsync erase` records the request and waits while the
    // daemon (driven here by its passes) carries it out.
    let cli = tokio::spawn({
        let config = config.clone();
        async move {
            erase_cli::run(
                &config,
                by_record("partnerstack/deals/deal_1".into()),
                now(),
            )
            .await
        }
    });
    let store = d.engine.store().clone();
    wait_until(
        Duration::from_secs(60),
        "the daemon carried out the request",
        || {
            let (d, store) = (&d, store.clone());
            async move {
                d.run_until_idle().await.expect("a pass");
                let done = store.erase_requests(5).await.expect("requests");
                done.first().is_some_and(|r| r.report.is_some())
            }
        },
    )
    .await;
    let out = cli.await.expect("joined").expect("erased");
    assert!(out.contains("carried out by the running daemon"), "{out}");
    assert!(out.contains("salesforce: delete Lead"), "{out}");
    assert!(!out.to_lowercase().contains(&first), "{out}");
    assert_eq!(text(&opp("deal_1"), "PRM_Contact_Email__c"), "");
    assert!(
        sf.find("Lead", "Id", &lead).is_empty(),
        "the Lead is deleted"
    );
    let deal = w.ps.deal("deal_1").expect("deal stays");
    assert_eq!(text(&deal, "contact_first_name"), "");
    // The other deal keeps its contact.
    assert_eq!(text(&opp("deal_2"), "PRM_Contact_Email__c"), second);
    d.run_until_idle().await.expect("a later pass");
    d.shutdown().await;
    assert!(
        !state_holds(&w.state_path(), &first),
        "the first address is gone from the state file"
    );

    // No daemon: the command carries the erasure out itself, named by the Salesforce record.
    let id = text(&opp("deal_2"), "Id").to_owned();
    let out = erase_cli::run(
        &config,
        by_record(format!("salesforce/Opportunity/{id}")),
        now(),
    )
    .await
    .expect("erased");
    assert!(out.starts_with("erased:"), "{out}");
    assert!(!out.contains("running daemon"), "{out}");
    assert_eq!(text(&opp("deal_2"), "PRM_Contact_Email__c"), "");
    assert_eq!(
        text(&w.ps.deal("deal_2").expect("deal"), "contact_last_name"),
        ""
    );
    assert!(!state_holds(&w.state_path(), &second));
    let audit = erase_cli::run(
        &config,
        EraseArgs {
            email: None,
            record: None,
            dry_run: false,
        },
        now(),
    )
    .await
    .expect("audit");
    assert_eq!(audit.lines().count(), 2, "two audit rows: {audit}");
    assert!(!audit.contains("deal_"), "{audit}");
}
