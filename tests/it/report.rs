//! `prmsync report attribution` on the demo's state: the table prints, CSV and JSON are written,
//! the HTML page renders, the figures agree with the registrations the state holds, and bad
//! arguments exit 2. (The figures themselves are checked against hand-computed expectations in
//! `src/report/tests.rs`.)

use std::process::{Command, Output};

use serde_json::Value;

fn prmsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run prmsync")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_attribution_report_on_the_demo_state_in_every_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("demo.db");
    let state = state.to_str().expect("path");
    let o = prmsync(&["demo", "--state", state, "--deals", "15", "--partners", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    let o = prmsync(&["report", "attribution", "--state", state]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let table = out(&o);
    for section in [
        "Pipeline and revenue by credit",
        "Partner credit by partner",
        "Registrations by decision and deciding rule",
        "Protection expiries",
        "MDF against partner-sourced revenue by tier",
    ] {
        assert!(table.contains(section), "{section} missing:\n{table}");
    }

    // JSON agrees with the registrations the state holds.
    let json_path = dir.path().join("report.json");
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--format",
        "json",
        "--by",
        "tier",
        "--output",
        json_path.to_str().expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("json");
    let o = prmsync(&["registrations", "list", "--state", state, "--json"]);
    let regs: Value = serde_json::from_slice(&o.stdout).expect("registrations json");
    let regs = regs.as_array().expect("a list");
    let approved = regs.iter().filter(|r| r["status"] == "approved").count();
    assert!(approved > 0);
    let totals = report["totals"].as_array().expect("totals");
    let sourced = &totals[0];
    assert_eq!(sourced["credit"], "sourced");
    assert_eq!(sourced["deals"], approved);
    let deals: u64 = totals
        .iter()
        .map(|t| t["deals"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(deals as usize, regs.len(), "every registration is one deal");
    // The demo closes some deals won and some lost in HubSpot; the stages came back.
    let closed: u64 = totals
        .iter()
        .map(|t| t["won"].as_u64().unwrap_or(0) + t["lost"].as_u64().unwrap_or(0))
        .sum();
    assert!(closed > 0, "{report}");
    let decided: u64 = report["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| d["registrations"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(decided as usize, regs.len());

    let o = prmsync(&["report", "attribution", "--state", state, "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let csv = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(csv.starts_with("section,key,metric,value\n"), "{csv}");
    assert!(
        csv.contains(&format!("totals,partner-sourced,deals,{approved}\n")),
        "{csv}"
    );

    let html_path = dir.path().join("report.html");
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--format",
        "html",
        "--by",
        "month",
        "-o",
        html_path.to_str().expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let html = std::fs::read_to_string(&html_path).expect("html written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.matches("<svg").count() >= 3, "charts are drawn");
    assert!(!html.contains("<script"), "no scripts");

    // A window after every deal has no deals.
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--format",
        "json",
        "--from",
        "2999-01-01",
    ]);
    let later: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        later["totals"]
            .as_array()
            .expect("totals")
            .iter()
            .all(|t| t["deals"] == 0)
    );
}

#[test]
fn bad_report_arguments_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("demo.db");
    let state = state.to_str().expect("path");
    let o = prmsync(&["demo", "--state", state, "--deals", "3", "--partners", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--from",
        "March 1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("--from \"March 1\" is not a YYYY-MM-DD day"),
        "{}",
        out(&o)
    );
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--from",
        "2026-05-01",
        "--to",
        "2026-04-01",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("--from must not be after --to"),
        "{}",
        out(&o)
    );
    let o = prmsync(&["report", "attribution", "--state", state, "--format", "pdf"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}
