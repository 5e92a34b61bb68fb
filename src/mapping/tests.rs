//! Table tests for every transform and type, and property tests that `both` fields survive the
//! trip there and back.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{Lookups, Mapping, MappingSet, Op};

/// A mapping with one `[[field]]` made of `field` (TOML keys), from partnerstack/deals to hubspot/x
/// (an object without a known schema, so any target name is allowed).
fn mapping(field: &str) -> Mapping {
    let text = format!(
        "name = \"t\"\n[source]\nsystem = \"partnerstack\"\nobject = \"deals\"\n\
         [target]\nsystem = \"hubspot\"\nobject = \"x\"\nexternal_id = \"ext\"\n\
         [[field]]\ntarget = \"out\"\n{field}\n"
    );
    // One file on its own: cross-file checks (lookup flow names) are not part of this table.
    match super::compile::compile("t.toml", &text) {
        Ok(m) => m,
        Err(e) => panic!("{field}: {e:?}"),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// One forward case: the field's TOML, the input record, and `out` (or an error fragment).
fn check(field: &str, input: Value, expect: Result<Value, &str>) {
    check_with(field, input, &Lookups::NONE, expect);
}

fn check_with(field: &str, input: Value, lookups: &Lookups, expect: Result<Value, &str>) {
    let m = mapping(field);
    let got = m.to_target_with(&obj(input.clone()), Op::Create, lookups);
    match (got, expect) {
        (Ok(out), Ok(want)) => assert_eq!(
            out.get("out").cloned().unwrap_or(Value::Null),
            want,
            "{field} on {input}"
        ),
        (Err(e), Err(want)) => assert!(
            e.to_string().contains(want),
            "{field} on {input}: {e} should contain {want:?}"
        ),
        (got, want) => panic!("{field} on {input}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn text_transforms() {
    let cases: &[(&str, Value, Result<Value, &str>)] = &[
        (
            r#"source = "a"
transforms = ["trim"]"#,
            json!({"a": "  x y  "}),
            Ok(json!("x y")),
        ),
        (
            r#"source = "a"
transforms = ["lower"]"#,
            json!({"a": "ÄBC"}),
            Ok(json!("äbc")),
        ),
        (
            r#"source = "a"
transforms = ["upper"]"#,
            json!({"a": "de"}),
            Ok(json!("DE")),
        ),
        (
            r#"source = "a"
transforms = ["domain"]"#,
            json!({"a": "HTTPS://www.Acme.example/x?y"}),
            Ok(json!("acme.example")),
        ),
        (
            r#"source = "a"
transforms = ["domain"]"#,
            json!({"a": "ann@Acme.example"}),
            Ok(json!("acme.example")),
        ),
        (
            r#"source = "a"
transforms = ["trim", { template = "<{value}> {b.c}" }]"#,
            json!({"a": " v ", "b": {"c": 3}}),
            Ok(json!("<v> 3")),
        ),
        (
            r#"transforms = [{ template = "{first} {last}" }]"#,
            json!({"first": "Ann", "last": "Lee"}),
            Ok(json!("Ann Lee")),
        ),
        // Blank after transforms: left out (never overwrite with blank) ...
        (
            r#"source = "a"
transforms = ["trim"]"#,
            json!({"a": "   "}),
            Ok(Value::Null),
        ),
        // ... unless the field allows it.
        (
            r#"source = "a"
allow_blank = true"#,
            json!({"a": ""}),
            Ok(json!("")),
        ),
    ];
    for (field, input, expect) in cases {
        check(field, input.clone(), expect.clone());
    }
}

#[test]
fn constants_defaults_and_required() {
    let cases: &[(&str, Value, Result<Value, &str>)] = &[
        (r#"const = "fixed""#, json!({}), Ok(json!("fixed"))),
        (
            r#"const = 3
type = "int""#,
            json!({}),
            Ok(json!(3)),
        ),
        (
            r#"source = "a"
default = "none""#,
            json!({}),
            Ok(json!("none")),
        ),
        (
            r#"source = "a"
default = "none""#,
            json!({"a": " "}),
            Ok(json!("none")),
        ),
        (
            r#"source = "a"
default = "none""#,
            json!({"a": "set"}),
            Ok(json!("set")),
        ),
        (
            r#"source = "a"
required = true"#,
            json!({}),
            Err("a: is required but missing or blank"),
        ),
        (
            r#"source = "a.b"
required = true"#,
            json!({"a": {"b": "deep"}}),
            Ok(json!("deep")),
        ),
    ];
    for (field, input, expect) in cases {
        check(field, input.clone(), expect.clone());
    }
}

#[test]
fn numbers_keep_their_precision() {
    let cases: &[(&str, Value, Result<Value, &str>)] = &[
        (
            r#"source = "a"
type = "decimal""#,
            json!({"a": 0.1}),
            Ok(json!("0.1")),
        ),
        (
            r#"source = "a"
type = "decimal""#,
            json!({"a": "12345678901234567890.123456789"}),
            Ok(json!("12345678901234567890.123456789")),
        ),
        (
            r#"source = "a"
source_type = "int"
type = "decimal"
transforms = [{ scale = -2 }]"#,
            json!({"a": 1}),
            Ok(json!("0.01")),
        ),
        (
            r#"source = "a"
source_type = "int"
type = "decimal"
transforms = [{ scale = -2 }]"#,
            json!({"a": 9_007_199_254_740_993_i64}),
            Ok(json!("90071992547409.93")),
        ),
        (
            r#"source = "a"
type = "decimal"
transforms = [{ round = 2 }]"#,
            json!({"a": "2.675"}),
            Ok(json!("2.68")),
        ),
        (
            r#"source = "a"
type = "decimal"
transforms = [{ round = 0 }]"#,
            json!({"a": "-2.5"}),
            Ok(json!("-3")),
        ),
        (
            r#"source = "a"
type = "decimal"
transforms = [{ decimals = 2 }]"#,
            json!({"a": "7"}),
            Ok(json!("7")),
        ),
        (
            r#"source = "a"
transforms = [{ decimals = 2 }]"#,
            json!({"a": 7}),
            Ok(json!("7.00")),
        ),
        (
            r#"source = "a"
transforms = [{ decimals = 3 }]"#,
            json!({"a": "1.23456"}),
            Ok(json!("1.235")),
        ),
        (
            r#"source = "a"
transforms = [{ decimals = 2 }]"#,
            json!({"a": "lots"}),
            Err("\"lots\" is not a number"),
        ),
        (
            r#"source = "a"
type = "int""#,
            json!({"a": "42"}),
            Ok(json!(42)),
        ),
        (
            r#"source = "a"
type = "int""#,
            json!({"a": 4.5}),
            Err("not a whole number"),
        ),
        (
            r#"source = "a"
source_type = "decimal"
type = "int""#,
            json!({"a": "3.50"}),
            Err("has a fraction"),
        ),
        (
            r#"source = "a"
type = "bool""#,
            json!({"a": "yes"}),
            Ok(json!(true)),
        ),
        (
            r#"source = "a"
type = "bool""#,
            json!({"a": 0}),
            Ok(json!(false)),
        ),
        (
            r#"source = "a"
type = "bool""#,
            json!({"a": "perhaps"}),
            Err("not true or false"),
        ),
    ];
    for (field, input, expect) in cases {
        check(field, input.clone(), expect.clone());
    }
}

#[test]
fn dates_and_time_zones() {
    // 2025-12-31T23:30:00Z as epoch milliseconds.
    let late = 1_767_223_800_000_i64;
    let cases: &[(&str, Value, Result<Value, &str>)] = &[
        // Around midnight: the declared zone decides the calendar day.
        (
            r#"source = "a"
type = "date"
timezone = "UTC""#,
            json!({"a": late}),
            Ok(json!("2025-12-31")),
        ),
        (
            r#"source = "a"
type = "date"
timezone = "Europe/Berlin""#,
            json!({"a": late}),
            Ok(json!("2026-01-01")),
        ),
        (
            r#"source = "a"
type = "date"
timezone = "Pacific/Kiritimati""#,
            json!({"a": "2025-12-31T10:30:00Z"}),
            Ok(json!("2026-01-01")),
        ),
        (
            r#"source = "a"
type = "date"
timezone = "America/Los_Angeles""#,
            json!({"a": "2026-01-01T05:30:00Z"}),
            Ok(json!("2025-12-31")),
        ),
        // Spring forward in Berlin: 02:30 does not exist and is read as 03:30 CEST.
        (
            r#"source = "a"
type = "datetime"
timezone = "Europe/Berlin""#,
            json!({"a": "2026-03-29T02:30:00"}),
            Ok(json!("2026-03-29T01:30:00.000Z")),
        ),
        // Fall back in Berlin: 02:30 happens twice; the earlier (CEST) instant is taken.
        (
            r#"source = "a"
type = "datetime"
timezone = "Europe/Berlin""#,
            json!({"a": "2026-10-25T02:30:00"}),
            Ok(json!("2026-10-25T00:30:00.000Z")),
        ),
        // New York's fall back, one hour after midnight UTC-4.
        (
            r#"source = "a"
type = "datetime"
timezone = "America/New_York""#,
            json!({"a": "2026-11-01T01:30:00"}),
            Ok(json!("2026-11-01T05:30:00.000Z")),
        ),
        // An explicit offset wins over the declared zone.
        (
            r#"source = "a"
type = "datetime"
timezone = "Asia/Tokyo""#,
            json!({"a": "2026-01-31T17:00:00+01:00"}),
            Ok(json!("2026-01-31T16:00:00.000Z")),
        ),
        (
            r#"source = "a"
type = "date""#,
            json!({"a": "2026-02-29"}),
            Err("not a date"),
        ),
        (
            r#"source = "a"
type = "date""#,
            json!({"a": "2028-02-29"}),
            Ok(json!("2028-02-29")),
        ),
        // Formatting in the field's zone.
        (
            r#"source = "a"
source_type = "datetime"
timezone = "Europe/Berlin"
transforms = [{ format_date = "%d.%m.%Y %H:%M" }]"#,
            json!({"a": late}),
            Ok(json!("01.01.2026 00:30")),
        ),
        (
            r#"source = "a"
source_type = "date"
transforms = [{ format_date = "%B %-d, %Y" }]"#,
            json!({"a": "2026-03-05"}),
            Ok(json!("March 5, 2026")),
        ),
        // Parsing with a pattern.
        (
            r#"source = "a"
type = "date"
source_type = "string"
transforms = [{ parse_date = "%d/%m/%Y" }]"#,
            json!({"a": "05/03/2026"}),
            Ok(json!("2026-03-05")),
        ),
        (
            r#"source = "a"
type = "date"
source_type = "string"
transforms = [{ parse_date = "%d/%m/%Y" }]"#,
            json!({"a": "2026-03-05"}),
            Err("does not match the date pattern"),
        ),
        (
            r#"source = "a"
type = "datetime"
source_type = "string"
timezone = "America/New_York"
transforms = [{ parse_datetime = "%m/%d/%Y %I:%M %p" }]"#,
            json!({"a": "03/08/2026 03:15 AM"}),
            Ok(json!("2026-03-08T07:15:00.000Z")),
        ),
    ];
    for (field, input, expect) in cases {
        check(field, input.clone(), expect.clone());
    }
}

#[test]
fn value_maps() {
    let map = r#"source = "a"
type = "enum"
values = { s = "S", "2" = "two", true = "yes" }"#;
    let cases: Vec<(String, Value, Result<Value, &str>)> = vec![
        (map.into(), json!({"a": "s"}), Ok(json!("S"))),
        (map.into(), json!({"a": 2}), Ok(json!("two"))),
        (map.into(), json!({"a": true}), Ok(json!("yes"))),
        (
            map.into(),
            json!({"a": "S"}),
            Err("value \"S\" is not in the value map (known: 2, s, true)"),
        ),
        (map.into(), json!({}), Ok(Value::Null)),
        (
            format!("{map}\nunmapped = \"default:other\""),
            json!({"a": "x"}),
            Ok(json!("other")),
        ),
        (
            format!("{map}\nunmapped = \"pass\""),
            json!({"a": "x"}),
            Ok(json!("x")),
        ),
        (format!("{map}\ndefault = \"s\""), json!({}), Ok(json!("S"))),
    ];
    for (field, input, expect) in cases {
        check(&field, input, expect);
    }
}

#[test]
fn lookups_read_prefetched_links() {
    let mut links = Lookups::default();
    links.insert("partners", "part_7".into(), "1001".into());
    let strict = r#"source = "p"
transforms = [{ lookup = "partners" }]"#;
    let lenient = r#"source = "p"
transforms = [{ lookup = "partners", missing = "blank" }]"#;
    check_with(strict, json!({"p": "part_7"}), &links, Ok(json!("1001")));
    check_with(
        strict,
        json!({"p": "part_8"}),
        &links,
        Err("\"part_8\" has no linked record in flow \"partners\" yet"),
    );
    check_with(lenient, json!({"p": "part_8"}), &links, Ok(Value::Null));
    check_with(strict, json!({}), &links, Ok(Value::Null));
    let m = mapping(strict);
    let records = [
        obj(json!({"p": "b"})),
        obj(json!({"p": "a"})),
        obj(json!({"p": "b"})),
    ];
    assert_eq!(
        m.lookup_keys(records.iter()),
        vec![("partners".to_owned(), vec!["a".to_owned(), "b".to_owned()])]
    );
}

#[test]
fn direction_owner_and_when() {
    // (field, applies on create, applies on update, flows back)
    let cases = [
        ("source = \"a\"", true, true, false),
        ("source = \"a\"\non = \"create_only\"", true, false, false),
        ("source = \"a\"\non = \"update_only\"", false, true, false),
        (
            "source = \"a\"\ndirection = \"to_source\"",
            false,
            false,
            true,
        ),
        (
            "source = \"a\"\ndirection = \"both\"\nowner = \"source\"",
            true,
            true,
            false,
        ),
        (
            "source = \"a\"\ndirection = \"both\"\nowner = \"target\"",
            true,
            false,
            true,
        ),
        (
            "source = \"a\"\ndirection = \"both\"\nowner = \"latest\"",
            true,
            true,
            true,
        ),
    ];
    for (field, create, update, back) in cases {
        let m = mapping(field);
        let rec = obj(json!({"a": "v"}));
        let on = |op| m.to_target(&rec, op).map(|o| o.contains_key("out"));
        assert_eq!(on(Op::Create), Ok(create), "{field} create");
        assert_eq!(on(Op::Update), Ok(update), "{field} update");
        let rev = m
            .to_source(&obj(json!({"out": "w"})))
            .map(|o| o.contains_key("a"));
        assert_eq!(rev, Ok(back), "{field} back");
    }
}

/// A mapping with several `both` fields whose values should survive there and back.
fn round_trip_mapping() -> Mapping {
    let text = r#"name = "rt"
[source]
system = "partnerstack"
object = "deals"
[target]
system = "hubspot"
object = "x"
external_id = "ext"
[[field]]
source = "stage"
target = "stage_out"
type = "enum"
direction = "both"
owner = "latest"
values = { a = "A", b = "B", c = "C" }
[[field]]
source = "cents"
target = "amount"
source_type = "int"
type = "decimal"
direction = "both"
owner = "latest"
transforms = [{ scale = -2 }]
[[field]]
source = "day"
target = "day_out"
type = "date"
timezone = "Europe/Berlin"
direction = "both"
owner = "latest"
[[field]]
source = "name"
target = "name_out"
direction = "both"
owner = "latest"
[[field]]
source = "flag"
target = "flag_out"
type = "bool"
direction = "both"
owner = "latest"
"#;
    match MappingSet::compile(&[("rt.toml".into(), text.into())]) {
        Ok(set) => (*set.mappings[0]).clone(),
        Err(e) => panic!("{e}"),
    }
}

proptest! {
    #[test]
    fn both_fields_survive_there_and_back(
        stage in prop::sample::select(vec!["a", "b", "c"]),
        cents in -1_000_000_000_000_i64..1_000_000_000_000,
        days in 0_i32..40_000,
        name in "[A-Za-z0-9 ,.&'-]{1,40}",
        flag in any::<bool>(),
    ) {
        let m = round_trip_mapping();
        let day = jiff::civil::date(1970, 1, 1)
            .checked_add(jiff::Span::new().days(days))
            .expect("in range");
        let source = obj(json!({
            "stage": stage, "cents": cents, "day": day.to_string(), "name": name, "flag": flag,
        }));
        let target = m.to_target(&source, Op::Update).expect("forward");
        let back = m.to_source(&target).expect("back");
        // Back in the source's canonical form, and stable under another trip.
        prop_assert_eq!(&back, &m.source_state(&source));
        let again = m.to_source(&m.to_target(&back, Op::Update).expect("forward again")).expect("back again");
        prop_assert_eq!(back, again);
    }

    #[test]
    fn forward_is_deterministic_and_never_panics(
        stage in "[a-z]{0,3}",
        cents in any::<i64>(),
        day in "[0-9-]{0,12}",
    ) {
        let m = round_trip_mapping();
        let source = obj(json!({"stage": stage, "cents": cents, "day": day}));
        let a = m.to_target(&source, Op::Create);
        let b = m.to_target(&source, Op::Create);
        prop_assert_eq!(a, b);
    }
}
