//! The HubSpot simulator's search request limits (changelog of 2024-08-26): at most 5 filter
//! groups, 10 filters in a group and 25 filters in all; a request past them gets HubSpot's 400
//! `VALIDATION_ERROR`.

use serde_json::Value;

pub const MAX_GROUPS: usize = 5;
pub const MAX_FILTERS_PER_GROUP: usize = 10;
pub const MAX_FILTERS: usize = 25;

/// Why HubSpot refuses this search body's filters, or `None`.
pub fn refused(body: &Value) -> Option<String> {
    let groups = body.get("filterGroups").and_then(Value::as_array)?;
    if groups.len() > MAX_GROUPS {
        return Some(format!(
            "Too many filter groups: {} (at most {MAX_GROUPS})",
            groups.len()
        ));
    }
    let mut total = 0;
    for (i, g) in groups.iter().enumerate() {
        let n = g
            .get("filters")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if n > MAX_FILTERS_PER_GROUP {
            return Some(format!(
                "Too many filters in filter group {i}: {n} (at most {MAX_FILTERS_PER_GROUP})"
            ));
        }
        total += n;
    }
    (total > MAX_FILTERS).then(|| format!("Too many filters: {total} (at most {MAX_FILTERS})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(groups: usize, per_group: usize) -> Value {
        let g = json!({"filters": vec![json!({"propertyName": "x", "operator": "EQ", "value": "1"}); per_group]});
        json!({ "filterGroups": vec![g; groups] })
    }

    #[test]
    fn the_documented_limits_hold_and_one_more_is_refused() {
        assert_eq!(refused(&json!({})), None);
        assert_eq!(refused(&body(5, 5)), None, "25 in all");
        assert!(refused(&body(6, 1)).is_some());
        assert!(refused(&body(1, 11)).is_some());
        assert!(refused(&body(3, 9)).is_some(), "27 in all");
    }
}
