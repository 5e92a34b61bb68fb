//! Erasure requests in the daemon: `prmsync erase` records a request when a daemon holds the
//! state file, and the planner carries out the open ones under the planning lock, so no plan
//! read before the purge is committed after it (which could bring the address back). A failed
//! request is tried again on later cycles, up to [`ERASE_ATTEMPTS`] times.

use super::erase::{Eraser, Outcome, Subject, render};
use super::{Engine, EngineError};

/// Planner cycles that try one request before it is left failed (each vendor call inside is
/// already retried by the retry policy).
pub const ERASE_ATTEMPTS: u32 = 5;

impl Engine {
    /// Carries out the open erasure requests, oldest first; returns how many finished. A failure
    /// is recorded on the request (no personal data) and alerted.
    pub(super) async fn carry_out_erasures(&self) -> Result<usize, EngineError> {
        let open = self.store.open_erase_requests(ERASE_ATTEMPTS).await?;
        if open.is_empty() {
            return Ok(0);
        }
        let _planning = self.planning.lock().await;
        let mappings = self.mappings();
        let policy = self.erasure_policy();
        let eraser = Eraser {
            store: &self.store,
            connectors: vec![&self.prm, &self.crm],
            mappings: &mappings,
            policy: &policy,
            retry: &self.settings.retry,
        };
        let mut done = 0;
        for request in open {
            let result = match Subject::from_request(&request.subject) {
                Ok(subject) => match eraser.plan(&subject, None).await {
                    Ok(mut plan) => {
                        plan.purge.request = Some(request.id);
                        eraser
                            .execute(&plan, "cli", (self.clock)())
                            .await
                            .map(|report| (plan, report))
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok((plan, report)) => {
                    done += 1;
                    tracing::info!(
                        request = request.id,
                        audit = report.audit_id,
                        "erasure request carried out"
                    );
                    let outcome = Outcome {
                        counts: (report.purged_rows, report.scrubbed),
                        plan,
                        dry_run: false,
                        purge: Some(report),
                    };
                    self.store
                        .erase_request_report(request.id, render(&outcome))
                        .await?;
                }
                Err(e) => {
                    tracing::error!(alert = "erasure_failed", request = request.id, attempt = request.attempts + 1, error = %e, "an erasure request could not be carried out; it is tried again next cycle");
                    self.store
                        .erase_request_failed(request.id, e.to_string())
                        .await?;
                }
            }
        }
        Ok(done)
    }
}
