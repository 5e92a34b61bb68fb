//! HubSpot simulator merges: `POST /crm/v3/objects/{type}/merge` `{primaryObjectId,
//! objectIdToMerge}` and a CRM user merging two records. The merged record goes away (its id is
//! neither live nor archived), the primary keeps its own property values and lists the merged
//! ids in `hs_merged_object_ids` (semicolon-separated), associations move to the primary, and a
//! `*.merge` webhook event carries `primaryObjectId` and `mergedObjectIds`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Call, HubSpotSim, Inner, error, known_object, object_json};

impl Inner {
    /// Merges `loser` into `primary`; false when either is not a live record of `object_type`
    /// or they are the same.
    fn merge_one(&mut self, object_type: &str, primary: u64, loser: u64, now: i64) -> bool {
        let Some(table) = self.objects.get_mut(object_type) else {
            return false;
        };
        if primary == loser || !table.contains(primary) || !table.contains(loser) {
            return false;
        }
        table.remove(loser);
        let old = table.get(primary).map(|o| o.props()).unwrap_or_default();
        let mut new = old.clone();
        let merged = match old.get("hs_merged_object_ids").filter(|s| !s.is_empty()) {
            Some(ids) => format!("{ids};{loser}"),
            None => loser.to_string(),
        };
        new.insert("hs_merged_object_ids".into(), merged);
        table.update(primary, &old, &new, Some(now));
        let (p, l) = (primary.to_string(), loser.to_string());
        let moved: Vec<_> = self
            .associations
            .iter()
            .filter(|(ft, fi, tt, ti)| {
                (ft == object_type && *fi == l) || (tt == object_type && *ti == l)
            })
            .cloned()
            .collect();
        for key in moved {
            self.associations.remove(&key);
            let types = self.association_types.remove(&key).unwrap_or_default();
            let (ft, fi, tt, ti) = key;
            let fi = if ft == object_type && fi == l {
                p.clone()
            } else {
                fi
            };
            let ti = if tt == object_type && ti == l {
                p.clone()
            } else {
                ti
            };
            let new_key = (ft, fi, tt, ti);
            self.associations.insert(new_key.clone());
            self.association_types
                .entry(new_key)
                .or_default()
                .extend(types);
        }
        self.queue_event(object_type, primary, "merge", None);
        if let Some(ev) = self.pending_events.last_mut() {
            ev["primaryObjectId"] = json!(primary);
            ev["mergedObjectIds"] = json!([loser]);
        }
        true
    }
}

impl HubSpotSim {
    /// Merges record `loser` into `primary` as a CRM user would; false when either is missing.
    pub fn merge(&self, object_type: &str, primary: &str, loser: &str) -> bool {
        let now = self.clock.tick();
        let (Ok(primary), Ok(loser)) = (primary.parse(), loser.parse()) else {
            return false;
        };
        self.lock().merge_one(object_type, primary, loser, now)
    }
}

/// `POST /crm/v3/objects/{type}/merge`: 200 with the primary record; 400 when a record is
/// missing or both ids are the same.
pub(super) async fn merge(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Upsert) {
        return r;
    }
    if !known_object(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        );
    }
    let id = |k: &str| {
        body.as_ref()
            .and_then(|Json(b)| b.get(k))
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .and_then(|s| s.parse::<u64>().ok())
    };
    let (Some(primary), Some(loser)) = (id("primaryObjectId"), id("objectIdToMerge")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "primaryObjectId and objectIdToMerge are required",
        );
    };
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    if !inner.merge_one(&object, primary, loser, now) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("cannot merge {object} {loser} into {primary}"),
        );
    }
    let out = inner
        .objects
        .get(&object)
        .and_then(|t| t.get(primary))
        .map(|o| object_json(o, None));
    drop(inner);
    sim.limit_headers(Json(out.unwrap_or(Value::Null)).into_response())
}
