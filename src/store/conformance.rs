//! The store conformance suite: each scenario runs against SQLite and, when
//! `PRMSYNC_TEST_POSTGRES` names a server, against PostgreSQL (a fresh schema per test).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::model::{AssociationType, Record};

/// The environment variable naming the PostgreSQL server the suite may use.
pub const POSTGRES_ENV: &str = "PRMSYNC_TEST_POSTGRES";

/// A store to run a scenario on, and what keeps it alive (a temp dir for SQLite).
struct Backing {
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite() -> Backing {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("s.db")).expect("open SQLite state");
    Backing {
        store,
        _dir: Some(dir),
    }
}

/// A PostgreSQL store in a fresh schema, or `None` (with the reason printed) when the suite has
/// no server.
fn postgres(test: &str) -> Option<Backing> {
    let Ok(url) = std::env::var(POSTGRES_ENV) else {
        println!(
            "skipped {test} on PostgreSQL: {POSTGRES_ENV} is not set (see README, Development)"
        );
        return None;
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        test.chars().take(30).collect::<String>()
    );
    let store = Store::open_postgres(&pg::PgTarget { url, schema }).expect("open PostgreSQL state");
    Some(Backing { store, _dir: None })
}

/// One `#[tokio::test]` per backend for each scenario.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() {
                let b = super::sqlite();
                super::$name(&b.store).await;
                super::counts_agree(&b.store).await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() {
                let Some(b) = super::postgres(stringify!($name)) else { return };
                super::$name(&b.store).await;
                super::counts_agree(&b.store).await;
            })*
        }
    };
}

conformance!(
    staging_is_idempotent_and_moves_the_cursor_with_the_changes,
    webhook_stagings_commit_and_each_counts_its_new_changes,
    a_plan_commit_queues_writes_marks_inbox_and_records_versions,
    a_completion_for_a_replaced_write_keeps_the_newer_one_queued,
    a_dead_write_moves_to_the_dead_letters_and_replays,
    retries_count_only_real_failures_and_holds_resume_the_outbox,
    backfill_drains_after_live_writes,
    link_marks_tombstone_relink_retarget_and_forget,
    links_are_found_by_target_id,
    quarantine_shows_on_the_link,
    credentials_save_load_list_and_delete_by_prefix,
    resyncs_are_requested_paged_and_finished,
    associations_wait_for_both_records_then_complete,
    erase_requests_open_fail_and_report,
    an_erasure_purges_the_person_from_every_table_and_stays_suppressed,
    poll_rejects_are_dead_lettered_once,
    pruning_keeps_pending_inbox_rows,
    credit_evidence_is_kept_by_customer_and_re_decides_its_group,
    credit_reasons_are_kept_and_a_new_reason_alone_sends_nothing,
    schema_drift_keeps_its_since_and_skips_forget_the_field,
);

/// After every scenario: the counts `status` reads (kept by triggers on both backends) equal a
/// full recount of the tables. Ledger totals count since the state was created, so after
/// retention they may exceed the lines still kept, never fall below them.
async fn counts_agree(store: &Store) {
    let (kept, recounted) = store.counts_kept_and_recounted().await.expect("counts");
    let gauges = |c: &Counts| {
        (
            c.links,
            c.inbox_pending,
            c.outbox_depth,
            c.outbox_retrying,
            c.dead_letters,
        )
    };
    assert_eq!(gauges(&kept), gauges(&recounted), "kept gauges vs recount");
    assert_eq!(
        kept.registrations, recounted.registrations,
        "registrations by status"
    );
    for line in &recounted.ledger {
        let total = kept
            .ledger
            .iter()
            .find(|k| {
                (&k.flow, &k.direction, &k.action) == (&line.flow, &line.direction, &line.action)
            })
            .map_or(0, |k| k.count);
        assert!(
            total >= line.count,
            "ledger total {total} below the kept lines of {line:?}"
        );
    }
}

fn deals() -> ObjectRef {
    ObjectRef {
        system: SystemKind::PartnerStack,
        object: "deals".into(),
    }
}

fn change(id: &str, ms: i64) -> Change {
    Change::versioned(
        deals(),
        Record {
            id: id.into(),
            modified_ms: ms,
            fields: json!({"key": id, "ms": ms})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        },
    )
}

fn write(flow: &str, source_id: &str, value: &str) -> PlannedWrite {
    let values = json!({"amount": value})
        .as_object()
        .cloned()
        .unwrap_or_default();
    PlannedWrite {
        flow: flow.into(),
        direction: Direction::ToTarget,
        source_id: source_id.into(),
        target_id: None,
        system: SystemKind::HubSpot,
        object: "deals".into(),
        id_property: Some("prm_deal_id".into()),
        state_after: StateDigest::of(&values),
        payload: values,
        content_hash: format!("{value:0>16}"),
        mapping_version: "v1".into(),
        op: WriteOp::Upsert,
    }
}

fn plan(writes: Vec<PlannedWrite>) -> PlanCommit {
    PlanCommit {
        writes,
        ..PlanCommit::default()
    }
}

fn done(item: &OutboxItem, target_id: &str) -> WriteOutcome {
    WriteOutcome::Done {
        outbox_id: item.id,
        idempotency_key: item.write.idempotency_key(),
        target_id: target_id.into(),
        created: true,
        skipped: Vec::new(),
    }
}

fn dead_letter(origin: &'static str, record_id: &str, reason: &str) -> DeadLetter {
    DeadLetter {
        origin,
        flow: Some("f".into()),
        system: SystemKind::PartnerStack,
        object: "deals".into(),
        record_id: record_id.into(),
        payload: json!({"key": record_id}),
        reason: reason.into(),
        attempts: 0,
    }
}

async fn staging_is_idempotent_and_moves_the_cursor_with_the_changes(store: &Store) {
    let cursor = Cursor::at(2, "b");
    let n = store
        .stage_changes(
            vec![change("a", 1), change("b", 2)],
            Some((deals(), cursor.clone())),
            10,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let again = store
        .stage_changes(vec![change("b", 2)], None, 11)
        .await
        .unwrap();
    assert_eq!(again, 0, "the same record version is staged once");
    assert_eq!(store.cursor(deals()).await.unwrap(), Some(cursor));
    let pending = store.pending_inbox(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].change.record.id, "a", "oldest first");
    assert_eq!(
        pending[1].change,
        change("b", 2),
        "the change reads back whole"
    );
    assert_eq!(store.pending_inbox(1).await.unwrap().len(), 1, "limit");
    let moved = Cursor::at(3, "c");
    store
        .stage_changes(vec![], Some((deals(), moved.clone())), 12)
        .await
        .unwrap();
    assert_eq!(store.cursor(deals()).await.unwrap(), Some(moved));
}

async fn webhook_stagings_commit_and_each_counts_its_new_changes(store: &Store) {
    let (a, b, c) = tokio::join!(
        store.stage_changes(vec![change("a", 1), change("b", 1)], None, 5),
        store.stage_changes(vec![change("c", 1)], None, 5),
        store.stage_changes(vec![change("a", 1)], None, 5),
    );
    let total = a.unwrap() + b.unwrap() + c.unwrap();
    assert_eq!(total, 3, "a repeated version counts once across the group");
    assert_eq!(store.status(5).await.unwrap().inbox_pending, 3);
}

async fn a_plan_commit_queues_writes_marks_inbox_and_records_versions(store: &Store) {
    store
        .stage_changes(vec![change("d1", 5), change("d2", 5)], None, 1)
        .await
        .unwrap();
    let inbox = store.pending_inbox(10).await.unwrap();
    let commit = PlanCommit {
        inbox_ids: vec![inbox[0].id],
        writes: vec![write("f", "d1", "1")],
        ledger: vec![LedgerEntry {
            flow: "f".into(),
            direction: Direction::ToTarget,
            source_id: "d1".into(),
            target_id: None,
            action: "planned",
            content_hash: None,
            mapping_version: Some("v1".into()),
            detail: None,
        }],
        versions: vec![
            ("f".into(), "d1".into(), Direction::ToSource, 5),
            ("f".into(), "d1".into(), Direction::ToTarget, 7),
        ],
        ..PlanCommit::default()
    };
    store.commit_plan(commit, 2).await.unwrap();
    // An older version recorded later never moves the time back.
    store
        .commit_plan(
            PlanCommit {
                versions: vec![("f".into(), "d1".into(), Direction::ToSource, 3)],
                ..PlanCommit::default()
            },
            3,
        )
        .await
        .unwrap();
    let left = store.pending_inbox(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].change.record.id, "d2");
    let links = store
        .links_by_source("f".into(), vec!["d1".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(links.len(), 1, "absent ids have no link");
    assert_eq!(links[0].1.source_modified_ms, Some(5));
    assert_eq!(links[0].1.target_modified_ms, Some(7));
    let due = store.due_outbox(SystemKind::HubSpot, 2, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].write,
        write("f", "d1", "1"),
        "the write reads back whole"
    );
    assert_eq!(due[0].attempts, 0);
    assert!(
        store
            .due_outbox(SystemKind::PartnerStack, 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_outbox_due().await.unwrap(), Some(2));
    assert_eq!(
        store
            .next_outbox_due_for(SystemKind::HubSpot)
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        store
            .queued_to_target("f".into(), vec!["d1".into(), "d2".into()])
            .await
            .unwrap(),
        vec!["d1".to_owned()]
    );
    let status = store.status(2).await.unwrap();
    assert_eq!(
        (status.inbox_pending, status.outbox_depth, status.links),
        (1, 1, 1)
    );
    assert!(
        status
            .ledger
            .iter()
            .any(|c| c.flow == "f" && c.action == "planned" && c.count == 1),
        "{:?}",
        status.ledger
    );
    // A cancelled write leaves the outbox.
    store
        .commit_plan(
            PlanCommit {
                cancelled: vec![("f".into(), Direction::ToTarget, "d1".into())],
                ..PlanCommit::default()
            },
            4,
        )
        .await
        .unwrap();
    assert_eq!(store.next_outbox_due().await.unwrap(), None);
}

async fn a_completion_for_a_replaced_write_keeps_the_newer_one_queued(store: &Store) {
    store
        .commit_plan(plan(vec![write("f", "d1", "1")]), 0)
        .await
        .unwrap();
    let sent = store
        .due_outbox(SystemKind::HubSpot, 0, 10)
        .await
        .unwrap()
        .remove(0);
    // A newer version is planned while the first is in flight.
    store
        .commit_plan(plan(vec![write("f", "d1", "2")]), 0)
        .await
        .unwrap();
    store
        .complete_writes(vec![done(&sent, "9001")], 1)
        .await
        .unwrap();
    let left = store.due_outbox(SystemKind::HubSpot, 10, 10).await.unwrap();
    assert_eq!(left.len(), 1, "the newer write is still queued");
    assert_eq!(left[0].id, sent.id, "a replaced row keeps its id");
    assert_eq!(left[0].write.payload.get("amount"), Some(&json!("2")));
    store
        .complete_writes(vec![done(&left[0], "9001")], 2)
        .await
        .unwrap();
    let links = store
        .links_by_source("f".into(), vec!["d1".into()])
        .await
        .unwrap();
    assert!(links[0].1.target_state.holds("amount", &json!("2")));
    assert_eq!(links[0].1.target_id.as_deref(), Some("9001"));
    let status = store.status(2).await.unwrap();
    assert_eq!(status.outbox_depth, 0);
    assert!(
        status
            .ledger
            .iter()
            .any(|c| c.action == "created" && c.count == 1)
    );
}

async fn a_dead_write_moves_to_the_dead_letters_and_replays(store: &Store) {
    store
        .commit_plan(plan(vec![write("f", "d1", "1")]), 0)
        .await
        .unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 0, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .complete_writes(
            vec![WriteOutcome::Dead {
                outbox_id: item.id,
                idempotency_key: item.write.idempotency_key(),
                error: "rejected: dealstage is not an option".into(),
            }],
            1,
        )
        .await
        .unwrap();
    let s = store.status(1).await.unwrap();
    assert_eq!((s.outbox_depth, s.dead_letters), (0, 1));
    assert!(
        s.last_errors[0].contains("dealstage"),
        "{:?}",
        s.last_errors
    );
    let letters = store.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].origin, "outbox");
    assert_eq!(letters[0].attempts, 1);
    assert!(letters[0].replayable);
    assert_eq!(
        store.dead_letter(letters[0].id).await.unwrap(),
        Some(letters[0].clone())
    );
    let report = store
        .replay_dead_letters(dlq::Selection::Ids(vec![letters[0].id, 999]), 5)
        .await
        .unwrap();
    assert_eq!(report.requeued_writes, 1);
    assert_eq!(report.missing, vec![999]);
    let again = store.due_outbox(SystemKind::HubSpot, 5, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].write, item.write,
        "the replayed write is the one that failed"
    );
    assert_eq!(store.status(5).await.unwrap().dead_letters, 0);
}

async fn retries_count_only_real_failures_and_holds_resume_the_outbox(store: &Store) {
    store
        .commit_plan(plan(vec![write("f", "d1", "1")]), 0)
        .await
        .unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 0, 10)
        .await
        .unwrap()
        .remove(0);
    let retry = |counted: bool, at: i64| WriteOutcome::Retry {
        outbox_id: item.id,
        idempotency_key: item.write.idempotency_key(),
        next_attempt_ms: at,
        error: "503".into(),
        counted,
    };
    store
        .complete_writes(vec![retry(false, 100)], 1)
        .await
        .unwrap();
    assert!(
        store
            .due_outbox(SystemKind::HubSpot, 50, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let later = store
        .due_outbox(SystemKind::HubSpot, 100, 10)
        .await
        .unwrap();
    assert_eq!(later[0].attempts, 0, "back-pressure does not count");
    store
        .complete_writes(vec![retry(true, 1_000)], 2)
        .await
        .unwrap();
    let s = store.status(2).await.unwrap();
    assert_eq!(s.outbox_retrying, 1);
    store
        .set_connection_hold(SystemKind::HubSpot, "needs_reauth", "401".into(), 3_000)
        .await
        .unwrap();
    let s = store.status(5_000).await.unwrap();
    assert_eq!(s.holds.len(), 1);
    assert_eq!(
        (s.holds[0].state.as_str(), s.holds[0].since_secs),
        ("needs_reauth", 2)
    );
    store.resume_outbox(SystemKind::HubSpot, 10).await.unwrap();
    let due = store.due_outbox(SystemKind::HubSpot, 10, 10).await.unwrap();
    assert_eq!(due[0].attempts, 1);
    store
        .clear_connection_hold(SystemKind::HubSpot)
        .await
        .unwrap();
    assert!(store.status(5_000).await.unwrap().holds.is_empty());
}

async fn backfill_drains_after_live_writes(store: &Store) {
    store
        .commit_plan(
            PlanCommit {
                writes: vec![write("f", "old", "1")],
                backfill: vec![("f".into(), Direction::ToTarget, "old".into())],
                ..PlanCommit::default()
            },
            0,
        )
        .await
        .unwrap();
    store
        .commit_plan(plan(vec![write("f", "live", "1")]), 5)
        .await
        .unwrap();
    let due = store.due_outbox(SystemKind::HubSpot, 10, 10).await.unwrap();
    let order: Vec<&str> = due.iter().map(|i| i.write.source_id.as_str()).collect();
    assert_eq!(order, ["live", "old"]);
}

async fn link_marks_tombstone_relink_retarget_and_forget(store: &Store) {
    store
        .commit_plan(plan(vec![write("f", "d1", "1")]), 0)
        .await
        .unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 0, 1)
        .await
        .unwrap()
        .remove(0);
    store
        .complete_writes(vec![done(&item, "t1")], 1)
        .await
        .unwrap();
    let link = |store: &Store| {
        let store = store.clone();
        async move {
            store
                .links_by_source("f".into(), vec!["d1".into()])
                .await
                .unwrap()
                .remove(0)
                .1
        }
    };
    let mark = |m: LinkMark| PlanCommit {
        marks: vec![m],
        ..PlanCommit::default()
    };
    store
        .commit_plan(
            mark(LinkMark::Tombstone {
                flow: "f".into(),
                source_id: "d1".into(),
                reason: "target deleted".into(),
            }),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        link(store).await.tombstone.as_deref(),
        Some("target deleted")
    );
    store
        .commit_plan(
            mark(LinkMark::Relink {
                flow: "f".into(),
                source_id: "d1".into(),
            }),
            3,
        )
        .await
        .unwrap();
    assert_eq!(link(store).await.tombstone, None);
    store
        .commit_plan(
            mark(LinkMark::Retarget {
                flow: "f".into(),
                source_id: "d1".into(),
                target_id: "t2".into(),
            }),
            4,
        )
        .await
        .unwrap();
    let l = link(store).await;
    assert_eq!(l.target_id.as_deref(), Some("t2"));
    assert!(l.target_state.is_empty(), "no known state of the survivor");
    store
        .commit_plan(
            mark(LinkMark::ForgetTarget {
                flow: "f".into(),
                source_id: "d1".into(),
            }),
            5,
        )
        .await
        .unwrap();
    assert_eq!(link(store).await.target_id, None);
    // A delete write that lands tombstones the link.
    let mut delete = write("f", "d1", "1");
    delete.op = WriteOp::Delete;
    delete.target_id = Some("t2".into());
    store.commit_plan(plan(vec![delete]), 6).await.unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 6, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(item.write.op, WriteOp::Delete);
    store
        .complete_writes(vec![done(&item, "t2")], 7)
        .await
        .unwrap();
    assert_eq!(
        link(store).await.tombstone.as_deref(),
        Some("target record deleted by prmsync")
    );
}

async fn links_are_found_by_target_id(store: &Store) {
    store
        .commit_plan(plan(vec![write("f", "d1", "1"), write("f", "d2", "2")]), 0)
        .await
        .unwrap();
    let items = store.due_outbox(SystemKind::HubSpot, 0, 10).await.unwrap();
    store
        .complete_writes(vec![done(&items[0], "t1"), done(&items[1], "t2")], 1)
        .await
        .unwrap();
    let found = store
        .links_by_target("f".into(), vec!["t2".into(), "t9".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].0.as_str(), found[0].1.as_str()), ("t2", "d2"));
    assert!(found[0].2.target_state.holds("amount", &json!("2")));
}

async fn quarantine_shows_on_the_link(store: &Store) {
    store
        .commit_plan(plan(vec![write("f", "d1", "1")]), 0)
        .await
        .unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 0, 1)
        .await
        .unwrap()
        .remove(0);
    store
        .complete_writes(vec![done(&item, "t1")], 1)
        .await
        .unwrap();
    store
        .commit_plan(
            PlanCommit {
                quarantined: vec![(
                    dead_letter("quarantine", "d1", "flip-flopping"),
                    write("f", "d1", "2"),
                )],
                ..PlanCommit::default()
            },
            1,
        )
        .await
        .unwrap();
    let links = store
        .links_by_source("f".into(), vec!["d1".into()])
        .await
        .unwrap();
    assert!(links[0].1.quarantined);
    let letters = store.dead_letters(10).await.unwrap();
    assert_eq!(letters[0].origin, "quarantine");
    assert!(letters[0].replayable);
    let (dropped, missing) = store.drop_dead_letters(dlq::Selection::All).await.unwrap();
    assert_eq!((dropped, missing), (1, vec![]));
    let links = store
        .links_by_source("f".into(), vec!["d1".into()])
        .await
        .unwrap();
    assert!(!links[0].1.quarantined);
}

async fn credentials_save_load_list_and_delete_by_prefix(store: &Store) {
    store
        .save_credential("salesforce".into(), "a".into(), 1)
        .await
        .unwrap();
    store
        .save_credential("salesforce.session".into(), "b".into(), 2)
        .await
        .unwrap();
    store
        .save_credential("hubspot".into(), "c".into(), 3)
        .await
        .unwrap();
    store
        .save_credential("salesforce".into(), "a2".into(), 4)
        .await
        .unwrap();
    assert_eq!(
        store
            .credential("salesforce".into())
            .await
            .unwrap()
            .as_deref(),
        Some("a2")
    );
    assert_eq!(store.credential("nope".into()).await.unwrap(), None);
    assert_eq!(
        store.credential_names().await.unwrap(),
        vec![
            ("hubspot".to_owned(), 3),
            ("salesforce".to_owned(), 4),
            ("salesforce.session".to_owned(), 2)
        ]
    );
    assert_eq!(
        store.delete_credentials("salesforce".into()).await.unwrap(),
        2
    );
    assert_eq!(store.credential_names().await.unwrap().len(), 1);
}

async fn resyncs_are_requested_paged_and_finished(store: &Store) {
    let id = store
        .request_resync("f".into(), deals(), 100, Some(vec!["d1".into()]), 1)
        .await
        .unwrap();
    let open = store.open_resync(deals()).await.unwrap().unwrap();
    assert_eq!((open.id, open.since_ms), (id, 100));
    assert_eq!(open.ids, Some(vec!["d1".to_owned()]));
    let n = store
        .stage_resync_page(id, vec![change("d1", 150)], Some("p2".into()), 2)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let open = store.open_resync(deals()).await.unwrap().unwrap();
    assert_eq!(
        (open.page.as_deref(), open.pages, open.staged),
        (Some("p2"), 1, 1)
    );
    store.restart_resync(id).await.unwrap();
    assert_eq!(
        store.open_resync(deals()).await.unwrap().unwrap().page,
        None
    );
    store.stage_resync_page(id, vec![], None, 3).await.unwrap();
    assert_eq!(store.open_resync(deals()).await.unwrap(), None);
    let all = store.resyncs(10).await.unwrap();
    assert_eq!(all[0].finished_ms, Some(3));
    assert_eq!(store.pending_inbox(10).await.unwrap().len(), 1);
}

async fn associations_wait_for_both_records_then_complete(store: &Store) {
    let intent = AssociationIntent {
        flow: "deals".into(),
        source_id: "d1".into(),
        with_flow: "partners".into(),
        with_key: "p1".into(),
        kind: AssociationType::Default,
    };
    store
        .commit_plan(
            PlanCommit {
                writes: vec![write("deals", "d1", "1")],
                associations: vec![intent.clone()],
                ..PlanCommit::default()
            },
            0,
        )
        .await
        .unwrap();
    let flows = vec!["deals".to_owned()];
    let item = store
        .due_outbox(SystemKind::HubSpot, 0, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .complete_writes(vec![done(&item, "t1")], 1)
        .await
        .unwrap();
    assert!(
        store
            .ready_associations(flows.clone(), 10)
            .await
            .unwrap()
            .is_empty(),
        "the partner record does not exist yet"
    );
    store
        .commit_plan(plan(vec![write("partners", "p1", "1")]), 2)
        .await
        .unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 2, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .complete_writes(vec![done(&item, "c1")], 3)
        .await
        .unwrap();
    let ready = store.ready_associations(flows.clone(), 10).await.unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(
        (ready[0].from_id.as_str(), ready[0].to_id.as_str()),
        ("t1", "c1")
    );
    assert_eq!(ready[0].intent, intent);
    store
        .complete_associations(vec![(ready[0].clone(), AssociationOutcome::Done)], 4)
        .await
        .unwrap();
    assert!(
        store
            .ready_associations(flows, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let status = store.status(4).await.unwrap();
    assert!(status.ledger.iter().any(|c| c.action == "associated"));
}

async fn erase_requests_open_fail_and_report(store: &Store) {
    let id = store
        .request_erasure("email:ann@example.com".into(), 5)
        .await
        .unwrap();
    store
        .erase_request_failed(id, "hubspot gdpr-delete: 503".into())
        .await
        .unwrap();
    let open = store.open_erase_requests(3).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].attempts, open[0].error.as_deref()),
        (1, Some("hubspot gdpr-delete: 503"))
    );
    assert!(
        store.open_erase_requests(1).await.unwrap().is_empty(),
        "attempts used up"
    );
    store
        .erase_request_report(id, "erased: 1 record(s)".into())
        .await
        .unwrap();
    let r = store.erase_request(id).await.unwrap().unwrap();
    assert_eq!(r.report.as_deref(), Some("erased: 1 record(s)"));
    assert_eq!(store.erase_requests(10).await.unwrap().len(), 1);
}

fn person(id: &str, fields: Value) -> Change {
    Change::versioned(
        deals(),
        Record {
            id: id.into(),
            modified_ms: 1,
            fields: fields.as_object().cloned().unwrap_or_default(),
        },
    )
}

async fn an_erasure_purges_the_person_from_every_table_and_stays_suppressed(store: &Store) {
    let email = "ann@example.com";
    store
        .stage_changes(
            vec![
                person("p", json!({"email": "Ann@Example.com", "name": "Ann"})),
                person("q", json!({"note": "cc ann@example.com please"})),
            ],
            None,
            0,
        )
        .await
        .unwrap();
    let mut w = write("f", "p", "1");
    w.payload.insert("email".into(), json!(email));
    store.commit_plan(plan(vec![w]), 0).await.unwrap();
    let item = store
        .due_outbox(SystemKind::HubSpot, 0, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .complete_writes(vec![done(&item, "hs-p")], 1)
        .await
        .unwrap();
    let mut letter = dead_letter("poll", "p", "no key");
    letter.payload = json!({"email": email});
    store
        .dead_letter_poll_rejects(vec![letter], 1)
        .await
        .unwrap();
    let request = store
        .request_erasure(format!("email:{email}"), 2)
        .await
        .unwrap();
    let holding = store.records_holding(email.into()).await.unwrap();
    assert_eq!(
        holding
            .iter()
            .map(|(_, id)| id.as_str())
            .collect::<Vec<_>>(),
        vec!["p", "q"]
    );
    let purge = erasure::Purge {
        records: vec![(deals(), "p".into())],
        links: vec![("f".into(), "p".into(), Some("erased".into()))],
        emails: vec![email.into()],
        suppress: vec![(deals(), "p".into())],
        request: Some(request),
    };
    let (rows, values) = store.erasure_counts(purge.clone()).await.unwrap();
    assert!(rows >= 2 && values >= 2, "{rows} rows, {values} values");
    let audit = erasure::Audit {
        origin: "cli".into(),
        subject: "email".into(),
        records: 1,
        actions: "hubspot gdpr-delete 1".into(),
    };
    let report = store.purge_erasure(purge, audit.clone(), 3).await.unwrap();
    assert!(report.purged_rows >= 2, "{report:?}");

    assert!(
        store
            .records_holding(email.into())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.latest_payload((deals(), "p".into())).await.unwrap(),
        None
    );
    let q = store
        .latest_payload((deals(), "q".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q["note"],
        json!("cc [erased] please"),
        "scrubbed where it stands"
    );
    let links = store
        .links_by_source("f".into(), vec!["p".into()])
        .await
        .unwrap();
    assert_eq!(links[0].1.tombstone.as_deref(), Some("erased"));
    assert_eq!(links[0].1.target_state, StateDigest::default());
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    let r = store.erase_request(request).await.unwrap().unwrap();
    assert_eq!(
        (r.subject.as_str(), r.audit_id),
        ("email", Some(report.audit_id))
    );
    let audits = store.erasures(5).await.unwrap();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].audit, audit);
    // The suppressed record is not staged again.
    let n = store
        .stage_changes(vec![person("p", json!({"email": email}))], None, 4)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

async fn poll_rejects_are_dead_lettered_once(store: &Store) {
    let reject = dead_letter("poll", "x", "no key");
    let n = store
        .dead_letter_poll_rejects(vec![reject.clone()], 1)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = store
        .dead_letter_poll_rejects(vec![reject], 2)
        .await
        .unwrap();
    assert_eq!(n, 0, "the same item is dead-lettered once");
    let letters = store.dead_letters(10).await.unwrap();
    assert!(
        !letters[0].replayable,
        "a poll reject has nothing to replay"
    );
}

async fn pruning_keeps_pending_inbox_rows(store: &Store) {
    store
        .stage_changes(vec![change("a", 1), change("b", 1)], None, 0)
        .await
        .unwrap();
    let inbox = store.pending_inbox(10).await.unwrap();
    store
        .commit_plan(
            PlanCommit {
                inbox_ids: vec![inbox[0].id],
                ..PlanCommit::default()
            },
            0,
        )
        .await
        .unwrap();
    let day = 24 * 60 * 60 * 1000;
    let report = store
        .prune(RetentionPolicy::default(), 30 * day)
        .await
        .unwrap();
    assert_eq!(report.inbox, 1);
    assert_eq!(store.pending_inbox(10).await.unwrap().len(), 1);
    assert!(store.file_pages().await.unwrap().bytes() > 0);
}

/// Fleet mode's leases and fencing: PostgreSQL only (a SQLite state is one daemon's file).
mod leases_on_postgres {
    use std::time::Duration;

    use super::*;
    use crate::store::pg::fleet::{COMMIT_LOCK, Fence, Leases, TENANT_STREAM};

    /// A fleet schema and the target of its tenant `t`, fresh for each test; `None` (printed)
    /// without a server.
    fn fleet(test: &str) -> Option<(pg::PgTarget, pg::PgTarget)> {
        let Ok(url) = std::env::var(POSTGRES_ENV) else {
            println!("skipped {test}: {POSTGRES_ENV} is not set (see README, Development)");
            return None;
        };
        static N: AtomicUsize = AtomicUsize::new(0);
        let schema = format!(
            "l{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tenant = pg::PgTarget {
            url: url.clone(),
            schema: format!("{schema}_t"),
        };
        Some((pg::PgTarget { url, schema }, tenant))
    }

    const LONG: Duration = Duration::from_secs(60);

    /// `who`'s heartbeats (every 50 ms, at most 100) until one claims something: what it claimed.
    async fn first_claims(
        leases: &Leases,
        who: &str,
        tenants: &[String],
        lease: Duration,
    ) -> Vec<(String, i64)> {
        for _ in 0..100 {
            let beat = leases
                .heartbeat(who.into(), tenants.to_vec(), lease)
                .await
                .unwrap();
            if !beat.claimed.is_empty() {
                return beat.claimed;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Vec::new()
    }

    #[tokio::test]
    async fn leases_are_claimed_up_to_a_fair_share_renewed_released_and_taken_after_expiry() {
        let Some((target, _)) = fleet("leases_are_claimed") else {
            return;
        };
        let leases = Leases::open(&target, LONG).unwrap();
        let tenants = vec!["x".to_owned(), "y".to_owned()];
        // Alone, A claims both at generation 1.
        let a = leases
            .heartbeat("a".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!(a.claimed, vec![("x".into(), 1), ("y".into(), 1)]);
        assert_eq!(a.fair_share, 2);
        // B joins: its share is one, but nothing is free.
        let b = leases
            .heartbeat("b".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!((b.fair_share, b.claimed.len(), b.held.len()), (1, 0, 0));
        // A renews both and sees its share is one now; it gives y back.
        let a = leases
            .heartbeat("a".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!((a.held.len(), a.fair_share), (2, 1));
        assert!(leases.release("a".into(), "y".into(), 1).await.unwrap());
        assert!(
            !leases.release("a".into(), "y".into(), 1).await.unwrap(),
            "released once"
        );
        // B claims y at the next generation; A keeps x.
        let b = leases
            .heartbeat("b".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!(b.claimed, vec![("y".into(), 2)]);
        let a = leases
            .heartbeat("a".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!((a.held, a.claimed), (vec![("x".into(), 1)], vec![]));
        // The fleet runs on short leases now and A stops beating: once its lease has expired
        // (and A counts as gone), B takes x at generation 2.
        let short = Duration::from_millis(200);
        leases
            .heartbeat("a".into(), tenants.clone(), short)
            .await
            .unwrap();
        let taken = first_claims(&leases, "b", &tenants, short).await;
        assert_eq!(taken, vec![("x".into(), 2)]);
        let b = leases
            .heartbeat("b".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!(b.held, vec![("x".into(), 2), ("y".into(), 2)]);
        // A's renewal finds nothing of its own.
        let a = leases
            .heartbeat("a".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert!(a.held.is_empty() && a.claimed.is_empty(), "{a:?}");
        let rows = leases.list().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|r| r.holder.as_deref() == Some("b") && r.live && r.generation == 2),
            "{rows:?}"
        );
    }

    /// Holds a lease row as a tenant's commit in flight does (the fence's read with its lock,
    /// in an open transaction on a connection of its own) until the returned sender is dropped.
    fn commit_in_flight(
        url: &str,
        fleet_schema: &str,
        tenant: &str,
    ) -> std::sync::mpsc::Sender<()> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let (url, sql) = (
            url.to_owned(),
            format!(
                "BEGIN; SELECT generation FROM {fleet_schema}.leases
                 WHERE tenant = '{tenant}' AND stream = '{TENANT_STREAM}' {COMMIT_LOCK}"
            ),
        );
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.batch_execute(&sql).expect("the fence's read");
            ready_tx.send(()).expect("test waits");
            let _ = end_rx.recv();
            c.batch_execute("ROLLBACK").expect("rollback");
        });
        ready_rx.recv().expect("the transaction is open");
        end_tx
    }

    #[tokio::test]
    async fn a_commit_in_flight_holds_off_a_claim_but_not_the_holders_renewal() {
        let Some((target, _)) = fleet("commit_in_flight") else {
            return;
        };
        let leases = Leases::open(&target, LONG).unwrap();
        let tenants = vec!["t".to_owned()];
        let a = leases
            .heartbeat("a".into(), tenants.clone(), LONG)
            .await
            .unwrap();
        assert_eq!(a.claimed, vec![("t".into(), 1)]);
        let in_flight = commit_in_flight(&target.url, leases.schema(), "t");
        // A's renewal does not wait for the commit (a `FOR SHARE` read would block it until the
        // commit ends: here, never).
        let renewed = tokio::time::timeout(
            Duration::from_secs(30),
            leases.heartbeat("a".into(), tenants.clone(), Duration::from_millis(200)),
        )
        .await
        .expect("the renewal did not wait for the commit in flight")
        .unwrap();
        assert_eq!(renewed.held, vec![("t".into(), 1)]);
        // The lease expires (A stops beating); B's claims skip the row while the commit is in
        // flight, and take it once it has ended.
        tokio::time::sleep(Duration::from_millis(700)).await;
        for _ in 0..3 {
            let b = leases
                .heartbeat("b".into(), tenants.clone(), LONG)
                .await
                .unwrap();
            assert!(
                b.claimed.is_empty(),
                "claimed under a commit in flight: {b:?}"
            );
        }
        drop(in_flight);
        let taken = first_claims(&leases, "b", &tenants, LONG).await;
        assert_eq!(taken, vec![("t".into(), 2)]);
    }

    #[tokio::test]
    async fn a_commit_under_a_generation_that_moved_on_is_refused_and_staging_is_not_fenced() {
        let Some((target, tenant)) = fleet("fenced_commits") else {
            return;
        };
        let leases = Leases::open(&target, LONG).unwrap();
        let fence_a = Fence::new(leases.schema(), "t", TENANT_STREAM, "a", LONG);
        let fence_b = Fence::new(leases.schema(), "t", TENANT_STREAM, "b", LONG);
        let a = Store::open_postgres_fenced(&tenant, fence_a.clone()).unwrap();
        let b = Store::open_postgres_fenced(&tenant, fence_b.clone()).unwrap();
        // Not held: every fenced commit is refused.
        fence_a.set(0);
        fence_b.set(0);
        let refused = a.commit_plan(plan(vec![write("f", "d0", "0")]), 1).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { .. })),
            "{refused:?}"
        );
        // A holds generation 1: its commits and outbox claims pass.
        let g = leases
            .take_over("a".into(), "t".into(), LONG)
            .await
            .unwrap();
        fence_a.set(g);
        a.commit_plan(plan(vec![write("f", "d1", "1")]), 2)
            .await
            .unwrap();
        assert_eq!(
            a.due_outbox(SystemKind::HubSpot, 10, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // B takes the tenant over: A's plan commits, claims and completions are refused, B's pass.
        let g2 = leases
            .take_over("b".into(), "t".into(), LONG)
            .await
            .unwrap();
        assert_eq!(g2, g + 1);
        fence_b.set(g2);
        let before = crate::telemetry::meters::meters().fenced_commits();
        for refused in [
            a.commit_plan(plan(vec![write("f", "d2", "2")]), 3).await,
            a.due_outbox(SystemKind::HubSpot, 10, 10).await.map(|_| ()),
            a.stage_changes(vec![change("p", 3)], Some((deals(), Cursor::at(3, "p"))), 3)
                .await
                .map(|_| ()),
        ] {
            assert!(
                matches!(refused, Err(StoreError::Fenced { held, current, .. }) if held == g && current == g2),
                "{refused:?}"
            );
        }
        assert!(crate::telemetry::meters::meters().fenced_commits() >= before + 3);
        let due = b.due_outbox(SystemKind::HubSpot, 10, 10).await.unwrap();
        assert_eq!(due.len(), 1, "only A's first write is queued");
        b.complete_writes(vec![done(&due[0], "hs-1")], 4)
            .await
            .unwrap();
        // Webhook staging is not fenced: any daemon stages for any tenant.
        assert_eq!(
            a.stage_changes(vec![change("w", 5)], None, 5)
                .await
                .unwrap(),
            1
        );
        assert_eq!(b.pending_inbox(10).await.unwrap().len(), 1);
        // An expired lease nobody took: B's commits still pass (the generation is its own), but
        // no outbox batch is claimed under it.
        leases
            .take_over("b".into(), "t".into(), Duration::from_millis(1))
            .await
            .map(|g3| fence_b.set(g3))
            .unwrap();
        let mut claim = Ok(Vec::new());
        for _ in 0..100 {
            claim = b.due_outbox(SystemKind::HubSpot, 10, 10).await;
            if claim.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(claim, Err(StoreError::Fenced { .. })), "{claim:?}");
        b.commit_plan(plan(vec![write("f", "d3", "3")]), 6)
            .await
            .unwrap();
    }
}

/// A PostgreSQL store's connections are made again after the server ended them: PostgreSQL only
/// (a SQLite state is a file).
mod reconnect_on_postgres {
    use std::time::Duration;

    use super::*;
    use crate::store::pg::fleet::{Fence, TENANT_STREAM};

    /// A fresh target, or `None` (printed) without a server. Short schema names: the
    /// connections' `application_name` (`prmsync writer SCHEMA`) must fit in 63 characters.
    fn target(test: &str) -> Option<pg::PgTarget> {
        let Ok(url) = std::env::var(POSTGRES_ENV) else {
            println!("skipped {test}: {POSTGRES_ENV} is not set (see README, Development)");
            return None;
        };
        static N: AtomicUsize = AtomicUsize::new(0);
        let schema = format!(
            "rc{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Some(pg::PgTarget { url, schema })
    }

    /// Runs `sql` on a connection of its own (a plain thread: a blocking client must not run on
    /// the runtime) and returns the first column of each row as text.
    async fn admin(url: &str, sql: String) -> Vec<String> {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
            c.simple_query(&sql)
                .expect("admin query")
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
                    _ => None,
                })
                .collect()
        })
        .await
        .expect("admin thread")
    }

    /// The backend pid of the store's writer connection.
    async fn writer_pid(store: &Store) -> Result<i32, StoreError> {
        let pg = store.pg().expect("a PostgreSQL store");
        pg.call(|c| Ok(c.query_one("SELECT pg_backend_pid()", &[])?.try_get(0)?))
            .await
    }

    /// Ends the backends and waits until they are gone (`pg_terminate_backend` only signals).
    async fn terminate(url: &str, filter: &str) -> usize {
        let ended = admin(
            url,
            format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {filter}"),
        )
        .await;
        for _ in 0..250 {
            let left = admin(
                url,
                format!("SELECT count(*) FROM pg_stat_activity WHERE {filter}"),
            )
            .await;
            if left == ["0"] {
                return ended.iter().filter(|t| *t == "t").count();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("backends ({filter}) still there after 5 s");
    }

    /// Calls `f` until it succeeds (at most 30 s: the first reconnect attempt is at once, then
    /// one per 1, 2, 4, 8 s); returns the result and how many calls failed first.
    async fn until_ok<T, Fut: std::future::Future<Output = Result<T, StoreError>>>(
        mut f: impl FnMut() -> Fut,
    ) -> (T, usize) {
        let mut failed = 0;
        for _ in 0..300 {
            match f().await {
                Ok(v) => return (v, failed),
                Err(e) => {
                    assert!(
                        // Stagings answer their group's error as `GroupCommit`.
                        matches!(
                            e,
                            StoreError::PgConnect(_)
                                | StoreError::Postgres(_)
                                | StoreError::GroupCommit(_)
                        ),
                        "a lost connection answers a connection error: {e:?}"
                    );
                    failed += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the store did not reconnect within 30 s");
    }

    #[tokio::test]
    async fn a_store_whose_writer_and_reader_backends_were_terminated_connects_again() {
        let Some(target) = target("a_store_whose_backends_were_terminated") else {
            return;
        };
        // A fenced store (fence not armed: no lease is checked) sets the writer's idle timeout.
        let fence = Fence::new("unused", "t", TENANT_STREAM, "a", Duration::from_secs(7));
        let store = Store::open_postgres_fenced(&target, fence).unwrap();
        assert_eq!(
            store
                .stage_changes(vec![change("a", 1)], None, 1)
                .await
                .unwrap(),
            1
        );
        let names = format!(
            "application_name IN ('prmsync writer {s}', 'prmsync reader {s}')",
            s = target.schema
        );
        let before = writer_pid(&store).await.unwrap();
        assert_eq!(terminate(&target.url, &names).await, 2, "writer and reader");
        // The next call on each connection may fail (it finds the connection closed); a later
        // one runs on a new connection with the same session settings.
        let (n, _) = until_ok(|| store.stage_changes(vec![change("b", 2)], None, 2)).await;
        assert_eq!(n, 1);
        let (report, _) = until_ok(|| store.status(3)).await;
        assert_eq!(
            report.inbox_pending, 2,
            "both stagings, before and after the reconnect"
        );
        assert_ne!(writer_pid(&store).await.unwrap(), before, "a new backend");
        let pg = store.pg().unwrap();
        let settings = pg
            .call(|c| {
                let r = c.query_one(
                    "SELECT current_setting('idle_in_transaction_session_timeout'), current_schema()",
                    &[],
                )?;
                Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?))
            })
            .await
            .unwrap();
        assert_eq!(settings, ("7s".to_owned(), target.schema.clone()));
        // Killed again: the same once more (the backoff starts over after a success).
        assert_eq!(terminate(&target.url, &names).await, 2);
        let (_, failed) = until_ok(|| store.pending_inbox(10)).await;
        assert!(failed <= 1, "{failed} calls failed before the reconnect");
        assert_eq!(until_ok(|| store.status(4)).await.0.inbox_pending, 2);
    }

    #[tokio::test]
    async fn the_daemon_lock_is_taken_again_after_a_reconnect_and_writes_stop_if_another_daemon_took_it()
     {
        let Some(target) = target("the_daemon_lock_is_taken_again") else {
            return;
        };
        let a = Store::open_postgres(&target).unwrap();
        let b = Store::open_postgres(&target).unwrap();
        assert!(a.hold_daemon_lock().await.unwrap());
        assert!(!b.hold_daemon_lock().await.unwrap(), "A holds it");
        // A's writer backend is ended; A reconnects and holds the lock again.
        let pid = writer_pid(&a).await.unwrap();
        assert_eq!(terminate(&target.url, &format!("pid = {pid}")).await, 1);
        until_ok(|| a.stage_changes(vec![change("a", 1)], None, 1)).await;
        assert!(!b.hold_daemon_lock().await.unwrap(), "A holds it again");
        // Ended again, and B takes the lock before A's next call: A writes nothing any more,
        // and says why (its reads still work).
        let pid = writer_pid(&a).await.unwrap();
        assert_eq!(terminate(&target.url, &format!("pid = {pid}")).await, 1);
        assert!(b.hold_daemon_lock().await.unwrap(), "free while A is down");
        let mut refused = None;
        for _ in 0..300 {
            match a.stage_changes(vec![change("b", 2)], None, 2).await {
                Err(e @ StoreError::DaemonLockLost(_)) => {
                    refused = Some(e);
                    break;
                }
                Err(
                    StoreError::PgConnect(_) | StoreError::Postgres(_) | StoreError::GroupCommit(_),
                ) => {}
                other => panic!("A wrote without the lock: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let refused = refused.expect("A refuses to write once B holds the lock");
        assert!(refused.to_string().contains(&target.schema), "{refused}");
        assert!(!refused.is_retryable());
        for _ in 0..3 {
            assert!(matches!(
                a.commit_plan(plan(vec![write("f", "d1", "1")]), 3).await,
                Err(StoreError::DaemonLockLost(_))
            ));
        }
        assert_eq!(
            b.pending_inbox(10).await.unwrap().len(),
            1,
            "only A's first staging"
        );
        assert_eq!(until_ok(|| a.status(4)).await.0.inbox_pending, 1);
    }
}

async fn credit_evidence_is_kept_by_customer_and_re_decides_its_group(store: &Store) {
    use crate::rules::credit::{Evidence, EvidenceItem};
    use crate::rules::{Decision, RegistrationEvent, Status};
    let key = "initech.example";
    let event = RegistrationEvent {
        id: "reg_a".into(),
        at_ms: 10,
        submitted_ms: 10,
        fields: json!({"partner_key": "part_2"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    store
        .record_registrations(
            vec![KeyedEvent {
                event,
                key: key.into(),
                partner: "part_2".into(),
            }],
            vec![],
            1,
        )
        .await
        .unwrap();
    let decide = || DecisionCommit {
        rules_version: "v1".into(),
        keys: vec![key.into()],
        decisions: vec![Decision {
            registration_id: "reg_a".into(),
            key: key.into(),
            partner: "part_2".into(),
            status: Status::Approved,
            rule: "first_qualified".into(),
            line: 1,
            reason: "approved".into(),
            protected_until: Some(1_000),
            protected_under: None,
            duplicate_of: None,
            trace: Vec::new(),
        }],
        ..DecisionCommit::default()
    };
    let dirty = || async {
        store
            .registration_keys_to_decide("v1".into(), 10)
            .await
            .unwrap()
    };
    store.commit_decisions(decide(), 2).await.unwrap();
    assert!(dirty().await.is_empty());

    let lead = EvidenceItem {
        kind: Evidence::Lead,
        id: "L1".into(),
        partner: "part_3".into(),
        at_ms: 5,
    };
    let other = EvidenceItem {
        kind: Evidence::Activity,
        id: "A1".into(),
        partner: "part_4".into(),
        at_ms: 7,
    };
    store
        .record_credit_evidence(
            vec![
                (key.into(), lead.clone()),
                ("elsewhere.example".into(), other),
            ],
            vec![],
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        dirty().await,
        [key],
        "a new lead re-decides its customer's group"
    );
    let group = store.registration_group(key.into()).await.unwrap();
    assert_eq!(group.evidence, [(key.to_owned(), lead.clone())]);

    // The same lead again changes nothing; a changed one or a deleted one re-decides.
    store.commit_decisions(decide(), 4).await.unwrap();
    store
        .record_credit_evidence(vec![(key.into(), lead.clone())], vec![], 5)
        .await
        .unwrap();
    assert!(dirty().await.is_empty(), "a repeat re-decides nothing");
    let moved = EvidenceItem {
        at_ms: 6,
        ..lead.clone()
    };
    store
        .record_credit_evidence(vec![(key.into(), moved.clone())], vec![], 6)
        .await
        .unwrap();
    assert_eq!(dirty().await, [key]);
    assert_eq!(
        store.registration_group(key.into()).await.unwrap().evidence,
        [(key.to_owned(), moved)]
    );
    store.commit_decisions(decide(), 7).await.unwrap();
    store
        .record_credit_evidence(vec![], vec![(Evidence::Lead, "L1".into())], 8)
        .await
        .unwrap();
    assert_eq!(dirty().await, [key], "a deleted lead re-decides too");
    assert!(
        store
            .registration_group(key.into())
            .await
            .unwrap()
            .evidence
            .is_empty()
    );
}

async fn credit_reasons_are_kept_and_a_new_reason_alone_sends_nothing(store: &Store) {
    let row = |reasons: &str| DesiredCredits {
        registration_id: "reg_a".into(),
        desired: r#"[{"partner":"part_2"}]"#.into(),
        reasons: reasons.into(),
    };
    let commit = |reasons: &str| DecisionCommit {
        rules_version: "v1".into(),
        credits: vec![row(reasons)],
        ..DecisionCommit::default()
    };
    assert_eq!(store.credits_of("reg_a".into()).await.unwrap(), None);
    store.commit_decisions(commit("first"), 1).await.unwrap();
    let stored = store.credits_of("reg_a".into()).await.unwrap().unwrap();
    assert_eq!(
        (stored.reasons.as_deref(), stored.sent.as_deref()),
        (Some("first"), None)
    );
    let unsent = store.unsent_credits(10).await.unwrap();
    assert_eq!(unsent.len(), 1);
    store
        .complete_credits(vec![(unsent[0].clone(), Ok(()))], 2)
        .await
        .unwrap();
    // The same set with a new reason (a moved line in the rules file): kept, nothing to send.
    store.commit_decisions(commit("second"), 3).await.unwrap();
    let stored = store.credits_of("reg_a".into()).await.unwrap().unwrap();
    assert_eq!(stored.reasons.as_deref(), Some("second"));
    assert_eq!(stored.sent.as_deref(), Some(stored.desired.as_str()));
    assert!(store.unsent_credits(10).await.unwrap().is_empty());
}

async fn schema_drift_keeps_its_since_and_skips_forget_the_field(store: &Store) {
    let hs = SystemKind::HubSpot;
    let drift = |field: &str, problem: &str| DriftRow {
        object: "deals".into(),
        field: field.into(),
        flow: "f".into(),
        location: "deals.toml:12:10".into(),
        kind: "missing".into(),
        problem: problem.into(),
    };
    let checked = |rows: Vec<DriftRow>| vec![("deals".to_owned(), rows)];
    let mapped = vec!["deals".to_owned()];
    let c = store
        .record_schema_drift(
            hs,
            checked(vec![drift("amount", "gone")]),
            mapped.clone(),
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(c.appeared.len(), 1);
    // The same drift again is no news and keeps its since; a new one appears.
    let c = store
        .record_schema_drift(
            hs,
            checked(vec![drift("amount", "gone"), drift("stage", "options")]),
            mapped.clone(),
            5_000,
        )
        .await
        .unwrap();
    assert_eq!(c.appeared, vec![drift("stage", "options")]);
    let status = store.status(11_000).await.unwrap();
    let since: Vec<(String, i64, i64)> = status
        .schema_drift
        .iter()
        .map(|d| (d.field.clone(), d.since_ms, d.since_secs))
        .collect();
    assert_eq!(
        since,
        [("amount".into(), 1_000, 10), ("stage".into(), 5_000, 6)]
    );

    // A write that left a field out: the link forgets the field, the skip is kept.
    let mut w = write("f", "d1", "1");
    w.payload.insert("stage".into(), json!("lost"));
    w.state_after = StateDigest::of(&w.payload);
    store.commit_plan(plan(vec![w]), 0).await.unwrap();
    let sent = store.due_outbox(hs, 0, 10).await.unwrap().remove(0);
    let skipped = vec![SkippedField {
        field: "stage".into(),
        value: Some("lost".into()),
    }];
    store
        .complete_writes(
            vec![WriteOutcome::Done {
                outbox_id: sent.id,
                idempotency_key: sent.write.idempotency_key(),
                target_id: "9001".into(),
                created: true,
                skipped,
            }],
            6_000,
        )
        .await
        .unwrap();
    let links = store
        .links_by_source("f".into(), vec!["d1".into()])
        .await
        .unwrap();
    assert!(links[0].1.target_state.holds("amount", &json!("1")));
    assert!(!links[0].1.target_state.holds("stage", &json!("lost")));
    let skips = store.schema_skips(hs, "deals".into()).await.unwrap();
    assert_eq!(
        skips,
        [SchemaSkip {
            flow: "f".into(),
            source_id: "d1".into(),
            field: "stage".into(),
            value: Some("lost".into()),
        }]
    );
    let status = store.status(7_000).await.unwrap();
    assert_eq!(status.schema_skips.len(), 1);
    assert_eq!(status.schema_skips[0].records, 1);
    store.clear_schema_skips(skips).await.unwrap();
    assert!(
        store
            .schema_skips(hs, "deals".into())
            .await
            .unwrap()
            .is_empty()
    );

    // Fixed: the drift clears; an object no flow writes any more loses its drift too.
    let c = store
        .record_schema_drift(hs, checked(vec![drift("stage", "options")]), mapped, 8_000)
        .await
        .unwrap();
    assert_eq!(c.cleared, vec![drift("amount", "gone")]);
    let c = store
        .record_schema_drift(hs, Vec::new(), Vec::new(), 9_000)
        .await
        .unwrap();
    assert_eq!(c.cleared, vec![drift("stage", "options")]);
    let status = store.status(9_000).await.unwrap();
    assert!(status.schema_drift.is_empty() && status.schema_skips.is_empty());
}
