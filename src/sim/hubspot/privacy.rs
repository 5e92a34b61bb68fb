//! HubSpot simulator GDPR deletion: `POST /crm/v3/objects/contacts/gdpr-delete`
//! `{objectId, idProperty?}` deletes a contact for good (not archived, not restorable) and queues
//! a `contact.privacyDeletion` webhook event; and that event's shape for tests.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Call, HubSpotSim, Inner, error};

impl Inner {
    /// Deletes the contact `id` (or the one whose email is `id` with `by_email`) for good; its id
    /// when there was one.
    fn gdpr_delete_one(&mut self, id: &str, by_email: bool) -> Option<u64> {
        let table = self.objects.get_mut("contacts")?;
        let id = if by_email {
            *table.find("email", id, true).first()?
        } else {
            id.parse().ok()?
        };
        table.remove(id)?;
        self.queue_event("contacts", id, "privacyDeletion", None);
        Some(id)
    }
}

impl HubSpotSim {
    /// A user deletes a contact for privacy reasons in HubSpot (the GDPR delete in the UI); it
    /// queues a `contact.privacyDeletion` event. False when there is no such contact.
    pub fn gdpr_delete(&self, id: &str) -> bool {
        self.lock().gdpr_delete_one(id, false).is_some()
    }
}

/// `POST /crm/v3/objects/contacts/gdpr-delete` → 204, or 404 when no contact matches.
pub(super) async fn gdpr_delete(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Read) {
        return r;
    }
    let Some(object_id) = body.as_ref().and_then(|b| match &b["objectId"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON: objectId is required",
        );
    };
    let by_email = match body.as_ref().map(|b| &b["idProperty"]) {
        None | Some(Value::Null) => false,
        Some(Value::String(p)) if p == "email" => true,
        Some(p) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("idProperty {p} is not a unique contact property"),
            );
        }
    };
    if sim.lock().gdpr_delete_one(&object_id, by_email).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        );
    }
    sim.limit_headers(StatusCode::NO_CONTENT.into_response())
}

/// A `contact.privacyDeletion` event as HubSpot sends it (thin: the contact's id only).
pub fn privacy_deletion_event(event_id: u64, contact_id: &str) -> Value {
    json!({
        "eventId": event_id,
        "subscriptionId": 4243,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": jiff::Timestamp::now().as_millisecond(),
        "subscriptionType": "contact.privacyDeletion",
        "attemptNumber": 0,
        "objectId": contact_id.parse::<u64>().unwrap_or_default(),
        "changeSource": "GDPR",
    })
}
