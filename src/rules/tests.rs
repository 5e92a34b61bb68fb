//! Table tests for each rule and tie-breaker, the rules file's errors, and the order-independence
//! property.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const DAY: i64 = DAY_MS;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn rules() -> Rules {
    Rules::builtin().expect("the shipped rules compile")
}

fn rules_with(from: &str, to: &str) -> Rules {
    let text = BUILTIN.1.replace(from, to);
    assert_ne!(text, BUILTIN.1, "replacement {from:?} did not apply");
    Rules::compile("test.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

/// A qualified registration of `domain` by `partner` at `at`.
fn reg(id: &str, partner: &str, domain: &str, at: i64) -> RegistrationEvent {
    RegistrationEvent {
        id: id.into(),
        at_ms: at,
        submitted_ms: at,
        fields: obj(json!({
            "partner_key": partner,
            "account_name": format!("Customer of {domain}"),
            "amount": 500_000,
            "close_date": "2026-06-30",
            "contact_first_name": "Ann",
            "contact_last_name": "Lee",
            "contact_email": format!("ann@{domain}"),
        })),
    }
}

fn with(mut e: RegistrationEvent, k: &str, v: Value) -> RegistrationEvent {
    e.fields.insert(k.into(), v);
    e
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn input(events: Vec<RegistrationEvent>) -> Input {
    let as_of = events.iter().map(|e| e.at_ms).max().unwrap_or(0);
    Input {
        events,
        as_of_ms: as_of,
        ..Input::default()
    }
}

/// `(id, status, duplicate_of, reason fragment)` for every decision, sorted by id.
fn check(rules: &Rules, input: &Input, want: &[(&str, Status, Option<&str>, &str)]) {
    let got = evaluate(rules, input);
    assert_eq!(got.len(), want.len(), "decisions: {got:#?}");
    for (d, (id, status, dup, frag)) in got.iter().zip(want) {
        assert_eq!(&d.registration_id, id);
        assert_eq!(d.status, *status, "{id}: {}", d.reason);
        assert_eq!(d.duplicate_of.as_deref(), *dup, "{id}: {}", d.reason);
        assert!(
            d.reason.contains(frag),
            "{id}: {:?} lacks {frag:?}",
            d.reason
        );
        assert!(!d.trace.is_empty(), "{id} has no trace");
    }
}

#[test]
fn shipped_examples_pass() {
    let r = rules();
    assert!(r.examples.len() >= 4);
    let failures = run_examples(&r);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn each_rule_decides() {
    use Status::*;
    let r = rules();
    // (name, input, expected decisions)
    type Want = Vec<(&'static str, Status, Option<&'static str>, &'static str)>;
    let mut crm_reserved = input(vec![reg("a", "part_1", "globex.example", T0)]);
    crm_reserved.crm.accounts.push(CrmAccount {
        id: "acc_9".into(),
        domain: "www.globex.example".into(),
        fields: obj(json!({"prm_direct_reserved": "true"})),
    });
    let mut open_direct = input(vec![reg("a", "part_1", "hooli.example", T0)]);
    open_direct.crm.opportunities.push(CrmOpportunity {
        id: "hs_1".into(),
        domain: "hooli.example".into(),
        open: true,
        partner_sourced: false,
    });
    let mut partner_opp = open_direct.clone();
    partner_opp.crm.opportunities[0].partner_sourced = true;
    let mut manual = input(vec![
        reg("a", "part_1", "acme.example", T0),
        reg("b", "part_2", "acme.example", T0 + DAY),
    ]);
    manual.reviews.push(ReviewOutcome {
        registration_id: "b".into(),
        approve: true,
        reason: "partner brought the champion".into(),
        at_ms: T0 + 2 * DAY,
    });
    let mut manual_reject = input(vec![reg("a", "part_1", "acme.example", T0)]);
    manual_reject.reviews.push(ReviewOutcome {
        registration_id: "a".into(),
        approve: false,
        reason: "customer denies contact".into(),
        at_ms: T0 + DAY,
    });
    let cases: Vec<(&str, Input, Want)> = vec![
        (
            "a lone qualified registration is approved",
            input(vec![reg("a", "part_1", "acme.example", T0)]),
            vec![(
                "a",
                Approved,
                None,
                "protected until 2026-04-01 00:00:00 UTC",
            )],
        ),
        (
            "reserved domain from the list, via a subdomain email",
            input(vec![reg("a", "part_1", "eu.bigbank.example", T0)]),
            vec![(
                "a",
                Rejected,
                None,
                "bigbank.example is reserved for direct sales (reserved_accounts line 42)",
            )],
        ),
        (
            "reserved by a CRM flag on the account",
            crm_reserved,
            vec![("a", Rejected, None, "prm_direct_reserved")],
        ),
        (
            "open direct opportunity rejects",
            open_direct,
            vec![(
                "a",
                Rejected,
                None,
                "open opportunity hs_1 on hooli.example",
            )],
        ),
        (
            "a partner-sourced opportunity is not direct pipeline",
            partner_opp,
            vec![("a", Approved, None, "first qualified")],
        ),
        (
            "missing evidence waits as pending, with every gap named",
            input(vec![with(
                with(reg("a", "part_1", "acme.example", T0), "amount", json!(10)),
                "contact_last_name",
                json!(""),
            )]),
            vec![(
                "a",
                Pending,
                None,
                "amount 10 is below the minimum 100000; the customer contact has no full name (qualification line 29)",
            )],
        ),
        (
            "a close date beyond the window is not qualified",
            input(vec![with(
                reg("a", "part_1", "acme.example", T0),
                "close_date",
                json!("2030-01-01"),
            )]),
            vec![(
                "a",
                Pending,
                None,
                "the close date is not within 540 days of submission",
            )],
        ),
        (
            "a contact at another domain is not a named contact at the customer",
            input(vec![with(
                with(
                    reg("a", "part_1", "acme.example", T0),
                    "customer_domain",
                    json!("acme.example"),
                ),
                "contact_email",
                json!("ann@gmail.com"),
            )]),
            vec![("a", Pending, None, "not at the customer's domain")],
        ),
        (
            "no key at all is pending on the duplicate key",
            input(vec![with(
                reg("a", "part_1", "acme.example", T0),
                "contact_email",
                json!(""),
            )]),
            vec![(
                "a",
                Pending,
                None,
                "customer_domain, contact_email (duplicate_key line",
            )],
        ),
        (
            "an operator approval beats first-qualified",
            manual,
            vec![
                (
                    "a",
                    Duplicate,
                    Some("b"),
                    "b was approved by an operator at 2026-01-03 00:00:00 UTC",
                ),
                (
                    "b",
                    Approved,
                    None,
                    "approved by review: partner brought the champion",
                ),
            ],
        ),
        (
            "an operator rejection stands",
            manual_reject,
            vec![(
                "a",
                Rejected,
                None,
                "rejected by review: customer denies contact",
            )],
        ),
    ];
    for (name, input, want) in cases {
        eprintln!("case: {name}");
        check(&r, &input, &want);
    }
}

#[test]
fn open_direct_can_mark_influenced() {
    let r = rules_with(r#"action = "reject" "#, r#"action = "influenced" "#);
    let mut i = input(vec![reg("a", "part_1", "hooli.example", T0)]);
    i.crm.opportunities.push(CrmOpportunity {
        id: "hs_1".into(),
        domain: "hooli.example".into(),
        open: true,
        partner_sourced: false,
    });
    check(
        &r,
        &i,
        &[("a", Status::Influenced, None, "credited as influencing")],
    );
    assert_eq!(Status::Influenced.attribution(), "partner_influenced");
}

#[test]
fn first_qualified_wins_even_if_submitted_later() {
    // b submits first but only qualifies (adds its contact) after a has qualified.
    let b_early = with(
        reg("b", "part_1", "acme.example", T0),
        "contact_email",
        json!(""),
    );
    let b_early = with(b_early, "customer_domain", json!("acme.example"));
    let b_late = with(
        reg("b", "part_1", "acme.example", T0 + 3 * DAY),
        "customer_domain",
        json!("acme.example"),
    );
    let mut b_late = b_late;
    b_late.submitted_ms = T0;
    let a = reg("a", "part_2", "www.Acme.example", T0 + DAY);
    check(
        &rules(),
        &input(vec![b_early.clone(), a.clone(), b_late]),
        &[
            (
                "a",
                Status::Approved,
                None,
                "first qualified registration for acme.example",
            ),
            (
                "b",
                Status::Duplicate,
                Some("a"),
                "a qualified first, at 2026-01-02 00:00:00 UTC (silver tier); this one qualified at 2026-01-04 00:00:00 UTC",
            ),
        ],
    );
    // Before b completes its registration it waits as pending, and a is approved.
    check(
        &rules(),
        &input(vec![b_early, a]),
        &[
            ("a", Status::Approved, None, "first qualified"),
            (
                "b",
                Status::Pending,
                None,
                "the contact email is not at the customer's domain",
            ),
        ],
    );
}

#[test]
fn unqualified_then_completed_is_re_evaluated() {
    let r = rules();
    let thin = with(reg("a", "part_1", "acme.example", T0), "amount", json!(5));
    check(
        &r,
        &input(vec![thin.clone()]),
        &[("a", Status::Pending, None, "below the minimum")],
    );
    let full = reg("a", "part_1", "acme.example", T0 + DAY);
    let d = evaluate(&r, &input(vec![thin, full]));
    assert_eq!(d[0].status, Status::Approved);
    // Protection runs from the moment it qualified, not from submission.
    assert_eq!(d[0].protected_until, Some(T0 + DAY + 90 * DAY));
}

/// The shipped rules without the review step, so ties go to the tie-breakers.
fn rules_no_review() -> Rules {
    rules_with(
        r#"  "review",                   # ties a person should settle"#,
        "",
    )
}

#[test]
fn tie_breakers_in_order() {
    let r = rules_no_review();
    // Same qualification time: gold (part_1) beats silver (part_2) whatever the ids.
    check(
        &r,
        &input(vec![
            reg("z", "part_1", "acme.example", T0),
            reg("a", "part_2", "acme.example", T0),
        ]),
        &[
            (
                "a",
                Status::Duplicate,
                Some("z"),
                "both qualified at 2026-01-01 00:00:00 UTC; the tie-break on tier decided: z is gold tier, this one silver (tie_breakers line 16)",
            ),
            ("z", Status::Approved, None, ""),
        ],
    );
    // Same tier: earlier submission wins.
    let mut early = reg("y", "part_1", "acme.example", T0);
    early.submitted_ms = T0 - DAY;
    check(
        &r,
        &input(vec![reg("b", "part_4", "acme.example", T0), early]),
        &[
            (
                "b",
                Status::Duplicate,
                Some("y"),
                "the tie-break on submitted decided: y was submitted 2025-12-31 00:00:00 UTC, this one 2026-01-01 00:00:00 UTC",
            ),
            ("y", Status::Approved, None, ""),
        ],
    );
    // Everything equal: the registration id decides.
    check(
        &r,
        &input(vec![
            reg("m", "part_1", "acme.example", T0),
            reg("k", "part_4", "acme.example", T0),
        ]),
        &[
            ("k", Status::Approved, None, ""),
            (
                "m",
                Status::Duplicate,
                Some("k"),
                "the tie-break on id decided: id \"k\" sorts before \"m\"",
            ),
        ],
    );
    // Tiers are data: reverse the order and silver wins.
    let text = BUILTIN
        .1
        .replace(
            r#"  "review",                   # ties a person should settle"#,
            "",
        )
        .replace(
            r#"order = ["gold", "silver", "bronze"]"#,
            r#"order = ["silver", "gold", "bronze"]"#,
        );
    let r2 = Rules::compile("t.toml", &text).expect("compiles");
    check(
        &r2,
        &input(vec![
            reg("z", "part_1", "acme.example", T0),
            reg("a", "part_2", "acme.example", T0),
        ]),
        &[
            ("a", Status::Approved, None, ""),
            ("z", Status::Duplicate, Some("a"), ""),
        ],
    );
    // A tier carried on the registration beats the partner table.
    check(
        &r,
        &input(vec![
            reg("z", "part_1", "acme.example", T0),
            with(
                reg("a", "part_3", "acme.example", T0),
                "partner_tier",
                json!("Gold"),
            ),
        ]),
        &[
            ("a", Status::Approved, None, ""),
            ("z", Status::Duplicate, Some("a"), ""),
        ],
    );
}

#[test]
fn review_within_a_minute() {
    let r = rules_with(
        "# qualified_within_secs = 60 ",
        "qualified_within_secs = 60 #",
    );
    let i = input(vec![
        reg("a", "part_1", "acme.example", T0),
        reg("b", "part_2", "acme.example", T0 + 30_000),
        reg("c", "part_2", "acme.example", T0 + 3_600_000),
    ]);
    check(
        &r,
        &i,
        &[
            (
                "a",
                Status::Review,
                None,
                "a and b qualified within 60 seconds of each other (review line",
            ),
            ("b", Status::Review, None, "(review line"),
            ("c", Status::Review, None, "waiting behind a"),
        ],
    );
    // An operator settles it: b approved, the others become its duplicates.
    let mut settled = i.clone();
    settled.reviews.push(ReviewOutcome {
        registration_id: "b".into(),
        approve: true,
        reason: "b did the demo".into(),
        at_ms: T0 + DAY,
    });
    check(
        &r,
        &settled,
        &[
            ("a", Status::Duplicate, Some("b"), ""),
            (
                "b",
                Status::Approved,
                None,
                "approved by review: b did the demo",
            ),
            ("c", Status::Duplicate, Some("b"), ""),
        ],
    );
}

#[test]
fn review_by_tier() {
    let r = rules_with("tiers = []", r#"tiers = ["bronze"]"#);
    check(
        &r,
        &input(vec![reg("a", "part_3", "acme.example", T0)]),
        &[(
            "a",
            Status::Review,
            None,
            "registrations from bronze partners are reviewed by a person",
        )],
    );
}

#[test]
fn protection_and_extensions() {
    let r = rules();
    let a = reg("a", "part_1", "acme.example", T0);
    let b = reg("b", "part_2", "acme.example", T0 + DAY);
    // Within protection: a holds it.
    let mut i = input(vec![a.clone(), b.clone()]);
    i.as_of_ms = T0 + 89 * DAY;
    check(
        &r,
        &i,
        &[
            ("a", Status::Approved, None, ""),
            ("b", Status::Duplicate, Some("a"), ""),
        ],
    );
    // One extension of 30 days keeps a protected; asking for five grants the two allowed.
    let a1 = with(a.clone(), "extensions_requested", json!(1));
    let mut i1 = input(vec![a1, b.clone()]);
    i1.as_of_ms = T0 + 91 * DAY;
    let d = evaluate(&r, &i1);
    assert_eq!(
        (d[0].status, d[0].protected_until),
        (Status::Approved, Some(T0 + 120 * DAY))
    );
    let a5 = with(a, "extensions_requested", json!(5));
    let d = evaluate(&r, &input(vec![a5, b]));
    assert_eq!(d[0].protected_until, Some(T0 + 150 * DAY));
}

/// The shipped rules with `on_expiry` set to `mode`.
fn rules_on_expiry(mode: &str) -> Rules {
    if mode == "reopen" {
        return rules();
    }
    rules_with(r#"on_expiry = "reopen""#, &format!("on_expiry = {mode:?}"))
}

#[test]
fn each_expiry_behaviour() {
    use Status::*;
    // a wins and is protected until T0 + 90 days; b lost to it on day 1; c is submitted on day
    // 100, after the expiry; "now" is day 120.
    let a = reg("a", "part_1", "acme.example", T0);
    let b = reg("b", "part_2", "acme.example", T0 + DAY);
    let c = reg("c", "part_3", "acme.example", T0 + 100 * DAY);
    let mut both = input(vec![a.clone(), b.clone()]);
    both.as_of_ms = T0 + 120 * DAY;
    let mut all = input(vec![a.clone(), b.clone(), c.clone()]);
    all.as_of_ms = T0 + 120 * DAY;
    let mut revived = all.clone();
    revived.reviews.push(ReviewOutcome {
        registration_id: "b".into(),
        approve: true,
        reason: "b kept working the account".into(),
        at_ms: T0 + 110 * DAY,
    });
    type Want = Vec<(&'static str, Status, Option<&'static str>, &'static str)>;
    let cases: Vec<(&str, &str, Input, Want)> = vec![
        (
            "reopen: the earlier loser stays a duplicate of the expired holder",
            "reopen",
            both.clone(),
            vec![
                (
                    "a",
                    Expired,
                    None,
                    "expired: protection ended 2026-04-01 00:00:00 UTC; the account reopens to registrations submitted after then",
                ),
                (
                    "b",
                    Duplicate,
                    Some("a"),
                    "lost to a (part_1) while it was protected; its protection ended 2026-04-01 00:00:00 UTC and the account reopened only to registrations submitted after then (this one was submitted 2026-01-02 00:00:00 UTC",
                ),
            ],
        ),
        (
            "reopen: a registration submitted after the expiry wins over earlier losers",
            "reopen",
            all.clone(),
            vec![
                ("a", Expired, None, "reopens"),
                ("b", Duplicate, Some("a"), "prmsync review approve b"),
                (
                    "c",
                    Approved,
                    None,
                    "after a (part_1)'s protection ended 2026-04-01 00:00:00 UTC (on_expiry = \"reopen\"); protected until 2026-07-10 00:00:00 UTC",
                ),
            ],
        ),
        (
            "reopen: a person revives an earlier loser, and it wins",
            "reopen",
            revived,
            vec![
                // An operator's approval outranks everything, the old holder included.
                ("a", Duplicate, Some("b"), "b was approved by an operator"),
                (
                    "b",
                    Approved,
                    None,
                    "approved by review: b kept working the account",
                ),
                (
                    "c",
                    Duplicate,
                    Some("b"),
                    "b was approved by an operator at 2026-04-21 00:00:00 UTC",
                ),
            ],
        ),
        (
            "next_in_line: the old loser takes over from the moment protection ended",
            "next_in_line",
            all.clone(),
            vec![
                (
                    "a",
                    Expired,
                    None,
                    "the account passes to the next registration in line",
                ),
                (
                    "b",
                    Approved,
                    None,
                    "protected until 2026-06-30 00:00:00 UTC",
                ),
                (
                    "c",
                    Duplicate,
                    Some("b"),
                    "b qualified first, at 2026-01-02 00:00:00 UTC (silver tier); this one qualified at 2026-04-11 00:00:00 UTC",
                ),
            ],
        ),
        (
            "release is the old name of next_in_line",
            "release",
            both,
            vec![("a", Expired, None, ""), ("b", Approved, None, "")],
        ),
        (
            "review: the rest of the group goes to a person",
            "review",
            all,
            vec![
                ("a", Expired, None, "the rest of the group goes to a person"),
                (
                    "b",
                    Review,
                    None,
                    "a (part_1)'s protection ended 2026-04-01 00:00:00 UTC and on_expiry = \"review\"",
                ),
                ("c", Review, None, "on_expiry = \"review\""),
            ],
        ),
    ];
    for (name, mode, input, want) in cases {
        eprintln!("case: {name}");
        check(&rules_on_expiry(mode), &input, &want);
    }
    // Without on_expiry the file reopens.
    let text = BUILTIN.1.replace(r#"on_expiry = "reopen""#, "");
    let r = Rules::compile("t.toml", &text).expect("compiles");
    assert_eq!(r.protection.on_expiry, OnExpiry::Reopen);
}

#[test]
fn a_rules_change_does_not_silently_revoke_protection() {
    let old = rules();
    let a = reg("a", "part_1", "acme.example", T0);
    let b = reg("b", "part_2", "acme.example", T0 + DAY);
    let first = evaluate(&old, &input(vec![a.clone(), b.clone()]));
    let prior: Vec<PriorDecision> = first
        .iter()
        .map(|d| PriorDecision {
            registration_id: d.registration_id.clone(),
            status: d.status,
            protected_until: d.protected_until,
            rules_version: old.version.clone(),
        })
        .collect();
    // The new file reserves acme.example for the direct team.
    let new = rules_with(
        r#""bigbank.example","#,
        r#""bigbank.example", "acme.example","#,
    );
    let mut i = input(vec![a.clone(), b.clone()]);
    i.prior = prior.clone();
    check(
        &new,
        &i,
        &[
            (
                "a",
                Status::Approved,
                None,
                "kept protected until 2026-04-01 00:00:00 UTC; rules_change_may_revoke = false",
            ),
            ("b", Status::Rejected, None, "acme.example is reserved"),
        ],
    );
    // Deciding again under the new rules (with the decisions just stored) keeps it: protection
    // remembers the rules it was granted under.
    let kept = evaluate(&new, &i);
    assert_eq!(
        kept[0].protected_under.as_deref(),
        Some(old.version.as_str())
    );
    i.prior = kept
        .iter()
        .map(|d| PriorDecision {
            registration_id: d.registration_id.clone(),
            status: d.status,
            protected_until: d.protected_until,
            rules_version: d.protected_under.clone().unwrap_or(new.version.clone()),
        })
        .collect();
    assert_eq!(evaluate(&new, &i), kept);
    // When the file allows it, the change takes effect.
    let text = BUILTIN
        .1
        .replace(
            r#""bigbank.example","#,
            r#""bigbank.example", "acme.example","#,
        )
        .replace(
            "rules_change_may_revoke = false",
            "rules_change_may_revoke = true",
        );
    let revoking = Rules::compile("t.toml", &text).expect("compiles");
    let mut i = input(vec![a, b]);
    i.prior = prior;
    let d = evaluate(&revoking, &i);
    assert_eq!(d[0].status, Status::Rejected, "{}", d[0].reason);
}

#[test]
fn rules_file_errors_name_file_line_column_and_key() {
    let bad = BUILTIN
        .1
        .replace(r#"normalize = "domain""#, r#"normalize = "fuzzy""#)
        .replace(r#"on_expiry = "reopen""#, r#"on_expiry = "forget""#)
        .replace(
            r#""review",                   #"#,
            r#""reviews",                  #"#,
        )
        .replace(r#"part_5 = "silver""#, r#"part_5 = "platinum""#);
    let errs = Rules::compile("r.toml", &bad).expect_err("bad file").0;
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let joined = text.join("\n");
    for want in [
        "r.toml:27:13: duplicate_key[0].normalize: unknown normalisation \"fuzzy\"",
        "protection.on_expiry: unknown action \"forget\"",
        "decision_order: unknown rule \"reviews\"",
        "tiers.partners.part_5: tier \"platinum\" is not in tiers.order",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert!(errs.len() >= 4, "all errors at once: {joined}");
    let syntax = Rules::compile("r.toml", "name = \"x\"\nbogus = 1\n").expect_err("unknown key");
    assert_eq!(syntax.0[0].line, 2, "{syntax}");
    let order = BUILTIN.1.replace(
        r#"  "first_qualified",          # first qualified registration wins"#,
        "",
    );
    let e = Rules::compile("r.toml", &order).expect_err("no first_qualified");
    assert!(
        e.to_string().contains("must end with \"first_qualified\""),
        "{e}"
    );
}

#[test]
fn the_version_follows_the_compiled_rules_not_the_text() {
    let base = rules().version;
    let same = [
        BUILTIN.1.replace("# best first", "# the best tier first"),
        BUILTIN.1.replace(
            "name = \"rules-of-engagement\"",
            "# a new comment\nname = \"roe\"",
        ),
        BUILTIN.1.replace(
            r#""bigbank.example",
  "cyberdynesystems.example","#,
            r#""cyberdynesystems.example",
  "bigbank.example","#,
        ),
        BUILTIN.1.replace(
            r#"expect.d8 = { status = "approved" }"#,
            r#"expect.d8 = { status = "approved", reason = "approved" }"#,
        ),
    ];
    for text in same {
        assert_ne!(text, BUILTIN.1, "the edit applies");
        let r = Rules::compile("t.toml", &text).expect("compiles");
        assert_eq!(
            r.version, base,
            "an edit that decides nothing keeps the version"
        );
    }
    for (from, to) in [
        ("days = 90", "days = 60"),
        (r#"action = "reject" "#, r#"action = "influenced" "#),
        (
            r#"order = ["gold", "silver", "bronze"]"#,
            r#"order = ["silver", "gold", "bronze"]"#,
        ),
    ] {
        assert_ne!(rules_with(from, to).version, base, "{from} -> {to}");
    }
}

#[test]
fn a_failing_example_is_reported_with_its_line() {
    let text = BUILTIN.1.replace(
        r#"expect.d2 = { status = "duplicate", duplicate_of = "d1" }"#,
        r#"expect.d2 = { status = "approved" }"#,
    );
    let r = Rules::compile("r.toml", &text).expect("compiles");
    let f = run_examples(&r);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].line, 89);
    assert!(
        f[0].to_string().starts_with("r.toml:89: example"),
        "{}",
        f[0]
    );
    assert!(
        f[0].message
            .contains("d2: expected approved, got duplicate"),
        "{}",
        f[0]
    );
}

fn arb_event() -> impl Strategy<Value = RegistrationEvent> {
    (
        0usize..5,
        0usize..5,
        0usize..3,
        0i64..400,
        0i64..150,
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(
            |(id, partner, domain, hours, submitted_days, qualified, ext)| {
                let domains = ["acme.example", "www.acme.example", "globex.example"];
                // Submissions spread over 150 days, so some come after a 90-day protection ends.
                let submitted = T0 + submitted_days * DAY + (id as i64) * 1000;
                let mut e = reg(
                    &format!("r{id}"),
                    &format!("part_{}", partner + 1),
                    domains[domain],
                    submitted + hours * 3_600_000,
                );
                e.submitted_ms = submitted;
                if !qualified {
                    e.fields.insert("amount".into(), json!(1));
                }
                if ext {
                    e.fields.insert("extensions_requested".into(), json!(1));
                }
                e
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any permutation of the same registration events, with repeats (a restart re-reads them),
    /// gives the same decisions, under every `on_expiry`, at times before and after protections
    /// end.
    #[test]
    fn order_and_repeats_do_not_change_decisions(
        events in prop::collection::vec(arb_event(), 1..12),
        seed in any::<u64>(),
        repeats in prop::collection::vec(0usize..12, 0..6),
        as_of_days in 0i64..400,
        mode in 0usize..3,
    ) {
        let r = rules_on_expiry(["reopen", "next_in_line", "review"][mode]);
        let mut i = input(events.clone());
        i.as_of_ms = T0 + as_of_days * DAY;
        let want = evaluate(&r, &i);
        let mut shuffled = events.clone();
        for k in repeats {
            shuffled.push(events[k % events.len()].clone());
        }
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for n in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(n, (s % (n as u64 + 1)) as usize);
        }
        let mut j = input(shuffled);
        j.as_of_ms = i.as_of_ms;
        prop_assert_eq!(evaluate(&r, &j), want);
    }

    /// Under `reopen`, a registration submitted before a holder's protection ended never takes
    /// the account from it afterwards (only a person can revive it).
    #[test]
    fn reopen_never_hands_the_account_to_an_earlier_loser(
        events in prop::collection::vec(arb_event(), 1..12),
        as_of_days in 0i64..400,
    ) {
        let r = rules();
        let mut i = input(events);
        i.as_of_ms = T0 + as_of_days * DAY;
        let d = evaluate(&r, &i);
        let mut submitted: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for e in &i.events {
            let s = submitted.entry(e.id.as_str()).or_insert(e.submitted_ms);
            *s = (*s).min(e.submitted_ms);
        }
        for expired in d.iter().filter(|d| d.status == Status::Expired) {
            let until = expired.protected_until.unwrap_or(i64::MAX);
            for other in d.iter().filter(|o| o.key == expired.key && o.status == Status::Approved) {
                prop_assert!(
                    submitted[other.registration_id.as_str()] >= until,
                    "{} approved after {} expired: {}", other.registration_id, expired.registration_id, other.reason
                );
            }
        }
    }
}

#[test]
fn crm_field_names_come_from_the_file_with_per_crm_defaults() {
    let r = rules();
    assert_eq!(r.crm, crate::rules::CrmNamesByCrm::default());
    let sf = r
        .crm_names(crate::model::SystemKind::Salesforce)
        .expect("a CRM");
    assert_eq!(sf.status, "PRM_Registration_Status__c");
    assert_eq!(sf.account_domain, "Website");
    assert!(
        r.crm_names(crate::model::SystemKind::PartnerStack)
            .is_none()
    );
    // Without the sections, the same defaults; a renamed field is a changed rule.
    let start = BUILTIN.1.find("[crm.hubspot]").expect("shipped section");
    let end = BUILTIN.1.find("[[example]]").expect("examples");
    let bare = format!("{}{}", &BUILTIN.1[..start], &BUILTIN.1[end..]);
    let without = Rules::compile("r.toml", &bare).expect("compiles");
    assert_eq!(without.crm, r.crm);
    assert_eq!(
        without.version, r.version,
        "defaults written out change nothing"
    );
    let renamed = rules_with(
        r#"status = "PRM_Registration_Status__c""#,
        r#"status = "Deal_Registration__c""#,
    );
    assert_eq!(renamed.crm.salesforce.status, "Deal_Registration__c");
    assert_ne!(renamed.version, r.version);
}

#[test]
fn bad_crm_field_names_are_located_errors() {
    let bad = BUILTIN
        .1
        .replace(
            r#"attribution = "PRM_Attribution__c""#,
            r#"attribution = "PRM Attribution""#,
        )
        .replace(
            r#"account_domain = "domain""#,
            r#"acount_domain = "domain""#,
        );
    let errs = Rules::compile("r.toml", &bad).expect_err("bad file").0;
    let joined = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        joined.contains(
            r#"crm.salesforce.attribution: "PRM Attribution" is not a salesforce field name"#
        ),
        "{joined}"
    );
    assert!(joined.contains("crm.hubspot.acount_domain"), "{joined}");
    assert_eq!(errs.len(), 2, "{joined}");
}

#[test]
fn credit_compiles_with_defaults_and_three_mistakes_give_three_located_errors() {
    let r = rules();
    let c = r
        .credit
        .as_ref()
        .expect("the shipped file credits partners");
    assert_eq!(c.influence_within_days, 90);
    assert_eq!(c.role_field.as_deref(), Some("partner_role"));
    assert_eq!(
        c.influence_from,
        [credit::Evidence::Registration, credit::Evidence::Lead]
    );
    assert_eq!(
        c.sources,
        [credit::EvidenceSource {
            kind: credit::Evidence::Lead,
            object: "leads".into(),
            partner: "partner_key".into(),
            customer: vec!["email".into()],
            at: "created_at".into(),
        }]
    );
    assert_eq!(
        r.crm.salesforce.role_name(credit::Role::Influenced),
        "Influencer"
    );
    assert_eq!(
        r.crm.hubspot.role_name(credit::Role::Sourced),
        "Sourcing partner"
    );
    let widened = rules_with("influence_within_days = 90", "influence_within_days = 30");
    assert_ne!(
        widened.version, r.version,
        "a credit change is a rules change"
    );

    let bad = BUILTIN
        .1
        .replace(
            r#"role_field = "partner_role""#,
            r#"role_feild = "partner_role""#,
        )
        .replace(
            "influence_within_days = 90",
            r#"influence_within_days = "ninety""#,
        )
        .replace(
            r#"influence_from = ["registration", "lead"]"#,
            r#"influence_from = ["registration", "gossip"]"#,
        )
        .replace(r#"referral = "Referral","#, r#"referall = "Referral","#);
    let errs = Rules::compile("r.toml", &bad).expect_err("bad file").0;
    let joined = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(joined.contains("credit.role_feild"), "{joined}");
    assert!(joined.contains("credit.influence_within_days"), "{joined}");
    assert!(joined.contains(r#"unknown evidence "gossip""#), "{joined}");
    assert!(
        joined.contains("crm.salesforce.partner_roles.referall"),
        "{joined}"
    );
    assert_eq!(errs.len(), 4, "{joined}");
    assert!(errs.iter().all(|e| e.line > 1), "{joined}");

    // Without [credit], no partner credit.
    let start = BUILTIN.1.find("[credit]").expect("section");
    let end = BUILTIN.1.find("# The CRM deal fields").expect("next");
    let bare = format!("{}{}", &BUILTIN.1[..start], &BUILTIN.1[end..]);
    assert!(
        Rules::compile("r.toml", &bare)
            .expect("compiles")
            .credit
            .is_none()
    );
}

#[test]
fn a_reserved_criterion_reads_each_crm_s_own_field_name() {
    use crate::model::SystemKind::{HubSpot, PartnerStack, Salesforce};
    let r = rules();
    let c = &r.reserved.crm[0];
    assert_eq!(c.field_for(HubSpot), Some("prm_direct_reserved"));
    assert_eq!(c.field_for(Salesforce), Some("PRM_Direct_Reserved__c"));
    assert_eq!(c.field_for(PartnerStack), None);
    // Facts as each CRM reads them: a HubSpot property, a Salesforce checkbox (`true`).
    for (fields, name) in [
        (
            json!({"prm_direct_reserved": "true"}),
            "prm_direct_reserved",
        ),
        (
            json!({"PRM_Direct_Reserved__c": true}),
            "PRM_Direct_Reserved__c",
        ),
    ] {
        let mut i = input(vec![reg("a", "part_1", "globex.example", T0)]);
        i.crm.accounts.push(CrmAccount {
            id: "acc_9".into(),
            domain: "globex.example".into(),
            fields: obj(fields),
        });
        check(
            &r,
            &i,
            &[(
                "a",
                Status::Rejected,
                None,
                &format!(
                    "CRM account acc_9 (globex.example) has {name} = \"true\", so it is reserved for direct sales (reserved_accounts line 46)"
                ),
            )],
        );
    }
    // One name for any CRM still works, and applies on both.
    let any = rules_with(
        r#"crm = [{ hubspot = "prm_direct_reserved", salesforce = "PRM_Direct_Reserved__c", equals = "true" }]"#,
        r#"crm = [{ field = "Reserved__c", equals = "yes" }]"#,
    );
    assert_eq!(any.reserved.crm[0].field_for(HubSpot), Some("Reserved__c"));
    assert_eq!(
        any.reserved.crm[0].field_for(Salesforce),
        Some("Reserved__c")
    );
}

#[test]
fn a_reserved_criterion_without_a_field_or_with_both_forms_is_a_located_error() {
    let bad = BUILTIN.1.replace(
        r#"crm = [{ hubspot = "prm_direct_reserved", salesforce = "PRM_Direct_Reserved__c", equals = "true" }]"#,
        r#"crm = [{ equals = "true" }, { field = "x", hubspot = "y", equals = "1" }, { salesforce = "Bad Name", equals = "1" }]"#,
    );
    let errs = Rules::compile("r.toml", &bad).expect_err("bad file").0;
    let joined = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        joined.contains("reserved_accounts.crm[0]: names no field"),
        "{joined}"
    );
    assert!(
        joined.contains("reserved_accounts.crm[1]: names a field for any CRM and one per CRM"),
        "{joined}"
    );
    assert!(
        joined.contains("reserved_accounts.crm[2]: \"Bad Name\" is not a field name"),
        "{joined}"
    );
    assert!(
        errs.iter().all(|e| e.to_string().contains("r.toml:46:")),
        "{joined}"
    );
    assert_eq!(errs.len(), 3, "{joined}");
}

#[test]
fn lead_and_activity_sources_compile_and_their_mistakes_are_located() {
    let r = rules_with(
        r#"influence_from = ["registration", "lead"]"#,
        "influence_from = [\"lead\", \"activity\"]\nactivity = { customer = [\"customer.email\"], at = \"occurred_at\" }",
    );
    let c = r.credit.as_ref().expect("credit");
    let activity = c.source_for("actions").expect("actions are read");
    assert_eq!(
        (
            activity.partner.as_str(),
            activity.customer.as_slice(),
            activity.at.as_str()
        ),
        (
            "partnership_key",
            &["customer.email".to_owned()][..],
            "occurred_at"
        )
    );
    assert_eq!(
        c.source_for("leads").map(|s| s.kind),
        Some(credit::Evidence::Lead)
    );

    // Three mistakes: activity without customer fields, a table for an unlisted kind, an empty name.
    let bad = BUILTIN.1.replace(
        r#"influence_from = ["registration", "lead"]"#,
        "influence_from = [\"registration\", \"activity\"]\nlead = { at = \"created_at\" }\nactivity = { partner = \"\" }",
    );
    let errs = Rules::compile("r.toml", &bad).expect_err("bad file").0;
    let joined = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(joined.contains("credit.activity.customer"), "{joined}");
    assert!(
        joined.contains("credit.lead: lead is not in influence_from"),
        "{joined}"
    );
    assert!(joined.contains("credit.activity.partner"), "{joined}");
    assert_eq!(errs.len(), 3, "{joined}");
    assert!(errs.iter().all(|e| e.line > 1), "{joined}");
}

#[test]
fn a_lead_is_keyed_by_the_registrations_duplicate_key() {
    let r = rules();
    let c = r.credit.as_ref().expect("credit");
    let lead = c.source_for("leads").expect("leads");
    let fields = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let (key, item) = credit::evidence_of(
        &r,
        lead,
        "L1",
        &fields(json!({"email": "Sam@EU.Initech.example", "partner_key": "part_3", "created_at": 1_767_225_600_000_i64})),
    )
    .expect("a lead with a customer, partner and time");
    let (reg_key, _) =
        crate::rules::key_of(&r, &fields(json!({"contact_email": "pat@initech.example"})));
    assert_eq!(Some(key.as_str()), reg_key.as_deref());
    assert_eq!(
        (item.partner.as_str(), item.at_ms),
        ("part_3", 1_767_225_600_000)
    );
    // An RFC 3339 time reads too; no email, no partner, or an archived record is no evidence.
    assert!(credit::evidence_of(&r, lead, "L2", &fields(json!({"email": "a@b.example", "partner_key": "p", "created_at": "2026-01-01T00:00:00Z"}))).is_some());
    for f in [
        json!({"partner_key": "p", "created_at": 1}),
        json!({"email": "a@b.example", "created_at": 1}),
        json!({"email": "a@b.example", "partner_key": "p", "created_at": 1, "archived": true}),
    ] {
        assert!(
            credit::evidence_of(&r, lead, "L3", &fields(f.clone())).is_none(),
            "{f}"
        );
    }
}

#[test]
fn a_custom_partner_object_compiles_and_its_misconfigurations_are_located() {
    let r = rules_with(
        "account_domain = \"Website\"\n",
        "account_domain = \"Website\"\npartner_object = \"Partner_Credit__c\"\npartner_fields = { opportunity = \"Opportunity__c\", account = \"Account__c\", role = \"Role__c\", primary = \"Primary__c\" }\n",
    );
    let o = r.crm.salesforce.partner_object.as_ref().expect("an object");
    assert_eq!(
        (
            o.object.as_str(),
            o.opportunity.as_str(),
            o.account.as_str(),
            o.role.as_str(),
            o.primary.as_str()
        ),
        (
            "Partner_Credit__c",
            "Opportunity__c",
            "Account__c",
            "Role__c",
            "Primary__c"
        )
    );
    assert_ne!(
        r.version,
        rules().version,
        "a changed object is a changed rule"
    );
    assert!(
        rules()
            .crm
            .salesforce
            .partner_object
            .as_ref()
            .is_some_and(crate::rules::PartnerObject::is_standard)
    );
    assert_eq!(rules().crm.hubspot.partner_object, None);

    // A standard object's name, a missing field, a field named twice, and one on HubSpot.
    let bad = BUILTIN
        .1
        .replacen(
            "account_domain = \"Website\"\n",
            "account_domain = \"Website\"\npartner_object = \"PartnerCredit\"\npartner_fields = { opportunity = \"Opp__c\", account = \"Opp__c\", role = \"Role__c\" }\n",
            1,
        )
        .replacen(
            "account_domain = \"domain\"\n",
            "account_domain = \"domain\"\npartner_object = \"Partner_Credit__c\"\n",
            1,
        );
    let errs = Rules::compile("r.toml", &bad).expect_err("bad file").0;
    let joined = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        joined.contains(
            r#"crm.salesforce.partner_object: "PartnerCredit" is not a custom object's API name"#
        ),
        "{joined}"
    );
    assert!(
        joined.contains("crm.salesforce.partner_fields.primary"),
        "{joined}"
    );
    assert!(
        joined.contains("crm.salesforce.partner_fields.account: Opp__c is already named"),
        "{joined}"
    );
    assert!(joined.contains("crm.hubspot.partner_object"), "{joined}");
    assert_eq!(errs.len(), 4, "{joined}");
    assert!(errs.iter().all(|e| e.line > 1), "{joined}");
}
