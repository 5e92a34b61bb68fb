//! Compatibility: state files written by earlier versions open, migrate and keep their data.

use prmsync::store::Store;

/// `tests/fixtures/state-v1.db` was written by the first release's demo (6 deals synced).
#[tokio::test]
async fn a_v1_state_file_migrates_and_keeps_its_links_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1.db"),
        &path,
    )
    .unwrap();
    let store = Store::open(&path).expect("an old state file opens and migrates");
    let status = store.status(0).await.unwrap();
    assert!(status.schema_version >= 1);
    assert_eq!(status.links, 6);
    assert_eq!(status.cursors.len(), 2);
    assert_eq!(status.dead_letters, 0);
    let links = store
        .links_by_source("deal-registration".into(), vec!["deal_1".into()])
        .await
        .unwrap();
    assert!(links[0].1.target_id.is_some(), "links keep their CRM ids");
}
