//! The attribution report as a text table, as CSV (one tidy table: section, key, metric, value)
//! and as JSON. Pure: strings in, strings out.

use std::fmt::Write as _;

use super::attribution::{Figures, GroupBy, Report};
use super::{days, money, percent, when};

/// The window as people read it.
pub fn window(r: &Report) -> String {
    let day = |ms: Option<i64>, back: i64| {
        ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms - back).ok())
            .map(|t| t.strftime("%Y-%m-%d").to_string())
    };
    match (day(r.from_ms, 0), day(r.until_ms, 1)) {
        (None, None) => "all time".into(),
        (Some(f), None) => format!("from {f}"),
        (None, Some(t)) => format!("to {t}"),
        (Some(f), Some(t)) => format!("{f} to {t}"),
    }
}

pub fn by_label(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Partner => "partner",
        GroupBy::Tier => "tier",
        GroupBy::Month => "month submitted",
    }
}

fn pad(out: &mut String, cells: &[String], widths: &[usize]) {
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (c, w))| {
            if i == 0 {
                format!("{c:<w$}")
            } else {
                format!("{c:>w$}")
            }
        })
        .collect();
    let _ = writeln!(out, "{}", line.join("  ").trim_end());
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let head: Vec<String> = head.iter().map(|h| (*h).to_owned()).collect();
    pad(out, &head, &widths);
    for r in rows {
        pad(out, r, &widths);
    }
}

fn figures_cells(f: &Figures) -> Vec<String> {
    vec![
        f.deals.to_string(),
        money(f.pipeline_cents),
        f.won.to_string(),
        f.lost.to_string(),
        money(f.won_cents),
        percent(f.win_rate),
        days(f.cycle_days),
    ]
}

/// The report as text tables.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Attribution report: deals submitted {} (state as of {})\n",
        window(r),
        when(r.as_of_ms)
    );
    out.push_str("Pipeline and revenue by credit\n");
    let rows: Vec<Vec<String>> = r
        .totals
        .iter()
        .map(|t| {
            let mut row = vec![t.credit.label().to_owned()];
            row.extend(figures_cells(&t.figures));
            row
        })
        .chain(std::iter::once({
            let mut row = vec!["  sourced, another partner influencing".to_owned()];
            row.extend(figures_cells(&r.co_influenced));
            row
        }))
        .collect();
    table(
        &mut out,
        &[
            "CREDIT",
            "DEALS",
            "OPEN PIPELINE",
            "WON",
            "LOST",
            "WON REVENUE",
            "WIN RATE",
            "CYCLE DAYS",
        ],
        &rows,
    );
    let _ = writeln!(out, "\nPartner credit by {}", by_label(r.by));
    if r.groups.is_empty() {
        out.push_str("no partner-credited deals\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.group.clone(),
                    g.sourced.deals.to_string(),
                    money(g.sourced.pipeline_cents),
                    money(g.sourced.won_cents),
                    percent(g.sourced.win_rate),
                    days(g.sourced.cycle_days),
                    g.influenced.deals.to_string(),
                    money(g.influenced.pipeline_cents),
                    money(g.influenced.won_cents),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "GROUP",
                "SOURCED",
                "PIPELINE",
                "WON REVENUE",
                "WIN RATE",
                "CYCLE DAYS",
                "INFLUENCED",
                "PIPELINE",
                "WON REVENUE",
            ],
            &rows,
        );
    }
    out.push_str("\nRegistrations by decision and deciding rule\n");
    let rows: Vec<Vec<String>> = r
        .decisions
        .iter()
        .map(|d| {
            vec![
                d.status.clone(),
                d.rule.clone(),
                d.registrations.to_string(),
            ]
        })
        .collect();
    table(&mut out, &["STATUS", "RULE", "REGISTRATIONS"], &rows);
    out.push_str("\nProtection expiries\n");
    if r.expiries.is_empty() {
        out.push_str("no protection ends in the window\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .expiries
            .iter()
            .map(|e| {
                vec![
                    e.registration_id.clone(),
                    e.partner.clone(),
                    when(Some(e.protected_until_ms)),
                    if e.ended { "ended" } else { "protected" }.to_owned(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["REGISTRATION", "PARTNER", "PROTECTED UNTIL", "NOW"],
            &rows,
        );
    }
    out.push_str("\nMDF against partner-sourced revenue by tier\n");
    match &r.mdf {
        None => out.push_str("no MDF requests in the state (no flow reads mdf_requests)\n"),
        Some(rows) => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|m| {
                    vec![
                        m.tier.clone(),
                        m.requests.to_string(),
                        money(m.requested_cents),
                        money(m.approved_cents),
                        money(m.spent_cents),
                        money(m.sourced_won_cents),
                        m.revenue_per_mdf
                            .map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "TIER",
                    "REQUESTS",
                    "REQUESTED",
                    "APPROVED",
                    "SPENT",
                    "SOURCED WON",
                    "REVENUE PER MDF",
                ],
                &rows,
            );
        }
    }
    out
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The report as one tidy CSV table: `section,key,metric,value`; money in cents, rates as
/// fractions, empty when undefined.
pub fn csv(r: &Report) -> String {
    let mut out = String::from("section,key,metric,value\n");
    let mut row = |section: &str, key: &str, metric: &str, value: String| {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            field(section),
            field(key),
            field(metric),
            field(&value)
        );
    };
    let opt = |x: Option<f64>| x.map_or_else(String::new, |x| format!("{x:.4}"));
    let mut figures = |section: &str, key: &str, f: &Figures| {
        row(section, key, "deals", f.deals.to_string());
        row(section, key, "pipeline_cents", f.pipeline_cents.to_string());
        row(section, key, "won", f.won.to_string());
        row(section, key, "lost", f.lost.to_string());
        row(section, key, "won_cents", f.won_cents.to_string());
        row(section, key, "win_rate", opt(f.win_rate));
        row(section, key, "cycle_days", opt(f.cycle_days));
    };
    for t in &r.totals {
        figures("totals", t.credit.label(), &t.figures);
    }
    figures("totals", "co-influenced", &r.co_influenced);
    for g in &r.groups {
        figures("sourced_by_group", &g.group, &g.sourced);
        figures("influenced_by_group", &g.group, &g.influenced);
    }
    let mut row = |section: &str, key: &str, metric: &str, value: String| {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            field(section),
            field(key),
            field(metric),
            field(&value)
        );
    };
    for d in &r.decisions {
        row(
            "decisions",
            &format!("{}/{}", d.status, d.rule),
            "registrations",
            d.registrations.to_string(),
        );
    }
    for e in &r.expiries {
        row(
            "expiries",
            &e.registration_id,
            "protected_until",
            when(Some(e.protected_until_ms)),
        );
    }
    for m in r.mdf.iter().flatten() {
        row("mdf", &m.tier, "requests", m.requests.to_string());
        row(
            "mdf",
            &m.tier,
            "requested_cents",
            m.requested_cents.to_string(),
        );
        row(
            "mdf",
            &m.tier,
            "approved_cents",
            m.approved_cents.to_string(),
        );
        row("mdf", &m.tier, "spent_cents", m.spent_cents.to_string());
        row(
            "mdf",
            &m.tier,
            "sourced_won_cents",
            m.sourced_won_cents.to_string(),
        );
        row(
            "mdf",
            &m.tier,
            "revenue_per_mdf",
            m.revenue_per_mdf
                .map_or_else(String::new, |x| format!("{x:.4}")),
        );
    }
    out
}

/// The report as pretty JSON.
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
