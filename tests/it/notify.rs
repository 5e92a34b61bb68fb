//! The systemd notify protocol, seen from a NOTIFY_SOCKET the test owns: READY and STATUS after
//! start, RELOADING (with MONOTONIC_USEC) then READY around a SIGHUP reload, STOPPING on SIGTERM;
//! WATCHDOG=1 pings while every stage makes progress, none once a stage stalls; the periodic
//! one-line STATUS.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::harness::{HS_SECRET, HS_TOKEN, PS_KEY, World};

/// Reads datagrams until one satisfies `want`; every message read is kept in `seen`.
fn until(sock: &UnixDatagram, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> String {
    let mut buf = vec![0; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no matching notification ({e}); seen {seen:?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if want(&msg) {
            return msg;
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_reloading_and_stopping_reach_the_notify_socket() {
    let w = World::seeded(3).await;
    let sock_path = w.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // A bound on each wait: a missing notification fails the test instead of hanging it.
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = \"state.db\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
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
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut seen = Vec::new();
    let sock = std::sync::Arc::new(sock);
    let s = sock.clone();
    let (seen, status) = tokio::task::spawn_blocking(move || {
        let ready = until(&s, &mut seen, |m| m.contains("READY=1"));
        assert!(ready.contains("STATUS=running: synced "), "{ready}");
        signal(pid, "-HUP");
        let reloading = until(&s, &mut seen, |m| m.contains("RELOADING=1"));
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        let ready = until(&s, &mut seen, |m| m.contains("READY=1"));
        assert!(ready.contains("STATUS=reloaded"), "{ready}");
        signal(pid, "-TERM");
        let stopping = until(&s, &mut seen, |m| m.contains("STOPPING=1"));
        (seen, stopping)
    })
    .await
    .unwrap();
    assert!(status.contains("STOPPING=1"), "{seen:?}");
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// Waits for `n` more messages satisfying `want`; returns every message read meanwhile.
fn next_n(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    n: usize,
    want: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let start = seen.len();
    for _ in 0..n {
        until(sock, seen, want);
    }
    seen[start..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_when_a_stage_stalls_and_status_summarises() {
    // No deals yet: the planner has nothing to commit until the test adds one.
    let w = World::seeded(0).await;
    let sock_path = w.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // A bound on each wait: a missing notification fails the test instead of hanging it.
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = \"state.db\"\npoll_interval_secs = 1\nstall_timeout_secs = 3\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
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
        .env("NOTIFY_SOCKET", &sock_path)
        // What systemd sets with WatchdogSec=1s: the daemon pings every half second.
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        // The planner hangs after committing its first batch, as a wedged stage would.
        .env("PRMSYNC_FAILPOINTS", "stall:plan.after_commit")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let sock = std::sync::Arc::new(sock);
    let s = sock.clone();
    let mut seen = Vec::new();
    let healthy = tokio::task::spawn_blocking(move || {
        until(&s, &mut seen, |m| m.contains("READY=1"));
        // Healthy: pings keep coming, and the summary line is there.
        next_n(&s, &mut seen, 3, &|m| m.contains("WATCHDOG=1"));
        let status = until(&s, &mut seen, |m| m.starts_with("STATUS=synced "));
        seen.push(status);
        seen
    })
    .await
    .unwrap();
    let summary = healthy.last().unwrap();
    let re = regex::Regex::new(
        r"^STATUS=synced 0 since \d\d:\d\d; (lag \d+ s|no poll yet); 0 dead letters$",
    )
    .unwrap();
    assert!(re.is_match(summary.trim_end()), "{summary:?}");

    // A deal to plan: the poller stages it, the planner commits it and stalls there.
    w.ps.upsert_deal(prmsync::sim::seed::deals(1, 1).remove(0));
    let s = sock.clone();
    let (after_stall, summary) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        // On a loaded machine another stage can be slow for a moment first; the planner's stall
        // is the one that lasts.
        let stalled = until(&s, &mut seen, |m| {
            m.contains("STATUS=STALLED: ") && m.contains("planner (no progress for")
        });
        // Three more refreshes of the stalled line (its age grows), and no ping among them.
        let mut after = next_n(&s, &mut seen, 3, &|m| m.contains("STATUS=STALLED: "));
        after.insert(0, stalled.clone());
        (after, stalled)
    })
    .await
    .unwrap();
    assert!(summary.contains("planner (no progress for"), "{summary}");
    assert!(summary.contains("watchdog pings stopped"), "{summary}");
    assert!(
        after_stall.iter().all(|m| !m.contains("WATCHDOG=1")),
        "a ping after the stall: {after_stall:?}"
    );
    // The stalled stage does not block a clean stop.
    signal(pid, "-TERM");
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
