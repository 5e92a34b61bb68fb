//! Mapping files end to end: every deliberately broken fixture gives its own positioned error,
//! `prmsync check` prints them all through the real binary, and every shipped mapping compiles and
//! passes its examples.

use std::path::{Path, PathBuf};
use std::process::Command;

use prmsync::app::Daemon;
use prmsync::engine::system_clock;
use prmsync::mapping::{MappingSet, run_examples};
use prmsync::sim::seed;
use serde_json::json;

use crate::harness::World;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings-broken")
}

/// (file, line, column, key, a part of the message, a part of the hint)
const BROKEN: &[(&str, usize, usize, &str, &str, &str)] = &[
    (
        "01-syntax-error.toml",
        14,
        23,
        "(syntax)",
        "invalid basic string",
        "",
    ),
    (
        "02-unknown-key.toml",
        14,
        1,
        "field[0].sorce",
        "unknown field `sorce`",
        "docs/mappings.md",
    ),
    (
        "03-unknown-system.toml",
        9,
        10,
        "target.system",
        "unknown system \"hubspott\"",
        "known systems",
    ),
    (
        "04-unknown-target-field.toml",
        15,
        10,
        "field[0].target",
        "hubspot/deals has no field \"dealnme\"",
        "did you mean \"dealname\"?",
    ),
    (
        "05-unknown-transform.toml",
        16,
        15,
        "field[0].transforms[0]",
        "unknown transform \"trimm\"",
        "did you mean \"trim\"?",
    ),
    (
        "06-default-type-mismatch.toml",
        17,
        11,
        "field[0].default",
        "\"many\" is not a whole number (the field's type is int)",
        "",
    ),
    (
        "07-const-type-mismatch.toml",
        16,
        9,
        "field[0].const",
        "\"next week\" is not a date",
        "",
    ),
    (
        "08-duplicate-target.toml",
        19,
        10,
        "field[1].target",
        "target field \"dealname\" is mapped twice",
        "one [[field]] only",
    ),
    (
        "09-both-without-owner.toml",
        17,
        13,
        "field[0].direction",
        "needs an owner",
        "owner = \"source\"",
    ),
    (
        "10-enum-not-covered.toml",
        19,
        10,
        "field[0].values",
        "does not cover the dealstage options qualifiedtobuy, presentationscheduled, decisionmakerboughtin, contractsent",
        "unmapped = \"pass\"",
    ),
    (
        "11-bad-timezone.toml",
        17,
        12,
        "field[0].timezone",
        "unknown time zone \"Europe/Berln\"",
        "IANA",
    ),
    (
        "12-template-to-source.toml",
        17,
        15,
        "field[0].transforms[0]",
        "cannot be reversed",
        "to_target",
    ),
    (
        "13-enum-bad-option.toml",
        17,
        10,
        "field[0].values.won",
        "\"closed_won\" is not an option of dealstage",
        "did you mean \"closedwon\"?",
    ),
    (
        "14-missing-external-id.toml",
        8,
        1,
        "target.external_id",
        "is required",
        "upserts",
    ),
    (
        "15-unknown-lookup-flow.toml",
        16,
        15,
        "field[0].transforms[0]",
        "lookup names flow \"partner-organisations\"",
        "flows in this set",
    ),
    (
        "16-bad-delete-policy.toml",
        14,
        10,
        "delete.policy",
        "needs a field and a value",
        "prm_deleted",
    ),
    (
        "17-bad-date-pattern.toml",
        18,
        15,
        "field[0].transforms[0]",
        "\"%d.%m.%Q\" is not a usable date pattern",
        "strftime",
    ),
    (
        "18-filter-two-tests.toml",
        13,
        1,
        "filter[0]",
        "exactly one of in, not_in, equals or present",
        "",
    ),
    (
        "19-salesforce-field-case.toml",
        15,
        10,
        "field[0].target",
        "salesforce/Opportunity has no field \"Stagename\"",
        "did you mean \"StageName\"?",
    ),
    (
        "20-bad-match-rule.toml",
        19,
        13,
        "match.rule[0].normalise",
        "unknown normalisation \"domains\"",
        "exact, lower, email or domain",
    ),
];

#[test]
fn each_broken_fixture_gives_its_own_positioned_error() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let listed: Vec<String> = BROKEN.iter().map(|b| b.0.to_owned()).collect();
    assert_eq!(on_disk, listed, "every fixture has a row in the table");
    for &(file, line, column, key, message, hint) in BROKEN {
        let text = std::fs::read_to_string(fixtures().join(file)).expect("read fixture");
        let errors = MappingSet::compile(&[(file.to_owned(), text)])
            .expect_err(file)
            .0;
        assert_eq!(errors.len(), 1, "{file}: {errors:?}");
        let e = &errors[0];
        assert_eq!(
            (e.file.as_str(), e.line, e.column),
            (file, line, column),
            "{e}"
        );
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(message), "{file}: {e}");
        assert!(
            e.hint.as_deref().unwrap_or("").contains(hint),
            "{file}: {e}"
        );
    }
}

#[test]
fn check_prints_every_broken_fixture_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {:?}\nmappings_dir = {:?}\n\n\
             [partnerstack]\nbase_url = \"http://127.0.0.1:9/api/v2\"\napi_key = {{ env = \"IT_PS_KEY\" }}\n\n\
             [hubspot]\nbase_url = \"http://127.0.0.1:9\"\naccess_token = {{ env = \"IT_HS_TOKEN\" }}\n",
            dir.path().join("state.db"),
            fixtures(),
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .arg("check")
        .arg(&config)
        .env("IT_PS_KEY", "k")
        .env("IT_HS_TOKEN", "t")
        .output()
        .expect("run prmsync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for &(file, line, column, key, ..) in BROKEN {
        let at = format!(
            "{}:{line}:{column}: {key}:",
            fixtures().join(file).display()
        );
        assert!(stderr.contains(&at), "missing {at} in:\n{stderr}");
    }
    // One line per problem, then the count.
    assert_eq!(stderr.lines().count(), BROKEN.len() + 1, "{stderr}");
    assert!(
        stderr.ends_with(&format!("{} problem(s)\n", BROKEN.len())),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state.db").exists(),
        "check writes nothing"
    );

    // plan refuses the same set the same way, before it reads anything.
    let out = Command::new(env!("CARGO_BIN_EXE_prmsync"))
        .args(["plan", "--config"])
        .arg(&config)
        .env("IT_PS_KEY", "k")
        .env("IT_HS_TOKEN", "t")
        .output()
        .expect("run prmsync plan");
    let plan_err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{plan_err}");
    let check_errors: String = stderr
        .lines()
        .take(BROKEN.len())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        plan_err, check_errors,
        "plan reports the mapping errors as check does"
    );
    assert!(!dir.path().join("state.db").exists(), "plan writes nothing");
}

#[test]
fn every_shipped_mapping_compiles_and_passes_its_examples() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    // Every file but the rules of engagement, which live in the same folder.
    let set = MappingSet::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.mappings.len() >= 11, "{} mappings", set.mappings.len());
    let mut examples = 0;
    for m in &set.mappings {
        assert!(
            m.examples.len() >= 2,
            "{} needs examples of its own",
            m.file
        );
        examples += m.examples.len();
        let failures = run_examples(m);
        assert!(failures.is_empty(), "{failures:#?}");
    }
    assert!(examples >= 36);
    let builtin = MappingSet::builtin().expect("built-in set compiles");
    assert!(builtin.mappings.iter().all(|m| run_examples(m).is_empty()));
}

const DEALS_V1: &str = include_str!("../../mappings/partnerstack-hubspot-deals.toml");

/// Written rows per mapping version, from the ledger in the state file.
fn written_by_version(state: &Path) -> Vec<(String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open state read-only");
    let mut stmt = conn
        .prepare(
            "SELECT mapping_version, count(*) FROM ledger
             WHERE action IN ('created', 'updated') GROUP BY mapping_version ORDER BY 2 DESC",
        )
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn dealname(world: &World, key: &str) -> String {
    world
        .hs
        .find("deals", "prm_deal_id", key)
        .and_then(|d| {
            d.get("dealname")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_the_old_mapping_and_a_fixed_one_applies_on_the_next_pass() {
    let world = World::seeded(10).await;
    let dir = world.dir.path().join("mappings");
    std::fs::create_dir(&dir).expect("mappings dir");
    let file = dir.join("deals.toml");
    std::fs::write(&file, DEALS_V1).expect("write v1");
    let mut config = world.config();
    config.daemon.mappings_dir = Some(dir.clone());
    let daemon = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    daemon.run_until_idle().await.expect("first sync");
    assert_eq!(world.hs.objects("deals").len(), 10);
    let v1 = daemon.reload_status().versions;

    // Mid-sync: five more registrations arrive and an admin saves a broken mapping.
    for d in seed::deals(15, 5).into_iter().skip(10) {
        world.ps.upsert_deal(d);
    }
    let broken = DEALS_V1.replacen("source = \"amount\"", "sorce = \"amount\"", 1);
    let line = broken
        .lines()
        .position(|l| l.starts_with("sorce"))
        .expect("typo line")
        + 1;
    std::fs::write(&file, broken).expect("write broken");
    daemon.reload();
    let status = daemon.reload_status();
    assert_eq!((status.succeeded, status.failed), (0, 1));
    let why = status.last_error.expect("the refusal says why");
    assert!(why.contains(&format!("deals.toml:{line}:1")), "{why}");
    assert!(why.contains("unknown field `sorce`"), "{why}");
    assert_eq!(status.versions, v1, "the old mappings stay in force");

    daemon
        .run_until_idle()
        .await
        .expect("sync with the old mapping");
    assert_eq!(world.hs.objects("deals").len(), 15, "nothing is lost");
    assert!(dealname(&world, "deal_13").ends_with("(partner registration)"));

    // The admin fixes it with a new dealname template; the next pass uses it.
    std::fs::write(
        &file,
        DEALS_V1.replace("(partner registration)", "(registered by a partner)"),
    )
    .expect("write v2");
    daemon.reload();
    let status = daemon.reload_status();
    assert_eq!((status.succeeded, status.failed), (1, 1));
    assert_ne!(status.versions, v1);
    let mut deal = world.ps.deal("deal_3").expect("deal_3");
    deal.insert("account_name".into(), json!("Renamed Co"));
    world.ps.upsert_deal(deal);
    daemon
        .run_until_idle()
        .await
        .expect("sync with the new mapping");
    assert_eq!(
        dealname(&world, "deal_3"),
        "Renamed Co (registered by a partner)"
    );
    assert!(dealname(&world, "deal_4").ends_with("(partner registration)"));

    // The ledger says which mapping version wrote what.
    let v1_hash = v1[0].split_once('@').expect("flow@version").1.to_owned();
    let v2_hash = status.versions[0]
        .split_once('@')
        .expect("flow@version")
        .1
        .to_owned();
    assert_eq!(
        written_by_version(&world.state_path()),
        vec![(v1_hash, 15), (v2_hash, 1)]
    );
    daemon.shutdown().await;
}

/// Every row of every table in the state file, read read-only: the state's logical content.
fn state_rows(state: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open state read-only");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("table names");
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("select");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("rows");
        for row in rows {
            out.push(format!("{t}: {:?}", row.expect("row")));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_counts_what_would_happen_and_writes_nothing() {
    let world = World::seeded(12).await;
    let daemon = world.daemon().await;
    daemon.run_until_idle().await.expect("first sync");
    daemon.shutdown().await;
    assert_eq!(world.hs.objects("deals").len(), 12);

    // Since the sync: 3 new registrations, 2 edited, a new one with a stage the mapping does not
    // know, and an existing one that lost its partner (both refused by the mapping).
    for d in seed::deals(15, 5).into_iter().skip(12) {
        world.ps.upsert_deal(d);
    }
    for key in ["deal_1", "deal_2"] {
        let mut d = world.ps.deal(key).expect("deal");
        d.insert("amount".into(), json!(4_200_000));
        world.ps.upsert_deal(d);
    }
    let mut odd = world.ps.deal("deal_5").expect("deal_5");
    odd.insert("key".into(), json!("deal_99"));
    odd.insert("stage".into(), json!("pending_legal"));
    world.ps.upsert_deal(odd);
    let mut orphan = world.ps.deal("deal_6").expect("deal_6");
    orphan.remove("partner_key");
    world.ps.upsert_deal(orphan);

    let config = world.dir.path().join("prmsync.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {:?}\n\n\
             [partnerstack]\nbase_url = {:?}\napi_key = {{ env = \"IT_PS_KEY\" }}\n\n\
             [hubspot]\nbase_url = {:?}\naccess_token = {{ env = \"IT_HS_TOKEN\" }}\n",
            world.state_path(),
            world.ps_server.url("/api/v2").as_str(),
            world.hs_server.url("").as_str(),
        ),
    )
    .expect("write config");
    let hs_before = world.hs.stats();
    let ps_before = world.ps.stats();
    let rows_before = state_rows(&world.state_path());
    assert!(
        rows_before.len() > 12,
        "the first sync left links and a ledger"
    );

    // The simulators run on this runtime, so the blocking child process gets its own thread.
    let cfg = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prmsync"))
            .args(["plan", "--json", "--flow", "deal-registration", "--config"])
            .arg(&cfg)
            .env("IT_PS_KEY", crate::harness::PS_KEY)
            .env("IT_HS_TOKEN", crate::harness::HS_TOKEN)
            .output()
    })
    .await
    .expect("join")
    .expect("run prmsync plan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let p = &plans[0];
    assert_eq!(p["flow"], "deal-registration");
    let count = |k: &str| p[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(count("read"), 16);
    assert_eq!(count("would_create"), 3);
    assert_eq!(count("would_update"), 2);
    assert_eq!(count("would_fail_mapping"), 2);
    assert_eq!(count("skip_unchanged"), 9);
    let failing: Vec<&str> = p["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["outcome"] == "would_fail_mapping")
        .map(|s| s["detail"].as_str().unwrap_or(""))
        .collect();
    assert!(
        failing.iter().any(|d| d.contains("pending_legal")),
        "{failing:?}"
    );

    let hs_after = world.hs.stats();
    assert_eq!(
        (hs_after.batch_upserts, hs_after.created, hs_after.updated),
        (
            hs_before.batch_upserts,
            hs_before.created,
            hs_before.updated
        ),
        "no HubSpot write"
    );
    assert_eq!(
        world.ps.stats().patches,
        ps_before.patches,
        "no PartnerStack write"
    );
    assert!(
        state_rows(&world.state_path()) == rows_before,
        "the state file is untouched"
    );
    assert_eq!(world.hs.objects("deals").len(), 12);
}

/// A hubspot/deals flow with `extra` TOML (filter, delete policy) and one field.
fn flow(extra: &str) -> prmsync::mapping::Mapping {
    let text = format!(
        "name = \"f\"\n[source]\nsystem = \"partnerstack\"\nobject = \"deals\"\n\
         [target]\nsystem = \"hubspot\"\nobject = \"deals\"\nexternal_id = \"prm_deal_id\"\n\
         {extra}\n[[field]]\nsource = \"account_name\"\ntarget = \"dealname\"\n"
    );
    let set = MappingSet::compile(&[("f.toml".into(), text)]).unwrap_or_else(|e| panic!("{e}"));
    (*set.mappings[0]).clone()
}

#[test]
fn the_planner_applies_filters_and_delete_policies() {
    use prmsync::engine::plan::{self, action};
    use prmsync::model::Record;
    use prmsync::store::Link;

    let linked = Link {
        target_id: Some("900".into()),
        target_state: prmsync::store::StateDigest::of(
            &json!({"dealname": "Acme"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ),
        source_state: prmsync::store::StateDigest::default(),
        ..Link::default()
    };
    let rec = |stage: &str| Record {
        id: "deal_1".into(),
        modified_ms: 1,
        fields: json!({"account_name": "Acme 2", "stage": stage})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let filtered = flow("[[filter]]\nfield = \"stage\"\nin = [\"submitted\", \"approved\"]");
    let d = plan::forward(&filtered, &rec("draft"), Some(&linked));
    assert_eq!(d.ledger.map(|l| l.action), Some(action::FILTERED));
    assert!(d.write.is_none() && d.dead_letter.is_none());
    let d = plan::forward(&filtered, &rec("approved"), Some(&linked));
    assert_eq!(
        d.write.map(|w| w.payload),
        json!({"dealname": "Acme 2"}).as_object().cloned()
    );

    // (delete section, linked?, action, a write's payload, dead-lettered?)
    let cases = [
        ("", true, action::DELETE_IGNORED, None, false),
        (
            "[delete]\npolicy = \"ignore\"",
            true,
            action::DELETE_IGNORED,
            None,
            false,
        ),
        (
            "[delete]\npolicy = \"flag\"\nfield = \"prm_registration_status\"\nvalue = \"deleted\"",
            true,
            action::QUEUED,
            Some(json!({"prm_registration_status": "deleted"})),
            false,
        ),
        (
            "[delete]\npolicy = \"flag\"\nfield = \"prm_registration_status\"\nvalue = \"deleted\"",
            false,
            action::DELETE_IGNORED,
            None,
            false,
        ),
        (
            "[delete]\npolicy = \"propagate\"",
            true,
            action::QUEUED,
            Some(json!({})),
            false,
        ),
    ];
    for (section, is_linked, want_action, want_payload, want_dead) in cases {
        let m = flow(section);
        let d = plan::delete(&m, "deal_1", is_linked.then_some(&linked));
        assert_eq!(d.ledger.map(|l| l.action), Some(want_action), "{section}");
        assert_eq!(
            d.write
                .as_ref()
                .map(|w| serde_json::Value::Object(w.payload.clone())),
            want_payload,
            "{section}"
        );
        if let Some(w) = &d.write {
            assert_eq!(w.target_id.as_deref(), Some("900"));
            assert!(w.state_after.holds("dealname", &json!("Acme")));
        }
        assert_eq!(d.dead_letter.is_some(), want_dead, "{section}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_signals_reach_the_running_loop_between_passes() {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::harness::wait_until;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    let world = World::seeded(10).await;
    let dir = world.dir.path().join("mappings");
    std::fs::create_dir(&dir).expect("mappings dir");
    let file = dir.join("deals.toml");
    std::fs::write(&file, DEALS_V1).expect("write v1");
    let mut config = world.config();
    config.daemon.mappings_dir = Some(dir.clone());
    config.daemon.poll_interval = Duration::from_millis(50);
    let daemon = Daemon::start(config, system_clock())
        .await
        .expect("daemon starts");
    let shutdown = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    let wait = Duration::from_secs(20);

    let script = async {
        wait_until(wait, "the first 10 deals", || async {
            world.hs.objects("deals").len() == 10
        })
        .await;
        // While the loop keeps syncing: new registrations, a broken file, SIGHUP.
        for d in seed::deals(14, 5).into_iter().skip(10) {
            world.ps.upsert_deal(d);
        }
        std::fs::write(&file, "name = \"deal-registration\"\n[source\n").expect("break");
        reload.notify_one();
        wait_until(wait, "the refused reload", || async {
            daemon.reload_status().failed == 1
        })
        .await;
        wait_until(wait, "the new deals under the old mapping", || async {
            world.hs.objects("deals").len() == 14
        })
        .await;
        assert!(dealname(&world, "deal_12").ends_with("(partner registration)"));
        // Fixed, with a new template; SIGHUP again; a partner edit shows the new mapping.
        std::fs::write(
            &file,
            DEALS_V1.replace("(partner registration)", "(via partner)"),
        )
        .expect("fix");
        reload.notify_one();
        wait_until(wait, "the accepted reload", || async {
            daemon.reload_status().succeeded == 1
        })
        .await;
        let mut deal = world.ps.deal("deal_2").expect("deal_2");
        deal.insert("account_name".into(), json!("Edited Co"));
        world.ps.upsert_deal(deal);
        wait_until(wait, "the edit under the new mapping", || async {
            dealname(&world, "deal_2") == "Edited Co (via partner)"
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(daemon.run(shutdown.clone(), reload.clone()), script);
    let status = daemon.reload_status();
    assert_eq!((status.succeeded, status.failed), (1, 1));
    assert!(
        status
            .last_error
            .is_some_and(|e| e.contains("deals.toml:2:")),
        "the refusal names the file and line"
    );
    assert_eq!(world.hs.objects("deals").len(), 14, "nothing lost");
    daemon.shutdown().await;
}

/// The complete mapping file that docs/mappings.md shows (deletes both ways, an association, match
/// rules, a field and an example) compiles beside the shipped files it names, in place of the
/// shipped flow of the same name, and passes its example: the docs cannot drift from the compiler.
#[test]
fn the_complete_mapping_in_the_docs_compiles_and_passes_its_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/mappings.md")).expect("docs/mappings.md");
    let blocks: Vec<String> = docs
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next().map(str::to_owned))
        .collect();
    let full: Vec<&String> = blocks.iter().filter(|b| b.contains("[source]")).collect();
    assert_eq!(
        full.len(),
        1,
        "docs/mappings.md shows one complete mapping file"
    );
    let mut files: Vec<(String, String)> = std::fs::read_dir(root.join("mappings"))
        .expect("mappings/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".toml")
                && name != "rules-of-engagement.toml"
                && name != "partnerstack-hubspot-deals.toml"
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("shipped mapping");
            (p.display().to_string(), text)
        })
        .collect();
    files.push(("docs/mappings.md".into(), full[0].clone()));
    let set = MappingSet::compile(&files).unwrap_or_else(|e| panic!("{e}"));
    let m = set
        .mappings
        .iter()
        .find(|m| m.file == "docs/mappings.md")
        .expect("the docs' flow compiled");
    assert_eq!(m.name, "deal-registration");
    assert!(!m.examples.is_empty(), "the docs' file has an example");
    let failures = run_examples(m);
    assert!(failures.is_empty(), "{failures:#?}");
    // The association-type snippet is quoted from the shipped task flow, which the shipped and
    // association tests run end to end (`[on_convert]`'s snippet is run by the conversion test).
    let tasks = std::fs::read_to_string(root.join("mappings/partnerstack-hubspot-tasks.toml"))
        .expect("shipped task flow");
    let quoted: Vec<&String> = blocks
        .iter()
        .filter(|b| b.starts_with("[[association]]") && b.contains("type_id"))
        .collect();
    assert_eq!(quoted.len(), 1, "one association-type snippet");
    assert!(
        tasks.contains(quoted[0].as_str()),
        "docs/mappings.md quotes the shipped task flow's associations as they are:\n{}",
        quoted[0]
    );
}
