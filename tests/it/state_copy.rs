//! `prmsync state copy`: a state synced on SQLite through the demo flow moves to PostgreSQL, and
//! the daemon goes on from the copied cursors and links: no new CRM write, no re-read beyond one
//! page per object, and `status` shows the same figures. Runs with `PRMSYNC_TEST_POSTGRES` set.

use prmsync::store::{StatusReport, Store};

use crate::harness::{World, postgres_state};

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
    assert!(out.contains("links") && out.contains("each count checked"), "{out}");
    assert!(!out.contains(&target.url), "the URL is never printed: {out}");
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
