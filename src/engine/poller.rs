//! The poller stage: reads one object's changes since its cursor, page by page, and commits each
//! page's changes with the cursor's new position (keyset and the vendor's next-page token) in one
//! transaction, so a restart re-reads at most the page that was in flight and no page cap can
//! stall an object. Each committed page wakes the planner, so a backfill streams.

use super::{Engine, EngineError, deletes_only, managed_by, poll_targets};
use crate::connector::{Connector, ConnectorError};
use crate::model::{Change, Cursor, ObjectRef, Resume};
use crate::telemetry::meters::meters;

/// What one poll cycle of an object did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// New changes staged in the inbox.
    pub staged: usize,
    /// Pages read.
    pub pages: usize,
    /// Whether the read reached its last page (`false`: the page cap ended the cycle first; the
    /// cursor holds the next page).
    pub finished: bool,
}

impl Engine {
    /// One poll cycle: reads `object` from its cursor, continuing an unfinished read at its stored
    /// page or starting one at the keyset position minus the overlap, and stops at the last page
    /// or after `max_pages_per_cycle` pages.
    pub async fn poll(&self, object: &ObjectRef) -> Result<PollReport, EngineError> {
        let result = self.poll_cycle(object).await;
        let m = meters();
        m.poll_ended(
            object.system,
            &object.object,
            result.as_ref().map(|r| r.finished).map_err(|_| ()),
        );
        if let Err(e) = &result {
            m.error(e.kind());
        }
        result
    }

    async fn poll_cycle(&self, object: &ObjectRef) -> Result<PollReport, EngineError> {
        let mut report = PollReport::default();
        let mappings = self.mappings();
        let (Some(conn), Some((_, fields))) = (
            self.connector(object.system),
            poll_targets(&mappings)
                .into_iter()
                .find(|(o, _)| o == object),
        ) else {
            report.finished = true;
            return Ok(report);
        };
        // Reverse polls ask only for the records prmsync manages, where the system can filter.
        let managed = managed_by(&mappings, object);
        let stored = self.store.cursor(object.clone()).await?;
        let mut cursor = stored.clone().unwrap_or_default();
        let (mut since, mut page) = match cursor.resume.take() {
            Some(r) => (r.since_ms, Some(r.page)),
            None => (self.keyset_since(stored.as_ref()), None),
        };
        meters().poll_started(
            object.system,
            &object.object,
            page.is_none(),
            (self.clock)(),
        );
        // A target nothing flows back from: only its deletes (and merges) matter.
        if deletes_only(&mappings, object) {
            report.staged = self.poll_deletes(object).await?;
            report.finished = true;
            return Ok(report);
        }
        let mut committed = stored;
        let mut resumed = page.is_some();
        // The keyset token last read on from, so a refused one is not tried again, and the last
        // record this read has seen (records come in keyset order).
        let mut keyset: Option<String> = None;
        let mut read_pos: Option<(i64, String)> = None;
        while report.pages < self.settings.max_pages_per_cycle.max(1) {
            let read = self
                .settings
                .retry
                .run(|| async {
                    conn.read_managed_changes(
                        &object.object,
                        since,
                        &fields,
                        page.as_deref(),
                        managed.as_deref(),
                    )
                    .await
                })
                .await;
            let read = match read {
                Ok(read) => read,
                // A stored page token the system no longer honours (a Salesforce query locator
                // expires; a PartnerStack key can be deleted): read again from a safe position.
                Err(error) if resumed && refused_token(&error) => {
                    since = restart_since(conn, &cursor, since, self.overlap_ms());
                    tracing::warn!(object = %object, error = %error, since, "the stored page token was refused; reading again from the cursor");
                    page = None;
                    resumed = false;
                    continue;
                }
                // A vendor cursor that expired during this read (Salesforce query locators):
                // read on from the keyset position, where the system can, once per token.
                Err(error)
                    if refused_token(&error)
                        && page
                            .as_deref()
                            .is_some_and(|p| Some(p) != keyset.as_deref()) =>
                {
                    let Some(k) = read_pos
                        .as_ref()
                        .and_then(|(ms, id)| conn.keyset_page(*ms, id))
                    else {
                        return Err(EngineError::Connector {
                            system: object.system,
                            error,
                        });
                    };
                    tracing::warn!(object = %object, error = %error, "the read's page token was refused; reading on from the keyset position");
                    keyset = Some(k.clone());
                    page = Some(k);
                    continue;
                }
                Err(error) => {
                    return Err(EngineError::Connector {
                        system: object.system,
                        error,
                    });
                }
            };
            resumed = false;
            report.pages += 1;
            self.progress.step(&super::pipeline::poller_stage(object));
            // Items the connector could not read stop only themselves.
            super::rejects::dead_letter(&self.store, object, read.rejects, (self.clock)()).await?;
            let mut changes = Vec::with_capacity(read.records.len());
            for r in read.records {
                // No filtering on the cursor: systems with whole-second stamps (Salesforce) can
                // show a record at the cursor's own second after the cursor was set. Everything in
                // the overlap window is offered again; staging dedupes on the content-addressed
                // event id, so a version already staged is not staged twice.
                if (r.modified_ms, r.id.as_str()) > cursor.key() {
                    cursor.modified_ms = r.modified_ms;
                    cursor.id.clone_from(&r.id);
                }
                read_pos = Some((r.modified_ms, r.id.clone()));
                for d in conn.merged_into(&object.object, &r) {
                    changes.push(super::deletes::merge_change(object, d));
                }
                changes.push(Change::versioned(object.clone(), r));
            }
            page = read.next_page;
            cursor.resume = page.clone().map(|page| Resume {
                since_ms: since,
                page,
            });
            // Every page commits its changes with the position after it: a restart continues at
            // the next page instead of reading the object again from the start.
            if !changes.is_empty() || committed.as_ref() != Some(&cursor) {
                let n = self
                    .store
                    .stage_changes(
                        changes,
                        Some((object.clone(), cursor.clone())),
                        (self.clock)(),
                    )
                    .await?;
                committed = Some(cursor.clone());
                self.failpoints.hit("poll.after_page_commit");
                if n > 0 {
                    report.staged += n;
                    self.signals.planner.notify_one();
                }
            }
            if page.is_none() {
                report.finished = true;
                break;
            }
        }
        if report.staged > 0 {
            tracing::info!(object = %object, staged = report.staged, pages = report.pages, finished = report.finished, "staged changes");
        }
        // Systems that keep deletes (Salesforce getDeleted, HubSpot's archive) are asked for
        // them once a read is complete.
        if report.finished {
            report.staged += self.poll_deletes(object).await?;
            // A requested resync of this object reads on after the live changes, under the
            // same page cap; while it has pages left the poller goes straight on.
            let (staged, done) = self
                .resync_pages(object, self.settings.max_pages_per_cycle)
                .await?;
            report.staged += staged;
            report.finished = done;
        }
        Ok(report)
    }

    /// Poll cycles of `object` until its read finishes; returns the changes staged.
    pub(super) async fn poll_to_end(&self, object: &ObjectRef) -> Result<usize, EngineError> {
        let mut staged = 0;
        loop {
            let r = self.poll(object).await?;
            staged += r.staged;
            if r.finished {
                return Ok(staged);
            }
        }
    }

    fn overlap_ms(&self) -> i64 {
        i64::try_from(self.settings.overlap.as_millis()).unwrap_or(0)
    }

    /// Where a new read starts: the keyset position minus the overlap window.
    fn keyset_since(&self, cursor: Option<&Cursor>) -> i64 {
        cursor.map_or(0, |c| (c.modified_ms - self.overlap_ms()).max(0))
    }
}

/// Whether a failed read of a stored page token means the token itself is no good (as opposed
/// to the system being down, busy, or refusing the credential).
fn refused_token(error: &ConnectorError) -> bool {
    matches!(error, ConnectorError::Permanent(_))
}

/// Where to read again when an unfinished read's page token is refused: systems that list
/// oldest first continue from the keyset position (everything before it is staged); the others
/// start that read over.
fn restart_since(conn: &Connector, cursor: &Cursor, read_since: i64, overlap_ms: i64) -> i64 {
    if conn.lists_oldest_first() {
        read_since.max(cursor.modified_ms - overlap_ms).max(0)
    } else {
        read_since
    }
}
