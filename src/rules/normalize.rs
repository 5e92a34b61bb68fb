//! Normalisation of the values that make up a duplicate key: domains, emails and company names.
//!
//! Domains: trimmed, lower-cased, any scheme, path, port, user part (`ann@`) and trailing dot
//! removed, converted to ASCII (punycode) with IDNA, `www.` dropped, then cut to the registrable
//! domain: the last two labels, or the last three when the last two are a known two-level public
//! suffix such as `co.uk` ([`TWO_LEVEL_SUFFIXES`]). This is a deliberately small public-suffix
//! approach; it does not know private suffixes such as `github.io`.

/// Public suffixes of two labels under which registrations take a third label.
pub const TWO_LEVEL_SUFFIXES: &[&str] = &[
    "co.uk", "org.uk", "ac.uk", "gov.uk", "ltd.uk", "plc.uk", "me.uk", "net.uk", "com.au",
    "net.au", "org.au", "edu.au", "co.nz", "org.nz", "co.jp", "ne.jp", "or.jp", "co.za", "org.za",
    "com.br", "net.br", "org.br", "com.cn", "net.cn", "org.cn", "com.mx", "com.ar", "co.in",
    "net.in", "org.in", "co.kr", "com.sg", "com.hk", "com.tr", "co.il", "com.tw", "co.id",
    "com.my",
];

/// The registrable domain of a domain, URL or email address; `None` when nothing usable is left.
pub fn domain(input: &str) -> Option<String> {
    let mut s = input.trim().to_lowercase();
    if let Some(at) = s.rfind('@') {
        s = s[at + 1..].to_owned();
    }
    if let Some(i) = s.find("://") {
        s = s[i + 3..].to_owned();
    }
    let host_port = s.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
    .trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    // A host IDNA rejects has no registrable domain: the registration then has no key yet and
    // waits as pending with that reason, rather than matching the wrong group.
    let ascii = match idna::domain_to_ascii(host) {
        Ok(a) => a,
        Err(_) => return None,
    };
    let labels: Vec<&str> = ascii.split('.').filter(|l| !l.is_empty()).collect();
    let labels: &[&str] = match labels.first() {
        Some(&"www") if labels.len() > 2 => &labels[1..],
        _ => &labels,
    };
    if labels.len() < 2 {
        return None;
    }
    let last_two = labels[labels.len() - 2..].join(".");
    let keep = if TWO_LEVEL_SUFFIXES.contains(&last_two.as_str()) {
        3
    } else {
        2
    };
    Some(labels[labels.len().saturating_sub(keep)..].join("."))
}

/// An email address, trimmed and lower-cased, with its domain normalised; `None` if it has no `@`.
pub fn email(input: &str) -> Option<String> {
    let s = input.trim().to_lowercase();
    let (local, host) = s.rsplit_once('@')?;
    let local = local.split('+').next().unwrap_or(local);
    if local.is_empty() {
        return None;
    }
    Some(format!("{local}@{}", domain(host)?))
}

/// Legal-form words dropped from the end of company names.
const LEGAL_FORMS: &[&str] = &[
    "inc",
    "incorporated",
    "llc",
    "ltd",
    "limited",
    "corp",
    "corporation",
    "co",
    "company",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "bv",
    "nv",
    "plc",
    "pty",
    "oy",
    "ab",
    "srl",
    "spa",
];

/// A company name compared loosely: lower-cased, punctuation removed, words joined by one space,
/// trailing legal forms (`Inc.`, `GmbH`, ...) dropped.
pub fn company(input: &str) -> Option<String> {
    let cleaned: String = input
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    while words.len() > 1 && words.last().is_some_and(|w| LEGAL_FORMS.contains(w)) {
        words.pop();
    }
    let out = words.join(" ");
    (!out.is_empty()).then_some(out)
}

/// Trimmed and lower-cased text.
pub fn lower(input: &str) -> Option<String> {
    let s = input.trim().to_lowercase();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let cases = [
            ("Example.COM", Some("example.com")),
            ("www.example.com", Some("example.com")),
            ("https://www.Example.com/path?q=1", Some("example.com")),
            ("eu.sales.example.com", Some("example.com")),
            ("shop.example.co.uk", Some("example.co.uk")),
            ("example.co.uk.", Some("example.co.uk")),
            ("ann@Mail.Example.com", Some("example.com")),
            ("example.com:8443", Some("example.com")),
            ("bücher.de", Some("xn--bcher-kva.de")),
            ("www.BÜCHER.de", Some("xn--bcher-kva.de")),
            ("xn--bcher-kva.de", Some("xn--bcher-kva.de")),
            ("localhost", None),
            ("  ", None),
        ];
        for (input, want) in cases {
            assert_eq!(domain(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn emails_and_companies() {
        assert_eq!(
            email(" Ann+deals@Sales.Example.com ").as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(email("no-at-sign"), None);
        assert_eq!(company("Acme, Inc.").as_deref(), Some("acme"));
        assert_eq!(company("ACME Corp").as_deref(), Some("acme"));
        assert_eq!(company("Initech GmbH & Co").as_deref(), Some("initech"));
        assert_eq!(company("Co").as_deref(), Some("co"));
        assert_eq!(company(" - "), None);
    }
}
