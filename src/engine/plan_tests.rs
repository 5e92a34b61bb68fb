//! Planner tests: one line per case, on the shipped deal-registration mapping.

use serde_json::{Map, Value, json};

use super::*;
use crate::mapping::MappingSet;
use crate::model::Record;
use crate::store::Link;

fn mapping() -> std::sync::Arc<Mapping> {
    MappingSet::builtin()
        .expect("built-in mappings compile")
        .mappings[0]
        .clone()
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn deal(stage: &str, amount: i64) -> Record {
    Record {
        id: "deal_1".into(),
        modified_ms: 1,
        fields: obj(json!({
            "key": "deal_1", "account_name": "Acme", "amount": amount, "stage": stage,
            "partner_key": "part_1", "close_date": "2027-01-31",
        })),
    }
}

fn hubspot_deal(stage: &str, reason: Option<&str>) -> Record {
    let mut f = obj(json!({"prm_deal_id": "deal_1", "dealstage": stage, "amount": "100"}));
    if let Some(r) = reason {
        f.insert("closed_lost_reason".into(), json!(r));
    }
    Record {
        id: "9001".into(),
        modified_ms: 2,
        fields: f,
    }
}

/// The link after a successful create of `deal(stage, amount)`.
fn linked(stage: &str, amount: i64) -> Link {
    let m = mapping();
    let d = forward(&m, &deal(stage, amount), None);
    Link {
        target_id: Some("9001".into()),
        target_state: d.write.expect("create").state_after,
        source_state: d.observation.expect("observed").state,
        ..Link::default()
    }
}

fn fields(d: &Decision) -> Vec<String> {
    d.write
        .as_ref()
        .map(|w| w.payload.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn forward_creates_then_updates_only_what_changed() {
    let m = mapping();
    let create = forward(&m, &deal("submitted", 100), None);
    let w = create.write.as_ref().expect("a create");
    assert_eq!(
        w.payload.get("dealstage"),
        Some(&json!("appointmentscheduled"))
    );
    assert_eq!(w.id_property.as_deref(), Some("prm_deal_id"));
    assert_eq!(
        create.ledger.as_ref().map(|l| l.action),
        Some(action::QUEUED)
    );

    let link = linked("submitted", 100);
    let cases: &[(&str, i64, &[&str])] = &[
        ("submitted", 100, &[]),         // unchanged: nothing to write
        ("submitted", 250, &["amount"]), // only the changed field
        ("won", 100, &[]),               // stage is CRM-owned after create
    ];
    for (stage, amount, want) in cases {
        let d = forward(&m, &deal(stage, *amount), Some(&link));
        assert_eq!(fields(&d), *want, "stage {stage} amount {amount}");
        if want.is_empty() {
            assert_eq!(d.ledger.as_ref().map(|l| l.action), Some(action::UNCHANGED));
        }
    }
}

#[test]
fn forward_dead_letters_a_record_that_cannot_be_mapped() {
    let d = forward(&mapping(), &deal("pending_legal", 100), None);
    assert!(d.write.is_none());
    let dl = d.dead_letter.expect("dead letter");
    assert!(dl.reason.contains("pending_legal"), "{}", dl.reason);
    assert_eq!(d.ledger.map(|l| l.action), Some(action::MAPPING_FAILED));
}

#[test]
fn reverse_skips_echoes_and_writes_real_changes() {
    let m = mapping();
    let link = linked("submitted", 100);
    let cases: &[(&str, Option<&str>, &[&str])] = &[
        ("appointmentscheduled", None, &[]), // our own write coming back
        ("closedwon", None, &["stage"]),
        ("closedlost", Some("Budget"), &["lost_reason", "stage"]),
    ];
    for (stage, reason, want) in cases {
        let d = reverse(&m, &hubspot_deal(stage, *reason), "deal_1", Some(&link));
        assert_eq!(fields(&d), *want, "{stage}");
    }
    let d = reverse(&m, &hubspot_deal("closedwon", None), "deal_1", Some(&link));
    let w = d.write.expect("write back");
    assert_eq!(w.payload.get("stage"), Some(&json!("won")));
    assert_eq!(w.system, crate::model::SystemKind::PartnerStack);
}

#[test]
fn reverse_ignores_unlinked_and_dead_letters_unknown_stages() {
    let m = mapping();
    let d = reverse(&m, &hubspot_deal("closedwon", None), "deal_1", None);
    assert!(d.write.is_none());
    assert_eq!(d.ledger.map(|l| l.action), Some(action::UNLINKED));
    let d = reverse(
        &m,
        &hubspot_deal("somecustomstage", None),
        "deal_1",
        Some(&linked("submitted", 1)),
    );
    assert!(
        d.dead_letter
            .expect("dead letter")
            .reason
            .contains("somecustomstage")
    );
}

#[test]
fn planning_is_deterministic() {
    let m = mapping();
    let a = forward(&m, &deal("approved", 5), None);
    let b = forward(&m, &deal("approved", 5), None);
    assert_eq!(a, b);
    assert_eq!(
        a.write.as_ref().map(|w| w.idempotency_key()),
        b.write.as_ref().map(|w| w.idempotency_key())
    );
}

#[test]
fn only_returns_to_an_earlier_state_count_as_flips_not_repeats_of_the_latest() {
    let m = mapping();
    let link = linked("submitted", 100);
    let write = |amount| {
        forward(&m, &deal("submitted", amount), Some(&link))
            .write
            .expect("write")
    };
    let (a, b) = (write(200), write(300));
    let history = |keys: &[&PlannedWrite]| Link {
        write_history: keys.iter().map(|w| (1_000, w.state_key())).collect(),
        ..link.clone()
    };
    // A, A, A: the same state queued again (e.g. a newer version mapping to the same values).
    assert_eq!(flip_flops(&history(&[&a, &a]), &a, 2_000, 10_000), 0);
    // A, B, A, B, then A again: two returns to A.
    assert_eq!(
        flip_flops(&history(&[&a, &b, &a, &b]), &a, 2_000, 10_000),
        2
    );
    // A, A, B, then A: one return (the repeated A counts once).
    assert_eq!(flip_flops(&history(&[&a, &a, &b]), &a, 2_000, 10_000), 1);
    // Outside the window nothing counts.
    assert_eq!(flip_flops(&history(&[&a, &b]), &a, 20_000, 10_000), 0);
}

/// Retention prunes the inbox rows that stop a record version from being staged twice, so a
/// version offered again after that (a late webhook retry, a poll's overlap) must be dropped by
/// the planner from the link alone: older versions are stale, the same version writes nothing.
#[test]
fn a_version_offered_again_after_its_inbox_row_is_pruned_writes_nothing() {
    let m = mapping();
    let link = Link {
        source_modified_ms: Some(5),
        target_modified_ms: Some(5),
        ..linked("submitted", 100)
    };
    let at = |ms: i64, amount: i64| Record {
        modified_ms: ms,
        ..deal("submitted", amount)
    };
    let cases: &[(i64, i64, &str)] = &[
        (4, 90, action::STALE),      // an older version, different content
        (4, 100, action::STALE),     // an older version, same content
        (5, 100, action::UNCHANGED), // the version the link holds, again
        (6, 100, action::UNCHANGED), // a newer version that maps to the same values
        (6, 250, action::QUEUED),    // a real change still goes through
    ];
    for (ms, amount, want) in cases {
        let d = forward(&m, &at(*ms, *amount), Some(&link));
        assert_eq!(
            d.ledger.map(|l| l.action),
            Some(*want),
            "ms {ms} amount {amount}"
        );
        assert_eq!(
            d.write.is_some(),
            *want == action::QUEUED,
            "ms {ms} amount {amount}"
        );
    }
    let crm = |ms: i64, stage: &str| Record {
        modified_ms: ms,
        ..hubspot_deal(stage, None)
    };
    let cases: &[(i64, &str, &str)] = &[
        (4, "closedwon", action::STALE),
        (5, "appointmentscheduled", action::UNCHANGED),
        (6, "closedwon", action::QUEUED),
    ];
    for (ms, stage, want) in cases {
        let d = reverse(&m, &crm(*ms, stage), "deal_1", Some(&link));
        assert_eq!(
            d.ledger.map(|l| l.action),
            Some(*want),
            "ms {ms} stage {stage}"
        );
    }
}

#[test]
fn a_deleted_target_follows_on_target_delete_and_a_restore_relinks() {
    use crate::mapping::TargetDeletePolicy;
    use crate::store::{LinkMark, WriteOp};
    let live = linked("submitted", 100);
    let with = |p: TargetDeletePolicy| {
        let mut m = (*mapping()).clone();
        m.on_target_delete = p;
        m
    };
    // Default: tombstone, nothing written.
    let m = with(TargetDeletePolicy::Unlink { flag: None });
    let d = target_deleted(&m, "deal_1", "9001", &live);
    assert!(matches!(d.mark, Some(LinkMark::Tombstone { .. })) && d.write.is_none());
    // With a flag: the source gets it.
    let m = with(TargetDeletePolicy::Unlink {
        flag: Some(("crm_deleted".into(), json!("true"))),
    });
    let w = target_deleted(&m, "deal_1", "9001", &live)
        .write
        .expect("flag");
    assert_eq!((w.direction, w.op), (Direction::ToSource, WriteOp::Upsert));
    assert_eq!(Value::Object(w.payload), json!({"crm_deleted": "true"}));
    // recreate forgets the target; delete_source deletes the source record.
    let m = with(TargetDeletePolicy::Recreate);
    let d = target_deleted(&m, "deal_1", "9001", &live);
    assert!(matches!(d.mark, Some(LinkMark::ForgetTarget { .. })));
    let m = with(TargetDeletePolicy::DeleteSource);
    let w = target_deleted(&m, "deal_1", "9001", &live)
        .write
        .expect("delete");
    assert_eq!((w.direction, w.op), (Direction::ToSource, WriteOp::Delete));
    // A delete of another record than the linked one changes nothing.
    let d = target_deleted(&m, "deal_1", "9002", &live);
    assert!(d.mark.is_none() && d.write.is_none());

    // A tombstoned link is not written through, not even a create.
    let gone = Link {
        tombstone: Some("target record deals 9001 deleted in hubspot".into()),
        ..live.clone()
    };
    let d = forward(&mapping(), &deal("approved", 200), Some(&gone));
    assert_eq!(d.ledger.map(|l| l.action), Some(action::TOMBSTONED));
    assert!(d.write.is_none());
    // The same target record back: relinked, and its change flows back.
    let d = reverse(
        &mapping(),
        &hubspot_deal("closedwon", None),
        "deal_1",
        Some(&gone),
    );
    assert!(matches!(d.mark, Some(LinkMark::Relink { .. })));
    assert!(d.write.is_some());
    let l = d.ledger.expect("ledger");
    assert!(l.detail.expect("detail").contains("relinked"));
}

#[test]
fn a_propagated_source_delete_deletes_the_target_once() {
    use crate::store::{LinkMark, WriteOp};
    let mut m = (*mapping()).clone();
    m.on_delete = crate::mapping::DeletePolicy::Propagate;
    let live = linked("submitted", 100);
    let d = delete(&m, "deal_1", Some(&live));
    let w = d.write.expect("delete write");
    assert_eq!(
        (w.op, w.target_id.as_deref()),
        (WriteOp::Delete, Some("9001"))
    );
    assert!(matches!(d.mark, Some(LinkMark::Tombstone { .. })));
    let gone = Link {
        tombstone: Some("source record deal_1 deleted".into()),
        ..live
    };
    assert!(delete(&m, "deal_1", Some(&gone)).write.is_none());
}

#[test]
fn a_merged_target_moves_the_link_and_the_next_change_writes_the_survivor_by_id() {
    use crate::store::{LinkMark, StateDigest};
    let m = mapping();
    let live = linked("submitted", 100);
    // 9001 merged into 9002: the survivor gets the external id, by its id.
    let d = target_merged(&m, "deal_1", "9001", "9002", None, &live, "hubspot merge");
    let w = d.write.expect("survivor write");
    assert_eq!(
        (w.target_id.as_deref(), w.id_property),
        (Some("9002"), None)
    );
    assert_eq!(Value::Object(w.payload), json!({"prm_deal_id": "deal_1"}));
    assert!(
        matches!(d.mark, Some(LinkMark::Retarget { ref target_id, .. }) if target_id == "9002")
    );
    assert_eq!(d.ledger.expect("ledger").action, action::MERGED);
    // Until a write lands, the next change goes by id with every field and the external id.
    let moved = Link {
        target_id: Some("9002".into()),
        target_state: StateDigest::default(),
        ..live.clone()
    };
    let next = forward(&m, &deal("submitted", 200), Some(&moved))
        .write
        .expect("write");
    assert_eq!(next.id_property, None);
    assert_eq!(next.payload.get("prm_deal_id"), Some(&json!("deal_1")));
    assert!(next.payload.contains_key("dealname"));
    // A survivor already linked to another registration: tombstoned, nothing written.
    let d = target_merged(
        &m,
        "deal_1",
        "9001",
        "9002",
        Some("deal_9"),
        &live,
        "hubspot merge",
    );
    assert!(d.write.is_none() && matches!(d.mark, Some(LinkMark::Tombstone { .. })));
    // A merge of a record the link no longer points at changes nothing.
    let d = target_merged(&m, "deal_1", "7777", "9002", None, &live, "hubspot merge");
    assert!(d.write.is_none() && d.mark.is_none());
}
