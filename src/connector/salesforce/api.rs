//! Salesforce REST wire types: OAuth token responses, SOQL query pages, sObject Collections upsert
//! results, getDeleted, the error array and the `Sforce-Limit-Info` header.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The REST API version prmsync speaks (sObject Collections upsert needs v46.0 or later).
pub const API_VERSION: &str = "v62.0";
/// sObject Collections take at most 200 records per call.
pub const MAX_COLLECTION: usize = 200;
/// The modification stamp every sObject has, and what getUpdated itself uses.
pub const MODSTAMP: &str = "SystemModstamp";
/// `Sforce-Query-Options: batchSize=N` accepts 200 to 2000.
pub const QUERY_BATCH_SIZE: u32 = 2000;
/// The grant type of the OAuth 2.0 JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// `POST /services/oauth2/token` success body (refresh-token and JWT bearer flows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub instance_url: String,
    /// Present only when refresh-token rotation is on (refresh flow) — never for JWT bearer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `{error, error_description}` from the token endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// One element of Salesforce's error array: `[{"message", "errorCode", "fields"}]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// A per-record error inside a collections result: `{statusCode, message, fields}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveError {
    #[serde(default)]
    pub status_code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// `GET /query` and `GET nextRecordsUrl` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    pub total_size: u64,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_records_url: Option<String>,
    pub records: Vec<Map<String, Value>>,
}

/// `PATCH /composite/sobjects/{SObject}/{ExtIdField}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionUpsert {
    pub all_or_none: bool,
    pub records: Vec<Map<String, Value>>,
}

/// One UpsertResult, in input order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpsertResult {
    #[serde(default)]
    pub id: Option<String>,
    pub success: bool,
    #[serde(default)]
    pub created: Option<bool>,
    #[serde(default)]
    pub errors: Vec<SaveError>,
}

/// `GET /sobjects/{SObject}/deleted/?start=&end=` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedResponse {
    pub deleted_records: Vec<DeletedRecord>,
    #[serde(default)]
    pub earliest_date_available: Option<String>,
    #[serde(default)]
    pub latest_date_covered: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedRecord {
    pub id: String,
    pub deleted_date: String,
}

/// API usage from `Sforce-Limit-Info: api-usage=18/15000` (other parts are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitInfo {
    pub used: u64,
    pub max: u64,
}

impl LimitInfo {
    /// Parses the header; `None` when it carries no `api-usage` part.
    pub fn parse(header: &str) -> Option<LimitInfo> {
        header.split(',').find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            if k.trim() != "api-usage" {
                return None;
            }
            let (used, max) = v.trim().split_once('/')?;
            Some(LimitInfo {
                used: used.trim().parse().ok()?,
                max: max.trim().parse().ok()?,
            })
        })
    }
}

/// Salesforce datetimes: `2026-11-24T04:00:00.000+0000` (also accepts RFC 3339 `Z`/`+00:00`).
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f%z", s)
        .ok()?
        .to_timestamp()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Formats epoch milliseconds as Salesforce does: `2026-11-24T04:00:00.000+0000`.
pub fn format_datetime(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
}

/// A SOQL datetime literal (UTC, no quotes) in the documented `YYYY-MM-DDThh:mm:ssZ` form. The
/// milliseconds are dropped (floored), so a `>=` filter reads slightly more, never less.
pub fn soql_datetime(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms.div_euclid(1000) * 1000)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limit_info_variants() {
        let check = |h: &str, want: Option<(u64, u64)>| {
            assert_eq!(LimitInfo::parse(h).map(|l| (l.used, l.max)), want, "{h}");
        };
        check("api-usage=10018/100000", Some((10018, 100000)));
        check(
            "api-usage=18/15000, per-app-api-usage=17/250(appName=sample)",
            Some((18, 15000)),
        );
        check("api-bursts=1/750,api-usage=3/5", Some((3, 5)));
        check("per-app-api-usage=17/250(appName=x)", None);
        check("api-usage=lots", None);
    }

    #[test]
    fn datetimes_round_trip_in_salesforce_form() {
        let ms = 1_764_000_000_123;
        let s = format_datetime(ms);
        assert!(s.ends_with(".123+0000"), "{s}");
        assert_eq!(parse_datetime(&s), Some(ms));
        assert_eq!(soql_datetime(ms), "2025-11-24T16:00:00Z");
        assert_eq!(parse_datetime(&soql_datetime(ms)), Some(ms - 123));
        assert_eq!(parse_datetime("yesterday"), None);
    }
}
