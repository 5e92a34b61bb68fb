//! The planner's record-lifecycle decisions (pure): a deleted source record under the flow's
//! delete policy, a deleted target record under `on_target_delete`, a target record merged into
//! another (or a lead converted), tombstoned links, restores.

use serde_json::{Map, Value, json};

use super::{Decision, action, ledger};
use crate::mapping::{DeletePolicy, Mapping, TargetDeletePolicy};
use crate::model::{Direction, Record, content_hash};
use crate::store::{Link, LinkMark, PlannedWrite, StateDigest, WriteOp};

/// A tombstone reason starts with the side whose record was deleted.
const TARGET_GONE: &str = "target record";

/// A source record was deleted: apply the flow's delete policy to its linked target record.
pub fn delete(m: &Mapping, source_id: &str, link: Option<&Link>) -> Decision {
    let target_id = link.and_then(|l| l.target_id.as_deref());
    let skip = |detail: &str| {
        let mut l = ledger(
            m,
            Direction::ToTarget,
            source_id,
            target_id,
            action::DELETE_IGNORED,
        );
        l.detail = Some(detail.to_owned());
        Decision {
            ledger: Some(l),
            ..Decision::default()
        }
    };
    let (Some(link), Some(tid)) = (link, target_id) else {
        return skip("no linked target record");
    };
    if let Some(why) = &link.tombstone {
        return skip(&format!("the link is already tombstoned: {why}"));
    }
    match &m.on_delete {
        DeletePolicy::Ignore => skip("delete policy: ignore"),
        DeletePolicy::Flag { field, value } => {
            let mut payload = Map::new();
            payload.insert(field.clone(), value.clone());
            if link.target_state.holds(field, value) {
                return skip("already flagged");
            }
            let hash = content_hash(&payload);
            let mut l = ledger(m, Direction::ToTarget, source_id, target_id, action::QUEUED);
            l.content_hash = Some(hash.clone());
            l.detail = Some(format!("source deleted; flag {field}"));
            Decision {
                write: Some(PlannedWrite {
                    flow: m.name.clone(),
                    direction: Direction::ToTarget,
                    source_id: source_id.to_owned(),
                    target_id: Some(tid.to_owned()),
                    system: m.target.system,
                    object: m.target.object.clone(),
                    id_property: Some(m.external_id.clone()),
                    state_after: link.target_state.with(&payload),
                    payload,
                    content_hash: hash,
                    mapping_version: m.version.clone(),
                    op: WriteOp::Upsert,
                }),
                ledger: Some(l),
                ..Decision::default()
            }
        }
        DeletePolicy::Propagate => {
            let hash = content_hash(&deleted(tid));
            let mut l = ledger(m, Direction::ToTarget, source_id, target_id, action::QUEUED);
            l.content_hash = Some(hash.clone());
            l.detail = Some(format!(
                "source deleted; delete {} {tid} in {}",
                m.target.object, m.target.system
            ));
            Decision {
                write: Some(PlannedWrite {
                    flow: m.name.clone(),
                    direction: Direction::ToTarget,
                    source_id: source_id.to_owned(),
                    target_id: Some(tid.to_owned()),
                    system: m.target.system,
                    object: m.target.object.clone(),
                    id_property: None,
                    payload: Map::new(),
                    state_after: link.target_state.clone(),
                    content_hash: hash,
                    mapping_version: m.version.clone(),
                    op: WriteOp::Delete,
                }),
                ledger: Some(l),
                // Tombstoned now, so the target's deletion event (our own echo) changes nothing.
                mark: Some(LinkMark::Tombstone {
                    flow: m.name.clone(),
                    source_id: source_id.to_owned(),
                    reason: format!("source record {source_id} deleted"),
                }),
                ..Decision::default()
            }
        }
    }
}

/// The content a delete write is keyed by.
fn deleted(id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("deleted".into(), json!(id));
    m
}

/// The target record `target_id` linked to `source_id` was deleted in the target system: apply
/// the flow's `on_target_delete`.
pub fn target_deleted(m: &Mapping, source_id: &str, target_id: &str, link: &Link) -> Decision {
    let note = |action: &'static str, detail: String| {
        let mut l = ledger(m, Direction::ToSource, source_id, Some(target_id), action);
        l.detail = Some(detail);
        l
    };
    if link.target_id.as_deref() != Some(target_id) {
        return Decision {
            ledger: Some(note(
                action::DELETE_IGNORED,
                "the link points at another target record".into(),
            )),
            ..Decision::default()
        };
    }
    if let Some(why) = &link.tombstone {
        return Decision {
            ledger: Some(note(
                action::DELETE_IGNORED,
                format!("the link is already tombstoned: {why}"),
            )),
            ..Decision::default()
        };
    }
    let (system, object) = (m.target.system, &m.target.object);
    let tombstone = LinkMark::Tombstone {
        flow: m.name.clone(),
        source_id: source_id.to_owned(),
        reason: format!("{TARGET_GONE} {object} {target_id} deleted in {system}"),
    };
    match &m.on_target_delete {
        TargetDeletePolicy::Unlink { flag } => {
            let mut d = Decision {
                ledger: Some(note(
                    action::TARGET_DELETED,
                    format!(
                        "{object} {target_id} deleted in {system}: unlinked; the source is not re-created there"
                    ),
                )),
                mark: Some(tombstone),
                ..Decision::default()
            };
            if let Some((field, value)) = flag {
                let mut payload = Map::new();
                payload.insert(field.clone(), value.clone());
                let hash = content_hash(&payload);
                d.write = Some(PlannedWrite {
                    flow: m.name.clone(),
                    direction: Direction::ToSource,
                    source_id: source_id.to_owned(),
                    target_id: Some(target_id.to_owned()),
                    system: m.source.system,
                    object: m.source.object.clone(),
                    id_property: None,
                    state_after: link.source_state.with(&payload),
                    payload,
                    content_hash: hash,
                    mapping_version: m.version.clone(),
                    op: WriteOp::Upsert,
                });
            }
            d
        }
        TargetDeletePolicy::Recreate => Decision {
            ledger: Some(note(
                action::TARGET_DELETED,
                format!(
                    "{object} {target_id} deleted in {system}: forgotten; the next source change creates it again"
                ),
            )),
            mark: Some(LinkMark::ForgetTarget {
                flow: m.name.clone(),
                source_id: source_id.to_owned(),
            }),
            ..Decision::default()
        },
        TargetDeletePolicy::DeleteSource => {
            let hash = content_hash(&deleted(source_id));
            let mut l = note(
                action::QUEUED,
                format!(
                    "{object} {target_id} deleted in {system}: delete source {} {source_id}",
                    m.source.object
                ),
            );
            l.content_hash = Some(hash.clone());
            Decision {
                write: Some(PlannedWrite {
                    flow: m.name.clone(),
                    direction: Direction::ToSource,
                    source_id: source_id.to_owned(),
                    target_id: Some(target_id.to_owned()),
                    system: m.source.system,
                    object: m.source.object.clone(),
                    id_property: None,
                    payload: Map::new(),
                    state_after: link.source_state.clone(),
                    content_hash: hash,
                    mapping_version: m.version.clone(),
                    op: WriteOp::Delete,
                }),
                ledger: Some(l),
                mark: Some(tombstone),
                ..Decision::default()
            }
        }
    }
}

/// The target record `loser` linked to `source_id` was merged into `survivor` (HubSpot merge,
/// Salesforce merge, a converted lead's new record): the link moves to the survivor and the
/// survivor is written by its id with the known values and the external id, so later upserts by
/// the external id find it and nothing is created twice. `owner`: the source record the
/// survivor is already linked to in this flow, if another one; then the link is tombstoned
/// instead (one record cannot carry two external ids). `why` names the event for the ledger.
pub fn target_merged(
    m: &Mapping,
    source_id: &str,
    loser: &str,
    survivor: &str,
    owner: Option<&str>,
    link: &Link,
    why: &str,
) -> Decision {
    let note = |action: &'static str, target: &str, detail: String| {
        let mut l = ledger(m, Direction::ToTarget, source_id, Some(target), action);
        l.detail = Some(detail);
        l
    };
    if link.target_id.as_deref() != Some(loser) || loser == survivor {
        return Decision {
            ledger: Some(note(
                action::DELETE_IGNORED,
                loser,
                format!("{why}: the link points at another target record"),
            )),
            ..Decision::default()
        };
    }
    let (system, object) = (m.target.system, &m.target.object);
    if let Some(other) = owner.filter(|o| *o != source_id) {
        return Decision {
            ledger: Some(note(
                action::MERGED,
                survivor,
                format!(
                    "{why}: {object} {loser} merged into {survivor}, which is linked to {other}; this link is tombstoned"
                ),
            )),
            mark: Some(LinkMark::Tombstone {
                flow: m.name.clone(),
                source_id: source_id.to_owned(),
                reason: format!(
                    "{TARGET_GONE} {object} {loser} merged into {survivor} in {system}, linked to {other}"
                ),
            }),
            ..Decision::default()
        };
    }
    // The link keeps digests, not values: the survivor gets the external id now, and the next
    // change of the source record writes every mapped field (the link knows no state of it).
    let mut payload = Map::new();
    payload.insert(m.external_id.clone(), Value::String(source_id.to_owned()));
    let hash = content_hash(&payload);
    let mut l = note(
        action::MERGED,
        survivor,
        format!(
            "{why}: {object} {loser} merged into {survivor} in {system}; the link moves to {survivor}, which gets {}",
            m.external_id
        ),
    );
    l.content_hash = Some(hash.clone());
    Decision {
        write: Some(PlannedWrite {
            flow: m.name.clone(),
            direction: Direction::ToTarget,
            source_id: source_id.to_owned(),
            target_id: Some(survivor.to_owned()),
            system,
            object: object.clone(),
            // By id: the survivor may not carry the external id yet.
            id_property: None,
            state_after: StateDigest::of(&payload),
            payload,
            content_hash: hash,
            mapping_version: m.version.clone(),
            op: WriteOp::Upsert,
        }),
        ledger: Some(l),
        mark: Some(LinkMark::Retarget {
            flow: m.name.clone(),
            source_id: source_id.to_owned(),
            target_id: survivor.to_owned(),
        }),
        ..Decision::default()
    }
}

/// The flow that takes a record over when its Lead is converted (`[on_convert]`), with what it
/// knows: the record it follows among the converted ones, and the source record already linked
/// to that one in the flow, if any.
#[derive(Debug, Clone, Copy)]
pub struct Follow<'a> {
    pub flow: &'a Mapping,
    /// The converted record of the flow's target object (none if the conversion made none).
    pub record: Option<&'a str>,
    /// The source record linked to `record` in `flow` already.
    pub owner: Option<&'a str>,
}

/// The Salesforce Lead of `m`'s link for `source_id` was converted into `into` (object → id): the
/// link is tombstoned (a converted Lead cannot be updated), and the `[on_convert]` flow, if any,
/// follows the converted record of its target object: its link points there and the record gets
/// the flow's external id by its id (the planner asks for a fresh read of the source, so it gets
/// every mapped value too). The ledger of both flows says why.
pub fn target_converted(
    m: &Mapping,
    source_id: &str,
    lead: &str,
    into: &std::collections::BTreeMap<String, String>,
    link: &Link,
    follow: Option<Follow<'_>>,
) -> Vec<Decision> {
    let made = into
        .iter()
        .map(|(o, id)| format!("{o} {id}"))
        .collect::<Vec<_>>()
        .join(", ");
    let note = |m: &Mapping, target: &str, detail: String| {
        let mut l = ledger(
            m,
            Direction::ToTarget,
            source_id,
            Some(target),
            action::CONVERTED,
        );
        l.detail = Some(detail);
        l
    };
    if link.target_id.as_deref() != Some(lead) {
        let mut l = ledger(
            m,
            Direction::ToTarget,
            source_id,
            Some(lead),
            action::DELETE_IGNORED,
        );
        l.detail = Some(format!(
            "salesforce lead conversion of {lead}: the link points at another target record"
        ));
        return vec![Decision {
            ledger: Some(l),
            ..Decision::default()
        }];
    }
    let followed = follow.and_then(|f| Some((f, f.record?)));
    let then = match followed {
        Some((f, id)) => format!(
            "; the record follows {} {id} in flow {}",
            f.flow.target.object, f.flow.name
        ),
        None => match follow {
            Some(f) => format!(
                "; it made no {}, so flow {} follows nothing",
                f.flow.target.object, f.flow.name
            ),
            None => "; no [on_convert] flow follows it".to_owned(),
        },
    };
    let mut out = vec![Decision {
        ledger: Some(note(
            m,
            lead,
            format!("salesforce lead conversion: Lead {lead} converted into {made}{then}"),
        )),
        mark: Some(LinkMark::Tombstone {
            flow: m.name.clone(),
            source_id: source_id.to_owned(),
            reason: format!("converted: Lead {lead} into {made} in salesforce"),
        }),
        ..Decision::default()
    }];
    let Some((f, id)) = followed else {
        return out;
    };
    let flow = f.flow;
    if let Some(other) = f.owner.filter(|o| *o != source_id) {
        out.push(Decision {
            ledger: Some(note(
                flow,
                id,
                format!(
                    "salesforce lead conversion: Lead {lead} converted into {} {id}, which is linked to {other}; not followed",
                    flow.target.object
                ),
            )),
            ..Decision::default()
        });
        return out;
    }
    let mut payload = Map::new();
    payload.insert(
        flow.external_id.clone(),
        Value::String(source_id.to_owned()),
    );
    let hash = content_hash(&payload);
    let mut l = note(
        flow,
        id,
        format!(
            "salesforce lead conversion: Lead {lead} converted; the record follows {} {id}, which gets {}",
            flow.target.object, flow.external_id
        ),
    );
    l.content_hash = Some(hash.clone());
    out.push(Decision {
        write: Some(PlannedWrite {
            flow: flow.name.clone(),
            direction: Direction::ToTarget,
            source_id: source_id.to_owned(),
            target_id: Some(id.to_owned()),
            system: flow.target.system,
            object: flow.target.object.clone(),
            // By id: the converted record does not carry the external id yet.
            id_property: None,
            state_after: StateDigest::of(&payload),
            payload,
            content_hash: hash,
            mapping_version: flow.version.clone(),
            op: WriteOp::Upsert,
        }),
        ledger: Some(l),
        mark: Some(LinkMark::Retarget {
            flow: flow.name.clone(),
            source_id: source_id.to_owned(),
            target_id: id.to_owned(),
        }),
        ..Decision::default()
    });
    out
}

/// A change over a tombstoned link is not written through: the ledger says why.
pub(super) fn tombstoned(m: &Mapping, source_id: &str, link: &Link) -> Option<Decision> {
    let why = link.tombstone.as_ref()?;
    let mut l = ledger(
        m,
        Direction::ToTarget,
        source_id,
        link.target_id.as_deref(),
        action::TOMBSTONED,
    );
    l.detail = Some(format!("tombstoned: {why}"));
    Some(Decision {
        ledger: Some(l),
        ..Decision::default()
    })
}

/// A target record whose deletion tombstoned the link shows up again (restored from HubSpot's
/// archive, undeleted from Salesforce's recycle bin): the live link and the mark that relinks it.
pub(super) fn restored(
    m: &Mapping,
    rec: &Record,
    source_id: &str,
    link: &Link,
) -> Option<(Link, LinkMark)> {
    let why = link.tombstone.as_deref()?;
    if !why.starts_with(TARGET_GONE) || link.target_id.as_deref() != Some(rec.id.as_str()) {
        return None;
    }
    let live = Link {
        tombstone: None,
        ..link.clone()
    };
    Some((
        live,
        LinkMark::Relink {
            flow: m.name.clone(),
            source_id: source_id.to_owned(),
        },
    ))
}
