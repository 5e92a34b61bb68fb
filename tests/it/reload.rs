//! Reloads swap mappings and rules together or neither, and the shutdown budget fits the unit.

use prmsync::app::Daemon;
use prmsync::engine::system_clock;

use crate::harness::World;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[tokio::test]
async fn a_reload_with_broken_rules_keeps_the_old_mappings_too() {
    let w = World::seeded(0).await;
    let dir = w.dir.path().join("mappings");
    std::fs::create_dir(&dir).unwrap();
    for f in [
        "partnerstack-hubspot-deals.toml",
        "rules-of-engagement.toml",
    ] {
        std::fs::copy(repo(&format!("mappings/{f}")), dir.join(f)).unwrap();
    }
    let mut config = w.config();
    config.daemon.mappings_dir = Some(dir.clone());
    let d = Daemon::start(config, system_clock()).await.unwrap();
    let mappings_v1 = d.reload_status().versions;
    let rules_v1 = d.engine.rules().expect("rules loaded").version.clone();

    // A valid mapping edit together with a broken rules file: neither is swapped in.
    let deals = dir.join("partnerstack-hubspot-deals.toml");
    let text = std::fs::read_to_string(&deals).unwrap();
    std::fs::write(&deals, format!("{text}\n# edited\n")).unwrap();
    let rules = dir.join("rules-of-engagement.toml");
    let good_rules = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, "decision_order = [\n").unwrap();
    d.reload();
    let status = d.reload_status();
    assert_eq!((status.succeeded, status.failed), (0, 1));
    assert_eq!(
        status.versions, mappings_v1,
        "the old mappings stay in force"
    );
    assert_eq!(d.engine.rules().unwrap().version, rules_v1);
    let why = status.last_error.expect("the refusal says why");
    assert!(why.contains("rules"), "{why}");

    // Rules fixed: both new versions go in together.
    std::fs::write(&rules, format!("{good_rules}\n# edited\n")).unwrap();
    d.reload();
    let status = d.reload_status();
    assert_eq!((status.succeeded, status.failed), (1, 1));
    assert_ne!(status.versions, mappings_v1);
    // The rules' version hashes what decides (not comments), so the same rules keep theirs.
    assert_eq!(d.engine.rules().unwrap().version, rules_v1);
    d.shutdown().await;
}

/// The whole shutdown shares one budget (`daemon.shutdown_timeout_secs`), which must fit inside
/// the unit's `TimeoutStopSec` with room for the process to exit.
#[test]
fn the_shutdown_budget_fits_inside_timeout_stop_sec() {
    let unit = std::fs::read_to_string(repo("deploy/prmsync.service")).unwrap();
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().strip_suffix('s'))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("TimeoutStopSec=Ns in the unit");
    let budget = prmsync::config::defaults::SHUTDOWN_TIMEOUT_SECS;
    assert!(
        budget + 5 <= stop,
        "shutdown budget {budget}s + 5s to exit must fit in TimeoutStopSec={stop}s"
    );
    let example = std::fs::read_to_string(repo("deploy/prmsync.example.toml")).unwrap();
    assert!(example.contains(&format!("shutdown_timeout_secs = {budget}")));
}
