//! PartnerStack REST v2 wire types: the `{data, message, status}` envelope, list pages, and a
//! deal's custom `fields` array.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"data": {...}, "message": "...", "status": 200}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<Value>,
}

/// `{"has_more": bool, "items": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPage {
    pub has_more: bool,
    pub items: Vec<Map<String, Value>>,
}

/// The deal fields `PATCH /v2/deals/{key}` accepts (the reference's body parameters); others,
/// such as `contact_email`, cannot be changed through the API.
pub const DEAL_PATCHABLE: &[&str] = &[
    "account_name",
    "amount",
    "close_date",
    "contact_first_name",
    "contact_last_name",
    "customer_key",
    "external_key",
    "lost_reason",
    "partner_key",
    "source",
    "stage",
    "team",
    "team_member",
    "fields",
];

/// Cursor paging page size (the API allows 1 to 250).
pub const PAGE_LIMIT: usize = 250;

/// A deal's custom `fields` as PartnerStack takes them (an array of objects, one per field:
/// `{"key": name, "value": value}`), with `owned` merged into `current` (the deal as it is now):
/// entries prmsync owns are replaced or added, every other entry is kept as it is. `current` may
/// also be absent, null, or the deprecated object form (`{name: value}`), which is converted.
pub fn merge_custom_fields(current: Option<&Value>, owned: &Map<String, Value>) -> Value {
    let mut out: Vec<Value> = match current {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect(),
        _ => Vec::new(),
    };
    for (k, v) in owned {
        let slot = out
            .iter_mut()
            .find(|e| e.get("key").and_then(Value::as_str) == Some(k.as_str()));
        match slot {
            Some(Value::Object(e)) => {
                e.insert("value".into(), v.clone());
            }
            _ => out.push(serde_json::json!({"key": k, "value": v})),
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_fields_merge_by_key_and_keep_the_partners_entries() {
        let owned = json!({"registration_status": "approved", "duplicate_of": null});
        let owned = owned.as_object().unwrap();
        let current = json!([
            {"key": "partner_note", "value": "call Tuesday", "label": "Note"},
            {"key": "registration_status", "value": "pending"}
        ]);
        assert_eq!(
            merge_custom_fields(Some(&current), owned),
            json!([
                {"key": "partner_note", "value": "call Tuesday", "label": "Note"},
                {"key": "registration_status", "value": "approved"},
                {"key": "duplicate_of", "value": null}
            ])
        );
        let legacy = json!({"partner_note": "x"});
        assert_eq!(
            merge_custom_fields(Some(&legacy), owned)
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        assert_eq!(
            merge_custom_fields(None, owned).as_array().map(Vec::len),
            Some(2)
        );
    }
}
