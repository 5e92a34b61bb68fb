//! The one place everything is assembled: store, mappings, connectors, engine, HTTP listener, and
//! the order in which they start and stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::assembly::Tenant;
use crate::config::{Config, CrmConfig, PrmConfig, SalesforceAuthConfig, SalesforceConfig};
use crate::connector::hubspot::{HubSpot, OAuthClient};
use crate::connector::rest::Rest;
use crate::connector::salesforce::{self, Salesforce};
use crate::connector::tokens::TokenStore;
use crate::connector::{Connector, http_client, partnerstack::PartnerStack};
use crate::credentials::StateTokens;
use crate::engine::dryrun::{self, FlowPlan};
use crate::engine::pipeline::Pipeline;
use crate::engine::{Clock, Engine, RetryPolicy, TickReport};
use crate::failpoint::FailPoints;
use crate::mapping::{Mapping, MappingErrors, MappingSet};
use crate::model::SystemKind;
use crate::notify::{monotonic, notify};
use crate::rules::Rules;
use crate::store::{ReadOnlyStore, Store};
use crate::webhook;

/// Compiles the rules of engagement that go with the configured mappings (`None`: none).
pub fn load_rules(config: &Config) -> anyhow::Result<Option<Arc<Rules>>> {
    Rules::load(config.daemon.mappings_dir.as_deref())
        .map(|r| r.map(Arc::new))
        .map_err(|e| anyhow::anyhow!("rules of engagement errors:\n{e}"))
}

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
        PrmConfig::Rest(_) => SystemKind::Rest,
    };
    let crm = match config.crm {
        CrmConfig::HubSpot(_) => SystemKind::HubSpot,
        CrmConfig::Salesforce(_) => SystemKind::Salesforce,
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

/// What mapping reloads have done, for operators (logs, status) and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    pub succeeded: u64,
    /// Reloads refused because the new mapping set had errors; the old set kept running.
    pub failed: u64,
    /// Why the last refused reload was refused (every error, one per line).
    pub last_error: Option<String>,
    /// `flow@version` of the mappings in force.
    pub versions: Vec<String>,
}

/// The configured PRM and CRM connectors (no request is made yet). `tokens` keeps rotated
/// credentials (Salesforce refresh tokens) durable, sealed with `daemon.state_key`, and makes
/// this process their owner; without it they live in memory only.
pub fn connectors(
    config: &Config,
    tokens: Option<&Store>,
) -> anyhow::Result<(Connector, Connector)> {
    let tokens = tokens.map(|s| {
        Arc::new(StateTokens::owner(
            s.clone(),
            config.daemon.state_key.as_ref(),
        )) as Arc<dyn TokenStore>
    });
    connectors_with(config, tokens)
}

pub(crate) fn connectors_with(
    config: &Config,
    tokens: Option<Arc<dyn TokenStore>>,
) -> anyhow::Result<(Connector, Connector)> {
    let http = http_client(config.daemon.request_timeout);
    let prm = match &config.prm {
        PrmConfig::PartnerStack(p) => {
            require(p.api_key.expose_secret(), "partnerstack.api_key")?;
            let client = PartnerStack::new(http.clone(), p.base_url.clone(), p.api_key.clone());
            let client = Connector::PartnerStack(match &p.public_key {
                Some(public) => {
                    require(public.expose_secret(), "partnerstack.public_key")?;
                    client.with_basic_auth(public.clone())
                }
                None => client,
            });
            match p.rate_limit {
                Some(rate) => client.with_limits(
                    crate::connector::Limits::documented(crate::model::SystemKind::PartnerStack)
                        .with_burst(rate),
                ),
                None => client,
            }
        }
        PrmConfig::Rest(r) => {
            require(r.profile.auth_value.expose_secret(), "rest.token")?;
            let rest = Rest::new(http.clone(), r.profile.clone());
            Connector::Rest(match r.rate_limit_per_second {
                Some(n) => rest.with_rate_limit(n),
                None => rest,
            })
        }
    };
    let crm = match &config.crm {
        CrmConfig::HubSpot(h) => Connector::HubSpot(match &h.oauth {
            Some(o) => HubSpot::with_oauth(
                http.clone(),
                h.base_url.clone(),
                OAuthClient {
                    client_id: o.client_id.clone(),
                    client_secret: h.client_secret.clone().unwrap_or_default(),
                    refresh_token: o.refresh_token.clone(),
                },
            ),
            None => {
                require(h.access_token.expose_secret(), "hubspot.access_token")?;
                HubSpot::new(http.clone(), h.base_url.clone(), h.access_token.clone())
            }
        }),
        CrmConfig::Salesforce(sf) => salesforce_connector(config, sf, http.clone(), tokens)?,
    };
    let crm = match &config.crm {
        CrmConfig::HubSpot(h) => match h.rate_limit {
            Some(rate) => crm.with_limits(
                crate::connector::Limits::documented(crate::model::SystemKind::HubSpot)
                    .with_burst(rate),
            ),
            None => crm,
        },
        CrmConfig::Salesforce(s) => match s.rate_limit {
            Some(rate) => crm.with_limits(
                crate::connector::Limits::documented(crate::model::SystemKind::Salesforce)
                    .with_burst(rate),
            ),
            None => crm,
        },
    };
    Ok((prm, crm))
}

/// `/webhooks/rest`'s secret and profile, when the REST PRM has a webhook secret.
pub(crate) fn rest_hook(config: &Config) -> Option<webhook::RestHook> {
    match &config.prm {
        PrmConfig::Rest(r) => r.webhook_secret.clone().map(|secret| webhook::RestHook {
            secret,
            profile: Arc::new(r.profile.clone()),
        }),
        PrmConfig::PartnerStack(_) => None,
    }
}

/// The webhook secrets: (HubSpot client secret, PartnerStack shared secret).
pub(crate) fn webhook_secrets(config: &Config) -> (Option<SecretString>, Option<SecretString>) {
    let partnerstack = match &config.prm {
        PrmConfig::PartnerStack(p) => p.webhook_secret.clone(),
        PrmConfig::Rest(_) => None,
    };
    let hubspot = match &config.crm {
        CrmConfig::HubSpot(h) => h.client_secret.clone(),
        CrmConfig::Salesforce(_) => None,
    };
    (hubspot, partnerstack)
}

/// `prmsync plan`: a dry run of the active flows (or one, by name) against the state (the file
/// or the PostgreSQL schema) and the live systems. Only reads: the state is opened read-only, no
/// vendor write is made, and no token is refreshed (Salesforce: the session the daemon saved is used).
pub async fn plan(config: &Config, flow: Option<&str>) -> anyhow::Result<Vec<FlowPlan>> {
    let set = load_mappings(config)?;
    let mut mappings = active_mappings(config, &set)?;
    if let Some(name) = flow {
        mappings.retain(|m| m.name == name);
        if mappings.is_empty() {
            let names: Vec<&str> = set.mappings.iter().map(|m| m.name.as_str()).collect();
            bail!(
                "no active flow is named {name:?}; flows: {}",
                names.join(", ")
            );
        }
    }
    let (prm, crm) = connectors_with(config, read_only_tokens(config)?)?;
    let state = open_state_read_only(config)?;
    let retry = RetryPolicy {
        max_attempts: config.daemon.max_attempts,
        ..RetryPolicy::default()
    };
    Ok(dryrun::plan_flows(&[&prm, &crm], &mappings, state.as_ref(), &retry).await?)
}

/// The configured state, read-only: the PostgreSQL schema (`state.url`) or the state file;
/// `None` when there is no file yet.
fn open_state_read_only(config: &Config) -> anyhow::Result<Option<ReadOnlyStore>> {
    let path = &config.daemon.state_path;
    ReadOnlyStore::open_configured(config.state.postgres.as_ref(), path).with_context(|| {
        match &config.state.postgres {
            Some(target) => format!(
                "opening the PostgreSQL state (schema {}) read-only",
                target.schema
            ),
            None => format!("opening state file {} read-only", path.display()),
        }
    })
}

/// The configured connectors for a read-only command (`prmsync check --live`): like `plan`, the
/// Salesforce session is the one the daemon saved, and no refresh grant is sent.
pub fn read_only_connectors(config: &Config) -> anyhow::Result<(Connector, Connector)> {
    connectors_with(config, read_only_tokens(config)?)
}

/// The token store of a command that must not own the tokens (`prmsync plan`): the daemon owns
/// the Salesforce refresh token (a refresh rotates it), so these read the session the daemon
/// saved, read-only, and never send the refresh grant.
fn read_only_tokens(config: &Config) -> anyhow::Result<Option<Arc<dyn TokenStore>>> {
    Ok(match &config.crm {
        CrmConfig::Salesforce(_) => match open_state_read_only(config)? {
            Some(state) => Some(Arc::new(StateTokens::read_only(
                state,
                config.daemon.state_key.as_ref(),
            ))),
            None => Some(Arc::new(crate::connector::tokens::ReadOnlyNothing)),
        },
        _ => None,
    })
}

/// What the rules file on disk would change: its version, the version the stored decisions were
/// made under (the newest), and the registrations it would move. `None` without a rules file.
pub async fn plan_registrations(
    config: &Config,
) -> anyhow::Result<Option<(String, Vec<crate::engine::registrations::Move>)>> {
    let Some(rules) = Rules::load(config.daemon.mappings_dir.as_deref())
        .map_err(|e| anyhow::anyhow!("rules of engagement errors:\n{e}"))?
    else {
        return Ok(None);
    };
    let Some(state) = open_state_read_only(config)? else {
        return Ok(Some((rules.version.clone(), Vec::new())));
    };
    let set = load_mappings(config)?;
    let mappings = active_mappings(config, &set)?;
    // Read-only like the flows' plan: the CRM facts use the daemon's saved session.
    let (prm, crm) = connectors_with(config, read_only_tokens(config)?)?;
    let retry = RetryPolicy {
        max_attempts: config.daemon.max_attempts,
        ..RetryPolicy::default()
    };
    let failed = Mutex::new(None);
    // A one-shot command: a rate limit (the flows' reads just spent the CRM's allowance) is
    // waited out a few times rather than failing the plan.
    let mut attempt = 0;
    loop {
        let source = crate::engine::registrations::CrmSource {
            connector: &crm,
            retry: &retry,
            held: None,
            failed: &failed,
        };
        match crate::engine::registrations::preview(
            &state,
            &rules,
            &mappings,
            prm.kind(),
            Some(source),
        )
        .await
        {
            Ok(moves) => return Ok(Some((rules.version.clone(), moves))),
            Err(crate::engine::registrations::PreviewError::Crm(e))
                if attempt < 3 && e.retry_after().is_some() =>
            {
                attempt += 1;
                let wait = e
                    .retry_after()
                    .unwrap_or_default()
                    .min(Duration::from_secs(30));
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A started daemon: listener bound, store migrated, engine ready.
#[derive(Debug)]
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub http_addr: SocketAddr,
    /// The admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    readiness: Arc<crate::admin::Readiness>,
    /// The one tenant: its state file (held), engine, mappings and credentials.
    tenant: Tenant,
    /// The config file a reload reads credentials from again (`prmsync run`).
    config_file: Option<std::path::PathBuf>,
    ready: Arc<AtomicBool>,
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
        let ready = Arc::new(AtomicBool::new(false));
        let tenant = Tenant::assemble(config, clock.clone(), failpoints, ready.clone()).await?;
        let config = &tenant.config;
        let engine = tenant.engine.clone();
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let admin_listener = crate::admin::bind(&config.admin).await?;
        let admin_addr = admin_listener.local_addr()?;
        let readiness = Arc::new(crate::admin::Readiness::new(
            ready.clone(),
            &config.daemon.state_path,
            // The free-space check watches the state file's volume; PostgreSQL watches its own.
            if config.state.postgres.is_some() {
                0
            } else {
                config.admin.min_free_bytes
            },
        ));
        let admin_router = crate::admin::router(crate::admin::AdminState {
            store: engine.store().clone(),
            readiness: readiness.clone(),
            clock: clock.clone(),
            reloads: tenant.reloads.clone(),
        });
        let router = webhook::router(tenant.webhooks.clone(), config.http.max_body_bytes);
        let stop_http = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(tenant.maintain(clock, stop_http.clone()));
        let token = stop_http.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        let token = stop_http.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(admin_listener, admin_router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        ready.store(true, Ordering::Relaxed);
        tracing::info!(addr = %http_addr, admin = %admin_addr, state = %config.daemon.state_path.display(), "prmsync started");
        Ok(Daemon {
            engine,
            http_addr,
            admin_addr,
            readiness,
            tenant,
            config_file: None,
            ready,
            stop_http,
            tasks,
        })
    }

    /// Runs the sync pipeline (see [`crate::engine::pipeline`]) until `shutdown` is cancelled,
    /// reloading mappings when `reload` fires; returns once every stage task has stopped.
    pub async fn run(&self, shutdown: CancellationToken, reload: Arc<Notify>) {
        let now = jiff::Timestamp::now().as_millisecond();
        let summary = match self.engine.store().status(now).await {
            Ok(r) => format!("running: {}", crate::status::one_line(&r)),
            Err(e) => format!("running; the state file did not answer: {e}"),
        };
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&summary),
        ]);
        let pipeline = Pipeline::start(self.engine.clone(), self.ready.clone());
        // The watchdog pings and STATUS= refreshes stop before the stages do (or when this
        // future is dropped at the shutdown deadline).
        let stop_watch = CancellationToken::new();
        let watch = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::notify::watch(
            crate::notify::Watch {
                engine: self.engine.clone(),
                stall_timeout: self.tenant.config.daemon.stall_timeout,
                status_every: self
                    .tenant
                    .config
                    .daemon
                    .poll_interval
                    .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            },
            stop_watch.clone(),
        )));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = reload.notified() => {
                    self.reload();
                    self.reload_credentials_from_file().await;
                    pipeline.sync_pollers();
                }
            }
        }
        stop_watch.cancel();
        let _ = watch.await;
        pipeline.stop().await;
    }

    /// Recompiles the mapping set; swaps it in only if all of it compiles (each stage reads the
    /// mappings once at the start of each cycle, so a cycle never mixes two sets).
    pub fn reload(&self) {
        notify(&[sd_notify::NotifyState::Reloading, monotonic()]);
        // Mappings and rules are compiled first and swapped together, or neither is: new
        // mappings never run with old rules.
        let reload_summary = self.tenant.reload_mappings(&self.tenant.config);
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&reload_summary),
        ]);
    }

    /// Reads credentials from `path` again at every reload (`prmsync run`).
    pub fn with_config_file(mut self, path: std::path::PathBuf) -> Self {
        self.config_file = Some(path);
        self
    }

    /// Loads the credentials `config` names for the PRM and the CRM: a system whose credential
    /// changed uses the new one from its next request, and resumes if it was paused on a refused
    /// one. Returns the systems whose credential changed. Only credentials are taken: URLs,
    /// webhook secrets and other settings need a restart.
    pub async fn reload_credentials(&self, config: &Config) -> anyhow::Result<Vec<SystemKind>> {
        self.tenant.reload_credentials(config).await
    }

    /// [`Daemon::reload_credentials`] from the config file, if the daemon has one; a file that
    /// does not load is logged and the credentials in use stay.
    async fn reload_credentials_from_file(&self) {
        let Some(path) = &self.config_file else {
            return;
        };
        let loaded = crate::config::load(path, &crate::config::Environment::from_process())
            .map_err(|e| anyhow::anyhow!("{e}"));
        match loaded {
            Ok(config) => match self.reload_credentials(&config).await {
                Ok(changed) if changed.is_empty() => {
                    tracing::info!("credentials unchanged");
                }
                Ok(changed) => tracing::info!(systems = ?changed, "new credentials loaded"),
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "credentials not reloaded: the ones in use stay"
                    );
                }
            },
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "config not reloaded: the credentials in use stay"
                );
            }
        }
    }

    /// Counts and last error of mapping reloads, and the versions in force.
    pub fn reload_status(&self) -> ReloadStatus {
        self.tenant.reload_status()
    }

    /// Runs every stage in turn (the same stage code the pipeline's tasks run) until none has
    /// work: pollers caught up, inbox empty, no write due (the demo and tests use this).
    pub async fn run_until_idle(&self) -> anyhow::Result<TickReport> {
        Ok(self.engine.run_until_idle(50).await?)
    }

    /// `/readyz` answers 503 from now on: the shutdown has begun (called when the signal arrives,
    /// before the in-flight pass finishes).
    pub fn begin_drain(&self) {
        self.readiness.drain();
    }

    /// Stops the listeners and waits for in-flight requests, at most `shutdown_timeout`.
    pub async fn shutdown(self) {
        let limit = self.tenant.config.daemon.shutdown_timeout;
        self.shutdown_within(limit).await;
    }

    /// [`Daemon::shutdown`] waiting at most `limit` (what is left of the shutdown budget).
    pub async fn shutdown_within(self, limit: Duration) {
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: finishing in-flight work"),
        ]);
        self.begin_drain();
        self.ready.store(false, Ordering::Relaxed);
        self.stop_http.cancel();
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed with requests still open");
        }
        tracing::info!("prmsync stopped");
    }
}

/// Builds the Salesforce connector; rotated refresh tokens go to the state file, sealed.
fn salesforce_connector(
    config: &Config,
    sf: &SalesforceConfig,
    http: reqwest::Client,
    tokens: Option<Arc<dyn TokenStore>>,
) -> anyhow::Result<Connector> {
    let grant = match &sf.auth {
        SalesforceAuthConfig::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } => {
            require(refresh_token.expose_secret(), "salesforce.refresh_token")?;
            if tokens.as_ref().is_some_and(|t| t.owns_tokens()) && config.daemon.state_key.is_none()
            {
                bail!(
                    "daemon.state_key is required with salesforce auth = \"refresh_token\": rotated refresh tokens are saved encrypted with it (for example state_key = {{ credential = \"prmsync_state_key\" }})"
                );
            }
            salesforce::Grant::RefreshToken {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token: refresh_token.clone(),
            }
        }
        SalesforceAuthConfig::JwtBearer {
            client_id,
            username,
            private_key,
        } => {
            require(private_key.expose_secret(), "salesforce.private_key")?;
            let key = salesforce::auth::parse_private_key(private_key.expose_secret())
                .context("salesforce.private_key")?;
            salesforce::Grant::JwtBearer {
                client_id: client_id.clone(),
                username: username.clone(),
                audience: salesforce::auth::jwt_audience(&sf.login_url, sf.audience.as_deref()),
                key: Arc::new(key),
            }
        }
    };
    Ok(Connector::Salesforce(Salesforce::new(
        http,
        &sf.login_url,
        grant,
        tokens,
    )))
}

fn require(secret: &str, key: &str) -> anyhow::Result<()> {
    if secret.is_empty() {
        bail!(
            "{key}: the secret is empty or its systemd credential is not available (CREDENTIALS_DIRECTORY)"
        );
    }
    Ok(())
}

/// `prmsync run`: start, serve until a signal, drain within the deadline.
pub async fn run(
    config: Config,
    config_file: &std::path::Path,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    failpoints: FailPoints,
) -> anyhow::Result<()> {
    // One budget for the whole shutdown (the pass in flight, then open requests), so the worst
    // case is `shutdown_timeout`, inside the unit's TimeoutStopSec.
    let deadline = config.daemon.shutdown_timeout;
    let daemon = Daemon::start_with(config, crate::engine::system_clock(), failpoints)
        .await?
        .with_config_file(config_file.to_owned());
    let drain_started = std::sync::OnceLock::new();
    {
        let sync = daemon.run(shutdown.clone(), reload);
        tokio::pin!(sync);
        tokio::select! {
            () = &mut sync => {}
            () = async {
                shutdown.cancelled().await;
                let _ = drain_started.set(tokio::time::Instant::now());
                daemon.begin_drain();
                tokio::time::sleep(deadline).await
            } => {
                // Every step commits atomically, so an abandoned step loses nothing: its changes
                // stay in the inbox or outbox for the next start.
                tracing::warn!(?deadline, "the sync stages did not stop before the shutdown deadline; stopping anyway");
            }
        }
    }
    let left = drain_started
        .get()
        .map_or(deadline, |t| deadline.saturating_sub(t.elapsed()));
    daemon.shutdown_within(left).await;
    Ok(())
}
