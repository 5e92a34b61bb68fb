//! The one place everything is assembled: store, mappings, connectors, engine, HTTP listener, and
//! the order in which they start and stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, CrmConfig, PrmConfig};
use crate::connector::{Connector, http_client, hubspot::HubSpot, partnerstack::PartnerStack};
use crate::engine::{Clock, Engine, EngineSettings, RetryPolicy, TickReport};
use crate::failpoint::FailPoints;
use crate::mapping::{Mapping, MappingErrors, MappingSet};
use crate::model::SystemKind;
use crate::store::Store;
use crate::webhook::{self, WebhookState};

/// How far back each poll re-reads (vendor search indexes lag behind writes).
const POLL_OVERLAP: Duration = Duration::from_secs(2);

/// Compiles the configured mapping set (the built-in one when no folder is set).
pub fn load_mappings(config: &Config) -> Result<MappingSet, MappingErrors> {
    match &config.daemon.mappings_dir {
        Some(dir) => MappingSet::load_dir(dir),
        None => MappingSet::builtin(),
    }
}

fn systems(config: &Config) -> (SystemKind, SystemKind) {
    let prm = match config.prm {
        PrmConfig::PartnerStack(_) => SystemKind::PartnerStack,
    };
    let crm = match config.crm {
        CrmConfig::HubSpot(_) => SystemKind::HubSpot,
    };
    (prm, crm)
}

/// The flows that run for this config.
pub fn active_mappings(config: &Config, set: &MappingSet) -> anyhow::Result<Vec<Arc<Mapping>>> {
    let (prm, crm) = systems(config);
    let active = set.active_for(prm, crm);
    if active.is_empty() {
        bail!("no mapping connects {prm} to {crm}; add one to the mappings folder");
    }
    Ok(active)
}

/// A started daemon: listener bound, store migrated, engine ready.
#[derive(Debug)]
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub http_addr: SocketAddr,
    config: Config,
    ready: Arc<AtomicBool>,
    wake: Arc<Notify>,
    stop_http: CancellationToken,
    tasks: TaskTracker,
}

impl Daemon {
    /// Opens the store (migrating it), compiles mappings, builds connectors and binds the HTTP
    /// listener. Nothing is polled yet.
    pub async fn start(config: Config, clock: Clock) -> anyhow::Result<Daemon> {
        Daemon::start_with(config, clock, FailPoints::none()).await
    }

    /// [`Daemon::start`] with fail points armed (crash tests; see [`crate::failpoint`]).
    pub async fn start_with(
        config: Config,
        clock: Clock,
        failpoints: FailPoints,
    ) -> anyhow::Result<Daemon> {
        if failpoints.is_armed() {
            tracing::warn!("fail points are armed: this process will abort on purpose");
        }
        let store =
            Store::open_with(&config.daemon.state_path, &failpoints).with_context(|| {
                format!("opening state file {}", config.daemon.state_path.display())
            })?;
        let set = load_mappings(&config).map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
        let mappings = active_mappings(&config, &set)?;
        let http = http_client(config.daemon.request_timeout);
        let (prm, hubspot_secret, partnerstack_secret) = match &config.prm {
            PrmConfig::PartnerStack(p) => {
                require(p.api_key.expose_secret(), "partnerstack.api_key")?;
                (
                    Connector::PartnerStack(PartnerStack::new(
                        http.clone(),
                        p.base_url.clone(),
                        p.api_key.clone(),
                    )),
                    None,
                    p.webhook_secret.clone(),
                )
            }
        };
        let (crm, hubspot_secret) = match &config.crm {
            CrmConfig::HubSpot(h) => {
                require(h.access_token.expose_secret(), "hubspot.access_token")?;
                (
                    Connector::HubSpot(HubSpot::new(
                        http.clone(),
                        h.base_url.clone(),
                        h.access_token.clone(),
                    )),
                    h.client_secret.clone().or(hubspot_secret),
                )
            }
        };
        let settings = EngineSettings {
            batch_size: config.daemon.batch_size,
            retry: RetryPolicy {
                max_attempts: config.daemon.max_attempts,
                ..RetryPolicy::default()
            },
            overlap: POLL_OVERLAP,
        };
        let engine = Arc::new(
            Engine::new(store.clone(), prm, crm, mappings, settings, clock.clone())
                .with_failpoints(failpoints.clone()),
        );

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let ready = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let state = WebhookState {
            store,
            ready: ready.clone(),
            wake: wake.clone(),
            hubspot_secret,
            partnerstack_secret,
            clock,
            failpoints,
            intake: Arc::new(tokio::sync::Semaphore::new(webhook::MAX_INFLIGHT_WEBHOOKS)),
        };
        let router = webhook::router(state, config.http.max_body_bytes);
        let stop_http = CancellationToken::new();
        let tasks = TaskTracker::new();
        let token = stop_http.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        ready.store(true, Ordering::Relaxed);
        tracing::info!(addr = %http_addr, state = %config.daemon.state_path.display(), "prmsync started");
        Ok(Daemon {
            engine,
            http_addr,
            config,
            ready,
            wake,
            stop_http,
            tasks,
        })
    }

    /// Runs the sync loop until `shutdown` is cancelled, reloading mappings when `reload` fires.
    pub async fn run(&self, shutdown: CancellationToken, reload: Arc<Notify>) {
        notify(&[sd_notify::NotifyState::Ready]);
        let interval = self.config.daemon.poll_interval;
        loop {
            let pass = self.engine.tick().await;
            // A store that refuses writes (disk full, locked) makes prmsync not ready; the first
            // pass that commits again makes it ready by itself (an idle pass proves nothing).
            match &pass {
                Ok(r) if !r.is_idle() => self.ready.store(true, Ordering::Relaxed),
                Err(crate::engine::EngineError::Store(_)) => {
                    self.ready.store(false, Ordering::Relaxed)
                }
                Ok(_) | Err(_) => {}
            }
            match pass {
                Ok(r) if !r.is_idle() => tracing::info!(
                    staged = r.staged,
                    processed = r.processed,
                    written = r.written,
                    retried = r.retried,
                    dead_lettered = r.dead_lettered,
                    "sync pass"
                ),
                Ok(_) => tracing::debug!("sync pass: nothing to do"),
                Err(e) => {
                    tracing::error!(error = %e, retryable = e.is_retryable(), "sync pass failed")
                }
            }
            let wait = match self.engine.next_due().await {
                Ok(Some(due)) => {
                    let ms = (due - jiff::Timestamp::now().as_millisecond()).max(50) as u64;
                    interval.min(Duration::from_millis(ms))
                }
                _ => interval,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = reload.notified() => self.reload(),
                _ = self.wake.notified() => {},
                _ = tokio::time::sleep(wait) => {},
            }
        }
    }

    /// Recompiles the mapping set; swaps it in only if all of it compiles (between passes).
    pub fn reload(&self) {
        notify(&[sd_notify::NotifyState::Reloading, monotonic()]);
        match load_mappings(&self.config)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|set| active_mappings(&self.config, &set))
        {
            Ok(m) => {
                let names: Vec<String> = m
                    .iter()
                    .map(|m| format!("{}@{}", m.name, m.version))
                    .collect();
                self.engine.set_mappings(m);
                tracing::info!(mappings = ?names, "mappings reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running mappings stay in force")
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Runs sync passes until nothing is left to do (the demo and tests use this).
    pub async fn run_until_idle(&self) -> anyhow::Result<TickReport> {
        Ok(self.engine.run_until_idle(50).await?)
    }

    /// Stops the listener and waits for in-flight requests, at most `shutdown_timeout`.
    pub async fn shutdown(self) {
        notify(&[sd_notify::NotifyState::Stopping]);
        self.ready.store(false, Ordering::Relaxed);
        self.stop_http.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.config.daemon.shutdown_timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed with requests still open");
        }
        tracing::info!("prmsync stopped");
    }
}

fn require(secret: &str, key: &str) -> anyhow::Result<()> {
    if secret.is_empty() {
        bail!(
            "{key}: the secret is empty or its systemd credential is not available (CREDENTIALS_DIRECTORY)"
        );
    }
    Ok(())
}

fn monotonic() -> sd_notify::NotifyState<'static> {
    sd_notify::NotifyState::monotonic_usec_now()
        .unwrap_or(sd_notify::NotifyState::Status("reloading"))
}

/// Tells systemd about a state change; a no-op outside systemd.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `prmsync run`: start, serve until a signal, drain within the deadline.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    failpoints: FailPoints,
) -> anyhow::Result<()> {
    let daemon = Daemon::start_with(config, crate::engine::system_clock(), failpoints).await?;
    daemon.run(shutdown, reload).await;
    daemon.shutdown().await;
    Ok(())
}
