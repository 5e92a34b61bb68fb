//! HubSpot webhook bodies (a JSON array of thin events) as domain changes: deletions, merges
//! (each merged record as a delete naming the survivor), and hints
//! that make the engine re-read the object. Pure, for the listener and the fuzz target.

use serde_json::Value;

use crate::model::{Change, ChangeKind, ObjectRef, Record, SystemKind};

/// The subscription action of HubSpot's GDPR deletion event (`contact.privacyDeletion`).
pub const PRIVACY_DELETION: &str = "privacyDeletion";

/// Whether a staged change is HubSpot's `contact.privacyDeletion` event.
pub fn is_privacy_deletion(change: &Change) -> bool {
    change.kind == ChangeKind::Delete
        && change.object.system == SystemKind::HubSpot
        && change
            .record
            .fields
            .get("subscriptionType")
            .and_then(Value::as_str)
            == Some("contact.privacyDeletion")
}

/// Parses a HubSpot webhook body (a JSON array of events) into changes; subscriptions prmsync
/// does not sync are dropped. Pure, for the handler and the fuzz target.
pub fn parse_events(body: &[u8]) -> Result<Vec<Change>, String> {
    let events: Vec<Value> = match serde_json::from_slice(body) {
        Ok(Value::Array(a)) => a,
        Ok(_) => return Err("expected a JSON array of events".into()),
        Err(e) => return Err(format!("malformed JSON: {e}")),
    };
    let mut changes = Vec::with_capacity(events.len());
    for (i, ev) in events.into_iter().enumerate() {
        if let Some(c) = hubspot_change(ev).map_err(|e| format!("event {i}: {e}"))? {
            changes.extend(c);
        }
    }
    Ok(changes)
}

fn hubspot_change(ev: Value) -> Result<Option<Vec<Change>>, String> {
    let field = |k: &str| ev.get(k).ok_or_else(|| format!("missing {k}"));
    let event_id = field("eventId")?.to_string();
    let portal = ev.get("portalId").map(Value::to_string).unwrap_or_default();
    let object_id = field("objectId")?.to_string().trim_matches('"').to_owned();
    let occurred = field("occurredAt")?
        .as_i64()
        .ok_or("occurredAt must be epoch milliseconds")?;
    let sub = field("subscriptionType")?
        .as_str()
        .ok_or("subscriptionType must be text")?;
    let (kind, action) = sub
        .split_once('.')
        .ok_or("subscriptionType must look like deal.creation")?;
    let action = action.to_owned();
    let object = match kind {
        "deal" => "deals",
        "company" => "companies",
        "contact" => "contacts",
        // Subscriptions prmsync does not sync are acknowledged and ignored.
        _ => return Ok(None),
    };
    // A GDPR deletion (`contact.privacyDeletion`) deletes the contact too; the engine also
    // erases the person (it keeps `subscriptionType` in the change's fields).
    let kind = if action == "deletion" || action == PRIVACY_DELETION {
        ChangeKind::Delete
    } else {
        ChangeKind::Hint
    };
    let Value::Object(fields) = ev else {
        return Err("an event must be an object".into());
    };
    let object = ObjectRef {
        system: SystemKind::HubSpot,
        object: object.into(),
    };
    if action == "merge" {
        return merge_changes(&portal, &event_id, object, occurred, fields).map(Some);
    }
    Ok(Some(vec![Change {
        event_id: format!("hubspot:{portal}:{event_id}"),
        object,
        kind,
        record: Record {
            id: object_id,
            modified_ms: occurred,
            fields,
        },
    }]))
}

/// A merge event: each merged (losing) record as a delete whose fields name the surviving one
/// (`merged_into`), so links to it move to the survivor.
fn merge_changes(
    portal: &str,
    event_id: &str,
    object: ObjectRef,
    occurred: i64,
    fields: serde_json::Map<String, Value>,
) -> Result<Vec<Change>, String> {
    let id = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let primary = fields
        .get("primaryObjectId")
        .and_then(id)
        .ok_or("a merge event needs primaryObjectId")?;
    let merged: Vec<String> = fields
        .get("mergedObjectIds")
        .and_then(Value::as_array)
        .ok_or("a merge event needs mergedObjectIds")?
        .iter()
        .filter_map(id)
        .filter(|m| *m != primary)
        .collect();
    Ok(merged
        .into_iter()
        .map(|loser| {
            let mut f = fields.clone();
            f.insert(
                super::super::MERGED_INTO.into(),
                Value::String(primary.clone()),
            );
            Change {
                event_id: format!("hubspot:{portal}:{event_id}:{loser}"),
                object: object.clone(),
                kind: ChangeKind::Delete,
                record: Record {
                    id: loser,
                    modified_ms: occurred,
                    fields: f,
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::parse_events;
    use crate::connector::MERGED_INTO;
    use crate::model::ChangeKind;

    #[test]
    fn a_merge_event_is_a_delete_of_each_merged_record_naming_the_survivor() {
        let body = br#"[{"eventId": 7, "portalId": 62515, "occurredAt": 1700000000000,
            "subscriptionType": "deal.merge", "objectId": 900, "primaryObjectId": 900,
            "mergedObjectIds": [901, 902]}]"#;
        let changes = parse_events(body).expect("parsed");
        let got: Vec<(&str, ChangeKind, Option<&str>)> = changes
            .iter()
            .map(|c| {
                (
                    c.record.id.as_str(),
                    c.kind,
                    c.record.fields.get(MERGED_INTO).and_then(|v| v.as_str()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("901", ChangeKind::Delete, Some("900")),
                ("902", ChangeKind::Delete, Some("900"))
            ]
        );
        assert_ne!(changes[0].event_id, changes[1].event_id);
        let broken = br#"[{"eventId": 8, "occurredAt": 1, "subscriptionType": "deal.merge", "objectId": 900}]"#;
        let err = parse_events(broken).expect_err("no primaryObjectId");
        assert!(err.contains("primaryObjectId"), "{err}");
    }
}
