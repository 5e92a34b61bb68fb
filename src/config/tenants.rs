//! Multi-tenant configuration: a config file with `daemon.tenants_dir` configures the process
//! (listeners, logs, where state lives), and each folder of that directory is one tenant with its
//! own `tenant.toml` (its systems and credentials by reference), `mappings/` and rules file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::raw::{self, RawDaemon};
use super::{
    AdminConfig, Config, ConfigError, ConfigErrors, DaemonConfig, Environment, HttpConfig,
    LogConfig,
};

/// The file in each tenant's folder.
pub const TENANT_FILE: &str = "tenant.toml";
/// A tenant's mapping files and rules file, when its `tenant.toml` names no `daemon.mappings_dir`.
pub const TENANT_MAPPINGS: &str = "mappings";

/// Sections a tenant may not set: they configure the one process all tenants share.
const FLEET_SECTIONS: &[&str] = &["http", "admin", "log", "state"];
/// `[daemon]` keys a tenant may not set, for the same reason.
const FLEET_DAEMON_KEYS: &[&str] = &["state_path", "tenants_dir", "shutdown_timeout_secs"];
/// `[daemon]` keys of the fleet file each tenant inherits unless its own file sets them.
const INHERITED_DAEMON_KEYS: &[&str] = &[
    "poll_interval_secs",
    "batch_size",
    "max_attempts",
    "request_timeout_secs",
    "stall_timeout_secs",
    "schema_check_secs",
];
/// Sections of the fleet file each tenant inherits key by key.
const INHERITED_SECTIONS: &[&str] = &["retention", "erasure"];
/// The PRM and CRM sections: per tenant only.
const SYSTEM_SECTIONS: &[&str] = &["partnerstack", "rest", "hubspot", "salesforce"];

/// A config file that runs several tenants (`daemon.tenants_dir` is set).
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The fleet's config file (errors in a tenant's file that belong here name it).
    pub file: PathBuf,
    /// One folder per tenant.
    pub tenants_dir: PathBuf,
    /// `state_path`'s folder holds each tenant's state file (`tenants/NAME.db`); the timeouts
    /// and `state_key` are every tenant's unless its file says otherwise.
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    /// `[state]`: with a PostgreSQL URL, every tenant's state is a schema of that database
    /// ([`FleetConfig::tenant_schema`]) and the daemons sharing it take leases (`tenants::lease`).
    pub state: super::StateConfig,
    /// Keys of the fleet file every tenant inherits unless its own file sets them.
    inherited: Vec<(String, config::Value)>,
}

impl FleetConfig {
    /// Where a tenant's state lives: one SQLite file per tenant, next to `daemon.state_path`.
    pub fn tenant_state_path(&self, name: &str) -> PathBuf {
        let dir = match self.daemon.state_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        dir.join("tenants").join(format!("{name}.db"))
    }

    /// The schema of a tenant's PostgreSQL state: the fleet's schema, `_`, and the tenant's name
    /// with `-` written `_` (the fleet's own schema holds the leases).
    pub fn tenant_schema(&self, name: &str) -> Option<crate::store::pg::PgTarget> {
        let fleet = self.state.postgres.as_ref()?;
        Some(crate::store::pg::PgTarget {
            url: fleet.url.clone(),
            schema: format!("{}_{}", fleet.schema, name.replace('-', "_")),
        })
    }

    /// A tenant's folder.
    pub fn tenant_dir(&self, name: &str) -> PathBuf {
        self.tenants_dir.join(name)
    }
}

/// What a config file configures: one tenant (the default), or several.
#[derive(Debug, Clone)]
pub enum Loaded {
    Single(Box<Config>),
    Tenants(Box<FleetConfig>),
}

/// Loads the config file at `path`: a single-tenant [`Config`], or with `daemon.tenants_dir` a
/// [`FleetConfig`] (whose tenants are loaded one by one with [`load_tenant`]).
pub fn load_any(path: &Path, env: &Environment) -> Result<Loaded, ConfigErrors> {
    let built = super::build(path, env)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        file: path.to_owned(),
        errors,
    };
    if built.get_string("daemon.tenants_dir").is_ok() {
        validate_fleet(&built, path, base_dir, env)
            .map(|f| Loaded::Tenants(Box::new(f)))
            .map_err(fail)
    } else {
        super::validate(&built, base_dir, env)
            .map(|c| Loaded::Single(Box::new(c)))
            .map_err(fail)
    }
}

fn validate_fleet(
    cfg: &config::Config,
    file: &Path,
    base_dir: &Path,
    env: &Environment,
) -> Result<FleetConfig, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let top: HashMap<String, config::Value> = cfg.clone().try_deserialize().unwrap_or_default();
    let mut keys: Vec<&String> = top.keys().collect();
    keys.sort();
    for k in keys {
        if SYSTEM_SECTIONS.contains(&k.as_str()) {
            errs.push(ConfigError {
                key: k.clone(),
                message: "systems are configured per tenant when daemon.tenants_dir is set".into(),
                hint: Some(format!("move [{k}] to the tenant's {TENANT_FILE}")),
            });
        } else if !raw::SECTIONS.contains(&k.as_str()) {
            errs.push(ConfigError {
                key: k.clone(),
                message: "unknown section".into(),
                hint: Some(format!("known sections: {}", raw::SECTIONS.join(", "))),
            });
        }
    }
    let daemon: RawDaemon = super::section(cfg, &top, "daemon", &mut errs).unwrap_or_default();
    let log: raw::RawLog = super::section(cfg, &top, "log", &mut errs).unwrap_or_default();
    let http: raw::RawHttp = super::section(cfg, &top, "http", &mut errs).unwrap_or_default();
    let admin: raw::RawAdmin = super::section(cfg, &top, "admin", &mut errs).unwrap_or_default();
    // Checked here so a mistake is reported once, against the fleet file.
    let retention: raw::RawRetention =
        super::section(cfg, &top, "retention", &mut errs).unwrap_or_default();
    let erasure: raw::RawErasure =
        super::section(cfg, &top, "erasure", &mut errs).unwrap_or_default();
    let state: raw::RawState = super::section(cfg, &top, "state", &mut errs).unwrap_or_default();
    let state = super::validate_state(state, env, &mut errs);
    super::validate_retention(&retention, &mut errs);
    super::validate_erasure(erasure, &mut errs);
    if daemon.mappings_dir.is_some() {
        errs.push(ConfigError {
            key: "daemon.mappings_dir".into(),
            message: "mappings are per tenant when daemon.tenants_dir is set".into(),
            hint: Some(format!(
                "put each tenant's mapping files in its folder's {TENANT_MAPPINGS}/"
            )),
        });
    }
    let tenants_dir = daemon.tenants_dir.clone().unwrap_or_default();
    let tenants_dir = {
        let p = PathBuf::from(&tenants_dir);
        if p.is_relative() { base_dir.join(p) } else { p }
    };
    if !tenants_dir.is_dir() {
        errs.push(ConfigError {
            key: "daemon.tenants_dir".into(),
            message: format!("{} is not a directory", tenants_dir.display()),
            hint: Some(format!(
                "one folder per tenant, each with its {TENANT_FILE}; remove the key to run one tenant"
            )),
        });
    }
    let state_key = super::secret(
        daemon.state_key.as_ref(),
        "daemon.state_key",
        env,
        &mut errs,
    );
    let mut inherited = Vec::new();
    if let Some(table) = top.get("daemon").and_then(|v| v.clone().into_table().ok()) {
        for key in INHERITED_DAEMON_KEYS {
            if let Some(v) = table.get(*key) {
                inherited.push((format!("daemon.{key}"), v.clone()));
            }
        }
    }
    for section in INHERITED_SECTIONS {
        if let Some(v) = top.get(*section) {
            leaves(section, v, &mut inherited);
        }
    }
    let mut daemon = super::validate_daemon(daemon, base_dir, &mut errs);
    daemon.state_key = state_key;
    let log = super::validate_log(log, &mut errs);
    let http = super::validate_http(http, &mut errs);
    let admin = super::validate_admin(admin, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(FleetConfig {
        file: file.to_owned(),
        tenants_dir,
        daemon,
        log,
        http,
        admin,
        state,
        inherited,
    })
}

/// Every leaf of a table as (`dotted.key`, value).
fn leaves(prefix: &str, v: &config::Value, out: &mut Vec<(String, config::Value)>) {
    match v.clone().into_table() {
        Ok(table) => {
            for (k, v) in table {
                leaves(&format!("{prefix}.{k}"), &v, out);
            }
        }
        Err(_) => out.push((prefix.to_owned(), v.clone())),
    }
}

/// The tenants of `fleet`: the names of the folders in its `tenants_dir` (hidden ones and plain
/// files are not tenants), sorted.
pub fn tenant_names(fleet: &FleetConfig) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&fleet.tenants_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.file_type()?.is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Why a folder name cannot be a tenant's: it appears in webhook URLs, state file names and
/// metric labels (and later a PostgreSQL schema name).
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a tenant name: use 1 to 63 lower-case letters, digits, - and _, starting with a letter or digit"
        ))
    }
}

/// Loads tenant `name` of `fleet`: its folder's [`TENANT_FILE`] over the keys it inherits from
/// the fleet file, validated like a single-tenant config (errors name the tenant's file), with
/// the fleet's listeners and logs, and its own state file and mappings.
pub fn load_tenant(
    fleet: &FleetConfig,
    name: &str,
    env: &Environment,
) -> Result<Config, ConfigErrors> {
    let dir = fleet.tenant_dir(name);
    let file = dir.join(TENANT_FILE);
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        file: file.clone(),
        errors,
    };
    if let Err(message) = check_tenant_name(name) {
        return Err(fail(vec![ConfigError {
            key: "(folder)".into(),
            message,
            hint: Some("rename the tenant's folder".into()),
        }]));
    }
    let source = || {
        config::File::from(file.as_path())
            .format(config::FileFormat::Toml)
            .required(true)
    };
    let own = config::Config::builder()
        .add_source(source())
        .build()
        .map_err(|e| super::unreadable(&file, &e))?;
    let own_top: HashMap<String, config::Value> = own.try_deserialize().unwrap_or_default();
    let mut errs = Vec::new();
    for s in FLEET_SECTIONS {
        if own_top.contains_key(*s) {
            errs.push(ConfigError {
                key: (*s).into(),
                message: "is shared by every tenant".into(),
                hint: Some(format!("set [{s}] once, in {}", fleet.file.display())),
            });
        }
    }
    if let Some(daemon) = own_top
        .get("daemon")
        .and_then(|v| v.clone().into_table().ok())
    {
        let mut keys: Vec<&String> = daemon.keys().collect();
        keys.sort();
        for k in keys {
            if FLEET_DAEMON_KEYS.contains(&k.as_str()) {
                errs.push(ConfigError {
                    key: format!("daemon.{k}"),
                    message: "is shared by every tenant".into(),
                    hint: Some(format!("set it once, in {}", fleet.file.display())),
                });
            }
        }
    }
    let mut builder = config::Config::builder();
    for (k, v) in &fleet.inherited {
        builder = builder
            .set_default(k.as_str(), v.clone())
            .map_err(|e| super::unreadable(&fleet.file, &e))?;
    }
    let built = builder
        .add_source(source())
        .build()
        .map_err(|e| super::unreadable(&file, &e))?;
    let mut config = match super::validate(&built, &dir, env) {
        Ok(c) if errs.is_empty() => c,
        Ok(_) => return Err(fail(errs)),
        Err(more) => {
            errs.extend(more);
            return Err(fail(errs));
        }
    };
    config.daemon.state_path = fleet.tenant_state_path(name);
    config.state = super::StateConfig {
        postgres: fleet.tenant_schema(name),
        lease: fleet.state.lease,
        fleet: fleet.state.postgres.is_some(),
    };
    if config.daemon.mappings_dir.is_none() && dir.join(TENANT_MAPPINGS).is_dir() {
        config.daemon.mappings_dir = Some(dir.join(TENANT_MAPPINGS));
    }
    config.daemon.shutdown_timeout = fleet.daemon.shutdown_timeout;
    if config.daemon.state_key.is_none() {
        config.daemon.state_key = fleet.daemon.state_key.clone();
    }
    config.log = fleet.log.clone();
    config.http = fleet.http.clone();
    config.admin = fleet.admin.clone();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
[daemon]
state_path = "state/prmsync.db"
tenants_dir = "tenants"
poll_interval_secs = 7

[retention]
ledger_days = 30
"#;

    const ACME: &str = r#"
[partnerstack]
base_url = "http://127.0.0.1:1/api/v2"
api_key = { env = "ACME_PS_KEY" }

[hubspot]
base_url = "http://127.0.0.1:2"
access_token = { env = "ACME_HS_TOKEN" }
"#;

    fn fleet_dir(tenants: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tenants")).unwrap();
        for (name, text) in tenants {
            let t = dir.path().join("tenants").join(name);
            std::fs::create_dir(&t).unwrap();
            std::fs::write(t.join(TENANT_FILE), text).unwrap();
        }
        let file = dir.path().join("prmsync.toml");
        std::fs::write(&file, FLEET).unwrap();
        (dir, file)
    }

    fn env() -> Environment {
        Environment {
            vars: [("ACME_PS_KEY", "ps"), ("ACME_HS_TOKEN", "hs")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn fleet(file: &Path) -> FleetConfig {
        match load_any(file, &env()).unwrap() {
            Loaded::Tenants(f) => *f,
            Loaded::Single(_) => panic!("a tenants_dir config loads as a fleet"),
        }
    }

    #[test]
    fn a_tenant_gets_its_own_state_file_and_mappings_and_inherits_the_fleet_keys() {
        let (dir, file) = fleet_dir(&[("acme", ACME)]);
        std::fs::create_dir(dir.path().join("tenants/acme/mappings")).unwrap();
        let fleet = fleet(&file);
        assert_eq!(tenant_names(&fleet).unwrap(), vec!["acme".to_owned()]);
        let acme = load_tenant(&fleet, "acme", &env()).unwrap();
        assert_eq!(
            acme.daemon.state_path,
            dir.path().join("state/tenants/acme.db")
        );
        assert_eq!(
            acme.daemon.mappings_dir,
            Some(dir.path().join("tenants/acme/mappings"))
        );
        assert_eq!(acme.daemon.poll_interval.as_secs(), 7);
        assert_eq!(
            acme.retention.policy.ledger,
            Some(std::time::Duration::from_secs(30 * 24 * 3600))
        );
    }

    #[test]
    fn a_tenant_file_overrides_what_it_inherits() {
        let text = format!("{ACME}\n[daemon]\npoll_interval_secs = 3\n");
        let (_dir, file) = fleet_dir(&[("acme", &text)]);
        let acme = load_tenant(&fleet(&file), "acme", &env()).unwrap();
        assert_eq!(acme.daemon.poll_interval.as_secs(), 3);
    }

    #[test]
    fn a_broken_tenant_is_reported_with_its_file_and_every_key() {
        let text = "[hubspot]\nbase_url = \"nope\"\naccess_token = { env = \"ACME_HS_TOKEN\" }\n\n[http]\nlisten = \"0.0.0.0:1\"\n\n[daemon]\nstate_path = \"x.db\"\n";
        let (dir, file) = fleet_dir(&[("acme", text)]);
        let err = load_tenant(&fleet(&file), "acme", &env()).unwrap_err();
        assert_eq!(err.file, dir.path().join("tenants/acme").join(TENANT_FILE));
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "http",
            "daemon.state_path",
            "hubspot.base_url",
            "partnerstack",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn systems_in_the_fleet_file_and_bad_tenant_names_are_refused() {
        let (dir, file) = fleet_dir(&[("Bad Name", ACME)]);
        std::fs::write(&file, format!("{FLEET}\n{ACME}")).unwrap();
        let err = load_any(&file, &env()).unwrap_err();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["hubspot", "partnerstack"], "{err}");
        std::fs::write(&file, FLEET).unwrap();
        let fleet = fleet(&file);
        let err = load_tenant(&fleet, "Bad Name", &env()).unwrap_err();
        assert!(err.to_string().contains("not a tenant name"), "{err}");
        drop(dir);
    }

    #[test]
    fn the_single_tenant_loader_points_at_tenant() {
        let (_dir, file) = fleet_dir(&[]);
        let err = super::super::load(&file, &env()).unwrap_err();
        assert_eq!(err.errors[0].key, "daemon.tenants_dir");
        assert!(err.to_string().contains("--tenant"), "{err}");
    }
}
