//! The attribution report's figures against hand-computed expectations, and every format made.

use serde_json::{Map, Value, json};

use super::attribution::{Credit, GroupBy, Input, Options, report};
use super::{html, render};
use crate::rules::{RegistrationEvent, Rules};
use crate::store::StoredRegistration;
use crate::store::attribution::StoredMdf;

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn reg(
    id: &str,
    partner: &str,
    status: &str,
    rule: &str,
    until: Option<i64>,
) -> StoredRegistration {
    StoredRegistration {
        id: id.into(),
        key: format!("{id}.example"),
        partner: partner.into(),
        partner_name: (partner == "part_1").then(|| "Blue Harbor".into()),
        status: Some(status.into()),
        rule: Some(rule.into()),
        line: Some(1),
        reason: Some(format!("{status}: test")),
        protected_until: until,
        duplicate_of: None,
        rules_version: Some("v".into()),
        decided_ms: Some(T0),
        trace: Vec::new(),
    }
}

fn version(
    id: &str,
    partner: &str,
    submitted: i64,
    at: i64,
    amount: i64,
    stage: &str,
) -> RegistrationEvent {
    RegistrationEvent {
        id: id.into(),
        at_ms: at,
        submitted_ms: submitted,
        fields: obj(
            json!({"partner_key": partner, "amount": amount, "stage": stage, "close_date": "2026-06-30"}),
        ),
    }
}

fn mdf(id: &str, partner: &str, status: &str, amounts: [i64; 3], created: i64) -> StoredMdf {
    StoredMdf {
        id: id.into(),
        fields: obj(json!({
            "partner_key": partner, "status": status, "requested_amount": amounts[0],
            "approved_amount": amounts[1], "claimed_amount": amounts[2], "created_at": created,
        })),
        updated_ms: created,
    }
}

struct Data {
    regs: Vec<StoredRegistration>,
    versions: Vec<RegistrationEvent>,
    mdf: Vec<StoredMdf>,
    names: std::collections::BTreeMap<String, String>,
}

/// Eight registrations over three partners (gold, silver, bronze in the shipped rules) and four
/// MDF requests; the expectations in the tests are worked out by hand from this table.
fn data() -> Data {
    let regs = vec![
        reg(
            "r1",
            "part_1",
            "approved",
            "first_qualified",
            Some(T0 + 90 * DAY),
        ),
        reg(
            "r2",
            "part_1",
            "approved",
            "first_qualified",
            Some(T0 + 91 * DAY),
        ),
        reg(
            "r3",
            "part_2",
            "approved",
            "first_qualified",
            Some(T0 + 92 * DAY),
        ),
        reg(
            "r4",
            "part_2",
            "influenced",
            "open_direct_opportunity",
            None,
        ),
        reg("r5", "part_3", "duplicate", "first_qualified", None),
        reg("r6", "part_3", "rejected", "reserved_accounts", None),
        reg("r7", "part_1", "pending", "qualification", None),
        reg(
            "r8",
            "part_2",
            "expired",
            "first_qualified",
            Some(T0 + 20 * DAY),
        ),
    ];
    let versions = vec![
        version("r1", "part_1", T0, T0, 1_000_000, "submitted"),
        version("r1", "part_1", T0, T0 + 10 * DAY, 1_000_000, "won"),
        // Seen won twice: the first time counts.
        version("r1", "part_1", T0, T0 + 12 * DAY, 1_000_000, "won"),
        version("r2", "part_1", T0 + DAY, T0 + DAY, 500_000, "submitted"),
        version("r2", "part_1", T0 + DAY, T0 + 21 * DAY, 500_000, "lost"),
        version(
            "r3",
            "part_2",
            T0 + 2 * DAY,
            T0 + 2 * DAY,
            200_000,
            "negotiation",
        ),
        version("r4", "part_2", T0 + 3 * DAY, T0 + 3 * DAY, 300_000, "demo"),
        version("r4", "part_2", T0 + 3 * DAY, T0 + 33 * DAY, 300_000, "won"),
        version(
            "r5",
            "part_3",
            T0 + 4 * DAY,
            T0 + 4 * DAY,
            400_000,
            "submitted",
        ),
        version(
            "r6",
            "part_3",
            T0 + 5 * DAY,
            T0 + 5 * DAY,
            800_000,
            "submitted",
        ),
        version("r6", "part_3", T0 + 5 * DAY, T0 + 25 * DAY, 800_000, "won"),
        version(
            "r7",
            "part_1",
            T0 + 40 * DAY,
            T0 + 40 * DAY,
            50_000,
            "submitted",
        ),
        version(
            "r8",
            "part_2",
            T0 - 100 * DAY,
            T0 - 100 * DAY,
            600_000,
            "approved",
        ),
        version(
            "r8",
            "part_2",
            T0 - 100 * DAY,
            T0 + 15 * DAY,
            600_000,
            "won",
        ),
    ];
    let mdf = vec![
        mdf(
            "m1",
            "part_1",
            "paid",
            [300_000, 250_000, 200_000],
            T0 + 5 * DAY,
        ),
        mdf(
            "m2",
            "part_2",
            "approved",
            [100_000, 100_000, 0],
            T0 + 6 * DAY,
        ),
        mdf("m3", "part_3", "rejected", [50_000, 0, 0], T0 + 7 * DAY),
        mdf(
            "m4",
            "part_2",
            "claimed",
            [80_000, 80_000, 80_000],
            T0 + 8 * DAY,
        ),
    ];
    Data {
        regs,
        versions,
        mdf,
        names: [("part_5".to_owned(), "Contoso".to_owned())].into(),
    }
}

fn input(d: &Data) -> Input<'_> {
    Input {
        registrations: &d.regs,
        versions: &d.versions,
        mdf: &d.mdf,
        evidence: &[],
        partner_names: &d.names,
        as_of_ms: Some(T0 + 40 * DAY),
    }
}

fn all_time(by: GroupBy) -> Options {
    Options {
        from_ms: None,
        until_ms: None,
        by,
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn figures_match_hand_computed_expectations() {
    let rules = Rules::builtin().expect("rules");
    let d = data();
    let r = report(&rules, &input(&d), &all_time(GroupBy::Tier));
    let t = |c: Credit| {
        &r.totals
            .iter()
            .find(|t| t.credit == c)
            .expect("row")
            .figures
    };

    // Sourced: r1 won 10,000.00 in 10 days, r2 lost, r3 open 2,000.00, r8 (expired) won 6,000.00
    // 115 days after submission.
    let s = t(Credit::Sourced);
    assert_eq!((s.deals, s.won, s.lost), (4, 2, 1));
    assert_eq!((s.pipeline_cents, s.won_cents), (200_000, 1_600_000));
    assert!(close(s.win_rate, 2.0 / 3.0), "{:?}", s.win_rate);
    assert!(close(s.cycle_days, 62.5), "{:?}", s.cycle_days);
    // Influenced: r4 won 3,000.00 in 30 days.
    let i = t(Credit::Influenced);
    assert_eq!(
        (i.deals, i.won, i.won_cents, i.pipeline_cents),
        (1, 1, 300_000, 0)
    );
    assert!(close(i.win_rate, 1.0) && close(i.cycle_days, 30.0));
    // No partner credit: r5 open 4,000.00, r6 won 8,000.00 in 20 days.
    let n = t(Credit::None);
    assert_eq!(
        (n.deals, n.pipeline_cents, n.won_cents),
        (2, 400_000, 800_000)
    );
    assert!(close(n.cycle_days, 20.0));
    // Undecided: r7 open 500.00, nothing closed.
    let u = t(Credit::Undecided);
    assert_eq!((u.deals, u.pipeline_cents), (1, 50_000));
    assert_eq!((u.win_rate, u.cycle_days), (None, None));

    // By tier: gold = r1, r2; silver = r3, r8 sourced and r4 influenced; bronze has no credit.
    let groups: Vec<&str> = r.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(groups, ["gold", "silver"]);
    let gold = &r.groups[0];
    assert_eq!((gold.sourced.deals, gold.sourced.won_cents), (2, 1_000_000));
    assert!(close(gold.sourced.win_rate, 0.5));
    let silver = &r.groups[1];
    assert_eq!(
        (silver.sourced.pipeline_cents, silver.sourced.won_cents),
        (200_000, 600_000)
    );
    assert!(close(silver.sourced.cycle_days, 115.0));
    assert_eq!(silver.influenced.won_cents, 300_000);

    // Registrations by decision and deciding rule.
    let counts: Vec<(&str, &str, usize)> = r
        .decisions
        .iter()
        .map(|c| (c.status.as_str(), c.rule.as_str(), c.registrations))
        .collect();
    assert_eq!(
        counts,
        [
            ("approved", "first_qualified", 3),
            ("duplicate", "first_qualified", 1),
            ("expired", "first_qualified", 1),
            ("influenced", "open_direct_opportunity", 1),
            ("pending", "qualification", 1),
            ("rejected", "reserved_accounts", 1),
        ]
    );

    // Expiries: r8 ended (day 20 < "now" day 40); r1, r2, r3 still protected.
    let ex: Vec<(&str, bool)> = r
        .expiries
        .iter()
        .map(|e| (e.registration_id.as_str(), e.ended))
        .collect();
    assert_eq!(
        ex,
        [("r8", true), ("r1", false), ("r2", false), ("r3", false)]
    );
    assert_eq!(r.expiries[1].partner, "Blue Harbor (part_1)");

    // MDF: gold spent 2,000.00 (m1 paid) against 10,000.00 sourced won = 5.0; silver spent
    // 800.00 (m4 claimed; m2 approved, not spent) against 6,000.00 = 7.5; m3 was rejected.
    let mdf = r.mdf.as_ref().expect("MDF rows");
    assert_eq!(mdf.len(), 2);
    assert_eq!(
        (
            mdf[0].tier.as_str(),
            mdf[0].requests,
            mdf[0].approved_cents,
            mdf[0].spent_cents
        ),
        ("gold", 1, 250_000, 200_000)
    );
    assert!(close(mdf[0].revenue_per_mdf, 5.0));
    assert_eq!(
        (
            mdf[1].tier.as_str(),
            mdf[1].requests,
            mdf[1].requested_cents,
            mdf[1].spent_cents
        ),
        ("silver", 2, 180_000, 80_000)
    );
    assert!(close(mdf[1].revenue_per_mdf, 7.5));
}

#[test]
fn the_window_selects_deals_expiries_and_mdf_by_their_dates() {
    let rules = Rules::builtin().expect("rules");
    let d = data();
    // January 2026: r7 (day 40) and r8 (submitted in 2025) fall out.
    let opts = Options {
        from_ms: Some(T0),
        until_ms: Some(T0 + 31 * DAY),
        by: GroupBy::Partner,
    };
    let r = report(&rules, &input(&d), &opts);
    let s = &r.totals[0].figures;
    assert_eq!(r.totals[0].credit, Credit::Sourced);
    assert_eq!(
        (s.deals, s.won_cents, s.lost, s.pipeline_cents),
        (3, 1_000_000, 1, 200_000)
    );
    assert!(close(s.win_rate, 0.5) && close(s.cycle_days, 10.0));
    assert_eq!(r.totals[3].figures.deals, 0, "r7 is outside");
    // Only r8's protection ends in January.
    assert_eq!(r.expiries.len(), 1);
    assert_eq!(r.expiries[0].registration_id, "r8");
    let groups: Vec<&str> = r.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(groups, ["Blue Harbor (part_1)", "part_2"]);
    // Silver's sourced revenue came from r8, outside the window.
    let mdf = r.mdf.as_ref().expect("MDF rows");
    assert_eq!(mdf[1].sourced_won_cents, 0);
    assert_eq!(mdf[1].revenue_per_mdf, Some(0.0));

    let by_month = report(&rules, &input(&d), &all_time(GroupBy::Month));
    let months: Vec<&str> = by_month.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(months, ["2025-09", "2026-01"]);

    // Tiers come best first (the rules' order), not alphabetically.
    let mut d = data();
    d.regs[4].status = Some("approved".into());
    let by_tier = report(&rules, &input(&d), &all_time(GroupBy::Tier));
    let tiers: Vec<&str> = by_tier.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(tiers, ["gold", "silver", "bronze"]);
}

#[test]
fn every_format_is_produced() {
    let rules = Rules::builtin().expect("rules");
    let d = data();
    let r = report(&rules, &input(&d), &all_time(GroupBy::Partner));

    let text = render::text(&r);
    assert!(text.contains("Pipeline and revenue by credit"), "{text}");
    assert!(
        text.contains("partner-sourced") && text.contains("16,000.00"),
        "{text}"
    );
    assert!(text.contains("66.7%") && text.contains("62.5"), "{text}");
    assert!(text.contains("Blue Harbor (part_1)"), "{text}");

    let csv = render::csv(&r);
    assert!(csv.starts_with("section,key,metric,value\n"));
    assert!(
        csv.contains("totals,partner-sourced,won_cents,1600000\n"),
        "{csv}"
    );
    assert!(csv.contains("decisions,approved/first_qualified,registrations,3\n"));
    assert!(csv.contains("mdf,gold,revenue_per_mdf,5.0000\n"));
    assert!(csv.lines().all(|l| l.split(',').count() == 4), "{csv}");

    let json: Value = serde_json::from_str(&render::json(&r)).expect("json");
    assert_eq!(json["totals"][0]["credit"], "sourced");
    assert_eq!(json["totals"][0]["won_cents"], 1_600_000);
    assert_eq!(json["mdf"][1]["spent_cents"], 80_000);

    let page = html::page(&r);
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert_eq!(page.matches("<svg").count(), 5, "five charts");
    assert!(
        !page.contains("<script") && !page.contains("src=\"http"),
        "self-contained"
    );
    assert!(page.contains("16,000.00"));
}

#[test]
fn a_state_without_mdf_says_so() {
    let rules = Rules::builtin().expect("rules");
    let mut d = data();
    d.mdf.clear();
    let r = report(&rules, &input(&d), &all_time(GroupBy::Partner));
    assert_eq!(r.mdf, None);
    assert!(render::text(&r).contains("no MDF requests in the state"));
    assert!(html::page(&r).contains("No MDF requests"));
}

#[test]
fn an_influencing_partner_counts_the_sourced_deal_in_its_influenced_figures() {
    let rules = Rules::builtin().expect("rules");
    let mut d = data();
    // r5 (part_3, bronze, a duplicate submitted 4 days after r1) becomes a registration of r1's
    // customer: part_3 influenced r1, which part_1 (gold) sourced and won for 10,000.00.
    d.regs[4].key = d.regs[0].key.clone();
    let r = report(&rules, &input(&d), &all_time(GroupBy::Partner));
    assert_eq!(
        (
            r.co_influenced.deals,
            r.co_influenced.won,
            r.co_influenced.won_cents
        ),
        (1, 1, 1_000_000)
    );
    let part_3 = r
        .groups
        .iter()
        .find(|g| g.group == "part_3")
        .expect("part_3 is credited now");
    assert_eq!(
        (
            part_3.sourced.deals,
            part_3.influenced.deals,
            part_3.influenced.won_cents
        ),
        (0, 1, 1_000_000)
    );
    // The deal stays one deal in the totals: sourced by part_1.
    let sourced = &r.totals[0].figures;
    assert_eq!((sourced.deals, sourced.won_cents), (4, 1_600_000));
    let by_tier = report(&rules, &input(&d), &all_time(GroupBy::Tier));
    let bronze = by_tier
        .groups
        .iter()
        .find(|g| g.group == "bronze")
        .expect("bronze influenced");
    assert_eq!(bronze.influenced.won_cents, 1_000_000);
    let csv = render::csv(&r);
    assert!(
        csv.contains("totals,co-influenced,won_cents,1000000\n"),
        "{csv}"
    );
    assert!(render::text(&r).contains("sourced, another partner influencing"));
    // Without the shared customer, no one is co-credited.
    let plain = report(&rules, &input(&data()), &all_time(GroupBy::Partner));
    assert_eq!(plain.co_influenced.deals, 0);
}

#[test]
fn a_partners_lead_on_the_customer_counts_like_its_registration() {
    use crate::rules::credit::{Evidence, EvidenceItem};
    let rules = Rules::builtin().expect("rules");
    let d = data();
    let lead = |id: &str, at_ms: i64| {
        (
            "r1.example".to_owned(),
            EvidenceItem {
                kind: Evidence::Lead,
                id: id.into(),
                partner: "part_5".into(),
                at_ms,
            },
        )
    };
    // part_5 (silver, no registration) brought in a lead on r1's customer 10 days before r1.
    let evidence = [lead("L1", T0 - 10 * DAY)];
    let with = Input {
        evidence: &evidence,
        ..input(&d)
    };
    let r = report(&rules, &with, &all_time(GroupBy::Partner));
    assert_eq!(
        (r.co_influenced.deals, r.co_influenced.won_cents),
        (1, 1_000_000)
    );
    let part_5 = r
        .groups
        .iter()
        .find(|g| g.group == "Contoso (part_5)")
        .expect("part_5 is credited by its lead, under its PRM name");
    assert_eq!(
        (
            part_5.sourced.deals,
            part_5.influenced.deals,
            part_5.influenced.won_cents
        ),
        (0, 1, 1_000_000)
    );
    let by_tier = report(&rules, &with, &all_time(GroupBy::Tier));
    let silver = by_tier
        .groups
        .iter()
        .find(|g| g.group == "silver")
        .expect("silver");
    // r4 (part_2, silver) is influenced and won 3,000.00; the lead adds r1's 10,000.00.
    assert_eq!(silver.influenced.won_cents, 1_300_000, "{silver:?}");
    // A lead 100 days before the opportunity is outside the 90-day window: nothing.
    let late = [lead("L2", T0 - 100 * DAY)];
    let r = report(
        &rules,
        &Input {
            evidence: &late,
            ..input(&d)
        },
        &all_time(GroupBy::Partner),
    );
    assert_eq!(r.co_influenced.deals, 0);
}
