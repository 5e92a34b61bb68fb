//! The planner: given a change, its mapping and the stored link, decide what to write. Pure: no
//! I/O, no clock, no randomness, so every decision is a one-line table test.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::connector::MatchCandidate;
use crate::mapping::{Lookups, Mapping, OnMany, OnNone, Op};
use crate::model::{Direction, Record, content_hash};
use crate::store::{
    DeadLetter, LedgerEntry, Link, LinkMark, LinkObservation, PlannedWrite, StateDigest,
};

#[path = "plan_lifecycle.rs"]
mod lifecycle;
pub use lifecycle::{Follow, delete, target_converted, target_deleted, target_merged};

/// What the planner decided for one change in one flow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub write: Option<PlannedWrite>,
    pub dead_letter: Option<DeadLetter>,
    pub ledger: Option<LedgerEntry>,
    pub observation: Option<LinkObservation>,
    /// A tombstone set or cleared, or a target forgotten (record lifecycle).
    pub mark: Option<LinkMark>,
}

/// Ledger actions the planner records (writes add `created` / `updated` when they land).
pub mod action {
    pub const QUEUED: &str = "queued";
    pub const UNCHANGED: &str = "skip_unchanged";
    pub const UNLINKED: &str = "skip_unlinked";
    pub const MAPPING_FAILED: &str = "mapping_failed";
    pub const STALE: &str = "skip_stale";
    pub const QUARANTINED: &str = "quarantined";
    pub const HELD: &str = "skip_quarantined";
    pub const FILTERED: &str = "skip_filtered";
    pub const DELETE_IGNORED: &str = "skip_delete";
    pub const DELETE_FAILED: &str = "delete_failed";
    pub const TOMBSTONED: &str = "skip_tombstoned";
    pub const TARGET_DELETED: &str = "target_deleted";
    pub const RELINKED: &str = "relinked";
    pub const MERGED: &str = "merged";
    pub const CONVERTED: &str = "converted";
    pub const NO_MATCH: &str = "skip_no_match";
    pub const AMBIGUOUS_SKIPPED: &str = "skip_ambiguous_match";
    pub const AMBIGUOUS: &str = "match_ambiguous";
    pub const SEARCH_REFUSED: &str = "match_search_refused";
}

/// A write that would return the written side to a state it was in at least `limit` times
/// within `window_ms` before `now_ms` (values flipping back and forth) is not sent.
/// Writing the same state again (a newer version that maps to what is already queued, e.g. after
/// a write-back touched only unmapped fields) is not a flip: only returns to `key` after another
/// state of the same side count, and a write repeating the side's latest state counts none.
pub fn flip_flops(link: &Link, w: &PlannedWrite, now_ms: i64, window_ms: i64) -> usize {
    let key = w.state_key();
    let side = w.direction.as_str();
    let same_side = link
        .write_history
        .iter()
        .filter(|(_, k)| k.split(':').next() == Some(side));
    let mut flips = 0;
    let mut previous: Option<&str> = None;
    for (at, k) in same_side {
        if *at >= now_ms - window_ms && *k == key && previous != Some(k.as_str()) {
            flips += 1;
        }
        previous = Some(k.as_str());
    }
    if previous == Some(key.as_str()) {
        0
    } else {
        flips
    }
}

/// Holds back a write for a quarantined or flip-flopping record.
pub fn quarantine(
    m: &Mapping,
    w: PlannedWrite,
    flips: usize,
    already: bool,
) -> (Decision, Option<(DeadLetter, PlannedWrite)>) {
    let action = if already {
        action::HELD
    } else {
        action::QUARANTINED
    };
    let mut l = ledger(m, w.direction, &w.source_id, w.target_id.as_deref(), action);
    l.content_hash = Some(w.content_hash.clone());
    let reason = format!(
        "values flipped back and forth: this write would return the {} to a state it had {flips} times recently; quarantined instead of looping (replay to release)",
        match w.direction {
            Direction::ToTarget => "target",
            Direction::ToSource => "source",
        }
    );
    l.detail = Some(if already {
        "the record is quarantined".into()
    } else {
        reason.clone()
    });
    let letter = (!already).then(|| {
        (
            DeadLetter {
                origin: "quarantine",
                flow: Some(m.name.clone()),
                system: w.system,
                object: w.object.clone(),
                record_id: w.source_id.clone(),
                payload: Value::Object(w.payload.clone()),
                reason,
                attempts: 0,
            },
            w,
        )
    });
    (
        Decision {
            ledger: Some(l),
            ..Decision::default()
        },
        letter,
    )
}

/// An older version than one already processed: never applied over the newer one.
fn stale(
    m: &Mapping,
    direction: Direction,
    source_id: &str,
    target_id: Option<&str>,
    seen_ms: i64,
    got_ms: i64,
) -> Decision {
    let mut l = ledger(m, direction, source_id, target_id, action::STALE);
    l.detail = Some(format!(
        "version modified at {got_ms} is older than the one processed (modified at {seen_ms})"
    ));
    Decision {
        ledger: Some(l),
        ..Decision::default()
    }
}

/// The entries of `desired` that `known` does not hold.
pub fn diff(desired: &Map<String, Value>, known: &StateDigest) -> Map<String, Value> {
    desired
        .iter()
        .filter(|(k, v)| !known.holds(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ledger(
    m: &Mapping,
    direction: Direction,
    source_id: &str,
    target_id: Option<&str>,
    action: &'static str,
) -> LedgerEntry {
    LedgerEntry {
        flow: m.name.clone(),
        direction,
        source_id: source_id.to_owned(),
        target_id: target_id.map(str::to_owned),
        action,
        content_hash: None,
        mapping_version: Some(m.version.clone()),
        detail: None,
    }
}

/// A source record changed: plan the write toward the target.
pub fn forward(m: &Mapping, rec: &Record, link: Option<&Link>) -> Decision {
    forward_with(m, rec, link, &Lookups::NONE)
}

/// [`forward`] with the other flows' links that the mapping's `lookup` transforms read.
pub fn forward_with(m: &Mapping, rec: &Record, link: Option<&Link>, lookups: &Lookups) -> Decision {
    forward_core(m, rec, link, lookups, None)
}

/// Whether a forward change over this link would create the target record (no target id yet,
/// and no create already planned).
pub fn would_create(link: Option<&Link>) -> bool {
    link.is_none_or(|l| l.target_id.is_none() && l.target_state.is_empty())
}

/// What a match-rule lookup found for one source record that has no target yet.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// The target field the deciding rule compared, and the normalised key it looked for.
    pub field: &'a str,
    pub key: &'a str,
    pub candidates: &'a [MatchCandidate],
    /// Candidates other records of the same batch were just linked to.
    pub claimed: &'a BTreeSet<String>,
}

/// A record whose match-rule search the target refuses for good (a 400 for its key): it goes to
/// the dead letters with the refusal, and the rest of its batch is planned as usual.
pub fn match_search_refused(m: &Mapping, rec: &Record, refusal: &str) -> Decision {
    let reason = format!(
        "{} refused the match search for this record: {refusal}",
        m.target.system
    );
    let mut l = ledger(
        m,
        Direction::ToTarget,
        &rec.id,
        None,
        action::SEARCH_REFUSED,
    );
    l.detail = Some(reason.clone());
    Decision {
        dead_letter: Some(DeadLetter {
            origin: "inbox",
            flow: Some(m.name.clone()),
            system: m.source.system,
            object: m.source.object.clone(),
            record_id: rec.id.clone(),
            payload: Value::Object(rec.fields.clone()),
            reason,
            attempts: 0,
        }),
        ledger: Some(l),
        ..Decision::default()
    }
}

/// [`forward_with`] for a record the engine searched the target for (its flow has match rules
/// and the record would be created): the flow's `on_none` / `on_many` decide. `found` is `None`
/// when no search applied (no rule gave a key), which plans like [`forward_with`].
pub fn forward_matched(
    m: &Mapping,
    rec: &Record,
    link: Option<&Link>,
    lookups: &Lookups,
    found: Option<Found<'_>>,
) -> Decision {
    let (Some(rules), Some(found)) = (&m.matching, found) else {
        return forward_with(m, rec, link, lookups);
    };
    if !m.accepts(&rec.fields) || !would_create(link) {
        return forward_with(m, rec, link, lookups);
    }
    let skip = |action: &'static str, detail: String| {
        let mut l = ledger(m, Direction::ToTarget, &rec.id, None, action);
        l.detail = Some(detail);
        Decision {
            ledger: Some(l),
            ..Decision::default()
        }
    };
    let target = &m.target.object;
    let (field, key) = (found.field, found.key);
    // A candidate paired with another source record (its external id says so, or this batch
    // just linked it) is not free to match.
    let free: Vec<&MatchCandidate> = found
        .candidates
        .iter()
        .filter(|c| !found.claimed.contains(&c.id))
        .filter(|c| {
            c.fields
                .get(&m.external_id)
                .and_then(Value::as_str)
                .is_none_or(|s| s.is_empty() || s == rec.id)
        })
        .collect();
    let chosen = match (free.as_slice(), rules.on_none, rules.on_many) {
        ([], OnNone::Create, _) => return forward_with(m, rec, link, lookups),
        ([], OnNone::Skip, _) => {
            return skip(
                action::NO_MATCH,
                format!("no existing {target} has {field} = {key:?} (on_none = skip)"),
            );
        }
        ([one], _, _) => *one,
        (many, _, OnMany::Oldest) => many
            .iter()
            .min_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)))
            .copied()
            .expect("several candidates"),
        (many, _, on_many) => {
            let ids = many
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let reason = format!(
                "{} {target} records in {} have {field} = {key:?}: {ids}; merge them or set {} on the right one",
                many.len(),
                m.target.system,
                m.external_id
            );
            if on_many == OnMany::Skip {
                return skip(action::AMBIGUOUS_SKIPPED, reason);
            }
            let mut l = ledger(m, Direction::ToTarget, &rec.id, None, action::AMBIGUOUS);
            l.detail = Some(reason.clone());
            return Decision {
                dead_letter: Some(DeadLetter {
                    origin: "inbox",
                    flow: Some(m.name.clone()),
                    system: m.source.system,
                    object: m.source.object.clone(),
                    record_id: rec.id.clone(),
                    payload: Value::Object(rec.fields.clone()),
                    reason,
                    attempts: 0,
                }),
                ledger: Some(l),
                ..Decision::default()
            };
        }
    };
    let linked = Link {
        target_id: Some(chosen.id.clone()),
        target_state: StateDigest::default(),
        ..link.cloned().unwrap_or_default()
    };
    forward_core(m, rec, Some(&linked), lookups, Some((chosen, field)))
}

/// Plans a forward write. `matched`: the link is to an existing record a match rule found, so
/// the write goes by its id and also sets the external-id field, which later upserts find it by.
fn forward_core(
    m: &Mapping,
    rec: &Record,
    link: Option<&Link>,
    lookups: &Lookups,
    matched: Option<(&MatchCandidate, &str)>,
) -> Decision {
    if !m.accepts(&rec.fields) {
        let target_id = link.and_then(|l| l.target_id.as_deref());
        return Decision {
            ledger: Some(ledger(
                m,
                Direction::ToTarget,
                &rec.id,
                target_id,
                action::FILTERED,
            )),
            ..Decision::default()
        };
    }
    if let Some(d) = link.and_then(|l| lifecycle::tombstoned(m, &rec.id, l)) {
        return d;
    }
    let empty = Link::default();
    let link = link.unwrap_or(&empty);
    if let Some(seen) = link
        .source_modified_ms
        .filter(|seen| rec.modified_ms < *seen)
    {
        let target_id = link.target_id.as_deref();
        return stale(
            m,
            Direction::ToTarget,
            &rec.id,
            target_id,
            seen,
            rec.modified_ms,
        );
    }
    let op = if would_create(Some(link)) {
        Op::Create
    } else {
        Op::Update
    };
    let source_state = m.source_state(&rec.fields);
    let observation = (!link.source_state.matches(&source_state)).then(|| LinkObservation {
        flow: m.name.clone(),
        source_id: rec.id.clone(),
        side: Direction::ToSource,
        state: StateDigest::of(&source_state),
    });
    let target_id = link.target_id.as_deref();
    let desired = match m.to_target_with(&rec.fields, op, lookups) {
        Ok(d) => d,
        Err(e) => {
            let mut l = ledger(
                m,
                Direction::ToTarget,
                &rec.id,
                target_id,
                action::MAPPING_FAILED,
            );
            l.detail = Some(e.to_string());
            return Decision {
                dead_letter: Some(DeadLetter {
                    origin: "inbox",
                    flow: Some(m.name.clone()),
                    system: m.source.system,
                    object: m.source.object.clone(),
                    record_id: rec.id.clone(),
                    payload: Value::Object(rec.fields.clone()),
                    reason: e.to_string(),
                    attempts: 0,
                }),
                ledger: Some(l),
                observation,
                write: None,
                mark: None,
            };
        }
    };
    let mut payload = match op {
        Op::Create => desired,
        Op::Update => diff(&desired, &link.target_state),
    };
    // The fields left out of an update's payload already hold their desired values, so writing
    // the payload leaves the target in the desired state.
    let state_after = link.target_state.with(&payload);
    // A record the link moved to (a match, a merge's survivor) may lack the external id until
    // a write by its id lands: until then the link knows no state of it.
    let by_id = matched.is_some() || (link.target_id.is_some() && link.target_state.is_empty());
    if by_id {
        payload.insert(m.external_id.clone(), Value::String(rec.id.clone()));
    }
    if payload.is_empty() {
        return Decision {
            ledger: Some(ledger(
                m,
                Direction::ToTarget,
                &rec.id,
                target_id,
                action::UNCHANGED,
            )),
            observation,
            ..Decision::default()
        };
    }
    let hash = content_hash(&payload);
    let mut l = ledger(m, Direction::ToTarget, &rec.id, target_id, action::QUEUED);
    l.content_hash = Some(hash.clone());
    let fields = payload.keys().cloned().collect::<Vec<_>>().join(", ");
    l.detail = Some(match matched {
        Some((c, field)) => format!(
            "matched existing record {} by {field}; fields: {fields}",
            c.id
        ),
        None => format!("fields: {fields}"),
    });
    Decision {
        write: Some(PlannedWrite {
            flow: m.name.clone(),
            direction: Direction::ToTarget,
            source_id: rec.id.clone(),
            target_id: link.target_id.clone(),
            system: m.target.system,
            object: m.target.object.clone(),
            // A matched record lacks the external id until this write: address it by its id.
            id_property: (!by_id).then(|| m.external_id.clone()),
            state_after,
            payload,
            content_hash: hash,
            mapping_version: m.version.clone(),
            op: crate::store::WriteOp::Upsert,
        }),
        ledger: Some(l),
        observation,
        dead_letter: None,
        mark: None,
    }
}

/// The source id a target record carries in the mapping's external-id field.
pub fn source_id_of(m: &Mapping, rec: &Record) -> Option<String> {
    match rec.fields.get(&m.external_id)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A target record changed: plan the write back toward the source, unless it is our own echo.
pub fn reverse(m: &Mapping, rec: &Record, source_id: &str, link: Option<&Link>) -> Decision {
    let Some(link) = link else {
        return Decision {
            ledger: Some(ledger(
                m,
                Direction::ToSource,
                source_id,
                Some(&rec.id),
                action::UNLINKED,
            )),
            ..Decision::default()
        };
    };
    // A target record that was deleted and is back (restored, undeleted) relinks.
    let relinked;
    let (link, mark) = match lifecycle::restored(m, rec, source_id, link) {
        Some((l, mark)) => {
            relinked = l;
            (&relinked, Some(mark))
        }
        None if link.tombstone.is_some() => {
            return lifecycle::tombstoned(m, source_id, link).unwrap_or_default();
        }
        None => (link, None),
    };
    let mut d = reverse_live(m, rec, source_id, link);
    if mark.is_some()
        && let Some(l) = &mut d.ledger
    {
        let was = l
            .detail
            .take()
            .map_or_else(String::new, |d| format!("; {d}"));
        l.detail = Some(format!(
            "{} {} is back in {}: relinked{was}",
            m.target.object, rec.id, m.target.system
        ));
    }
    d.mark = mark;
    d
}

/// [`reverse`] over a live link.
fn reverse_live(m: &Mapping, rec: &Record, source_id: &str, link: &Link) -> Decision {
    if let Some(seen) = link
        .target_modified_ms
        .filter(|seen| rec.modified_ms < *seen)
    {
        return stale(
            m,
            Direction::ToSource,
            source_id,
            Some(&rec.id),
            seen,
            rec.modified_ms,
        );
    }
    let desired = match m.to_source(&rec.fields) {
        Ok(d) => d,
        Err(e) => {
            let mut l = ledger(
                m,
                Direction::ToSource,
                source_id,
                Some(&rec.id),
                action::MAPPING_FAILED,
            );
            l.detail = Some(e.to_string());
            return Decision {
                dead_letter: Some(DeadLetter {
                    origin: "inbox",
                    flow: Some(m.name.clone()),
                    system: m.target.system,
                    object: m.target.object.clone(),
                    record_id: rec.id.clone(),
                    payload: Value::Object(rec.fields.clone()),
                    reason: e.to_string(),
                    attempts: 0,
                }),
                ledger: Some(l),
                ..Decision::default()
            };
        }
    };
    let payload = diff(&desired, &link.source_state);
    if payload.is_empty() {
        // What the target shows is what the source has: our own write coming back, or no change.
        return Decision {
            ledger: Some(ledger(
                m,
                Direction::ToSource,
                source_id,
                Some(&rec.id),
                action::UNCHANGED,
            )),
            ..Decision::default()
        };
    }
    let hash = content_hash(&payload);
    let mut l = ledger(
        m,
        Direction::ToSource,
        source_id,
        Some(&rec.id),
        action::QUEUED,
    );
    l.content_hash = Some(hash.clone());
    l.detail = Some(format!(
        "fields: {}",
        payload.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    Decision {
        write: Some(PlannedWrite {
            flow: m.name.clone(),
            direction: Direction::ToSource,
            source_id: source_id.to_owned(),
            target_id: Some(rec.id.clone()),
            system: m.source.system,
            object: m.source.object.clone(),
            id_property: None,
            state_after: link.source_state.with(&desired),
            payload,
            content_hash: hash,
            mapping_version: m.version.clone(),
            op: crate::store::WriteOp::Upsert,
        }),
        ledger: Some(l),
        ..Decision::default()
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_match_tests.rs"]
mod match_tests;
