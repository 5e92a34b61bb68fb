//! PartnerStack webhook bodies (`{"event": "...", "data": {...}}`) as domain changes. Event names
//! come in two spellings (`partnership.created` and the older `customer_created`); both are read.

use serde_json::Value;

use crate::model::{Change, ChangeKind, ObjectRef, Record, SystemKind};

/// Why a webhook body cannot be staged (answer 400; nothing is lost: the sender retries or the
/// poller reads the record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("missing data object")]
    NoData,
    #[error("data.key is missing")]
    NoKey,
    #[error("data.updated_at (or created_at) must be epoch milliseconds")]
    NoTime,
}

/// The collection an event name is about (`deal.updated` → `deals`), if prmsync syncs it.
pub fn collection_of(event: &str) -> Option<&'static str> {
    match event.split(['.', '_']).next()? {
        "deal" => Some("deals"),
        "partnership" => Some("partnerships"),
        "customer" => Some("customers"),
        "lead" => Some("leads"),
        _ => None,
    }
}

/// Parses one webhook body. `Ok(None)`: an event prmsync does not sync (acknowledge it).
pub fn parse(body: &[u8]) -> Result<Option<Change>, WebhookError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
    let event = v.get("event").and_then(Value::as_str).unwrap_or_default();
    let Some(collection) = collection_of(event) else {
        return Ok(None);
    };
    let Some(Value::Object(data)) = v.get("data").cloned() else {
        return Err(WebhookError::NoData);
    };
    let key = data
        .get("key")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(WebhookError::NoKey)?;
    let modified_ms = data
        .get("updated_at")
        .or_else(|| data.get("created_at"))
        .and_then(Value::as_i64)
        .ok_or(WebhookError::NoTime)?;
    let object = ObjectRef {
        system: SystemKind::PartnerStack,
        object: collection.into(),
    };
    let mut change = Change::versioned(
        object,
        Record {
            id: key,
            modified_ms,
            fields: data,
        },
    );
    if event.ends_with("deleted") {
        change.kind = ChangeKind::Delete;
        change.event_id.push_str(":deleted");
    }
    Ok(Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_event_spellings_and_ignores_the_rest() {
        let body = |event: &str| {
            format!(r#"{{"event":"{event}","data":{{"key":"k1","updated_at":1700000000000}}}}"#)
        };
        let obj = |event: &str| {
            parse(body(event).as_bytes())
                .expect("parses")
                .map(|c| (c.object.object, c.kind))
        };
        assert_eq!(
            obj("deal.updated"),
            Some(("deals".into(), ChangeKind::Upsert))
        );
        assert_eq!(
            obj("partnership_created"),
            Some(("partnerships".into(), ChangeKind::Upsert))
        );
        assert_eq!(
            obj("customer_deleted"),
            Some(("customers".into(), ChangeKind::Delete))
        );
        assert_eq!(obj("agreement.accepted"), None);
        assert_eq!(
            parse(br#"{"event":"deal.created","data":{"updated_at":1}}"#),
            Err(WebhookError::NoKey)
        );
        assert_eq!(
            parse(br#"{"event":"deal.created","data":{"key":"k"}}"#),
            Err(WebhookError::NoTime)
        );
        assert!(matches!(parse(b"{"), Err(WebhookError::Json(_))));
    }
}
