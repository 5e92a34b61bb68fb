//! Record deletes in the engine: reading deletes from systems that report them by polling
//! (Salesforce getDeleted, HubSpot's archived listing; converted Salesforce Leads, which can no
//! longer be written, for flows with `[on_convert]`) into the inbox, planning deletes, merges and
//! conversions of flows' target records, and sending delete writes through the connector's
//! delete call.

use std::collections::BTreeMap;

use super::{Engine, EngineError, plan};
use crate::connector::{
    CONVERTED_INTO, Connector, ConnectorError, Converted, Deletion, MERGED_INTO, WriteAck,
};
use crate::mapping::Mapping;
use crate::model::{Change, ChangeKind, Cursor, Direction, ObjectRef, Record, SystemKind};
use crate::store::{InboxItem, Link, OutboxItem};

/// How far back Salesforce keeps deletes (getDeleted refuses a start before it): 30 days, less
/// a day of margin.
const DELETES_KEPT_MS: i64 = 29 * 24 * 60 * 60 * 1000;
/// getDeleted wants its window at least a minute wide.
const MIN_WINDOW_MS: i64 = 60 * 1000;

/// The cursor key under which an object's delete reads keep their position.
fn deletes_key(object: &ObjectRef) -> ObjectRef {
    ObjectRef {
        system: object.system,
        object: format!("{}#deleted", object.object),
    }
}

/// A reported delete as a staged change; its event id is the delete itself, so overlapping
/// reads stage it once.
pub fn deletion_change(object: &ObjectRef, d: Deletion) -> Change {
    Change {
        event_id: format!("{object}:{}:deleted:{}", d.id, d.deleted_ms),
        object: object.clone(),
        kind: ChangeKind::Delete,
        record: Record {
            id: d.id,
            modified_ms: d.deleted_ms,
            fields: d
                .merged_into
                .into_iter()
                .map(|s| (MERGED_INTO.to_owned(), serde_json::Value::String(s)))
                .collect(),
        },
    }
}

/// A merge a survivor's own fields report (HubSpot `hs_merged_object_ids`), as a staged change:
/// its event id names the merged record and the survivor, so polls that read the survivor again
/// stage it once (and planning it again finds no link at the merged record).
pub fn merge_change(object: &ObjectRef, d: Deletion) -> Change {
    let survivor = d.merged_into.clone().unwrap_or_default();
    let mut c = deletion_change(object, d);
    c.event_id = format!("{object}:{}:merged_into:{survivor}", c.record.id);
    c
}

/// A converted Lead as a staged change (a delete naming the records it became); staged once.
pub fn conversion_change(object: &ObjectRef, c: Converted) -> Change {
    let into: serde_json::Map<String, serde_json::Value> = c
        .into
        .into_iter()
        .map(|(o, id)| (o, serde_json::Value::String(id)))
        .collect();
    Change {
        event_id: format!("{object}:{}:converted", c.id),
        object: object.clone(),
        kind: ChangeKind::Delete,
        record: Record {
            id: c.id,
            modified_ms: c.converted_ms,
            fields: [(CONVERTED_INTO.to_owned(), serde_json::Value::Object(into))]
                .into_iter()
                .collect(),
        },
    }
}

/// The records a converted Lead became (object → id), when the change is a conversion.
pub fn converted_into(change: &Change) -> Option<BTreeMap<String, String>> {
    let into = change.record.fields.get(CONVERTED_INTO)?.as_object()?;
    Some(
        into.iter()
            .filter_map(|(o, id)| Some((o.clone(), id.as_str()?.to_owned())))
            .collect(),
    )
}

impl Engine {
    /// Reads the deletes of `object` since the last read (minus the overlap) and stages them with
    /// the read's end as the new position, in one transaction. Systems that report deletes only
    /// by webhook (PartnerStack, REST) are skipped. Returns the deletes staged.
    pub async fn poll_deletes(&self, object: &ObjectRef) -> Result<usize, EngineError> {
        let Some(conn) = self.connector(object.system) else {
            return Ok(0);
        };
        if !matches!(object.system, SystemKind::Salesforce | SystemKind::HubSpot) {
            return Ok(0);
        }
        let key = deletes_key(object);
        let now = (self.clock)();
        let overlap = i64::try_from(self.settings.overlap.as_millis()).unwrap_or(0);
        let start = match self.store.cursor(key.clone()).await? {
            Some(c) => c.modified_ms - overlap,
            None => now - DELETES_KEPT_MS,
        }
        .max(now - DELETES_KEPT_MS)
        .min(now - MIN_WINDOW_MS);
        let deleted = self
            .settings
            .retry
            .run(|| async {
                conn.read_deletes(&object.object, start, now)
                    .await
                    .unwrap_or(Ok(Vec::new()))
            })
            .await
            .map_err(|error| EngineError::Connector {
                system: object.system,
                error,
            })?;
        let mut changes: Vec<Change> = deleted
            .into_iter()
            .map(|d| deletion_change(object, d))
            .collect();
        // Converted Leads, for flows that say what follows a conversion.
        let converts = self
            .mappings()
            .iter()
            .any(|m| m.target == *object && m.on_convert.is_some());
        if converts {
            let converted = self
                .settings
                .retry
                .run(|| async {
                    conn.read_conversions(&object.object, start)
                        .await
                        .unwrap_or(Ok(Vec::new()))
                })
                .await
                .map_err(|error| EngineError::Connector {
                    system: object.system,
                    error,
                })?;
            changes.extend(converted.into_iter().map(|c| conversion_change(object, c)));
        }
        let cursor = Cursor {
            modified_ms: now,
            ..Cursor::default()
        };
        let n = self
            .store
            .stage_changes(changes, Some((key, cursor)), now)
            .await?;
        if n > 0 {
            tracing::info!(object = %object, staged = n, "staged deletes");
            self.signals.planner.notify_one();
        }
        Ok(n)
    }
}

/// The record a deleted record was merged into, when its delete says so.
pub fn merged_into(change: &Change) -> Option<&str> {
    change
        .record
        .fields
        .get(MERGED_INTO)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The `[on_convert]` flow of a conversion and what the planner read of it: converted record
/// id → the source record linked to it there.
#[derive(Debug)]
pub struct FollowState<'a> {
    pub flow: &'a Mapping,
    pub owners: BTreeMap<String, String>,
}

/// The deletes of `m`'s target records among `items`, with the links they touch: a merged
/// record's link moves to the survivor; a converted Lead's record follows the converted record in
/// the `[on_convert]` flow (`follow`); other deletes follow the flow's `on_target_delete`.
/// `links` maps target ids (deleted records and survivors) to (source id, link).
pub fn plan_target_deletes(
    m: &Mapping,
    items: &[&InboxItem],
    links: &BTreeMap<String, (String, Link)>,
    follow: Option<&FollowState<'_>>,
) -> Vec<plan::Decision> {
    items
        .iter()
        .filter_map(|i| {
            let tid = &i.change.record.id;
            let (sid, link) = links.get(tid)?;
            if let Some(into) = converted_into(&i.change) {
                let f = follow.map(|f| {
                    let record = into.get(&f.flow.target.object).map(String::as_str);
                    plan::Follow {
                        flow: f.flow,
                        record,
                        owner: record.and_then(|r| f.owners.get(r)).map(String::as_str),
                    }
                });
                return Some(plan::target_converted(m, sid, tid, &into, link, f));
            }
            Some(vec![match merged_into(&i.change) {
                Some(survivor) => {
                    let owner = links.get(survivor).map(|(s, _)| s.as_str());
                    let why = format!("{} merge", m.target.system);
                    plan::target_merged(m, sid, tid, survivor, owner, link, &why)
                }
                None => plan::target_deleted(m, sid, tid, link),
            }])
        })
        .flatten()
        .collect()
}

/// Sends a batch of delete writes with the connector's delete call; one result per item, in
/// order. A `to_target` delete names the target record, a `to_source` one the source record.
pub async fn send(
    conn: &Connector,
    object: &str,
    items: &[OutboxItem],
) -> Result<Vec<Result<WriteAck, ConnectorError>>, ConnectorError> {
    let ids: Vec<Option<String>> = items
        .iter()
        .map(|i| match i.write.direction {
            Direction::ToTarget => i.write.target_id.clone(),
            Direction::ToSource => Some(i.write.source_id.clone()),
        })
        .collect();
    let known: Vec<String> = ids.iter().flatten().cloned().collect();
    let mut results = conn.delete(object, &known).await?.into_iter();
    Ok(ids
        .into_iter()
        .zip(items)
        .map(|(id, item)| match id {
            // The ledger names the target record either way.
            Some(id) => results
                .next()
                .unwrap_or_else(|| Err(ConnectorError::Transient("not sent".into())))
                .map(|()| WriteAck {
                    id: item.write.target_id.clone().unwrap_or(id),
                    created: false,
                }),
            None => Err(ConnectorError::Permanent(
                "a delete without the target record's id".into(),
            )),
        })
        .collect())
}
