//! `prmsync erase`: erases a person (by address or by record) in the systems per `[erasure]`
//! and from the state file, or shows what it would do (`--dry-run`), or lists the requests and
//! the audit. While a daemon holds the state file the erasure is recorded as a request that the
//! daemon carries out under its planning lock (this command waits for it); otherwise this
//! command carries it out itself, holding the state file's lock (on PostgreSQL, the schema's
//! daemon lock) meanwhile. A fleet tenant's erasure always goes to the daemon that holds (or
//! next takes) the tenant's lease.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::app::{active_mappings, connectors, load_mappings};
use crate::config::Config;
use crate::engine::RetryPolicy;
use crate::engine::erase::{self, Eraser, Subject};
use crate::engine::erase_requests::ERASE_ATTEMPTS;
use crate::store::Store;
use crate::store::erase_requests::EraseRequest;

/// How long `prmsync erase` waits for the daemon at least (it waits five poll intervals when
/// that is longer).
const WAIT_AT_LEAST: Duration = Duration::from_secs(60);
/// How often it looks at the request meanwhile.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// What `prmsync erase` was asked.
#[derive(Debug, Clone)]
pub struct EraseArgs {
    pub email: Option<String>,
    pub record: Option<String>,
    pub dry_run: bool,
}

/// Carries out `prmsync erase`; returns what to print. Bad input is an [`erase::EraseError`].
pub async fn run(config: &Config, args: EraseArgs, now_ms: i64) -> anyhow::Result<String> {
    let subject = match (&args.email, &args.record) {
        (Some(e), _) => Some(Subject::email(e)?),
        (None, Some(r)) => Some(Subject::record(r)?),
        (None, None) => None,
    };
    let path = &config.daemon.state_path;
    let store = match &config.state.postgres {
        Some(target) => Store::open_postgres(target)
            .with_context(|| format!("opening the PostgreSQL state (schema {})", target.schema))?,
        None => {
            Store::open(path).with_context(|| format!("opening state file {}", path.display()))?
        }
    };
    let Some(subject) = subject else {
        return audit(&store).await;
    };
    // A running daemon carries the erasure out itself, so no plan of its crosses the purge. On
    // PostgreSQL the daemon's lock is the schema's advisory lock: taken here, it is held on the
    // store's connection until this command ends.
    let held = if args.dry_run {
        None
    } else if config.state.fleet {
        // In a fleet the daemon holding the tenant's lease plans for it, under no schema lock:
        // the erasure always goes to that daemon (to whichever holds the lease next if none
        // does now).
        return hand_to_daemon(config, &store, &subject, now_ms).await;
    } else if config.state.postgres.is_some() {
        if !store.hold_daemon_lock().await? {
            return hand_to_daemon(config, &store, &subject, now_ms).await;
        }
        None
    } else {
        let lock = crate::state_lock::try_hold(path)
            .with_context(|| format!("locking {}", crate::state_lock::lock_path(path).display()))?;
        if lock.is_none() {
            return hand_to_daemon(config, &store, &subject, now_ms).await;
        }
        lock
    };
    let set = load_mappings(config).map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
    let mappings = active_mappings(config, &set)?;
    let (prm, crm) = connectors(config, Some(&store))?;
    let retry = RetryPolicy {
        max_attempts: config.daemon.max_attempts,
        ..RetryPolicy::default()
    };
    let eraser = Eraser {
        store: &store,
        connectors: vec![&prm, &crm],
        mappings: &mappings,
        policy: &config.erasure,
        retry: &retry,
    };
    let outcome = eraser.run(&subject, "cli", args.dry_run, now_ms).await?;
    drop(held);
    Ok(erase::render(&outcome))
}

/// Records the erasure for the running daemon and waits until it is done, failed, or the wait
/// is over (it stays recorded either way).
async fn hand_to_daemon(
    config: &Config,
    store: &Store,
    subject: &Subject,
    now_ms: i64,
) -> anyhow::Result<String> {
    let id = store.request_erasure(subject.to_request(), now_ms).await?;
    let wait = WAIT_AT_LEAST.max(config.daemon.poll_interval * 5);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let r = store
            .erase_request(id)
            .await?
            .with_context(|| format!("erasure request #{id} vanished"))?;
        if let Some(report) = r.report {
            return Ok(format!(
                "erasure request #{id}, carried out by the running daemon:\n{report}"
            ));
        }
        if r.attempts >= i64::from(ERASE_ATTEMPTS) {
            anyhow::bail!(
                "erasure request #{id} failed {} times in the daemon: {}",
                r.attempts,
                r.error.unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            if let Some(audit) = r.audit_id {
                return Ok(format!(
                    "erasure request #{id} carried out by the running daemon (audit #{audit})\n"
                ));
            }
            return Ok(format!(
                "erasure request #{id} recorded; the running daemon has not finished it within {}s{} (it keeps trying; `prmsync erase --config FILE` shows it)\n",
                wait.as_secs(),
                r.error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ));
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// A request as one line (its subject's kind only: no personal data).
fn request_line(r: &EraseRequest) -> String {
    let kind = r.subject.split(':').next().unwrap_or_default();
    let state = match (r.done_ms, &r.error) {
        (Some(_), _) => format!("done (audit #{})", r.audit_id.unwrap_or_default()),
        (None, Some(e)) if r.attempts >= i64::from(ERASE_ATTEMPTS) => {
            format!("failed after {} attempts: {e}", r.attempts)
        }
        (None, Some(e)) => format!("retrying ({} attempt(s)): {e}", r.attempts),
        (None, None) => "waiting for the daemon".into(),
    };
    let at = jiff::Timestamp::from_millisecond(r.requested_ms)
        .map_or_else(|_| r.requested_ms.to_string(), |t| t.to_string());
    format!("request #{:<4} {at}  by {kind:<6} {state}", r.id)
}

/// The audit rows, one line each.
async fn audit(store: &Store) -> anyhow::Result<String> {
    let rows = store.erasures(50).await?;
    let requests = store.erase_requests(50).await?;
    let mut s = String::new();
    for r in requests.iter().filter(|r| r.done_ms.is_none()) {
        let _ = writeln!(s, "{}", request_line(r));
    }
    if rows.is_empty() {
        s.push_str("no erasures recorded\n");
        return Ok(s);
    }
    for row in rows {
        let (id, at, a, purged, scrubbed) =
            (row.id, row.at_ms, row.audit, row.purged_rows, row.scrubbed);
        let at = jiff::Timestamp::from_millisecond(at)
            .map_or_else(|_| at.to_string(), |t| t.to_string());
        let _ = writeln!(
            s,
            "#{id:<4} {at}  {:<32} by {:<6} {} record(s); {}; {purged} row(s) deleted, {scrubbed} value(s) rewritten",
            a.origin,
            a.subject,
            a.records,
            if a.actions.is_empty() {
                "no calls"
            } else {
                &a.actions
            },
        );
    }
    Ok(s)
}
