//! HubSpot GDPR deletion: `POST /crm/v3/objects/contacts/gdpr-delete` `{objectId, idProperty?}`
//! permanently deletes a contact (by id, or by email with `idProperty: "email"`).

use serde_json::json;

use super::HubSpot;
use crate::connector::ConnectorError;

impl HubSpot {
    /// GDPR-deletes the contact `id` (a record id, or an email address with `by_email`).
    /// Returns `false` when HubSpot has no such contact (404), which counts as done.
    pub async fn gdpr_delete(&self, id: &str, by_email: bool) -> Result<bool, ConnectorError> {
        let mut body = json!({ "objectId": id });
        if by_email {
            body["idProperty"] = json!("email");
        }
        let url = self.url("crm/v3/objects/contacts/gdpr-delete");
        match self.send(self.http.post(url).json(&body)).await {
            Ok(_) => Ok(true),
            Err(ConnectorError::Permanent(detail)) if detail.starts_with("HTTP 404") => Ok(false),
            Err(e) => Err(e),
        }
    }
}
