//! Rules of engagement end to end: registrations in the PartnerStack simulator, decisions stored in
//! SQLite and written back to both simulators, the operator's review verbs, and `prmsync check`.

use std::process::Command;

use serde_json::{Map, Value, json};

use crate::harness::World;
use prmsync::store::Store;

fn deal(key: &str, partner: &str, email: &str) -> Map<String, Value> {
    match json!({
        "key": key,
        "account_name": "Initech",
        "amount": 2_500_000,
        "close_date": "2027-03-31",
        "contact_first_name": "Peter",
        "contact_last_name": "Gibbons",
        "contact_email": email,
        "partner_key": partner,
        "source": "partner",
        "stage": "submitted",
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The decision fields prmsync wrote on a PartnerStack deal.
fn prm_decision(w: &World, key: &str) -> Map<String, Value> {
    w.ps.custom_fields(key)
}

fn crm_prop(w: &World, key: &str, prop: &str) -> Option<String> {
    w.hs.find("deals", "prm_deal_id", key)
        .and_then(|d| d.get(prop).and_then(Value::as_str).map(str::to_owned))
}

fn status_of(w: &World, key: &str) -> Option<String> {
    prm_decision(w, key)
        .get("registration_status")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn prmsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(args)
        .output()
        .expect("run prmsync")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partners_one_customer_one_credited_opportunity() {
    let w = World::seeded(0).await;
    // Blue Harbor (silver) registers first; Northwind (gold) and Summit (bronze) later, with the
    // same customer written differently; one registration names a direct-reserved account.
    w.ps.upsert_deal(deal("reg_a", "part_2", "peter@initech.example"));
    w.ps.upsert_deal(deal("reg_b", "part_1", "Peter@WWW.Initech.Example"));
    w.ps.upsert_deal(deal("reg_c", "part_3", "pg@eu.initech.example"));
    w.ps.upsert_deal(deal("reg_r", "part_1", "cto@bigbank.example"));
    // No customer domain at all: kept, and told what is missing.
    w.ps.upsert_deal(deal("reg_x", "part_4", " "));
    let daemon = w.daemon().await;
    daemon.run_until_idle().await.expect("sync");

    // Every PRM deal carries its decision and the reason.
    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("approved"));
    assert!(
        prm_decision(&w, "reg_a")["protected_until"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "{:?}",
        prm_decision(&w, "reg_a")
    );
    for dup in ["reg_b", "reg_c"] {
        let f = prm_decision(&w, dup);
        assert_eq!(f["registration_status"], "duplicate", "{dup}: {f:?}");
        assert_eq!(f["duplicate_of"], "reg_a");
        let reason = f["registration_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("duplicate: reg_a (part_2) holds the account"),
            "{reason}"
        );
    }
    let r = prm_decision(&w, "reg_r");
    assert_eq!(r["registration_status"], "rejected");
    assert!(
        r["registration_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("bigbank.example is reserved for direct sales (reserved_accounts line"),
        "{r:?}"
    );

    // Exactly one HubSpot deal for initech is credited, to the right partner.
    let credited: Vec<(String, String)> =
        w.hs.objects("deals")
            .into_iter()
            .filter(|d| d.get("prm_attribution").and_then(Value::as_str) == Some("partner_sourced"))
            .map(|d| {
                let s = |k: &str| {
                    d.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (s("prm_deal_id"), s("prm_partner_key"))
            })
            .collect();
    assert_eq!(credited, vec![("reg_a".to_owned(), "part_2".to_owned())]);
    assert_eq!(
        crm_prop(&w, "reg_b", "prm_registration_status").as_deref(),
        Some("duplicate")
    );
    assert_eq!(
        crm_prop(&w, "reg_b", "prm_attribution").as_deref(),
        Some("none")
    );
    assert!(crm_prop(&w, "reg_a", "prm_protected_until").is_some_and(|s| !s.is_empty()));

    // The decisions are in SQLite, each with its history.
    let store = Store::open(&w.state_path()).expect("open state");
    let regs = store.registrations(None).await.expect("list");
    let status: Vec<(&str, Option<&str>)> = regs
        .iter()
        .map(|r| (r.id.as_str(), r.status.as_deref()))
        .collect();
    assert_eq!(
        status,
        vec![
            ("reg_r", Some("rejected")),
            ("reg_a", Some("approved")),
            ("reg_b", Some("duplicate")),
            ("reg_c", Some("duplicate")),
            ("reg_x", Some("pending")),
        ]
    );
    let x = prm_decision(&w, "reg_x");
    assert!(
        x["registration_reason"]
            .as_str()
            .is_some_and(|r| r
                .contains("no duplicate key yet; fill in one of customer_domain, contact_email")),
        "{x:?}"
    );
    let (_, history) = store
        .registration("reg_b".into())
        .await
        .expect("show")
        .expect("reg_b exists");
    assert_eq!(history.len(), 1, "{history:?}");

    // A second pass writes nothing: the write-backs' echoes are recognised.
    let patches = w.ps.stats().patches;
    let again = daemon.run_until_idle().await.expect("second pass");
    assert_eq!(again.written, 0, "{again:?}");
    assert_eq!(w.ps.stats().patches, patches);

    // An operator overrides through the CLI; the daemon writes it back on its next pass.
    let state = w.state_path();
    let state = state.to_str().expect("utf-8 path");
    let out = prmsync(&[
        "review",
        "approve",
        "reg_b",
        "--reason",
        "customer chose Northwind",
        "--state",
        state,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = prmsync(&["review", "reject", "reg_c", "--state", state]);
    assert_eq!(out.status.code(), Some(2), "a rejection needs --reason");
    daemon.run_until_idle().await.expect("sync after review");
    assert_eq!(status_of(&w, "reg_b").as_deref(), Some("approved"));
    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("duplicate"));
    assert_eq!(
        crm_prop(&w, "reg_b", "prm_attribution").as_deref(),
        Some("partner_sourced")
    );
    assert_eq!(
        crm_prop(&w, "reg_a", "prm_attribution").as_deref(),
        Some("none")
    );
    let (a, history) = store
        .registration("reg_a".into())
        .await
        .expect("show")
        .expect("reg_a exists");
    assert_eq!(a.duplicate_of.as_deref(), Some("reg_b"));
    let flips: Vec<(Option<&str>, &str)> = history
        .iter()
        .map(|h| (h.before.as_deref(), h.after.as_str()))
        .collect();
    assert_eq!(
        flips,
        vec![(None, "approved"), (Some("approved"), "duplicate")]
    );

    // The operator verbs read the same state.
    let out = prmsync(&["registrations", "explain", "reg_c", "--state", state]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("reserved_accounts (line") && text.contains("decided: duplicate"),
        "{text}"
    );
    let out = prmsync(&["registrations", "show", "nope", "--state", state]);
    assert_eq!(out.status.code(), Some(1));
    daemon.shutdown().await;
}

#[test]
fn check_reports_rules_errors_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let maps = dir.path().join("mappings");
    std::fs::create_dir(&maps).expect("mkdir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/mappings/partnerstack-hubspot-deals.toml"
        ),
        maps.join("partnerstack-hubspot-deals.toml"),
    )
    .expect("copy mapping");
    let rules = prmsync::rules::BUILTIN
        .1
        .replace(r#"on_expiry = "reopen""#, r#"on_expiry = "forget""#)
        .replace(
            r#"expect.d2 = { status = "duplicate""#,
            r#"expect.d2 = { status = "approved""#,
        );
    let rules_path = maps.join(prmsync::rules::RULES_FILE);
    std::fs::write(&rules_path, &rules).expect("write rules");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not-a-real-key").expect("write secret");
    let config = dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {:?}\nmappings_dir = {:?}\n\n[partnerstack]\nbase_url = \"http://127.0.0.1:9/api/v2\"\napi_key = {{ file = {:?} }}\n\n[hubspot]\nbase_url = \"http://127.0.0.1:9\"\naccess_token = {{ file = {:?} }}\n",
            dir.path().join("state.db"),
            maps,
            secret,
            secret
        ),
    )
    .expect("write config");
    let out = prmsync(&["check", config.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let want = format!(
        "{}:59:13: protection.on_expiry: unknown action \"forget\"",
        rules_path.display()
    );
    assert!(err.contains(&want), "{err}");
    // The mapping loader does not mistake the rules file for a mapping.
    assert!(!err.contains("source"), "{err}");

    // Fixed file, broken example: the example fails with its line.
    std::fs::write(
        &rules_path,
        rules.replace(r#"on_expiry = "forget""#, r#"on_expiry = "reopen""#),
    )
    .expect("write rules");
    let out = prmsync(&["check", config.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":89: example") && err.contains("d2: expected approved, got duplicate"),
        "{err}"
    );

    // And a good file passes, examples and all.
    std::fs::write(&rules_path, prmsync::rules::BUILTIN.1).expect("write rules");
    let out = prmsync(&["check", config.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rules of engagement") && text.contains("7 example(s) passed"),
        "{text}"
    );
}

/// A mappings folder with the shipped deal mapping and the given rules text.
fn mappings_dir(w: &World, rules: &str) -> std::path::PathBuf {
    let maps = w.dir.path().join("mappings");
    std::fs::create_dir_all(&maps).expect("mkdir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/mappings/partnerstack-hubspot-deals.toml"
        ),
        maps.join("partnerstack-hubspot-deals.toml"),
    )
    .expect("copy mapping");
    std::fs::write(maps.join(prmsync::rules::RULES_FILE), rules).expect("write rules");
    maps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_re_decides_and_a_rules_change_keeps_protection() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    config.daemon.mappings_dir = Some(mappings_dir(&w, prmsync::rules::BUILTIN.1));
    w.ps.upsert_deal(deal("reg_a", "part_1", "ann@acme.example"));
    let mut thin = deal("reg_p", "part_2", "bo@hooli.example");
    thin.insert("contact_last_name".into(), json!(""));
    w.ps.upsert_deal(thin);
    let daemon = prmsync::app::Daemon::start(config.clone(), prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    daemon.run_until_idle().await.expect("sync");
    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("approved"));
    assert_eq!(status_of(&w, "reg_p").as_deref(), Some("pending"));
    let reason = prm_decision(&w, "reg_p")["registration_reason"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("the customer contact has no full name")),
        "{reason}"
    );

    // The partner completes the registration: it is decided again and approved.
    w.ps.upsert_deal(deal("reg_p", "part_2", "bo@hooli.example"));
    daemon
        .run_until_idle()
        .await
        .expect("sync after completion");
    assert_eq!(status_of(&w, "reg_p").as_deref(), Some("approved"));
    assert_eq!(
        crm_prop(&w, "reg_p", "prm_attribution").as_deref(),
        Some("partner_sourced")
    );
    daemon.shutdown().await;

    // A new rules file reserves acme.example. The protected registration is kept, and says why;
    // a new registration for the account is rejected.
    let reserving = prmsync::rules::BUILTIN.1.replace(
        r#""bigbank.example","#,
        r#""bigbank.example", "acme.example","#,
    );
    mappings_dir(&w, &reserving);
    w.ps.upsert_deal(deal("reg_n", "part_3", "cy@acme.example"));
    let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon restarts");
    daemon.run_until_idle().await.expect("sync under new rules");
    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("approved"));
    let reason = prm_decision(&w, "reg_a")["registration_reason"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("rules_change_may_revoke = false")),
        "{reason}"
    );
    assert_eq!(status_of(&w, "reg_n").as_deref(), Some("rejected"));
    let store = Store::open(&w.state_path()).expect("open state");
    let (a, history) = store
        .registration("reg_a".into())
        .await
        .expect("show")
        .expect("reg_a exists");
    assert_ne!(a.rules_version, None);
    let statuses: Vec<&str> = history.iter().map(|h| h.after.as_str()).collect();
    assert_eq!(statuses, vec!["approved", "approved"], "{history:?}");
    daemon.shutdown().await;
}

/// A rules file and a mapping file, each with an unknown key, a wrong type and an unknown name
/// (`tests/fixtures/three-mistakes/`): one `prmsync check` run reports all six, each located.
#[test]
fn three_mistakes_in_each_file_give_three_located_errors_each() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/three-mistakes");
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not-a-real-key").expect("write secret");
    let config = dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {:?}\nmappings_dir = {:?}\n\n[partnerstack]\nbase_url = \"http://127.0.0.1:9/api/v2\"\napi_key = {{ file = {:?} }}\n\n[hubspot]\nbase_url = \"http://127.0.0.1:9\"\naccess_token = {{ file = {:?} }}\n",
            dir.path().join("state.db"),
            fixtures,
            secret,
            secret
        ),
    )
    .expect("write config");
    let out = prmsync(&["check", config.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let rules = fixtures.join("rules-of-engagement.toml");
    let mapping = fixtures.join("partnerstack-hubspot-deals.toml");
    let want = [
        (&mapping, "21:1: field[0].requird: unknown field `requird`"),
        (
            &mapping,
            "28:12: field[1].required: invalid type: string \"yes\", expected a boolean",
        ),
        (
            &mapping,
            "34:10: field[2].target: hubspot/deals has no field \"closedat\"",
        ),
        (
            &rules,
            "33:14: qualification.min_amount: invalid type: string \"lots\", expected i64",
        ),
        (
            &rules,
            "40:95: tiers.partners.part_5: tier \"platinum\" is not in tiers.order",
        ),
        (
            &rules,
            "59:1: protection.grace_days: unknown field `grace_days`",
        ),
    ];
    for (file, line) in want {
        let located = format!("{}:{line}", file.display());
        assert!(err.contains(&located), "missing {located:?} in:\n{err}");
    }
    let located = err
        .lines()
        .filter(|l| l.starts_with(&*fixtures.to_string_lossy()))
        .count();
    assert_eq!(
        located, 6,
        "exactly the six mistakes, nothing they cause:\n{err}"
    );
    assert!(!err.contains("(syntax)"), "{err}");
}

/// Partners' names come from the PRM's partnerships (read by the companies flow): reasons, `show`
/// and `explain --json` name them, and a loser's reason states the comparison that decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_name_partners_from_the_prm_and_explain_speaks_json() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    let maps = mappings_dir(&w, prmsync::rules::BUILTIN.1);
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/mappings/partnerstack-hubspot-companies.toml"
        ),
        maps.join("partnerstack-hubspot-companies.toml"),
    )
    .expect("copy companies mapping");
    config.daemon.mappings_dir = Some(maps);
    for (key, name, site) in [
        ("part_1", "Northwind Partners", "northwind.example"),
        ("part_2", "Blue Harbor", "blueharbor.example"),
    ] {
        let partnership =
            json!({"key": key, "status": "active", "company": {"name": name, "website": site}});
        if let Value::Object(p) = partnership {
            w.ps.upsert_item("partnerships", p);
        }
    }
    w.ps.upsert_deal(deal("reg_a", "part_2", "peter@initech.example"));
    w.ps.upsert_deal(deal("reg_b", "part_1", "pg@initech.example"));
    let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    daemon.run_until_idle().await.expect("sync");
    daemon.shutdown().await;

    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("approved"));
    let reason = prm_decision(&w, "reg_b")["registration_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("duplicate: reg_a (Blue Harbor) holds the account, protected until ")
            && reason.contains("reg_a qualified first, at ")
            && reason.contains("(silver tier); this one qualified at "),
        "{reason}"
    );
    let state = w.state_path();
    let state = state.to_str().expect("utf-8");
    let out = prmsync(&[
        "registrations",
        "explain",
        "reg_b",
        "--json",
        "--state",
        state,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let explained: Value = serde_json::from_slice(&out.stdout).expect("explain --json is JSON");
    assert_eq!(explained["status"], "duplicate");
    assert_eq!(explained["partner_name"], "Northwind Partners");
    assert_eq!(explained["duplicate_of"], "reg_a");
    assert_eq!(explained["reason"], reason.as_str());
    assert!(
        explained["trace"]
            .as_array()
            .is_some_and(|t| t.iter().any(|s| s["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("behind reg_a: reg_a qualified first")))),
        "{explained}"
    );
    let out = prmsync(&["registrations", "show", "reg_a", "--state", state]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Blue Harbor (part_2)"), "{text}");
    let out = prmsync(&["registrations", "explain", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("the PRM deal's key"), "{help}");
}

/// `prmsync plan` shows which registrations a rules file on disk would move, before the daemon
/// applies it; a comment-only edit keeps the version and moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_registrations_a_rules_change_would_move() {
    let w = World::seeded(0).await;
    let mut config = w.config();
    let maps = mappings_dir(&w, prmsync::rules::BUILTIN.1);
    config.daemon.mappings_dir = Some(maps.clone());
    w.ps.upsert_deal(deal("reg_a", "part_2", "peter@initech.example"));
    w.ps.upsert_deal(deal("reg_b", "part_1", "pg@initech.example"));
    let daemon = prmsync::app::Daemon::start(config, prmsync::engine::system_clock())
        .await
        .expect("daemon starts");
    daemon.run_until_idle().await.expect("sync");
    daemon.shutdown().await;
    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("approved"));

    let config = w.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {:?}\nmappings_dir = {:?}\n\n\
             [partnerstack]\nbase_url = {:?}\napi_key = {{ env = \"IT_PS_KEY\" }}\n\n\
             [hubspot]\nbase_url = {:?}\naccess_token = {{ env = \"IT_HS_TOKEN\" }}\n",
            w.state_path(),
            maps,
            w.ps_server.url("/api/v2").as_str(),
            w.hs_server.url("").as_str(),
        ),
    )
    .expect("write config");
    let plan = |config: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_prmsync"))
                .args(["plan", "--config"])
                .arg(&config)
                .env("IT_PS_KEY", crate::harness::PS_KEY)
                .env("IT_HS_TOKEN", crate::harness::HS_TOKEN)
                .output()
                .expect("run prmsync plan")
        })
    };
    // A comment changes nothing.
    let commented = prmsync::rules::BUILTIN
        .1
        .replace("# best first", "# best tier first, always");
    std::fs::write(maps.join(prmsync::rules::RULES_FILE), &commented).expect("write rules");
    let out = plan(config.clone()).await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = prmsync::rules::Rules::builtin().expect("builtin").version;
    assert!(
        text.contains(&format!(
            "rules of engagement (version {version}): no registration would change"
        )),
        "{text}"
    );
    // Reserving the customer for the direct team, allowed to revoke: both would move.
    let reserving = prmsync::rules::BUILTIN
        .1
        .replace(
            r#""bigbank.example","#,
            r#""bigbank.example", "initech.example","#,
        )
        .replace(
            "rules_change_may_revoke = false",
            "rules_change_may_revoke = true",
        );
    std::fs::write(maps.join(prmsync::rules::RULES_FILE), &reserving).expect("write rules");
    let out = plan(config).await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 registration(s) would change"), "{text}");
    for (id, before) in [("reg_a", "approved"), ("reg_b", "duplicate")] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(id))
            .unwrap_or_default();
        assert!(
            line.contains(&format!("{before:<10} -> rejected"))
                && line.contains("initech.example is reserved for direct sales"),
            "{id}: {line:?} in\n{text}"
        );
    }
    // Nothing was applied.
    assert_eq!(status_of(&w, "reg_a").as_deref(), Some("approved"));
}
