//! The writer stage: for one target system, claims due outbox rows in batches (a claimed row or
//! record is in no other batch until its outcome is committed), sends each batch as one upsert
//! call under the system's budget and holds, and commits the outcomes (done, retry, dead letter).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{Engine, EngineError, TickReport, deletes, holds};
use crate::connector::{ConnectorError, WriteRequest};
use crate::model::SystemKind;
use crate::store::{OutboxItem, SkippedField, WriteOp, WriteOutcome};

/// Batches one [`Engine::drain`] sends before it returns, so a tick stays bounded.
const MAX_BATCHES_PER_DRAIN: usize = 10;

/// How many batches a system's writer keeps on their way at once. Each still waits for the
/// credential's budget (`budget.rs`) before it is sent, so this only overlaps the vendors'
/// answer times: HubSpot answers a 100-record batch upsert in a few hundred ms and allows 100-190
/// requests per 10 s; Salesforce allows 25 concurrent long requests per org; PartnerStack and
/// REST PRMs take one PATCH per record, so two batches are plenty.
pub fn max_in_flight(system: SystemKind) -> usize {
    match system {
        SystemKind::HubSpot | SystemKind::Salesforce => 4,
        SystemKind::PartnerStack | SystemKind::Rest => 2,
    }
}

/// Sends `writes` as one call. When the system refuses the whole call for good (a batch-level
/// 400: one bad record fails a HubSpot batch), the batch is split in halves and each half is sent
/// again, down to single records: the bad records are isolated with their own error and the good
/// ones are written. A retryable refusal is not split (it is the batch's to retry).
async fn write_bisecting(
    conn: &crate::connector::Connector,
    object: &str,
    writes: &[WriteRequest],
) -> Result<Vec<Result<crate::connector::WriteAck, ConnectorError>>, ConnectorError> {
    match conn.write(object, writes).await {
        Err(ConnectorError::Permanent(why)) if writes.len() > 1 => {
            tracing::info!(object, records = writes.len(), error = %why, "batch refused as a whole; sending it in halves to isolate the bad records");
            let (left, right) = writes.split_at(writes.len() / 2);
            let mut out = Vec::with_capacity(writes.len());
            for half in [left, right] {
                match Box::pin(write_bisecting(conn, object, half)).await {
                    Ok(results) => out.extend(results),
                    Err(e) => out.extend(std::iter::repeat_n(Err(e), half.len())),
                }
            }
            Ok(out)
        }
        other => other,
    }
}

/// Outbox rows, and the records they write, that are in a batch on its way.
#[derive(Debug, Default)]
pub(super) struct Claims {
    inner: Mutex<Claimed>,
}

#[derive(Debug, Default)]
struct Claimed {
    rows: HashSet<i64>,
    records: HashSet<RecordKey>,
}

type RecordKey = (SystemKind, String, String);

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, Claimed> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rows(&self) -> usize {
        self.lock().rows.len()
    }
}

fn record_key(item: &OutboxItem) -> RecordKey {
    (
        item.write.system,
        item.write.object.clone(),
        item.write.source_id.clone(),
    )
}

/// A claimed batch: rows of one object, no record twice. Its claim ends when it is dropped,
/// after its outcomes are committed (or when the send is abandoned, leaving the rows queued).
pub(super) struct Batch {
    claims: Arc<Claims>,
    system: SystemKind,
    object: String,
    op: WriteOp,
    items: Vec<OutboxItem>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        let mut c = self.claims.lock();
        for item in &self.items {
            c.rows.remove(&item.id);
            c.records.remove(&record_key(item));
        }
    }
}

/// What a sent batch did.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub report: TickReport,
    /// The system refused for rate or credentials: stop sending until the hold ends.
    pub pushed_back: bool,
}

impl Engine {
    /// Claims the next batch of due rows for `system`, skipping rows and records already in a
    /// batch on its way; `None` when nothing claimable is due.
    pub(super) async fn claim_batch(
        &self,
        system: SystemKind,
    ) -> Result<Option<Batch>, EngineError> {
        let Some(conn) = self.connector(system) else {
            return Ok(None);
        };
        let max = conn.max_batch();
        let now = (self.clock)();
        let due = self
            .store
            .due_outbox(system, now, max + self.claims.rows())
            .await?;
        let mut claimed = self.claims.lock();
        let mut object: Option<String> = None;
        let mut op: Option<WriteOp> = None;
        let mut items = Vec::new();
        // Two writes to one record (e.g. the deal flow's and the rules' decision write-back)
        // never share a batch, nor go out in two batches at once: vendors refuse duplicate ids
        // in one batch, and two batches in flight could land in either order.
        let mut records = HashSet::new();
        for item in due {
            let key = record_key(&item);
            if claimed.rows.contains(&item.id)
                || claimed.records.contains(&key)
                || object.as_ref().is_some_and(|o| *o != item.write.object)
                || op.is_some_and(|o| o != item.write.op)
                || !records.insert(key)
            {
                continue;
            }
            object.get_or_insert_with(|| item.write.object.clone());
            op.get_or_insert(item.write.op);
            items.push(item);
            if items.len() == max {
                break;
            }
        }
        let Some(object) = object else {
            return Ok(None);
        };
        for item in &items {
            claimed.rows.insert(item.id);
            claimed.records.insert(record_key(item));
        }
        Ok(Some(Batch {
            claims: self.claims.clone(),
            system,
            object,
            op: op.unwrap_or_default(),
            items,
        }))
    }

    /// Sends one claimed batch and commits every row's outcome; the claim ends afterwards.
    pub(super) async fn send_batch(&self, batch: Batch) -> Result<Sent, EngineError> {
        let system = batch.system;
        let Some(conn) = self.connector(system) else {
            return Ok(Sent::default());
        };
        let items = &batch.items;
        // What the live schema no longer takes is left out of each write (`schema.rs`).
        let guard = (batch.op == WriteOp::Upsert)
            .then(|| self.schema_guard(system, &batch.object))
            .flatten();
        let mut skipped: Vec<Vec<SkippedField>> = vec![Vec::new(); items.len()];
        let mut requests: Vec<WriteRequest> = Vec::with_capacity(items.len());
        // Rows with nothing left to send to a record that exists: done without a call.
        let mut unsent: Vec<usize> = Vec::new();
        for (n, i) in items.iter().enumerate() {
            let mut fields = i.write.payload.clone();
            if let Some((kept, left_out)) = guard.as_ref().and_then(|g| g.strip(&fields)) {
                for s in &left_out {
                    crate::telemetry::meters::meters().schema_skipped(
                        system,
                        &batch.object,
                        &s.field,
                    );
                    tracing::debug!(%system, flow = %i.write.flow, record = %i.write.source_id, field = %s.field, value = ?s.value, "left out of the write: the live schema does not take it");
                }
                fields = kept;
                skipped[n] = left_out;
                if fields.is_empty() && i.write.target_id.is_some() {
                    unsent.push(n);
                    continue;
                }
            }
            requests.push(WriteRequest {
                key: i.write.source_id.clone(),
                id_property: i.write.id_property.clone(),
                target_id: i.write.target_id.clone(),
                fields,
            });
        }
        self.failpoints.hit("drain.before_send");
        let sent = match batch.op {
            WriteOp::Upsert if requests.is_empty() => Ok(Vec::new()),
            WriteOp::Upsert => write_bisecting(conn, &batch.object, &requests).await,
            WriteOp::Delete => deletes::send(conn, &batch.object, items).await,
        };
        let sent_results = match sent {
            Ok(r) => r,
            Err(e) => vec![Err(e); requests.len()],
        };
        let mut sent_results = sent_results.into_iter();
        let results: Vec<Result<crate::connector::WriteAck, ConnectorError>> = (0..items.len())
            .map(|n| {
                if unsent.contains(&n) {
                    Ok(crate::connector::WriteAck {
                        id: items[n].write.target_id.clone().unwrap_or_default(),
                        created: false,
                    })
                } else {
                    sent_results.next().unwrap_or_else(|| {
                        Err(ConnectorError::Transient(
                            "the system answered fewer results than records sent".into(),
                        ))
                    })
                }
            })
            .collect();
        // A per-record rate limit or refused credential holds the system as a whole-call one
        // does, wherever it is in the batch.
        let errors = || results.iter().filter_map(|r| r.as_ref().err());
        if let Some(e) = errors()
            .find(|e| e.is_back_pressure() || matches!(e, ConnectorError::Auth(_)))
            .or_else(|| errors().next())
        {
            self.note_error(system, e).await?;
        }
        if results.iter().any(Result::is_ok) {
            self.failpoints.hit("drain.after_send");
        }
        let now = (self.clock)();
        let mut sent = Sent::default();
        let report = &mut sent.report;
        let mut outcomes = Vec::with_capacity(items.len());
        for ((item, result), skipped) in items.iter().zip(results).zip(skipped) {
            match result {
                Ok(ack) => {
                    report.written += 1;
                    report.created += usize::from(ack.created);
                    outcomes.push(WriteOutcome::Done {
                        outbox_id: item.id,
                        idempotency_key: item.write.idempotency_key(),
                        // The link names the target record either way: a write back to the
                        // source answers with the source's key, which must not replace it.
                        target_id: match item.write.direction {
                            crate::model::Direction::ToTarget => ack.id,
                            crate::model::Direction::ToSource => {
                                item.write.target_id.clone().unwrap_or(ack.id)
                            }
                        },
                        created: ack.created,
                        skipped,
                    });
                }
                Err(e) => {
                    crate::telemetry::meters::meters()
                        .error(crate::telemetry::meters::error_kind(&e));
                    sent.pushed_back |= matches!(
                        e,
                        ConnectorError::RateLimited { .. } | ConnectorError::Auth(_)
                    );
                    let flow = &item.write.flow;
                    let retry = |next_attempt_ms: i64, counted: bool| WriteOutcome::Retry {
                        outbox_id: item.id,
                        idempotency_key: item.write.idempotency_key(),
                        next_attempt_ms,
                        error: e.to_string(),
                        counted,
                    };
                    let after = |wait: std::time::Duration| {
                        now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)
                    };
                    if e.is_back_pressure() {
                        // The system asked to wait: the write goes again when the wait ends,
                        // and the wait is no failure of the write (no attempt is counted).
                        report.retried += 1;
                        let wait = self.settings.retry.delay(0, e.retry_after());
                        tracing::debug!(%system, %flow, record = %item.write.source_id, error = %e, ?wait, "write pushed back; will go when the wait ends");
                        outcomes.push(retry(after(wait), false));
                    } else if e.is_retryable()
                        && item.attempts + 1 < self.settings.retry.max_attempts
                    {
                        report.retried += 1;
                        let wait = self.settings.retry.delay(item.attempts, e.retry_after());
                        tracing::warn!(%system, %flow, record = %item.write.source_id, attempt = item.attempts + 1, error = %e, ?wait, "write failed; will retry");
                        outcomes.push(retry(after(wait), true));
                    } else if matches!(e, ConnectorError::Auth(_)) {
                        // Credentials are the operator's to fix; the connection is on hold and
                        // the write stays queued until it resumes (which makes it due).
                        report.retried += 1;
                        outcomes.push(retry(now + holds::REAUTH_PROBE_MS, false));
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
        drop(batch);
        Ok(sent)
    }

    /// Sends due rows for `system` one batch after another until none are due, the system
    /// pushes back, or [`MAX_BATCHES_PER_DRAIN`] batches went (the tick's form of a writer).
    pub(super) async fn drain(&self, system: SystemKind) -> Result<TickReport, EngineError> {
        let mut report = TickReport::default();
        for _ in 0..MAX_BATCHES_PER_DRAIN {
            if self.hold(system).is_some() {
                break;
            }
            let Some(batch) = self.claim_batch(system).await? else {
                break;
            };
            let sent = self.send_batch(batch).await?;
            report.add(&sent.report);
            if sent.pushed_back {
                break;
            }
        }
        if self.hold(system).is_none() {
            report.add(&self.associate_ready(system).await?);
            report.add(&self.credit_ready(system).await?);
        }
        Ok(report)
    }
}
