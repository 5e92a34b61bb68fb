//! HubSpot simulator: `POST /crm/v4/associations/{from}/{to}/batch/labels/archive` removes the
//! given types from associations (the pair stays associated with its default type, as HubSpot
//! keeps an association whose labels are removed); a type the pair does not have is ignored, a
//! bad category is refused whole (422).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::associations::hubspot_defined;
use super::{Call, HubSpotSim, error};

pub(super) async fn archive_labels(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path((from, to)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let inputs = match super::associations::batch_inputs(
        &sim,
        &headers,
        Call::Upsert,
        &from,
        &to,
        body.as_ref(),
    ) {
        Ok(inputs) => inputs,
        Err(r) => return r,
    };
    let mut removals = Vec::new();
    for i in inputs {
        let f = i.pointer("/from/id").and_then(Value::as_str).unwrap_or("");
        let t = i.pointer("/to/id").and_then(Value::as_str).unwrap_or("");
        for ty in i
            .get("types")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let category = ty["associationCategory"].as_str().unwrap_or("");
            if !matches!(
                category,
                "HUBSPOT_DEFINED" | "USER_DEFINED" | "INTEGRATOR_DEFINED"
            ) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "VALIDATION_ERROR",
                    &format!("associationCategory: {category:?} is not valid"),
                );
            }
            if let Some(id) = ty["associationTypeId"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
            {
                removals.push((f.to_owned(), t.to_owned(), id));
            }
        }
    }
    let default = hubspot_defined(&from, &to).first().map(|(id, _)| *id);
    let mut inner = sim.lock();
    for (f, t, id) in removals {
        let key = (from.clone(), f, to.clone(), t);
        if let Some(types) = inner.association_types.get_mut(&key) {
            types.remove(&id);
            if types.is_empty()
                && let Some(d) = default
            {
                types.insert(d);
            }
        }
    }
    drop(inner);
    sim.limit_headers(StatusCode::NO_CONTENT.into_response())
}
