//! The `prmsync` binary: exit codes, `check`, `status`, `demo`.

use std::path::Path;
use std::process::{Command, Output};

fn prmsync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prmsync"));
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run prmsync")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

#[test]
fn the_example_config_checks_clean() {
    let o = prmsync(&["check", &repo("deploy/prmsync.example.toml")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("example(s) passed"), "{}", text(&o));
}

#[test]
fn three_mistakes_give_three_errors_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[daemon]\nbatch_size = 0\n[log]\nformat = \"yaml\"\n[partnerstack]\napi_key = { env = \"PRMSYNC_TEST_UNSET_KEY\" }\n[hubspot]\naccess_token = { env = \"HS\" }\n",
    )
    .unwrap();
    let o = prmsync(&["check", file.to_str().unwrap()], &[("HS", "x")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("3 problem(s)"), "{out}");
    for key in [
        "daemon.batch_size:",
        "log.format:",
        "partnerstack.api_key.env:",
    ] {
        assert!(out.contains(key), "{key} in {out}");
    }
    // The same file through `run` fails the same way before anything starts.
    let o = prmsync(&["run", "--config", file.to_str().unwrap()], &[("HS", "x")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    assert_eq!(prmsync(&["frobnicate"], &[]).status.code(), Some(2));
    let help = prmsync(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help).contains("Exit codes"), "{}", text(&help));
}

#[test]
fn demo_syncs_and_status_reads_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo.db");
    let state = state.to_str().unwrap();
    for _ in 0..2 {
        // Twice in a row: the same end state.
        let o = prmsync(
            &["demo", "--state", state, "--deals", "12", "--partners", "3"],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let out = text(&o);
        assert!(out.contains("12/12 deals in HubSpot"), "{out}");
        assert!(out.contains("Second pass  0 writes"), "{out}");
        assert!(
            out.contains("approved"),
            "registration decisions are reported: {out}"
        );
    }
    let o = prmsync(&["status", "--state", state, "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // One link per deal for the deal flow, and one per registration for the rules' write-backs.
    assert_eq!(report["links"], 24);
    assert_eq!(report["dead_letters"], 0);
    assert_eq!(report["outbox_depth"], 0);
    let decided: i64 = report["registrations"]
        .as_array()
        .expect("registrations by status")
        .iter()
        .map(|pair| pair[1].as_i64().unwrap_or_default())
        .sum();
    assert_eq!(
        decided, 12,
        "every registration is counted under its decision"
    );
    let o = prmsync(&["status", "--state", state], &[]);
    assert!(text(&o).contains("registrations:"), "{}", text(&o));
}

#[test]
fn status_without_a_state_file_says_so() {
    let o = prmsync(&["status", "--state", "/nonexistent/state.db"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no state file"), "{}", text(&o));
}

/// `prmsync run` as systemd runs it: starts, syncs, answers /readyz, and drains on SIGTERM.
#[tokio::test]
async fn run_syncs_and_stops_cleanly_on_sigterm() {
    use crate::harness::{HS_SECRET, HS_TOKEN, PS_KEY, World, wait_until};
    use std::time::Duration;

    let w = World::seeded(8).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = \"state.db\"\npoll_interval_secs = 1\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [partnerstack]\nbase_url = \"{ps}\"\napi_key = {{ env = \"T_PS\" }}\n\
             [hubspot]\nbase_url = \"{hs}\"\naccess_token = {{ env = \"T_HS\" }}\nclient_secret = {{ env = \"T_SECRET\" }}\n",
            ps = w.ps_server.url("/api/v2"),
            hs = w.hs_server.url(""),
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("T_PS", PS_KEY)
        .env("T_HS", HS_TOKEN)
        .env("T_SECRET", HS_SECRET)
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = prmsync::connector::http_client(Duration::from_secs(2));
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    wait_until(Duration::from_secs(30), "readyz", || {
        let (http, ready) = (http.clone(), ready.clone());
        async move {
            http.get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    wait_until(Duration::from_secs(30), "8 deals in HubSpot", || {
        let n = w.hs.objects("deals").len();
        async move { n == 8 }
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("drains in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        w.dir.path().join("state.db").exists(),
        "state path is relative to the config file"
    );
}
