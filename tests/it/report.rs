//! `prmsync report attribution` on the demo's state: the table prints, CSV and JSON are written,
//! the HTML page renders, the figures agree with the registrations the state holds, and bad
//! arguments exit 2. On the REST PRM and Salesforce demo (`demo --profile rest-salesforce`, the
//! one with MDF requests), every figure is checked against numbers worked out by hand from its
//! seed (`src/demo/rest_salesforce.rs`).

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

/// The JSON number at `path` (dot-separated; array indexes as numbers).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 0.01)
}

/// The seed (`src/demo/rest_salesforce.rs`) with the shipped rules, by hand:
/// - approved (partner-sourced): deal_1 (Acme, 12,000.00, won, submitted 60 days before the
///   close), deal_2 (8,000.00, lost), deal_3 (5,000.00, won, 30 days), deal_7 (15,000.00 open),
///   deal_8 (6,000.00 open): 5 deals, 21,000.00 open, 2 won for 17,000.00, 1 lost, win rate 2/3,
///   cycle (60 + 30) / 2 = 45 days.
/// - no partner credit: deal_4 (Hooli, the direct team's open opportunity: rejected; 9,000.00
///   won after 20 days), deal_5 (Massive Dynamic, flagged reserved in Salesforce: rejected; lost),
///   deal_6 (Acme again, later: duplicate; lost), deal_10 (bigbank.example, reserved by name:
///   rejected; 4,000.00 open): 4 deals, 1 won for 9,000.00, 2 lost, win rate 1/3, cycle 20 days.
/// - undecided: deal_9 (500.00, below the 1,000.00 minimum: pending).
/// - deal_6 (Summit, bronze) was submitted 10 days after deal_1, within 90 days: Summit
///   influences deal_1 (12,000.00 won, 60 days).
/// - MDF by tier (drafts and the sourced won revenue of the tier's partners): gold mdf_1
///   requested 5,000.00, approved 4,500.00, claimed 4,000.00 against deal_1's 12,000.00 = 3.00;
///   silver mdf_2 3,000.00 / 3,000.00, nothing spent, nothing won; bronze mdf_3 2,000.00
///   requested, 1,500.00 approved in Salesforce, 1,250.00 claimed and accepted, against deal_3's
///   5,000.00 = 4.00.
#[test]
fn the_report_on_the_rest_salesforce_demo_matches_figures_worked_out_from_its_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("demo.db");
    let state = state.to_str().expect("path");
    let o = prmsync(&["demo", "--profile", "rest-salesforce", "--state", state]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("5 approved, 1 duplicate, 1 pending, 3 rejected"),
        "{}",
        out(&o)
    );

    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let r: Value = serde_json::from_slice(&o.stdout).expect("json");
    // (credit, deals, open pipeline, won, lost, won revenue, win rate, cycle days)
    let totals = [
        (
            "sourced",
            5,
            2_100_000,
            2,
            1,
            1_700_000,
            Some(2.0 / 3.0),
            Some(45.0),
        ),
        ("influenced", 0, 0, 0, 0, 0, None, None),
        (
            "none",
            4,
            400_000,
            1,
            2,
            900_000,
            Some(1.0 / 3.0),
            Some(20.0),
        ),
        ("undecided", 1, 50_000, 0, 0, 0, None, None),
    ];
    for (i, (credit, deals, pipeline, won, lost, won_cents, rate, cycle)) in
        totals.into_iter().enumerate()
    {
        let t = &r["totals"][i];
        assert_eq!(t["credit"], credit, "{t}");
        assert_eq!(
            (
                &t["deals"],
                &t["pipeline_cents"],
                &t["won"],
                &t["lost"],
                &t["won_cents"]
            ),
            (
                &deals.into(),
                &pipeline.into(),
                &won.into(),
                &lost.into(),
                &won_cents.into()
            ),
            "{t}"
        );
        for (v, want) in [(&t["win_rate"], rate), (&t["cycle_days"], cycle)] {
            match want {
                Some(w) => assert!(close(v, w), "{credit}: {v} is not {w}"),
                None => assert!(v.is_null(), "{credit}: {v}"),
            }
        }
    }
    assert_eq!(at(&r, "co_influenced.won_cents"), 1_200_000);
    assert!(close(at(&r, "co_influenced.cycle_days"), 60.0));
    // By partner: (group, sourced deals, sourced open, sourced won, influenced won).
    let groups = [
        ("Blue Harbor (part_2)", 2, 600_000, 0, 0),
        ("Northwind Partners (part_1)", 2, 1_500_000, 1_200_000, 0),
        ("Summit Resellers (part_3)", 1, 0, 500_000, 1_200_000),
    ];
    assert_eq!(r["groups"].as_array().map(Vec::len), Some(groups.len()));
    for (i, (group, deals, open, won, influenced)) in groups.into_iter().enumerate() {
        let g = &r["groups"][i];
        assert_eq!(g["group"], group);
        assert_eq!(
            (
                at(g, "sourced.deals"),
                at(g, "sourced.pipeline_cents"),
                at(g, "sourced.won_cents"),
                at(g, "influenced.won_cents")
            ),
            (&deals.into(), &open.into(), &won.into(), &influenced.into()),
            "{g}"
        );
    }
    let decisions: Vec<(String, String, u64)> = r["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            (
                d["status"].as_str().unwrap_or_default().to_owned(),
                d["rule"].as_str().unwrap_or_default().to_owned(),
                d["registrations"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, String, u64)> = [
        ("approved", "first_qualified", 5),
        ("duplicate", "first_qualified", 1),
        ("pending", "qualification", 1),
        ("rejected", "open_direct_opportunity", 1),
        ("rejected", "reserved_accounts", 2),
    ]
    .into_iter()
    .map(|(s, r, n)| (s.to_owned(), r.to_owned(), n))
    .collect();
    assert_eq!(decisions, want);
    let expiries = r["expiries"].as_array().expect("expiries");
    assert_eq!(
        expiries.len(),
        5,
        "one protection per approved registration"
    );
    assert!(expiries.iter().all(|e| e["ended"] == false));
    // MDF: (tier, requests, requested, approved, spent, sourced won, revenue per MDF).
    let mdf = [
        ("gold", 1, 500_000, 450_000, 400_000, 1_200_000, Some(3.0)),
        ("silver", 1, 300_000, 300_000, 0, 0, None),
        ("bronze", 1, 200_000, 150_000, 125_000, 500_000, Some(4.0)),
    ];
    assert_eq!(
        r["mdf"].as_array().map(Vec::len),
        Some(mdf.len()),
        "{}",
        r["mdf"]
    );
    for (i, (tier, n, requested, approved, spent, won, per)) in mdf.into_iter().enumerate() {
        let m = &r["mdf"][i];
        assert_eq!(m["tier"], tier);
        assert_eq!(
            (
                &m["requests"],
                &m["requested_cents"],
                &m["approved_cents"],
                &m["spent_cents"],
                &m["sourced_won_cents"]
            ),
            (
                &n.into(),
                &requested.into(),
                &approved.into(),
                &spent.into(),
                &won.into()
            ),
            "{m}"
        );
        match per {
            Some(p) => assert!(close(&m["revenue_per_mdf"], p), "{m}"),
            None => assert!(m["revenue_per_mdf"].is_null(), "{m}"),
        }
    }

    // The table, CSV and HTML show the same figures.
    let o = prmsync(&["report", "attribution", "--state", state]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    for line in [
        "partner-sourced                             5      21,000.00    2     1    17,000.00     66.7%        45.0",
        "no partner credit                           4       4,000.00    1     2     9,000.00     33.3%        20.0",
        "gold           1   5,000.00  4,500.00  4,000.00    12,000.00             3.00",
        "bronze         1   2,000.00  1,500.00  1,250.00     5,000.00             4.00",
    ] {
        assert!(table.contains(line), "{line:?} missing:\n{table}");
    }
    let csv_path = dir.path().join("report.csv");
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--format",
        "csv",
        "-o",
        csv_path.to_str().expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let csv = std::fs::read_to_string(&csv_path).expect("csv written");
    for row in [
        "totals,partner-sourced,pipeline_cents,2100000",
        "totals,partner-sourced,won_cents,1700000",
        "totals,partner-sourced,win_rate,0.6667",
        "totals,partner-sourced,cycle_days,45.0000",
        "totals,no partner credit,cycle_days,20.0000",
        "totals,co-influenced,won_cents,1200000",
        "decisions,rejected/reserved_accounts,registrations,2",
        "mdf,bronze,spent_cents,125000",
        "mdf,gold,revenue_per_mdf,3.0000",
    ] {
        assert!(csv.lines().any(|l| l == row), "{row:?} missing:\n{csv}");
    }
    let html_path = dir.path().join("report.html");
    let o = prmsync(&[
        "report",
        "attribution",
        "--state",
        state,
        "--format",
        "html",
        "--by",
        "tier",
        "-o",
        html_path.to_str().expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let html = std::fs::read_to_string(&html_path).expect("html written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no scripts");
    assert!(html.matches("<svg").count() >= 4, "a chart per section");
    for figure in [
        "17,000.00",
        "21,000.00",
        "66.7%",
        "45.0",
        "33.3%",
        "20.0",
        "4,500.00",
        "1,250.00",
        "3.00",
        "4.00",
        "MDF against partner-sourced revenue by tier",
    ] {
        assert!(html.contains(figure), "{figure} missing from the page");
    }
}
