//! Configuration: one TOML file plus `PRMSYNC__` environment overrides, validated into a typed
//! [`Config`]. Every problem is collected with its key path and a hint; loading never writes.

mod raw;
pub mod tenants;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

pub use raw::defaults;
use raw::{
    RawAdmin, RawDaemon, RawErasure, RawHttp, RawHubSpot, RawLog, RawPartnerStack, RawRest,
    RawRetention, RawSalesforce, RawSecret,
};
pub use tenants::{FleetConfig, Loaded, TENANT_FILE, load_any, load_tenant, tenant_names};

use crate::connector::rest::{Paging, RestObject, RestProfile, SinceFormat, UpsertMethod};

/// Environment variables that override config keys start with this, e.g.
/// `PRMSYNC__DAEMON__POLL_INTERVAL_SECS=10` sets `daemon.poll_interval_secs`.
pub const ENV_PREFIX: &str = "PRMSYNC";

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: DaemonConfig,
    /// `[state]`: a PostgreSQL state instead of the SQLite file (default: the file).
    pub state: StateConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub prm: PrmConfig,
    pub crm: CrmConfig,
    pub retention: RetentionConfig,
    pub erasure: ErasureConfig,
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `state.url` (+ `state.schema`): a schema of a PostgreSQL database; `None`: the SQLite file
    /// `daemon.state_path`.
    pub postgres: Option<crate::store::pg::PgTarget>,
    /// `state.lease_secs`: how long a tenant's lease lasts without a heartbeat (fleet mode only).
    pub lease: Duration,
    /// This is a tenant of a fleet on PostgreSQL: the daemon holding the tenant's lease, not a
    /// schema lock, is the one that plans and erases for it.
    pub fleet: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            postgres: None,
            lease: Duration::from_secs(defaults::LEASE_SECS),
            fleet: false,
        }
    }
}

/// `[erasure]`: what an erasure does to the person's records in the systems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureConfig {
    /// Delete the person's own CRM record (HubSpot gdpr-delete, Salesforce delete); `false`:
    /// blank its personal fields.
    pub delete_crm_person: bool,
    /// Blank the personal fields of the PRM records that hold the person; `false`: leave them.
    pub scrub_prm: bool,
    /// The personal fields blanked on records that keep existing.
    pub fields: Vec<String>,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        ErasureConfig {
            delete_crm_person: true,
            scrub_prm: true,
            fields: defaults::ERASURE_FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
        }
    }
}

/// `[retention]`: what the state file keeps, and how often the pruning task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    pub policy: crate::store::RetentionPolicy,
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            policy: crate::store::RetentionPolicy::default(),
            interval: Duration::from_secs(defaults::RETENTION_INTERVAL_SECS),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_path: PathBuf,
    /// `None`: the mapping set built into the binary (the files shipped in `mappings/`).
    pub mappings_dir: Option<PathBuf>,
    pub poll_interval: Duration,
    pub batch_size: usize,
    pub shutdown_timeout: Duration,
    pub max_attempts: u32,
    pub request_timeout: Duration,
    /// A stage task (poller, planner, decider, writer) that has not finished a cycle for this
    /// long stops the systemd watchdog pings, so systemd restarts the service.
    pub stall_timeout: Duration,
    /// How often the live schema of the CRM objects the flows write is read again (also at
    /// start and on reload); a drifted mapped field is left out of writes until it fits again.
    pub schema_check: Duration,
    /// `daemon.state_key`: seals saved credentials (rotated refresh tokens, the last session);
    /// required with Salesforce `auth = "refresh_token"`.
    pub state_key: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald fields when systemd runs prmsync (`JOURNAL_STREAM` is stderr), human text otherwise.
    Auto,
    Human,
    Json,
    Journald,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// Replace emails, phone numbers and person names in logs (secrets are always replaced).
    pub redact_personal_data: bool,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
}

/// The admin listener: `/metrics`, `/livez`, `/readyz`, apart from the webhooks.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Allows a non-loopback `listen` (metrics and health are then reachable from the network).
    pub allow_remote: bool,
    /// `/readyz` answers 503 when the state file's volume has less free space than this.
    pub min_free_bytes: u64,
}

/// Refuses a non-loopback admin address unless `allow_remote` says so.
pub fn check_admin_bind(listen: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if listen.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "{listen} is not a loopback address; /metrics and /readyz would be reachable from the network"
        ))
    }
}

/// The partner system.
#[derive(Debug, Clone)]
pub enum PrmConfig {
    PartnerStack(PartnerStackConfig),
    Rest(RestConfig),
}

/// A PRM reached through the declarative `rest` profile.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub profile: RestProfile,
    pub rate_limit_per_second: Option<u32>,
    pub webhook_secret: Option<SecretString>,
}

/// The CRM.
#[derive(Debug, Clone)]
pub enum CrmConfig {
    HubSpot(HubSpotConfig),
    Salesforce(SalesforceConfig),
}

#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// `https://login.salesforce.com`, `https://test.salesforce.com` or the org's My Domain.
    pub login_url: reqwest::Url,
    pub auth: SalesforceAuthConfig,
    /// `salesforce.audience`: the JWT `aud` claim when it is neither the login nor the test URL
    /// (a community URL); `None` derives it from `login_url`.
    pub audience: Option<String>,
    /// `salesforce.rate_limit`: the org's short-window pace; `None` is the default.
    pub rate_limit: Option<crate::connector::Rate>,
}

/// How prmsync authenticates to Salesforce.
#[derive(Debug, Clone)]
pub enum SalesforceAuthConfig {
    /// OAuth 2.0 refresh-token flow; rotated refresh tokens are kept in the state file.
    RefreshToken {
        client_id: String,
        client_secret: Option<SecretString>,
        refresh_token: SecretString,
    },
    /// OAuth 2.0 JWT bearer flow (RS256) for a pre-authorized user.
    JwtBearer {
        client_id: String,
        username: String,
        /// PEM private key.
        private_key: SecretString,
    },
}

#[derive(Debug, Clone)]
pub struct PartnerStackConfig {
    pub base_url: reqwest::Url,
    pub api_key: SecretString,
    /// `partnerstack.public_key`: when set, HTTP Basic auth with the public key and `api_key` (the
    /// secret key) instead of a bearer `api_key`.
    pub public_key: Option<SecretString>,
    /// Shared secret for the webhook endpoint (HMAC-SHA256 of the body); webhooks off when absent.
    pub webhook_secret: Option<SecretString>,
    /// `partnerstack.rate_limit`: the account's short-window limit; `None` is the default.
    pub rate_limit: Option<crate::connector::Rate>,
}

#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    pub base_url: reqwest::Url,
    pub access_token: SecretString,
    /// The app's client secret, used to verify webhook signatures; webhooks off when absent.
    pub client_secret: Option<SecretString>,
    /// OAuth installation (refresh token + client id; the client secret above): when set, access
    /// tokens are obtained and refreshed ahead of `expires_in` instead of `access_token`.
    pub oauth: Option<HubSpotOAuthConfig>,
    /// `hubspot.rate_limit`: the tier's short-window limit; `None` is the documented lowest.
    pub rate_limit: Option<crate::connector::Rate>,
}

#[derive(Debug, Clone)]
pub struct HubSpotOAuthConfig {
    pub client_id: String,
    pub refresh_token: SecretString,
}

/// One problem in the configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} problem(s) in {}:",
            self.errors.len(),
            self.file.display()
        )?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where secrets and overrides come from: the process environment, injected so tests need not
/// change it.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: HashMap<String, String>,
}

impl Environment {
    /// A snapshot of the process environment (called from `main`).
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars().collect(),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
}

/// Loads and validates the config file at `path`, applying `PRMSYNC__*` overrides from `env`.
/// A file that runs several tenants (`daemon.tenants_dir`) is refused here: its tenants are
/// loaded with [`load_tenant`] (see [`load_any`]).
pub fn load(path: &Path, env: &Environment) -> Result<Config, ConfigErrors> {
    match load_any(path, env)? {
        Loaded::Single(config) => Ok(*config),
        Loaded::Tenants(fleet) => Err(ConfigErrors {
            file: path.to_owned(),
            errors: vec![ConfigError {
                key: "daemon.tenants_dir".into(),
                message: format!(
                    "this config runs the tenants in {}",
                    fleet.tenants_dir.display()
                ),
                hint: Some("name one with --tenant NAME".into()),
            }],
        }),
    }
}

/// The file at `path` with `PRMSYNC__*` overrides from `env`, parsed but not validated.
fn build(path: &Path, env: &Environment) -> Result<config::Config, ConfigErrors> {
    let overrides: config::Map<String, String> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        )
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| unreadable(path, &e))
}

/// A file that is missing or not valid TOML.
fn unreadable(path: &Path, e: &config::ConfigError) -> ConfigErrors {
    ConfigErrors {
        file: path.to_owned(),
        errors: vec![ConfigError {
            key: "(file)".into(),
            message: e.to_string(),
            hint: Some("the file must exist and be valid TOML".into()),
        }],
    }
}

fn validate(
    cfg: &config::Config,
    base_dir: &Path,
    env: &Environment,
) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let top: HashMap<String, config::Value> = cfg.clone().try_deserialize().unwrap_or_default();
    let mut unknown: Vec<&String> = top
        .keys()
        .filter(|k| !raw::SECTIONS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    for k in unknown {
        errs.push(ConfigError {
            key: k.clone(),
            message: "unknown section".into(),
            hint: Some(format!("known sections: {}", raw::SECTIONS.join(", "))),
        });
    }

    let daemon: RawDaemon = section(cfg, &top, "daemon", &mut errs).unwrap_or_default();
    let log: RawLog = section(cfg, &top, "log", &mut errs).unwrap_or_default();
    let http: RawHttp = section(cfg, &top, "http", &mut errs).unwrap_or_default();
    let admin: RawAdmin = section(cfg, &top, "admin", &mut errs).unwrap_or_default();
    let retention: RawRetention = section(cfg, &top, "retention", &mut errs).unwrap_or_default();
    let erasure: RawErasure = section(cfg, &top, "erasure", &mut errs).unwrap_or_default();
    let state: raw::RawState = section(cfg, &top, "state", &mut errs).unwrap_or_default();
    let state_lease_set = state.lease_secs.is_some();
    let partnerstack: Option<RawPartnerStack> = section(cfg, &top, "partnerstack", &mut errs);
    let hubspot: Option<RawHubSpot> = section(cfg, &top, "hubspot", &mut errs);
    let salesforce: Option<RawSalesforce> = section(cfg, &top, "salesforce", &mut errs);
    let rest: Option<RawRest> = section(cfg, &top, "rest", &mut errs);

    let state_key = secret(
        daemon.state_key.as_ref(),
        "daemon.state_key",
        env,
        &mut errs,
    );
    let mut daemon = validate_daemon(daemon, base_dir, &mut errs);
    daemon.state_key = state_key;
    let log = validate_log(log, &mut errs);
    let http = validate_http(http, &mut errs);
    let admin = validate_admin(admin, &mut errs);
    let retention = validate_retention(&retention, &mut errs);
    let erasure = validate_erasure(erasure, &mut errs);
    let state = validate_state(state, env, &mut errs);
    if state_lease_set {
        errs.push(ConfigError {
            key: "state.lease_secs".into(),
            message: "is used only by several daemons sharing tenants".into(),
            hint: Some("set daemon.tenants_dir, or remove state.lease_secs".into()),
        });
    }

    if partnerstack.is_some() && rest.is_some() {
        errs.push(ConfigError {
            key: "rest".into(),
            message: "both [partnerstack] and [rest] are configured".into(),
            hint: Some("prmsync syncs one PRM: keep one of the two sections".into()),
        });
    }
    let prm = match (partnerstack, rest) {
        (None, Some(r)) => Some(PrmConfig::Rest(validate_rest(r, env, &mut errs))),
        (Some(p), _) => Some(PrmConfig::PartnerStack(PartnerStackConfig {
            base_url: url(&p.base_url, "partnerstack.base_url", &mut errs),
            api_key: secret(p.api_key.as_ref(), "partnerstack.api_key", env, &mut errs)
                .unwrap_or_else(|| missing("partnerstack.api_key", &mut errs)),
            public_key: secret(
                p.public_key.as_ref(),
                "partnerstack.public_key",
                env,
                &mut errs,
            ),
            webhook_secret: secret(
                p.webhook_secret.as_ref(),
                "partnerstack.webhook_secret",
                env,
                &mut errs,
            ),
            rate_limit: rate_limit(
                p.rate_limit,
                "partnerstack.rate_limit",
                "the account's limit, e.g. { requests = 50, window_ms = 1000 }",
                &mut errs,
            ),
        })),
        (None, None) => {
            if !top.contains_key("partnerstack") && !top.contains_key("rest") {
                errs.push(ConfigError {
                    key: "partnerstack".into(),
                    message: "no PRM is configured".into(),
                    hint: Some("add a [partnerstack] section with base_url and api_key".into()),
                });
            }
            None
        }
    };
    if hubspot.is_some() && salesforce.is_some() {
        errs.push(ConfigError {
            key: "salesforce".into(),
            message: "both [hubspot] and [salesforce] are configured".into(),
            hint: Some("prmsync syncs one CRM: keep one of the two sections".into()),
        });
    }
    let crm = match (hubspot, salesforce) {
        (None, Some(s)) => Some(CrmConfig::Salesforce(validate_salesforce(
            s, env, &mut errs,
        ))),
        (Some(h), _) => Some(CrmConfig::HubSpot(validate_hubspot(h, env, &mut errs))),
        (None, None) => {
            if !top.contains_key("hubspot") && !top.contains_key("salesforce") {
                errs.push(ConfigError {
                    key: "hubspot".into(),
                    message: "no CRM is configured".into(),
                    hint: Some(
                        "add a [hubspot] section (base_url, access_token) or a [salesforce] section"
                            .into(),
                    ),
                });
            }
            None
        }
    };
    match (errs.is_empty(), prm, crm) {
        (true, Some(prm), Some(crm)) => Ok(Config {
            daemon,
            state,
            log,
            http,
            admin,
            prm,
            crm,
            retention,
            erasure,
        }),
        _ => Err(errs),
    }
}

fn validate_rest(r: RawRest, env: &Environment, errs: &mut Vec<ConfigError>) -> RestConfig {
    let base_url = url(&r.base_url, "rest.base_url", errs);
    let token = secret(r.token.as_ref(), "rest.token", env, errs)
        .unwrap_or_else(|| missing("rest.token", errs));
    if !r.auth_template.contains("{token}") {
        errs.push(ConfigError {
            key: "rest.auth_template".into(),
            message: "does not contain {token}".into(),
            hint: Some("for example \"Bearer {token}\" or \"prm-key {token}\"".into()),
        });
    }
    if !(1..=1000).contains(&r.page_size) {
        errs.push(ConfigError {
            key: "rest.page_size".into(),
            message: format!("{} is out of range", r.page_size),
            hint: Some("use 1 to 1000 (what the PRM allows per page)".into()),
        });
    }
    if r.rate_limit_per_second == Some(0) {
        errs.push(ConfigError {
            key: "rest.rate_limit_per_second".into(),
            message: "must be greater than 0".into(),
            hint: Some(
                "requests per second the PRM allows; leave it out for the default 25".into(),
            ),
        });
    }
    if r.objects.is_empty() {
        errs.push(ConfigError {
            key: "rest.objects".into(),
            message: "no objects are described".into(),
            hint: Some("add [rest.objects.deals] with list_path = \"/deals\"".into()),
        });
    }
    let auth_value = SecretString::from(
        r.auth_template
            .replace("{token}", secrecy::ExposeSecret::expose_secret(&token)),
    );
    let mut objects = std::collections::BTreeMap::new();
    for (name, o) in r.objects {
        let key = |k: &str| format!("rest.objects.{name}.{k}");
        if !o.list_path.starts_with('/') {
            errs.push(ConfigError {
                key: key("list_path"),
                message: format!("{:?} must start with /", o.list_path),
                hint: Some("a path under base_url, e.g. \"/deals\"".into()),
            });
        }
        if let Some(p) = &o.upsert_path
            && !(p.starts_with('/') && p.contains("{id}"))
        {
            errs.push(ConfigError {
                key: key("upsert_path"),
                message: format!("{p:?} must start with / and contain {{id}}"),
                hint: Some("for example \"/deals/{id}\"".into()),
            });
        }
        let upsert_method = match o.upsert_method.to_ascii_uppercase().as_str() {
            "PUT" => UpsertMethod::Put,
            "PATCH" => UpsertMethod::Patch,
            "POST" => UpsertMethod::Post,
            other => {
                errs.push(ConfigError {
                    key: key("upsert_method"),
                    message: format!("unknown method {other:?}"),
                    hint: Some("use PUT, PATCH or POST".into()),
                });
                UpsertMethod::Put
            }
        };
        let since_format = match o.since_format.as_str() {
            "epoch_ms" => SinceFormat::EpochMs,
            "rfc3339" => SinceFormat::Rfc3339,
            other => {
                errs.push(ConfigError {
                    key: key("since_format"),
                    message: format!("unknown format {other:?}"),
                    hint: Some("use \"epoch_ms\" or \"rfc3339\"".into()),
                });
                SinceFormat::EpochMs
            }
        };
        let paging = match o.paging.as_str() {
            "page_token" => Paging::PageToken {
                param: o.page_token_param,
                next_field: o.next_token_field,
            },
            "offset" => Paging::Offset {
                param: o.offset_param,
            },
            other => {
                errs.push(ConfigError {
                    key: key("paging"),
                    message: format!("unknown paging {other:?}"),
                    hint: Some("use \"page_token\" or \"offset\"".into()),
                });
                Paging::Offset {
                    param: o.offset_param,
                }
            }
        };
        objects.insert(
            name.clone(),
            RestObject {
                list_path: o.list_path,
                upsert_path: o.upsert_path,
                upsert_method,
                items_field: o.items_field,
                id_field: o.id_field,
                cursor_field: o.cursor_field,
                since_param: o.since_param,
                since_format,
                limit_param: o.limit_param,
                paging,
            },
        );
    }
    RestConfig {
        profile: RestProfile {
            base_url,
            auth_header: r.auth_header,
            auth_value,
            page_size: r.page_size,
            objects,
        },
        rate_limit_per_second: r.rate_limit_per_second,
        webhook_secret: secret(r.webhook_secret.as_ref(), "rest.webhook_secret", env, errs),
    }
}

fn validate_hubspot(
    h: RawHubSpot,
    env: &Environment,
    errs: &mut Vec<ConfigError>,
) -> HubSpotConfig {
    let base_url = url(&h.base_url, "hubspot.base_url", errs);
    let client_secret = secret(h.client_secret.as_ref(), "hubspot.client_secret", env, errs);
    let refresh_token = secret(h.refresh_token.as_ref(), "hubspot.refresh_token", env, errs);
    let oauth = match (h.client_id, refresh_token) {
        (Some(client_id), Some(refresh_token)) => {
            if client_secret.is_none() {
                missing("hubspot.client_secret", errs);
            }
            Some(HubSpotOAuthConfig {
                client_id,
                refresh_token,
            })
        }
        (None, None) => None,
        _ => {
            errs.push(ConfigError {
                key: "hubspot.refresh_token".into(),
                message: "OAuth needs client_id, client_secret and refresh_token together".into(),
                hint: Some("or remove them and use a private-app access_token".into()),
            });
            None
        }
    };
    let access_token = secret(h.access_token.as_ref(), "hubspot.access_token", env, errs);
    let access_token = match (access_token, &oauth) {
        (Some(t), _) => t,
        (None, Some(_)) => SecretString::from(String::new()),
        (None, None) => missing("hubspot.access_token", errs),
    };
    let rate_limit = rate_limit(
        h.rate_limit,
        "hubspot.rate_limit",
        "your tier's limit, e.g. { requests = 190, window_ms = 10000 }",
        errs,
    );
    HubSpotConfig {
        base_url,
        access_token,
        client_secret,
        oauth,
        rate_limit,
    }
}

fn validate_salesforce(
    s: RawSalesforce,
    env: &Environment,
    errs: &mut Vec<ConfigError>,
) -> SalesforceConfig {
    let login_url = url(&s.login_url, "salesforce.login_url", errs);
    if s.client_id.trim().is_empty() {
        errs.push(ConfigError {
            key: "salesforce.client_id".into(),
            message: "is empty".into(),
            hint: Some("the connected app's consumer key".into()),
        });
    }
    let auth = match s.auth.as_str() {
        "refresh_token" => SalesforceAuthConfig::RefreshToken {
            client_id: s.client_id,
            client_secret: secret(
                s.client_secret.as_ref(),
                "salesforce.client_secret",
                env,
                errs,
            ),
            refresh_token: secret(
                s.refresh_token.as_ref(),
                "salesforce.refresh_token",
                env,
                errs,
            )
            .unwrap_or_else(|| missing("salesforce.refresh_token", errs)),
        },
        "jwt_bearer" => SalesforceAuthConfig::JwtBearer {
            client_id: s.client_id,
            username: s.username.unwrap_or_else(|| {
                errs.push(ConfigError {
                    key: "salesforce.username".into(),
                    message: "is required with auth = \"jwt_bearer\"".into(),
                    hint: Some("the pre-authorized integration user's username".into()),
                });
                String::new()
            }),
            private_key: {
                let key = secret(s.private_key.as_ref(), "salesforce.private_key", env, errs)
                    .unwrap_or_else(|| missing("salesforce.private_key", errs));
                let pem = secrecy::ExposeSecret::expose_secret(&key);
                // An empty value is an unread systemd credential; it is checked at start.
                if !pem.is_empty()
                    && let Err(e) = crate::connector::salesforce::auth::parse_private_key(pem)
                {
                    errs.push(ConfigError {
                        key: "salesforce.private_key".into(),
                        message: e.to_string(),
                        hint: Some(
                            "the PEM private key whose certificate is uploaded to the connected app"
                                .into(),
                        ),
                    });
                }
                key
            },
        },
        other => {
            errs.push(ConfigError {
                key: "salesforce.auth".into(),
                message: format!("unknown auth {other:?}"),
                hint: Some("use \"refresh_token\" or \"jwt_bearer\"".into()),
            });
            SalesforceAuthConfig::RefreshToken {
                client_id: s.client_id,
                client_secret: None,
                refresh_token: SecretString::from(String::new()),
            }
        }
    };
    let audience = s.audience.filter(|a| {
        let ok = reqwest::Url::parse(a).is_ok_and(|u| u.scheme() == "https");
        if !ok {
            errs.push(ConfigError {
                key: "salesforce.audience".into(),
                message: format!("{a:?} is not an https URL"),
                hint: Some("https://login.salesforce.com, https://test.salesforce.com or your community URL".into()),
            });
        }
        ok
    });
    SalesforceConfig {
        login_url,
        auth,
        audience,
        rate_limit: rate_limit(
            s.rate_limit,
            "salesforce.rate_limit",
            "the org's pace, e.g. { requests = 50, window_ms = 1000 }",
            errs,
        ),
    }
}

/// A `rate_limit = { requests, window_ms }` table, both greater than 0.
fn rate_limit(
    raw: Option<raw::RawRateLimit>,
    key: &str,
    hint: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<crate::connector::Rate> {
    let r = raw?;
    if r.requests == 0 || r.window_ms == 0 {
        errs.push(ConfigError {
            key: key.into(),
            message: "requests and window_ms must be greater than 0".into(),
            hint: Some(hint.into()),
        });
        return None;
    }
    Some(crate::connector::Rate {
        n: r.requests,
        per: Duration::from_millis(r.window_ms),
    })
}

/// Reads one section on its own, so that an unknown key in one section does not hide the others.
fn section<T: serde::de::DeserializeOwned>(
    cfg: &config::Config,
    top: &HashMap<String, config::Value>,
    name: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<T> {
    if !top.contains_key(name) {
        return None;
    }
    match cfg.get::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(ConfigError {
                key: name.into(),
                message: e.to_string(),
                hint: Some(
                    "check the key names and value types against deploy/prmsync.example.toml"
                        .into(),
                ),
            });
            None
        }
    }
}

/// `daemon.stall_timeout_secs` when not set: 300, or more when one poll interval plus a slow read
/// (three attempts of the request timeout, with backoff) could take longer.
pub fn stall_timeout_default(poll_interval_secs: u64, request_timeout_secs: u64) -> u64 {
    let slow_cycle = poll_interval_secs
        .saturating_add(request_timeout_secs.saturating_mul(3))
        .saturating_add(30);
    defaults::STALL_TIMEOUT_SECS.max(slow_cycle)
}

fn validate_daemon(d: RawDaemon, base_dir: &Path, errs: &mut Vec<ConfigError>) -> DaemonConfig {
    let mut positive = |key: &str, v: u64, hint: &str| {
        if v == 0 {
            errs.push(ConfigError {
                key: format!("daemon.{key}"),
                message: "must be greater than 0".into(),
                hint: Some(hint.into()),
            });
        }
    };
    positive(
        "poll_interval_secs",
        d.poll_interval_secs,
        "30 is a good start",
    );
    positive(
        "shutdown_timeout_secs",
        d.shutdown_timeout_secs,
        "keep it below systemd's TimeoutStopSec",
    );
    positive(
        "max_attempts",
        u64::from(d.max_attempts),
        "8 is the default",
    );
    positive(
        "request_timeout_secs",
        d.request_timeout_secs,
        "30 is the default",
    );
    positive(
        "schema_check_secs",
        d.schema_check_secs,
        "900 (15 minutes) is the default; each check is one schema read per mapped CRM object",
    );
    let stall_timeout_secs = d
        .stall_timeout_secs
        .unwrap_or_else(|| stall_timeout_default(d.poll_interval_secs, d.request_timeout_secs));
    if stall_timeout_secs <= d.poll_interval_secs {
        errs.push(ConfigError {
            key: "daemon.stall_timeout_secs".into(),
            message: format!(
                "{stall_timeout_secs} is not more than poll_interval_secs ({}): every stage is quiet for up to a poll interval",
                d.poll_interval_secs
            ),
            hint: Some(
                "300 is the default; allow a poll interval plus a slow read (3 attempts of request_timeout_secs)".into(),
            ),
        });
    }
    if !(1..=200).contains(&d.batch_size) {
        errs.push(ConfigError {
            key: "daemon.batch_size".into(),
            message: format!("{} is out of range", d.batch_size),
            hint: Some("use 1 to 200 (HubSpot accepts 100 per batch, Salesforce 200)".into()),
        });
    }
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_relative() { base_dir.join(p) } else { p }
    };
    let mappings_dir = d.mappings_dir.as_deref().map(resolve);
    if let Some(dir) = &mappings_dir
        && !dir.is_dir()
    {
        errs.push(ConfigError {
            key: "daemon.mappings_dir".into(),
            message: format!("{} is not a directory", dir.display()),
            hint: Some("remove the key to use the built-in mappings, or point it at a folder of *.toml mapping files".into()),
        });
    }
    DaemonConfig {
        state_path: resolve(&d.state_path),
        mappings_dir,
        poll_interval: Duration::from_secs(d.poll_interval_secs),
        batch_size: d.batch_size,
        shutdown_timeout: Duration::from_secs(d.shutdown_timeout_secs),
        max_attempts: d.max_attempts,
        request_timeout: Duration::from_secs(d.request_timeout_secs),
        stall_timeout: Duration::from_secs(stall_timeout_secs),
        schema_check: Duration::from_secs(d.schema_check_secs),
        state_key: None,
    }
}

/// `[state]`: a PostgreSQL URL (plain or a secret reference) and a schema name.
pub(super) fn validate_state(
    r: raw::RawState,
    env: &Environment,
    errs: &mut Vec<ConfigError>,
) -> StateConfig {
    use secrecy::ExposeSecret;
    let lease = match r.lease_secs {
        None => Duration::from_secs(defaults::LEASE_SECS),
        Some(s @ 1..=300) => Duration::from_secs(s),
        Some(_) => {
            errs.push(ConfigError {
                key: "state.lease_secs".into(),
                message: "must be between 1 and 300".into(),
                hint: Some(format!("the default is {}", defaults::LEASE_SECS)),
            });
            Duration::from_secs(defaults::LEASE_SECS)
        }
    };
    let url = match &r.url {
        None => {
            if r.schema.is_some() {
                errs.push(ConfigError {
                    key: "state.schema".into(),
                    message: "is set without state.url".into(),
                    hint: Some("set state.url = \"postgres://...\" or remove state.schema".into()),
                });
            }
            return StateConfig::default();
        }
        Some(raw::RawStateUrl::Plain(u)) => u.clone(),
        Some(raw::RawStateUrl::Secret(s)) => match secret(Some(s), "state.url", env, errs) {
            Some(u) => u.expose_secret().trim().to_owned(),
            None => return StateConfig::default(),
        },
    };
    // An unread systemd credential (`check` outside systemd) is empty: nothing more to check.
    if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        errs.push(ConfigError {
            key: "state.url".into(),
            message: "is not a postgres:// URL".into(),
            hint: Some("for example postgres://prmsync@db.internal:5432/prmsync".into()),
        });
        return StateConfig::default();
    }
    let target = crate::store::pg::PgTarget {
        url,
        schema: r.schema.unwrap_or_else(|| defaults::STATE_SCHEMA.into()),
    };
    if let Err(message) = target.validate() {
        errs.push(ConfigError {
            key: "state.schema".into(),
            message,
            hint: None,
        });
        return StateConfig::default();
    }
    StateConfig {
        postgres: Some(target),
        lease,
        fleet: false,
    }
}

fn validate_erasure(r: RawErasure, errs: &mut Vec<ConfigError>) -> ErasureConfig {
    let delete_crm_person = match r.crm_person.as_str() {
        "delete" => true,
        "scrub" => false,
        other => {
            errs.push(ConfigError {
                key: "erasure.crm_person".into(),
                message: format!("unknown policy {other:?}"),
                hint: Some("use delete or scrub".into()),
            });
            true
        }
    };
    let scrub_prm = match r.prm.as_str() {
        "scrub" => true,
        "keep" => false,
        other => {
            errs.push(ConfigError {
                key: "erasure.prm".into(),
                message: format!("unknown policy {other:?}"),
                hint: Some("use scrub or keep".into()),
            });
            true
        }
    };
    ErasureConfig {
        delete_crm_person,
        scrub_prm,
        fields: r.fields,
    }
}

fn validate_retention(r: &RawRetention, errs: &mut Vec<ConfigError>) -> RetentionConfig {
    const DAY_SECS: u64 = 24 * 60 * 60;
    if r.inbox_days == 0 {
        errs.push(ConfigError {
            key: "retention.inbox_days".into(),
            message: "must be at least 1".into(),
            hint: Some(
                "processed changes are kept to recognise repeats (overlapping polls, webhook retries); 7 is the default"
                    .into(),
            ),
        });
    }
    if r.interval_secs == 0 {
        errs.push(ConfigError {
            key: "retention.interval_secs".into(),
            message: "must be greater than 0".into(),
            hint: Some("3600 (hourly) is the default".into()),
        });
    }
    let days = |d: u64| (d > 0).then(|| Duration::from_secs(d.saturating_mul(DAY_SECS)));
    RetentionConfig {
        policy: crate::store::RetentionPolicy {
            inbox: Duration::from_secs(r.inbox_days.max(1).saturating_mul(DAY_SECS)),
            ledger: days(r.ledger_days),
            registration_events: days(r.registration_events_days),
        },
        interval: Duration::from_secs(r.interval_secs.max(1)),
    }
}

fn validate_log(l: RawLog, errs: &mut Vec<ConfigError>) -> LogConfig {
    let format = match l.format.as_str() {
        "auto" => LogFormat::Auto,
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        "journald" => LogFormat::Journald,
        other => {
            errs.push(ConfigError {
                key: "log.format".into(),
                message: format!("unknown format {other:?}"),
                hint: Some("use \"auto\", \"human\", \"json\" or \"journald\"".into()),
            });
            LogFormat::Human
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
        errs.push(ConfigError {
            key: "log.level".into(),
            message: format!("{:?} is not a valid filter", l.level),
            hint: Some(
                "use error, warn, info, debug or trace, or a filter like \"prmsync=debug\"".into(),
            ),
        });
    }
    LogConfig {
        format,
        level: l.level,
        redact_personal_data: l.redact_personal_data,
    }
}

fn validate_http(h: RawHttp, errs: &mut Vec<ConfigError>) -> HttpConfig {
    let listen = h.listen.parse().unwrap_or_else(|_| {
        errs.push(ConfigError {
            key: "http.listen".into(),
            message: format!("{:?} is not an address:port", h.listen),
            hint: Some("for example \"127.0.0.1:8787\"".into()),
        });
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if !(1024..=64 * 1024 * 1024).contains(&h.max_body_bytes) {
        errs.push(ConfigError {
            key: "http.max_body_bytes".into(),
            message: format!("{} is out of range", h.max_body_bytes),
            hint: Some("use 1024 to 67108864; 1048576 is the default".into()),
        });
    }
    HttpConfig {
        listen,
        max_body_bytes: h.max_body_bytes,
    }
}

fn validate_admin(a: RawAdmin, errs: &mut Vec<ConfigError>) -> AdminConfig {
    let listen = a.listen.parse().unwrap_or_else(|_| {
        errs.push(ConfigError {
            key: "admin.listen".into(),
            message: format!("{:?} is not an address:port", a.listen),
            hint: Some(format!("for example \"{}\"", defaults::ADMIN_LISTEN)),
        });
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if let Err(message) = check_admin_bind(listen, a.allow_remote) {
        errs.push(ConfigError {
            key: "admin.listen".into(),
            message,
            hint: Some(
                "use 127.0.0.1 (scrape through the host), or set admin.allow_remote = true".into(),
            ),
        });
    }
    AdminConfig {
        listen,
        allow_remote: a.allow_remote,
        min_free_bytes: a.min_free_bytes,
    }
}

fn url(s: &str, key: &str, errs: &mut Vec<ConfigError>) -> reqwest::Url {
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            errs.push(ConfigError {
                key: key.into(),
                message: format!("{s:?} is not an http(s) URL"),
                hint: Some("for example \"https://api.hubapi.com\"".into()),
            });
            reqwest::Url::parse("http://invalid.invalid/").expect("static URL parses")
        }
    }
}

fn missing(key: &str, errs: &mut Vec<ConfigError>) -> SecretString {
    if !errs.iter().any(|e| e.key.starts_with(key)) {
        errs.push(ConfigError {
            key: key.into(),
            message: "is required".into(),
            hint: Some(format!(
                "set {key} = {{ env = \"NAME\" }}, {{ file = \"/path\" }} or {{ credential = \"name\" }} (systemd LoadCredential=)"
            )),
        });
    }
    SecretString::from(String::new())
}

/// Resolves a secret reference. Outside systemd a `credential` cannot be read yet; that is not an
/// error for `check` run by hand, and systemd's ExecStartPre sees the credential directory.
fn secret(
    r: Option<&RawSecret>,
    key: &str,
    env: &Environment,
    errs: &mut Vec<ConfigError>,
) -> Option<SecretString> {
    let r = r?;
    let set = [r.env.is_some(), r.file.is_some(), r.credential.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        errs.push(ConfigError {
            key: key.into(),
            message: "name exactly one of env, file or credential".into(),
            hint: Some("for example { env = \"PRMSYNC_HUBSPOT_TOKEN\" }".into()),
        });
        return None;
    }
    let from_file = |path: PathBuf, errs: &mut Vec<ConfigError>, k: String| {
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Some(SecretString::from(
                s.trim_end_matches(['\n', '\r']).to_owned(),
            )),
            Ok(_) => {
                errs.push(ConfigError {
                    key: k,
                    message: format!("{} is empty", path.display()),
                    hint: None,
                });
                None
            }
            Err(e) => {
                errs.push(ConfigError {
                    key: k,
                    message: format!("cannot read {}: {e}", path.display()),
                    hint: Some("check the path and that the service user may read it".into()),
                });
                None
            }
        }
    };
    if let Some(name) = &r.env {
        return match env.get(name) {
            Some(v) if !v.is_empty() => Some(SecretString::from(v.to_owned())),
            _ => {
                errs.push(ConfigError {
                    key: format!("{key}.env"),
                    message: format!("environment variable {name} is not set"),
                    hint: Some("export it, or use { file = ... } / { credential = ... }".into()),
                });
                None
            }
        };
    }
    if let Some(path) = &r.file {
        return from_file(PathBuf::from(path), errs, format!("{key}.file"));
    }
    let name = r.credential.as_deref().unwrap_or_default();
    match env.get("CREDENTIALS_DIRECTORY") {
        Some(dir) => from_file(Path::new(dir).join(name), errs, format!("{key}.credential")),
        None => {
            tracing::warn!(
                key,
                credential = name,
                "not running under systemd: credential not checked"
            );
            Some(SecretString::from(String::new()))
        }
    }
}

#[cfg(test)]
mod crm_tests;
#[cfg(test)]
mod example_tests;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;
