//! `prmsync erase`: erases a person (by address or by record) in the systems per `[erasure]`
//! and from the state file, or shows what it would do (`--dry-run`), or lists the audit.

use std::fmt::Write as _;

use anyhow::Context as _;

use crate::app::{active_mappings, connectors, load_mappings};
use crate::config::Config;
use crate::engine::RetryPolicy;
use crate::engine::erase::{self, Eraser, Subject};
use crate::store::Store;

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
    let store =
        Store::open(path).with_context(|| format!("opening state file {}", path.display()))?;
    let Some(subject) = subject else {
        return audit(&store).await;
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
    Ok(erase::render(&outcome))
}

/// The audit rows, one line each.
async fn audit(store: &Store) -> anyhow::Result<String> {
    let rows = store.erasures(50).await?;
    if rows.is_empty() {
        return Ok("no erasures recorded\n".into());
    }
    let mut s = String::new();
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
