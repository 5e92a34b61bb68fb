//! Crash safety of a Salesforce merge with the real `prmsync` binary: sales merges the Account
//! prmsync created into its own; the daemon is aborted right after the write that gives the master
//! the external id answered, before its outcome was committed. The restart sends it again (an
//! upsert by id is safe to repeat), the link ends on the master, nothing is created twice, and the
//! merge is recorded once.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{PS_KEY, World, wait_until};
use crate::lifecycle::{mappings_with, salesforce};

const SF_ACCOUNTS: &str = "tests/fixtures/mappings-match-salesforce/partner-accounts.toml";
const SIGABRT: i32 = 6;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The child's config: PartnerStack and Salesforce simulators, secrets from the environment.
fn write_config(w: &World, sf_url: &str, mappings: &Path) -> PathBuf {
    let path = w.dir.path().join("prmsync.toml");
    let toml = format!(
        r#"[daemon]
state_path = "{state}"
poll_interval_secs = 1
mappings_dir = "{mappings}"
state_key = {{ env = "T_STATE_KEY" }}

[log]
level = "warn"

[http]
listen = "127.0.0.1:{http}"

[admin]
listen = "127.0.0.1:0"

[partnerstack]
base_url = "{ps}"
api_key = {{ env = "T_PS" }}

[salesforce]
login_url = "{sf_url}"
auth = "refresh_token"
client_id = "3MVG9sim.consumer.key"
client_secret = {{ env = "T_SF_SECRET" }}
refresh_token = {{ env = "T_SF_TOKEN" }}
"#,
        state = w.state_path().display(),
        mappings = mappings.display(),
        http = free_port(),
        ps = w.ps_server.url("/api/v2"),
    );
    std::fs::write(&path, toml).expect("config");
    path
}

fn spawn(config: &Path, run: usize, failpoints: Option<&str>) -> Child {
    let log = File::create(config.with_file_name(format!("run-{run}.log"))).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prmsync"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("T_PS", PS_KEY)
        .env("T_SF_SECRET", "sim-consumer-secret")
        .env("T_SF_TOKEN", "5Aep.initial")
        .env("T_STATE_KEY", "crash-test-state-key")
        .env_remove(prmsync::failpoint::ENV_VAR)
        .env_remove("NOTIFY_SOCKET")
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

fn text<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Nothing staged or queued in the state file.
fn settled(state: &Path) -> bool {
    let now = jiff::Timestamp::now().as_millisecond();
    prmsync::store::status_read_only(state, now)
        .is_ok_and(|s| s.inbox_pending == 0 && s.outbox_depth == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_salesforce_merge_then_restart_converges_on_the_master() {
    let w = World::seeded(0).await;
    let (sf, sf_server) = salesforce().await;
    w.ps.upsert_item(
        "partnerships",
        json!({"key": "part_7", "status": "active",
               "company": {"name": "Acme Partners", "website": "https://acme.example"}})
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    let mappings = mappings_with(w.dir.path(), SF_ACCOUNTS, "");
    let config = write_config(&w, sf_server.url("").as_str(), &mappings);

    let mut child = spawn(&config, 0, None);
    wait_until(Duration::from_secs(60), "the Account is created", || {
        let done = !sf
            .find("Account", "PRM_Partner_Key__c", "part_7")
            .is_empty()
            && settled(&w.state_path());
        async move { done }
    })
    .await;
    child.kill().expect("stop run 0");
    child.wait().expect("reap run 0");
    let ours = sf.find("Account", "PRM_Partner_Key__c", "part_7").remove(0);
    let ours = text(&ours, "Id").to_owned();
    let theirs = sf.insert(
        "Account",
        json!({"Name": "Acme Inc (sales)"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    assert!(sf.merge("Account", &theirs, &[&ours]));

    // The merge's write by id is answered, then the daemon aborts before committing it.
    let mut child = spawn(&config, 1, Some("drain.after_send=1"));
    wait_until(
        Duration::from_secs(60),
        "the merge write to abort mid-send",
        || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            async move { exited }
        },
    )
    .await;
    let status = child.wait().expect("reap run 1");
    assert_eq!(status.signal(), Some(SIGABRT), "{}", log_of(&config, 1));
    assert_eq!(
        text(
            &sf.find("Account", "Id", &theirs).remove(0),
            "PRM_Partner_Key__c"
        ),
        "part_7",
        "the write reached Salesforce before the abort"
    );

    let mut child = spawn(&config, 2, None);
    wait_until(Duration::from_secs(60), "the restart to converge", || {
        let master = sf.find("Account", "Id", &theirs);
        let done = master
            .first()
            .is_some_and(|m| text(m, "Name") == "Acme Partners")
            && settled(&w.state_path());
        async move { done }
    })
    .await;
    child.kill().expect("stop run 2");
    child.wait().expect("reap run 2");
    let accounts = sf.records("Account");
    assert_eq!(accounts.len(), 1, "only the master: {accounts:?}");
    let conn = rusqlite::Connection::open(w.state_path()).expect("state");
    let (merged, target, dead): (i64, String, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM ledger WHERE source_id = 'part_7' AND action = 'merged'),
                    (SELECT target_id FROM links WHERE source_id = 'part_7'),
                    (SELECT COUNT(*) FROM dead_letters)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("ledger and link");
    assert_eq!(
        (merged, target, dead),
        (1, theirs, 0),
        "the merge is recorded once"
    );
}
