//! HubSpot simulator record lifecycle: `batch/archive`, `?archived=true` listings, and a user
//! archiving or restoring a record (with its `*.deletion` / `*.restore` webhook event).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::{Call, HubSpotSim, Inner, Object, error, known_object, object_json, props_json};

impl Inner {
    /// Moves an object to the archive; false when there is no such live object.
    fn archive_one(&mut self, object_type: &str, id: u64, now: i64) -> bool {
        let Some(o) = self.objects.get_mut(object_type).and_then(|t| t.remove(id)) else {
            return false;
        };
        let props = o.props();
        self.archived
            .entry(object_type.to_owned())
            .or_default()
            .insert(Object::new(id, &props, o.created_ms, now), &props);
        self.queue_event(object_type, id, "deletion", None);
        true
    }
}

impl HubSpotSim {
    /// Archives (deletes) an object as a CRM user would; it queues a `*.deletion` event.
    pub fn archive(&self, object_type: &str, id: &str) -> bool {
        let now = self.clock.tick();
        let Ok(id) = id.parse() else {
            return false;
        };
        self.lock().archive_one(object_type, id, now)
    }

    /// Restores an archived object as a CRM user would (it becomes live again with a new
    /// modification time); it queues a `*.restore` event.
    pub fn restore(&self, object_type: &str, id: &str) -> bool {
        let now = self.clock.tick();
        let Ok(id) = id.parse::<u64>() else {
            return false;
        };
        let mut inner = self.lock();
        let Some(o) = inner
            .archived
            .get_mut(object_type)
            .and_then(|t| t.remove(id))
        else {
            return false;
        };
        let props = o.props();
        inner
            .objects
            .entry(object_type.to_owned())
            .or_default()
            .insert(Object::new(id, &props, o.created_ms, now), &props);
        inner.queue_event(object_type, id, "restore", None);
        true
    }

    /// The properties of every archived object of `object_type`, with `hs_object_id`.
    pub fn archived(&self, object_type: &str) -> Vec<Map<String, Value>> {
        self.lock()
            .archived
            .get(object_type)
            .map(|t| t.iter().map(|o| props_json(o, None)).collect())
            .unwrap_or_default()
    }
}

/// `POST /crm/v3/objects/{type}/batch/archive` `{inputs:[{id}]}` → 204. Ids that are not live
/// (unknown or already archived) are ignored, as HubSpot does.
pub(super) async fn batch_archive(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    // Burst-limited like any call; the injected upsert faults are for batch/upsert only.
    if let Err(r) = sim.gate(&headers, Call::Read) {
        return r;
    }
    if !known_object(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        );
    }
    let Some(inputs) = body.as_ref().and_then(|b| b["inputs"].as_array()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON: inputs is required",
        );
    };
    if inputs.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Batch input limit of 100 exceeded",
        );
    }
    let ids: Vec<u64> = inputs
        .iter()
        .filter_map(|i| match &i["id"] {
            Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        })
        .collect();
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    for id in ids {
        inner.archive_one(&object, id, now);
    }
    drop(inner);
    sim.limit_headers(StatusCode::NO_CONTENT.into_response())
}

/// The archived objects of `object` from id `after` on, for `GET …?archived=true`.
pub(super) fn archived_page(
    sim: &HubSpotSim,
    object: &str,
    after: u64,
    limit: usize,
) -> (Vec<Value>, Option<u64>) {
    let inner = sim.lock();
    let page: Vec<_> = inner
        .archived
        .get(object)
        .map(|t| t.range_from(after).take(limit + 1).collect())
        .unwrap_or_default();
    let next = page.get(limit).map(|o| o.id);
    let results = page
        .iter()
        .take(limit)
        .map(|o| {
            let mut v = object_json(o, None);
            v["archived"] = Value::Bool(true);
            v["archivedAt"] = Value::String(super::iso(o.updated_ms));
            v
        })
        .collect();
    (results, next)
}
