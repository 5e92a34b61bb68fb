//! `prmsync report attribution`: reads the state file (read-only) and the rules file, computes the
//! report (`report/`) and renders it as a table, CSV, JSON or a self-contained HTML page, to
//! standard output or a file.

use std::path::Path;

use crate::cli::AttributionArgs;
use crate::report::attribution::{self, GroupBy, Options};
use crate::report::{html, render};
use crate::rules::Rules;
use crate::store::ReadOnlyStore;

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error("reading the state file: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("rules of engagement errors:\n{0}")]
    Rules(#[from] crate::rules::RulesErrors),
    #[error("writing {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// A `YYYY-MM-DD` day's start (UTC) in epoch ms.
fn day_start(flag: &str, day: &str) -> Result<i64, ReportError> {
    day.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_millisecond())
        .ok_or_else(|| ReportError::Usage(format!("--{flag} {day:?} is not a YYYY-MM-DD day")))
}

/// The window and grouping from the arguments; `--to` includes its whole day.
pub fn options(args: &AttributionArgs) -> Result<Options, ReportError> {
    let from_ms = args
        .from
        .as_deref()
        .map(|d| day_start("from", d))
        .transpose()?;
    let until_ms = args
        .to
        .as_deref()
        .map(|d| day_start("to", d).map(|ms| ms + 86_400_000))
        .transpose()?;
    if let (Some(f), Some(u)) = (from_ms, until_ms)
        && f >= u
    {
        return Err(ReportError::Usage("--from must not be after --to".into()));
    }
    let by = GroupBy::parse(&args.by).ok_or_else(|| {
        ReportError::Usage(format!("--by {:?}: use partner, tier or month", args.by))
    })?;
    Ok(Options {
        from_ms,
        until_ms,
        by,
    })
}

/// Runs the report; returns what to print (a note when it went to `--output`).
pub fn attribution(
    state: &ReadOnlyStore,
    mappings_dir: Option<&Path>,
    args: &AttributionArgs,
) -> Result<String, ReportError> {
    let opts = options(args)?;
    // The rules give field names and tiers; a folder without a rules file uses the built-in one.
    let rules = match Rules::load(mappings_dir)? {
        Some(r) => r,
        None => Rules::builtin()?,
    };
    let data = state.attribution()?;
    let input = attribution::Input {
        registrations: &data.registrations,
        versions: &data.versions,
        mdf: &data.mdf,
        evidence: &data.evidence,
        partner_names: &data.partner_names,
        as_of_ms: data.as_of_ms,
    };
    let report = attribution::report(&rules, &input, &opts);
    let text = match args.format.as_str() {
        "csv" => render::csv(&report),
        "json" => render::json(&report) + "\n",
        "html" => html::page(&report),
        _ => render::text(&report),
    };
    match &args.output {
        None => Ok(text),
        Some(path) => {
            std::fs::write(path, &text).map_err(|error| ReportError::Write {
                path: path.display().to_string(),
                error,
            })?;
            Ok(format!("wrote {} ({} bytes)\n", path.display(), text.len()))
        }
    }
}
