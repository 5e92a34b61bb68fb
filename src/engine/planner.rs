//! The planner stage: takes staged changes from the inbox in batches, plans each with the pure
//! planner (`plan.rs`) against the stored links, and commits the decisions, ledger lines and
//! outbox writes in one transaction with the inbox rows they consumed. Then it wakes the writers
//! of the systems it queued writes for, and the decider.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    Engine, EngineError, FLIP_LIMIT, FLIP_WINDOW_MS, LIVE_WINDOW_MS, TickReport, associations,
    deletes, matching, plan, registrations,
};
use crate::mapping::{Lookups, Mapping};
use crate::model::{ChangeKind, Direction, ObjectRef, SystemKind};
use crate::store::{InboxItem, PlanCommit};

/// What one planned batch did.
#[derive(Debug, Default)]
struct Batch {
    processed: usize,
    queued: usize,
    /// Systems that got new outbox writes.
    systems: BTreeSet<SystemKind>,
    /// Objects a thin webhook asked to read.
    hinted: BTreeSet<ObjectRef>,
}

impl Engine {
    /// Plans the inbox batch by batch until it is empty (or a match search fails, which leaves
    /// that batch in the inbox for the next cycle), waking the stages that have new work.
    pub(super) async fn plan_inbox(&self) -> Result<TickReport, EngineError> {
        let mappings = self.mappings();
        let mut report = TickReport::default();
        // Erasures `prmsync erase` recorded: carried out before planning, under the same lock.
        self.carry_out_erasures().await?;
        loop {
            let batch = match self.process_inbox(&mappings).await {
                Ok(b) => b,
                // Match rules: a failed search leaves the batch in the inbox for the next cycle.
                Err(EngineError::Connector { system, error }) => {
                    tracing::warn!(%system, error = %error, "match search failed; batch stays in the inbox");
                    self.note_error(system, &error).await?;
                    report.poll_errors += 1;
                    break;
                }
                Err(e) => return Err(e),
            };
            report.processed += batch.processed;
            report.queued += batch.queued;
            self.progress.step("planner");
            for system in &batch.systems {
                self.signals.writer(*system).notify_one();
            }
            for object in &batch.hinted {
                self.signals.poller(object).notify_one();
            }
            if batch.processed > 0 && self.rules().is_some() {
                self.signals.decider.notify_one();
            }
            if batch.processed < self.settings.batch_size {
                break;
            }
        }
        Ok(report)
    }

    /// Plans one batch of inbox items and commits the decisions with the items' processing.
    async fn process_inbox(&self, mappings: &[Arc<Mapping>]) -> Result<Batch, EngineError> {
        let _planning = self.planning.lock().await;
        let items = self.store.pending_inbox(self.settings.batch_size).await?;
        if items.is_empty() {
            return Ok(Batch::default());
        }
        // Thin webhooks name a record without its content: its object's poller reads it.
        let hinted: BTreeSet<ObjectRef> = items
            .iter()
            .filter(|i| i.change.kind == ChangeKind::Hint)
            .map(|i| i.change.object.clone())
            .collect();
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
        let mut batch_rereads: BTreeSet<ObjectRef> = BTreeSet::new();
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
            // Target records deleted in the target system: planned first, so a source change in
            // the same batch sees the tombstone instead of re-creating the record.
            // One delete per record: a merge can arrive by webhook and by a poll of the
            // survivor (`hs_merged_object_ids`) in the same batch.
            let mut seen_deleted = BTreeSet::new();
            let target_deleted: Vec<_> = items
                .iter()
                .filter(|i| i.change.object == m.target && i.change.kind == ChangeKind::Delete)
                .filter(|i| seen_deleted.insert(i.change.record.id.as_str()))
                .collect();
            if !target_deleted.is_empty() {
                let tids: Vec<String> = target_deleted
                    .iter()
                    .map(|i| i.change.record.id.clone())
                    .collect();
                // Merged records' survivors too: one already linked keeps its source record.
                let survivors = target_deleted
                    .iter()
                    .filter_map(|i| deletes::merged_into(&i.change))
                    .map(str::to_owned);
                let tids: Vec<String> = tids.into_iter().chain(survivors).collect();
                let by_target: BTreeMap<String, (String, crate::store::Link)> = self
                    .store
                    .links_by_target(m.name.clone(), tids)
                    .await?
                    .into_iter()
                    .map(|(tid, sid, link)| (tid, (sid, link)))
                    .collect();
                // A converted Lead's record follows the converted record in the `[on_convert]`
                // flow: who is linked to the converted records there already.
                let follow = match m
                    .on_convert
                    .as_ref()
                    .and_then(|c| mappings.iter().find(|f| f.name == c.follow))
                {
                    Some(flow) => {
                        let converted: Vec<String> = target_deleted
                            .iter()
                            .filter_map(|i| deletes::converted_into(&i.change))
                            .flat_map(|into| into.into_values())
                            .collect();
                        let owners = if converted.is_empty() {
                            BTreeMap::new()
                        } else {
                            self.store
                                .links_by_target(flow.name.clone(), converted)
                                .await?
                                .into_iter()
                                .map(|(tid, sid, _)| (tid, sid))
                                .collect()
                        };
                        Some(deletes::FollowState { flow, owners })
                    }
                    None => None,
                };
                for d in
                    deletes::plan_target_deletes(m, &target_deleted, &by_target, follow.as_ref())
                {
                    // A survivor (or a converted record) gets the external id now and every
                    // mapped value from a fresh read of the source record (a resync of that one
                    // record, in the flow that now links it).
                    if let Some(crate::store::LinkMark::Retarget {
                        flow, source_id, ..
                    }) = &d.mark
                    {
                        commit
                            .rereads
                            .push((flow.clone(), m.source.clone(), source_id.clone()));
                        batch_rereads.insert(m.source.clone());
                    }
                    push(&mut commit, d);
                }
            }
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
            let mut links: BTreeMap<String, _> = self
                .store
                .links_by_source(m.name.clone(), ids)
                .await?
                .into_iter()
                .collect();
            // Tombstones and forgotten targets set just above count for this batch's changes.
            for mark in &commit.marks {
                apply_mark(&mut links, m, mark);
            }
            let mut lookups = Lookups::default();
            for (flow, keys) in m.lookup_keys(forward.iter().map(|i| &i.change.record.fields)) {
                for (sid, link) in self.store.links_by_source(flow.clone(), keys).await? {
                    if let Some(tid) = link.target_id {
                        lookups.insert(&flow, sid, tid);
                    }
                }
            }
            // A lookup into a record another flow is still writing waits for it (read again).
            let (waiting, since) = self
                .waiting_on_lookups(m, &forward, &lookups, &commit)
                .await?;
            if !waiting.is_empty() {
                tracing::info!(flow = %m.name, records = waiting.len(), "records wait for the record a lookup names to be written; read again on the next poll");
                commit.waits.push((
                    m.name.clone(),
                    m.source.clone(),
                    since,
                    waiting.iter().cloned().collect(),
                ));
            }
            let forward: Vec<_> = forward
                .into_iter()
                .filter(|i| !waiting.contains(&i.change.record.id))
                .collect();
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
            for item in forward {
                let rec = &item.change.record;
                let d = match prefetched.refused(m, rec) {
                    Some(refusal) => plan::match_search_refused(m, rec, refusal),
                    None => {
                        let found = prefetched.found(m, rec);
                        plan::forward_matched(m, rec, links.get(&rec.id), &lookups, found)
                    }
                };
                let d = self.guard_flips(m, d, links.get_mut(&rec.id), &mut commit);
                if d.dead_letter.is_none() && m.accepts(&rec.fields) {
                    commit
                        .associations
                        .extend(associations::intents(m, &rec.id, &rec.fields));
                }
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
        let queued: BTreeSet<SystemKind> = commit.writes.iter().map(|w| w.system).collect();
        let mut hinted = hinted;
        hinted.extend(batch_rereads);
        let batch = Batch {
            processed: commit.inbox_ids.len(),
            queued: commit.writes.len(),
            systems: queued,
            hinted,
        };
        self.store.commit_plan(commit, (self.clock)()).await?;
        self.failpoints.reached("plan.after_commit").await;
        // GDPR deletions in HubSpot: erase the person elsewhere, after the batch's own decisions
        // (the contact's delete) are committed, so nothing planned from them comes back.
        for item in items
            .iter()
            .filter(|i| crate::connector::hubspot::webhook::is_privacy_deletion(&i.change))
        {
            self.erase_privacy_deletion(&item.change).await?;
        }
        Ok(batch)
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
}

/// Applies a mark committed in this batch to the links loaded for later decisions.
fn apply_mark(
    links: &mut BTreeMap<String, crate::store::Link>,
    m: &Mapping,
    mark: &crate::store::LinkMark,
) {
    use crate::store::LinkMark;
    match mark {
        LinkMark::Tombstone {
            flow,
            source_id,
            reason,
        } if *flow == m.name => {
            if let Some(l) = links.get_mut(source_id) {
                l.tombstone = Some(reason.clone());
            }
        }
        LinkMark::Retarget {
            flow,
            source_id,
            target_id,
        } if *flow == m.name => {
            if let Some(l) = links.get_mut(source_id) {
                l.target_id = Some(target_id.clone());
                l.target_state = crate::store::StateDigest::default();
                l.tombstone = None;
            }
        }
        LinkMark::ForgetTarget { flow, source_id } if *flow == m.name => {
            if let Some(l) = links.get_mut(source_id) {
                l.target_id = None;
                l.target_state = crate::store::StateDigest::default();
                l.target_modified_ms = None;
                l.tombstone = None;
            }
        }
        _ => {}
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
    // A link tombstoned because its target record is gone: a write still queued toward that
    // record would re-create it.
    if let Some(crate::store::LinkMark::Tombstone {
        flow, source_id, ..
    }) = &d.mark
        && d.write
            .as_ref()
            .is_none_or(|w| w.direction != Direction::ToTarget)
    {
        let key = (flow.clone(), Direction::ToTarget, source_id.clone());
        commit
            .writes
            .retain(|w| (&w.flow, w.direction, &w.source_id) != (&key.0, key.1, &key.2));
        commit.cancelled.push(key);
    }
    commit.marks.extend(d.mark);
    commit.writes.extend(d.write);
    commit.dead_letters.extend(d.dead_letter);
    commit.ledger.extend(d.ledger);
    commit.observations.extend(d.observation);
}
