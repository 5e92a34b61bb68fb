//! Webhook bodies of a declarative REST PRM as domain changes. The body is prmsync's own shape
//! (the PRM or a relay sends it): one event `{"object", "action", "data"}` or an array of them;
//! `data` is an item as the list endpoint returns it, read with the profile's `id_field` and
//! `cursor_field`.

use serde_json::Value;

use super::{RestProfile, time_ms};
use crate::model::{Change, ChangeKind, ObjectRef, Record, SystemKind};

/// Why a REST webhook body cannot be staged (answer 400; the poller still reads the record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("event {0}: expected {{\"object\", \"action\", \"data\"}}")]
    Shape(usize),
    #[error("event {0}: action must be \"upsert\" or \"delete\"")]
    Action(usize),
    #[error("event {index}: data.{field} is missing or not an id")]
    NoId { index: usize, field: String },
    #[error("event {index}: data.{field} is not a time (epoch ms or RFC 3339)")]
    NoTime { index: usize, field: String },
}

/// Parses one body into changes. Events about objects the profile does not list are dropped
/// (acknowledged, as prmsync does not sync them).
pub fn parse(profile: &RestProfile, body: &[u8]) -> Result<Vec<Change>, WebhookError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
    let events = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    let mut out = Vec::with_capacity(events.len());
    for (index, ev) in events.into_iter().enumerate() {
        let (Some(object), Some(Value::Object(data))) =
            (ev.get("object").and_then(Value::as_str), ev.get("data"))
        else {
            return Err(WebhookError::Shape(index));
        };
        let kind = match ev.get("action").and_then(Value::as_str) {
            Some("upsert") | None => ChangeKind::Upsert,
            Some("delete") => ChangeKind::Delete,
            Some(_) => return Err(WebhookError::Action(index)),
        };
        let Some(o) = profile.objects.get(object) else {
            continue;
        };
        let id = match data.get(&o.id_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(WebhookError::NoId {
                    index,
                    field: o.id_field.clone(),
                });
            }
        };
        let modified_ms =
            data.get(&o.cursor_field)
                .and_then(time_ms)
                .ok_or_else(|| WebhookError::NoTime {
                    index,
                    field: o.cursor_field.clone(),
                })?;
        let mut change = Change::versioned(
            ObjectRef {
                system: SystemKind::Rest,
                object: object.to_owned(),
            },
            Record {
                id,
                modified_ms,
                fields: data.clone(),
            },
        );
        if kind == ChangeKind::Delete {
            change.kind = ChangeKind::Delete;
            change.event_id.push_str(":deleted");
        }
        out.push(change);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::rest::{Paging, RestObject, SinceFormat, UpsertMethod};

    fn profile() -> RestProfile {
        let deals = RestObject {
            list_path: "/deals".into(),
            upsert_path: None,
            upsert_method: UpsertMethod::Put,
            items_field: "items".into(),
            id_field: "id".into(),
            cursor_field: "updated_at".into(),
            since_param: "updated_since".into(),
            since_format: SinceFormat::EpochMs,
            limit_param: "limit".into(),
            paging: Paging::Offset {
                param: "offset".into(),
            },
        };
        RestProfile {
            base_url: reqwest::Url::parse("http://prm.invalid/").unwrap(),
            auth_header: "Authorization".into(),
            auth_value: String::new().into(),
            page_size: 10,
            objects: [("deals".to_owned(), deals)].into_iter().collect(),
        }
    }

    #[test]
    fn reads_one_event_or_many_and_refuses_what_it_cannot_place() {
        let p = profile();
        let one = br#"{"object":"deals","action":"upsert","data":{"id":"d1","updated_at":5}}"#;
        let c = parse(&p, one).unwrap();
        assert_eq!((c.len(), c[0].record.id.as_str()), (1, "d1"));
        assert_eq!(c[0].object.system, SystemKind::Rest);
        let many = br#"[{"object":"deals","action":"delete","data":{"id":7,"updated_at":"1970-01-01T00:00:01Z"}},
                        {"object":"invoices","data":{"id":"i1"}}]"#;
        let c = parse(&p, many).unwrap();
        assert_eq!(c.len(), 1, "objects the profile does not list are dropped");
        assert_eq!(
            (c[0].kind, c[0].record.id.as_str(), c[0].record.modified_ms),
            (ChangeKind::Delete, "7", 1000)
        );
        let no_time = br#"{"object":"deals","data":{"id":"d1"}}"#;
        assert!(matches!(
            parse(&p, no_time),
            Err(WebhookError::NoTime { .. })
        ));
        let no_id = br#"{"object":"deals","data":{"updated_at":1}}"#;
        assert!(matches!(parse(&p, no_id), Err(WebhookError::NoId { .. })));
        let bad = br#"{"object":"deals","action":"merge","data":{}}"#;
        assert_eq!(parse(&p, bad), Err(WebhookError::Action(0)));
        assert_eq!(parse(&p, b"[1]"), Err(WebhookError::Shape(0)));
        assert!(matches!(parse(&p, b"{"), Err(WebhookError::Json(_))));
    }
}
