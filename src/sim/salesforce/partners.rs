//! The Salesforce simulator's partners on opportunities: `POST /sobjects/Partner` creates a
//! `Partner` row (checked as Salesforce does: `OpportunityId` or `AccountFromId` but not both,
//! `AccountToId` required, both ids naming records of the right object, `Role` one of the org's
//! partner roles, a new primary demoting the opportunity's other primary rows); rows are read by
//! SOQL and deleted through `DELETE /composite/sobjects` like any record. `Partner` rows cannot
//! be updated, and `OpportunityPartner` (which Salesforce derives from them) is read-only:
//! writes to either are refused.
//!
//! Many orgs keep partner credit in a custom object instead: the org has one,
//! `Partner_Credit__c` (lookups `Opportunity__c` and `Account__c`, restricted picklist `Role__c`
//! of the partner roles, checkbox `Primary__c`), defined here like the standard objects, so the
//! schema that answers `describe` also checks its writes. `POST /sobjects/{SObject}` creates a
//! record of any object the org has (Partner's own checks above), checked against that schema
//! and its lookups.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Describe, SalesforceSim, errors, insert_rec};

/// The `Partner` sObject's fields (Salesforce Object Reference, Partner), then the custom
/// partner-credit object the org has (its admin's choice of names, created at install).
pub(super) const OBJECTS: &[Describe] = &[
    Describe {
        name: "Partner",
        prefix: "00I",
        fields: &[
            "OpportunityId",
            "AccountFromId",
            "AccountToId",
            "Role",
            "IsPrimary",
            "ReversePartnerId",
        ],
        external_ids: &[],
        required: &["AccountToId"],
    },
    Describe {
        name: CUSTOM,
        prefix: "a0P",
        fields: &["Opportunity__c", "Account__c", "Role__c", "Primary__c"],
        external_ids: &[],
        required: &["Opportunity__c", "Account__c"],
    },
];

/// The custom partner-credit object's API name.
pub const CUSTOM: &str = "Partner_Credit__c";

/// Lookup fields of custom objects: (object, field, the object it points at).
pub(super) const LOOKUPS: &[(&str, &str, &str)] = &[
    (CUSTOM, "Opportunity__c", "Opportunity"),
    (CUSTOM, "Account__c", "Account"),
];

/// The org's partner roles (Setup > Partner Roles): Salesforce's samples plus the ones
/// prmsync's install adds for its rules file's defaults.
pub const DEFAULT_ROLES: &[&str] = &[
    "System Integrator",
    "Consultant",
    "Distributor",
    "Sourcing Partner",
    "Influencer",
    "Referral",
    "Reseller",
];

/// The partner routes under `data` (`/services/data/vXX.X`).
pub(super) fn routes(router: Router<SalesforceSim>, data: &str) -> Router<SalesforceSim> {
    router
        .route(&format!("{data}/sobjects/Partner"), post(create))
        .route(&format!("{data}/sobjects/{{object}}"), post(create_any))
        .route(&format!("{data}/sobjects/Partner/{{id}}"), patch(no_update))
        .route(
            &format!("{data}/sobjects/OpportunityPartner"),
            post(read_only),
        )
        .route(
            &format!("{data}/sobjects/OpportunityPartner/{{id}}"),
            patch(read_only),
        )
}

impl SalesforceSim {
    /// Replaces the org's partner roles.
    pub fn set_partner_roles(&self, roles: &[&str]) {
        self.lock().partner_roles = Some(roles.iter().map(|r| (*r).to_owned()).collect());
    }
}

fn text<'a>(body: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a str> {
    body.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn create(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(Json(Value::Object(body))) = body else {
        return errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "the body must be a JSON object",
        );
    };
    let d = &OBJECTS[0];
    if let Some(f) = body
        .keys()
        .find(|k| !d.fields.contains(&k.as_str()) || *k == "ReversePartnerId")
    {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            &format!("Unable to create/update fields: {f}."),
        );
    }
    let (opp, from, to) = (
        text(&body, "OpportunityId"),
        text(&body, "AccountFromId"),
        text(&body, "AccountToId"),
    );
    match (opp, from) {
        (Some(_), Some(_)) => {
            return errors(
                StatusCode::BAD_REQUEST,
                "FIELD_INTEGRITY_EXCEPTION",
                "OpportunityId and AccountFromId cannot both be set",
            );
        }
        (None, None) => {
            return errors(
                StatusCode::BAD_REQUEST,
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [OpportunityId or AccountFromId]",
            );
        }
        _ => {}
    }
    let Some(to) = to else {
        return errors(
            StatusCode::BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [AccountToId]",
        );
    };
    if let Some(p) = body.get("IsPrimary")
        && !p.is_boolean()
    {
        return errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "IsPrimary must be a boolean",
        );
    }
    let primary = body.get("IsPrimary").and_then(Value::as_bool) == Some(true);
    if primary && opp.is_none() {
        return errors(
            StatusCode::BAD_REQUEST,
            "FIELD_INTEGRITY_EXCEPTION",
            "IsPrimary is valid for opportunity partners only",
        );
    }
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    let exists = |object: &str, id: &str| {
        inner
            .objects
            .get(object)
            .is_some_and(|t| t.get(id).is_some())
    };
    for (field, object, id) in [
        ("OpportunityId", "Opportunity", opp),
        ("AccountFromId", "Account", from),
        ("AccountToId", "Account", Some(to)),
    ] {
        if let Some(id) = id
            && !exists(object, id)
        {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_CROSS_REFERENCE_KEY",
                &format!("invalid cross reference id: {field} {id} is not an {object}"),
            );
        }
    }
    let role = text(&body, "Role").unwrap_or("");
    let known = inner.partner_roles.as_ref().map_or_else(
        || DEFAULT_ROLES.contains(&role),
        |roles| roles.iter().any(|r| r == role),
    );
    if !role.is_empty() && !known {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            &format!("Role: bad value for restricted picklist field: {role}"),
        );
    }
    if let (true, Some(opp)) = (primary, opp) {
        // Only one primary per opportunity: the new one takes the flag.
        let table = inner.objects.entry("Partner".into()).or_default();
        let others: Vec<String> = table
            .iter()
            .filter(|r| {
                r.fields.get("OpportunityId").and_then(Value::as_str) == Some(opp)
                    && r.fields.get("IsPrimary").and_then(Value::as_bool) == Some(true)
            })
            .filter_map(|r| {
                r.fields
                    .get("Id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        for id in others {
            if let Some(mut r) = table.get(&id).cloned() {
                r.fields.insert("IsPrimary".into(), json!(false));
                r.modstamp_ms = now;
                table.put(&id, r);
            }
        }
    }
    let mut fields = body.clone();
    fields.insert("IsPrimary".into(), json!(primary));
    let id = insert_rec(&mut inner, "Partner", fields, now);
    inner.stats.created += 1;
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "success": true, "errors": []})),
    )
        .into_response()
}

async fn no_update(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path(_id): Path<String>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    errors(
        StatusCode::BAD_REQUEST,
        "INVALID_TYPE_FOR_OPERATION",
        "entity type Partner does not support update",
    )
}

async fn read_only(State(sim): State<SalesforceSim>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    errors(
        StatusCode::BAD_REQUEST,
        "INVALID_TYPE_FOR_OPERATION",
        "entity type OpportunityPartner does not support create or update: write Partner rows",
    )
}

/// `POST /sobjects/{SObject}`: one record of an object the org has, checked against its schema
/// (fields, access, picklists, required fields), its lookups (the id must name a record of the
/// object the lookup points at) and checkbox types.
async fn create_any(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let Some(d) = super::describe(&object) else {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    let Some(Json(Value::Object(body))) = body else {
        return errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "the body must be a JSON object",
        );
    };
    let now = sim.clock.tick();
    let mut inner = sim.lock();
    if let Err(e) = inner.schema.check(d, &body, true) {
        let code = e["statusCode"]
            .as_str()
            .unwrap_or("INVALID_FIELD")
            .to_owned();
        let message = e["message"].as_str().unwrap_or_default().to_owned();
        return errors(StatusCode::BAD_REQUEST, &code, &message);
    }
    for (k, v) in &body {
        if super::describe::is_checkbox(k) && !v.is_boolean() {
            return errors(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("Cannot deserialize instance of boolean from {v} ({k})"),
            );
        }
    }
    for (_, field, target) in LOOKUPS.iter().filter(|(o, _, _)| *o == d.name) {
        let Some(v) = body.get(*field).filter(|v| !v.is_null()) else {
            continue;
        };
        let found = v.as_str().is_some_and(|id| {
            inner
                .objects
                .get(*target)
                .is_some_and(|t| t.get(id).is_some())
        });
        if !found {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_CROSS_REFERENCE_KEY",
                &format!("invalid cross reference id: {field} {v} is not a {target}"),
            );
        }
    }
    let id = insert_rec(&mut inner, d.name, body, now);
    inner.stats.created += 1;
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "success": true, "errors": []})),
    )
        .into_response()
}
