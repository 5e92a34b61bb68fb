//! `prmsync status` without `--tenant` in multi-tenant mode: one line per tenant, from its
//! configuration (does it load, do its mappings and rules compile: what the daemon would skip) and
//! its state file (read-only).

use serde::Serialize;

use crate::config::{Environment, FleetConfig, load_tenant, tenant_names};
use crate::store::pg::fleet::{LeaseRow, Leases};
use crate::store::{StatusReport, Store};

/// One tenant's line.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    /// `running` (its configuration loads), `no state yet` or `broken`.
    pub state: &'static str,
    /// Why it is broken (every problem, one per line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<StatusReport>,
    /// Fleet mode (a PostgreSQL state): the tenant's lease, its holder and generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRow>,
}

/// Every tenant of `fleet`, sorted by name.
pub fn list(
    fleet: &FleetConfig,
    env: &Environment,
    now_ms: i64,
) -> std::io::Result<Vec<TenantStatus>> {
    Ok(tenant_names(fleet)?
        .into_iter()
        .map(|name| one(fleet, env, &name, now_ms))
        .collect())
}

fn one(fleet: &FleetConfig, env: &Environment, name: &str, now_ms: i64) -> TenantStatus {
    let broken = |problem: String| TenantStatus {
        tenant: name.to_owned(),
        state: "broken",
        problem: Some(problem.trim_end().to_owned()),
        report: None,
        lease: None,
    };
    let config = match load_tenant(fleet, name, env) {
        Ok(c) => c,
        Err(e) => return broken(e.to_string()),
    };
    if let Err(e) = crate::assembly::Tenant::preflight(&config) {
        return broken(format!("{e:#}"));
    }
    let path = &config.daemon.state_path;
    if !path.exists() {
        return TenantStatus {
            tenant: name.to_owned(),
            state: "no state yet",
            problem: None,
            report: None,
            lease: None,
        };
    }
    match crate::store::status_read_only(path, now_ms) {
        Ok(r) => TenantStatus {
            tenant: name.to_owned(),
            state: "running",
            problem: None,
            report: Some(r),
            lease: None,
        },
        Err(e) => broken(format!("cannot read {}: {e}", path.display())),
    }
}

/// Every tenant of a fleet whose state is PostgreSQL: its configuration as [`list`] checks it,
/// its state schema's report and its lease (holder daemon, generation, expiry).
pub async fn list_fleet(
    fleet: &FleetConfig,
    env: &Environment,
    now_ms: i64,
) -> anyhow::Result<Vec<TenantStatus>> {
    let target = fleet
        .state
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the fleet's state is not PostgreSQL"))?;
    let leases = Leases::open(target, fleet.state.lease)?.list().await?;
    let mut out = Vec::new();
    for name in tenant_names(fleet)? {
        let mut t = match load_tenant(fleet, &name, env) {
            Err(e) => broken(&name, e.to_string()),
            Ok(config) => match crate::assembly::Tenant::preflight(&config) {
                Err(e) => broken(&name, format!("{e:#}")),
                Ok(()) => match pg_report(&config, now_ms).await {
                    Ok(r) => TenantStatus {
                        tenant: name.clone(),
                        state: "running",
                        problem: None,
                        report: Some(r),
                        lease: None,
                    },
                    Err(e) => broken(&name, format!("{e:#}")),
                },
            },
        };
        t.lease = leases.iter().find(|l| l.tenant == name).cloned();
        out.push(t);
    }
    Ok(out)
}

async fn pg_report(config: &crate::config::Config, now_ms: i64) -> anyhow::Result<StatusReport> {
    let target = config
        .state
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL state"))?;
    let store = Store::open_postgres(target)?;
    Ok(store.status(now_ms).await?)
}

fn broken(name: &str, problem: String) -> TenantStatus {
    TenantStatus {
        tenant: name.to_owned(),
        state: "broken",
        problem: Some(problem.trim_end().to_owned()),
        report: None,
        lease: None,
    }
}

/// One line per tenant: its name, then its status line or its first problem.
pub fn render(tenants: &[TenantStatus]) -> String {
    let width = tenants.iter().map(|t| t.tenant.len()).max().unwrap_or(0);
    let mut out = String::new();
    for t in tenants {
        let detail = match (&t.report, &t.problem) {
            (Some(r), _) => crate::status::one_line(r),
            (None, Some(p)) => {
                let mut lines = p.lines().filter(|l| !l.trim().is_empty());
                let first = lines.next().unwrap_or_default().trim();
                let second = lines.next().map(str::trim);
                match second {
                    // The first line of a config error names the file; the second the problem.
                    Some(s) if first.ends_with(':') => format!("broken: {first} {s}"),
                    _ => format!("broken: {first}"),
                }
            }
            (None, None) => t.state.to_owned(),
        };
        let lease = match &t.lease {
            Some(l) if l.live => format!(
                "  [lease: {} generation {}]",
                l.holder.as_deref().unwrap_or("-"),
                l.generation
            ),
            Some(l) => format!("  [lease: free, generation {}]", l.generation),
            None => String::new(),
        };
        out.push_str(&format!("{:<width$}  {detail}{lease}\n", t.tenant));
    }
    if tenants.is_empty() {
        out.push_str("no tenants (no folder in daemon.tenants_dir)\n");
    }
    out
}
