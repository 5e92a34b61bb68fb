//! PartnerStack REST v2 wire types: the `{data, message, status}` envelope and list pages.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"data": {...}, "message": "...", "status": 200}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<Value>,
}

/// `{"has_more": bool, "items": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPage {
    pub has_more: bool,
    pub items: Vec<Map<String, Value>>,
}

/// Cursor paging page size (the API allows 1 to 250).
pub const PAGE_LIMIT: usize = 250;
