//! The admin listener: `/livez`, `/readyz` and `/metrics`, apart from the internet-facing webhook
//! listener and bound to loopback unless the config allows otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::{AdminConfig, check_admin_bind};
use crate::engine::Clock;
use crate::store::Store;

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("draining: prmsync is shutting down")]
    Draining,
    #[error("the state file refuses writes (disk full, locked or read-only)")]
    StoreRefusesWrites,
    #[error(
        "disk almost full: {free} bytes free on the state file's volume (admin.min_free_bytes = {min})"
    )]
    DiskFull { free: u64, min: u64 },
}

/// What `/readyz` looks at.
#[derive(Debug)]
pub struct Readiness {
    /// Set once the daemon is up; cleared while the store refuses writes (webhook intake and the
    /// sync loop maintain it) and at shutdown.
    accepts_writes: Arc<AtomicBool>,
    draining: AtomicBool,
    volume: PathBuf,
    min_free_bytes: u64,
}

impl Readiness {
    pub fn new(accepts_writes: Arc<AtomicBool>, state_path: &Path, min_free_bytes: u64) -> Self {
        let volume = match state_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        Readiness {
            accepts_writes,
            draining: AtomicBool::new(false),
            volume,
            min_free_bytes,
        }
    }

    /// From now on `/readyz` answers 503 (the shutdown has begun).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready, or the first reason not to be.
    pub fn check(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::Draining);
        }
        if !self.accepts_writes.load(Ordering::Relaxed) {
            return Err(NotReady::StoreRefusesWrites);
        }
        if self.min_free_bytes > 0 {
            match free_bytes(&self.volume) {
                Ok(free) if free < self.min_free_bytes => {
                    return Err(NotReady::DiskFull {
                        free,
                        min: self.min_free_bytes,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, volume = %self.volume.display(), "cannot read free space")
                }
            }
        }
        Ok(())
    }
}

/// Bytes available to unprivileged users on the volume holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub readiness: Arc<Readiness>,
    pub clock: Clock,
    /// Mapping and rules reloads so far (kept by the daemon).
    pub reloads: Arc<std::sync::Mutex<crate::app::ReloadStatus>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

/// Binds the admin address, refusing a non-loopback one unless `allow_remote` is set.
pub async fn bind(config: &AdminConfig) -> anyhow::Result<tokio::net::TcpListener> {
    check_admin_bind(config.listen, config.allow_remote)
        .map_err(|e| anyhow::anyhow!("admin.listen: {e}"))?;
    tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.listen))
}

/// The routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    match s.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

/// Prometheus metrics from the state file (`crate::metrics`); 503 when the store cannot answer.
async fn metrics(State(s): State<AdminState>) -> Response {
    let report = match s.store.status((s.clock)()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the state file did not answer");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the state file did not answer",
            )
                .into_response();
        }
    };
    let process = {
        let r = s.reloads.lock().unwrap_or_else(|p| p.into_inner());
        crate::metrics::ProcessInfo {
            reloads_ok: r.succeeded,
            reloads_refused: r.failed,
            now_ms: (s.clock)(),
        }
    };
    match crate::metrics::render(&report, process) {
        Ok(text) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: encoding failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness(min_free: u64) -> (Readiness, Arc<AtomicBool>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let flag = Arc::new(AtomicBool::new(true));
        let r = Readiness::new(flag.clone(), &dir.path().join("state.db"), min_free);
        (r, flag, dir)
    }

    #[test]
    fn each_reason_makes_it_unready() {
        let (r, flag, _dir) = readiness(1);
        assert_eq!(r.check(), Ok(()));
        flag.store(false, Ordering::Relaxed);
        assert_eq!(r.check(), Err(NotReady::StoreRefusesWrites));
        flag.store(true, Ordering::Relaxed);
        r.drain();
        assert_eq!(r.check(), Err(NotReady::Draining));
    }

    #[test]
    fn a_volume_below_the_free_space_floor_is_unready() {
        // No volume has u64::MAX bytes free: the floor is above what is left.
        let (r, _flag, _dir) = readiness(u64::MAX);
        assert!(
            matches!(r.check(), Err(NotReady::DiskFull { .. })),
            "{:?}",
            r.check()
        );
    }

    #[tokio::test]
    async fn a_non_loopback_bind_is_refused_unless_allowed() {
        let mut config = AdminConfig {
            listen: ([0, 0, 0, 0], 0).into(),
            allow_remote: false,
            min_free_bytes: 0,
        };
        let err = bind(&config).await.unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        config.allow_remote = true;
        bind(&config).await.expect("allowed by configuration");
    }
}
