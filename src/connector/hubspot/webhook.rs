//! HubSpot webhook bodies (a JSON array of thin events) as domain changes: deletions, and hints
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
            changes.push(c);
        }
    }
    Ok(changes)
}

fn hubspot_change(ev: Value) -> Result<Option<Change>, String> {
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
    let fields = match ev {
        Value::Object(m) => m,
        _ => return Err("an event must be an object".into()),
    };
    Ok(Some(Change {
        event_id: format!("hubspot:{portal}:{event_id}"),
        object: ObjectRef {
            system: SystemKind::HubSpot,
            object: object.into(),
        },
        kind,
        record: Record {
            id: object_id,
            modified_ms: occurred,
            fields,
        },
    }))
}
