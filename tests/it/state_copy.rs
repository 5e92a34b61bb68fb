//! `prmsync state copy`: a state synced on SQLite through the demo flow moves to PostgreSQL, and
//! the daemon goes on from the copied cursors and links: no new CRM write, no re-read beyond one
//! page per object, and `status` shows the same figures. On the copy, `prmsync plan` and `report
//! attribution` read the PostgreSQL state and print exactly what they print from the file, and
//! `backup` refuses with the `pg_dump` command. Runs with `PRMSYNC_TEST_POSTGRES` set.

use std::path::{Path, PathBuf};

use prmsync::store::pg::PgTarget;
use prmsync::store::{StatusReport, Store};

use crate::harness::{HS_SECRET, HS_TOKEN, PS_KEY, World, postgres_state};

/// A config file for the binaries: the state file, or the PostgreSQL state when `pg` is given.
fn write_config(w: &World, name: &str, pg: Option<&PgTarget>) -> PathBuf {
    let path = w.dir.path().join(name);
    let state = pg.map_or_else(String::new, |t| {
        format!("[state]\nurl = \"{}\"\nschema = \"{}\"\n", t.url, t.schema)
    });
    std::fs::write(
        &path,
        format!(
            "[daemon]\nstate_path = \"{}\"\n{state}\
             [partnerstack]\nbase_url = \"{}\"\napi_key = {{ env = \"T_PS\" }}\n\
             [hubspot]\nbase_url = \"{}\"\naccess_token = {{ env = \"T_HS\" }}\n\
             client_secret = {{ env = \"T_SECRET\" }}\n",
            w.state_path().display(),
            w.ps_server.url("/api/v2"),
            w.hs_server.url(""),
        ),
    )
    .expect("config");
    path
}

/// `prmsync ARGS`: (exit code, stdout, stderr); async, so the simulators answer meanwhile.
async fn prmsync(args: &[&str], config: Option<&Path>) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"));
    cmd.args(args)
        .envs([
            ("T_PS", PS_KEY),
            ("T_HS", HS_TOKEN),
            ("T_SECRET", HS_SECRET),
        ])
        .env_remove("RUST_LOG");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().await.expect("prmsync");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `prmsync state copy ...`: (exit code, stdout + stderr).
async fn copy(from: &std::path::Path, url: &str, schema: &str) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["state", "copy", "--from"])
        .arg(format!("sqlite:{}", from.display()))
        .args(["--to", url, "--schema", schema])
        .output()
        .await
        .expect("prmsync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The figures `status` shows that a copy must keep (not ages, sizes or the schema's step).
fn figures(s: &StatusReport) -> String {
    let cursors: Vec<_> = s
        .cursors
        .iter()
        .map(|c| (c.system.clone(), c.object.clone(), c.position.clone()))
        .collect();
    format!(
        "cursors {cursors:?}; inbox {} outbox {} retrying {} dead {} links {}; ledger {:?}; \
         registrations {:?}; reviews {}; holds {}",
        s.inbox_pending,
        s.outbox_depth,
        s.outbox_retrying,
        s.dead_letters,
        s.links,
        s.ledger,
        s.registrations,
        s.reviews_pending,
        s.holds.len()
    )
}

#[tokio::test]
async fn a_state_copied_to_postgres_goes_on_without_a_new_crm_write_or_a_re_read() {
    let Some(target) = postgres_state() else {
        println!("skipped on PostgreSQL: PRMSYNC_TEST_POSTGRES is not set (see docs/postgres.md)");
        return;
    };
    let mut w = World::seeded(20).await;
    // The installation starts on its state file.
    w.postgres = None;
    let d = w.daemon().await;
    d.run_until_idle().await.expect("first sync");
    w.converged().expect("converged on SQLite");
    let now = jiff::Timestamp::now().as_millisecond();
    let before = d.engine.store().status(now).await.expect("status");
    assert!(before.links >= 20, "{before:?}");

    // While the daemon holds the file, the copy is refused and PostgreSQL is left untouched.
    let (code, out) = copy(&w.state_path(), &target.url, &target.schema).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("stop it"), "{out}");
    d.shutdown().await;

    let (code, out) = copy(&w.state_path(), &target.url, &target.schema).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("links") && out.contains("each count checked"),
        "{out}"
    );
    assert!(
        !out.contains(&target.url),
        "the URL is never printed: {out}"
    );
    // A second copy into the same schema is refused: it holds a state now.
    let (code, again) = copy(&w.state_path(), &target.url, &target.schema).await;
    assert_ne!(code, Some(0), "{again}");
    assert!(again.contains("already holds prmsync state"), "{again}");

    let pg = Store::open_postgres(&target).expect("PostgreSQL state");
    let copied = pg.status(now).await.expect("status on PostgreSQL");
    let (kept, recounted) = pg.counts_kept_and_recounted().await.expect("counts");
    drop(pg);
    assert_eq!(figures(&copied), figures(&before), "status after the copy");
    assert_eq!(kept.links, recounted.links);

    // plan and the attribution report read the copy as they read the file: the same output.
    let on_file = write_config(&w, "file.toml", None);
    let on_pg = write_config(&w, "pg.toml", Some(&target));
    let report = ["report", "attribution", "--format", "json"];
    let (code, from_file, err) = prmsync(&report, Some(&on_file)).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, from_pg, err) = prmsync(&report, Some(&on_pg)).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(from_pg.contains("registrations"), "{from_pg}");
    assert_eq!(from_pg, from_file, "the report from PostgreSQL");
    let (code, plan_file, err) = prmsync(&["plan", "--json"], Some(&on_file)).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, plan_pg, err) = prmsync(&["plan", "--json"], Some(&on_pg)).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(plan_pg, plan_file, "the plan from PostgreSQL");
    let dest = w.dir.path().join("backup.db");
    let (code, _, err) = prmsync(&["backup", dest.to_str().expect("path")], Some(&on_pg)).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("pg_dump --schema={}", target.schema)),
        "{err}"
    );
    assert!(
        !err.contains(&target.url),
        "the URL is never printed: {err}"
    );
    assert!(!dest.exists());

    // The daemon on PostgreSQL, with the same simulators: nothing to write, one page per object.
    let (hs, ps) = (w.hs.stats(), w.ps.stats());
    w.postgres = Some(target);
    let d = w.daemon().await;
    d.run_until_idle().await.expect("a pass on PostgreSQL");
    let (hs_after, ps_after) = (w.hs.stats(), w.ps.stats());
    assert_eq!(
        (hs_after.batch_upserts, hs_after.created, hs_after.updated),
        (hs.batch_upserts, hs.created, hs.updated),
        "no new CRM write"
    );
    assert_eq!(ps_after.patches, ps.patches, "no new PRM write");
    let objects = |system: &str| {
        i64::try_from(before.cursors.iter().filter(|c| c.system == system).count()).unwrap_or(0)
    };
    let ps_reads = i64::try_from(ps_after.list_requests - ps.list_requests).unwrap_or(i64::MAX);
    assert!(
        ps_reads <= objects("partnerstack"),
        "{ps_reads} PartnerStack list requests for {} objects",
        objects("partnerstack")
    );
    let hs_reads = i64::try_from(hs_after.searches - hs.searches).unwrap_or(i64::MAX);
    assert!(
        hs_reads <= objects("hubspot"),
        "{hs_reads} HubSpot searches for {} objects",
        objects("hubspot")
    );
    let after = d.engine.store().status(now).await.expect("status");
    assert_eq!(after.links, before.links);
    assert_eq!(after.dead_letters, before.dead_letters);
    d.shutdown().await;
    w.converged().expect("still converged");
}
