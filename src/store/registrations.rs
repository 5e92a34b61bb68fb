//! The SQL behind deal registrations: their observed versions, current decisions, the history of
//! decision changes (before/after) and operators' review outcomes.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{DecisionCommit, StoreError, queries};
use crate::model::content_hash;
use crate::rules::{PriorDecision, RegistrationEvent, ReviewOutcome, Status, TraceStep};

/// Migration step "registrations" (rules of engagement): self-contained tables.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE registration_events (
    registration_id TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    submitted_ms    INTEGER NOT NULL,
    fields          TEXT NOT NULL,
    fields_hash     TEXT NOT NULL,
    PRIMARY KEY (registration_id, at_ms, fields_hash)
) STRICT;

CREATE TABLE registrations (
    id              TEXT PRIMARY KEY,
    dup_key         TEXT NOT NULL,
    partner         TEXT NOT NULL,
    status          TEXT,
    rule            TEXT,
    line            INTEGER,
    reason          TEXT,
    protected_until INTEGER,
    protected_under TEXT,
    duplicate_of    TEXT,
    trace           TEXT,
    rules_version   TEXT,
    dirty           INTEGER NOT NULL DEFAULT 1,
    decided_ms      INTEGER,
    updated_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX registrations_by_key ON registrations (dup_key);
CREATE INDEX registrations_by_status ON registrations (status);

CREATE TABLE registration_decisions (
    id              INTEGER PRIMARY KEY,
    registration_id TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    before_status   TEXT,
    after_status    TEXT NOT NULL,
    rule            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    rules_version   TEXT NOT NULL
) STRICT;
CREATE INDEX registration_decisions_by_id ON registration_decisions (registration_id, id);

CREATE TABLE registration_reviews (
    id              INTEGER PRIMARY KEY,
    registration_id TEXT NOT NULL,
    approve         INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    at_ms           INTEGER NOT NULL
) STRICT;
"#;

/// Migration step "partner names": each partner's name as the PRM last sent it, so reasons and
/// the CLI name partners the way channel managers know them.
pub(super) const PARTNERS_MIGRATION: &str = r#"
CREATE TABLE registration_partners (
    partner    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
"#;

/// Stores partners' names (key, name); a new or changed name marks the partner's registrations
/// for deciding again, so their reasons name the partner as the PRM now does.
pub(super) fn record_partners(
    tx: &Transaction<'_>,
    names: &[(String, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (partner, name) in names {
        let changed = tx
            .prepare_cached(
                "INSERT INTO registration_partners (partner, name, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (partner) DO UPDATE SET name = excluded.name, updated_ms = excluded.updated_ms
                 WHERE registration_partners.name <> excluded.name",
            )?
            .execute(params![partner, name, now_ms])?;
        if changed > 0 {
            tx.prepare_cached("UPDATE registrations SET dirty = 1 WHERE partner = ?1")?
                .execute(params![partner])?;
        }
    }
    Ok(())
}

/// A registration's stored state, for the CLI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRegistration {
    pub id: String,
    pub key: String,
    pub partner: String,
    /// The partner's name in the PRM, when prmsync has seen it.
    pub partner_name: Option<String>,
    pub status: Option<String>,
    pub rule: Option<String>,
    pub line: Option<i64>,
    pub reason: Option<String>,
    pub protected_until: Option<i64>,
    pub duplicate_of: Option<String>,
    pub rules_version: Option<String>,
    pub decided_ms: Option<i64>,
    pub trace: Vec<TraceStep>,
}

/// One change of a registration's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionChange {
    pub at_ms: i64,
    pub before: Option<String>,
    pub after: String,
    pub rule: String,
    pub reason: String,
    pub rules_version: String,
}

/// What one duplicate-key group needs for an evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistrationGroup {
    pub events: Vec<RegistrationEvent>,
    pub reviews: Vec<ReviewOutcome>,
    pub prior: Vec<PriorDecision>,
    /// Partner key -> name in the PRM, for the group's partners whose names are known.
    pub partner_names: std::collections::BTreeMap<String, String>,
    /// Partners' leads and activities on the group's customer: (customer key, item).
    pub evidence: Vec<(String, crate::rules::credit::EvidenceItem)>,
}

/// A registration version with the key and partner the engine computed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedEvent {
    pub event: RegistrationEvent,
    pub key: String,
    pub partner: String,
}

pub(super) fn mark_group_dirty(tx: &Transaction<'_>, key: &str) -> Result<(), StoreError> {
    // Rows already dirty are left alone: a busy group costs a read, not a rewrite of every row.
    tx.prepare_cached("UPDATE registrations SET dirty = 1 WHERE dup_key = ?1 AND dirty = 0")?
        .execute(params![key])?;
    Ok(())
}

/// Stores versions (a repeat is ignored), and marks the old and new key groups dirty.
pub(super) fn record_events(
    tx: &Transaction<'_>,
    events: &[KeyedEvent],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for k in events {
        let e = &k.event;
        n += tx
            .prepare_cached(
                // A registration an erasure left holding a person (its PRM deal is in
                // `erased_records`) is not recorded again from a batch read before the erasure.
                "INSERT INTO registration_events (registration_id, at_ms, submitted_ms, fields, fields_hash)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM erased_records WHERE record_id = ?1)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                e.id,
                e.at_ms,
                e.submitted_ms,
                serde_json::to_string(&e.fields)?,
                content_hash(&e.fields)
            ])?;
        set_key(tx, &e.id, &k.key, &k.partner, now_ms)?;
    }
    Ok(n)
}

/// Marks the groups of these registrations dirty (unknown ids are ignored).
pub(super) fn touch(tx: &Transaction<'_>, ids: &[String]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE registrations SET dirty = 1
         WHERE dup_key = (SELECT dup_key FROM registrations WHERE id = ?1) AND dirty = 0",
    )?;
    for id in ids {
        stmt.execute(params![id])?;
    }
    Ok(())
}

/// Points a registration at its (re)computed key; both groups are re-decided.
pub(super) fn set_key(
    tx: &Transaction<'_>,
    id: &str,
    key: &str,
    partner: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let old: Option<String> = tx
        .prepare_cached("SELECT dup_key FROM registrations WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    tx.prepare_cached(
        "INSERT INTO registrations (id, dup_key, partner, dirty, updated_ms) VALUES (?1, ?2, ?3, 1, ?4)
         ON CONFLICT (id) DO UPDATE SET dup_key = excluded.dup_key, partner = excluded.partner,
            dirty = 1, updated_ms = excluded.updated_ms",
    )?
    .execute(params![id, key, partner, now_ms])?;
    if let Some(old) = old.filter(|o| o != key) {
        mark_group_dirty(tx, &old)?;
    }
    mark_group_dirty(tx, key)
}

/// Whether any registration was decided under other rules (or not yet decided).
pub(super) fn outdated(conn: &Connection, rules_version: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM registrations WHERE rules_version IS NULL)
                 OR EXISTS (SELECT 1 FROM registrations WHERE rules_version < ?1)
                 OR EXISTS (SELECT 1 FROM registrations WHERE rules_version > ?1)",
        )?
        .query_row(params![rules_version], |r| r.get(0))?)
}

/// The newest version of every registration that was decided under other rules.
pub(super) fn outdated_latest(
    conn: &Connection,
    rules_version: &str,
) -> Result<Vec<RegistrationEvent>, StoreError> {
    events(
        conn,
        "WHERE e.registration_id IN (SELECT id FROM registrations
                                      WHERE rules_version IS NULL OR rules_version != ?1)
           AND e.at_ms = (SELECT MAX(at_ms) FROM registration_events x
                          WHERE x.registration_id = e.registration_id)",
        params![rules_version],
    )
}

fn events(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<RegistrationEvent>, StoreError> {
    let sql = format!(
        "SELECT e.registration_id, e.at_ms, e.submitted_ms, e.fields FROM registration_events e {filter}
         ORDER BY e.registration_id, e.at_ms, e.fields_hash"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(RegistrationEvent {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            submitted_ms: r.get(2)?,
            fields: serde_json::from_str(&r.get::<_, String>(3)?)?,
        });
    }
    Ok(out)
}

/// The newest registration event time: "now" for the rules.
pub(super) fn as_of(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MAX(at_ms) FROM registration_events")?
        .query_row([], |r| r.get(0))?)
}

/// Keys of groups to decide: changed, decided under other rules, or holding an expired protection.
pub(super) fn keys_to_decide(
    conn: &Connection,
    rules_version: &str,
    as_of_ms: i64,
) -> Result<Vec<String>, StoreError> {
    // One indexed part per reason (see the "hot indexes" migration), so an idle tick reads
    // only the groups that need a decision, not every registration.
    let mut stmt = conn.prepare_cached(
        "WITH k (dup_key) AS MATERIALIZED (
             SELECT dup_key FROM registrations WHERE dirty = 1
             UNION ALL SELECT dup_key FROM registrations WHERE rules_version IS NULL
             UNION ALL SELECT dup_key FROM registrations WHERE rules_version < ?1
             UNION ALL SELECT dup_key FROM registrations WHERE rules_version > ?1
             UNION ALL SELECT dup_key FROM registrations
                       WHERE status = 'approved' AND protected_until <= ?2)
         SELECT DISTINCT dup_key FROM k ORDER BY dup_key",
    )?;
    let keys = stmt
        .query_map(params![rules_version, as_of_ms], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(keys)
}

/// Everything the rules need to decide one group.
/// One group's registrations, reviews, prior decisions and partner names; every group's with
/// `None`.
pub(super) fn group(conn: &Connection, key: Option<&str>) -> Result<RegistrationGroup, StoreError> {
    let events = events(
        conn,
        "WHERE e.registration_id IN (SELECT id FROM registrations WHERE ?1 IS NULL OR dup_key = ?1)",
        params![key],
    )?;
    let mut reviews = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT v.registration_id, v.approve, v.reason, v.at_ms FROM registration_reviews v
             JOIN registrations g ON g.id = v.registration_id WHERE ?1 IS NULL OR g.dup_key = ?1
             ORDER BY v.id",
        )?;
        let rows = stmt.query_map(params![key], |r| {
            Ok(ReviewOutcome {
                registration_id: r.get(0)?,
                approve: r.get(1)?,
                reason: r.get(2)?,
                at_ms: r.get(3)?,
            })
        })?;
        for r in rows {
            reviews.push(r?);
        }
    }
    let mut prior = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT id, status, protected_until, COALESCE(protected_under, rules_version)
             FROM registrations WHERE (?1 IS NULL OR dup_key = ?1) AND status IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, status, until, version) = row?;
            if let Some(status) = Status::parse(&status) {
                prior.push(PriorDecision {
                    registration_id: id,
                    status,
                    protected_until: until,
                    rules_version: version.unwrap_or_default(),
                });
            }
        }
    }
    let mut partner_names = std::collections::BTreeMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT p.partner, p.name FROM registration_partners p
             JOIN registrations g ON g.partner = p.partner WHERE ?1 IS NULL OR g.dup_key = ?1",
        )?;
        let rows = stmt.query_map(params![key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (partner, name): (String, String) = row?;
            partner_names.insert(partner, name);
        }
    }
    Ok(RegistrationGroup {
        events,
        reviews,
        prior,
        partner_names,
        evidence: super::credits::evidence(conn, key)?,
    })
}

/// A stored decision's status, reason, protection end and duplicate-of.
type Previous = (Option<String>, Option<String>, Option<i64>, Option<String>);

/// Stores decisions (recording every change with before/after), clears the groups' dirty flags,
/// and queues the write-backs and ledger lines, in one transaction. Returns how many flipped.
pub(super) fn commit_decisions(
    tx: &Transaction<'_>,
    c: &DecisionCommit,
    now_ms: i64,
) -> Result<usize, StoreError> {
    super::credits::record(tx, &c.credits, now_ms)?;
    let mut changed = 0;
    for d in &c.decisions {
        let before: Option<Previous> = tx
            .prepare_cached(
                "SELECT status, reason, protected_until, duplicate_of FROM registrations WHERE id = ?1",
            )?
            .query_row(params![d.registration_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (old_status, old_reason, old_until, old_dup) = before.unwrap_or_default();
        let same = old_status.as_deref() == Some(d.status.as_str())
            && old_reason.as_deref() == Some(d.reason.as_str())
            && old_until == d.protected_until
            && old_dup == d.duplicate_of;
        tx.prepare_cached(
            "UPDATE registrations SET status = ?2, rule = ?3, line = ?4, reason = ?5,
                protected_until = ?6, duplicate_of = ?7, trace = ?8, rules_version = ?9, dirty = 0,
                decided_ms = CASE WHEN ?10 THEN decided_ms ELSE ?11 END, protected_under = ?12
             WHERE id = ?1",
        )?
        .execute(params![
            d.registration_id,
            d.status.as_str(),
            d.rule,
            d.line as i64,
            d.reason,
            d.protected_until,
            d.duplicate_of,
            serde_json::to_string(&d.trace)?,
            c.rules_version,
            same,
            now_ms,
            d.protected_under,
        ])?;
        if !same {
            changed += 1;
            tx.prepare_cached(
                "INSERT INTO registration_decisions
                    (registration_id, at_ms, before_status, after_status, rule, reason, rules_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                d.registration_id,
                now_ms,
                old_status,
                d.status.as_str(),
                d.rule,
                d.reason,
                c.rules_version
            ])?;
        }
    }
    for key in &c.keys {
        tx.prepare_cached("UPDATE registrations SET dirty = 0 WHERE dup_key = ?1 AND dirty = 1")?
            .execute(params![key])?;
    }
    queries::commit_plan(tx, &c.plan, now_ms)?;
    Ok(changed)
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredRegistration, Option<String>)> {
    Ok((
        StoredRegistration {
            id: r.get(0)?,
            key: r.get(1)?,
            partner: r.get(2)?,
            partner_name: r.get(12)?,
            status: r.get(3)?,
            rule: r.get(4)?,
            line: r.get(5)?,
            reason: r.get(6)?,
            protected_until: r.get(7)?,
            duplicate_of: r.get(8)?,
            rules_version: r.get(9)?,
            decided_ms: r.get(10)?,
            trace: Vec::new(),
        },
        r.get(11)?,
    ))
}

/// A registration's columns and its partner's name (`r` and `p` are bound by [`FROM`]).
const COLUMNS: &str = "r.id, r.dup_key, r.partner, r.status, r.rule, r.line, r.reason,
    r.protected_until, r.duplicate_of, r.rules_version, r.decided_ms, r.trace, p.name";
const FROM: &str = "registrations r LEFT JOIN registration_partners p ON p.partner = r.partner";

/// Registrations, optionally only those with `status`, by id.
pub(super) fn list(
    conn: &Connection,
    status: Option<&str>,
) -> Result<Vec<StoredRegistration>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE ?1 IS NULL OR r.status = ?1 ORDER BY r.dup_key, r.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![status], stored)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(with_trace(row?)?);
    }
    Ok(out)
}

fn with_trace(
    (mut s, trace): (StoredRegistration, Option<String>),
) -> Result<StoredRegistration, StoreError> {
    if let Some(t) = trace {
        s.trace = serde_json::from_str(&t)?;
    }
    Ok(s)
}

/// One registration with its decision history, oldest first.
pub(super) fn get(
    conn: &Connection,
    id: &str,
) -> Result<Option<(StoredRegistration, Vec<DecisionChange>)>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?1");
    let Some(row) = conn
        .prepare_cached(&sql)?
        .query_row(params![id], stored)
        .optional()?
    else {
        return Ok(None);
    };
    let reg = with_trace(row)?;
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, before_status, after_status, rule, reason, rules_version
         FROM registration_decisions WHERE registration_id = ?1 ORDER BY id",
    )?;
    let history = stmt
        .query_map(params![id], |r| {
            Ok(DecisionChange {
                at_ms: r.get(0)?,
                before: r.get(1)?,
                after: r.get(2)?,
                rule: r.get(3)?,
                reason: r.get(4)?,
                rules_version: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((reg, history)))
}

/// Stores an operator's review outcome and marks the group for the next pass. `false` when the
/// registration is unknown.
pub(super) fn add_review(
    tx: &Transaction<'_>,
    id: &str,
    approve: bool,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let key: Option<String> = tx
        .prepare_cached("SELECT dup_key FROM registrations WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    let Some(key) = key else {
        return Ok(false);
    };
    tx.prepare_cached(
        "INSERT INTO registration_reviews (registration_id, approve, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, approve, reason, now_ms])?;
    mark_group_dirty(tx, &key)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::KeyedEvent;
    use crate::rules::{Decision, RegistrationEvent, Status};
    use crate::store::{DecisionCommit, Store};

    fn keyed(id: &str, key: &str, at: i64) -> KeyedEvent {
        KeyedEvent {
            event: RegistrationEvent {
                id: id.into(),
                at_ms: at,
                submitted_ms: at,
                fields: match json!({"partner_key": "p", "contact_email": format!("a@{key}")}) {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                },
            },
            key: key.into(),
            partner: "p".into(),
        }
    }

    fn decision(id: &str, key: &str, status: Status) -> Decision {
        Decision {
            registration_id: id.into(),
            key: key.into(),
            partner: "p".into(),
            status,
            rule: "first_qualified".into(),
            line: 13,
            reason: format!("{status} because"),
            protected_until: None,
            protected_under: None,
            duplicate_of: None,
            trace: Vec::new(),
        }
    }

    fn commit(decisions: Vec<Decision>, key: &str) -> DecisionCommit {
        DecisionCommit {
            rules_version: "v1".into(),
            keys: vec![key.into()],
            decisions,
            ..DecisionCommit::default()
        }
    }

    #[tokio::test]
    async fn versions_groups_decisions_and_history() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let events = vec![
            keyed("a", "acme.example", 10),
            keyed("b", "acme.example", 20),
        ];
        assert_eq!(
            store
                .record_registrations(events.clone(), vec![], 1)
                .await
                .expect("record"),
            2
        );
        // A repeat (a restart re-reading the same versions) stores nothing new.
        assert_eq!(
            store
                .record_registrations(events, vec![], 2)
                .await
                .expect("again"),
            0
        );
        assert_eq!(store.registrations_as_of().await.expect("as of"), Some(20));
        let keys = store
            .registration_keys_to_decide("v1".into(), 20)
            .await
            .expect("keys");
        assert_eq!(keys, vec!["acme.example".to_owned()]);
        let group = store
            .registration_group("acme.example".into())
            .await
            .expect("group");
        assert_eq!(group.events.len(), 2);

        let first = vec![
            decision("a", "acme.example", Status::Approved),
            decision("b", "acme.example", Status::Duplicate),
        ];
        let n = store
            .commit_decisions(commit(first.clone(), "acme.example"), 3)
            .await
            .expect("commit");
        assert_eq!(n, 2);
        assert!(
            store
                .registration_keys_to_decide("v1".into(), 20)
                .await
                .expect("keys")
                .is_empty()
        );
        // The same decisions again: nothing changes, no history line.
        let n = store
            .commit_decisions(commit(first, "acme.example"), 4)
            .await
            .expect("commit");
        assert_eq!(n, 0);
        // A flip is recorded with before and after.
        let flipped = vec![decision("a", "acme.example", Status::Duplicate)];
        store
            .commit_decisions(commit(flipped, "acme.example"), 5)
            .await
            .expect("commit");
        let (a, history) = store
            .registration("a".into())
            .await
            .expect("get")
            .expect("a");
        assert_eq!(a.status.as_deref(), Some("duplicate"));
        let flips: Vec<_> = history
            .iter()
            .map(|h| (h.before.clone(), h.after.clone(), h.at_ms))
            .collect();
        assert_eq!(
            flips,
            vec![
                (None, "approved".into(), 3),
                (Some("approved".into()), "duplicate".into(), 5)
            ]
        );

        // A review or a CRM change marks the whole group for the next pass; unknown ids are refused.
        assert!(
            store
                .add_review("b".into(), true, "ok".into(), 6)
                .await
                .expect("review")
        );
        assert!(
            !store
                .add_review("zz".into(), true, "ok".into(), 6)
                .await
                .expect("review")
        );
        let group = store
            .registration_group("acme.example".into())
            .await
            .expect("group");
        assert_eq!(group.reviews.len(), 1);
        assert_eq!(
            store
                .registration_keys_to_decide("v1".into(), 20)
                .await
                .expect("keys")
                .len(),
            1
        );
        // Rules of another version make every group due again.
        assert!(
            store
                .registrations_outdated("v2".into())
                .await
                .expect("outdated")
        );
        assert_eq!(
            store
                .registrations(Some("duplicate".into()))
                .await
                .expect("list")
                .len(),
            2
        );
    }
}
