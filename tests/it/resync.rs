//! Resync after a mapping change, through the daemon against the simulators: `plan` shows what
//! it would write, the resync updates every existing record once, a second resync writes
//! nothing, and a resync interrupted by a restart continues where it stopped.

use std::path::{Path, PathBuf};

use prmsync::app::Daemon;
use prmsync::engine::resync::Scope;
use prmsync::model::{ObjectRef, SystemKind};
use serde_json::Value;

use crate::harness::World;

const FLOW: &str = "deal-registration";
const OLD: &str = "(partner registration)";
const NEW: &str = "(registered by a partner)";

/// A mappings folder holding the shipped HubSpot deal flow, its deal names ending in `suffix`.
fn deal_flow(dir: &Path, suffix: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("mappings/partnerstack-hubspot-deals.toml"))
        .expect("flow file");
    let out = dir.join("mappings");
    std::fs::create_dir_all(&out).expect("mappings dir");
    std::fs::write(
        out.join("partnerstack-hubspot-deals.toml"),
        text.replace(OLD, suffix),
    )
    .expect("write flow");
    out
}

fn config(world: &World, suffix: &str) -> prmsync::config::Config {
    let mut config = world.config();
    config.daemon.mappings_dir = Some(deal_flow(world.dir.path(), suffix));
    config
}

async fn daemon(world: &World, suffix: &str) -> Daemon {
    Daemon::start(config(world, suffix), prmsync::engine::system_clock())
        .await
        .expect("daemon starts")
}

/// Deal names in HubSpot ending in `suffix`.
fn named(world: &World, suffix: &str) -> usize {
    world
        .hs
        .objects("deals")
        .iter()
        .filter(|d| {
            d.get("dealname")
                .and_then(Value::as_str)
                .is_some_and(|n| n.ends_with(suffix))
        })
        .count()
}

/// Updates per deal key in HubSpot.
fn updates(world: &World) -> Vec<u32> {
    world.hs.writes("deals").values().map(|(_, u)| *u).collect()
}

#[tokio::test]
async fn a_resync_after_a_mapping_change_updates_every_record_once_and_again_nothing() {
    let world = World::seeded(4).await;
    let d = daemon(&world, OLD).await;
    d.run_until_idle().await.expect("first pass");
    assert_eq!(named(&world, OLD), 4);
    d.shutdown().await;

    // The admin changes the deal name's template: nothing changed in the PRM, so nothing moves.
    let d = daemon(&world, NEW).await;
    d.run_until_idle().await.expect("pass after the change");
    assert_eq!(
        named(&world, NEW),
        0,
        "a mapping change alone writes nothing"
    );

    // `prmsync plan` shows what a resync would write.
    let plans = prmsync::app::plan(&config(&world, NEW), Some(FLOW))
        .await
        .expect("plan");
    assert_eq!(plans[0].would_update, 4, "{plans:?}");
    assert_eq!(plans[0].would_create, 0, "{plans:?}");

    d.engine
        .request_resync(FLOW, Scope::All)
        .await
        .expect("resync recorded");
    d.run_until_idle().await.expect("resync pass");
    assert_eq!(named(&world, NEW), 4, "every deal has the new name");
    assert_eq!(updates(&world), vec![1; 4], "each deal updated once");
    let plans = prmsync::app::plan(&config(&world, NEW), Some(FLOW))
        .await
        .expect("plan");
    assert_eq!(plans[0].would_update, 0, "{plans:?}");

    // A second resync reads every record again and writes nothing.
    let before = world.hs.stats().batch_upserts;
    d.engine
        .request_resync(FLOW, Scope::All)
        .await
        .expect("second resync");
    d.run_until_idle().await.expect("second resync pass");
    assert_eq!(world.hs.stats().batch_upserts, before, "no second write");
    let done = d.engine.store().resyncs(10).await.expect("resyncs");
    assert_eq!(done.len(), 2);
    assert!(
        done.iter()
            .all(|r| r.finished_ms.is_some() && r.staged == 4)
    );
    d.shutdown().await;
}

#[tokio::test]
async fn a_resync_of_named_records_or_recent_ones_touches_only_those() {
    let world = World::seeded(4).await;
    let d = daemon(&world, OLD).await;
    d.run_until_idle().await.expect("first pass");
    d.shutdown().await;
    let d = daemon(&world, NEW).await;
    d.engine
        .request_resync(
            FLOW,
            Scope::ids(vec!["deal_2".into(), "deal_3".into()]).expect("ids"),
        )
        .await
        .expect("resync recorded");
    d.run_until_idle().await.expect("resync pass");
    let writes = world.hs.writes("deals");
    assert_eq!(writes["deal_1"].1, 0);
    assert_eq!(writes["deal_2"].1, 1);
    assert_eq!(writes["deal_3"].1, 1);
    assert_eq!(named(&world, NEW), 2);
    // Since a moment after every record's last change: nothing is read again.
    let later = jiff::Timestamp::now().as_millisecond() + 60_000;
    d.engine
        .request_resync(FLOW, Scope::Since(later))
        .await
        .expect("resync recorded");
    d.run_until_idle().await.expect("resync pass");
    assert_eq!(named(&world, NEW), 2);
    let unknown = d.engine.request_resync("no-such-flow", Scope::All).await;
    let e = unknown.expect_err("unknown flow refused").to_string();
    assert!(
        e.contains("no active flow is named") && e.contains(FLOW),
        "{e}"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn a_resync_interrupted_by_a_restart_continues_where_it_stopped() {
    // More deals than one PartnerStack page (250), so the resync reads two pages.
    let world = World::seeded(260).await;
    let d = daemon(&world, OLD).await;
    d.run_until_idle().await.expect("first pass");
    assert_eq!(world.hs.objects("deals").len(), 260);
    d.shutdown().await;

    let d = daemon(&world, NEW).await;
    d.engine
        .request_resync(FLOW, Scope::All)
        .await
        .expect("resync recorded");
    let deals = ObjectRef {
        system: SystemKind::PartnerStack,
        object: "deals".into(),
    };
    // One page of the resync is read and staged; then the daemon stops.
    let (staged, done) = d.engine.resync_pages(&deals, 1).await.expect("one page");
    assert_eq!((staged, done), (250, false));
    d.shutdown().await;

    let d = daemon(&world, NEW).await;
    d.run_until_idle().await.expect("the resync continues");
    assert_eq!(named(&world, NEW), 260);
    assert_eq!(updates(&world), vec![1; 260], "each deal updated once");
    let r = d
        .engine
        .store()
        .resyncs(1)
        .await
        .expect("resyncs")
        .remove(0);
    assert_eq!((r.pages, r.staged), (2, 260), "{r:?}");
    assert!(r.finished_ms.is_some());
    d.shutdown().await;
}

/// `prmsync resync` while `prmsync run` runs: the request goes into the state file, the
/// daemon's poller carries it out, and `--list` shows it finished; unchanged records are not
/// written again. Bad input exits 2 and records nothing.
#[tokio::test]
async fn the_resync_command_is_carried_out_by_the_running_daemon() {
    use crate::harness::{HS_SECRET, HS_TOKEN, PS_KEY, wait_until};
    use std::time::Duration;

    let w = World::seeded(5).await;
    let port = |()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = \"state.db\"\npoll_interval_secs = 1\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [partnerstack]\nbase_url = \"{ps}\"\napi_key = {{ env = \"T_PS\" }}\n\
             [hubspot]\nbase_url = \"{hs}\"\naccess_token = {{ env = \"T_HS\" }}\nclient_secret = {{ env = \"T_SECRET\" }}\n",
            port(()),
            port(()),
            ps = w.ps_server.url("/api/v2"),
            hs = w.hs_server.url(""),
        ),
    )
    .expect("config");
    let env = [
        ("T_PS", PS_KEY),
        ("T_HS", HS_TOKEN),
        ("T_SECRET", HS_SECRET),
    ];
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["run", "--config", config.to_str().expect("path")])
        .envs(env)
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .spawn()
        .expect("daemon");
    wait_until(Duration::from_secs(30), "5 deals in HubSpot", || {
        let n = w.hs.objects("deals").len();
        async move { n == 5 }
    })
    .await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
            .args(args)
            .args(["--config", config.to_str().expect("path")])
            .envs(env)
            .output()
            .expect("prmsync");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = cli(&["resync", "--flow", "nope"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no active flow is named \"nope\""), "{text}");
    let (code, text) = cli(&["resync", "--flow", FLOW, "--since", "yesterday"]);
    assert_eq!(code, Some(2), "{text}");
    // The rules' decisions are written back after the deals: wait until nothing is left to do.
    let state = w.dir.path().join("state.db");
    wait_until(Duration::from_secs(30), "the daemon is idle", || {
        let conn = rusqlite::Connection::open(&state).expect("state");
        let busy: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'pending')
                      + (SELECT COUNT(*) FROM outbox)
                      + (SELECT COUNT(*) FROM registrations WHERE dirty = 1 OR status IS NULL)",
                [],
                |r| r.get(0),
            )
            .expect("counts");
        async move { busy == 0 }
    })
    .await;
    let before = w.hs.stats().batch_upserts;
    let (code, text) = cli(&["resync", "--flow", FLOW]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("resync #1 of flow deal-registration recorded"),
        "{text}"
    );
    wait_until(
        Duration::from_secs(30),
        "the daemon finishes the resync",
        || {
            let (_, list) = cli(&["resync", "--list"]);
            async move { list.contains("finished") }
        },
    )
    .await;
    let (_, list) = cli(&["resync", "--list"]);
    assert!(list.contains("#1") && list.contains("5 staged"), "{list}");
    assert_eq!(
        list.lines().count(),
        1,
        "the refused requests recorded nothing: {list}"
    );
    assert_eq!(
        w.hs.stats().batch_upserts,
        before,
        "unchanged records are not written"
    );
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops in time")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
}
