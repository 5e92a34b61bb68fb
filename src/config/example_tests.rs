//! deploy/prmsync.example.toml lists every key the config accepts, and nothing it refuses: the
//! raw structs' own field lists (read through serde) are compared with the file's keys.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::raw;

/// A deserializer that only records the field names a struct asks for, then stops.
struct Fields(&'static [&'static str]);

#[derive(Debug)]
struct Stop(Option<&'static [&'static str]>);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names recorded")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop(None)
    }
}

struct Recorder;

impl<'de> Deserializer<'de> for Recorder {
    type Error = Stop;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop(None))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop(Some(fields)))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields_of<T: for<'de> Deserialize<'de>>() -> Fields {
    match T::deserialize(Recorder) {
        Err(Stop(Some(f))) => Fields(f),
        _ => panic!("not a struct"),
    }
}

/// `section.key` for every key the config accepts; `rest.objects.*` stands for any object name.
fn accepted() -> BTreeSet<String> {
    let sections = [
        ("daemon", fields_of::<raw::RawDaemon>()),
        ("log", fields_of::<raw::RawLog>()),
        ("http", fields_of::<raw::RawHttp>()),
        ("admin", fields_of::<raw::RawAdmin>()),
        ("partnerstack", fields_of::<raw::RawPartnerStack>()),
        ("hubspot", fields_of::<raw::RawHubSpot>()),
        ("salesforce", fields_of::<raw::RawSalesforce>()),
        ("rest", fields_of::<raw::RawRest>()),
        ("rest.objects.*", fields_of::<raw::RawRestObject>()),
        ("retention", fields_of::<raw::RawRetention>()),
        ("erasure", fields_of::<raw::RawErasure>()),
        ("state", fields_of::<raw::RawState>()),
    ];
    let names: BTreeSet<&str> = sections.iter().map(|(s, _)| *s).collect();
    assert!(
        raw::SECTIONS.iter().all(|s| names.contains(s)),
        "a section in raw::SECTIONS is missing from this test"
    );
    let mut keys = BTreeSet::new();
    for (section, Fields(fields)) in sections {
        for f in fields {
            // A table of sub-sections is listed through its sub-section header.
            if section == "rest" && *f == "objects" {
                continue;
            }
            keys.insert(format!("{section}.{f}"));
        }
    }
    keys
}

/// The keys in the example, commented (`# key = ...`) or not, under their section headers.
fn documented(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or(line).trim_end();
        if let Some(name) = body.strip_prefix('[').and_then(|b| b.split(']').next()) {
            section = match name.strip_prefix("rest.objects.") {
                Some(_) => "rest.objects.*".to_owned(),
                None => name.to_owned(),
            };
            continue;
        }
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        if !section.is_empty()
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn the_example_config_lists_every_accepted_key_and_nothing_else() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prmsync.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let (accepted, documented) = (accepted(), documented(&text));
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let refused: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty(),
        "keys the example does not list: {missing:?}"
    );
    assert!(refused.is_empty(), "keys the config refuses: {refused:?}");
}

#[test]
fn the_key_scanner_reads_commented_and_nested_keys() {
    let keys = documented(
        "[daemon]\nstate_path = \"x\"\n# mappings_dir = \"y\"\n# e.g. PRMSYNC__X=1\n\
         # [rest.objects.deals]\n# list_path = \"/d\"\n",
    );
    let want: BTreeSet<String> = [
        "daemon.state_path",
        "daemon.mappings_dir",
        "rest.objects.*.list_path",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys, want);
}
