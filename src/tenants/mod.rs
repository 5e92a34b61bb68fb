//! `prmsync run` with `daemon.tenants_dir`: every tenant of the folder in one process, each with
//! its own state file, engine pipeline, connectors (pacers, budgets, holds) and webhook secrets
//! (`crate::assembly`); one webhook listener routing `/webhooks/{tenant}/...` (`routes`) and one
//! admin listener whose metrics carry a `tenant` label (`metrics`). A tenant that does not load is
//! reported and skipped while the others run; a reload picks up added, removed and changed tenants.

pub mod lease;
pub mod metrics;
pub mod routes;
pub mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::ReloadStatus;
use crate::assembly::Tenant;
use crate::config::{Environment, FleetConfig, TENANT_FILE, load_tenant, tenant_names};
use crate::engine::pipeline::Pipeline;
use crate::engine::{Clock, Engine};
use crate::failpoint::FailPoints;
use crate::notify::{monotonic, notify};
use crate::store::Store;

/// What the listeners see of each tenant: its webhook routes and state, or why it is not running.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    inner: Arc<RwLock<BTreeMap<String, Entry>>>,
}

#[derive(Clone)]
enum Entry {
    Running {
        webhooks: Router,
        store: Store,
        reloads: Arc<Mutex<ReloadStatus>>,
        /// Its pipeline runs in this process (fleet mode: this daemon holds its lease).
        here: Arc<AtomicBool>,
    },
    Skipped(String),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Running { .. } => f.write_str("Running"),
            Entry::Skipped(why) => f.debug_tuple("Skipped").field(why).finish(),
        }
    }
}

/// A running tenant's state file and reload counts (for `/metrics`), or why it is not running.
pub type EntryView = Result<(Store, Arc<Mutex<ReloadStatus>>), String>;

impl Directory {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The running tenant's webhook routes.
    pub fn webhooks(&self, tenant: &str) -> Option<Router> {
        match self.read().get(tenant) {
            Some(Entry::Running { webhooks, .. }) => Some(webhooks.clone()),
            _ => None,
        }
    }

    /// Whether the tenant's pipeline runs in this process (always, outside fleet mode; in fleet
    /// mode while this daemon holds its lease): only those are in this daemon's `/metrics`.
    pub fn runs_here(&self, tenant: &str) -> bool {
        matches!(self.read().get(tenant), Some(Entry::Running { here, .. }) if here.load(Ordering::Relaxed))
    }

    /// Why a known tenant is not running.
    pub fn skipped(&self, tenant: &str) -> Option<String> {
        match self.read().get(tenant) {
            Some(Entry::Skipped(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// Every tenant, sorted by name.
    pub fn entries(&self) -> Vec<(String, EntryView)> {
        self.read()
            .iter()
            .map(|(name, e)| {
                let view = match e {
                    Entry::Running { store, reloads, .. } => Ok((store.clone(), reloads.clone())),
                    Entry::Skipped(why) => Err(why.clone()),
                };
                (name.clone(), view)
            })
            .collect()
    }
}

/// One running tenant of the fleet.
#[derive(Debug)]
struct Running {
    tenant: Tenant,
    /// Its `tenant.toml` as loaded: a reload that finds it changed restarts the tenant.
    file_text: String,
    /// Set once the fleet runs (`Fleet::run`).
    pipeline: Option<Pipeline>,
    /// Stops its retention task.
    stop: CancellationToken,
    /// Fleet mode: its store's fence and this daemon's lease on it.
    fence: Option<Arc<crate::store::pg::fleet::Fence>>,
    held: lease::Held,
    /// Its pipeline runs here (shared with its directory entry).
    here: Arc<AtomicBool>,
    /// Fleet mode: its pipeline is stopping in the background (a lost or released lease); the
    /// heartbeat neither renews nor claims the tenant until it has stopped.
    stopping: Option<tokio::task::JoinHandle<()>>,
}

/// A started multi-tenant daemon: listeners bound, every loadable tenant assembled.
pub struct Fleet {
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    config: FleetConfig,
    env: Environment,
    clock: Clock,
    failpoints: FailPoints,
    directory: Directory,
    tenants: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Whether `run` has started the pipelines (tenants added by a reload start at once).
    running: AtomicBool,
    readiness: Arc<crate::admin::Readiness>,
    ready: Arc<AtomicBool>,
    stop_http: CancellationToken,
    tasks: TaskTracker,
    /// Fleet mode (a PostgreSQL state): the leases this daemon shares with the others.
    keeper: Option<lease::Keeper>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("tenants", &self.directory)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Loads and assembles every tenant of `config.tenants_dir` (a tenant that does not load is
    /// logged and skipped) and binds the listeners. Nothing is polled yet.
    pub async fn start(
        config: FleetConfig,
        env: Environment,
        clock: Clock,
        failpoints: FailPoints,
    ) -> anyhow::Result<Fleet> {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let admin_listener = crate::admin::bind(&config.admin).await?;
        let admin_addr = admin_listener.local_addr()?;
        let ready = Arc::new(AtomicBool::new(false));
        let readiness = Arc::new(crate::admin::Readiness::new(
            ready.clone(),
            &config.daemon.state_path,
            config.admin.min_free_bytes,
        ));
        let directory = Directory::default();
        let keeper = match &config.state.postgres {
            Some(target) => Some(
                lease::Keeper::open(target, config.state.lease).with_context(|| {
                    format!("opening the fleet's PostgreSQL schema {}", target.schema)
                })?,
            ),
            None => None,
        };
        if let Some(k) = &keeper {
            tracing::info!(daemon = %k.me, lease = ?k.lease, schema = %k.leases.schema(), "fleet mode: tenants run where their lease is held");
        }
        let fleet = Fleet {
            keeper,
            http_addr,
            admin_addr,
            env,
            clock: clock.clone(),
            failpoints,
            directory: directory.clone(),
            tenants: tokio::sync::Mutex::default(),
            running: AtomicBool::new(false),
            readiness: readiness.clone(),
            ready: ready.clone(),
            stop_http: CancellationToken::new(),
            tasks: TaskTracker::new(),
            config,
        };
        let (started, skipped) = fleet.sync_tenants().await?;
        let token = fleet.stop_http.clone();
        let router = routes::router(directory.clone());
        fleet.tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        let token = fleet.stop_http.clone();
        let admin = metrics::admin_router(directory, readiness, clock);
        fleet.tasks.spawn(async move {
            if let Err(e) = axum::serve(admin_listener, admin)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        ready.store(true, Ordering::Relaxed);
        tracing::info!(addr = %http_addr, admin = %admin_addr, tenants = started, skipped, dir = %fleet.config.tenants_dir.display(), "prmsync started");
        Ok(fleet)
    }

    /// Brings the running tenants in line with the folder: starts new ones (and retries skipped
    /// ones), stops removed ones, restarts those whose `tenant.toml` changed, and reloads the
    /// mappings, rules and credentials of the others. Returns (running, skipped).
    async fn sync_tenants(&self) -> anyhow::Result<(usize, usize)> {
        let names = tenant_names(&self.config).with_context(|| {
            format!(
                "reading daemon.tenants_dir {}",
                self.config.tenants_dir.display()
            )
        })?;
        let mut tenants = self.tenants.lock().await;
        let gone: Vec<String> = tenants
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = tenants.remove(&name) {
                self.stop_tenant(&name, r).await;
                tracing::info!(tenant = %name, "tenant removed");
            }
        }
        self.directory
            .write()
            .retain(|name, _| names.contains(name));
        for name in &names {
            let file = self.config.tenant_dir(name).join(TENANT_FILE);
            let file_text = std::fs::read_to_string(&file).unwrap_or_default();
            let loaded = load_tenant(&self.config, name, &self.env);
            if let Some(r) = tenants.get(name) {
                // A running tenant keeps running unless its changed configuration is whole; an
                // unchanged one reloads mappings, rules and credentials in place (a mapping set
                // with errors is refused there and counted in its reload status).
                let checked = match &loaded {
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                    Ok(config) if r.file_text == file_text => {
                        self.reload_in_place(name, r, config).await;
                        continue;
                    }
                    // The files compile and the credentials it names can be read.
                    Ok(config) => Tenant::preflight(config)
                        .and_then(|()| crate::app::connectors_with(config, None).map(|_| ())),
                };
                if let Err(e) = checked {
                    tracing::error!(tenant = %name, error = format!("{e:#}"), "tenant not reloaded: the running one stays");
                    continue;
                }
                if let Some(r) = tenants.remove(name) {
                    self.stop_tenant(name, r).await;
                    tracing::info!(tenant = %name, "tenant.toml changed: restarting the tenant");
                }
            }
            let fence = self.keeper.as_ref().map(|k| k.fence(name));
            let assembled = match loaded {
                Ok(config) if self.keeper.is_some() && schema_clash(&self.config, &names, name) => {
                    drop(config);
                    Err(anyhow::anyhow!(
                        "another tenant's name differs only by '-' and '_': both would use the schema {}",
                        self.config
                            .tenant_schema(name)
                            .map(|t| t.schema)
                            .unwrap_or_default()
                    ))
                }
                Ok(config) => {
                    let state_dir = config.daemon.state_path.parent().map(Path::to_owned);
                    if let Some(d) = state_dir {
                        std::fs::create_dir_all(&d).with_context(|| {
                            format!("creating the tenants' state folder {}", d.display())
                        })?;
                    }
                    Tenant::assemble_fenced(
                        config,
                        self.clock.clone(),
                        self.failpoints.clone(),
                        // Each tenant's own readiness: one tenant's failing state file does not
                        // turn away the others' webhooks.
                        Arc::new(AtomicBool::new(true)),
                        fence.clone(),
                    )
                    .await
                }
                Err(e) => Err(anyhow::anyhow!("{e}")),
            };
            match assembled {
                Ok(tenant) => {
                    let stop = CancellationToken::new();
                    // Fleet mode: retention runs with the pipeline, where the lease is held.
                    if fence.is_none() {
                        self.tasks
                            .spawn(tenant.maintain(self.clock.clone(), stop.clone()));
                    }
                    let webhooks = crate::webhook::router(
                        tenant.webhooks.clone(),
                        self.config.http.max_body_bytes,
                    );
                    let here = Arc::new(AtomicBool::new(fence.is_none()));
                    self.directory.write().insert(
                        name.clone(),
                        Entry::Running {
                            webhooks,
                            store: tenant.engine.store().clone(),
                            reloads: tenant.reloads.clone(),
                            here: here.clone(),
                        },
                    );
                    // Fleet mode: nothing of the tenant runs here until its lease is (the
                    // heartbeat starts it); its webhooks are accepted at once.
                    if let Some(f) = &fence {
                        f.set(0);
                    }
                    let pipeline = (self.running.load(Ordering::Relaxed) && fence.is_none())
                        .then(|| start_pipeline(name, &tenant));
                    tracing::info!(tenant = %name, state = %tenant.config.daemon.state_path.display(), "tenant started");
                    tenants.insert(
                        name.clone(),
                        Running {
                            tenant,
                            file_text,
                            pipeline,
                            stop,
                            fence,
                            held: lease::Held::No,
                            here,
                            stopping: None,
                        },
                    );
                }
                Err(e) => {
                    let why = format!("{e:#}").trim_end().to_owned();
                    tracing::error!(tenant = %name, error = %why, "tenant skipped: it does not load; the others run");
                    self.directory
                        .write()
                        .insert(name.clone(), Entry::Skipped(why));
                }
            }
        }
        let running = tenants.len();
        Ok((running, names.len() - running))
    }

    /// An unchanged `tenant.toml`: mappings, rules and credentials are reloaded in place.
    async fn reload_in_place(&self, name: &str, r: &Running, config: &crate::config::Config) {
        let summary = r.tenant.reload_mappings(config);
        tracing::info!(tenant = %name, %summary, "tenant reloaded");
        match r.tenant.reload_credentials(config).await {
            Ok(changed) if !changed.is_empty() => {
                tracing::info!(tenant = %name, systems = ?changed, "new credentials loaded");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(tenant = %name, error = format!("{e:#}"), "credentials not reloaded: the ones in use stay")
            }
        }
        if let Some(p) = &r.pipeline {
            p.sync_pollers();
        }
    }

    /// Stops a tenant's stages and retention task; its state file is released when it drops,
    /// its lease (fleet mode) is given back.
    async fn stop_tenant(&self, name: &str, r: Running) {
        self.directory.write().remove(name);
        r.stop.cancel();
        if let Some(p) = r.pipeline {
            p.stop().await;
        }
        if let Some(h) = r.stopping {
            let _ = h.await;
        }
        self.release(name, r.fence.as_deref(), r.held).await;
    }

    /// Gives a held lease back (its pipeline has stopped): another daemon may claim it at once.
    async fn release(
        &self,
        name: &str,
        fence: Option<&crate::store::pg::fleet::Fence>,
        held: lease::Held,
    ) {
        if let (Some(k), Some(fence)) = (&self.keeper, fence) {
            release_lease(k, name, fence, held).await;
        }
    }

    /// Fleet mode: one heartbeat. Renews and claims leases, starts the pipelines of tenants
    /// newly held, stops those whose lease was lost (or may have run out while the database did
    /// not answer) and gives back the leases beyond this daemon's fair share.
    async fn heartbeat(&self) {
        let Some(k) = &self.keeper else { return };
        let mut tenants = self.tenants.lock().await;
        for r in tenants.values_mut() {
            if r.stopping
                .as_ref()
                .is_some_and(tokio::task::JoinHandle::is_finished)
            {
                r.stopping = None;
            }
        }
        // A tenant not held here whose pipeline is still stopping is left out (neither renewed
        // nor claimed again) until it has stopped.
        let names: Vec<String> = tenants
            .iter()
            .filter(|(_, r)| in_heartbeat(r))
            .map(|(n, _)| n.clone())
            .collect();
        let started = std::time::Instant::now();
        let beat = match k.beat(names).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "lease heartbeat failed");
                // Whatever this daemon cannot prove it still holds stops now; its commits are
                // refused from here on (the database would refuse them too once taken over).
                for (name, r) in tenants.iter_mut() {
                    if let lease::Held::Yes { until, .. } = r.held
                        && until <= std::time::Instant::now()
                    {
                        tracing::warn!(tenant = %name, "lease ran out without a heartbeat: stopping the tenant here");
                        self.stop_pipeline(r);
                    }
                }
                crate::telemetry::meters::meters().leases_held(&k.me, held_count(&tenants));
                return;
            }
        };
        let view: Vec<(String, lease::Held)> = tenants
            .iter()
            .filter(|(_, r)| in_heartbeat(r))
            .map(|(n, r)| (n.clone(), r.held))
            .collect();
        let until = started + k.lease;
        let mut starting = Vec::new();
        for (name, step) in lease::steps(&view, &beat) {
            let Some(r) = tenants.get_mut(&name) else {
                continue;
            };
            match step {
                lease::Step::Keep => {
                    if let lease::Held::Yes { generation, .. } = r.held {
                        r.held = lease::Held::Yes { generation, until };
                    }
                }
                lease::Step::Start(generation) => {
                    if r.pipeline.is_some() {
                        self.stop_pipeline(r);
                    }
                    if let Some(f) = &r.fence {
                        f.set(generation);
                    }
                    r.held = lease::Held::Yes { generation, until };
                    r.here.store(true, Ordering::Relaxed);
                    tracing::info!(tenant = %name, generation, "lease held: starting the tenant here");
                    starting.push(name);
                }
                lease::Step::Stop => {
                    tracing::warn!(tenant = %name, "lease lost to another daemon: stopping the tenant here");
                    self.stop_pipeline(r);
                }
                lease::Step::Release(generation) => {
                    // In the background: the heartbeat goes on renewing the other leases while
                    // this pipeline finishes its step (a long stop here let them run out).
                    r.stop.cancel();
                    r.held = lease::Held::No;
                    r.here.store(false, Ordering::Relaxed);
                    let pipeline = r.pipeline.take();
                    let fence = r.fence.clone();
                    let keeper = k.clone();
                    let held = lease::Held::Yes { generation, until };
                    r.stopping = Some(self.tasks.spawn(async move {
                        if let Some(p) = pipeline {
                            p.stop().await;
                        }
                        if let Some(f) = fence {
                            release_lease(&keeper, &name, &f, held).await;
                        }
                    }));
                }
            }
        }
        self.take_over(k, &starting, &tenants).await;
        for name in starting {
            if let Some(r) = tenants.get_mut(&name) {
                r.pipeline = Some(start_pipeline(&name, &r.tenant));
                r.stop = CancellationToken::new();
                self.tasks
                    .spawn(r.tenant.maintain(self.clock.clone(), r.stop.clone()));
            }
        }
        crate::telemetry::meters::meters().leases_held(&k.me, held_count(&tenants));
    }

    /// The tenants whose lease this daemon has just taken start as a daemon starting up would:
    /// the pauses the last holder recorded end ([`Tenant::take_over`]). All at once, each on its
    /// own store, within a heartbeat interval: the heartbeat must not wait on them one by one
    /// (its leases would run out meanwhile).
    async fn take_over(
        &self,
        k: &lease::Keeper,
        starting: &[String],
        tenants: &BTreeMap<String, Running>,
    ) {
        let mut set = tokio::task::JoinSet::new();
        for name in starting {
            if let Some(r) = tenants.get(name) {
                let clearing = r.tenant.take_over();
                let name = name.clone();
                set.spawn(async move { (name, clearing.await) });
            }
        }
        let all = async {
            while let Some(joined) = set.join_next().await {
                if let Ok((name, Err(e))) = joined {
                    tracing::warn!(tenant = %name, error = %e, "recorded connection pauses not cleared: status may show one until the next refusal or success");
                }
            }
        };
        if tokio::time::timeout(k.every(), all).await.is_err() {
            tracing::warn!(
                tenants = set.len(),
                "recorded connection pauses not cleared within a heartbeat: the tenants start anyway"
            );
            set.detach_all();
        }
    }

    /// Wakes the planner of the tenant whose state schema is `schema`, if it runs here.
    async fn wake_planner(&self, schema: &str) {
        let tenants = self.tenants.lock().await;
        for (name, r) in tenants.iter() {
            if r.pipeline.is_some()
                && self.config.tenant_schema(name).map(|t| t.schema).as_deref() == Some(schema)
            {
                r.tenant.engine.signals().planner.notify_one();
            }
        }
    }

    /// Stops a tenant's pipeline without waiting (its stages may be blocked on a database that
    /// does not answer) and refuses its commits from now on.
    fn stop_pipeline(&self, r: &mut Running) {
        if let Some(f) = &r.fence {
            f.set(0);
        }
        r.stop.cancel();
        r.held = lease::Held::No;
        r.here.store(false, Ordering::Relaxed);
        if let Some(p) = r.pipeline.take() {
            let ready = r.tenant.webhooks.ready.clone();
            r.stopping = Some(self.tasks.spawn(async move {
                p.stop().await;
                // A stage's refused commit marked the store unhealthy: webhooks are still
                // accepted here for the new holder.
                ready.store(true, Ordering::Relaxed);
            }));
        }
    }

    /// The running tenant's engine (tests, the demo).
    pub async fn engine(&self, tenant: &str) -> Option<Arc<Engine>> {
        self.tenants
            .lock()
            .await
            .get(tenant)
            .map(|r| r.tenant.engine.clone())
    }

    /// Every tenant: `Ok` while it runs, else why it does not.
    pub fn tenants(&self) -> Vec<(String, Result<(), String>)> {
        self.directory
            .entries()
            .into_iter()
            .map(|(n, e)| (n, e.map(|_| ())))
            .collect()
    }

    fn summary(&self) -> String {
        let entries = self.directory.entries();
        let running = entries.iter().filter(|(_, e)| e.is_ok()).count();
        format!(
            "running {running} tenant(s); {} skipped",
            entries.len() - running
        )
    }

    /// Runs every tenant's pipeline until `shutdown`; `reload` re-reads the tenants folder.
    pub async fn run(&self, shutdown: CancellationToken, reload: Arc<Notify>) {
        {
            let mut tenants = self.tenants.lock().await;
            if self.keeper.is_none() {
                for (name, r) in tenants.iter_mut() {
                    r.pipeline = Some(start_pipeline(name, &r.tenant));
                }
            }
            self.running.store(true, Ordering::Relaxed);
        }
        let mut beats = tokio::time::interval(
            self.keeper
                .as_ref()
                .map_or(Duration::from_secs(3600), lease::Keeper::every),
        );
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Webhook changes another daemon staged for a tenant running here wake its planner.
        let mut inbox = match &self.config.state.postgres {
            Some(target) if self.keeper.is_some() => crate::store::pg::fleet::listen(target),
            _ => tokio::sync::mpsc::channel(1).1,
        };
        let summary = self.summary();
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&summary),
        ]);
        let stop_watch = CancellationToken::new();
        let watch =
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(watchdog(stop_watch.clone())));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = beats.tick(), if self.keeper.is_some() => self.heartbeat().await,
                Some(schema) = inbox.recv() => self.wake_planner(&schema).await,
                () = reload.notified() => {
                    notify(&[sd_notify::NotifyState::Reloading, monotonic()]);
                    if let Err(e) = self.sync_tenants().await {
                        tracing::error!(error = format!("{e:#}"), "tenants not reloaded: the running ones stay");
                    }
                    let summary = self.summary();
                    notify(&[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status(&summary),
                    ]);
                }
            }
        }
        stop_watch.cancel();
        let _ = watch.await;
        let mut tenants = self.tenants.lock().await;
        let stopping: Vec<Pipeline> = tenants
            .values_mut()
            .filter_map(|r| r.pipeline.take())
            .collect();
        futures_join_all(stopping).await;
        // A clean shutdown gives every lease back: the others take the tenants over at their
        // next heartbeat instead of after the expiry.
        for (name, r) in tenants.iter_mut() {
            let held = std::mem::replace(&mut r.held, lease::Held::No);
            self.release(name, r.fence.as_deref(), held).await;
        }
        if let Some(k) = &self.keeper {
            if let Err(e) = k.leases.leave(k.me.clone()).await {
                tracing::warn!(error = %e, "fleet heartbeat row not removed: it ages out");
            }
            crate::telemetry::meters::meters().leases_held(&k.me, 0);
        }
    }

    /// `/readyz` answers 503 from now on (the shutdown has begun).
    pub fn begin_drain(&self) {
        self.readiness.drain();
    }

    /// Stops the listeners and the tenants' retention tasks, waiting at most `limit`.
    pub async fn shutdown_within(self, limit: Duration) {
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: finishing in-flight work"),
        ]);
        self.begin_drain();
        self.ready.store(false, Ordering::Relaxed);
        for r in self.tenants.lock().await.values() {
            r.stop.cancel();
        }
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

/// Gives `tenant`'s lease back if `held` (its pipeline has stopped): its commits are refused from
/// now on and another daemon may claim it at once.
async fn release_lease(
    k: &lease::Keeper,
    tenant: &str,
    fence: &crate::store::pg::fleet::Fence,
    held: lease::Held,
) {
    let lease::Held::Yes { generation, .. } = held else {
        return;
    };
    fence.set(0);
    match k
        .leases
        .release(k.me.clone(), tenant.to_owned(), generation)
        .await
    {
        Ok(true) => tracing::info!(%tenant, generation, "lease released"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "lease not released: it expires by itself")
        }
    }
}

/// Whether the heartbeat renews or claims `r`'s lease: not while its pipeline is stopping here
/// after a lost or given-back lease.
fn in_heartbeat(r: &Running) -> bool {
    r.stopping.is_none() || matches!(r.held, lease::Held::Yes { .. })
}

/// How many tenants this daemon runs under a lease.
fn held_count(tenants: &BTreeMap<String, Running>) -> usize {
    tenants
        .values()
        .filter(|r| matches!(r.held, lease::Held::Yes { .. }))
        .count()
}

/// Whether another tenant of `names` would get `name`'s PostgreSQL schema.
fn schema_clash(fleet: &FleetConfig, names: &[String], name: &str) -> bool {
    let mine = fleet.tenant_schema(name).map(|t| t.schema);
    names
        .iter()
        .any(|n| n != name && fleet.tenant_schema(n).map(|t| t.schema) == mine)
}

/// Starts a tenant's stage tasks, each logging under a `tenant` span.
fn start_pipeline(name: &str, tenant: &Tenant) -> Pipeline {
    tracing::info_span!("tenant", tenant = %name)
        .in_scope(|| Pipeline::start(tenant.engine.clone(), tenant.webhooks.ready.clone()))
}

/// Stops every pipeline at once (each finishes its current step).
async fn futures_join_all(pipelines: Vec<Pipeline>) {
    let tasks = TaskTracker::new();
    for p in pipelines {
        tasks.spawn(p.stop());
    }
    tasks.close();
    tasks.wait().await;
}

/// The systemd watchdog of a multi-tenant daemon pings while the process runs: a stalled stage
/// of one tenant must not restart every tenant, so stalls show in that tenant's status instead.
async fn watchdog(stop: CancellationToken) {
    let Some(every) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticks = tokio::time::interval((every / 2).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
        }
    }
}

/// The secrets of every tenant that loads (and the fleet's state key), for the log redactor.
pub fn secrets(config: &FleetConfig, env: &Environment) -> Vec<String> {
    let mut out: Vec<String> = config
        .daemon
        .state_key
        .iter()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned())
        .collect();
    for name in tenant_names(config).unwrap_or_default() {
        if let Ok(c) = load_tenant(config, &name, env) {
            out.extend(crate::telemetry::secrets(&c));
        }
    }
    out
}

/// `prmsync run` with `daemon.tenants_dir`: start, serve until a signal, drain within the
/// deadline.
pub async fn run(
    config: FleetConfig,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    failpoints: FailPoints,
) -> anyhow::Result<()> {
    let deadline = config.daemon.shutdown_timeout;
    let fleet = Fleet::start(
        config,
        Environment::from_process(),
        crate::engine::system_clock(),
        failpoints,
    )
    .await?;
    let drain_started = std::sync::OnceLock::new();
    {
        let sync = fleet.run(shutdown.clone(), reload);
        tokio::pin!(sync);
        tokio::select! {
            () = &mut sync => {}
            () = async {
                shutdown.cancelled().await;
                let _ = drain_started.set(tokio::time::Instant::now());
                fleet.begin_drain();
                tokio::time::sleep(deadline).await
            } => {
                tracing::warn!(?deadline, "the sync stages did not stop before the shutdown deadline; stopping anyway");
            }
        }
    }
    let left = drain_started
        .get()
        .map_or(deadline, |t| deadline.saturating_sub(t.elapsed()));
    fleet.shutdown_within(left).await;
    Ok(())
}
