//! Crash safety: the real `prmsync` binary, killed with SIGKILL at random moments and aborted at
//! every named fail point, restarted each time, ends with exactly the expected records on both
//! sides. `PRMSYNC_CRASH_KILLS` sets the number of kills (20 by default), `PRMSYNC_CRASH_SEED`
//! replays a run.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prmsync::failpoint::POINTS;
use prmsync::sim::hubspot::{DEAL_STAGES, deliver_webhook, property_change_event};
use serde_json::{Value, json};

use crate::harness::{HS_SECRET, HS_TOKEN, PS_KEY, World, wait_ok, wait_until};

const DEALS: usize = 400;
const SIGABRT: i32 = 6;

/// Writes a config for the child: the simulators' URLs, secrets from the environment.
fn write_config(w: &World, listen_port: u16) -> PathBuf {
    write_config_polling(w, listen_port, 1, "")
}

/// [`write_config`] with another poll interval and more `[daemon]` lines.
fn write_config_polling(
    w: &World,
    listen_port: u16,
    poll_interval_secs: u64,
    daemon_lines: &str,
) -> PathBuf {
    let path = w.dir.path().join("prmsync.toml");
    let toml = format!(
        r#"[daemon]
state_path = "{state}"
poll_interval_secs = {poll_interval_secs}
batch_size = 50
max_attempts = 20
{daemon_lines}

[log]
level = "warn"

[http]
listen = "127.0.0.1:{listen_port}"

[admin]
listen = "127.0.0.1:0"

[partnerstack]
base_url = "{ps}"
api_key = {{ env = "PRMSYNC_TEST_PS_KEY" }}

[hubspot]
base_url = "{hs}"
access_token = {{ env = "PRMSYNC_TEST_HS_TOKEN" }}
client_secret = {{ env = "PRMSYNC_TEST_HS_SECRET" }}
"#,
        state = w.state_path().display(),
        ps = w.ps_server.url("/api/v2"),
        hs = w.hs_server.url(""),
    );
    std::fs::write(&path, toml).expect("write the child's config");
    path
}

/// Starts `prmsync run` against the world; its log goes to `run-N.log` in the state folder.
fn spawn(config: &Path, run: usize, failpoints: Option<&str>) -> Child {
    let log = File::create(config.with_file_name(format!("run-{run}.log"))).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prmsync"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("PRMSYNC_TEST_PS_KEY", PS_KEY)
        .env("PRMSYNC_TEST_HS_TOKEN", HS_TOKEN)
        .env("PRMSYNC_TEST_HS_SECRET", HS_SECRET)
        .env_remove(prmsync::failpoint::ENV_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(spec) = failpoints {
        cmd.env(prmsync::failpoint::ENV_VAR, spec);
    }
    cmd.spawn().expect("start prmsync")
}

fn log_of(config: &Path, run: usize) -> String {
    std::fs::read_to_string(config.with_file_name(format!("run-{run}.log"))).unwrap_or_default()
}

/// Requests both simulators have answered so far.
fn requests(w: &World) -> u64 {
    w.ps.stats().requests + w.hs.stats().requests
}

/// New work for the next run: partners edit amounts, sales moves stages in HubSpot.
fn make_work(w: &World, rng: &mut fastrand::Rng) {
    let deals = w.ps.deals();
    for _ in 0..5 {
        let mut d = deals[rng.usize(..deals.len())].clone();
        d.insert("amount".into(), json!(rng.i64(10_000..90_000_000)));
        w.ps.upsert_deal(d);
    }
    let crm = w.hs.objects("deals");
    for _ in 0..2.min(crm.len()) {
        let deal = &crm[rng.usize(..crm.len())];
        let id = deal["hs_object_id"].as_str().unwrap_or_default();
        let stage = DEAL_STAGES[rng.usize(..DEAL_STAGES.len())];
        w.hs.set_property("deals", id, "dealstage", stage);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A number from the environment, or `default` when the variable is unset.
fn env_number<T: std::str::FromStr>(name: &str, default: impl FnOnce() -> T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default(),
    }
}

fn seed() -> u64 {
    env_number("PRMSYNC_CRASH_SEED", || fastrand::u64(..))
}

/// After the last run converged, a daemon on the same state file finds nothing to write: no echo
/// loop, no leftover outbox row.
async fn assert_quiescent(w: &World) {
    let (hs, ps) = (w.hs.stats(), w.ps.stats());
    let daemon = w.daemon().await;
    daemon.run_until_idle().await.expect("idle pass");
    let status = daemon
        .engine
        .store()
        .status(jiff::Timestamp::now().as_millisecond())
        .await
        .expect("status");
    daemon.shutdown().await;
    assert_eq!(
        w.hs.stats().batch_upserts,
        hs.batch_upserts,
        "HubSpot writes"
    );
    assert_eq!(w.ps.stats().patches, ps.patches, "PartnerStack writes");
    assert_eq!(status.outbox_depth, 0, "outbox rows left");
    assert_eq!(status.inbox_pending, 0, "inbox rows left");
    assert_eq!(
        status.dead_letters, 0,
        "dead letters: {:?}",
        status.last_errors
    );
}

/// Writes both simulators have taken so far.
fn writes(w: &World) -> (u64, u64) {
    (w.hs.stats().batch_upserts, w.ps.stats().patches)
}

/// Nothing left to do in the state file: no inbox or outbox row, every registration group decided,
/// and every CRM deal carrying its registration decision (the rules write it back after the deal
/// flow created the deal, which the mapping oracle does not look at).
fn settled(w: &World) -> bool {
    let now = jiff::Timestamp::now().as_millisecond();
    let Ok(status) = prmsync::store::status_read_only(&w.state_path(), now) else {
        return false;
    };
    let dirty = rusqlite::Connection::open_with_flags(
        w.state_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .and_then(|c| {
        c.query_row(
            "SELECT COUNT(*) FROM registrations WHERE dirty = 1",
            [],
            |r| r.get::<_, i64>(0),
        )
    });
    status.inbox_pending == 0
        && status.outbox_depth == 0
        && dirty.is_ok_and(|n| n == 0)
        && w.hs
            .objects("deals")
            .iter()
            .all(|d| d.contains_key("prm_registration_status"))
}

/// No write at either simulator for this long (over two poll intervals) means the echoes of the
/// last writes have been read back and found unchanged.
const QUIET: Duration = Duration::from_millis(2500);

async fn converge(w: &World, config: &Path, run: usize) {
    let mut child = spawn(config, run, None);
    wait_ok(Duration::from_secs(90), "convergence after restart", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("prmsync exited with {status}:\n{}", log_of(config, run));
        }
        let state = w.converged();
        async move { state }
    })
    .await;
    // The mappings converged; let the daemon finish the rules' decision write-backs too, so the
    // quiescence check below is about leftovers and echo loops, not work still in flight.
    let mut last = (writes(w), std::time::Instant::now());
    wait_until(Duration::from_secs(60), "the daemon to settle", || {
        let now = writes(w);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
        let done = last.1.elapsed() >= QUIET && settled(w);
        async move { done }
    })
    .await;
    child.kill().expect("stop the last run");
    child.wait().expect("reap the last run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_then_restart_converges() {
    let kills: usize = env_number("PRMSYNC_CRASH_KILLS", || 20);
    let seed = seed();
    eprintln!("PRMSYNC_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = World::seeded(DEALS).await;
    let config = write_config(&w, 0);
    for run in 0..kills {
        if run > 0 {
            make_work(&w, &mut rng);
        }
        let mut child = spawn(&config, run, None);
        let target = requests(&w) + rng.u64(1..=12);
        wait_until(
            Duration::from_secs(30),
            "the daemon to make requests",
            || {
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                let reached = requests(&w) >= target;
                async move { exited || reached }
            },
        )
        .await;
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "run {run}: prmsync exited by itself with {status}:\n{}",
                log_of(&config, run)
            );
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        assert_eq!(status.signal(), Some(9), "run {run} died by SIGKILL");
    }
    converge(&w, &config, kills).await;
    assert_quiescent(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_every_fail_point_then_restart_converges() {
    let seed = seed();
    eprintln!("PRMSYNC_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = World::seeded(DEALS).await;
    let port = free_port();
    let config = write_config(&w, port);
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    let hook = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/webhooks/hubspot"))
        .expect("webhook URL");
    let mut event_id = 0u64;
    for (run, point) in POINTS.iter().enumerate() {
        if run > 0 {
            make_work(&w, &mut rng);
        }
        // The first sync reads two pages and writes four batches, so the later hits are reachable.
        let nth = match *point {
            "poll.after_page_commit" | "drain.after_commit" => rng.u32(1..=2),
            _ => 1,
        };
        let mut child = spawn(&config, run, Some(&format!("{point}={nth}")));
        let crm = w.hs.objects("deals");
        wait_until(Duration::from_secs(60), point, || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            let (http, hook) = (http.clone(), hook.clone());
            // A real deal's current stage when the CRM has deals; the event is stored either way
            // (HubSpot may still be waiting out a rate limit from the runs before).
            let deal = Some(if crm.is_empty() {
                serde_json::json!({"hs_object_id": "9000000001", "dealstage": "appointmentscheduled"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            } else {
                crm[rng.usize(..crm.len())].clone()
            });
            event_id += 1;
            let id = event_id;
            async move {
                if !exited
                    && *point == "webhook.after_commit"
                    && let Some(deal) = deal
                {
                    let oid = deal["hs_object_id"].as_str().unwrap_or_default();
                    let stage = deal["dealstage"].as_str().unwrap_or_default();
                    let ev = property_change_event(id, oid, "dealstage", stage);
                    // The daemon may not listen yet, or die mid-request: both are expected here.
                    match deliver_webhook(&http, &hook, HS_SECRET, &[ev]).await {
                        Err(e) => eprintln!("webhook delivery: {e}"),
                        Ok(s) if !s.is_success() => eprintln!("webhook refused: {s}"),
                        Ok(_) => {}
                    }
                }
                exited
            }
        })
        .await;
        let status = child.wait().expect("reap");
        assert_eq!(
            status.signal(),
            Some(SIGABRT),
            "{point}: expected an abort, got {status}:\n{}",
            log_of(&config, run)
        );
        assert!(
            log_of(&config, run).contains(&format!("fail point {point} reached")),
            "{point}: the abort came from elsewhere:\n{}",
            log_of(&config, run)
        );
    }
    converge(&w, &config, POINTS.len()).await;
    assert_quiescent(&w).await;
    let deals: Vec<Value> =
        w.hs.objects("deals")
            .into_iter()
            .map(Value::Object)
            .collect();
    assert_eq!(deals.len(), DEALS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_backfill_then_restart_rereads_at_most_one_page() {
    const BACKFILL: usize = 1000;
    let pages = BACKFILL.div_ceil(prmsync::connector::partnerstack::api::PAGE_LIMIT) as u64;
    let w = World::seeded(BACKFILL).await;
    // Slow list answers, so the kill lands inside the read; no poll but the backfill's own for an
    // hour, so every list request is counted against the backfill.
    w.ps.turbulence().set_latency(Duration::from_millis(100));
    // The deal flow only: the rules' write-backs are not what this test counts.
    let mappings = w.dir.path().join("mappings");
    std::fs::create_dir_all(&mappings).expect("mappings folder");
    for (name, text) in prmsync::mapping::BUILTIN {
        let file = Path::new(name).file_name().expect("a file name");
        std::fs::write(mappings.join(file), text).expect("write a mapping");
    }
    let line = format!("mappings_dir = \"{}\"", mappings.display());
    let config = write_config_polling(&w, 0, 3600, &line);
    let mut child = spawn(&config, 0, None);
    wait_until(Duration::from_secs(60), "three pages read", || {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let read = w.ps.stats().list_requests >= 3;
        async move { exited || read }
    })
    .await;
    child.kill().expect("SIGKILL");
    assert_eq!(
        child.wait().expect("reap").signal(),
        Some(9),
        "{}",
        log_of(&config, 0)
    );
    let killed_after = w.ps.stats().list_requests;
    let now = jiff::Timestamp::now().as_millisecond();
    let status = prmsync::store::status_read_only(&w.state_path(), now).expect("state file");
    let cursor = status
        .cursors
        .iter()
        .find(|c| c.system == "partnerstack" && c.object == "deals")
        .and_then(|c| prmsync::model::Cursor::decode(&c.position))
        .expect("a cursor after the first pages");
    assert!(
        cursor.resume.is_some(),
        "killed after {killed_after} of {pages} pages, in the middle of the read"
    );
    w.ps.turbulence().set_latency(Duration::ZERO);

    let mut child = spawn(&config, 1, None);
    wait_until(
        Duration::from_secs(90),
        "the backfill after restart",
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("prmsync exited with {status}:\n{}", log_of(&config, 1));
            }
            let done = w.hs.objects("deals").len() == BACKFILL;
            async move { done }
        },
    )
    .await;
    child.kill().expect("stop the second run");
    child.wait().expect("reap");
    let read = w.ps.stats().list_requests;
    let writes = w.hs.writes("deals");
    assert!(
        w.ps.deals().iter().all(|d| {
            let key = d["key"].as_str().unwrap_or_default();
            writes.get(key).is_some_and(|(creates, _)| *creates == 1)
        }),
        "every PartnerStack deal created once in HubSpot"
    );
    assert!(
        read <= pages + 1,
        "{read} list requests for {pages} pages ({killed_after} before the kill): more than one page read twice"
    );
}

/// A partner's delete aborted after HubSpot archived the deal but before the outcome was
/// committed: the restart sends the delete again (archiving an archived deal is a no-op), records
/// it once, and re-creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_delete_then_restart_deletes_once_and_recreates_nothing() {
    use prmsync::webhook::signature::body_hmac;
    const HOOK_SECRET: &str = "crash-hook-secret";
    let w = World::seeded(4).await;
    let port = free_port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mappings = w.dir.path().join("mappings");
    std::fs::create_dir_all(&mappings).expect("mappings dir");
    let flow = std::fs::read_to_string(root.join("mappings/partnerstack-hubspot-deals.toml"))
        .expect("deal flow");
    std::fs::write(
        mappings.join("deals.toml"),
        format!("{flow}\n[delete]\npolicy = \"archive\"\n"),
    )
    .expect("write flow");
    std::fs::copy(
        root.join("mappings/rules-of-engagement.toml"),
        mappings.join("rules-of-engagement.toml"),
    )
    .expect("rules file");
    let secret = w.dir.path().join("hook-secret");
    std::fs::write(&secret, HOOK_SECRET).expect("secret file");
    let config = write_config_polling(
        &w,
        port,
        1,
        &format!("mappings_dir = \"{}\"", mappings.display()),
    );
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "api_key = { env = \"PRMSYNC_TEST_PS_KEY\" }",
        &format!(
            "api_key = {{ env = \"PRMSYNC_TEST_PS_KEY\" }}\nwebhook_secret = {{ file = \"{}\" }}",
            secret.display()
        ),
    );
    std::fs::write(&config, text).expect("config with the webhook secret");

    // Run 0 syncs everything and settles.
    converge(&w, &config, 0).await;
    // Run 1 aborts right after the archive call answered.
    let mut child = spawn(&config, 1, Some("drain.after_send=1"));
    let event = w.ps.delete_deal("deal_1").expect("deal_1");
    let body = serde_json::to_vec(&event).expect("json");
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    wait_until(
        Duration::from_secs(60),
        "the delete to abort mid-send",
        || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            let (http, body) = (http.clone(), body.clone());
            async move {
                if !exited {
                    // The daemon may not listen yet: delivered again until it aborts (an event
                    // delivered twice is staged once).
                    let _ = http
                        .post(format!("http://127.0.0.1:{port}/webhooks/partnerstack"))
                        .header(
                            prmsync::webhook::PRM_SIGNATURE_HEADER,
                            body_hmac(HOOK_SECRET.as_bytes(), &body),
                        )
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                }
                exited
            }
        },
    )
    .await;
    let status = child.wait().expect("reap");
    assert_eq!(status.signal(), Some(SIGABRT), "{}", log_of(&config, 1));
    assert_eq!(w.hs.archived("deals").len(), 1, "archived before the abort");
    converge(&w, &config, 2).await;
    assert_quiescent(&w).await;
    assert_eq!(w.hs.objects("deals").len(), 3, "deal_1 is not re-created");
    assert_eq!(w.hs.archived("deals").len(), 1);
    let conn = rusqlite::Connection::open(w.state_path()).expect("state");
    let deleted: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE source_id = 'deal_1' AND action = 'deleted'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(deleted, 1, "the delete is recorded once");
}

/// Sales merges prmsync's HubSpot deal into its own; the daemon is aborted right after the
/// survivor's write by id answered, before the outcome was committed. The restart sends it again,
/// the link ends on the survivor, and nothing is created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_merge_then_restart_converges_on_the_survivor() {
    let w = World::seeded(4).await;
    let port = free_port();
    let config = write_config(&w, port);
    converge(&w, &config, 0).await;
    let ours = w.hs.find("deals", "prm_deal_id", "deal_1").expect("deal_1");
    let ours = ours["hs_object_id"].as_str().expect("id").to_owned();
    let theirs = w.hs.create(
        "deals",
        [
            ("dealname".to_owned(), "Sales' own deal".to_owned()),
            ("prm_registration_status".to_owned(), "approved".to_owned()),
        ]
        .into(),
    );
    assert!(w.hs.merge("deals", &theirs, &ours));
    let event = json!([{
        "eventId": 990_001, "portalId": 62515, "occurredAt": jiff::Timestamp::now().as_millisecond(),
        "subscriptionType": "deal.merge", "objectId": theirs.parse::<u64>().expect("id"),
        "primaryObjectId": theirs.parse::<u64>().expect("id"),
        "mergedObjectIds": [ours.parse::<u64>().expect("id")],
    }]);
    let events: Vec<Value> = event.as_array().cloned().unwrap_or_default();
    let url =
        reqwest::Url::parse(&format!("http://127.0.0.1:{port}/webhooks/hubspot")).expect("url");
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    let mut child = spawn(&config, 1, Some("drain.after_send=1"));
    wait_until(
        Duration::from_secs(60),
        "the merge write to abort mid-send",
        || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            let (http, url, events) = (http.clone(), url.clone(), events.clone());
            async move {
                if !exited {
                    // Delivered again until the daemon listens and aborts (staged once).
                    let _ = deliver_webhook(&http, &url, HS_SECRET, &events).await;
                }
                exited
            }
        },
    )
    .await;
    let status = child.wait().expect("reap");
    assert_eq!(status.signal(), Some(SIGABRT), "{}", log_of(&config, 1));
    converge(&w, &config, 2).await;
    assert_quiescent(&w).await;
    let survivor =
        w.hs.find("deals", "prm_deal_id", "deal_1")
            .expect("survivor");
    assert_eq!(survivor["hs_object_id"], json!(theirs));
    assert_eq!(
        w.hs.objects("deals").len(),
        4,
        "three deals and the survivor"
    );
    assert_eq!(w.hs.writes("deals")["deal_1"].0, 1, "deal_1 created once");
    let conn = rusqlite::Connection::open(w.state_path()).expect("state");
    let (merged, target): (i64, String) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM ledger WHERE source_id = 'deal_1' AND action = 'merged'),
                    (SELECT target_id FROM links WHERE flow = 'deal-registration' AND source_id = 'deal_1')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("ledger and link");
    assert_eq!((merged, target), (1, theirs), "the merge is recorded once");
}
