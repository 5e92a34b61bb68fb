//! The raw serde mirror of the config file: exactly the TOML keys, defaults defined once, no checks.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Every default value, in one place.
pub mod defaults {
    pub const STATE_PATH: &str = "/var/lib/prmsync/state.db";
    /// The PostgreSQL schema of a `state.url` state.
    pub const STATE_SCHEMA: &str = "prmsync";
    pub const LEASE_SECS: u64 = 30;
    pub const POLL_INTERVAL_SECS: u64 = 30;
    pub const BATCH_SIZE: usize = 100;
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 20;
    pub const MAX_ATTEMPTS: u32 = 8;
    pub const LISTEN: &str = "127.0.0.1:8787";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:8788";
    /// Below this much free space on the state file's volume, `/readyz` answers 503.
    pub const ADMIN_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    pub const LOG_FORMAT: &str = "auto";
    pub const LOG_LEVEL: &str = "info";
    pub const REQUEST_TIMEOUT_SECS: u64 = 30;
    /// A stage task quiet this long stops the systemd watchdog pings (at least; see
    /// `config::stall_timeout_default`).
    pub const STALL_TIMEOUT_SECS: u64 = 300;
    /// How often the daemon reads the CRM's live schema again (also at start and on reload).
    pub const SCHEMA_CHECK_SECS: u64 = 900;
    pub const PARTNERSTACK_BASE_URL: &str = "https://api.partnerstack.com/api/v2";
    pub const HUBSPOT_BASE_URL: &str = "https://api.hubapi.com";
    pub const SALESFORCE_LOGIN_URL: &str = "https://login.salesforce.com";
    pub const RETENTION_INBOX_DAYS: u64 = 7;
    pub const RETENTION_LEDGER_DAYS: u64 = 90;
    pub const RETENTION_REGISTRATION_EVENTS_DAYS: u64 = 90;
    pub const RETENTION_INTERVAL_SECS: u64 = 3600;
    /// Personal fields `prmsync erase` blanks on records that keep existing: the PRM's deal
    /// contact, HubSpot and Salesforce person fields, and the deal flow's copy of the email.
    pub const ERASURE_FIELDS: &[&str] = &[
        "contact_email",
        "contact_first_name",
        "contact_last_name",
        "contact_phone",
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "prm_contact_email",
        "Email",
        "FirstName",
        "LastName",
        "Phone",
        "MobilePhone",
    ];
}

/// The top-level sections. Each is read on its own so that mistakes in several sections are all
/// reported; see `super::load`.
pub const SECTIONS: &[&str] = &[
    "daemon",
    "log",
    "http",
    "admin",
    "partnerstack",
    "hubspot",
    "salesforce",
    "rest",
    "retention",
    "erasure",
    "state",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDaemon {
    pub state_path: String,
    pub mappings_dir: Option<String>,
    pub poll_interval_secs: u64,
    pub batch_size: usize,
    pub shutdown_timeout_secs: u64,
    pub max_attempts: u32,
    pub request_timeout_secs: u64,
    /// `None`: derived from the poll interval and request timeout.
    pub stall_timeout_secs: Option<u64>,
    pub schema_check_secs: u64,
    /// The key that seals saved credentials (rotated refresh tokens) in the state file.
    pub state_key: Option<RawSecret>,
    /// One folder per tenant (`config::tenants`); set, the file configures the process only.
    pub tenants_dir: Option<String>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            state_path: defaults::STATE_PATH.into(),
            mappings_dir: None,
            poll_interval_secs: defaults::POLL_INTERVAL_SECS,
            batch_size: defaults::BATCH_SIZE,
            shutdown_timeout_secs: defaults::SHUTDOWN_TIMEOUT_SECS,
            max_attempts: defaults::MAX_ATTEMPTS,
            request_timeout_secs: defaults::REQUEST_TIMEOUT_SECS,
            stall_timeout_secs: None,
            schema_check_secs: defaults::SCHEMA_CHECK_SECS,
            state_key: None,
            tenants_dir: None,
        }
    }
}

/// `[state]`: where the state lives when it is not the SQLite file `daemon.state_path`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    /// `postgres://user@host:port/db`, or a secret reference to it (it may hold a password).
    pub url: Option<RawStateUrl>,
    /// The PostgreSQL schema of this state (default `prmsync`).
    pub schema: Option<String>,
    /// Fleet mode (`daemon.tenants_dir` with a PostgreSQL state): seconds a tenant's lease lasts
    /// without a heartbeat (default 30).
    pub lease_secs: Option<u64>,
}

/// A state URL written in the file, or read like any other secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStateUrl {
    Plain(String),
    Secret(RawSecret),
}

/// `[retention]`: how long history is kept (0 = forever, except the inbox) and how often it is pruned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    pub inbox_days: u64,
    pub ledger_days: u64,
    pub registration_events_days: u64,
    pub interval_secs: u64,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            inbox_days: defaults::RETENTION_INBOX_DAYS,
            ledger_days: defaults::RETENTION_LEDGER_DAYS,
            registration_events_days: defaults::RETENTION_REGISTRATION_EVENTS_DAYS,
            interval_secs: defaults::RETENTION_INTERVAL_SECS,
        }
    }
}

/// `[erasure]`: what `prmsync erase` and HubSpot's `contact.privacyDeletion` do to a person's
/// records in the systems (see `docs/mappings.md`, "Erasure").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawErasure {
    /// The person's own CRM record (HubSpot contact, Salesforce Contact or Lead): "delete"
    /// (HubSpot gdpr-delete, Salesforce delete) or "scrub" (blank the personal fields).
    pub crm_person: String,
    /// The PRM records that hold the person: "scrub" or "keep".
    pub prm: String,
    /// The personal fields blanked on records that keep existing (both systems).
    pub fields: Vec<String>,
}

impl Default for RawErasure {
    fn default() -> Self {
        RawErasure {
            crm_person: "delete".into(),
            prm: "scrub".into(),
            fields: defaults::ERASURE_FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
    pub redact_personal_data: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: defaults::LOG_FORMAT.into(),
            level: defaults::LOG_LEVEL.into(),
            redact_personal_data: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    pub max_body_bytes: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: defaults::LISTEN.into(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
    pub allow_remote: bool,
    pub min_free_bytes: u64,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: defaults::ADMIN_LISTEN.into(),
            allow_remote: false,
            min_free_bytes: defaults::ADMIN_MIN_FREE_BYTES,
        }
    }
}

/// Where a secret comes from: an environment variable, a file, or a systemd credential.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub env: Option<String>,
    pub file: Option<String>,
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartnerStack {
    #[serde(default = "partnerstack_base_url")]
    pub base_url: String,
    pub api_key: Option<RawSecret>,
    /// The public key: with it, requests use HTTP Basic (public key : `api_key` as the secret
    /// key) instead of `Authorization: Bearer <api_key>`.
    pub public_key: Option<RawSecret>,
    pub webhook_secret: Option<RawSecret>,
    /// The short-window limit the account allows, when it is known to differ from prmsync's
    /// default (25 per second; PartnerStack publishes none): `{ requests = 50, window_ms = 1000 }`.
    pub rate_limit: Option<RawRateLimit>,
}

fn partnerstack_base_url() -> String {
    defaults::PARTNERSTACK_BASE_URL.into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHubSpot {
    #[serde(default = "hubspot_base_url")]
    pub base_url: String,
    pub access_token: Option<RawSecret>,
    pub client_secret: Option<RawSecret>,
    /// OAuth apps: the app's client id; with `refresh_token` it replaces `access_token`.
    pub client_id: Option<String>,
    pub refresh_token: Option<RawSecret>,
    /// The portal's short-window limit, when its tier allows more than the documented lowest
    /// (100 per 10 s): `{ requests = 190, window_ms = 10000 }`.
    pub rate_limit: Option<RawRateLimit>,
}

/// At most `requests` in any rolling window of `window_ms`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests: u32,
    pub window_ms: u64,
}

fn hubspot_base_url() -> String {
    defaults::HUBSPOT_BASE_URL.into()
}

/// `[salesforce]`: `auth = "refresh_token"` (client_id, client_secret, refresh_token) or
/// `auth = "jwt_bearer"` (client_id, username, private_key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSalesforce {
    #[serde(default = "salesforce_login_url")]
    pub login_url: String,
    pub auth: String,
    pub client_id: String,
    pub client_secret: Option<RawSecret>,
    pub refresh_token: Option<RawSecret>,
    pub username: Option<String>,
    /// PEM RSA private key whose certificate is uploaded to the connected app.
    pub private_key: Option<RawSecret>,
    /// The JWT `aud` claim; by default `https://login.salesforce.com`, or
    /// `https://test.salesforce.com` for a sandbox login URL (set it for a community URL).
    pub audience: Option<String>,
    /// The short-window pace for the org, when it should differ from the default 25 per second:
    /// `{ requests = 50, window_ms = 1000 }` (the daily allocation stays the documented one).
    pub rate_limit: Option<RawRateLimit>,
}

fn salesforce_login_url() -> String {
    defaults::SALESFORCE_LOGIN_URL.into()
}

/// `[rest]`: a PRM described declaratively (see docs/connectors.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRest {
    pub base_url: String,
    #[serde(default = "rest_auth_header")]
    pub auth_header: String,
    /// The header value; `{token}` is replaced by the secret.
    #[serde(default = "rest_auth_template")]
    pub auth_template: String,
    pub token: Option<RawSecret>,
    #[serde(default = "rest_page_size")]
    pub page_size: u32,
    /// Requests per second the PRM allows (for the rate budget).
    pub rate_limit_per_second: Option<u32>,
    /// Shared secret for `/webhooks/rest` (HMAC-SHA256 of the body); webhooks off when absent.
    pub webhook_secret: Option<RawSecret>,
    #[serde(default)]
    pub objects: BTreeMap<String, RawRestObject>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRestObject {
    pub list_path: String,
    pub upsert_path: Option<String>,
    pub upsert_method: String,
    pub items_field: String,
    pub id_field: String,
    pub cursor_field: String,
    pub since_param: String,
    pub since_format: String,
    pub limit_param: String,
    /// `page_token` or `offset`.
    pub paging: String,
    pub page_token_param: String,
    pub next_token_field: String,
    pub offset_param: String,
}

impl Default for RawRestObject {
    fn default() -> Self {
        RawRestObject {
            list_path: String::new(),
            upsert_path: None,
            upsert_method: "PUT".into(),
            items_field: "items".into(),
            id_field: "id".into(),
            cursor_field: "updated_at".into(),
            since_param: "updated_since".into(),
            since_format: "epoch_ms".into(),
            limit_param: "limit".into(),
            paging: "page_token".into(),
            page_token_param: "page_token".into(),
            next_token_field: "next_page_token".into(),
            offset_param: "offset".into(),
        }
    }
}

fn rest_auth_header() -> String {
    "Authorization".into()
}

fn rest_auth_template() -> String {
    "Bearer {token}".into()
}

fn rest_page_size() -> u32 {
    100
}
