//! Operator verbs end to end: `backup` while the store writes, `sim` then `run` (and its logs),
//! completions and the man page from the CLI definition.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prmsync::model::{Change, ObjectRef, Record, SystemKind};
use prmsync::store::Store;
use tokio_util::sync::CancellationToken;

use crate::harness::wait_until;

fn change(i: u64) -> Change {
    let mut fields = serde_json::Map::new();
    fields.insert("name".into(), format!("deal {i}").into());
    Change::versioned(
        ObjectRef {
            system: SystemKind::PartnerStack,
            object: "deals".into(),
        },
        Record {
            id: format!("deal_{i}"),
            modified_ms: 1_000 + i as i64,
            fields,
        },
    )
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_opens_and_passes_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let store = Store::open(&state).unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let writer = {
        let (store, written, stop) = (store.clone(), written.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                store
                    .stage_changes(vec![change(i)], None, 1_000)
                    .await
                    .expect("write");
                i += 1;
                written.store(i, Ordering::SeqCst);
            }
        })
    };
    let mut copies = Vec::new();
    for n in 0..3 {
        let at_least = (n + 1) * 20;
        wait_until(Duration::from_secs(30), "writes before a backup", || {
            let w = written.load(Ordering::SeqCst);
            async move { w >= at_least }
        })
        .await;
        let before = written.load(Ordering::SeqCst);
        let (src, dest) = (state.clone(), dir.path().join(format!("backup-{n}.db")));
        let report = tokio::task::spawn_blocking(move || prmsync::ops::backup::backup(&src, &dest))
            .await
            .unwrap()
            .expect("backup");
        copies.push((report, before));
    }
    stop.cancel();
    writer.await.unwrap();
    let total = written.load(Ordering::SeqCst) as i64;
    for (report, before) in copies {
        let conn = rusqlite::Connection::open(&report.path).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let rows = count(&conn, "SELECT count(*) FROM inbox");
        assert!(
            rows >= before as i64 && rows <= total,
            "a snapshot between {before} and {total} rows, got {rows}"
        );
        assert_eq!(
            report.schema_version,
            count(&conn, "PRAGMA user_version"),
            "the report names the copy's schema version"
        );
        assert!(!report.path.with_extension("db.partial").exists());
    }
}

fn prmsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run prmsync")
}

#[test]
fn backup_cli_writes_a_checked_copy_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    drop(Store::open(&state).unwrap());
    let dest = dir.path().join("copy.db");
    let (s, d) = (state.to_str().unwrap(), dest.to_str().unwrap());
    let o = prmsync(&["backup", "--state", s, d, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["schema_version"].as_i64().unwrap() > 0);
    let again = prmsync(&["backup", "--state", s, d]);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let bash = prmsync(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let bash = String::from_utf8(bash.stdout).unwrap();
    for verb in ["backup", "sim", "dlq", "status", "review"] {
        assert!(bash.contains(verb), "bash completion knows {verb}");
    }
    let man = prmsync(&["man"]);
    assert_eq!(man.status.code(), Some(0));
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(man.starts_with(".ie"), "roff output");
    assert!(man.contains(".TH prmsync"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    let o = prmsync(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(dir.path().join("prmsync-backup.1").exists());
    assert_eq!(
        prmsync(&["completions", "nosuchshell"]).status.code(),
        Some(2)
    );
}

/// `prmsync sim` in one process, `prmsync run` against its config in another until the deals
/// sync; returns the run's debug logs (JSON).
async fn sim_then_run(redact: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim/prmsync.toml");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    // `redact` is log.redact_personal_data for the run.
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["sim", "--config", config.to_str().unwrap(), "--deals", "6"])
        .args(["--listen", &free(), "--admin-listen", &free()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "sim writes its config", || {
        let exists = config.exists();
        async move { exists }
    })
    .await;
    let mut run = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .env("PRMSYNC__LOG__LEVEL", "debug")
        .env("PRMSYNC__LOG__FORMAT", "json")
        .env("PRMSYNC__LOG__REDACT_PERSONAL_DATA", redact)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read stderr from the start: a full pipe would stall the daemon.
    let mut stderr = run.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s)
            .await
            .unwrap();
        s
    });
    let state = dir.path().join("sim/state.db");
    wait_until(Duration::from_secs(60), "6 deals linked", || {
        let report = state
            .exists()
            .then(|| prmsync::store::status_read_only(&state, 0).ok())
            .flatten();
        async move { report.is_some_and(|r| r.links >= 6 && r.outbox_depth == 0) }
    })
    .await;
    for child in [&mut run, &mut sim] {
        let pid = child.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("stops in time")
            .unwrap();
        assert_eq!(status.code(), Some(0));
    }
    logs.await.unwrap()
}

/// The run syncs, and its debug logs (JSON, stable field names) hold no configured secret and
/// no seeded email.
#[tokio::test]
async fn sim_then_run_syncs_and_logs_no_secret_or_email() {
    let logs = sim_then_run("true").await;
    assert!(logs.contains("staged changes"), "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        for key in ["timestamp", "level", "message"] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
    }
    let mut secret_or_personal = vec![
        crate::harness::PS_KEY.to_owned(),
        crate::harness::HS_TOKEN.to_owned(),
        crate::harness::HS_SECRET.to_owned(),
    ];
    for deal in prmsync::sim::seed::deals(6, 5) {
        secret_or_personal.push(deal["contact_email"].as_str().unwrap().to_owned());
    }
    for s in &secret_or_personal {
        assert!(!logs.contains(s.as_str()), "{s} is in the logs");
    }
}
