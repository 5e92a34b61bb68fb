//! `prmsync demo`: starts the simulators on loopback, seeds them, runs the real daemon against
//! them until the queues are empty, and reports what happened on each side. The default profile
//! is PartnerStack and HubSpot; `rest_salesforce.rs` is the REST PRM and Salesforce profile (the
//! one with MDF requests, which PartnerStack has no API for).

pub mod rest_salesforce;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use secrecy::SecretString;
use serde_json::Value;

use crate::app::Daemon;
use crate::config::{
    AdminConfig, Config, CrmConfig, DaemonConfig, HttpConfig, HubSpotConfig, LogConfig, LogFormat,
    PartnerStackConfig, PrmConfig, RetentionConfig, defaults,
};
use crate::engine::system_clock;
use crate::sim::hubspot::{HubSpotSim, deliver_webhook, property_change_event};
use crate::sim::partnerstack::PartnerStackSim;
use crate::sim::{SimServer, seed};

pub const PS_KEY: &str = "demo-partnerstack-key";
pub const HS_TOKEN: &str = "demo-hubspot-token";
pub const HS_SECRET: &str = "demo-hubspot-client-secret";

/// What to seed and where to keep state.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub state: PathBuf,
    pub deals: usize,
    pub partners: usize,
}

/// Removes an old demo state file (and its WAL): the simulators start empty, so links into an
/// old simulator are stale.
pub(crate) fn fresh_state(state: &std::path::Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", state.display()));
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("removing old demo state {}", p.display()))?;
        }
    }
    Ok(())
}

impl DemoOptions {
    /// The default state file, in the system's temp folder.
    pub fn default_state() -> PathBuf {
        std::env::temp_dir().join("prmsync-demo").join("state.db")
    }
}

/// The demo's outcome, checked before it is printed.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    pub partnerstack_url: String,
    pub hubspot_url: String,
    pub webhook_url: String,
    pub seeded_deals: usize,
    pub seeded_partners: usize,
    pub crm_created: u64,
    pub crm_updated: u64,
    pub sales_changes: usize,
    pub webhooks_accepted: usize,
    pub prm_updated: u64,
    /// Registration decisions by status (approved, duplicate, rejected, review, ...).
    pub decisions: std::collections::BTreeMap<String, usize>,
    /// PartnerStack deals written back with their registration decision.
    pub decisions_written: u64,
    pub second_pass_writes: u64,
    pub crm_deals_linked: usize,
    pub prm_stages_in_step: usize,
    pub dead_letters: i64,
    /// Record lifecycle: a deal deleted in HubSpot, and an erased person, one line each.
    pub deletion: String,
    pub merge: String,
    pub erasure: String,
    pub state_path: PathBuf,
}

/// A config pointing at the simulators (the same typed config `run` uses).
pub fn config_for(state: PathBuf, partnerstack: reqwest::Url, hubspot: reqwest::Url) -> Config {
    Config {
        daemon: DaemonConfig {
            state_path: state,
            mappings_dir: None,
            poll_interval: Duration::from_secs(defaults::POLL_INTERVAL_SECS),
            batch_size: defaults::BATCH_SIZE,
            shutdown_timeout: Duration::from_secs(defaults::SHUTDOWN_TIMEOUT_SECS),
            max_attempts: defaults::MAX_ATTEMPTS,
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(defaults::STALL_TIMEOUT_SECS),
            schema_check: Duration::from_secs(defaults::SCHEMA_CHECK_SECS),
            state_key: None,
        },
        state: crate::config::StateConfig::default(),
        log: LogConfig {
            format: LogFormat::Human,
            level: "warn".into(),
            redact_personal_data: true,
        },
        http: HttpConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
        },
        admin: AdminConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            allow_remote: false,
            min_free_bytes: 0,
        },
        prm: PrmConfig::PartnerStack(PartnerStackConfig {
            base_url: partnerstack,
            api_key: SecretString::from(PS_KEY),
            public_key: None,
            webhook_secret: None,
            rate_limit: None,
        }),
        crm: CrmConfig::HubSpot(HubSpotConfig {
            base_url: hubspot,
            access_token: SecretString::from(HS_TOKEN),
            client_secret: Some(SecretString::from(HS_SECRET)),
            oauth: None,
            rate_limit: None,
        }),
        retention: RetentionConfig::default(),
        erasure: crate::config::ErasureConfig::default(),
    }
}

/// Runs the demo end to end and checks the end state.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoSummary> {
    fresh_state(&opts.state)?;
    let ps = PartnerStackSim::new(PS_KEY);
    let hs = HubSpotSim::new(HS_TOKEN);
    let ps_server = SimServer::start(ps.router()).await?;
    let hs_server = SimServer::start(hs.router()).await?;
    for deal in seed::deals(opts.deals, opts.partners) {
        ps.upsert_deal(deal);
    }
    let config = config_for(
        opts.state.clone(),
        ps_server.url("/api/v2"),
        hs_server.url(""),
    );
    let daemon = Daemon::start(config, system_clock()).await?;
    let webhook_url =
        reqwest::Url::parse(&format!("http://{}/webhooks/hubspot", daemon.http_addr))?;
    let mut summary = DemoSummary {
        partnerstack_url: ps_server.url("/api/v2").to_string(),
        hubspot_url: hs_server.url("").to_string(),
        webhook_url: webhook_url.to_string(),
        seeded_deals: opts.deals,
        seeded_partners: opts.partners,
        state_path: opts.state.clone(),
        ..DemoSummary::default()
    };

    // Pass 1: deal registrations become HubSpot deals, and the rules of engagement decide who
    // owns each customer (decisions go back to the partner deal and onto the HubSpot deal).
    daemon.run_until_idle().await?;
    let after_first = hs.stats();
    summary.crm_created = after_first.created;
    summary.crm_updated = after_first.updated;
    summary.decisions_written = ps.stats().patches;
    for r in daemon.engine.store().registrations(None).await? {
        *summary
            .decisions
            .entry(r.status.unwrap_or_else(|| "undecided".into()))
            .or_default() += 1;
    }

    // Sales works the pipeline in HubSpot; HubSpot tells prmsync by signed webhook.
    let http = crate::connector::http_client(Duration::from_secs(10));
    let deals = hs.objects("deals");
    let moves = [
        ("closedwon", None),
        ("closedlost", Some("Went with a competitor")),
        ("contractsent", None),
    ];
    for (i, deal) in deals.iter().take(10).enumerate() {
        let id = deal
            .get("hs_object_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (stage, reason) = moves[i % moves.len()];
        if let Some(r) = reason {
            hs.set_property("deals", &id, "closed_lost_reason", r);
        }
        hs.set_property("deals", &id, "dealstage", stage);
        let event = property_change_event(1000 + i as u64, &id, "dealstage", stage);
        let status = deliver_webhook(&http, &webhook_url, HS_SECRET, &[event]).await?;
        ensure!(
            status.is_success(),
            "the daemon refused a signed webhook: {status}"
        );
        summary.sales_changes += 1;
        summary.webhooks_accepted += 1;
    }
    // Pass 2: the CRM's stage and lost reason flow back to the partner's deal.
    daemon.run_until_idle().await?;
    summary.prm_updated = ps.stats().patches - summary.decisions_written;

    // Pass 3: nothing changed, so nothing is written.
    let (hs_before, ps_before) = (hs.stats(), ps.stats());
    daemon.run_until_idle().await?;
    summary.second_pass_writes = (hs.stats().batch_upserts - hs_before.batch_upserts)
        + (ps.stats().patches - ps_before.patches);

    // Check the end state on both sides.
    let crm = hs.objects("deals");
    summary.crm_deals_linked = crm
        .iter()
        .filter(|d| d.get("prm_deal_id").is_some())
        .count();
    let to_prm: std::collections::BTreeMap<&str, &str> = [
        ("appointmentscheduled", "submitted"),
        ("qualifiedtobuy", "approved"),
        ("presentationscheduled", "demo"),
        ("decisionmakerboughtin", "evaluation"),
        ("contractsent", "negotiation"),
        ("closedwon", "won"),
        ("closedlost", "lost"),
    ]
    .into_iter()
    .collect();
    summary.prm_stages_in_step = crm
        .iter()
        .filter(|d| {
            let key = d
                .get("prm_deal_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let stage = d
                .get("dealstage")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ps.deal(key)
                .and_then(|p| p.get("stage").and_then(Value::as_str).map(str::to_owned))
                .as_deref()
                == to_prm.get(stage).copied()
        })
        .count();
    summary.dead_letters = daemon
        .engine
        .store()
        .status(jiff::Timestamp::now().as_millisecond())
        .await?
        .dead_letters;
    summary.deletion = deletion(&daemon, &hs, &ps).await?;
    summary.merge = merge(&daemon, &hs, &ps, &http, &webhook_url).await?;
    summary.erasure = erasure(&daemon, &hs, &ps).await?;
    daemon.shutdown().await;
    ps_server.stop().await;
    hs_server.stop().await;
    ensure!(
        summary.crm_deals_linked == opts.deals,
        "expected {} deals in HubSpot, found {}",
        opts.deals,
        summary.crm_deals_linked
    );
    ensure!(
        summary.prm_stages_in_step == opts.deals,
        "only {} of {} deals have the same stage on both sides",
        summary.prm_stages_in_step,
        opts.deals
    );
    ensure!(
        summary.second_pass_writes == 0,
        "a pass over unchanged data wrote {} times",
        summary.second_pass_writes
    );
    Ok(summary)
}

/// Sales deletes the HubSpot deal of `deal_1`; the next pass reads the deletion (HubSpot's
/// archived listing), and the partner's next edit of the deal is not written: no re-create.
async fn deletion(
    daemon: &Daemon,
    hs: &HubSpotSim,
    ps: &PartnerStackSim,
) -> anyhow::Result<String> {
    let key = "deal_1";
    let deal = hs
        .find("deals", "prm_deal_id", key)
        .context("the demo's first deal is in HubSpot")?;
    let id = deal
        .get("hs_object_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    ensure!(
        hs.archive("deals", &id),
        "archiving deal {id} in the simulator"
    );
    daemon.run_until_idle().await?;
    let mut edited = ps.deal(key).context("the partner's deal")?;
    let amount = edited.get("amount").and_then(Value::as_i64).unwrap_or(0) + 100;
    edited.insert("amount".into(), amount.into());
    ps.upsert_deal(edited);
    daemon.run_until_idle().await?;
    ensure!(
        hs.find("deals", "prm_deal_id", key).is_none(),
        "the deleted deal {id} was re-created"
    );
    Ok(format!(
        "sales deleted HubSpot deal {id} ({key}): link tombstoned, the partner's next edit was not written (no re-create)"
    ))
}

/// Sales had `deal_3` in HubSpot already and merges prmsync's deal into theirs (theirs
/// survives); HubSpot tells prmsync by a signed merge webhook. The link moves to the survivor and
/// the partner's next edit updates it: nothing is created twice.
async fn merge(
    daemon: &Daemon,
    hs: &HubSpotSim,
    ps: &PartnerStackSim,
    http: &reqwest::Client,
    webhook_url: &reqwest::Url,
) -> anyhow::Result<String> {
    let key = "deal_3";
    let ours = hs
        .find("deals", "prm_deal_id", key)
        .and_then(|d| {
            d.get("hs_object_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .context("the demo's third deal is in HubSpot")?;
    let theirs = hs.create(
        "deals",
        [(
            "dealname".to_owned(),
            "the same deal, entered by sales".to_owned(),
        )]
        .into(),
    );
    hs.enable_webhooks();
    ensure!(
        hs.merge("deals", &theirs, &ours),
        "merging in the simulator"
    );
    hs.deliver_pending(http, webhook_url, HS_SECRET).await?;
    daemon.run_until_idle().await?;
    let mut edited = ps.deal(key).context("the partner's deal")?;
    let amount = edited.get("amount").and_then(Value::as_i64).unwrap_or(0) + 100;
    edited.insert("amount".into(), amount.into());
    ps.upsert_deal(edited);
    daemon.run_until_idle().await?;
    let survivor = hs.find("deals", "prm_deal_id", key).and_then(|d| {
        d.get("hs_object_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    ensure!(
        survivor.as_deref() == Some(theirs.as_str()),
        "the merged deal's link did not move to the survivor {theirs}"
    );
    ensure!(
        hs.writes("deals").get(key).map(|w| w.0) == Some(1),
        "{key} was created twice"
    );
    Ok(format!(
        "sales merged HubSpot deal {ours} ({key}) into their {theirs}: link moved to the survivor, the partner's next edit updated it, nothing created twice"
    ))
}

/// A person asks to be erased: HubSpot holds them as a contact (sales added them), the deal of
/// `deal_2` carries their address both sides. `erase --email` as the CLI runs it.
async fn erasure(daemon: &Daemon, hs: &HubSpotSim, ps: &PartnerStackSim) -> anyhow::Result<String> {
    use crate::engine::erase::Subject;
    let key = "deal_2";
    let email = ps
        .deal(key)
        .and_then(|d| {
            d.get("contact_email")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .context("the seeded deal's contact")?;
    hs.create(
        "contacts",
        [("email".to_owned(), email.clone())].into_iter().collect(),
    );
    let outcome = daemon
        .engine
        .erase(&Subject::email(&email)?, "demo", false)
        .await?;
    let left = daemon.engine.store().records_holding(email.clone()).await?;
    ensure!(left.is_empty(), "the state file still holds the address");
    ensure!(
        hs.find("contacts", "email", &email).is_none(),
        "the HubSpot contact is still there"
    );
    let calls: Vec<String> = outcome
        .plan
        .actions
        .iter()
        .map(|a| match a {
            crate::engine::erase::Action::GdprDelete { .. } => {
                "HubSpot contact gdpr-deleted".to_owned()
            }
            crate::engine::erase::Action::Delete { system, object, .. } => {
                format!("{system} {object} deleted")
            }
            crate::engine::erase::Action::Scrub { system, object, .. } => {
                format!("{system} {object} scrubbed")
            }
        })
        .collect();
    Ok(format!(
        "the contact of {key} erased: {}; {} state rows purged, {} values rewritten; {} left in PartnerStack (not writable there)",
        calls.join(", "),
        outcome.counts.0,
        outcome.counts.1,
        outcome.plan.left.len()
    ))
}

/// The summary as the demo prints it.
pub fn render(s: &DemoSummary) -> String {
    format!(
        "prmsync demo: the real daemon against the built-in simulators on 127.0.0.1\n\
         \n  PartnerStack (PRM) simulator  {ps}\n  HubSpot (CRM) simulator       {hs}\n  prmsync webhooks              {wh}\n\
         \nSeeded {partners} partners and {deals} deal registrations in PartnerStack.\n\
         \n1. PRM -> CRM   {created} HubSpot deals created (upsert on prm_deal_id)\n\
         2. Rules        {decisions}; {decided} partner deals and {updated} HubSpot deals got the decision\n\
         3. CRM changes  sales moved {sales} deals; HubSpot told prmsync by {hooks} signed v3 webhooks\n\
         4. CRM -> PRM   {prm} PartnerStack deals updated with the CRM's stage and lost reason\n\
         5. Second pass  {second} writes (nothing changed, nothing written)\n\
         6. Deletion     {deletion}\n\
         7. Merge        {merge}\n\
         8. Erasure      {erasure}\n\
         \nAfter step 5: {linked}/{deals} deals in HubSpot, {in_step}/{deals} with the same stage on both sides, {dead} dead letters.\n\
         State file: {state}\n  inspect it with: prmsync status --state {state}\n",
        ps = s.partnerstack_url,
        hs = s.hubspot_url,
        wh = s.webhook_url,
        partners = s.seeded_partners,
        deals = s.seeded_deals,
        created = s.crm_created,
        updated = s.crm_updated,
        decided = s.decisions_written,
        decisions = s
            .decisions
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        sales = s.sales_changes,
        hooks = s.webhooks_accepted,
        prm = s.prm_updated,
        second = s.second_pass_writes,
        linked = s.crm_deals_linked,
        in_step = s.prm_stages_in_step,
        dead = s.dead_letters,
        deletion = s.deletion,
        merge = s.merge,
        erasure = s.erasure,
        state = s.state_path.display(),
    )
}
