//! Prometheus metrics for `GET /metrics`, built on each scrape from the store's status (counters
//! kept as writes happen, read on a read-only connection), so the numbers are the store's own,
//! plus the process's event counters (`telemetry::meters`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::StatusReport;

type Labels = Vec<(String, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// What the running process knows that the state file does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub reloads_ok: u64,
    pub reloads_refused: u64,
    /// The scrape's time (epoch ms), for the cursor lag.
    pub now_ms: i64,
}

/// Renders the report in the Prometheus text exposition format.
pub fn render(r: &StatusReport, process: ProcessInfo) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    register_build(&mut registry);
    register_state(&mut registry, r, process);
    // What this process saw: errors, polls, webhooks, HTTP calls, waits, refreshes, busy events.
    crate::telemetry::meters::meters().register(&mut registry, process.now_ms);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// `prmsync_build_info`: once per process.
pub fn register_build(registry: &mut Registry) {
    let build = Family::<Labels, Gauge>::default();
    build
        .get_or_create(&vec![(
            "version".into(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )])
        .set(1);
    registry.register(
        "prmsync_build_info",
        "Always 1; the version label names the running release",
        build,
    );
}

/// The state file's figures and the reloads of one tenant (a multi-tenant daemon registers each
/// tenant's into a registry carrying its `tenant` label; see `crate::tenants::metrics`).
pub fn register_state(registry: &mut Registry, r: &StatusReport, process: ProcessInfo) {
    let reloads = Family::<Labels, Counter>::default();
    for (result, n) in [
        ("ok", process.reloads_ok),
        ("refused", process.reloads_refused),
    ] {
        reloads
            .get_or_create(&vec![("result".into(), result.into())])
            .inc_by(n);
    }
    registry.register(
        "prmsync_config_reloads",
        "Mapping and rules reloads (SIGHUP), by result; a refused one keeps the running set",
        reloads,
    );
    gauge(
        registry,
        "prmsync_inbox_pending",
        "Staged changes not planned yet",
        r.inbox_pending,
    );
    gauge(
        registry,
        "prmsync_outbox_depth",
        "Planned writes not delivered yet",
        r.outbox_depth,
    );
    gauge(
        registry,
        "prmsync_outbox_retrying",
        "Queued writes that failed at least once",
        r.outbox_retrying,
    );
    gauge(
        registry,
        "prmsync_outbox_oldest_age_seconds",
        "Age of the oldest queued write (0 when the outbox is empty)",
        r.outbox_oldest_age_secs.unwrap_or(0),
    );
    gauge(
        registry,
        "prmsync_dead_letters",
        "Records waiting in the dead letters",
        r.dead_letters,
    );
    gauge(
        registry,
        "prmsync_links",
        "Linked record pairs across all flows",
        r.links,
    );
    gauge(
        registry,
        "prmsync_state_file_bytes",
        "Size of the state database (pages in use)",
        r.state_file_bytes,
    );
    gauge(
        registry,
        "prmsync_reviews_pending",
        "Deal registrations waiting for a manual review",
        r.reviews_pending,
    );

    let cursor_age = Family::<Labels, Gauge>::default();
    for c in &r.cursors {
        cursor_age
            .get_or_create(&vec![
                ("system".into(), c.system.clone()),
                ("object".into(), c.object.clone()),
            ])
            .set(c.age_secs);
    }
    registry.register(
        "prmsync_cursor_age_seconds",
        "Seconds since the incremental-read cursor last moved",
        cursor_age,
    );

    let paused = Family::<Labels, Gauge>::default();
    for h in &r.holds {
        paused
            .get_or_create(&vec![
                ("system".into(), h.system.clone()),
                ("state".into(), h.state.clone()),
            ])
            .set(1);
    }
    registry.register(
        "prmsync_connection_paused",
        "1 for each connection paused (needs re-authorisation, rate limited)",
        paused,
    );

    let drift = Family::<Labels, Gauge>::default();
    for d in &r.schema_drift {
        drift
            .get_or_create(&vec![
                ("system".into(), d.system.clone()),
                ("object".into(), d.object.clone()),
                ("field".into(), d.field.clone()),
            ])
            .set(1);
    }
    registry.register(
        "prmsync_schema_drift_fields",
        "1 for each mapped CRM field the last live-schema check found drifted (left out of writes, or some values refused)",
        drift,
    );

    let registrations = Family::<Labels, Gauge>::default();
    for (status, n) in &r.registrations {
        registrations
            .get_or_create(&vec![("status".into(), status.clone())])
            .set(*n);
    }
    registry.register(
        "prmsync_registrations",
        "Deal registrations by rules-of-engagement decision",
        registrations,
    );

    let ledger = Family::<Labels, Counter>::default();
    for l in &r.ledger {
        ledger
            .get_or_create(&vec![
                ("flow".into(), l.flow.clone()),
                ("direction".into(), l.direction.clone()),
                ("action".into(), l.action.clone()),
            ])
            .inc_by(u64::try_from(l.count).unwrap_or(0));
    }
    registry.register(
        "prmsync_ledger_actions",
        "What the engine decided and did, per flow, direction and action",
        ledger,
    );
}
