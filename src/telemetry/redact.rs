//! Redaction of log text (pure): configured secrets always, and personal data (email addresses,
//! phone numbers, person-name fields) unless the operator turns that off to debug.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What replaces a configured secret.
pub const SECRET: &str = "[secret]";
/// What replaces an email address.
pub const EMAIL: &str = "[email]";
/// What replaces a phone number.
pub const PHONE: &str = "[phone]";
/// What replaces the value of a person-name field.
pub const NAME: &str = "[name]";

/// Secrets shorter than this are not searched for (they would match ordinary text).
const MIN_SECRET_LEN: usize = 6;

static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
        .expect("static regex")
});

/// `+1 415 555 0100`, `(415) 555-0100`, `415-555-0100`: groups split by spaces or dashes.
static PHONE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[ \-]?)?(?:\(\d{1,4}\)[ \-]?)?\d{2,4}(?:[ \-]\d{2,5}){1,3}")
        .expect("static regex")
});

/// `first_name: "Sam"`, `"contact_last_name":"Buyer1"`, `firstname=Sam` (JSON, Debug or logfmt).
static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(\\?"?\b[a-z_]*(?:first_?name|last_?name|full_?name|contact_?name|person_?name)\\?"?\s*[:=]\s*)(\\?"(?:[^"\\]|\\[^"])*\\?"|[^\s,;}\]"]+)"#,
    )
    .expect("static regex")
});

/// Redacts log text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
    personal: bool,
}

impl Redactor {
    /// `secrets`: the configured secret values (always redacted); `personal`: redact personal data.
    pub fn new(secrets: impl IntoIterator<Item = String>, personal: bool) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets, personal }
    }

    /// `text` with secrets and (when enabled) personal data replaced by markers.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), SECRET));
            }
        }
        if !self.personal {
            return out;
        }
        if let Cow::Owned(s) = replace(&out, &EMAIL_RE, |_| Some(EMAIL.into())) {
            out = Cow::Owned(s);
        }
        if let Cow::Owned(s) = replace(&out, &NAME_RE, |c| Some(format!("{}{NAME}", &c[1]))) {
            out = Cow::Owned(s);
        }
        if let Cow::Owned(s) = replace(&out, &PHONE_RE, |c| {
            let m = c.get(0)?;
            let digits = m.as_str().chars().filter(char::is_ascii_digit).count();
            let hay = c.get(0)?.as_str();
            let before = out[..m.start()].chars().next_back();
            let after = out[m.end()..].chars().next();
            let glued = |ch: Option<char>| {
                ch.is_some_and(|ch| {
                    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':')
                })
            };
            // Dates (2026-12-01) have 8 digits; ids and hashes are glued to letters or dashes.
            (digits >= 9 && !glued(before) && !glued(after) && !is_date(hay)).then(|| PHONE.into())
        }) {
            out = Cow::Owned(s);
        }
        out
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit)
}

/// Replaces each match for which `with` returns a replacement; keeps the others.
fn replace<'a>(
    text: &'a str,
    re: &Regex,
    with: impl Fn(&Captures<'_>) -> Option<String>,
) -> Cow<'a, str> {
    let mut changed = false;
    let out = re.replace_all(text, |c: &Captures<'_>| match with(c) {
        Some(r) => {
            changed = true;
            r
        }
        None => c[0].to_owned(),
    });
    if changed {
        Cow::Owned(out.into_owned())
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(["s3cr3t-token-value".to_owned(), "abc".to_owned()], true)
    }

    #[test]
    fn secrets_are_always_replaced() {
        let off = Redactor::new(["s3cr3t-token-value".to_owned()], false);
        assert_eq!(
            off.redact("auth failed for s3cr3t-token-value"),
            "auth failed for [secret]"
        );
        // Too short to search for safely.
        assert_eq!(r().redact("abc def"), "abc def");
    }

    #[test]
    fn emails_phones_and_names_are_replaced() {
        let line = r#"record {"contact_email":"sam.buyer3@acmecorp.example","contact_first_name":"Sam","contact_last_name":"Buyer3","phone":"+1 415 555 0100"} first_name=Ann mobile (415) 555-0100"#;
        let out = r().redact(line);
        for gone in [
            "sam.buyer3",
            "Sam\"",
            "Buyer3",
            "415 555 0100",
            "Ann",
            "555-0100",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(
            out.contains(EMAIL) && out.contains(PHONE) && out.contains(NAME),
            "{out}"
        );
    }

    #[test]
    fn names_in_escaped_json_inside_a_json_log_line_are_replaced() {
        let line = r#"{"error":"422 {\"last_name\":\"Buyer9\"}"}"#;
        let out = r().redact(line);
        assert!(!out.contains("Buyer9"), "{out}");
    }

    #[test]
    fn ordinary_log_text_is_left_alone() {
        let r = r();
        for line in [
            "2026-12-01T23:47:20.123Z INFO sync pass staged=6 processed=6 written=12",
            "listening on 127.0.0.1:8787; state /var/lib/prmsync/state.db",
            "deal 123456789012 written; idempotency key 550e8400-e29b-41d4-a716-446655440000",
            "flow=deal_registration name=deal_registration version=3 amount=1,250,000",
            "closing at 2026-12-01 23:47:20",
        ] {
            assert_eq!(r.redact(line), line);
        }
    }

    #[test]
    fn personal_data_stays_when_the_debug_setting_says_so() {
        let r = Redactor::new(Vec::new(), false);
        assert_eq!(r.redact("sam@example.com"), "sam@example.com");
    }
}
