//! The engine: what the sync stages share (store, connectors, mappings, rules, holds, budgets,
//! the signals that wake a stage when another left it work) and `tick`, which runs every stage
//! once in order. The stages live in their own files; `pipeline` runs each as its own task.

mod associations;
pub mod credits;
mod decider;
pub mod deletes;
pub mod dryrun;
pub mod erase;
pub mod erase_requests;
mod holds;
mod lookup_wait;
mod matching;
pub mod pipeline;
pub mod plan;
mod planner;
mod poller;
pub mod progress;
pub mod registrations;
pub mod rejects;
pub mod resync;
mod retry;
pub mod schema;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::connector::{Connector, ConnectorError};
use crate::failpoint::FailPoints;
use crate::mapping::Mapping;
use crate::model::{ObjectRef, SystemKind};
use crate::rules::Rules;
use crate::store::{Store, StoreError};
pub use holds::Hold;
use holds::Holds;
pub use poller::PollReport;
pub use progress::Progress;
pub use retry::RetryPolicy;

/// A record whose writes return a side to the same state this many times within
/// [`FLIP_WINDOW_MS`] is quarantined instead of written again.
pub const FLIP_LIMIT: usize = 2;
/// The window for [`FLIP_LIMIT`].
pub const FLIP_WINDOW_MS: i64 = 10 * 60 * 1000;

/// A change to a record modified longer ago than this is backfill: its writes drain after live
/// changes and new registrations.
pub const LIVE_WINDOW_MS: i64 = 60 * 60 * 1000;

/// Why a stage stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{system}: {error}")]
    Connector {
        system: SystemKind,
        error: ConnectorError,
    },
    #[error(transparent)]
    Resync(#[from] resync::ResyncError),
}

impl EngineError {
    /// The `kind` label of `prmsync_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Store(_) => "store",
            EngineError::Connector { error, .. } => crate::telemetry::meters::error_kind(error),
            EngineError::Resync(_) => "resync",
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_retryable(),
            EngineError::Connector { error, .. } => error.is_retryable(),
            EngineError::Resync(_) => false,
        }
    }
}

/// What one tick (or one stage cycle) did, for logs, the demo summary and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub staged: usize,
    pub processed: usize,
    pub queued: usize,
    pub written: usize,
    pub created: usize,
    pub retried: usize,
    pub dead_lettered: usize,
    pub poll_errors: usize,
}

impl TickReport {
    /// Whether the tick found nothing to do.
    pub fn is_idle(&self) -> bool {
        self.staged == 0
            && self.processed == 0
            && self.written == 0
            && self.retried == 0
            && self.dead_lettered == 0
    }

    /// Adds another report's counts to this one.
    pub fn add(&mut self, r: &TickReport) {
        self.staged += r.staged;
        self.processed += r.processed;
        self.queued += r.queued;
        self.written += r.written;
        self.created += r.created;
        self.retried += r.retried;
        self.dead_lettered += r.dead_lettered;
        self.poll_errors += r.poll_errors;
    }
}

/// Tunables, from the config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub batch_size: usize,
    pub retry: RetryPolicy,
    /// How far back each poll re-reads, for systems whose indexes lag.
    pub overlap: Duration,
    /// How often each poller reads its object when nothing wakes it.
    pub poll_interval: Duration,
    /// Pages one poller cycle reads before it yields (the cursor moves with every page, so the
    /// next cycle continues where this one stopped).
    pub max_pages_per_cycle: usize,
    /// How long a writer woken by new rows waits for more before it sends a part-full batch.
    pub batch_window: Duration,
    /// How often the live schema of the CRM objects the flows write is read again
    /// (`daemon.schema_check_secs`; also at start and on reload).
    pub schema_check_interval: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            batch_size: 100,
            retry: RetryPolicy::default(),
            overlap: Duration::from_secs(2),
            poll_interval: Duration::from_secs(30),
            max_pages_per_cycle: 500,
            batch_window: Duration::from_millis(20),
            schema_check_interval: Duration::from_secs(crate::config::defaults::SCHEMA_CHECK_SECS),
        }
    }
}

/// A clock in epoch milliseconds, injected so tests can fix time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_millisecond())
}

/// How the stages tell each other that work is waiting. A `Notify` keeps one permit, so a signal
/// sent while the stage is busy is not lost: the stage runs again when it is done.
#[derive(Debug, Default)]
pub struct Signals {
    /// The inbox gained rows (a poller page, a webhook).
    pub planner: Arc<Notify>,
    /// Registrations were observed (or a review changed one).
    pub decider: Arc<Notify>,
    /// The live schema should be read again (start, reload).
    pub schema: Arc<Notify>,
    /// Writes were queued for a system, or a batch finished.
    writers: Mutex<BTreeMap<SystemKind, Arc<Notify>>>,
    /// A thin webhook (a hint without the record) asks for this object to be read.
    pollers: Mutex<BTreeMap<ObjectRef, Arc<Notify>>>,
}

impl Signals {
    /// The signal of `system`'s writer.
    pub fn writer(&self, system: SystemKind) -> Arc<Notify> {
        let mut w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        w.entry(system).or_default().clone()
    }

    /// The signal of `object`'s poller.
    pub fn poller(&self, object: &ObjectRef) -> Arc<Notify> {
        let mut p = self.pollers.lock().unwrap_or_else(|p| p.into_inner());
        p.entry(object.clone()).or_default().clone()
    }
}

/// The sync engine for one PRM and one CRM.
pub struct Engine {
    store: Store,
    prm: Connector,
    crm: Connector,
    mappings: RwLock<Vec<Arc<Mapping>>>,
    /// Rules of engagement for deal registrations (`None`: registrations are not decided).
    rules: RwLock<Option<Arc<Rules>>>,
    settings: EngineSettings,
    clock: Clock,
    failpoints: FailPoints,
    holds: Holds,
    signals: Signals,
    /// The planner and the rules decider both plan outbox writes from link state: one at a time.
    planning: tokio::sync::Mutex<()>,
    /// Outbox rows (and records) in a batch on its way, so no two batches send the same row.
    claims: Arc<writer::Claims>,
    progress: Arc<Progress>,
    /// What an erasure does in the systems (`[erasure]`).
    erasure: RwLock<crate::config::ErasureConfig>,
    /// What the writer leaves out of CRM writes, from the last live-schema check.
    guards: schema::Guards,
    /// Whether a schema check has ended since start (the CRM's writer waits for the first).
    schema_checked: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("prm", &self.prm.kind())
            .field("crm", &self.crm.kind())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(
        store: Store,
        prm: Connector,
        crm: Connector,
        mappings: Vec<Arc<Mapping>>,
        settings: EngineSettings,
        clock: Clock,
    ) -> Self {
        Engine {
            store,
            prm,
            crm,
            mappings: RwLock::new(mappings),
            rules: RwLock::default(),
            settings,
            clock,
            failpoints: FailPoints::none(),
            holds: Holds::default(),
            signals: Signals::default(),
            planning: tokio::sync::Mutex::new(()),
            claims: Arc::default(),
            progress: Arc::default(),
            erasure: RwLock::default(),
            guards: schema::Guards::default(),
            schema_checked: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Sets the erasure policy (`[erasure]`).
    pub fn with_erasure(self, policy: crate::config::ErasureConfig) -> Self {
        *self.erasure.write().unwrap_or_else(|p| p.into_inner()) = policy;
        self
    }

    /// The erasure policy in force.
    pub fn erasure_policy(&self) -> crate::config::ErasureConfig {
        self.erasure
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces a credential's API budget (a vendor tier with other limits): its connector's
    /// pacer, which every request to the system goes through (`connector::send`).
    pub fn with_limits(mut self, system: SystemKind, limits: crate::connector::Limits) -> Self {
        if self.prm.kind() == system {
            self.prm = self.prm.with_limits(limits);
        } else if self.crm.kind() == system {
            self.crm = self.crm.with_limits(limits);
        }
        self
    }

    /// Arms fail points (crash tests; see [`crate::failpoint`]).
    pub fn with_failpoints(mut self, failpoints: FailPoints) -> Self {
        self.failpoints = failpoints;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The engine's clock (epoch milliseconds).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The signals that wake the stages (webhook handlers wake the planner).
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// When each stage task last finished a cycle, and whether it is running.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The mappings in force. A reload swaps them between stage cycles, never inside one.
    pub fn mappings(&self) -> Vec<Arc<Mapping>> {
        self.mappings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the mapping set; each stage picks it up at the start of its next cycle.
    pub fn set_mappings(&self, mappings: Vec<Arc<Mapping>>) {
        *self.mappings.write().unwrap_or_else(|p| p.into_inner()) = mappings;
        // Other flows may write other fields: the schema is checked against the new set.
        self.signals.schema.notify_one();
    }

    /// The rules of engagement in force.
    pub fn rules(&self) -> Option<Arc<Rules>> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the rules of engagement (between cycles, like mappings).
    pub fn set_rules(&self, rules: Option<Arc<Rules>>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// The connector of `system`, if this engine connects it.
    pub fn connector(&self, system: SystemKind) -> Option<&Connector> {
        [&self.prm, &self.crm]
            .into_iter()
            .find(|c| c.kind() == system)
    }

    /// The systems this engine connects, CRM first.
    pub fn systems(&self) -> [SystemKind; 2] {
        [self.crm.kind(), self.prm.kind()]
    }

    /// The hold on `system` now, if it must be left alone (rate-limited or needing re-auth).
    pub fn hold(&self, system: SystemKind) -> Option<Hold> {
        self.holds.get(system, (self.clock)())
    }

    /// A new credential for `system` was loaded (or a probe shows the old one works again):
    /// lift its re-authorisation hold and make its queued writes due at once. A rate-limit hold
    /// stays until its wait ends (the connector's pacer keeps it too): a new credential does not
    /// end the wait the vendor asked for.
    pub async fn credential_loaded(&self, system: SystemKind) -> Result<(), EngineError> {
        if self.holds.release_reauth(system).is_some() {
            tracing::info!(%system, "credential works; connection resumed");
        }
        self.store.clear_connection_hold(system).await?;
        self.store.resume_outbox(system, (self.clock)()).await?;
        self.signals.writer(system).notify_one();
        Ok(())
    }

    /// This process starts running the tenant (at start-up, or on taking over a fleet lease): a
    /// pause recorded earlier (by this process or another) ends, and the credentials configured
    /// now are tried again; the first refusal pauses the connection again.
    pub async fn start_afresh(&self) -> Result<(), EngineError> {
        for system in self.systems() {
            self.holds.release_reauth(system);
            self.store.clear_connection_hold(system).await?;
        }
        Ok(())
    }

    /// A reload built `fresh` from the config: when it names another credential than the one in
    /// use for its system, the running connector takes it over and the connection resumes
    /// ([`Engine::credential_loaded`]). Returns whether the credential changed.
    pub async fn load_credential(&self, fresh: &Connector) -> Result<bool, EngineError> {
        let system = fresh.kind();
        let Some(conn) = self.connector(system) else {
            return Ok(false);
        };
        if !conn.adopt_credentials(fresh).await {
            return Ok(false);
        }
        tracing::info!(%system, "a new credential was loaded");
        self.credential_loaded(system).await?;
        Ok(true)
    }

    /// Puts `system` on hold when `error` calls for it; a dead credential is recorded for status.
    async fn note_error(
        &self,
        system: SystemKind,
        error: &ConnectorError,
    ) -> Result<(), EngineError> {
        let now = (self.clock)();
        let before = self.holds.get(system, now);
        match self.holds.note(system, error, now) {
            Some(Hold::NeedsReauth { detail, .. })
                if !matches!(before, Some(Hold::NeedsReauth { .. })) =>
            {
                tracing::error!(%system, error = %detail, "credential refused: this connection is paused until it is re-authorised; its changes keep queueing");
                self.store
                    .set_connection_hold(system, "needs_reauth", detail, now)
                    .await?;
            }
            Some(Hold::RateLimited { until_ms }) => {
                crate::telemetry::meters::meters().rate_limit_wait(system, "retry_after");
                tracing::warn!(%system, wait_ms = until_ms - now, "rate limited; no request to this system before the wait ends");
            }
            _ => {}
        }
        Ok(())
    }

    /// If `system` is paused on a dead credential and a probe is due, one cheap call: if it works
    /// again (the credential was refreshed or re-authorised), the connection resumes.
    async fn probe_hold(&self, system: SystemKind) -> Result<(), EngineError> {
        let Some(conn) = self.connector(system) else {
            return Ok(());
        };
        if !self.holds.probe_due(system, (self.clock)()) {
            return Ok(());
        }
        match conn.health().await {
            Ok(()) => self.credential_loaded(system).await?,
            Err(e) => tracing::debug!(%system, error = %e, "still needs re-authorisation"),
        }
        Ok(())
    }

    /// Runs every stage once, in order: probe held connections, poll every object to its end,
    /// plan the whole inbox, decide registrations, and drain due outbox rows. The pipeline runs
    /// the same stage code as separate tasks; `tick` is the deterministic form for tests and
    /// [`Engine::run_until_idle`].
    pub async fn tick(&self) -> Result<TickReport, EngineError> {
        let mut report = TickReport::default();
        for system in self.systems() {
            self.probe_hold(system).await?;
        }
        for (object, _) in poll_targets(&self.mappings()) {
            if self.hold(object.system).is_some() {
                continue;
            }
            match self.poll_to_end(&object).await {
                Ok(staged) => report.staged += staged,
                Err(EngineError::Connector { system, error }) => {
                    // One system failing must not stop the other side from syncing.
                    tracing::warn!(%system, object = %object, error = %error, "poll failed; will retry next tick");
                    self.note_error(system, &error).await?;
                    report.poll_errors += 1;
                }
                Err(e) => return Err(e),
            }
        }
        report.add(&self.plan_inbox().await?);
        self.decide().await?;
        for system in self.systems() {
            report.add(&self.drain(system).await?);
        }
        Ok(report)
    }

    /// When the next pass has work: the earliest due outbox row, but not before a system's
    /// rate-limit wait ends.
    pub async fn next_due(&self) -> Result<Option<i64>, EngineError> {
        Ok(
            match (self.store.next_outbox_due().await?, self.holds.next_end()) {
                (Some(due), Some(end)) => Some(due.max(end)),
                (due, end) => due.or(end),
            },
        )
    }

    /// Runs ticks until one finds nothing to do and no write is due (bounded by `max_ticks`):
    /// every poller caught up, the inbox empty, the outbox drained.
    pub async fn run_until_idle(&self, max_ticks: usize) -> Result<TickReport, EngineError> {
        let mut total = TickReport::default();
        for _ in 0..max_ticks {
            let r = self.tick().await?;
            total.add(&r);
            let waiting = self.next_due().await?;
            if r.is_idle() && r.poll_errors == 0 && waiting.is_none() {
                break;
            }
            if let Some(due) = waiting {
                let wait = (due - (self.clock)()).clamp(0, 5_000);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
        Ok(total)
    }
}

/// Which objects to poll, with the fields each needs: every flow's source, and its target when
/// fields flow back or its system reports deletes by polling (Salesforce, HubSpot: a target
/// nothing flows back from is polled for deletes and merges only, see [`deletes_only`]).
pub fn poll_targets(mappings: &[Arc<Mapping>]) -> Vec<(ObjectRef, Vec<String>)> {
    let mut out: BTreeMap<ObjectRef, BTreeSet<String>> = BTreeMap::new();
    for m in mappings {
        out.entry(m.source.clone()).or_default();
        if matches!(
            m.target.system,
            SystemKind::Salesforce | SystemKind::HubSpot
        ) {
            out.entry(m.target.clone()).or_default();
        }
        if m.fields.iter().any(|f| f.applies_reverse()) {
            out.entry(m.target.clone())
                .or_default()
                .extend(m.target_fields());
        }
    }
    out.into_iter()
        .map(|(o, f)| (o, f.into_iter().collect()))
        .collect()
}

/// Whether `object` is polled only for its deletes: no flow reads it as a source and none has
/// fields flowing back from it.
pub fn deletes_only(mappings: &[Arc<Mapping>], object: &ObjectRef) -> bool {
    !mappings.iter().any(|m| {
        m.source == *object || (m.target == *object && m.fields.iter().any(|f| f.applies_reverse()))
    })
}

/// The external-id field every record of `object` that prmsync manages has, when `object` is
/// polled only as the target of flows that all write the same one (reverse flows ignore records
/// without it), so a poll can ask for those records only. `None` when it is some flow's source.
pub fn managed_by(mappings: &[Arc<Mapping>], object: &ObjectRef) -> Option<String> {
    if mappings.iter().any(|m| m.source == *object) {
        return None;
    }
    let mut ids = mappings
        .iter()
        .filter(|m| m.target == *object)
        .map(|m| m.external_id.as_str());
    let first = ids.next()?;
    (!first.is_empty() && ids.all(|id| id == first)).then(|| first.to_owned())
}
