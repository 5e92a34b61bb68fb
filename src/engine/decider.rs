//! The rules decider stage: decides the registration groups whose registrations changed (the
//! rules themselves live in `rules/`, the bookkeeping in `registrations.rs`), reading CRM facts
//! first, and queues the decisions' write-backs. Then it wakes the writers.

use super::{Engine, EngineError, poll_targets, registrations};
use crate::connector::ConnectorError;

impl Engine {
    /// Decides changed registration groups and queues their write-backs (nothing without rules).
    /// Waits while the planner has staged changes left or a PRM read is under way: a backfill
    /// (PartnerStack lists newest first) must not decide a group before its older registrations
    /// are in, or partners would see an approval that the next page takes back.
    pub(super) async fn decide(&self) -> Result<(), EngineError> {
        let Some(rules) = self.rules() else {
            return Ok(());
        };
        let mappings = self.mappings();
        if self.registrations_incomplete(&mappings).await? {
            tracing::debug!("registrations still arriving; deciding when they are all in");
            return Ok(());
        }
        let now = (self.clock)();
        let crm_kind = self.crm.kind();
        let failed = std::sync::Mutex::new(None);
        let crm = registrations::CrmSource {
            connector: &self.crm,
            retry: &self.settings.retry,
            held: self
                .hold(crm_kind)
                .map(|h| ConnectorError::Transient(format!("{crm_kind} is on hold: {h:?}"))),
            failed: &failed,
        };
        let prm = self.prm.kind();
        {
            let _planning = self.planning.lock().await;
            registrations::decide(&self.store, &rules, &mappings, prm, Some(crm), now).await?;
        }
        let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = failed {
            self.note_error(crm_kind, &e).await?;
        }
        for system in self.systems() {
            self.signals.writer(system).notify_one();
        }
        Ok(())
    }

    /// Whether staged changes wait in the inbox or a read of a PRM object is unfinished.
    async fn registrations_incomplete(
        &self,
        mappings: &[std::sync::Arc<crate::mapping::Mapping>],
    ) -> Result<bool, EngineError> {
        if !self.store.pending_inbox(1).await?.is_empty() {
            return Ok(true);
        }
        let prm = self.prm.kind();
        for (object, _) in poll_targets(mappings) {
            if object.system == prm
                && let Some(c) = self.store.cursor(object).await?
                && c.resume.is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
