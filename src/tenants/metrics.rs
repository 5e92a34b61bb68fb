//! The admin listener of a multi-tenant daemon: `/livez`, `/readyz` and `/metrics`, where each
//! tenant's state figures carry a `tenant` label, `prmsync_tenant_up` says which tenants run, and
//! the process's own counters and build info appear once. In fleet mode a daemon reports the
//! state figures of the tenants it holds the lease of.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Directory;
use crate::admin::Readiness;
use crate::engine::Clock;
use crate::metrics::ProcessInfo;

#[derive(Clone)]
struct AdminState {
    directory: Directory,
    readiness: Arc<Readiness>,
    clock: Clock,
}

/// The routes.
pub fn admin_router(directory: Directory, readiness: Arc<Readiness>, clock: Clock) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            directory,
            readiness,
            clock,
        })
}

async fn readyz(State(s): State<AdminState>) -> Response {
    match s.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let now_ms = (s.clock)();
    let entries = s.directory.entries();
    let mut head = Registry::default();
    crate::metrics::register_build(&mut head);
    let up = Family::<Vec<(String, String)>, Gauge>::default();
    for (name, entry) in &entries {
        up.get_or_create(&vec![("tenant".into(), name.clone())])
            .set(i64::from(entry.is_ok()));
    }
    head.register(
        "prmsync_tenant_up",
        "1 for each tenant running, 0 for one whose configuration or state did not load",
        up,
    );
    crate::telemetry::meters::meters().register(&mut head, now_ms);
    let mut texts = Vec::with_capacity(entries.len() + 1);
    let mut encoded = String::new();
    if encode(&mut encoded, &head).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
    }
    texts.push(encoded);
    for (name, entry) in entries {
        let Ok((store, reloads)) = entry else {
            continue;
        };
        // Fleet mode: a tenant's figures come from the daemon running it (one series per tenant
        // across the fleet, and no connection kept to a tenant only to be scraped).
        if !s.directory.runs_here(&name) {
            continue;
        }
        let report = match store.status(now_ms).await {
            Ok(r) => r,
            Err(e) => {
                // One tenant's unreadable state file leaves the others' figures in the scrape.
                tracing::warn!(tenant = %name, error = %e, "metrics: the tenant's state file did not answer");
                continue;
            }
        };
        let process = {
            let r = reloads.lock().unwrap_or_else(|p| p.into_inner());
            ProcessInfo {
                reloads_ok: r.succeeded,
                reloads_refused: r.failed,
                now_ms,
            }
        };
        let mut registry =
            Registry::with_labels(std::iter::once((Cow::Borrowed("tenant"), Cow::Owned(name))));
        crate::metrics::register_state(&mut registry, &report, process);
        let mut text = String::new();
        if encode(&mut text, &registry).is_err() {
            return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
        }
        texts.push(text);
    }
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        merge(&texts),
    )
        .into_response()
}

/// Several encoded registries as one exposition: each metric family (its `# HELP` line, the
/// lines after it) once, with the samples of every text that has it, in first-seen order; one
/// `# EOF` at the end (pure).
pub fn merge(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, (Vec<&str>, Vec<&str>)> =
        std::collections::HashMap::new();
    for text in texts {
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line == "# EOF" || line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                let fresh = !families.contains_key(&name);
                let family = families.entry(name.clone()).or_default();
                if fresh {
                    order.push(name.clone());
                    family.0.push(line);
                }
                current = Some(name);
                continue;
            }
            let Some(name) = &current else { continue };
            let family = families.entry(name.clone()).or_default();
            if line.starts_with("# ") {
                if !family.0.contains(&line) {
                    family.0.push(line);
                }
            } else {
                family.1.push(line);
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (head, samples) = &families[&name];
        for line in head.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn a_family_in_several_texts_is_written_once_with_every_sample() {
        let a = "# HELP x X.\n# TYPE x gauge\nx{tenant=\"a\"} 1\n# HELP y Y.\n# TYPE y gauge\ny{tenant=\"a\"} 2\n# EOF\n";
        let b = "# HELP x X.\n# TYPE x gauge\nx{tenant=\"b\"} 3\n# EOF\n";
        assert_eq!(
            merge(&[a.to_owned(), b.to_owned()]),
            "# HELP x X.\n# TYPE x gauge\nx{tenant=\"a\"} 1\nx{tenant=\"b\"} 3\n# HELP y Y.\n# TYPE y gauge\ny{tenant=\"a\"} 2\n# EOF\n"
        );
    }
}
