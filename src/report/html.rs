//! The attribution report as one self-contained HTML page (inline CSS and SVG charts, no scripts,
//! no external files) a channel chief can forward. Pure.

use std::fmt::Write as _;

use super::attribution::{Credit, Report};
use super::render::{by_label, window};
use super::svg::{Series, bar_chart, escape};
use super::{days, money, percent, when};

const SOURCED: &str = "#2f80ed";
const INFLUENCED: &str = "#27ae60";
const NONE: &str = "#9aa5b1";
const LOST: &str = "#eb5757";
const MDF: &str = "#f2994a";

const STYLE: &str = "body{font-family:Helvetica,Arial,sans-serif;color:#1f2933;margin:24px auto;max-width:1100px;padding:0 16px}\
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #e4e7eb;padding-bottom:4px}\
p.sub{color:#616e7c;margin-top:0}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}\
th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right}th:first-child,td:first-child{text-align:left}\
th{background:#f5f7fa}.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e4e7eb;border-radius:6px;padding:10px 14px;min-width:160px}\
.card b{display:block;font-size:20px}.card span{color:#616e7c;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:16px}";

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn money_units(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// The page.
pub fn page(r: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Partner attribution</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        out,
        "<h1>Partner attribution</h1><p class=\"sub\">Deals submitted {}; prmsync state as of {}. Money in the deals' currency.</p>",
        escape(&window(r)),
        escape(&when(r.as_of_ms))
    );
    let total = |c: Credit| r.totals.iter().find(|t| t.credit == c).map(|t| &t.figures);
    out.push_str("<div class=\"cards\">");
    for (label, value) in [
        (
            "partner-sourced won revenue",
            total(Credit::Sourced).map_or(0, |f| f.won_cents),
        ),
        (
            "partner-sourced open pipeline",
            total(Credit::Sourced).map_or(0, |f| f.pipeline_cents),
        ),
        (
            "partner-influenced won revenue",
            total(Credit::Influenced).map_or(0, |f| f.won_cents),
        ),
        (
            "no partner credit: won revenue",
            total(Credit::None).map_or(0, |f| f.won_cents),
        ),
    ] {
        let _ = write!(
            out,
            "<div class=\"card\"><b>{}</b><span>{}</span></div>",
            escape(&money(value)),
            escape(label)
        );
    }
    out.push_str("</div>");

    out.push_str("<h2>Pipeline and revenue by credit</h2><div class=\"charts\">");
    let labels: Vec<String> = r
        .totals
        .iter()
        .map(|t| t.credit.label().to_owned())
        .collect();
    let series = vec![
        Series {
            name: "open pipeline".into(),
            color: NONE,
            values: r
                .totals
                .iter()
                .map(|t| money_units(t.figures.pipeline_cents))
                .collect(),
        },
        Series {
            name: "won revenue".into(),
            color: SOURCED,
            values: r
                .totals
                .iter()
                .map(|t| money_units(t.figures.won_cents))
                .collect(),
        },
    ];
    out.push_str(
        &bar_chart("Pipeline and won revenue", "amount", &labels, &series, 540).unwrap_or_default(),
    );
    let series = vec![
        Series {
            name: "won".into(),
            color: INFLUENCED,
            values: r.totals.iter().map(|t| t.figures.won as f64).collect(),
        },
        Series {
            name: "lost".into(),
            color: LOST,
            values: r.totals.iter().map(|t| t.figures.lost as f64).collect(),
        },
    ];
    out.push_str(
        &bar_chart("Deals won and lost", "deals", &labels, &series, 540).unwrap_or_default(),
    );
    out.push_str("</div>");
    let rows: Vec<Vec<String>> = r
        .totals
        .iter()
        .map(|t| {
            let f = &t.figures;
            vec![
                t.credit.label().to_owned(),
                f.deals.to_string(),
                money(f.pipeline_cents),
                f.won.to_string(),
                f.lost.to_string(),
                money(f.won_cents),
                percent(f.win_rate),
                days(f.cycle_days),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "credit",
            "deals",
            "open pipeline",
            "won",
            "lost",
            "won revenue",
            "win rate",
            "cycle days (won)",
        ],
        &rows,
    );

    let _ = write!(out, "<h2>Partner credit by {}</h2>", escape(by_label(r.by)));
    if r.groups.is_empty() {
        out.push_str("<p>No partner-credited deals in the window.</p>");
    } else {
        let labels: Vec<String> = r.groups.iter().map(|g| g.group.clone()).collect();
        let series = vec![
            Series {
                name: "sourced won".into(),
                color: SOURCED,
                values: r
                    .groups
                    .iter()
                    .map(|g| money_units(g.sourced.won_cents))
                    .collect(),
            },
            Series {
                name: "sourced pipeline".into(),
                color: NONE,
                values: r
                    .groups
                    .iter()
                    .map(|g| money_units(g.sourced.pipeline_cents))
                    .collect(),
            },
            Series {
                name: "influenced won".into(),
                color: INFLUENCED,
                values: r
                    .groups
                    .iter()
                    .map(|g| money_units(g.influenced.won_cents))
                    .collect(),
            },
        ];
        out.push_str(
            &bar_chart(
                &format!("Partner credit by {}", by_label(r.by)),
                "amount",
                &labels,
                &series,
                1080,
            )
            .unwrap_or_default(),
        );
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
                    money(g.influenced.won_cents),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                by_label(r.by),
                "sourced deals",
                "sourced pipeline",
                "sourced won",
                "win rate",
                "cycle days",
                "influenced deals",
                "influenced won",
            ],
            &rows,
        );
    }

    out.push_str("<h2>Registrations by decision</h2>");
    let labels: Vec<String> = r
        .decisions
        .iter()
        .map(|d| format!("{} / {}", d.status, d.rule))
        .collect();
    let series = vec![Series {
        name: "registrations".into(),
        color: SOURCED,
        values: r.decisions.iter().map(|d| d.registrations as f64).collect(),
    }];
    out.push_str(
        &bar_chart(
            "Registrations by decision and deciding rule",
            "registrations",
            &labels,
            &series,
            1080,
        )
        .unwrap_or_default(),
    );
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
    table(
        &mut out,
        &["status", "deciding rule", "registrations"],
        &rows,
    );

    out.push_str("<h2>Protection expiries</h2>");
    if r.expiries.is_empty() {
        out.push_str("<p>No protection ends in the window.</p>");
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
            &["registration", "partner", "protected until", "now"],
            &rows,
        );
    }

    out.push_str("<h2>MDF against partner-sourced revenue by tier</h2>");
    match &r.mdf {
        None => out.push_str("<p>No MDF requests in prmsync's state (no flow reads them).</p>"),
        Some(rows) => {
            let labels: Vec<String> = rows.iter().map(|m| m.tier.clone()).collect();
            let series = vec![
                Series {
                    name: "MDF spent".into(),
                    color: MDF,
                    values: rows.iter().map(|m| money_units(m.spent_cents)).collect(),
                },
                Series {
                    name: "sourced won revenue".into(),
                    color: SOURCED,
                    values: rows
                        .iter()
                        .map(|m| money_units(m.sourced_won_cents))
                        .collect(),
                },
            ];
            out.push_str(
                &bar_chart(
                    "MDF spent and sourced revenue",
                    "amount",
                    &labels,
                    &series,
                    540,
                )
                .unwrap_or_default(),
            );
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
                    "tier",
                    "requests",
                    "requested",
                    "approved",
                    "spent",
                    "sourced won",
                    "revenue per MDF",
                ],
                &rows,
            );
        }
    }
    out.push_str("<p class=\"sub\">Made by prmsync report attribution.</p></body></html>\n");
    out
}
