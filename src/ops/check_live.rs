//! `prmsync check --live`: reads the live schema of every object the active flows write (HubSpot
//! properties, Salesforce describe, read-only like `plan`) and reports each mapped field that no
//! longer fits it (`mapping/drift.rs`), located in its mapping file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::connector::Connector;
use crate::connector::schema::LiveObject;
use crate::mapping::Mapping;
use crate::mapping::drift::{self, Drift};

/// What the live check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveReport {
    /// Objects whose schema was read, as `system/object`.
    pub objects: Vec<String>,
    /// Mapped target fields checked (external ids included).
    pub fields: usize,
    pub drift: Vec<Drift>,
}

/// How often a rate-limited schema read is tried again (one-shot command).
const ATTEMPTS: usize = 3;

/// Reads `object`'s schema, waiting out a rate limit a few times.
async fn read(crm: &Connector, object: &str) -> anyhow::Result<Option<LiveObject>> {
    for attempt in 1.. {
        match crm.read_schema(object).await {
            None => return Ok(None),
            Some(Ok(live)) => return Ok(Some(live)),
            Some(Err(e)) if attempt < ATTEMPTS && e.retry_after().is_some() => {
                let wait = e.retry_after().unwrap_or_default();
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
            }
            Some(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot read the live schema of {}/{object}",
                    crm.kind()
                )));
            }
        }
    }
    unreachable!("the loop returns")
}

/// Checks `mappings` (the active flows) against `crm`'s live schema.
pub async fn check(crm: &Connector, mappings: &[Arc<Mapping>]) -> anyhow::Result<LiveReport> {
    let mut by_object: BTreeMap<&str, Vec<&Arc<Mapping>>> = BTreeMap::new();
    for m in mappings.iter().filter(|m| m.target.system == crm.kind()) {
        by_object
            .entry(m.target.object.as_str())
            .or_default()
            .push(m);
    }
    let mut report = LiveReport {
        objects: Vec::new(),
        fields: 0,
        drift: Vec::new(),
    };
    for (object, flows) in by_object {
        let Some(live) = read(crm, object).await? else {
            continue;
        };
        report.objects.push(format!("{}/{object}", crm.kind()));
        for m in flows {
            report.fields += m.fields.len() + 1;
            report.drift.extend(drift::check(m, &live));
        }
    }
    Ok(report)
}

/// [`check`] for a config: its active flows and its CRM, read-only.
pub async fn check_config(config: &Config) -> anyhow::Result<LiveReport> {
    let set = crate::app::load_mappings(config)?;
    let mappings = crate::app::active_mappings(config, &set)?;
    let (_, crm) = crate::app::read_only_connectors(config).context("building the connectors")?;
    check(&crm, &mappings).await
}

/// The report for a terminal: one line per drifted field, then the summary.
pub fn render(r: &LiveReport) -> String {
    let mut out = String::new();
    for d in &r.drift {
        out.push_str(&format!("{d}\n"));
    }
    if r.drift.is_empty() {
        out.push_str(&format!(
            "ok: live schema of {} fits all {} mapped field(s)\n",
            r.objects.join(", "),
            r.fields
        ));
    } else {
        out.push_str(&format!(
            "{} of {} mapped field(s) drifted from the live schema of {}\n",
            r.drift.len(),
            r.fields,
            r.objects.join(", ")
        ));
    }
    out
}
