//! `prmsync status`: a readable (or JSON) report from the state file, without writing to it.

use crate::store::StatusReport;

/// Renders the report for a terminal.
pub fn render(r: &StatusReport) -> String {
    let healthy = r.dead_letters == 0 && r.outbox_retrying == 0 && r.holds.is_empty();
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

/// One line for systemd's `STATUS=` (`systemctl status prmsync` shows it).
pub fn one_line(r: &StatusReport) -> String {
    let synced: i64 = r
        .ledger
        .iter()
        .filter(|l| matches!(l.action.as_str(), "created" | "updated"))
        .map(|l| l.count)
        .sum();
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
