//! Flow filters and match-key normalisation: which source records a flow takes, and how records
//! that exist on both sides are paired. Pure.

use serde_json::{Map, Value};

use super::apply::get_path;
use super::{Mapping, MatchRule, Normalise};

/// One condition on a source record; a flow takes a record when all of its conditions hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub path: String,
    pub test: Test,
}

/// The test a condition applies to the value at its path (compared as text).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    In(Vec<String>),
    NotIn(Vec<String>),
    Present(bool),
}

/// A JSON scalar as the text filters and match keys compare.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => Some(v.to_string()),
    }
}

impl Condition {
    pub fn holds(&self, record: &Map<String, Value>) -> bool {
        let v = get_path(record, &self.path).and_then(text);
        match &self.test {
            Test::In(list) => v.is_some_and(|v| list.contains(&v)),
            Test::NotIn(list) => v.is_none_or(|v| !list.contains(&v)),
            Test::Present(want) => v.is_some() == *want,
        }
    }
}

impl Mapping {
    /// Whether this flow takes `record` (its filter holds).
    pub fn accepts(&self, record: &Map<String, Value>) -> bool {
        self.filter.iter().all(|c| c.holds(record))
    }
}

impl Normalise {
    /// The comparable form of a match key; `None` when blank.
    pub fn apply(self, raw: &str) -> Option<String> {
        let s = raw.trim();
        let out = match self {
            Normalise::Exact => s.to_owned(),
            Normalise::Lower | Normalise::Email => s.to_lowercase(),
            Normalise::Domain => {
                let s = s.to_lowercase();
                let s = s.split_once("://").map_or(s.as_str(), |(_, rest)| rest);
                let host = s.split(['/', '?', '#']).next().unwrap_or("");
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                let host = host.split(':').next().unwrap_or("");
                host.strip_prefix("www.").unwrap_or(host).to_owned()
            }
        };
        (!out.is_empty()).then_some(out)
    }
}

impl MatchRule {
    /// The normalised key of a source record under this rule.
    pub fn source_key(&self, record: &Map<String, Value>) -> Option<String> {
        get_path(record, &self.source)
            .and_then(text)
            .and_then(|s| self.normalise.apply(&s))
    }

    /// The normalised key of a target record under this rule.
    pub fn target_key(&self, record: &Map<String, Value>) -> Option<String> {
        record
            .get(&self.target)
            .and_then(text)
            .and_then(|s| self.normalise.apply(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions() {
        let r = json!({"stage": "approved", "partner": {"flag": true}, "n": 3, "blank": " "});
        let r = r.as_object().unwrap();
        let cases = [
            (
                "stage",
                Test::In(vec!["submitted".into(), "approved".into()]),
                true,
            ),
            ("stage", Test::In(vec!["won".into()]), false),
            ("stage", Test::NotIn(vec!["lost".into()]), true),
            ("missing", Test::NotIn(vec!["lost".into()]), true),
            ("partner.flag", Test::In(vec!["true".into()]), true),
            ("n", Test::In(vec!["3".into()]), true),
            ("blank", Test::Present(true), false),
            ("blank", Test::Present(false), true),
            ("stage", Test::Present(true), true),
        ];
        for (path, test, want) in cases {
            let c = Condition {
                path: path.into(),
                test: test.clone(),
            };
            assert_eq!(c.holds(r), want, "{path} {test:?}");
        }
    }

    #[test]
    fn normalises_match_keys() {
        let cases = [
            (
                Normalise::Domain,
                "https://www.Acme.example/about",
                Some("acme.example"),
            ),
            (Normalise::Domain, "acme.example:8080", Some("acme.example")),
            (Normalise::Domain, "ann@Acme.example", Some("acme.example")),
            (Normalise::Domain, "  ", None),
            (
                Normalise::Email,
                " Ann@Acme.Example ",
                Some("ann@acme.example"),
            ),
            (Normalise::Lower, "ACME", Some("acme")),
            (Normalise::Exact, " ACME ", Some("ACME")),
        ];
        for (n, raw, want) in cases {
            assert_eq!(n.apply(raw).as_deref(), want, "{n:?} {raw:?}");
        }
    }
}
