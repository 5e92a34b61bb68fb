//! `prmsync resync`: records a resync request in the state file (the daemon's poller of the
//! flow's source carries it out), or lists the recorded ones.

use std::fmt::Write as _;

use anyhow::Context as _;

use crate::app::{active_mappings, load_mappings};
use crate::config::Config;
use crate::engine::resync::{self, Scope};
use crate::store::Store;

/// What `prmsync resync` was asked.
#[derive(Debug, Clone)]
pub struct ResyncArgs {
    pub flow: Option<String>,
    pub since: Option<String>,
    pub ids: Vec<String>,
    pub list: bool,
}

/// Carries out `prmsync resync` and returns what to print.
pub async fn run(config: &Config, args: ResyncArgs, now_ms: i64) -> anyhow::Result<String> {
    let path = &config.daemon.state_path;
    let store = Store::open_configured(config.state.postgres.as_ref(), path)
        .with_context(|| format!("opening state file {}", path.display()))?;
    if args.list {
        return Ok(render(&store.resyncs(50).await?));
    }
    let scope = match (&args.since, args.ids.is_empty()) {
        (Some(s), _) => Scope::since(s)?,
        (None, false) => Scope::ids(args.ids.clone())?,
        (None, true) => Scope::All,
    };
    let set = load_mappings(config).map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
    let mappings = active_mappings(config, &set)?;
    let flow = args.flow.as_deref().unwrap_or_default();
    let (id, source) = resync::request(&store, &mappings, flow, scope, now_ms).await?;
    Ok(format!(
        "resync #{id} of flow {flow} recorded: the daemon's poller of {source} reads it on its next \
         cycle (at most daemon.poll_interval_secs), after its live changes; check with \
         `prmsync resync --list`\n"
    ))
}

/// The resyncs as lines: id, flow, object, scope, pages read, staged, state.
pub fn render(resyncs: &[crate::store::Resync]) -> String {
    if resyncs.is_empty() {
        return "no resyncs recorded\n".into();
    }
    let mut s = String::new();
    for r in resyncs {
        let scope = match (&r.ids, r.since_ms) {
            (Some(ids), _) => format!("{} id(s)", ids.len()),
            (None, 0) => "all records".into(),
            (None, ms) => format!(
                "since {}",
                jiff::Timestamp::from_millisecond(ms)
                    .map_or_else(|_| ms.to_string(), |t| t.to_string())
            ),
        };
        let state = match (r.finished_ms, &r.page) {
            (Some(_), _) => "finished",
            (None, Some(_)) => "reading",
            (None, None) if r.pages > 0 => "reading",
            (None, None) => "waiting for the daemon",
        };
        let _ = writeln!(
            s,
            "#{:<4} {:<24} {:<22} {:<16} {:>5} page(s) {:>7} staged  {state}",
            r.id,
            r.flow,
            r.object.to_string(),
            scope,
            r.pages,
            r.staged
        );
    }
    s
}
