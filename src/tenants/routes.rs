//! The webhook listener of a multi-tenant daemon: `/webhooks/{tenant}/{system}` is handed to that
//! tenant's webhook routes (its secrets, its state file) as `/webhooks/{system}`, with the URL
//! the sender signed kept for the signature check; an unknown tenant gets 404 with a clear body.

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower::ServiceExt as _;

use super::Directory;

/// The listener's router: every request is dispatched by its tenant segment.
pub fn router(directory: Directory) -> Router {
    Router::new().fallback(dispatch).with_state(directory)
}

/// `/webhooks/{tenant}/{system}` → (tenant, system); anything else is not a tenant route.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let (tenant, system) = path.strip_prefix("/webhooks/")?.split_once('/')?;
    (!tenant.is_empty() && !system.is_empty() && !system.contains('/')).then_some((tenant, system))
}

async fn dispatch(State(directory): State<Directory>, mut req: Request) -> Response {
    let Some((tenant, system)) = split(req.uri().path()) else {
        return not_found(
            "webhook routes name the tenant: /webhooks/{tenant}/hubspot, /webhooks/{tenant}/partnerstack or /webhooks/{tenant}/rest"
                .to_owned(),
        );
    };
    let Some(routes) = directory.webhooks(tenant) else {
        let why = match directory.skipped(tenant) {
            Some(_) => format!(
                "tenant {tenant:?} is not running (its configuration did not load; see `prmsync status`)"
            ),
            None => format!("unknown tenant {tenant:?}"),
        };
        return not_found(why);
    };
    let inner = format!(
        "/webhooks/{system}{}",
        req.uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    let Ok(inner) = inner.parse() else {
        return not_found(format!("no webhook route {system:?}"));
    };
    let original = req.uri().clone();
    req.extensions_mut().insert(OriginalUri(original));
    *req.uri_mut() = inner;
    match routes.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

fn not_found(message: String) -> Response {
    tracing::warn!(%message, "webhook refused");
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn only_tenant_routes_split() {
        assert_eq!(split("/webhooks/acme/hubspot"), Some(("acme", "hubspot")));
        assert_eq!(split("/webhooks/hubspot"), None);
        assert_eq!(split("/webhooks//hubspot"), None);
        assert_eq!(split("/webhooks/acme/hubspot/x"), None);
        assert_eq!(split("/metrics"), None);
    }
}
