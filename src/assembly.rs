//! One tenant's running parts, assembled from its config: the state file (locked, migrated), its
//! mappings and rules, its connectors (with their own pacers and budgets), its engine and its
//! webhook state; and the reloads that swap its mappings, rules and credentials. The
//! single-tenant daemon runs one of these, `prmsync run` with `daemon.tenants_dir` one per tenant.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::app::{ReloadStatus, active_mappings, connectors, load_mappings, load_rules};
use crate::config::Config;
use crate::credentials::StateTokens;
use crate::engine::{Clock, Engine, EngineSettings, RetryPolicy};
use crate::failpoint::FailPoints;
use crate::model::SystemKind;
use crate::store::Store;
use crate::webhook::{self, WebhookState};

/// How far back each poll re-reads (vendor search indexes lag behind writes).
const POLL_OVERLAP: std::time::Duration = std::time::Duration::from_secs(2);

/// A tenant ready to run: nothing is polled until its pipeline starts.
#[derive(Debug)]
pub struct Tenant {
    pub config: Config,
    pub engine: Arc<Engine>,
    /// Mapping and rules reloads so far (logs, status, `/metrics`).
    pub reloads: Arc<Mutex<ReloadStatus>>,
    /// What this tenant's webhook routes verify with and stage into.
    pub webhooks: WebhookState,
    /// This process's hold on the tenant's state file (`prmsync erase` hands its work to it);
    /// `None` for a PostgreSQL state (its writer connection holds an advisory lock instead).
    _state_lock: Option<crate::state_lock::StateLock>,
}

impl Tenant {
    /// The files [`Tenant::assemble`] compiles before it touches the state file: the mappings
    /// and rules (`prmsync status` shows a tenant whose files do not compile as broken).
    pub fn preflight(config: &Config) -> anyhow::Result<()> {
        let set = load_mappings(config).map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
        active_mappings(config, &set)?;
        load_rules(config)?;
        Ok(())
    }

    /// Locks and opens the state file (migrating it), seals plain-text tokens, compiles the
    /// mappings and rules and builds the connectors and the engine. `ready` is the listener's
    /// readiness flag, shared by every tenant of the process.
    pub async fn assemble(
        config: Config,
        clock: Clock,
        failpoints: FailPoints,
        ready: Arc<AtomicBool>,
    ) -> anyhow::Result<Tenant> {
        Tenant::assemble_fenced(config, clock, failpoints, ready, None).await
    }

    /// [`Tenant::assemble`] for fleet mode: the PostgreSQL state checks `fence` at every
    /// write-side commit instead of holding the schema's one-daemon lock (several daemons open
    /// the tenant; the lease says which one runs it).
    pub async fn assemble_fenced(
        config: Config,
        clock: Clock,
        failpoints: FailPoints,
        ready: Arc<AtomicBool>,
        fence: Option<Arc<crate::store::pg::fleet::Fence>>,
    ) -> anyhow::Result<Tenant> {
        // Mappings and rules first: a tenant whose files do not compile leaves no state file.
        let set = load_mappings(&config).map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
        let mappings = active_mappings(&config, &set)?;
        let rules = load_rules(&config)?;
        let state_path = config.daemon.state_path.clone();
        let fenced = fence.is_some();
        let (state_lock, store) = match (&config.state.postgres, fence) {
            // Fleet mode: several daemons open the schema; the lease's fence guards its commits.
            (Some(target), Some(fence)) => {
                let store = Store::open_postgres_fenced(target, fence).with_context(|| {
                    format!("opening the PostgreSQL state (schema {})", target.schema)
                })?;
                (None, store)
            }
            // A PostgreSQL state: the lock is a session advisory lock on the state's schema,
            // held by the store's writer connection.
            (Some(target), None) => {
                let store = Store::open_postgres(target).with_context(|| {
                    format!("opening the PostgreSQL state (schema {})", target.schema)
                })?;
                anyhow::ensure!(
                    store.hold_daemon_lock().await?,
                    "another prmsync daemon is using the PostgreSQL state schema {}",
                    target.schema
                );
                (None, store)
            }
            (None, _) => {
                let lock = crate::state_lock::try_hold(&state_path)
                    .with_context(|| {
                        format!(
                            "locking {}",
                            crate::state_lock::lock_path(&state_path).display()
                        )
                    })?
                    .with_context(|| {
                        format!(
                            "another prmsync daemon (or `prmsync erase`) is using the state file {}",
                            state_path.display()
                        )
                    })?;
                let store = Store::open_with(&state_path, &failpoints)
                    .with_context(|| format!("opening state file {}", state_path.display()))?;
                (Some(lock), store)
            }
        };
        let reloads = Arc::new(Mutex::new(ReloadStatus {
            versions: versions(&mappings),
            ..ReloadStatus::default()
        }));
        // Tokens an older prmsync saved in plain text are sealed before anything else runs.
        let sealed = StateTokens::owner(store.clone(), config.daemon.state_key.as_ref())
            .seal_plain_text()
            .await
            .context("sealing saved credentials")?;
        if sealed > 0 {
            tracing::info!(sealed, "saved credentials in plain text are now sealed");
        }
        let (prm, crm) = connectors(&config, Some(&store))?;
        for system in [prm.kind(), crm.kind()] {
            crate::telemetry::meters::meters().known_system(system);
        }
        let settings = EngineSettings {
            batch_size: config.daemon.batch_size,
            retry: RetryPolicy {
                max_attempts: config.daemon.max_attempts,
                ..RetryPolicy::default()
            },
            overlap: POLL_OVERLAP,
            poll_interval: config.daemon.poll_interval,
            schema_check_interval: config.daemon.schema_check,
            ..EngineSettings::default()
        };
        let engine = Arc::new(
            Engine::new(store.clone(), prm, crm, mappings, settings, clock.clone())
                .with_failpoints(failpoints.clone())
                .with_erasure(config.erasure.clone()),
        );
        engine.set_rules(rules);
        // A pause recorded by an earlier process ends here: this one starts with the credentials
        // configured now, and pauses again at the first refusal. In a fleet, only when this
        // daemon takes the tenant's lease ([`Tenant::take_over`]): the holder's pause stays.
        if !fenced {
            engine.start_afresh().await?;
        }
        let (hubspot_secret, partnerstack_secret) = crate::app::webhook_secrets(&config);
        let webhooks = WebhookState {
            store,
            ready,
            // A webhook's change goes to the planner only; it never makes a poller read.
            wake: engine.signals().planner.clone(),
            hubspot_secret,
            partnerstack_secret,
            rest: crate::app::rest_hook(&config),
            clock,
            failpoints,
            intake: Arc::new(tokio::sync::Semaphore::new(webhook::MAX_INFLIGHT_WEBHOOKS)),
        };
        Ok(Tenant {
            config,
            engine,
            reloads,
            webhooks,
            _state_lock: state_lock,
        })
    }

    /// Fleet mode: this daemon has just taken the tenant's lease (its fence carries the new
    /// generation) and starts running it, as a daemon starting up would
    /// ([`Engine::start_afresh`]).
    pub fn take_over(
        &self,
    ) -> impl Future<Output = Result<(), crate::engine::EngineError>> + Send + 'static {
        let engine = self.engine.clone();
        async move { engine.start_afresh().await }
    }

    /// Retention: prunes old history in small batches on its own interval, until `stop`.
    pub fn maintain(
        &self,
        clock: Clock,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        crate::store::retention::maintain(
            self.engine.store().clone(),
            self.config.retention.policy,
            self.config.retention.interval,
            move || clock(),
            stop,
        )
    }

    /// Recompiles the mapping set and rules from `config`'s folder and swaps them in together only
    /// if both compile (each stage reads the mappings once per cycle, so a cycle never mixes two
    /// sets); otherwise the running ones stay. Returns a one-line summary.
    pub fn reload_mappings(&self, config: &Config) -> String {
        // A reload reads the CRM's live schema again, whatever else it changes.
        self.engine.signals().schema.notify_one();
        let mappings = load_mappings(config)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|set| active_mappings(config, &set));
        let rules = load_rules(config);
        let mut status = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        match (mappings, rules) {
            (Ok(m), Ok(r)) => {
                status.succeeded += 1;
                status.versions = versions(&m);
                self.engine.set_mappings(m);
                self.engine.set_rules(r);
                tracing::info!(mappings = ?status.versions, reloads_ok = status.succeeded, "mappings and rules reloaded");
                format!(
                    "reloaded mappings and rules ({} reload(s) ok, {} refused)",
                    status.succeeded, status.failed
                )
            }
            (m, r) => {
                status.failed += 1;
                let why = [m.err(), r.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| format!("{e:#}").trim_end().to_owned())
                    .collect::<Vec<_>>()
                    .join("\n");
                tracing::error!(error = %why, reloads_failed = status.failed, running = ?status.versions, "reload refused: the running mappings and rules stay in force");
                status.last_error = Some(why);
                format!(
                    "reload refused; the running mappings and rules stay ({} refused)",
                    status.failed
                )
            }
        }
    }

    /// Loads the credentials `config` names for the PRM and the CRM: a system whose credential
    /// changed uses the new one from its next request, and resumes if it was paused on a refused
    /// one. Returns the systems whose credential changed. Only credentials are taken.
    pub async fn reload_credentials(&self, config: &Config) -> anyhow::Result<Vec<SystemKind>> {
        let (prm, crm) = crate::app::connectors_with(config, None)?;
        let mut changed = Vec::new();
        for fresh in [prm, crm] {
            if self.engine.load_credential(&fresh).await? {
                changed.push(fresh.kind());
            }
        }
        Ok(changed)
    }

    /// Counts and last error of mapping reloads, and the versions in force.
    pub fn reload_status(&self) -> ReloadStatus {
        self.reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn versions(mappings: &[Arc<crate::mapping::Mapping>]) -> Vec<String> {
    mappings
        .iter()
        .map(|m| format!("{}@{}", m.name, m.version))
        .collect()
}
