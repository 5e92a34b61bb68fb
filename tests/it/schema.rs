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

use crate::harness::{HS_TOKEN, PS_KEY, World};
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
    assert_eq!(lines.len(), 1, "{lines:?}");
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
