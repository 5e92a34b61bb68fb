//! The schema contract with the live CRM: the simulators serve their schema (HubSpot properties,
//! Salesforce describe) from the definitions they validate writes with, and `prmsync check
//! --live` reports every mapped field that no longer fits it, located in its mapping file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use prmsync::connector::schema::LiveKind;
use prmsync::mapping::MappingSet;
use prmsync::mapping::drift::Problem;
use prmsync::model::SystemKind;
use prmsync::ops::check_live;

use crate::harness::{HS_TOKEN, PS_KEY, World, wait_ok, wait_until};
use crate::rules_salesforce::salesforce;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

fn shipped_for(system: SystemKind) -> Vec<Arc<prmsync::mapping::Mapping>> {
    let set = MappingSet::load_dir(&shipped()).expect("shipped mappings compile");
    set.mappings
        .into_iter()
        .filter(|m| m.target.system == system)
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `prmsync check --live CONFIG` with the simulators' key and token, on its own thread (the
/// simulators run on this test's runtime).
async fn check_live_cli(config: PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prmsync"))
            .args(["check", "--live"])
            .arg(&config)
            .env("T_PS", PS_KEY)
            .env("T_HS", HS_TOKEN)
            .env_remove("RUST_LOG")
            .output()
            .expect("run prmsync")
    })
    .await
    .expect("join")
}

fn write_config(w: &World, hubspot: &str) -> PathBuf {
    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = \"state.db\"\nmappings_dir = {:?}\n\
             [partnerstack]\nbase_url = \"{}\"\napi_key = {{ env = \"T_PS\" }}\n\
             [hubspot]\nbase_url = \"{hubspot}\"\naccess_token = {{ env = \"T_HS\" }}\n",
            shipped().display().to_string(),
            w.ps_server.url("/api/v2"),
        ),
    )
    .expect("write config");
    config
}

/// The Salesforce connector `rules_salesforce::daemon` would build, without a daemon.
pub(crate) fn salesforce_connector(
    w: &World,
    server: &prmsync::sim::SimServer,
) -> prmsync::connector::Connector {
    prmsync::app::connectors(&salesforce_config(w, server), None)
        .expect("connectors")
        .1
}

/// `w`'s config with the Salesforce simulator at `server` as the CRM.
pub(crate) fn salesforce_config(
    w: &World,
    server: &prmsync::sim::SimServer,
) -> prmsync::config::Config {
    use prmsync::config::{CrmConfig, SalesforceAuthConfig, SalesforceConfig};
    use secrecy::SecretString;
    let mut config = w.config();
    config.daemon.state_key = Some(SecretString::from("schema-test-state-key"));
    config.crm = CrmConfig::Salesforce(SalesforceConfig {
        login_url: server.url(""),
        auth: SalesforceAuthConfig::RefreshToken {
            client_id: "3MVG9sim.consumer.key".into(),
            client_secret: Some(SecretString::from("sim-consumer-secret")),
            refresh_token: SecretString::from("5Aep.initial"),
        },
        audience: None,
        rate_limit: None,
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_hubspot_mapping_fits_the_simulators_live_schema() {
    let w = World::seeded(0).await;
    let (_, crm) = prmsync::app::connectors(&w.config(), None).expect("connectors");
    let report = check_live::check(&crm, &shipped_for(SystemKind::HubSpot))
        .await
        .expect("schema read");
    assert_eq!(report.drift, Vec::new(), "{}", check_live::render(&report));
    assert_eq!(
        report.objects,
        [
            "hubspot/companies",
            "hubspot/contacts",
            "hubspot/deals",
            "hubspot/tasks"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_salesforce_mapping_fits_the_simulators_describe() {
    let w = World::seeded(0).await;
    let (sf, server) = salesforce().await;
    let crm = salesforce_connector(&w, &server);
    let report = check_live::check(&crm, &shipped_for(SystemKind::Salesforce))
        .await
        .expect("describe");
    assert_eq!(report.drift, Vec::new(), "{}", check_live::render(&report));
    assert_eq!(report.objects.len(), 6, "{:?}", report.objects);

    // An admin deactivates a stage the value map writes: the live check says where.
    assert!(sf.set_picklist_value("Opportunity", "StageName", "Closed Lost", false));
    let report = check_live::check(&crm, &shipped_for(SystemKind::Salesforce))
        .await
        .expect("describe");
    let lines: Vec<String> = report.drift.iter().map(ToString::to_string).collect();
    // Both shipped opportunity flows (PartnerStack and REST) map a stage to Closed Lost.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].ends_with(
            "rest-salesforce-opportunities.toml:45:10: flow rest-sf-deal-registration: salesforce/Opportunity field \"StageName\" no longer accepts \"Closed Lost\" that the value map produces"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[0].ends_with(
            "partnerstack-salesforce-opportunities.toml:49:10: flow sf-deal-registration: salesforce/Opportunity field \"StageName\" no longer accepts \"Closed Lost\" that the value map produces"
        ),
        "{}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_answers_from_the_definitions_writes_are_checked_with() {
    let w = World::seeded(0).await;
    let (sf, server) = salesforce().await;
    let crm = salesforce_connector(&w, &server);
    let live = crm
        .read_schema("Opportunity")
        .await
        .expect("a CRM")
        .expect("describe");
    assert_eq!(live.fields["Amount"].kind, LiveKind::Number);
    assert!(
        live.fields["StageName"]
            .options
            .as_ref()
            .unwrap()
            .contains(&"Closed Won".to_owned())
    );
    assert!(!live.fields["IsWon"].updateable);

    assert!(sf.rename_field("Opportunity", "Description", "Summary__c"));
    assert!(sf.set_field_read_only("Opportunity", "Amount", true));
    let live = crm.read_schema("Opportunity").await.unwrap().unwrap();
    assert!(!live.fields.contains_key("Description"));
    assert!(live.fields.contains_key("Summary__c"));
    assert!(!live.fields["Amount"].createable);
    // Writes are refused the same way, with Salesforce's error shape.
    let write = |key: &str, fields: serde_json::Value| prmsync::connector::WriteRequest {
        key: key.into(),
        id_property: Some("PRM_Deal_Id__c".into()),
        target_id: None,
        fields: fields.as_object().cloned().unwrap(),
    };
    let base =
        serde_json::json!({"Name": "A", "StageName": "Prospecting", "CloseDate": "2026-03-31"});
    let mut renamed = base.clone();
    renamed["Description"] = "x".into();
    let mut read_only = base.clone();
    read_only["Amount"] = "5".into();
    let got = crm
        .write(
            "Opportunity",
            &[write("deal_1", renamed), write("deal_2", read_only)],
        )
        .await
        .expect("collection answered");
    let errors: Vec<String> = got
        .iter()
        .map(|r| r.as_ref().unwrap_err().to_string())
        .collect();
    assert!(errors[0].contains("INVALID_FIELD"), "{errors:?}");
    assert!(
        errors[1].contains("INVALID_FIELD_FOR_INSERT_UPDATE"),
        "{errors:?}"
    );
    sf.restore_schema();
    let got = crm
        .write("Opportunity", &[write("deal_1", base)])
        .await
        .unwrap();
    assert!(got[0].is_ok(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_reports_drift_with_file_and_line_and_exits_2() {
    let w = World::seeded(0).await;
    let config = write_config(&w, w.hs_server.url("").as_str());
    let o = check_live_cli(config.clone()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("ok: live schema of hubspot/"),
        "{}",
        text(&o)
    );

    assert!(w.hs.rename_property("deals", "description", "deal_summary"));
    assert!(w.hs.set_property_option("deals", "dealstage", "closedlost", false));
    let o = check_live_cli(config).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    let file = shipped().join("partnerstack-hubspot-deals.toml");
    for line in [
        format!(
            "{}:41:10: flow deal-registration: hubspot/deals field \"dealstage\" no longer accepts \"closedlost\" that the value map produces",
            file.display()
        ),
        format!(
            "{}:68:10: flow deal-registration: hubspot/deals field \"description\" does not exist any more",
            file.display()
        ),
        "2 of ".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_says_clearly_when_the_crm_cannot_be_read() {
    let w = World::seeded(0).await;
    let config = write_config(&w, "http://127.0.0.1:9");
    let o = check_live_cli(config).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("check --live failed: cannot read the live schema of hubspot/"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_property_is_refused_with_hubspots_error() {
    let w = World::seeded(0).await;
    let (_, crm) = prmsync::app::connectors(&w.config(), None).expect("connectors");
    assert!(w.hs.remove_property("deals", "amount"));
    let live = crm.read_schema("deals").await.unwrap().unwrap();
    assert!(!live.fields.contains_key("amount"));
    let flows = shipped_for(SystemKind::HubSpot);
    let m = flows.iter().find(|m| m.target.object == "deals").unwrap();
    let drift = prmsync::mapping::drift::check(m, &live);
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].problem, Problem::Missing { hint: None });
    let req = prmsync::connector::WriteRequest {
        key: "deal_1".into(),
        id_property: Some("prm_deal_id".into()),
        target_id: None,
        fields: serde_json::json!({"dealname": "A", "amount": "5"})
            .as_object()
            .cloned()
            .unwrap(),
    };
    let refused = match crm.write("deals", &[req]).await {
        Err(e) => e.to_string(),
        Ok(r) => r[0].as_ref().unwrap_err().to_string(),
    };
    assert!(
        refused.contains("VALIDATION_ERROR") && refused.contains("amount"),
        "{refused}"
    );
}

/// The status the running daemon's state file reports now.
async fn status_of(d: &prmsync::app::Daemon) -> prmsync::store::StatusReport {
    d.engine
        .store()
        .status(jiff::Timestamp::now().as_millisecond())
        .await
        .expect("status")
}

/// The shipped HubSpot deal flow with its stage written on every change (the shipped file lets
/// sales own it after the create), without its examples, in a mappings folder of its own.
fn hubspot_deal_flow(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(shipped().join("partnerstack-hubspot-deals.toml"))
        .expect("shipped deal flow");
    let owned = "direction = \"both\"\nowner = \"target\"      # set on create from the registration, then sales owns it\n";
    assert!(text.contains(owned), "the shipped stage field changed");
    let flow = text
        .replace(owned, "")
        .split("[[example]]")
        .next()
        .expect("text")
        .to_owned();
    let out = dir.join("mappings");
    std::fs::create_dir_all(&out).expect("mappings dir");
    std::fs::write(out.join("partnerstack-hubspot-deals.toml"), flow).expect("flow");
    out
}

fn hs_deal(w: &World, key: &str) -> serde_json::Map<String, serde_json::Value> {
    w.hs.find("deals", "prm_deal_id", key).unwrap_or_default()
}

fn prop(d: &serde_json::Map<String, serde_json::Value>, name: &str) -> String {
    d.get(name)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Whether status lists `field` of `flow` as drifted with `kind`.
fn drifted(r: &prmsync::store::StatusReport, field: &str, kind: &str) -> bool {
    r.schema_drift
        .iter()
        .any(|d| d.field == field && d.kind == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_property_deleted_under_the_running_daemon_is_left_out_alone_and_recovers() {
    use serde_json::json;
    let w = World::seeded(3).await;
    let mut config = w.config();
    config.daemon.mappings_dir = Some(hubspot_deal_flow(w.dir.path()));
    config.daemon.poll_interval = std::time::Duration::from_secs(1);
    config.daemon.schema_check = std::time::Duration::from_secs(1);
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reload = Arc::new(tokio::sync::Notify::new());
    let wait = std::time::Duration::from_secs(60);
    let script = async {
        wait_until(wait, "the seeded deals in HubSpot", || async {
            w.hs.objects("deals").len() == 3
        })
        .await;
        let schema_reads = || {
            w.hs.request_log()
                .iter()
                .filter(|r| r.path.starts_with("/crm/v3/properties/deals"))
                .count()
        };
        assert!(schema_reads() >= 1, "the daemon read the schema at start");

        // An admin deletes a mapped property and a stage the value map writes.
        assert!(w.hs.remove_property("deals", "closedate"));
        assert!(w.hs.set_property_option("deals", "dealstage", "closedlost", false));
        wait_ok(wait, "the drift in status", || async {
            let r = status_of(&d).await;
            if drifted(&r, "closedate", "missing") && drifted(&r, "dealstage", "options") {
                Ok(())
            } else {
                Err(format!("{:?}", r.schema_drift))
            }
        })
        .await;
        let r = status_of(&d).await;
        let closedate = r
            .schema_drift
            .iter()
            .find(|x| x.field == "closedate")
            .expect("closedate");
        assert!(
            closedate
                .location
                .ends_with("partnerstack-hubspot-deals.toml:31:10"),
            "{closedate:?}"
        );
        let text = prmsync::status::render(&r);
        assert!(
            text.contains("hubspot/deals field \"closedate\" does not exist any more"),
            "{text}"
        );

        // Partners edit two deals and register a lost one: every other field still syncs.
        let before_1 = prop(&hs_deal(&w, "deal_1"), "closedate");
        let mut d1 = w.ps.deal("deal_1").expect("deal_1");
        d1.insert("amount".into(), json!(777_700));
        d1.insert("close_date".into(), json!("2031-01-31"));
        w.ps.upsert_deal(d1);
        let mut d2 = w.ps.deal("deal_2").expect("deal_2");
        d2.insert("account_name".into(), json!("Lost Co"));
        d2.insert("stage".into(), json!("lost"));
        w.ps.upsert_deal(d2);
        let mut d4 = prmsync::sim::seed::deals(4, 5)
            .pop()
            .expect("a fourth deal");
        d4.insert("stage".into(), json!("lost"));
        w.ps.upsert_deal(d4);
        wait_ok(wait, "the other fields written", || async {
            let (a, b, c) = (
                hs_deal(&w, "deal_1"),
                hs_deal(&w, "deal_2"),
                hs_deal(&w, "deal_4"),
            );
            if prop(&a, "amount") == "7777"
                && prop(&b, "dealname") == "Lost Co (partner registration)"
                && !prop(&c, "dealname").is_empty()
            {
                Ok(())
            } else {
                Err(format!("{a:?}\n{b:?}\n{c:?}"))
            }
        })
        .await;
        assert_eq!(prop(&hs_deal(&w, "deal_1"), "closedate"), before_1);
        assert_ne!(prop(&hs_deal(&w, "deal_2"), "dealstage"), "closedlost");
        // The skips are recorded with the write's completion, which may commit just after
        // HubSpot shows the write: wait for them before reading the whole status.
        wait_until(wait, "the left-out fields recorded", || async {
            status_of(&d)
                .await
                .schema_skips
                .iter()
                .map(|s| s.records)
                .sum::<i64>()
                >= 4
        })
        .await;
        let r = status_of(&d).await;
        assert_eq!(r.dead_letters, 0, "{:?}", r.last_errors);
        let skipped = |field: &str| {
            r.schema_skips
                .iter()
                .filter(|s| s.field == field)
                .map(|s| s.records)
                .sum::<i64>()
        };
        assert_eq!(skipped("closedate"), 2, "{:?}", r.schema_skips);
        assert_eq!(skipped("dealstage"), 2, "{:?}", r.schema_skips);
        let metrics = reqwest::get(format!("http://{}/metrics", d.admin_addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        for series in [
            "prmsync_schema_drift_fields{system=\"hubspot\",object=\"deals\",field=\"closedate\"} 1",
            "prmsync_schema_drift_fields{system=\"hubspot\",object=\"deals\",field=\"dealstage\"} 1",
            "prmsync_schema_skipped_values_total{system=\"hubspot\",object=\"deals\",field=\"closedate\"}",
        ] {
            assert!(metrics.contains(series), "{series} in\n{metrics}");
        }
        let json = serde_json::to_value(&r).expect("status JSON");
        assert!(json["schema_drift"][0]["since_ms"].is_i64(), "{json}");

        // The admin puts the schema back: the next check clears the drift and the records
        // written without the fields get them.
        w.hs.restore_properties();
        wait_ok(wait, "the skipped fields written", || async {
            let (a, b, c) = (
                hs_deal(&w, "deal_1"),
                hs_deal(&w, "deal_2"),
                hs_deal(&w, "deal_4"),
            );
            if prop(&a, "closedate").starts_with("2031-01-31")
                && prop(&b, "dealstage") == "closedlost"
                && prop(&c, "dealstage") == "closedlost"
                && !prop(&c, "closedate").is_empty()
            {
                Ok(())
            } else {
                Err(format!("{a:?}\n{b:?}\n{c:?}"))
            }
        })
        .await;
        wait_ok(wait, "status clear", || async {
            let r = status_of(&d).await;
            if r.schema_drift.is_empty() && r.schema_skips.is_empty() {
                Ok(())
            } else {
                Err(format!("{:?} {:?}", r.schema_drift, r.schema_skips))
            }
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(d.run(shutdown.clone(), reload.clone()), script);
    let r = status_of(&d).await;
    assert_eq!(r.dead_letters, 0, "{:?}", r.last_errors);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_field_made_read_only_is_left_out_until_a_reload_finds_it_fixed() {
    use serde_json::json;
    let w = World::seeded(2).await;
    let (sf, server) = salesforce().await;
    let mut config = salesforce_config(&w, &server);
    config.daemon.mappings_dir = Some(crate::rules_salesforce::salesforce_mappings(w.dir.path()));
    config.daemon.poll_interval = std::time::Duration::from_secs(1);
    // Only the start and reloads check the schema in this test.
    config.daemon.schema_check = std::time::Duration::from_secs(3600);
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reload = Arc::new(tokio::sync::Notify::new());
    let wait = std::time::Duration::from_secs(60);
    let opp = |key: &str| {
        sf.find("Opportunity", "PRM_Deal_Id__c", key)
            .pop()
            .unwrap_or_default()
    };
    let script = async {
        wait_until(wait, "the seeded deals in Salesforce", || async {
            !opp("deal_1").is_empty() && !opp("deal_2").is_empty()
        })
        .await;
        // An admin takes the integration user's edit access to Amount.
        assert!(sf.set_field_read_only("Opportunity", "Amount", true));
        reload.notify_one();
        wait_ok(wait, "the drift in status", || async {
            let r = status_of(&d).await;
            if drifted(&r, "Amount", "read_only") {
                Ok(())
            } else {
                Err(format!("{:?}", r.schema_drift))
            }
        })
        .await;
        let mut d1 = w.ps.deal("deal_1").expect("deal_1");
        d1.insert("amount".into(), json!(123_400));
        d1.insert("account_name".into(), json!("Renamed Co"));
        w.ps.upsert_deal(d1);
        wait_until(wait, "the name written", || async {
            opp("deal_1")["Name"] == "Renamed Co (partner registration)"
        })
        .await;
        assert_ne!(
            opp("deal_1")["Amount"],
            "1234",
            "the read-only field is left out"
        );
        let r = status_of(&d).await;
        assert_eq!(r.dead_letters, 0, "{:?}", r.last_errors);
        assert!(
            r.schema_skips
                .iter()
                .any(|s| s.field == "Amount" && s.records == 1),
            "{:?}",
            r.schema_skips
        );

        sf.restore_schema();
        reload.notify_one();
        wait_ok(wait, "the amount written", || async {
            let o = opp("deal_1");
            if o["Amount"] == "1234" {
                Ok(())
            } else {
                let r = status_of(&d).await;
                Err(format!("{o:?} {:?} {:?}", r.schema_drift, r.schema_skips))
            }
        })
        .await;
        wait_until(wait, "status clear", || async {
            let r = status_of(&d).await;
            r.schema_drift.is_empty() && r.schema_skips.is_empty()
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(d.run(shutdown.clone(), reload.clone()), script);
    let r = status_of(&d).await;
    assert_eq!(r.dead_letters, 0, "{:?}", r.last_errors);
    d.shutdown().await;
}
