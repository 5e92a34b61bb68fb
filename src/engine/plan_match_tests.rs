//! Planner tests for match rules: one line per `on_none` / `on_many` outcome.

use serde_json::{Map, json};

use super::*;
use crate::mapping::MappingSet;

fn mapping(on_none: &str, on_many: &str) -> std::sync::Arc<Mapping> {
    let text = format!(
        r#"
name = "partner-organisation"
[source]
system = "partnerstack"
object = "partnerships"
[target]
system = "hubspot"
object = "companies"
external_id = "prm_partner_key"
[match]
on_none = "{on_none}"
on_many = "{on_many}"
[[match.rule]]
source = "company.website"
target = "domain"
normalise = "domain"
[[field]]
source = "company.name"
target = "name"
[[field]]
source = "company.website"
target = "domain"
transforms = ["domain"]
"#
    );
    MappingSet::compile(&[("match.toml".into(), text)])
        .expect("compiles")
        .mappings[0]
        .clone()
}

fn partner() -> Record {
    let fields =
        json!({"key": "part_7", "company": {"name": "Acme", "website": "https://acme.example"}});
    Record {
        id: "part_7".into(),
        modified_ms: 1,
        fields: fields.as_object().cloned().unwrap_or_default(),
    }
}

fn candidate(id: &str, created_ms: i64) -> MatchCandidate {
    let mut fields = Map::new();
    fields.insert("domain".into(), json!("acme.example"));
    MatchCandidate {
        id: id.into(),
        created_ms,
        fields,
    }
}

/// What a decision amounts to, in one comparable line.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A create upserting by the external id.
    Create,
    /// A write addressed to this existing record by its id, setting the external id.
    Link(&'static str),
    /// Nothing written; the ledger says why.
    Skip(&'static str),
    /// A dead letter whose reason names these ids.
    Dead(Vec<&'static str>),
}

fn outcome(d: &Decision) -> Outcome {
    if let Some(w) = &d.write {
        return match (&w.target_id, &w.id_property) {
            (None, Some(p)) if p == "prm_partner_key" => Outcome::Create,
            (Some(id), None) => {
                assert_eq!(w.payload.get("prm_partner_key"), Some(&json!("part_7")));
                assert_eq!(w.payload.get("name"), Some(&json!("Acme")));
                Outcome::Link(match id.as_str() {
                    "101" => "101",
                    "102" => "102",
                    other => panic!("unexpected target {other}"),
                })
            }
            other => panic!("unexpected write addressing {other:?}"),
        };
    }
    if let Some(dl) = &d.dead_letter {
        let ids = ["101", "102"]
            .into_iter()
            .filter(|id| dl.reason.contains(id))
            .collect();
        assert_eq!(dl.record_id, "part_7");
        return Outcome::Dead(ids);
    }
    Outcome::Skip(d.ledger.as_ref().expect("a ledger line").action)
}

fn check(on_none: &str, on_many: &str, candidates: &[MatchCandidate], want: Outcome) {
    let m = mapping(on_none, on_many);
    let found = Found {
        field: "domain",
        key: "acme.example",
        candidates,
        claimed: &BTreeSet::new(),
    };
    let d = forward_matched(&m, &partner(), None, &Lookups::NONE, Some(found));
    assert_eq!(outcome(&d), want, "on_none={on_none} on_many={on_many}");
}

#[test]
fn match_outcomes() {
    let (old, new) = (candidate("101", 10), candidate("102", 20));
    check("create", "fail", &[], Outcome::Create);
    check("skip", "fail", &[], Outcome::Skip(action::NO_MATCH));
    check(
        "create",
        "fail",
        std::slice::from_ref(&new),
        Outcome::Link("102"),
    );
    check(
        "skip",
        "skip",
        std::slice::from_ref(&old),
        Outcome::Link("101"),
    );
    check(
        "create",
        "fail",
        &[old.clone(), new.clone()],
        Outcome::Dead(vec!["101", "102"]),
    );
    check(
        "create",
        "skip",
        &[old.clone(), new.clone()],
        Outcome::Skip(action::AMBIGUOUS_SKIPPED),
    );
    check(
        "create",
        "oldest",
        &[new.clone(), old.clone()],
        Outcome::Link("101"),
    );
    // Same creation time: the smaller id decides, so the choice is stable.
    check(
        "create",
        "oldest",
        &[candidate("102", 5), candidate("101", 5)],
        Outcome::Link("101"),
    );
}

#[test]
fn no_search_or_an_existing_link_plans_as_before() {
    let m = mapping("skip", "fail");
    let d = forward_matched(&m, &partner(), None, &Lookups::NONE, None);
    assert_eq!(outcome(&d), Outcome::Create, "no rule gave a key");
    // A link that knows its record's state (a write landed); one that knows none goes by id.
    let known = serde_json::json!({"name": "Old name"});
    let linked = Link {
        target_id: Some("555".into()),
        target_state: crate::store::StateDigest::of(known.as_object().expect("object")),
        ..Link::default()
    };
    let cands = [candidate("101", 1), candidate("102", 2)];
    let found = Found {
        field: "domain",
        key: "acme.example",
        candidates: &cands,
        claimed: &BTreeSet::new(),
    };
    let d = forward_matched(&m, &partner(), Some(&linked), &Lookups::NONE, Some(found));
    let w = d.write.expect("an update");
    assert_eq!(
        (w.target_id.as_deref(), w.id_property.as_deref()),
        (Some("555"), Some("prm_partner_key")),
        "a linked record keeps its link"
    );
    assert!(d.dead_letter.is_none());
    assert_eq!(
        forward(&m, &partner(), None).write.map(|w| w.target_id),
        Some(None)
    );
}

#[test]
fn paired_or_claimed_candidates_do_not_match() {
    let m = mapping("skip", "fail");
    let mut paired = candidate("101", 1);
    paired
        .fields
        .insert("prm_partner_key".into(), json!("part_1"));
    let mut mine = candidate("102", 2);
    mine.fields
        .insert("prm_partner_key".into(), json!("part_7"));
    let decide = |cands: &[MatchCandidate], claimed: &BTreeSet<String>| {
        let found = Found {
            field: "domain",
            key: "acme.example",
            candidates: cands,
            claimed,
        };
        outcome(&forward_matched(
            &m,
            &partner(),
            None,
            &Lookups::NONE,
            Some(found),
        ))
    };
    let none = BTreeSet::new();
    assert_eq!(
        decide(std::slice::from_ref(&paired), &none),
        Outcome::Skip(action::NO_MATCH)
    );
    assert_eq!(
        decide(&[paired.clone(), mine], &none),
        Outcome::Link("102"),
        "its own id matches"
    );
    let claimed = BTreeSet::from(["102".to_owned()]);
    assert_eq!(
        decide(&[candidate("101", 1), candidate("102", 2)], &claimed),
        Outcome::Link("101")
    );
}
