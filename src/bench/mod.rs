//! `prmsync bench`: the benchmark suite on the built-in simulators. Each scenario drives the real
//! daemon and, in the same run, its own ceiling (a minimal client sending the same requests
//! straight to the same kind of simulator), so the figures hold as ratios on a noisy machine.

mod backfill;
mod ceiling;
mod fleet;
mod mapping;
mod million;
mod report;
mod webhooks;
mod world;

use std::time::Instant;

pub use report::{Metric, Report, ScenarioResult, render_table};

/// How much data each scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Seconds in total: a smoke run that keeps the suite from rotting (CI).
    Tiny,
    /// The sizes of the targets in the README's Performance section.
    Full,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Tiny => "tiny",
            Size::Full => "full",
        }
    }

    /// Deals for a 100k backfill at this size.
    fn backfill_deals(self) -> usize {
        match self {
            Size::Tiny => 1_000,
            Size::Full => 100_000,
        }
    }
}

/// What a run needs from outside.
#[derive(Debug, Clone)]
pub struct Options {
    pub size: Size,
    /// The `prmsync` executable, for scenarios that run the daemon in its own process.
    pub exe: std::path::PathBuf,
    /// A PostgreSQL server for the "fleet" scenario (`--postgres`); without it that scenario is
    /// skipped.
    pub postgres: Option<String>,
}

/// The scenarios, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "simulator-ceiling",
    "mapping",
    "backfill-hubspot",
    "backfill-salesforce",
    "backfill-burst",
    "webhook-intake",
    "webhook-to-crm",
    "million",
    "fleet",
];

/// Refuses names that are not scenarios, listing the ones there are.
pub fn check_names(names: &[String]) -> Result<(), String> {
    match names.iter().find(|n| !SCENARIOS.contains(&n.as_str())) {
        Some(n) => Err(format!(
            "unknown scenario {n:?}; scenarios: {}",
            SCENARIOS.join(", ")
        )),
        None => Ok(()),
    }
}

/// Runs `names` (every scenario if empty) and collects their results.
pub async fn run(names: &[String], opts: &Options) -> anyhow::Result<Report> {
    let size = opts.size;
    check_names(names).map_err(anyhow::Error::msg)?;
    let chosen: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s))
        .collect();
    let mut report = Report::new(size);
    for name in chosen {
        let started = Instant::now();
        let mut result = match name {
            "simulator-ceiling" => ceiling::scenario(size).await?,
            "mapping" => mapping::scenario(size)?,
            "backfill-hubspot" => backfill::hubspot(size).await?,
            "backfill-salesforce" => backfill::salesforce(size).await?,
            "backfill-burst" => backfill::burst(size).await?,
            "webhook-intake" => webhooks::intake(size).await?,
            "webhook-to-crm" => webhooks::to_crm(size).await?,
            "million" => million::scenario(size, &opts.exe).await?,
            "fleet" => fleet::scenario(size, &opts.exe, opts.postgres.as_deref()).await?,
            other => anyhow::bail!("scenario {other} has no runner"),
        };
        result.seconds = started.elapsed().as_secs_f64();
        eprintln!("bench: {name} done in {:.1} s", result.seconds);
        report.scenarios.push(result);
    }
    Ok(report)
}
