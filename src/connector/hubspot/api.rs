//! HubSpot CRM v3 wire types: batch upsert, search, objects and errors (property values are strings).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /crm/v3/objects/{type}/batch/upsert` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchUpsert {
    pub inputs: Vec<UpsertInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpsertInput {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
    pub properties: Map<String, Value>,
}

/// A CRM object as HubSpot returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimplePublicObject {
    pub id: String,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub archived: Option<bool>,
    /// Batch upsert only: whether the object was created.
    #[serde(default)]
    pub new: Option<bool>,
}

/// `StandardError` inside a 207 multi-status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandardError {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub context: Map<String, Value>,
}

/// Batch response (200 or 207).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub results: Vec<SimplePublicObject>,
    #[serde(default)]
    pub errors: Vec<StandardError>,
    #[serde(default)]
    pub num_errors: Option<u32>,
}

/// `POST /crm/v3/objects/{type}/search` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    pub filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub sorts: Vec<Value>,
    #[serde(default)]
    pub properties: Vec<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterGroup {
    pub filters: Vec<Filter>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub property_name: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Search response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    pub total: u64,
    pub results: Vec<SimplePublicObject>,
    #[serde(default)]
    pub paging: Option<Paging>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paging {
    pub next: Option<NextPage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextPage {
    pub after: String,
    #[serde(default)]
    pub link: Option<String>,
}

/// The modification-time property every CRM object has.
pub const LAST_MODIFIED: &str = "hs_lastmodifieddate";
/// Search pages are at most 200 results.
pub const SEARCH_LIMIT: u32 = 200;

/// `POST /oauth/v1/token` success body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Seconds the access token stays valid.
    pub expires_in: u64,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
}

/// The 429 body: `{status, message, errorType: "RATE_LIMIT", policyName: "SECONDLY"|"DAILY", …}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub policy_name: Option<String>,
}

/// `POST /crm/v4/associations/{from}/{to}/batch/associate/default` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssociateDefault {
    pub inputs: Vec<AssociationPair>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssociationPair {
    pub from: ObjectId,
    pub to: ObjectId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectId {
    pub id: String,
}
