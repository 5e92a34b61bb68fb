//! Salesforce lead conversion through the daemon, checked at the simulators: deal registrations
//! become Salesforce Leads (flow `deal-lead`, with `[on_convert] follow` naming the opportunity
//! flow, which creates nothing by itself: `on_none = "skip"`). Sales converts one Lead into an
//! Account, a Contact and an Opportunity; the registration follows the Opportunity from then on:
//! it gets the external id and every mapped value, the partner's edits land there (never on the
//! converted Lead), and the stage sales sets there flows back to the partner's deal.

use std::path::Path;

use serde_json::{Value, json};

use crate::harness::World;
use crate::lifecycle::{SF_OPPORTUNITIES, config, salesforce};

const LEAD_FLOW: &str = r#"
name = "deal-lead"
description = "PartnerStack deal registration -> Salesforce Lead until sales converts it"

[source]
system = "partnerstack"
object = "deals"

[target]
system = "salesforce"
object = "Lead"
external_id = "PRM_Lead_Id__c"

[on_convert]
follow = "deal-registration-salesforce"

[[field]]
source = "account_name"
target = "Company"
required = true

[[field]]
source = "contact_last_name"
target = "LastName"
required = true

[[field]]
source = "contact_email"
target = "Email"
transforms = ["trim", "lower"]
"#;

/// The opportunity flow only follows converted Leads: it never creates an Opportunity itself.
const FOLLOW_ONLY: &str = r#"
[match]
on_none = "skip"

[[match.rule]]
source = "key"
target = "PRM_Deal_Id__c"
"#;

fn text<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The mappings folder: the lead flow and the opportunity flow made follow-only. The lead flow's
/// `[on_convert]` is the snippet docs/mappings.md shows, taken from the docs as written, so the
/// docs' example is what this test compiles and runs.
fn mappings(dir: &Path) -> std::path::PathBuf {
    let out = crate::lifecycle::mappings_with(dir, SF_OPPORTUNITIES, FOLLOW_ONLY);
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mappings.md"))
            .expect("docs/mappings.md");
    let snippet = docs
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .find(|b| {
            b.lines()
                .any(|l| l.trim_start().starts_with("[on_convert]"))
        })
        .expect("docs/mappings.md shows an [on_convert] snippet");
    let ours = "[on_convert]\nfollow = \"deal-registration-salesforce\"\n";
    assert!(LEAD_FLOW.contains(ours));
    let lead = LEAD_FLOW.replace(ours, &format!("{snippet}\n"));
    std::fs::write(out.join("deal-lead.toml"), lead).expect("lead flow");
    out
}

/// The ledger's (flow, action, detail) lines for one source record.
fn ledger(w: &World, source_id: &str) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(w.state_path()).expect("state file");
    let mut stmt = conn
        .prepare(
            "SELECT flow, action, COALESCE(detail, '') FROM ledger WHERE source_id = ?1 ORDER BY id",
        )
        .expect("query");
    stmt.query_map([source_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_lead_s_registration_follows_its_opportunity() {
    let w = World::seeded(2).await;
    let (sf, sf_server) = salesforce().await;
    let config = config(&w, mappings(w.dir.path()), Some(&sf_server));
    let d = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    d.run_until_idle().await.expect("first pass");
    assert_eq!(sf.records("Lead").len(), 2, "a Lead per registration");
    assert!(
        sf.records("Opportunity").is_empty(),
        "the opportunity flow creates nothing by itself"
    );

    // Sales converts deal_1's Lead, with an Opportunity.
    let lead = sf.find("Lead", "PRM_Lead_Id__c", "deal_1").remove(0);
    let lead = text(&lead, "Id").to_owned();
    let made = sf.convert_lead(&lead, None, true).expect("converted");
    let opp = made.opportunity_id.clone().expect("an opportunity");
    d.run_until_idle()
        .await
        .expect("the conversion is read and planned");
    let o = sf.find("Opportunity", "Id", &opp).remove(0);
    assert_eq!(
        text(&o, "PRM_Deal_Id__c"),
        "deal_1",
        "it carries the registration"
    );
    let registration = w.ps.deal("deal_1").expect("deal");
    assert_eq!(
        text(&o, "Name"),
        format!(
            "{} (partner registration)",
            text(&registration, "account_name")
        ),
        "every mapped value, from a fresh read of the registration"
    );
    let lines = ledger(&w, "deal_1");
    assert!(
        lines.iter().any(|(f, a, detail)| f == "deal-lead"
            && a == "converted"
            && detail.contains(&format!("Lead {lead} converted into"))
            && detail.contains(&format!("Opportunity {opp}"))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(f, a, _)| f == "deal-registration-salesforce" && a == "converted"),
        "{lines:?}"
    );

    // The partner edits the registration: the Opportunity is updated; the converted Lead is not
    // written (Salesforce refuses that) and nothing is created.
    let mut deal = w.ps.deal("deal_1").expect("deal");
    deal.insert("amount".into(), json!(777_700));
    w.ps.upsert_deal(deal);
    d.run_until_idle().await.expect("the partner's edit");
    let o = sf.find("Opportunity", "Id", &opp).remove(0);
    assert_eq!(text(&o, "Amount"), "7777");
    assert_eq!(sf.records("Opportunity").len(), 1);
    assert_eq!(sf.records("Lead").len(), 2);
    let dead: i64 = rusqlite::Connection::open(w.state_path())
        .expect("state")
        .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
        .expect("count");
    assert_eq!(dead, 0, "no write to the converted Lead was tried");

    // Stage sync uses the Opportunity: sales moves it on, the partner's deal follows.
    assert!(sf.set_field("Opportunity", &opp, "StageName", json!("Closed Won")));
    d.run_until_idle().await.expect("the stage flows back");
    assert_eq!(text(&w.ps.deal("deal_1").expect("deal"), "stage"), "won");
    // The other registration is still a Lead, and has no Opportunity.
    assert!(
        sf.find("Opportunity", "PRM_Deal_Id__c", "deal_2")
            .is_empty()
    );
    d.shutdown().await;
}
