//! Logging setup (and, in [`meters`], the process's event counters for `/metrics`): human-readable text on a terminal, JSON lines, or journald fields under systemd;
//! every line passes the [`redact::Redactor`] (secrets always, personal data unless turned off).
//!
//! Stable field names, in every format: `message`, `level`, `timestamp` (text and JSON; journald
//! keeps its own), and the event's own fields as logged (`error`, `flow`, `system`, `object`,
//! `staged`, `written`, ...); journald gets them upper-cased (`ERROR`, `FLOW`) with `MESSAGE`,
//! `PRIORITY` and `SYSLOG_IDENTIFIER=prmsync`.

pub mod journald;
pub mod meters;
pub mod redact;

use std::io::{IsTerminal as _, Write};
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, CrmConfig, LogFormat, PrmConfig, SalesforceAuthConfig};
use redact::Redactor;

/// Where log lines go once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Human,
    Json,
    Journald,
}

/// Resolves the configured format: `auto` is journald when stderr is the stream systemd named in
/// `JOURNAL_STREAM` (`device:inode`), human text otherwise.
pub fn choose(
    format: LogFormat,
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
) -> Output {
    match format {
        LogFormat::Human => Output::Human,
        LogFormat::Json => Output::Json,
        LogFormat::Journald => Output::Journald,
        LogFormat::Auto => {
            let named = journal_stream.and_then(|s| {
                let (dev, ino) = s.split_once(':')?;
                Some((dev.parse().ok()?, ino.parse().ok()?))
            });
            match (named, stderr) {
                (Some(n), Some(e)) if n == e => Output::Journald,
                _ => Output::Human,
            }
        }
    }
}

/// stderr's (device, inode), to compare with `JOURNAL_STREAM`.
fn stderr_id() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Every secret value in the config, for the redactor.
pub fn secrets(config: &Config) -> Vec<String> {
    let mut out: Vec<&secrecy::SecretString> = Vec::new();
    match &config.prm {
        PrmConfig::PartnerStack(p) => {
            out.push(&p.api_key);
            out.extend(&p.webhook_secret);
        }
        PrmConfig::Rest(r) => {
            out.push(&r.profile.auth_value);
            out.extend(&r.webhook_secret);
        }
    }
    match &config.crm {
        CrmConfig::HubSpot(h) => {
            out.push(&h.access_token);
            out.extend(&h.client_secret);
            out.extend(h.oauth.as_ref().map(|o| &o.refresh_token));
        }
        CrmConfig::Salesforce(s) => match &s.auth {
            SalesforceAuthConfig::RefreshToken {
                client_secret,
                refresh_token,
                ..
            } => {
                out.extend(client_secret);
                out.push(refresh_token);
            }
            SalesforceAuthConfig::JwtBearer { private_key, .. } => out.push(private_key),
        },
    }
    let mut values: Vec<String> = out.iter().map(|s| s.expose_secret().to_owned()).collect();
    if let PrmConfig::Rest(r) = &config.prm {
        // The header value embeds the token; the token alone is redacted too.
        values.extend(
            r.profile
                .auth_value
                .expose_secret()
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    values
}

/// A stderr writer that redacts each formatted event (the fmt layer writes one event per call).
struct RedactingStderr(Arc<Redactor>);

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.0.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`. A second call keeps
/// the first subscriber.
pub fn init(format: LogFormat, level: &str, redactor: Redactor) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let redactor = Arc::new(redactor);
    let output = choose(
        format,
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        stderr_id(),
    );
    let writer = {
        let r = redactor.clone();
        move || RedactingStderr(r.clone())
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match output {
        Output::Human => registry.with(fmt).try_init(),
        Output::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        Output::Journald => match journald::Journald::new(journald::SOCKET, redactor) {
            Ok(layer) => registry.with(layer).try_init(),
            Err(e) => {
                eprintln!("prmsync: journald socket unavailable ({e}); logging text to stderr");
                registry.with(fmt).try_init()
            }
        },
    };
    if result.is_err() {
        // Already installed (tests, or demo after run): keep the first.
        tracing::debug!("tracing subscriber already installed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_journald_only_when_stderr_is_the_named_stream() {
        let auto = LogFormat::Auto;
        assert_eq!(
            choose(auto, Some("8:1234"), Some((8, 1234))),
            Output::Journald
        );
        // stderr redirected elsewhere (a child process, a file): text.
        assert_eq!(choose(auto, Some("8:1234"), Some((8, 99))), Output::Human);
        assert_eq!(choose(auto, None, Some((8, 1234))), Output::Human);
        assert_eq!(
            choose(auto, Some("garbage"), Some((8, 1234))),
            Output::Human
        );
        assert_eq!(
            choose(LogFormat::Json, Some("8:1234"), Some((8, 1234))),
            Output::Json
        );
    }
}
