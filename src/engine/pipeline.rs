//! The pipeline: each stage runs as its own tracked task — one poller per polled object, the
//! planner, the rules decider, one writer per system — connected through the store (inbox,
//! registrations, outbox) and the engine's signals, until cancelled. A stage that commits work
//! signals the next one; every task also wakes once per poll interval as a safety net.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tracing::Instrument as _;

use super::writer::max_in_flight;
use super::{Engine, EngineError, Hold, poll_targets};
use crate::model::{ObjectRef, SystemKind};

/// The running stage tasks.
#[derive(Debug)]
pub struct Pipeline {
    engine: Arc<Engine>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// Whether the store accepts writes (the daemon's readiness): a stage's store error clears
    /// it; the next commit with work sets it again.
    healthy: Arc<AtomicBool>,
    /// Objects with a running poller.
    pollers: Arc<Mutex<BTreeSet<ObjectRef>>>,
    /// The span current at start (a multi-tenant daemon's `tenant` span): every stage task logs
    /// under it.
    span: tracing::Span,
}

impl Pipeline {
    /// Starts every stage task. `healthy` is the daemon's readiness flag.
    pub fn start(engine: Arc<Engine>, healthy: Arc<AtomicBool>) -> Pipeline {
        let p = Pipeline {
            engine,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            healthy,
            pollers: Arc::default(),
            span: tracing::Span::current(),
        };
        let ctx = p.context();
        p.tasks
            .spawn(ctx.clone().planner().instrument(p.span.clone()));
        p.tasks
            .spawn(ctx.clone().decider().instrument(p.span.clone()));
        p.tasks
            .spawn(ctx.clone().schema().instrument(p.span.clone()));
        for system in p.engine.systems() {
            p.tasks
                .spawn(ctx.clone().writer(system).instrument(p.span.clone()));
        }
        p.sync_pollers();
        p
    }

    fn context(&self) -> Stage {
        Stage {
            engine: self.engine.clone(),
            stop: self.stop.clone(),
            healthy: self.healthy.clone(),
            tasks: self.tasks.clone(),
            pollers: self.pollers.clone(),
            span: self.span.clone(),
        }
    }

    /// Starts a poller for each polled object that has none (after a mapping reload added one;
    /// a poller whose object is no longer polled ends by itself).
    pub fn sync_pollers(&self) {
        let mut running = self.pollers.lock().unwrap_or_else(|p| p.into_inner());
        for (object, _) in poll_targets(&self.engine.mappings()) {
            if running.insert(object.clone()) {
                self.tasks
                    .spawn(self.context().poller(object).instrument(self.span.clone()));
            }
        }
    }

    /// Asks every task to stop after its current step (each step commits atomically) and waits
    /// for them, batches on their way included.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The progress name of `object`'s poller (`poller partnerstack/deals`).
pub(super) fn poller_stage(object: &ObjectRef) -> String {
    format!("poller {object}")
}

/// What every stage task holds.
#[derive(Debug, Clone)]
struct Stage {
    engine: Arc<Engine>,
    stop: CancellationToken,
    healthy: Arc<AtomicBool>,
    tasks: TaskTracker,
    pollers: Arc<Mutex<BTreeSet<ObjectRef>>>,
    span: tracing::Span,
}

impl Stage {
    fn interval(&self) -> Duration {
        self.engine.settings.poll_interval
    }

    /// Notes a stage's result for readiness and logs a failure once, here.
    fn outcome<T>(
        &self,
        stage: &str,
        result: Result<T, EngineError>,
        did_work: impl Fn(&T) -> bool,
    ) -> Option<T> {
        match result {
            Ok(r) => {
                if did_work(&r) {
                    self.healthy.store(true, Ordering::Relaxed);
                }
                Some(r)
            }
            Err(e) => {
                // Poll errors are counted by `Engine::poll` itself.
                if stage != "poller" {
                    crate::telemetry::meters::meters().error(e.kind());
                }
                if matches!(e, EngineError::Store(_)) {
                    self.healthy.store(false, Ordering::Relaxed);
                }
                tracing::error!(stage, error = %e, retryable = e.is_retryable(), "stage failed; it runs again after a pause");
                None
            }
        }
    }

    /// Sleeps `wait`, or until `wake` fires; `false` when the pipeline is stopping.
    async fn idle(&self, wake: &tokio::sync::Notify, wait: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = wake.notified() => true,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// How long until a rate-limit hold on `system` ends (a re-auth hold: one interval).
    fn hold_wait(&self, system: SystemKind) -> Option<Duration> {
        match self.engine.hold(system)? {
            Hold::RateLimited { until_ms } => {
                let ms = until_ms - (self.engine.clock)();
                Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
            }
            Hold::NeedsReauth { .. } => Some(self.interval()),
        }
    }

    /// Whether `object` is still polled; if not, its poller is deregistered (under the same lock
    /// a reload takes to start pollers, so a poller is never lost between the two).
    fn still_polled(&self, object: &ObjectRef) -> bool {
        let mut running = self.pollers.lock().unwrap_or_else(|p| p.into_inner());
        let polled = poll_targets(&self.engine.mappings())
            .iter()
            .any(|(o, _)| o == object);
        if !polled {
            running.remove(object);
        }
        polled
    }

    /// One object's poller: reads it every poll interval (sooner when a thin webhook names it),
    /// straight on while a backfill has pages left, never while its system is on hold.
    async fn poller(self, object: ObjectRef) {
        let stage = self.engine.progress.start(poller_stage(&object));
        let wake = self.engine.signals.poller(&object);
        loop {
            if !self.still_polled(&object) {
                stage.retire();
                return;
            }
            let wait = match self.hold_wait(object.system) {
                // Waiting out a hold is progress too: the watchdog still vouches for a poller
                // that waits on purpose, one interval at a time.
                Some(wait) => {
                    stage.cycle();
                    wait.min(self.interval())
                }
                None => {
                    let result = tokio::select! {
                        biased;
                        () = self.stop.cancelled() => break,
                        r = self.engine.poll(&object) => r,
                    };
                    stage.cycle();
                    match result {
                        Ok(r) if !r.finished => {
                            self.healthy.store(true, Ordering::Relaxed);
                            continue;
                        }
                        Err(EngineError::Connector { system, error }) => {
                            tracing::warn!(%system, object = %object, error = %error, "poll failed; will retry next interval");
                            let noted = self.engine.note_error(system, &error).await;
                            self.outcome("poller", noted, |_| false);
                        }
                        r => {
                            self.outcome("poller", r, |r| r.staged > 0);
                        }
                    }
                    self.interval()
                }
            };
            if !self.idle(&wake, wait).await {
                break;
            }
        }
    }

    /// The planner: plans the inbox whenever it gains rows.
    async fn planner(self) {
        let stage = self.engine.progress.start("planner");
        let wake = self.engine.signals.planner.clone();
        loop {
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                r = self.engine.plan_inbox() => r,
            };
            stage.cycle();
            self.outcome("planner", result, |r| r.processed > 0);
            if !self.idle(&wake, self.interval()).await {
                break;
            }
        }
    }

    /// The rules decider: decides registration groups whenever registrations change.
    async fn decider(self) {
        let stage = self.engine.progress.start("decider");
        let wake = self.engine.signals.decider.clone();
        loop {
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                r = self.engine.decide() => r,
            };
            stage.cycle();
            self.outcome("decider", result, |_| false);
            if !self.idle(&wake, self.interval()).await {
                break;
            }
        }
    }

    /// The schema check: reads the CRM's live schema at start, when a reload asks, and every
    /// `daemon.schema_check_secs` (see `schema.rs`).
    async fn schema(self) {
        let wake = self.engine.signals.schema.clone();
        loop {
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                r = self.engine.check_schema() => r,
            };
            self.engine.schema_checked.send_replace(true);
            if let Some(r) = self.outcome("schema", result, |_| false) {
                tracing::debug!(
                    objects = r.objects,
                    drifted = r.drifted,
                    replanned = r.replanned,
                    "live schema checked"
                );
            }
            if !self
                .idle(&wake, self.engine.settings.schema_check_interval)
                .await
            {
                break;
            }
        }
    }

    /// Until the first schema check ended (or one poll interval passed): the CRM's writer
    /// waits for it, so no write at start sends a field the live schema no longer has.
    async fn first_schema_check(&self) {
        let mut checked = self.engine.schema_checked.subscribe();
        tokio::select! {
            () = self.stop.cancelled() => {}
            _ = checked.wait_for(|done| *done) => {}
            () = tokio::time::sleep(self.interval()) => {}
        }
    }

    /// One system's writer: keeps up to [`max_in_flight`] batches on their way while rows are
    /// due; a first row after a quiet spell waits a short batching window for companions.
    async fn writer(self, system: SystemKind) {
        let stage = self.engine.progress.start(format!("writer {system}"));
        let wake = self.engine.signals.writer(system);
        let slots = Arc::new(Semaphore::new(max_in_flight(system)));
        if system == self.engine.crm.kind() {
            self.first_schema_check().await;
        }
        let mut woken = true;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let probed = self.engine.probe_hold(system).await;
            self.outcome("writer", probed, |_| false);
            if let Some(wait) = self.hold_wait(system) {
                stage.cycle();
                if !self.idle(&wake, wait.min(self.interval())).await {
                    break;
                }
                continue;
            }
            let quiet = slots.available_permits() == max_in_flight(system);
            if woken && quiet && !self.engine.settings.batch_window.is_zero() {
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep(self.engine.settings.batch_window) => {}
                }
            }
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                let claimed = self.engine.claim_batch(system).await;
                let Some(batch) = self.outcome("writer", claimed, |_| false).flatten() else {
                    break;
                };
                let ctx = self.clone();
                let done = wake.clone();
                let span = self.span.clone();
                self.tasks.spawn(
                    async move {
                        let sent = ctx.engine.send_batch(batch).await;
                        ctx.outcome("writer", sent, |s| s.report.written > 0);
                        drop(slot);
                        done.notify_one();
                    }
                    .instrument(span),
                );
            }
            // Associations whose two records now both exist (HubSpot), after the batches.
            let associated = self.engine.associate_ready(system).await;
            self.outcome("writer", associated, |r| r.written > 0);
            // Partner credits on CRM deals whose deal and partner companies now exist.
            let credited = self.engine.credit_ready(system).await;
            self.outcome("writer", credited, |r| r.written > 0);
            stage.cycle();
            let wait = match self.engine.store.next_outbox_due_for(system).await {
                Ok(Some(due)) => {
                    let ms = due - (self.engine.clock)();
                    // Rows already due are in a batch on its way (its end wakes this writer) or
                    // wait for their record's batch: sleep until woken.
                    if ms <= 0 {
                        self.interval()
                    } else {
                        Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(self.interval())
                    }
                }
                other => {
                    self.outcome("writer", other.map_err(EngineError::from), |_| false);
                    self.interval()
                }
            };
            woken = tokio::select! {
                () = self.stop.cancelled() => break,
                () = wake.notified() => true,
                () = tokio::time::sleep(wait) => false,
            };
        }
    }
}
