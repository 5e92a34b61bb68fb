//! Events as journald entries with one field per event field (systemd's native journal protocol),
//! each value redacted first. tracing-journald sends values as given, which would bypass the
//! redaction every log line must pass, hence this small layer.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use super::redact::Redactor;

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The layer: one datagram per event.
#[derive(Debug)]
pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
    redactor: Arc<Redactor>,
}

impl Journald {
    /// Sends to `path` (normally [`SOCKET`]).
    pub fn new(path: impl Into<PathBuf>, redactor: Arc<Redactor>) -> std::io::Result<Journald> {
        Ok(Journald {
            socket: UnixDatagram::unbound()?,
            path: path.into(),
            redactor,
        })
    }
}

/// journald's priority for a tracing level (syslog numbers).
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        Level::DEBUG | Level::TRACE => "7",
    }
}

/// A journald field name: upper case letters, digits and `_`, not starting with `_` or a digit.
pub fn field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name == "message" {
        return "MESSAGE".into();
    }
    if out.starts_with(|c: char| c == '_' || c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, 'F');
    }
    out
}

/// Appends `NAME\n<u64 LE length><value>\n`: valid for any value, newlines included.
fn put(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    redactor: &'a Redactor,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        put(
            self.buf,
            &field_name(field.name()),
            &self.redactor.redact(value),
        );
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = write!(s, "{value:?}");
        self.record_str(field, &s);
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut buf = Vec::with_capacity(256);
        put(&mut buf, "PRIORITY", priority(meta.level()));
        put(&mut buf, "SYSLOG_IDENTIFIER", "prmsync");
        put(&mut buf, "TARGET", meta.target());
        event.record(&mut Fields {
            buf: &mut buf,
            redactor: &self.redactor,
        });
        // Nowhere to report a failed log write; journald being away must not stop the daemon.
        let _ = self.socket.send_to(&buf, &self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    fn parse(mut d: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(nl) = d.iter().position(|b| *b == b'\n') {
            let name = String::from_utf8(d[..nl].to_vec()).unwrap();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = String::from_utf8(d[nl + 9..nl + 9 + len].to_vec()).unwrap();
            out.push((name, value));
            d = &d[nl + 10 + len..];
        }
        out
    }

    #[test]
    fn events_arrive_as_redacted_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let redactor = Arc::new(Redactor::new(["hs-token-123456".to_owned()], true));
        let subscriber =
            tracing_subscriber::registry().with(Journald::new(&path, redactor).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                flow = "deals",
                error = "401 for hs-token-123456 (sam@example.com)",
                "write failed\nsecond line"
            );
        });
        let mut buf = vec![0; 4096];
        let n = server.recv(&mut buf).unwrap();
        let fields = parse(&buf[..n]);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("prmsync"));
        assert_eq!(get("MESSAGE"), Some("write failed\nsecond line"));
        assert_eq!(get("FLOW"), Some("deals"));
        assert_eq!(get("ERROR"), Some("401 for [secret] ([email])"));
    }

    #[test]
    fn field_names_follow_journald_rules() {
        assert_eq!(field_name("retry.after"), "RETRY_AFTER");
        assert_eq!(field_name("_x"), "F_X");
        assert_eq!(field_name("message"), "MESSAGE");
    }
}
