//! `prmsync demo --profile rest-salesforce`: a PRM reached through the declarative `rest` profile
//! (the REST PRM simulator) and the Salesforce simulator, synced by the real daemon with the
//! shipped REST flows (deal registrations, partners, MDF requests) and the shipped rules file.
//! PartnerStack has no MDF API, so this is the demo that carries MDF requests. The seed (the
//! quarter so far: registrations, some of which sales closes won or lost in Salesforce, and MDF
//! requests the channel team approves there and a partner claims) is fixed relative to the demo's
//! start, so the attribution report's figures can be worked out by hand (`tests/it/report.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::app::Daemon;
use crate::config::{
    CrmConfig, PrmConfig, RestConfig, SalesforceAuthConfig, SalesforceConfig, defaults,
};
use crate::connector::rest::{Paging, RestObject, RestProfile, SinceFormat, UpsertMethod};
use crate::engine::system_clock;
use crate::sim::SimServer;
use crate::sim::rest::RestPrmSim;
use crate::sim::salesforce::{SalesforceAuth, SalesforceSim};

pub const REST_KEY: &str = "demo-rest-prm-key";
const SF_CLIENT_ID: &str = "3MVG9demo.consumer.key";
const SF_CLIENT_SECRET: &str = "demo-consumer-secret";
const SF_REFRESH_TOKEN: &str = "5Aep.demo";
const STATE_KEY: &str = "demo-state-key";
const DAY_MS: i64 = 86_400_000;

/// The shipped files this demo runs (embedded, written to a folder beside the state file).
const FILES: &[(&str, &str)] = &[
    (
        "rest-salesforce-opportunities.toml",
        include_str!("../../mappings/rest-salesforce-opportunities.toml"),
    ),
    (
        "rest-salesforce-accounts.toml",
        include_str!("../../mappings/rest-salesforce-accounts.toml"),
    ),
    (
        "rest-salesforce-campaigns.toml",
        include_str!("../../mappings/rest-salesforce-campaigns.toml"),
    ),
    (crate::rules::RULES_FILE, crate::rules::BUILTIN.1),
];

/// The seeded partners: id, name, tier (the shipped rules file gives the same tiers).
pub const PARTNERS: &[(&str, &str, &str)] = &[
    ("part_1", "Northwind Partners", "gold"),
    ("part_2", "Blue Harbor", "silver"),
    ("part_3", "Summit Resellers", "bronze"),
];

/// One seeded registration: what the partner sent, and what sales does with its opportunity.
#[derive(Debug, Clone, Copy)]
pub struct SeedDeal {
    pub id: &'static str,
    pub partner: &'static str,
    pub company: &'static str,
    pub domain: &'static str,
    /// Cents.
    pub amount: i64,
    /// Submitted this many days before the demo starts.
    pub days_ago: i64,
    /// The Salesforce stage sales moves it to, with the loss reason.
    pub sales: Option<(&'static str, Option<&'static str>)>,
}

/// The seeded registrations. With the shipped rules: Hooli has an open direct opportunity in
/// Salesforce, Massive Dynamic's Account is flagged `PRM_Direct_Reserved__c`, bigbank.example is
/// reserved by name, deal_6 registers deal_1's customer later (a duplicate that influences it), and
/// deal_9 is below the minimum amount.
pub const DEALS: &[SeedDeal] = &[
    deal(
        "deal_1",
        "part_1",
        "Acme Corp",
        "acme.example",
        1_200_000,
        60,
        Some(("Closed Won", None)),
    ),
    deal(
        "deal_2",
        "part_2",
        "Globex",
        "globex.example",
        800_000,
        45,
        Some(("Closed Lost", Some("No budget this year"))),
    ),
    deal(
        "deal_3",
        "part_3",
        "Initech",
        "initech.example",
        500_000,
        30,
        Some(("Closed Won", None)),
    ),
    deal(
        "deal_4",
        "part_1",
        "Hooli",
        "hooli.example",
        900_000,
        20,
        Some(("Closed Won", None)),
    ),
    deal(
        "deal_5",
        "part_2",
        "Massive Dynamic",
        "massivedynamic.example",
        700_000,
        15,
        Some(("Closed Lost", Some("Went with a competitor"))),
    ),
    deal(
        "deal_6",
        "part_3",
        "Acme Corp",
        "acme.example",
        1_000_000,
        50,
        Some(("Closed Lost", Some("Registered twice"))),
    ),
    deal(
        "deal_7",
        "part_1",
        "Wayne Foods",
        "waynefoods.example",
        1_500_000,
        10,
        None,
    ),
    deal(
        "deal_8",
        "part_2",
        "Stark Logistics",
        "starklogistics.example",
        600_000,
        5,
        None,
    ),
    deal(
        "deal_9",
        "part_3",
        "Umbrella Health",
        "umbrellahealth.example",
        50_000,
        3,
        None,
    ),
    deal(
        "deal_10",
        "part_1",
        "Big Bank",
        "bigbank.example",
        400_000,
        2,
        None,
    ),
];

#[allow(clippy::too_many_arguments)]
const fn deal(
    id: &'static str,
    partner: &'static str,
    company: &'static str,
    domain: &'static str,
    amount: i64,
    days_ago: i64,
    sales: Option<(&'static str, Option<&'static str>)>,
) -> SeedDeal {
    SeedDeal {
        id,
        partner,
        company,
        domain,
        amount,
        days_ago,
        sales,
    }
}

/// One seeded MDF request, and what the channel team (in Salesforce) and the partner (in the
/// PRM) do with it during the demo.
#[derive(Debug, Clone, Copy)]
pub struct SeedMdf {
    pub id: &'static str,
    pub partner: &'static str,
    pub title: &'static str,
    /// Cents.
    pub requested: i64,
    pub status: &'static str,
    /// Claimed so far (cents), for a claimed request.
    pub claimed: Option<i64>,
    pub days_ago: i64,
    /// The amount (cents) the channel team approves in Salesforce.
    pub approve: Option<i64>,
    /// The amount (cents) the partner claims after the approval.
    pub claim_after: Option<i64>,
}

pub const MDF: &[SeedMdf] = &[
    SeedMdf {
        id: "mdf_1",
        partner: "part_1",
        title: "Spring roadshow",
        requested: 500_000,
        status: "claimed",
        claimed: Some(400_000),
        days_ago: 50,
        approve: Some(450_000),
        claim_after: None,
    },
    SeedMdf {
        id: "mdf_2",
        partner: "part_2",
        title: "Webinar series",
        requested: 300_000,
        status: "approved",
        claimed: None,
        days_ago: 40,
        approve: Some(300_000),
        claim_after: None,
    },
    SeedMdf {
        id: "mdf_3",
        partner: "part_3",
        title: "Partner summit booth",
        requested: 200_000,
        status: "requested",
        claimed: None,
        days_ago: 20,
        approve: Some(150_000),
        claim_after: Some(125_000),
    },
    SeedMdf {
        id: "mdf_4",
        partner: "part_1",
        title: "Draft: autumn campaign",
        requested: 100_000,
        status: "draft",
        claimed: None,
        days_ago: 1,
        approve: None,
        claim_after: None,
    },
];

/// The demo's outcome, checked before it is printed.
#[derive(Debug, Clone, Default)]
pub struct RestSalesforceSummary {
    pub rest_url: String,
    pub salesforce_url: String,
    pub mappings_dir: PathBuf,
    pub partner_accounts: usize,
    pub opportunities: usize,
    pub decisions: std::collections::BTreeMap<String, usize>,
    pub decisions_written: usize,
    pub partner_rows: usize,
    pub sales_changes: usize,
    pub stages_back: usize,
    pub campaigns: usize,
    pub mdf_approved_back: usize,
    pub mdf_claimed: usize,
    pub second_pass_writes: u64,
    pub dead_letters: i64,
    pub state_path: PathBuf,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn day(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A REST object as the REST PRM simulator serves it (page tokens, epoch-ms `updated_since`).
fn rest_object(name: &str, writable: bool) -> RestObject {
    RestObject {
        list_path: format!("/{name}"),
        upsert_path: writable.then(|| format!("/{name}/{{id}}")),
        upsert_method: UpsertMethod::Patch,
        items_field: "data.results".into(),
        id_field: "id".into(),
        cursor_field: "updated_at".into(),
        since_param: "updated_since".into(),
        since_format: SinceFormat::EpochMs,
        limit_param: "limit".into(),
        paging: Paging::PageToken {
            param: "page_token".into(),
            next_field: "data.next_page_token".into(),
        },
    }
}

/// The demo's config: the REST profile (deals, partnerships, MDF requests) and Salesforce.
fn config(
    state: PathBuf,
    mappings: PathBuf,
    rest: reqwest::Url,
    sf: reqwest::Url,
) -> crate::config::Config {
    let mut c = super::config_for(state, rest.clone(), sf.clone());
    c.daemon.mappings_dir = Some(mappings);
    c.daemon.state_key = Some(SecretString::from(STATE_KEY));
    c.prm = PrmConfig::Rest(RestConfig {
        profile: RestProfile {
            base_url: rest,
            auth_header: "Authorization".into(),
            auth_value: SecretString::from(format!("prm-key {REST_KEY}")),
            page_size: defaults::BATCH_SIZE.min(100) as u32,
            objects: [
                ("deals", true),
                ("partnerships", false),
                ("mdf_requests", true),
            ]
            .into_iter()
            .map(|(n, w)| (n.to_owned(), rest_object(n, w)))
            .collect(),
        },
        rate_limit_per_second: None,
        webhook_secret: None,
    });
    c.crm = CrmConfig::Salesforce(SalesforceConfig {
        login_url: sf,
        auth: SalesforceAuthConfig::RefreshToken {
            client_id: SF_CLIENT_ID.into(),
            client_secret: Some(SecretString::from(SF_CLIENT_SECRET)),
            refresh_token: SecretString::from(SF_REFRESH_TOKEN),
        },
        audience: None,
        rate_limit: None,
    });
    c
}

/// Writes the shipped files this demo runs into `dir` (replacing older copies).
fn write_mappings(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in FILES {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Seeds the PRM (partners, registrations, MDF requests) and Salesforce (the direct team's
/// accounts and opportunity) as of `start_ms`.
fn seed(rest: &RestPrmSim, sf: &SalesforceSim, start_ms: i64) {
    for (id, name, tier) in PARTNERS {
        let site = format!("{}.example", name.to_lowercase().replace(' ', ""));
        rest.put(
            "partnerships",
            id,
            object(json!({"name": name, "website": site, "tier": tier})),
        );
    }
    for d in DEALS {
        let submitted = start_ms - d.days_ago * DAY_MS;
        rest.put(
            "deals",
            d.id,
            object(json!({
                "account_name": d.company,
                "amount": d.amount,
                "close_date": day(submitted + 90 * DAY_MS),
                "contact_first_name": "Sam",
                "contact_last_name": format!("Buyer {}", d.id),
                "contact_email": format!("sam.{}@{}", d.id.replace('_', ""), d.domain),
                "partner_key": d.partner,
                "stage": "registered",
                "created_at": submitted,
            })),
        );
    }
    for m in MDF {
        let created = start_ms - m.days_ago * DAY_MS;
        let partner_name = PARTNERS
            .iter()
            .find(|p| p.0 == m.partner)
            .map_or("", |p| p.1);
        let mut f = object(json!({
            "partner_key": m.partner,
            "partner_name": partner_name,
            "title": m.title,
            "start_date": day(created + 14 * DAY_MS),
            "end_date": day(created + 45 * DAY_MS),
            "requested_amount": m.requested,
            "status": m.status,
            "created_at": created,
        }));
        if let Some(c) = m.claimed {
            f.insert("claimed_amount".into(), json!(c));
        }
        rest.put("mdf_requests", m.id, f);
    }
    // The direct team's side of Salesforce: Hooli with an open opportunity, Massive Dynamic
    // flagged as reserved for direct sales.
    let hooli = sf.insert(
        "Account",
        object(json!({"Name": "Hooli", "Website": "https://www.hooli.example"})),
    );
    sf.insert(
        "Opportunity",
        object(json!({
            "Name": "Hooli platform renewal (direct)", "StageName": "Negotiation/Review",
            "CloseDate": day(start_ms + 30 * DAY_MS), "AccountId": hooli,
        })),
    );
    sf.insert(
        "Account",
        object(json!({
            "Name": "Massive Dynamic", "Website": "massivedynamic.example",
            "PRM_Direct_Reserved__c": true,
        })),
    );
}

fn id_of(r: &Map<String, Value>) -> String {
    r.get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Runs the demo end to end and checks the end state.
pub async fn run(opts: super::DemoOptions) -> anyhow::Result<RestSalesforceSummary> {
    super::fresh_state(&opts.state)?;
    let mappings = opts
        .state
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join("mappings-rest-salesforce");
    write_mappings(&mappings)?;
    let rest = RestPrmSim::new(REST_KEY);
    let sf = SalesforceSim::new(SalesforceAuth {
        client_id: SF_CLIENT_ID.into(),
        client_secret: SF_CLIENT_SECRET.into(),
        refresh_token: SF_REFRESH_TOKEN.into(),
        rotate: true,
        jwt_public_key: None,
        username: "integration@prmsync.example".into(),
        token_ttl_ms: 3_600_000,
    });
    let rest_server = SimServer::start(rest.router()).await?;
    let sf_server = SimServer::start(sf.router()).await?;
    let start_ms = jiff::Timestamp::now().as_millisecond();
    seed(&rest, &sf, start_ms);
    let config = config(
        opts.state.clone(),
        mappings.clone(),
        rest_server.url("/api"),
        sf_server.url(""),
    );
    let daemon = Daemon::start(config, system_clock()).await?;
    let mut s = RestSalesforceSummary {
        rest_url: rest_server.url("/api").to_string(),
        salesforce_url: sf_server.url("").to_string(),
        mappings_dir: mappings,
        state_path: opts.state.clone(),
        ..RestSalesforceSummary::default()
    };

    // Pass 1: partners become Accounts, registrations become Opportunities and are decided
    // (Salesforce facts read by SOQL), decisions go back both ways, MDF requests become Campaigns.
    daemon.run_until_idle().await?;
    s.partner_accounts = sf
        .records("Account")
        .iter()
        .filter(|a| a.get("PRM_Partner_Key__c").is_some_and(|v| !v.is_null()))
        .count();
    let opportunity = |id: &str| {
        sf.find("Opportunity", "PRM_Deal_Id__c", id)
            .into_iter()
            .next()
    };
    s.opportunities = DEALS.iter().filter(|d| opportunity(d.id).is_some()).count();
    for r in daemon.engine.store().registrations(None).await? {
        *s.decisions
            .entry(r.status.unwrap_or_else(|| "undecided".into()))
            .or_default() += 1;
    }
    s.decisions_written = sf
        .records("Opportunity")
        .iter()
        .filter(|o| {
            o.get("PRM_Registration_Status__c")
                .is_some_and(|v| !v.is_null())
        })
        .count();
    s.campaigns = sf.records("Campaign").len();

    // Sales works the pipeline in Salesforce; the channel team approves MDF there.
    for d in DEALS {
        let Some((stage, reason)) = d.sales else {
            continue;
        };
        let o = opportunity(d.id).with_context(|| format!("the opportunity of {}", d.id))?;
        if let Some(r) = reason {
            sf.set_field("Opportunity", &id_of(&o), "Loss_Reason__c", json!(r));
        }
        ensure!(
            sf.set_field("Opportunity", &id_of(&o), "StageName", json!(stage)),
            "moving {} in the simulator",
            d.id
        );
        s.sales_changes += 1;
    }
    for m in MDF {
        let Some(amount) = m.approve else { continue };
        let c = sf
            .find("Campaign", "PRM_MDF_Key__c", m.id)
            .into_iter()
            .next()
            .with_context(|| format!("the campaign of {}", m.id))?;
        if m.status == "requested" {
            sf.set_field("Campaign", &id_of(&c), "Status", json!("In Progress"));
        }
        sf.set_field(
            "Campaign",
            &id_of(&c),
            "Approved_Amount__c",
            json!(amount as f64 / 100.0),
        );
    }
    // Pass 2: stages, loss reasons and MDF approvals flow back to the PRM.
    daemon.run_until_idle().await?;
    let prm = |object: &str, id: &str| {
        rest.items(object)
            .into_iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
    };
    let stage_back = |sales: &str| match sales {
        "Closed Won" => "won",
        "Closed Lost" => "lost",
        _ => "approved",
    };
    s.stages_back = DEALS
        .iter()
        .filter_map(|d| Some((d, d.sales?.0)))
        .filter(|(d, stage)| {
            prm("deals", d.id).and_then(|r| r.get("stage").cloned())
                == Some(json!(stage_back(stage)))
        })
        .count();
    s.mdf_approved_back = MDF
        .iter()
        .filter(|m| {
            m.approve.is_some()
                && prm("mdf_requests", m.id).and_then(|r| r.get("approved_amount").cloned())
                    == m.approve.map(|a| json!(a))
        })
        .count();

    // The partner claims an approved request in the PRM: the claim becomes the Campaign's actual
    // cost. The campaign flow lets Salesforce own the status, so the channel team accepts the claim
    // there (Completed), and the PRM's request reads claimed.
    let campaign = |id: &str| {
        sf.find("Campaign", "PRM_MDF_Key__c", id)
            .into_iter()
            .next()
            .with_context(|| format!("the campaign of {id}"))
    };
    for m in MDF {
        let Some(claim) = m.claim_after else { continue };
        let mut r = prm("mdf_requests", m.id).with_context(|| format!("{} in the PRM", m.id))?;
        r.insert("claimed_amount".into(), json!(claim));
        rest.put("mdf_requests", m.id, r);
    }
    daemon.run_until_idle().await?;
    for m in MDF.iter().filter(|m| m.claim_after.is_some()) {
        sf.set_field(
            "Campaign",
            &id_of(&campaign(m.id)?),
            "Status",
            json!("Completed"),
        );
    }
    daemon.run_until_idle().await?;
    for m in MDF.iter().filter(|m| m.claim_after.is_some()) {
        let c = campaign(m.id)?;
        let status = prm("mdf_requests", m.id).and_then(|r| r.get("status").cloned());
        ensure!(
            status == Some(json!("claimed")),
            "the accepted claim of {} reads {status:?} in the PRM",
            m.id
        );
        s.mdf_claimed += 1;
        // Salesforce answers a decimal as JSON text or a number.
        let cost = c.get("ActualCost").and_then(|v| match v {
            Value::String(s) => s.parse::<f64>().ok(),
            other => other.as_f64(),
        });
        ensure!(
            cost == m.claim_after.map(|c| c as f64 / 100.0),
            "the claim of {} did not reach its campaign: {c:?}",
            m.id
        );
    }
    s.partner_rows = sf.records("Partner").len();

    // Pass 3: nothing changed, so nothing is written.
    let (sf_before, rest_before) = (sf.stats(), rest.stats());
    daemon.run_until_idle().await?;
    let (sf_after, rest_after) = (sf.stats(), rest.stats());
    s.second_pass_writes =
        (sf_after.created + sf_after.updated - sf_before.created - sf_before.updated)
            + (rest_after.upserts - rest_before.upserts);
    s.dead_letters = daemon
        .engine
        .store()
        .status(jiff::Timestamp::now().as_millisecond())
        .await?
        .dead_letters;
    daemon.shutdown().await;
    rest_server.stop().await;
    sf_server.stop().await;

    let closed = DEALS.iter().filter(|d| d.sales.is_some()).count();
    ensure!(
        s.opportunities == DEALS.len(),
        "expected {} opportunities, found {}",
        DEALS.len(),
        s.opportunities
    );
    ensure!(
        s.stages_back == closed,
        "only {} of {closed} closed stages came back to the PRM",
        s.stages_back
    );
    let approvals = MDF.iter().filter(|m| m.approve.is_some()).count();
    ensure!(
        s.mdf_approved_back == approvals,
        "only {} of {approvals} MDF approvals came back to the PRM",
        s.mdf_approved_back
    );
    ensure!(
        s.second_pass_writes == 0,
        "a pass over unchanged data wrote {} times",
        s.second_pass_writes
    );
    ensure!(s.dead_letters == 0, "{} dead letters", s.dead_letters);
    Ok(s)
}

/// The summary as the demo prints it.
pub fn render(s: &RestSalesforceSummary) -> String {
    let state = s.state_path.display();
    format!(
        "prmsync demo --profile rest-salesforce: the real daemon against the built-in simulators on 127.0.0.1\n\
         \n  REST PRM simulator (rest profile)  {rest}\n  Salesforce (CRM) simulator         {sf}\n  mapping files (shipped)            {maps}\n\
         \nSeeded {partners} partners, {deals} deal registrations and {mdf} MDF requests in the PRM; Salesforce holds\n\
         the direct team's Hooli opportunity and Massive Dynamic, flagged PRM_Direct_Reserved__c.\n\
         \n1. PRM -> CRM   {accounts} partner Accounts and {opps} Opportunities created (upsert on external ids)\n\
         2. Rules        {decisions} (Salesforce facts read by SOQL); {written} Opportunities got the decision\n\
         3. MDF          {campaigns} Campaigns from MDF requests (drafts stay in the PRM)\n\
         4. CRM changes  sales closed {sales} Opportunities; {stages} stages and loss reasons came back to the PRM\n\
         5. MDF back     the channel team approved {approved} requests in Salesforce (amounts back in the PRM); a partner's\n                 claim became its Campaign's actual cost and {claimed} was accepted there (claimed in the PRM)\n\
         6. Credit       {partner_rows} Partner rows on Opportunities (sourcing and influencing partners)\n\
         7. Second pass  {second} writes (nothing changed, nothing written); {dead} dead letters\n\
         \nState file: {state}\n  the attribution report: prmsync report attribution --state {state}\n",
        rest = s.rest_url,
        sf = s.salesforce_url,
        maps = s.mappings_dir.display(),
        partners = PARTNERS.len(),
        deals = DEALS.len(),
        mdf = MDF.len(),
        accounts = s.partner_accounts,
        opps = s.opportunities,
        decisions = s
            .decisions
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        written = s.decisions_written,
        campaigns = s.campaigns,
        sales = s.sales_changes,
        stages = s.stages_back,
        approved = s.mdf_approved_back,
        claimed = s.mdf_claimed,
        partner_rows = s.partner_rows,
        second = s.second_pass_writes,
        dead = s.dead_letters,
    )
}
