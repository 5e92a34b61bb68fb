//! Config loading tests: defaults, overrides, secrets, and every error reported at once.

use std::io::Write as _;

use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment {
        vars: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("prmsync.toml");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    p
}

const MINIMAL: &str = r#"
[partnerstack]
api_key = { env = "PS_KEY" }
[hubspot]
access_token = { env = "HS_TOKEN" }
"#;

#[test]
fn minimal_file_gets_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(
        &write(&dir, MINIMAL),
        &env(&[("PS_KEY", "k"), ("HS_TOKEN", "t")]),
    )
    .unwrap();
    assert_eq!(
        c.daemon.poll_interval,
        Duration::from_secs(defaults::POLL_INTERVAL_SECS)
    );
    assert_eq!(c.daemon.batch_size, defaults::BATCH_SIZE);
    assert_eq!(c.http.listen.to_string(), defaults::LISTEN);
    assert_eq!(c.log.format, LogFormat::Auto);
    assert!(c.log.redact_personal_data);
    assert!(c.daemon.mappings_dir.is_none());
    let PrmConfig::PartnerStack(p) = &c.prm else {
        panic!("PartnerStack expected")
    };
    assert_eq!(p.base_url.as_str(), "https://api.partnerstack.com/api/v2");
    assert_eq!(p.api_key.expose_secret(), "k");
    assert!(p.webhook_secret.is_none());
}

#[test]
fn environment_overrides_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(
        &write(&dir, MINIMAL),
        &env(&[
            ("PS_KEY", "k"),
            ("HS_TOKEN", "t"),
            ("PRMSYNC__DAEMON__POLL_INTERVAL_SECS", "7"),
            ("PRMSYNC__LOG__FORMAT", "json"),
            ("PRMSYNC__HTTP__LISTEN", "127.0.0.1:9999"),
        ]),
    )
    .unwrap();
    assert_eq!(c.daemon.poll_interval, Duration::from_secs(7));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.http.listen.port(), 9999);
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cr3t-token\n").unwrap();
    let text = format!(
        "[partnerstack]\napi_key = {{ file = {:?} }}\n[hubspot]\naccess_token = {{ credential = \"hs\" }}\n",
        secret.display().to_string()
    );
    let creds = dir.path().to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("hs"), "cred-token").unwrap();
    let c = load(
        &write(&dir, &text),
        &env(&[("CREDENTIALS_DIRECTORY", &creds)]),
    )
    .unwrap();
    let PrmConfig::PartnerStack(p) = &c.prm else {
        panic!("PartnerStack expected")
    };
    assert_eq!(p.api_key.expose_secret(), "s3cr3t-token");
    let CrmConfig::HubSpot(h) = &c.crm else {
        panic!("HubSpot expected")
    };
    assert_eq!(h.access_token.expose_secret(), "cred-token");
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cr3t") && !debug.contains("cred-token"),
        "{debug}"
    );
}

#[test]
fn every_mistake_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[daemon]
poll_interval_secs = 0
batch_size = 500
[log]
format = "xml"
[http]
listen = "everywhere"
[partnerstack]
api_key = { env = "MISSING_KEY" }
base_url = "ftp://example.com"
[hubspot]
acces_token = { env = "HS_TOKEN" }
[hubspto]
x = 1
"#;
    let errs = load(&write(&dir, text), &env(&[])).unwrap_err();
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    for want in [
        "hubspto",
        "daemon.poll_interval_secs",
        "daemon.batch_size",
        "log.format",
        "http.listen",
        "partnerstack.base_url",
        "partnerstack.api_key.env",
        "hubspot",
    ] {
        assert!(keys.contains(&want), "missing {want} in {keys:?}");
    }
    let text = errs.to_string();
    assert!(text.contains("acces_token"), "unknown key named: {text}");
    assert!(text.contains("MISSING_KEY"), "{text}");
    assert!(
        errs.errors.iter().all(|e| e.hint.is_some()),
        "every error has a hint: {text}"
    );
}

#[test]
fn a_missing_file_is_one_clear_error() {
    let errs = load(Path::new("/nonexistent/prmsync.toml"), &env(&[])).unwrap_err();
    assert_eq!(errs.errors.len(), 1);
    assert!(errs.to_string().contains("/nonexistent/prmsync.toml"));
}

#[test]
fn secret_references_must_name_one_source() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "[partnerstack]\napi_key = { env = \"A\", file = \"/b\" }\n[hubspot]\naccess_token = {}\n";
    let errs = load(&write(&dir, text), &env(&[("A", "x")])).unwrap_err();
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"partnerstack.api_key"), "{keys:?}");
    assert!(keys.contains(&"hubspot.access_token"), "{keys:?}");
}

#[test]
fn a_stall_timeout_within_one_poll_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vars = env(&[("PS_KEY", "k"), ("HS_TOKEN", "t")]);
    let c = load(&write(&dir, MINIMAL), &vars).unwrap();
    assert_eq!(
        c.daemon.stall_timeout,
        Duration::from_secs(defaults::STALL_TIMEOUT_SECS)
    );
    // A long poll interval raises the default with it.
    let text = format!("[daemon]\npoll_interval_secs = 3600\n{MINIMAL}");
    let c = load(&write(&dir, &text), &vars).unwrap();
    assert_eq!(
        c.daemon.stall_timeout,
        Duration::from_secs(3600 + 3 * defaults::REQUEST_TIMEOUT_SECS + 30)
    );
    let text = format!("[daemon]\npoll_interval_secs = 60\nstall_timeout_secs = 60\n{MINIMAL}");
    let errs = load(&write(&dir, &text), &vars).unwrap_err();
    let e = errs
        .errors
        .iter()
        .find(|e| e.key == "daemon.stall_timeout_secs")
        .unwrap_or_else(|| panic!("{errs}"));
    assert!(
        e.message.contains("poll_interval_secs (60)"),
        "{}",
        e.message
    );
}
