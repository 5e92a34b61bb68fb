//! Erasure (GDPR Art. 17 / CCPA) through the real binaries: `prmsync erase` while `prmsync run`
//! runs, against the simulators; afterwards the address is in no byte of the state file or its
//! WAL (after a checkpoint) and in no log line; a dry run changes nothing. And HubSpot's
//! `contact.privacyDeletion` webhook erasing a contact that a flow created. With
//! `PRMSYNC_TEST_POSTGRES` set, the same through a PostgreSQL state: no row of the schema holds
//! the address afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use prmsync::sim::hubspot::{deliver_webhook, privacy_deletion_event};
use serde_json::Value;

use crate::harness::{HS_SECRET, HS_TOKEN, PS_KEY, World, wait_until};

const ENV: [(&str, &str); 3] = [
    ("T_PS", PS_KEY),
    ("T_HS", HS_TOKEN),
    ("T_SECRET", HS_SECRET),
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A config for the binaries (state next to it), `extra` appended.
fn write_config(w: &World, port: u16, extra: &str) -> PathBuf {
    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = \"state.db\"\npoll_interval_secs = 1\n{extra}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [log]\nlevel = \"info\"\nformat = \"human\"\n\
             [partnerstack]\nbase_url = \"{ps}\"\napi_key = {{ env = \"T_PS\" }}\n\
             [hubspot]\nbase_url = \"{hs}\"\naccess_token = {{ env = \"T_HS\" }}\nclient_secret = {{ env = \"T_SECRET\" }}\n",
            free_port(),
            ps = w.ps_server.url("/api/v2"),
            hs = w.hs_server.url(""),
        ),
    )
    .expect("config");
    config
}

/// `prmsync ARGS --config CONFIG`: (exit code, stdout + stderr). Async: the simulators answer
/// on this test's runtime while the command runs.
async fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(args)
        .args(["--config", config.to_str().expect("path")])
        .envs(ENV)
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

/// `prmsync run` with its logs going to `log`.
fn spawn_daemon(config: &Path, log: &Path) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("log file");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["run", "--config", config.to_str().expect("path")])
        .envs(ENV)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("daemon")
}

async fn stop(mut child: tokio::process::Child) {
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

/// Waits until nothing is pending in the state file (inbox, outbox, undecided registrations).
async fn idle(state: &Path) {
    wait_until(Duration::from_secs(30), "the daemon is idle", || {
        let conn = rusqlite::Connection::open(state).expect("state");
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
}

/// Whether `needle` (any case) is in the raw bytes of `path` (a missing file holds nothing).
fn bytes_hold(path: &Path, needle: &str) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let needle = needle.to_lowercase().into_bytes();
    bytes
        .to_ascii_lowercase()
        .windows(needle.len())
        .any(|w| w == needle.as_slice())
}

/// Checkpoints the WAL into the file (as the test's reader), then whether the state file or its
/// WAL holds `needle`.
fn state_holds(state: &Path, needle: &str) -> bool {
    let conn = rusqlite::Connection::open(state).expect("state");
    let _: (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("checkpoint");
    drop(conn);
    let wal = PathBuf::from(format!("{}-wal", state.display()));
    bytes_hold(state, needle) || bytes_hold(&wal, needle)
}

/// Where the state file's rows still hold `needle` (table.column), for a failure's message.
fn held_in(state: &Path, needle: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(state).expect("state");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("names");
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .expect("columns")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("names");
        for c in cols {
            let n: i64 = conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM \"{t}\" WHERE instr(lower(CAST(\"{c}\" AS TEXT)), ?1) > 0"),
                    [needle.to_lowercase()],
                    |r| r.get(0),
                )
                .expect("count");
            if n > 0 {
                out.push(format!("{t}.{c}: {n}"));
            }
        }
    }
    out
}

fn text<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn erase_by_email_leaves_the_address_nowhere_and_a_dry_run_changes_nothing() {
    let w = World::seeded(3).await;
    let deal = w.ps.deal("deal_1").expect("seeded deal");
    let email = text(&deal, "contact_email").to_owned();
    let contact = w.hs.create(
        "contacts",
        BTreeMap::from([
            ("email".to_owned(), email.to_uppercase()),
            ("firstname".to_owned(), "Sam".to_owned()),
        ]),
    );
    let config = write_config(&w, free_port(), "");
    let state = w.dir.path().join("state.db");
    let log = w.dir.path().join("daemon.log");
    let daemon = spawn_daemon(&config, &log);
    wait_until(Duration::from_secs(30), "3 deals in HubSpot", || {
        let n = w.hs.objects("deals").len();
        async move { n == 3 }
    })
    .await;
    idle(&state).await;
    assert!(
        state_holds(&state, &email),
        "the seeded address is in the state file"
    );

    // Bad input: refused with exit 2, nothing done.
    let (code, out) = cli(&config, &["erase", "--email", "not-an-address"]).await;
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = cli(&config, &["erase", "--record", "hubspot/contacts"]).await;
    assert_eq!(code, Some(2), "{out}");

    // A dry run says what would happen and changes nothing.
    let hs_before = w.hs.stats().batch_upserts;
    let (code, out) = cli(&config, &["erase", "--email", &email, "--dry-run"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(
        out.contains(&format!("gdpr-delete contacts {contact}"))
            || out.contains("gdpr-delete the contact"),
        "{out}"
    );
    assert!(!out.to_lowercase().contains(&email), "{out}");
    assert_eq!(w.hs.objects("contacts").len(), 1);
    assert_eq!(w.hs.stats().batch_upserts, hs_before);
    assert_eq!(
        text(&w.ps.deal("deal_1").expect("deal"), "contact_first_name"),
        "Sam"
    );
    assert!(state_holds(&state, &email), "a dry run purges nothing");
    let (_, audit) = cli(&config, &["erase"]).await;
    assert!(audit.contains("no erasures recorded"), "{audit}");

    // The erasure, with the daemon running.
    let (code, out) = cli(&config, &["erase", "--email", &email.to_uppercase()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("erased:"), "{out}");
    assert!(
        out.contains("carried out by the running daemon"),
        "the daemon holds the state file, so it carries the erasure out: {out}"
    );
    assert!(out.contains("contact_email cannot be changed"), "{out}");
    assert!(
        w.hs.objects("contacts").is_empty(),
        "the contact is gdpr-deleted"
    );
    let crm_deal =
        w.hs.find("deals", "prm_deal_id", "deal_1")
            .expect("deal stays");
    assert_eq!(
        text(&crm_deal, "prm_contact_email"),
        "",
        "scrubbed on the CRM deal"
    );
    let prm_deal = w.ps.deal("deal_1").expect("deal stays");
    assert_eq!(text(&prm_deal, "contact_first_name"), "");
    assert_eq!(text(&prm_deal, "contact_last_name"), "");
    // The other deals keep their contacts.
    let other = w.hs.find("deals", "prm_deal_id", "deal_2").expect("deal");
    assert!(text(&other, "prm_contact_email").contains('@'));

    // The daemon goes on (it reads the scrubbed records again) and stops; then nothing holds
    // the address: not the state file, not its WAL, not a log line.
    idle(&state).await;
    stop(daemon).await;
    assert!(
        !state_holds(&state, &email),
        "the address is gone from the state file; rows holding it: {:?}",
        held_in(&state, &email)
    );
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        !logs.to_lowercase().contains(&email),
        "the logs never held it"
    );
    assert!(!out.to_lowercase().contains(&email));
    let (_, audit) = cli(&config, &["erase"]).await;
    assert!(
        audit.contains("#1") && audit.contains("by email"),
        "{audit}"
    );
    assert!(!audit.to_lowercase().contains(&email));
    assert!(
        !audit.contains("deal_1"),
        "the audit names no record: {audit}"
    );
}

/// A contact flow for the privacy-deletion test: each deal registration's contact becomes a
/// HubSpot contact.
const CONTACT_FLOW: &str = r#"
name = "deal-contacts"
description = "the contact person of a deal registration -> HubSpot contact"

[source]
system = "partnerstack"
object = "deals"

[target]
system = "hubspot"
object = "contacts"
external_id = "prm_deal_id"

[[field]]
source = "contact_email"
target = "email"
transforms = ["trim", "lower"]

[[field]]
source = "contact_first_name"
target = "firstname"

[[field]]
source = "contact_last_name"
target = "lastname"
"#;

#[tokio::test]
async fn a_hubspot_privacy_deletion_erases_the_person_from_the_prm_and_the_state() {
    let w = World::seeded(2).await;
    let email = text(&w.ps.deal("deal_2").expect("deal"), "contact_email").to_owned();
    let mappings = w.dir.path().join("mappings");
    std::fs::create_dir_all(&mappings).expect("dir");
    std::fs::write(mappings.join("deal-contacts.toml"), CONTACT_FLOW).expect("flow");
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings);
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon");
    d.run_until_idle().await.expect("first pass");
    let contact =
        w.hs.find("contacts", "prm_deal_id", "deal_2")
            .expect("contact");
    let id = text(&contact, "hs_object_id").to_owned();

    // HubSpot deletes the contact for a privacy request and tells prmsync.
    assert!(w.hs.gdpr_delete(&id));
    let http = prmsync::connector::http_client(Duration::from_secs(5));
    let hook =
        reqwest::Url::parse(&format!("http://{}/webhooks/hubspot", d.http_addr)).expect("url");
    let status = deliver_webhook(&http, &hook, HS_SECRET, &[privacy_deletion_event(77, &id)])
        .await
        .expect("delivered");
    assert!(status.is_success(), "{status}");
    d.run_until_idle().await.expect("the erasure");

    let prm_deal = w.ps.deal("deal_2").expect("deal stays");
    assert_eq!(text(&prm_deal, "contact_first_name"), "");
    assert_eq!(text(&prm_deal, "contact_last_name"), "");
    // The contact is not re-created, and the other contact is untouched.
    d.run_until_idle().await.expect("a later pass");
    assert!(w.hs.find("contacts", "prm_deal_id", "deal_2").is_none());
    assert!(w.hs.find("contacts", "prm_deal_id", "deal_1").is_some());
    let audits = d.engine.store().erasures(5).await.expect("audit");
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].audit.origin, "hubspot contact.privacyDeletion");
    d.shutdown().await;
    match &w.postgres {
        Some(target) => {
            let held = pg_rows_holding(target, &email).await;
            assert!(
                held.is_empty(),
                "the address is gone from the schema: {held:?}"
            );
        }
        None => assert!(
            !state_holds(&w.state_path(), &email),
            "the address is gone from the state file"
        ),
    }
}

/// Runs `f` with a connection to the PostgreSQL state (a blocking client: off the runtime).
async fn with_pg<R: Send + 'static>(
    target: &prmsync::store::pg::PgTarget,
    f: impl FnOnce(&mut postgres::Client) -> R + Send + 'static,
) -> R {
    let (url, schema) = (target.url.clone(), target.schema.clone());
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute(&format!("SET search_path TO {schema}"))
            .expect("schema");
        f(&mut c)
    })
    .await
    .expect("PostgreSQL check")
}

/// Where the schema's rows still hold `needle` (table.column: rows), any column cast to text.
async fn pg_rows_holding(target: &prmsync::store::pg::PgTarget, needle: &str) -> Vec<String> {
    let needle = needle.to_lowercase();
    with_pg(target, move |c| {
        let columns = c
            .query(
                "SELECT c.relname::TEXT, a.attname::TEXT FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'
                   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
                &[],
            )
            .expect("columns");
        let mut out = Vec::new();
        for col in columns {
            let (t, k): (String, String) = (col.get(0), col.get(1));
            let n: i64 = c
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FROM \"{t}\" WHERE strpos(lower(\"{k}\"::TEXT), $1) > 0"
                    ),
                    &[&needle],
                )
                .expect("count")
                .get(0);
            if n > 0 {
                out.push(format!("{t}.{k}: {n}"));
            }
        }
        out
    })
    .await
}

/// Waits until nothing is pending in the PostgreSQL state (as [`idle`] for the file).
async fn pg_idle(target: &prmsync::store::pg::PgTarget) {
    wait_until(Duration::from_secs(30), "the daemon is idle", || async {
        let busy: i64 = with_pg(target, |c| {
            c.query_one(
                "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'pending')
                      + (SELECT COUNT(*) FROM outbox)
                      + (SELECT COUNT(*) FROM registrations WHERE dirty = 1 OR status IS NULL)",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(1)
        })
        .await;
        busy == 0
    })
    .await;
}

#[tokio::test]
async fn erase_on_postgres_leaves_the_address_in_no_row_with_or_without_a_running_daemon() {
    let w = World::seeded(3).await;
    let Some(target) = w.postgres.clone() else {
        println!("skipped on PostgreSQL: PRMSYNC_TEST_POSTGRES is not set (see docs/postgres.md)");
        return;
    };
    let first = text(&w.ps.deal("deal_1").expect("deal"), "contact_email").to_owned();
    let second = text(&w.ps.deal("deal_2").expect("deal"), "contact_email").to_owned();
    w.hs.create(
        "contacts",
        BTreeMap::from([("email".to_owned(), first.clone())]),
    );
    let state = format!(
        "\n[state]\nurl = \"{}\"\nschema = \"{}\"\n",
        target.url, target.schema
    );
    let config = write_config(&w, free_port(), &state);
    let log = w.dir.path().join("daemon.log");
    let daemon = spawn_daemon(&config, &log);
    wait_until(Duration::from_secs(30), "3 deals in HubSpot", || {
        let n = w.hs.objects("deals").len();
        async move { n == 3 }
    })
    .await;
    pg_idle(&target).await;
    assert!(!pg_rows_holding(&target, &first).await.is_empty());

    // With the daemon running, it carries the erasure out (it holds the schema's lock).
    let (code, out) = cli(&config, &["erase", "--email", &first]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("carried out by the running daemon"), "{out}");
    assert!(out.contains("vacuumed"), "{out}");
    assert!(w.hs.objects("contacts").is_empty(), "gdpr-deleted");
    pg_idle(&target).await;
    stop(daemon).await;
    let held = pg_rows_holding(&target, &first).await;
    assert!(held.is_empty(), "rows holding the address: {held:?}");
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(!logs.to_lowercase().contains(&first));

    // Without a daemon, the command carries it out itself.
    assert!(!pg_rows_holding(&target, &second).await.is_empty());
    let (code, out) = cli(&config, &["erase", "--email", &second]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("running daemon"), "{out}");
    let held = pg_rows_holding(&target, &second).await;
    assert!(held.is_empty(), "rows holding the address: {held:?}");
    let (_, audit) = cli(&config, &["erase"]).await;
    assert!(audit.contains("#1") && audit.contains("#2"), "{audit}");
    assert!(!audit.to_lowercase().contains(&first), "{audit}");
}
