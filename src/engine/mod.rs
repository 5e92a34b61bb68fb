//! The engine: pollers stage changes, the planner decides, outbox writers deliver. One `tick` runs
//! each step once; the daemon loop in `app` calls it on a timer and when webhooks arrive.

pub mod budget;
pub mod dryrun;
mod holds;
mod matching;
pub mod plan;
pub mod registrations;
pub mod rejects;
mod retry;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::connector::{Connector, ConnectorError, WriteRequest};
use crate::failpoint::FailPoints;
use crate::mapping::{Lookups, Mapping};
use crate::model::{Change, ChangeKind, Cursor, Direction, ObjectRef, SystemKind};
use crate::rules::Rules;
use crate::store::{InboxItem, PlanCommit, Store, StoreError, WriteOutcome};
pub use holds::Hold;
use holds::Holds;
pub use retry::RetryPolicy;

/// A record whose writes return a side to the same state this many times within
/// [`FLIP_WINDOW_MS`] is quarantined instead of written again.
pub const FLIP_LIMIT: usize = 2;
/// The window for [`FLIP_LIMIT`].
pub const FLIP_WINDOW_MS: i64 = 10 * 60 * 1000;

/// A change to a record modified longer ago than this is backfill: its writes drain after live
/// changes and new registrations.
pub const LIVE_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Batches one drain sends before the pass returns, so live changes planned meanwhile can
/// overtake a long backfill.
const MAX_BATCHES_PER_DRAIN: usize = 10;

/// Reads beyond this many pages in one poll wait for the next tick.
const MAX_PAGES_PER_POLL: usize = 500;

/// Why a tick stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{system}: {error}")]
    Connector {
        system: SystemKind,
        error: ConnectorError,
    },
}

impl EngineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_retryable(),
            EngineError::Connector { error, .. } => error.is_retryable(),
        }
    }
}

/// What one tick did, for logs, the demo summary and tests.
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
}

/// Tunables, from the config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub batch_size: usize,
    pub retry: RetryPolicy,
    /// How far back each poll re-reads, for systems whose indexes lag.
    pub overlap: Duration,
}

/// A clock in epoch milliseconds, injected so tests can fix time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_millisecond())
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
    budgets: BTreeMap<SystemKind, budget::Budget>,
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
        let budgets = [prm.kind(), crm.kind()]
            .into_iter()
            .map(|k| (k, budget::Budget::new(budget::Limits::documented(k))))
            .collect();
        Engine {
            budgets,
            store,
            prm,
            crm,
            mappings: RwLock::new(mappings),
            rules: RwLock::default(),
            settings,
            clock,
            failpoints: FailPoints::none(),
            holds: Holds::default(),
        }
    }

    /// Replaces a credential's API budget (a vendor tier with other limits).
    pub fn with_limits(mut self, system: SystemKind, limits: budget::Limits) -> Self {
        self.budgets.insert(system, budget::Budget::new(limits));
        self
    }

    /// Waits until the budget of `system`'s credential allows one more request.
    async fn spend(&self, system: SystemKind) {
        if let Some(b) = self.budgets.get(&system) {
            b.acquire().await;
        }
    }

    /// Arms fail points (crash tests; see [`crate::failpoint`]).
    pub fn with_failpoints(mut self, failpoints: FailPoints) -> Self {
        self.failpoints = failpoints;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The mappings in force. A reload swaps them between ticks, never inside one.
    pub fn mappings(&self) -> Vec<Arc<Mapping>> {
        self.mappings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the mapping set (called between ticks by the daemon loop).
    pub fn set_mappings(&self, mappings: Vec<Arc<Mapping>>) {
        *self.mappings.write().unwrap_or_else(|p| p.into_inner()) = mappings;
    }

    /// The rules of engagement in force.
    pub fn rules(&self) -> Option<Arc<Rules>> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the rules of engagement (between ticks, like mappings).
    pub fn set_rules(&self, rules: Option<Arc<Rules>>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    fn connector(&self, system: SystemKind) -> Option<&Connector> {
        [&self.prm, &self.crm]
            .into_iter()
            .find(|c| c.kind() == system)
    }

    /// The hold on `system` now, if it must be left alone (rate-limited or needing re-auth).
    pub fn hold(&self, system: SystemKind) -> Option<Hold> {
        self.holds.get(system, (self.clock)())
    }

    /// A new credential for `system` was loaded (or a probe shows the old one works again):
    /// lift its re-authorisation hold and make its queued writes due at once.
    pub async fn credential_loaded(&self, system: SystemKind) -> Result<(), EngineError> {
        if self.holds.release(system).is_some() {
            tracing::info!(%system, "credential works; connection resumed");
        }
        self.store.clear_connection_hold(system).await?;
        self.store.resume_outbox(system, (self.clock)()).await?;
        Ok(())
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
                tracing::warn!(%system, wait_ms = until_ms - now, "rate limited; no request to this system before the wait ends");
            }
            _ => {}
        }
        Ok(())
    }

    /// For each system paused on a dead credential, one cheap call: if it works again (the
    /// credential was refreshed or re-authorised), the connection resumes.
    async fn probe_holds(&self) -> Result<(), EngineError> {
        for conn in [&self.crm, &self.prm] {
            let system = conn.kind();
            if !self.holds.probe_due(system, (self.clock)()) {
                continue;
            }
            self.spend(system).await;
            match conn.health().await {
                Ok(()) => self.credential_loaded(system).await?,
                Err(e) => tracing::debug!(%system, error = %e, "still needs re-authorisation"),
            }
        }
        Ok(())
    }

    /// Polls every source, plans every staged change, and drains due outbox rows once.
    pub async fn tick(&self) -> Result<TickReport, EngineError> {
        let mappings = self.mappings();
        let mut report = TickReport::default();
        self.probe_holds().await?;
        for (object, fields) in poll_targets(&mappings) {
            if self.hold(object.system).is_some() {
                continue;
            }
            match self.poll(&object, &fields).await {
                Ok(n) => report.staged += n,
                Err(EngineError::Connector { system, error }) => {
                    // One system failing must not stop the other side from syncing.
                    tracing::warn!(%system, object = %object, error = %error, "poll failed; will retry next tick");
                    self.note_error(system, &error).await?;
                    report.poll_errors += 1;
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            let (processed, queued) = match self.process_inbox(&mappings).await {
                Ok(done) => done,
                // Match rules: a failed search leaves the batch in the inbox for the next tick.
                Err(EngineError::Connector { system, error }) => {
                    tracing::warn!(%system, error = %error, "match search failed; batch stays in the inbox");
                    report.poll_errors += 1;
                    break;
                }
                Err(e) => return Err(e),
            };
            report.processed += processed;
            report.queued += queued;
            if processed < self.settings.batch_size {
                break;
            }
        }
        // Rules of engagement: decide changed registration groups, queue their write-backs.
        if let Some(rules) = self.rules() {
            let now = (self.clock)();
            let crm_kind = self.crm.kind();
            let failed = std::sync::Mutex::new(None);
            let crm = registrations::CrmSource {
                connector: &self.crm,
                retry: &self.settings.retry,
                held: self
                    .hold(crm_kind)
                    .map(|h| ConnectorError::Transient(format!("{crm_kind} is on hold: {h:?}"))),
                budget: self.budgets.get(&crm_kind),
                failed: &failed,
            };
            let prm = self.prm.kind();
            registrations::decide(&self.store, &rules, &mappings, prm, Some(crm), now).await?;
            let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = failed {
                self.note_error(crm_kind, &e).await?;
            }
        }
        for system in [self.crm.kind(), self.prm.kind()] {
            self.drain(system, &mut report).await?;
        }
        Ok(report)
    }

    /// Reads changes of one object since its cursor; stages them and moves the cursor together.
    async fn poll(&self, object: &ObjectRef, fields: &[String]) -> Result<usize, EngineError> {
        let Some(conn) = self.connector(object.system) else {
            return Ok(0);
        };
        let cursor = self.store.cursor(object.clone()).await?;
        let overlap = i64::try_from(self.settings.overlap.as_millis()).unwrap_or(0);
        let since = cursor
            .as_ref()
            .map_or(0, |c| (c.modified_ms - overlap).max(0));
        let mut page: Option<String> = None;
        let mut newest = cursor.clone();
        let mut staged = 0;
        for _ in 0..MAX_PAGES_PER_POLL {
            let read = self
                .settings
                .retry
                .run(|| async {
                    self.spend(object.system).await;
                    conn.read_changes(&object.object, since, fields, page.as_deref())
                        .await
                })
                .await
                .map_err(|error| EngineError::Connector {
                    system: object.system,
                    error,
                })?;
            // Items the connector could not read stop only themselves.
            rejects::dead_letter(&self.store, object, read.rejects, (self.clock)()).await?;
            let mut changes = Vec::new();
            for r in read.records {
                // No filtering on the cursor: systems with whole-second stamps (Salesforce) can
                // show a record at the cursor's own second after the cursor was set. Everything in
                // the overlap window is offered again; staging dedupes on the content-addressed
                // event id, so a version already staged is not staged twice.
                let pos = Cursor {
                    modified_ms: r.modified_ms,
                    id: r.id.clone(),
                };
                if newest.as_ref().is_none_or(|n| *n < pos) {
                    newest = Some(pos);
                }
                changes.push(Change::versioned(object.clone(), r));
            }
            page = read.next_page;
            // The cursor moves only with the last page: every earlier page is already staged.
            let advance = match (&page, &newest) {
                (None, Some(n)) if Some(n) != cursor.as_ref() => Some((object.clone(), n.clone())),
                _ => None,
            };
            if !changes.is_empty() || advance.is_some() {
                staged += self
                    .store
                    .stage_changes(changes, advance, (self.clock)())
                    .await?;
                self.failpoints.hit("poll.after_page_commit");
            }
            if page.is_none() {
                break;
            }
        }
        if staged > 0 {
            tracing::info!(object = %object, staged, "staged changes");
        }
        Ok(staged)
    }

    /// Plans one batch of inbox items and commits the decisions with the items' processing.
    async fn process_inbox(
        &self,
        mappings: &[Arc<Mapping>],
    ) -> Result<(usize, usize), EngineError> {
        let items = self.store.pending_inbox(self.settings.batch_size).await?;
        if items.is_empty() {
            return Ok((0, 0));
        }
        let mut commit = PlanCommit {
            inbox_ids: items.iter().map(|i| i.id).collect(),
            ..PlanCommit::default()
        };
        // Within a batch only the newest version of each record is planned; older ones are
        // superseded (and the planner skips versions older than one already processed).
        // Hints (thin webhooks) carry the event time, not a record version: they never count.
        let mut newest: BTreeMap<(&ObjectRef, &str), i64> = BTreeMap::new();
        for i in items.iter().filter(|i| i.change.kind != ChangeKind::Hint) {
            let e = newest
                .entry((&i.change.object, i.change.record.id.as_str()))
                .or_insert(i64::MIN);
            *e = (*e).max(i.change.record.modified_ms);
        }
        let current = |i: &&InboxItem| {
            newest.get(&(&i.change.object, i.change.record.id.as_str()))
                == Some(&i.change.record.modified_ms)
        };
        for m in mappings {
            let forward: Vec<_> = items
                .iter()
                .filter(|i| i.change.object == m.source && i.change.kind == ChangeKind::Upsert)
                .filter(current)
                .collect();
            let deleted: Vec<_> = items
                .iter()
                .filter(|i| i.change.object == m.source && i.change.kind == ChangeKind::Delete)
                .collect();
            let reverse: Vec<_> = items
                .iter()
                .filter(|i| i.change.object == m.target && i.change.kind == ChangeKind::Upsert)
                .filter(current)
                .filter_map(|i| plan::source_id_of(m, &i.change.record).map(|sid| (sid, i)))
                .collect();
            let mut ids: Vec<String> = forward.iter().map(|i| i.change.record.id.clone()).collect();
            ids.extend(reverse.iter().map(|(sid, _)| sid.clone()));
            ids.extend(deleted.iter().map(|i| i.change.record.id.clone()));
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                continue;
            }
            let links: BTreeMap<String, _> = self
                .store
                .links_by_source(m.name.clone(), ids)
                .await?
                .into_iter()
                .collect();
            let mut lookups = Lookups::default();
            for (flow, keys) in m.lookup_keys(forward.iter().map(|i| &i.change.record.fields)) {
                for (sid, link) in self.store.links_by_source(flow.clone(), keys).await? {
                    if let Some(tid) = link.target_id {
                        lookups.insert(&flow, sid, tid);
                    }
                }
            }
            // Match rules: search the target for records the would-be creates already have.
            let unlinked = forward
                .iter()
                .map(|i| &i.change.record)
                .filter(|r| m.accepts(&r.fields) && plan::would_create(links.get(&r.id)));
            let mut prefetched = matching::prefetch(
                self.connector(m.target.system),
                &self.settings.retry,
                m,
                unlinked,
            )
            .await
            .map_err(|error| EngineError::Connector {
                system: m.target.system,
                error,
            })?;
            // Within a batch, later decisions see earlier ones' link observations.
            let mut links = links;
            for item in forward {
                let rec = &item.change.record;
                let found = prefetched.found(m, rec);
                let d = plan::forward_matched(m, rec, links.get(&rec.id), &lookups, found);
                let d = self.guard_flips(m, d, links.get_mut(&rec.id), &mut commit);
                prefetched.note(&d);
                mark_backfill(&mut commit, &d, rec, (self.clock)());
                let link = links.entry(rec.id.clone()).or_default();
                if let Some(o) = &d.observation {
                    link.source_state = o.state.clone();
                }
                if link.source_modified_ms.is_none_or(|s| s < rec.modified_ms) {
                    link.source_modified_ms = Some(rec.modified_ms);
                    commit.versions.push((
                        m.name.clone(),
                        rec.id.clone(),
                        Direction::ToSource,
                        rec.modified_ms,
                    ));
                }
                push(&mut commit, d);
            }
            for item in deleted {
                let id = &item.change.record.id;
                push(&mut commit, plan::delete(m, id, links.get(id)));
            }
            for (sid, item) in reverse {
                let rec = &item.change.record;
                let d = plan::reverse(m, rec, &sid, links.get(&sid));
                let d = self.guard_flips(m, d, links.get_mut(&sid), &mut commit);
                mark_backfill(&mut commit, &d, rec, (self.clock)());
                if let Some(link) = links.get_mut(&sid)
                    && link.target_modified_ms.is_none_or(|t| t < rec.modified_ms)
                {
                    link.target_modified_ms = Some(rec.modified_ms);
                    commit.versions.push((
                        m.name.clone(),
                        sid.clone(),
                        Direction::ToTarget,
                        rec.modified_ms,
                    ));
                }
                push(&mut commit, d);
            }
        }
        // Rules of engagement: record registration versions before the batch is marked done.
        if let Some(rules) = self.rules() {
            let (prm, now) = (self.prm.kind(), (self.clock)());
            registrations::observe(&self.store, &rules, mappings, prm, &items, now).await?;
        }
        let queued = commit.writes.len();
        let n = commit.inbox_ids.len();
        self.store.commit_plan(commit, (self.clock)()).await?;
        self.failpoints.hit("plan.after_commit");
        Ok((n, queued))
    }

    /// Holds back a write for a quarantined record, or quarantines one whose values keep
    /// flipping back and forth (an echo loop the hashes cannot see), with an alert.
    fn guard_flips(
        &self,
        m: &Mapping,
        mut d: plan::Decision,
        link: Option<&mut crate::store::Link>,
        commit: &mut PlanCommit,
    ) -> plan::Decision {
        let Some(link) = link else {
            return d;
        };
        let Some(w) = d.write.take() else {
            return d;
        };
        let now = (self.clock)();
        let flips = plan::flip_flops(link, &w, now, FLIP_WINDOW_MS);
        if !link.quarantined && flips < FLIP_LIMIT {
            link.write_history.push((now, w.state_key()));
            d.write = Some(w);
            return d;
        }
        if !link.quarantined {
            tracing::error!(alert = "echo_quarantine", flow = %m.name, record = %w.source_id, flips, "record quarantined: its values keep flipping back and forth; see `prmsync dlq list`");
        }
        let key = (w.flow.clone(), w.direction, w.source_id.clone());
        let (held, letter) = plan::quarantine(m, w, flips, link.quarantined);
        link.quarantined = true;
        commit.cancelled.push(key);
        commit.quarantined.extend(letter);
        plan::Decision {
            observation: d.observation,
            ..held
        }
    }

    /// Sends due outbox rows for `system` in batches until none are due or the system pushes back.
    async fn drain(&self, system: SystemKind, report: &mut TickReport) -> Result<(), EngineError> {
        let Some(conn) = self.connector(system) else {
            return Ok(());
        };
        for _ in 0..MAX_BATCHES_PER_DRAIN {
            if self.hold(system).is_some() {
                return Ok(());
            }
            let now = (self.clock)();
            let due = self.store.due_outbox(system, now, conn.max_batch()).await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut by_object: BTreeMap<String, Vec<_>> = BTreeMap::new();
            // Two writes to one record (e.g. the deal flow's and the rules' decision write-back)
            // never share a batch: vendors refuse duplicate ids in one batch, so the later one
            // stays due for the next batch.
            let mut records = BTreeSet::new();
            for item in due {
                if !records.insert((item.write.object.clone(), item.write.source_id.clone())) {
                    continue;
                }
                by_object
                    .entry(item.write.object.clone())
                    .or_default()
                    .push(item);
            }
            let mut pushed_back = false;
            for (object, items) in by_object {
                let requests: Vec<WriteRequest> = items
                    .iter()
                    .map(|i| WriteRequest {
                        key: i.write.source_id.clone(),
                        id_property: i.write.id_property.clone(),
                        target_id: i.write.target_id.clone(),
                        fields: i.write.payload.clone(),
                    })
                    .collect();
                self.failpoints.hit("drain.before_send");
                self.spend(system).await;
                let results = match conn.write(&object, &requests).await {
                    Ok(r) => r,
                    Err(e) => vec![Err(e); items.len()],
                };
                if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                    self.note_error(system, e).await?;
                }
                if results.iter().any(Result::is_ok) {
                    self.failpoints.hit("drain.after_send");
                }
                let now = (self.clock)();
                let mut outcomes = Vec::with_capacity(items.len());
                for (item, result) in items.iter().zip(results) {
                    match result {
                        Ok(ack) => {
                            report.written += 1;
                            report.created += usize::from(ack.created);
                            outcomes.push(WriteOutcome::Done {
                                outbox_id: item.id,
                                idempotency_key: item.write.idempotency_key(),
                                target_id: ack.id,
                                created: ack.created,
                            });
                        }
                        Err(e) => {
                            pushed_back |= matches!(
                                e,
                                ConnectorError::RateLimited { .. } | ConnectorError::Auth(_)
                            );
                            let flow = &item.write.flow;
                            if e.is_retryable()
                                && item.attempts + 1 < self.settings.retry.max_attempts
                            {
                                report.retried += 1;
                                let wait =
                                    self.settings.retry.delay(item.attempts, e.retry_after());
                                tracing::warn!(%system, %flow, record = %item.write.source_id, attempt = item.attempts + 1, error = %e, ?wait, "write failed; will retry");
                                outcomes.push(WriteOutcome::Retry {
                                    outbox_id: item.id,
                                    idempotency_key: item.write.idempotency_key(),
                                    next_attempt_ms: now
                                        + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
                                    error: e.to_string(),
                                });
                            } else if matches!(e, ConnectorError::Auth(_)) {
                                // Credentials are the operator's to fix; the connection is on hold
                                // and the write stays queued until it resumes (which makes it due).
                                report.retried += 1;
                                outcomes.push(WriteOutcome::Retry {
                                    outbox_id: item.id,
                                    idempotency_key: item.write.idempotency_key(),
                                    next_attempt_ms: now + holds::REAUTH_PROBE_MS,
                                    error: e.to_string(),
                                });
                            } else {
                                report.dead_lettered += 1;
                                tracing::error!(%system, %flow, record = %item.write.source_id, error = %e, "write failed for good; moved to dead letters");
                                outcomes.push(WriteOutcome::Dead {
                                    outbox_id: item.id,
                                    idempotency_key: item.write.idempotency_key(),
                                    error: e.to_string(),
                                });
                            }
                        }
                    }
                }
                self.store.complete_writes(outcomes, now).await?;
                self.failpoints.hit("drain.after_commit");
            }
            if pushed_back {
                return Ok(());
            }
        }
        Ok(())
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

    /// Runs ticks until one finds nothing to do and no write is due (bounded by `max_ticks`).
    pub async fn run_until_idle(&self, max_ticks: usize) -> Result<TickReport, EngineError> {
        let mut total = TickReport::default();
        for _ in 0..max_ticks {
            let r = self.tick().await?;
            total.staged += r.staged;
            total.processed += r.processed;
            total.queued += r.queued;
            total.written += r.written;
            total.created += r.created;
            total.retried += r.retried;
            total.dead_lettered += r.dead_lettered;
            total.poll_errors += r.poll_errors;
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

/// An update planned from a version older than [`LIVE_WINDOW_MS`] is backfill; creates (new
/// registrations) and recent changes go first.
fn mark_backfill(
    commit: &mut PlanCommit,
    d: &plan::Decision,
    rec: &crate::model::Record,
    now: i64,
) {
    if let Some(w) = &d.write
        && w.target_id.is_some()
        && rec.modified_ms < now - LIVE_WINDOW_MS
    {
        commit
            .backfill
            .push((w.flow.clone(), w.direction, w.source_id.clone()));
    }
}

fn push(commit: &mut PlanCommit, d: plan::Decision) {
    // Nothing to write means the other side already shows the latest version: a write still
    // queued from an older version would overwrite it, so it goes. A later version's decision
    // replaces an earlier one's for the same record within the batch.
    if let Some(l) = d
        .ledger
        .as_ref()
        .filter(|l| l.action == plan::action::UNCHANGED)
    {
        let key = (l.flow.clone(), l.direction, l.source_id.clone());
        commit
            .writes
            .retain(|w| (&w.flow, w.direction, &w.source_id) != (&key.0, key.1, &key.2));
        commit.cancelled.push(key);
    }
    if let Some(w) = &d.write {
        commit
            .cancelled
            .retain(|(f, dir, s)| (f, *dir, s) != (&w.flow, w.direction, &w.source_id));
    }
    commit.writes.extend(d.write);
    commit.dead_letters.extend(d.dead_letter);
    commit.ledger.extend(d.ledger);
    commit.observations.extend(d.observation);
}

/// Which objects to poll, with the fields each needs: every flow's source, and its target when
/// fields flow back.
pub fn poll_targets(mappings: &[Arc<Mapping>]) -> Vec<(ObjectRef, Vec<String>)> {
    let mut out: BTreeMap<ObjectRef, BTreeSet<String>> = BTreeMap::new();
    for m in mappings {
        out.entry(m.source.clone()).or_default();
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
