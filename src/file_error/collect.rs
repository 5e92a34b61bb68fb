//! Deserialize an admin-edited TOML file into its raw shape while collecting every unknown key and
//! wrong type with its position, instead of stopping at serde's first error. Pure: no I/O.
//!
//! How: the document is parsed once into spanned values; deserializing it either succeeds or
//! fails at one span. An unknown key is removed there, a value of the wrong type is replaced by a
//! neutral value of the type serde expected (same span), and deserializing runs again, until it
//! succeeds or an error cannot be repaired (a missing key, a syntax error). Every error is kept.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// One key or type problem, positioned by byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Range<usize>,
    /// The dotted key path (`protection.days`, `example[0].name`), or `(syntax)` for text that is
    /// not TOML.
    pub key: String,
    pub message: String,
    /// Where later checks must say nothing more, because what they would say follows from this
    /// problem: the value's own position when a neutral value stands in for a wrong one, or the
    /// start of the table an unknown key was removed from (its "missing" complaints are the
    /// misspelt key's).
    pub quiet: Option<usize>,
}

/// Repairs tried per file; each repair fixes one distinct problem, so this bounds the work.
const MAX_REPAIRS: usize = 200;

/// Deserializes `text` into `T`, collecting every repairable problem. The value is `None` only
/// when a problem could not be repaired (the list then ends with it).
pub fn from_str<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Problem>) {
    let mut doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let problem = Problem {
                span: e.span().unwrap_or(0..0),
                key: "(syntax)".into(),
                message: e.message().to_owned(),
                quiet: None,
            };
            return (None, vec![problem]);
        }
    };
    let mut problems = Vec::new();
    for _ in 0..MAX_REPAIRS {
        let err = match T::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(v) => return (Some(v), problems),
            Err(e) => e,
        };
        let span = err.span().unwrap_or(0..0);
        let message = err.message().to_owned();
        let repair = repair_for(&message);
        let whole = doc.span();
        let found = repair.and_then(|r| apply(doc.get_mut(), &whole, &span, r, ""));
        let fixed = found.is_some();
        let (key, quiet) = match found {
            Some((path, quiet)) => (path, Some(quiet)),
            None => (
                path_of(doc.get_ref(), &span, "").unwrap_or_else(|| "(file)".into()),
                None,
            ),
        };
        problems.push(Problem {
            key,
            span,
            message,
            quiet,
        });
        if !fixed {
            return (None, problems);
        }
    }
    (None, problems)
}

/// What to do at the span of an error.
#[derive(Debug, Clone, Copy)]
enum Repair {
    /// Remove the key (an unknown key).
    Remove,
    /// Put this TOML value in place of the wrong one.
    Replace(&'static str),
}

fn repair_for(message: &str) -> Option<Repair> {
    if message.starts_with("unknown field") {
        return Some(Repair::Remove);
    }
    let expected = message.split_once("expected ")?.1;
    let neutral = if [
        "integer", "i64", "u64", "i32", "u32", "usize", "isize", "i16", "u16", "u8",
    ]
    .iter()
    .any(|t| expected.starts_with(t) || expected.starts_with(&format!("an {t}")))
    {
        "0"
    } else if expected.starts_with("f64") || expected.contains("float") {
        "0.0"
    } else if expected.contains("boolean") || expected.starts_with("bool") {
        "false"
    } else if expected.contains("string") || expected.contains("char") {
        "\"\""
    } else if expected.contains("sequence") || expected.contains("array") {
        "[]"
    } else if expected.contains("map")
        || expected.starts_with("struct")
        || expected.contains("table")
    {
        "{}"
    } else {
        return None;
    };
    Some(Repair::Replace(neutral))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Where a repair was made: the key path, and the position later checks keep quiet about.
type Hit = (String, usize);

/// Applies `repair` to the key or value at `span` somewhere under `table` (which spans `at`).
fn apply(
    table: &mut DeTable<'_>,
    at: &Range<usize>,
    span: &Range<usize>,
    repair: Repair,
    path: &str,
) -> Option<Hit> {
    if let Repair::Remove = repair {
        let hit = table
            .iter()
            .find(|(k, _)| k.span() == *span)
            .map(|(k, _)| k.clone());
        if let Some(k) = hit {
            table.remove(&k);
            return Some((join(path, k.get_ref()), at.start));
        }
    }
    for (k, v) in table.iter_mut() {
        let here = join(path, k.get_ref());
        if let Some(p) = apply_value(v, span, repair, here) {
            return Some(p);
        }
    }
    None
}

fn apply_value(
    v: &mut Spanned<DeValue<'_>>,
    span: &Range<usize>,
    repair: Repair,
    path: String,
) -> Option<Hit> {
    if v.span() == *span
        && let Repair::Replace(neutral) = repair
        && let Ok(n) = DeValue::parse(neutral)
    {
        *v = Spanned::new(span.clone(), n.into_inner());
        return Some((path, span.start));
    }
    let at = v.span();
    match v.get_mut() {
        DeValue::Table(t) => apply(t, &at, span, repair, &path),
        DeValue::Array(items) => apply_array(items, span, repair, &path),
        _ => None,
    }
}

fn apply_array(
    items: &mut DeArray<'_>,
    span: &Range<usize>,
    repair: Repair,
    path: &str,
) -> Option<Hit> {
    for (i, item) in items.iter_mut().enumerate() {
        if let Some(p) = apply_value(item, span, repair, format!("{path}[{i}]")) {
            return Some(p);
        }
    }
    None
}

/// The path of the key or value at `span`, for problems that cannot be repaired.
fn path_of(table: &DeTable<'_>, span: &Range<usize>, path: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let here = join(path, k.get_ref());
        if k.span() == *span {
            return Some(here);
        }
        value_path_of(v, span, here)
    })
}

fn value_path_of(v: &Spanned<DeValue<'_>>, span: &Range<usize>, here: String) -> Option<String> {
    if v.span() == *span {
        return Some(here);
    }
    match v.get_ref() {
        DeValue::Table(t) => path_of(t, span, &here),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| value_path_of(item, span, format!("{here}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        size: Option<i64>,
        inner: Inner,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        on: bool,
        tags: Vec<String>,
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_collected_with_its_path() {
        let text = "name = \"x\"\nsize = \"big\"\nbogus = 1\n[inner]\non = \"yes\"\ntags = [\"a\", 2]\nextra = true\n[[list]]\non = true\ntags = []\nnope = 3\n";
        let (value, problems) = from_str::<Doc>(text);
        assert!(value.is_some(), "{problems:#?}");
        let got: Vec<(String, bool)> = problems
            .iter()
            .map(|p| (p.key.clone(), p.message.starts_with("unknown field")))
            .collect();
        for want in [
            ("size", false),
            ("bogus", true),
            ("inner.on", false),
            ("inner.tags[1]", false),
            ("inner.extra", true),
            ("list[0].nope", true),
        ] {
            assert!(
                got.contains(&(want.0.to_owned(), want.1)),
                "missing {want:?} in {got:?}"
            );
        }
        assert_eq!(problems.len(), 6, "{problems:#?}");
        // Spans point at the mistake: `bogus` on line 3.
        let bogus = problems.iter().find(|p| p.key == "bogus").expect("bogus");
        assert_eq!(&text[bogus.span.clone()], "bogus");
    }

    #[test]
    fn a_missing_key_stops_with_what_was_found_so_far() {
        let (value, problems) = from_str::<Doc>("bogus = 1\n[inner]\non = true\ntags = []\n");
        assert!(value.is_none());
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[1].message.contains("missing field `name`"),
            "{problems:#?}"
        );
    }

    #[test]
    fn syntax_errors_are_labelled_syntax() {
        let (value, problems) = from_str::<Doc>("name = \n");
        assert!(value.is_none());
        assert_eq!(problems[0].key, "(syntax)");
    }
}
