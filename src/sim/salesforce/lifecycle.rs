//! Salesforce simulator record lifecycle: `DELETE /composite/sobjects?ids=` (sObject
//! Collections delete: one result per id, deleted rows go to the recycle bin, which getDeleted
//! and queryAll read).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Inner, SalesforceSim, errors};

impl Inner {
    /// Removes the record with `id` from whichever object holds it, into the recycle bin
    /// (`IsDeleted` true, stamped `now`). Returns its object.
    pub(super) fn delete_id(&mut self, id: &str, now: i64) -> Result<String, &'static str> {
        if self.bin.values().any(|b| b.contains_key(id)) {
            return Err("ENTITY_IS_DELETED");
        }
        let Some(object) = self
            .objects
            .iter()
            .find(|(_, m)| m.get(id).is_some())
            .map(|(o, _)| o.clone())
        else {
            return Err("INVALID_CROSS_REFERENCE_KEY");
        };
        let Some(mut rec) = self.objects.get_mut(&object).and_then(|m| m.remove(id)) else {
            return Err("INVALID_CROSS_REFERENCE_KEY");
        };
        rec.fields.insert("IsDeleted".into(), Value::Bool(true));
        rec.modstamp_ms = now;
        self.bin
            .entry(object.clone())
            .or_default()
            .insert(id.to_owned(), rec);
        self.deleted
            .entry(object.clone())
            .or_default()
            .push((id.to_owned(), now));
        Ok(object)
    }
}

/// `DELETE /composite/sobjects?ids=a,b&allOrNone=false`: up to 200 ids, one result each.
pub(super) async fn delete_collection(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let ids: Vec<&str> = params
        .get("ids")
        .map(|s| s.split(',').filter(|i| !i.is_empty()).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return errors(
            StatusCode::BAD_REQUEST,
            "MISSING_ARGUMENT",
            "ids is required",
        );
    }
    if ids.len() > 200 {
        return errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    let results: Vec<Value> = ids
        .iter()
        .map(|id| match inner.delete_id(id, now) {
            Ok(_) => json!({"id": id, "success": true, "errors": []}),
            Err(code) => json!({
                "id": id,
                "success": false,
                "errors": [{"statusCode": code, "message": format!("{code}: {id}"), "fields": []}],
            }),
        })
        .collect();
    Json(results).into_response()
}
