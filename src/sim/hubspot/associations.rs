//! HubSpot simulator associations v4 with types: `batch/create` (type ids with their category;
//! refuses a type the pair does not have, a bad category, and records that do not exist),
//! `GET .../labels` (HubSpot's defined types plus the portal's own labels), and a portal admin
//! defining a label.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Call, HubSpotSim, Inner, error, iso, known_object};

/// HubSpot-defined association types per (from, to) object type: (type id, label). The
/// unlabeled default comes first. Source: HubSpot's "Associations v4" guide, "Association type
/// id values" (docs/connectors.md, Vendor facts).
pub(super) fn hubspot_defined(from: &str, to: &str) -> &'static [(u32, Option<&'static str>)] {
    match (from, to) {
        ("contacts", "companies") => &[(279, None), (1, Some("Primary"))],
        ("companies", "contacts") => &[(280, None), (2, Some("Primary"))],
        ("deals", "contacts") => &[(3, None)],
        ("contacts", "deals") => &[(4, None)],
        ("deals", "companies") => &[(341, None), (5, Some("Primary"))],
        ("companies", "deals") => &[(342, None), (6, Some("Primary"))],
        ("tasks", "contacts") => &[(204, None)],
        ("contacts", "tasks") => &[(203, None)],
        ("tasks", "companies") => &[(192, None)],
        ("companies", "tasks") => &[(191, None)],
        ("tasks", "deals") => &[(216, None)],
        ("deals", "tasks") => &[(215, None)],
        _ => &[],
    }
}

/// Whether `category`/`type_id` is a type from `from` to `to` in this portal.
fn type_known(inner: &Inner, from: &str, to: &str, category: &str, type_id: u32) -> bool {
    match category {
        "HUBSPOT_DEFINED" => hubspot_defined(from, to)
            .iter()
            .any(|(id, _)| *id == type_id),
        "USER_DEFINED" => inner
            .labels
            .iter()
            .any(|(f, t, id, _)| f == from && t == to && *id == type_id),
        _ => false,
    }
}

impl Inner {
    /// Records an association of one type, in the direction it was made.
    pub(super) fn add_association(&mut self, from: &str, f: &str, to: &str, t: &str, type_id: u32) {
        let key = (from.to_owned(), f.to_owned(), to.to_owned(), t.to_owned());
        let new = self.associations.insert(key.clone());
        self.stats.associations_created += u64::from(new);
        self.association_types
            .entry(key)
            .or_default()
            .insert(type_id);
    }

    fn exists(&self, object_type: &str, id: &str) -> bool {
        id.parse::<u64>()
            .ok()
            .is_some_and(|n| self.objects.get(object_type).is_some_and(|m| m.contains(n)))
    }
}

impl HubSpotSim {
    /// Defines a custom (`USER_DEFINED`) association label from `from` to `to`, as a portal
    /// admin would; returns its type id, which differs per portal.
    pub fn define_label(&self, from: &str, to: &str, label: &str) -> u32 {
        let mut inner = self.lock();
        let id = 100 + u32::try_from(inner.labels.len()).unwrap_or(0) * 7 + 3;
        inner
            .labels
            .push((from.to_owned(), to.to_owned(), id, label.to_owned()));
        id
    }

    /// The type ids of the association made from `from_type` `from_id` to `to_type` `to_id`.
    pub fn association_types(
        &self,
        from_type: &str,
        from_id: &str,
        to_type: &str,
        to_id: &str,
    ) -> Vec<u32> {
        let key = (
            from_type.to_owned(),
            from_id.to_owned(),
            to_type.to_owned(),
            to_id.to_owned(),
        );
        self.lock()
            .association_types
            .get(&key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// `GET /crm/v4/associations/{from}/{to}/labels`.
pub(super) async fn labels(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path((from, to)): Path<(String, String)>,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Read) {
        return r;
    }
    if !known_object(&from) || !known_object(&to) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {from}/{to}"),
        );
    }
    let mut results: Vec<Value> = hubspot_defined(&from, &to)
        .iter()
        .map(|(id, label)| json!({"category": "HUBSPOT_DEFINED", "typeId": id, "label": label}))
        .collect();
    let inner = sim.lock();
    results.extend(
        inner
            .labels
            .iter()
            .filter(|(f, t, _, _)| *f == from && *t == to)
            .map(|(_, _, id, label)| json!({"category": "USER_DEFINED", "typeId": id, "label": label})),
    );
    drop(inner);
    sim.limit_headers(Json(json!({"results": results})).into_response())
}

/// The checks every v4 batch call makes before its inputs: the token and budget, both object
/// types known (404 `OBJECT_NOT_FOUND`), and an `inputs` array (400 `VALIDATION_ERROR`).
#[allow(clippy::result_large_err)] // axum responses are the natural error here, as in `gate`
pub(super) fn batch_inputs<'a>(
    sim: &HubSpotSim,
    headers: &HeaderMap,
    call: Call,
    from: &str,
    to: &str,
    body: Option<&'a Json<Value>>,
) -> Result<&'a Vec<Value>, Response> {
    sim.gate(headers, call)?;
    if !known_object(from) || !known_object(to) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {from}/{to}"),
        ));
    }
    body.and_then(|Json(b)| b.get("inputs"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "inputs is required",
            )
        })
}

/// `POST /crm/v4/associations/{from}/{to}/batch/create`: 201 when every input was made, 207
/// with `errors` for inputs whose records do not exist; a bad category is refused whole (422,
/// as HubSpot's schema validation does), and so is a type the pair does not have (400).
pub(super) async fn batch_create(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path((from, to)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let inputs = match batch_inputs(&sim, &headers, Call::Upsert, &from, &to, body.as_ref()) {
        Ok(inputs) => inputs,
        Err(r) => return r,
    };
    let mut inner = sim.lock();
    let mut typed = Vec::with_capacity(inputs.len());
    for i in inputs {
        let types = i
            .get("types")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if types.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "types is required",
            );
        }
        let mut ids = Vec::new();
        for t in &types {
            let category = t["associationCategory"].as_str().unwrap_or("");
            if !matches!(
                category,
                "HUBSPOT_DEFINED" | "USER_DEFINED" | "INTEGRATOR_DEFINED"
            ) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "VALIDATION_ERROR",
                    &format!(
                        "associationCategory: {category:?} is not one of HUBSPOT_DEFINED, USER_DEFINED, INTEGRATOR_DEFINED"
                    ),
                );
            }
            let id = t["associationTypeId"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok());
            match id.filter(|id| type_known(&inner, &from, &to, category, *id)) {
                Some(id) => ids.push(id),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "VALIDATION_ERROR",
                        &format!(
                            "{category} association type {} is not valid from {from} to {to}",
                            t["associationTypeId"]
                        ),
                    );
                }
            }
        }
        typed.push((i, ids));
    }
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (i, ids) in typed {
        let f = i.pointer("/from/id").and_then(Value::as_str).unwrap_or("");
        let t = i.pointer("/to/id").and_then(Value::as_str).unwrap_or("");
        if inner.exists(&from, f) && inner.exists(&to, t) {
            for id in &ids {
                inner.add_association(&from, f, &to, t, *id);
            }
            let labels: Vec<&str> = ids
                .iter()
                .filter_map(|id| {
                    hubspot_defined(&from, &to)
                        .iter()
                        .find(|(x, _)| x == id)
                        .and_then(|(_, l)| *l)
                        .or_else(|| {
                            inner
                                .labels
                                .iter()
                                .find(|(a, b, x, _)| *a == from && *b == to && x == id)
                                .map(|(_, _, _, l)| l.as_str())
                        })
                })
                .collect();
            results.push(json!({"fromObjectTypeId": from, "fromObjectId": f.parse::<u64>().unwrap_or(0),
                "toObjectTypeId": to, "toObjectId": t.parse::<u64>().unwrap_or(0), "labels": labels}));
        } else {
            errors.push(
                json!({"status": "error", "errors": [], "links": {}, "category": "VALIDATION_ERROR",
                "message": format!("No {from} {f} or {to} {t}"),
                "context": {"fromObjectId": [f], "toObjectId": [t]}}),
            );
        }
    }
    drop(inner);
    let now = iso(sim.clock.tick());
    let status = if errors.is_empty() {
        StatusCode::CREATED
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut body =
        json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
    if !errors.is_empty() {
        body["numErrors"] = json!(errors.len());
        body["errors"] = json!(errors);
    }
    sim.limit_headers((status, Json(body)).into_response())
}
