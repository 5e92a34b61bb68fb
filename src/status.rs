//! `prmsync status`: a readable (or JSON) report from the state file, without writing to it; and
//! the running daemon's one-line summaries for systemd's `STATUS=`.

use crate::store::StatusReport;

/// Renders the report for a terminal.
pub fn render(r: &StatusReport) -> String {
    let healthy = r.dead_letters == 0
        && r.outbox_retrying == 0
        && r.holds.is_empty()
        && r.schema_drift.is_empty();
    let mut lines = vec![
        format!(
            "health:        {}",
            if healthy { "ok" } else { "attention needed" }
        ),
        format!("schema:        v{}", r.schema_version),
        format!("links:         {}", r.links),
        format!("inbox pending: {}", r.inbox_pending),
        format!(
            "outbox:        {} queued, {} retrying{}",
            r.outbox_depth,
            r.outbox_retrying,
            r.outbox_oldest_age_secs
                .map(|a| format!(", oldest {a}s"))
                .unwrap_or_default()
        ),
        format!("dead letters:  {}", r.dead_letters),
        format!(
            "state file:    {:.1} MiB",
            r.state_file_bytes as f64 / (1024.0 * 1024.0)
        ),
        "cursors:".to_owned(),
    ];
    if r.cursors.is_empty() {
        lines.push("  (none yet)".into());
    }
    for c in &r.cursors {
        lines.push(format!(
            "  {}/{}: {} (moved {}s ago)",
            c.system, c.object, c.position, c.age_secs
        ));
    }
    for h in &r.holds {
        let what = match h.state.as_str() {
            "needs_reauth" => "NEEDS RE-AUTHORISATION (paused; changes keep queueing)",
            other => other,
        };
        lines.push(format!(
            "connection {}: {what} for {}s: {}",
            h.system, h.since_secs, h.detail
        ));
    }
    if !r.schema_drift.is_empty() {
        lines
            .push("schema drift (fields left out of writes until the CRM schema is fixed):".into());
        for d in &r.schema_drift {
            let since = jiff::Timestamp::from_millisecond(d.since_ms)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            lines.push(format!(
                "  {}/{} field {:?} {} (flow {}, {}) since {since} ({}s)",
                d.system, d.object, d.field, d.problem, d.flow, d.location, d.since_secs
            ));
        }
    }
    if !r.schema_skips.is_empty() {
        lines.push("records written without a field (written again when it fits):".into());
        for s in &r.schema_skips {
            lines.push(format!(
                "  {} {}/{} {:?}: {}",
                s.flow, s.system, s.object, s.field, s.records
            ));
        }
    }
    if !r.ledger.is_empty() {
        lines.push("ledger:".into());
        for l in &r.ledger {
            lines.push(format!(
                "  {} {} {}: {}",
                l.flow, l.direction, l.action, l.count
            ));
        }
    }
    if !r.registrations.is_empty() {
        let counts: Vec<String> = r
            .registrations
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        lines.push(format!("registrations: {}", counts.join(", ")));
        if r.reviews_pending > 0 {
            lines.push(format!(
                "  {} waiting for review (prmsync review list)",
                r.reviews_pending
            ));
        }
    }
    if !r.last_errors.is_empty() {
        lines.push("recent errors:".into());
        for e in &r.last_errors {
            lines.push(format!("  {e}"));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

/// Records written to a system (created or updated) since the state file was created.
pub fn synced_total(r: &StatusReport) -> i64 {
    r.ledger
        .iter()
        .filter(|l| matches!(l.action.as_str(), "created" | "updated"))
        .map(|l| l.count)
        .sum()
}

/// What the running daemon's periodic `STATUS=` line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records synced today (or since `since`).
    pub synced: i64,
    /// `HH:MM` the process started, when that was today (the count starts there).
    pub since: Option<String>,
    /// The most a polled stream is behind (`None`: nothing polled yet).
    pub lag: Option<std::time::Duration>,
    pub dead_letters: i64,
    /// Paused connections.
    pub paused: usize,
    /// Stalled stages, described (`planner (no progress for 312 s)`).
    pub stalled: Vec<String>,
}

/// The periodic `STATUS=` line: "synced 1,234 today; lag 3 s; 0 dead letters".
pub fn summary(s: &Summary) -> String {
    let mut line = String::new();
    if !s.stalled.is_empty() {
        line.push_str(&format!(
            "STALLED: {}; watchdog pings stopped; ",
            s.stalled.join(", ")
        ));
    }
    let when = match &s.since {
        Some(t) => format!("since {t}"),
        None => "today".to_owned(),
    };
    let lag = match s.lag {
        Some(d) => format!(
            "lag {} s",
            thousands(d.as_secs().try_into().unwrap_or(i64::MAX))
        ),
        None => "no poll yet".to_owned(),
    };
    line.push_str(&format!(
        "synced {} {when}; {lag}; {} dead letter{}",
        thousands(s.synced),
        thousands(s.dead_letters),
        if s.dead_letters == 1 { "" } else { "s" }
    ));
    if s.paused > 0 {
        line.push_str(&format!("; {} connection(s) paused", s.paused));
    }
    line
}

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// One line for systemd's `STATUS=` (`systemctl status prmsync` shows it).
pub fn one_line(r: &StatusReport) -> String {
    let synced = synced_total(r);
    let oldest = r
        .outbox_oldest_age_secs
        .map(|a| format!(", oldest {a} s"))
        .unwrap_or_default();
    let paused = if r.holds.is_empty() {
        String::new()
    } else {
        format!("; {} connection(s) paused", r.holds.len())
    };
    format!(
        "synced {synced} records; inbox {}; outbox {}{oldest}; {} dead letters{paused}",
        r.inbox_pending, r.outbox_depth, r.dead_letters
    )
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_status_line_reads_like_a_sentence() {
        let mut s = Summary {
            synced: 1234,
            since: None,
            lag: Some(Duration::from_millis(3_400)),
            dead_letters: 0,
            paused: 0,
            stalled: vec![],
        };
        assert_eq!(summary(&s), "synced 1,234 today; lag 3 s; 0 dead letters");
        s.since = Some("09:14".into());
        s.lag = None;
        s.dead_letters = 1;
        s.paused = 1;
        assert_eq!(
            summary(&s),
            "synced 1,234 since 09:14; no poll yet; 1 dead letter; 1 connection(s) paused"
        );
        s.stalled = vec!["planner (no progress for 312 s)".into()];
        assert!(summary(&s).starts_with(
            "STALLED: planner (no progress for 312 s); watchdog pings stopped; synced 1,234"
        ));
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(0), "0");
    }
}
