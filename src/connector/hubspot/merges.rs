//! HubSpot merges found by polling: the surviving record lists the ids merged into it in
//! `hs_merged_object_ids` (semicolon-separated, CONTRACTS.md §5), so a poll finds a merge whose
//! webhook never arrived. The poll asks for the property and, when it reads only managed records,
//! also for records that have it.

use serde_json::Value;

use super::api;
use crate::connector::Deletion;
use crate::model::Record;

/// The property listing the ids merged into a record.
pub const MERGED_IDS: &str = "hs_merged_object_ids";
/// Objects HubSpot merges (the property exists on them).
const MERGEABLE: &[&str] = &["contacts", "companies", "deals", "tickets"];

pub fn mergeable(object: &str) -> bool {
    MERGEABLE.contains(&object)
}

/// The search filter group for survivors of merges modified since `since_ms`.
pub fn survivors_since(since_ms: i64) -> api::FilterGroup {
    api::FilterGroup {
        filters: vec![
            api::Filter::one(api::LAST_MODIFIED, "GTE", since_ms.to_string()),
            api::Filter::bare(MERGED_IDS, "HAS_PROPERTY"),
        ],
    }
}

/// The records merged into `r`, as deletes naming `r` as their survivor.
pub fn merged_away(object: &str, r: &Record) -> Vec<Deletion> {
    if !mergeable(object) {
        return Vec::new();
    }
    r.fields
        .get(MERGED_IDS)
        .and_then(Value::as_str)
        .map(|s| {
            s.split(';')
                .map(str::trim)
                .filter(|id| !id.is_empty() && *id != r.id)
                .map(|id| Deletion {
                    id: id.to_owned(),
                    deleted_ms: r.modified_ms,
                    merged_into: Some(r.id.clone()),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merged_ids_become_deletes_naming_the_survivor() {
        let r = Record {
            id: "9".into(),
            modified_ms: 50,
            fields: json!({MERGED_IDS: "7; 8;;9"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let d = merged_away("deals", &r);
        assert_eq!(
            d.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["7", "8"]
        );
        assert!(d.iter().all(|d| d.merged_into.as_deref() == Some("9")));
        assert!(merged_away("tasks", &r).is_empty());
        let plain = Record {
            fields: Default::default(),
            ..r
        };
        assert!(merged_away("deals", &plain).is_empty());
    }
}
