//! `prmsync bench`: the tiny suite runs every scenario against the real daemon and reports sane
//! figures (no timing is asserted: the figures are checked for presence and sense only).

use std::path::PathBuf;
use std::process::Command;

use prmsync::bench::{Options, SCENARIOS, Size};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiny_suite_runs_every_scenario_and_reports_sane_figures() {
    // The fleet scenario needs a PostgreSQL server; without one it says it was skipped.
    let postgres = std::env::var("PRMSYNC_TEST_POSTGRES").ok();
    let opts = Options {
        size: Size::Tiny,
        exe: PathBuf::from(env!("CARGO_BIN_EXE_prmsync")),
        postgres: postgres.clone(),
    };
    let report = prmsync::bench::run(&[], &opts)
        .await
        .expect("the suite runs");
    let json = serde_json::to_value(&report).expect("the report serialises");
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, SCENARIOS, "every scenario, in order");
    for s in scenarios {
        let name = s["name"].as_str().unwrap_or_default();
        let metrics = s["metrics"].as_array().expect("metrics");
        if name == "fleet" && postgres.is_none() {
            assert!(metrics.is_empty(), "{s}");
            assert!(
                s["notes"][0]
                    .as_str()
                    .is_some_and(|n| n.starts_with("skipped")),
                "{s}"
            );
            println!("skipped the fleet scenario: PRMSYNC_TEST_POSTGRES is not set");
            continue;
        }
        assert!(!metrics.is_empty(), "{name} measured nothing");
        for m in metrics {
            let v = m["value"].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v >= 0.0),
                "{name}: {} is {v:?}",
                m["name"]
            );
        }
        assert!(
            metrics.iter().any(|m| m["value"].as_f64() > Some(0.0)),
            "{name}: every figure is zero: {metrics:?}"
        );
        assert!(s["met"].is_null(), "tiny runs are not judged: {s}");
    }
    let table = prmsync::bench::render_table(&report);
    for name in SCENARIOS {
        assert!(table.contains(&format!("| {name} |")), "{name} in {table}");
    }
}

#[test]
fn an_unknown_scenario_is_refused_with_the_list_of_scenarios() {
    let out = Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["bench", "--size", "tiny", "no-such-scenario"])
        .output()
        .expect("run prmsync");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-scenario"), "{err}");
    for name in SCENARIOS {
        assert!(err.contains(name), "{name} listed in {err}");
    }
}
