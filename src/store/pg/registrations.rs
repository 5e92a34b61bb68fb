//! PostgreSQL SQL for deal registrations, their partner credits (and the leads and activities
//! evidencing influence) and the PRM's MDF requests: the same statements as
//! `store/registrations.rs`, `store/credits.rs` and `store/attribution.rs`.

use postgres::GenericClient;
use serde_json::{Map, Value};

use super::super::credits::{DesiredCredits, StoredCredits, UnsentCredits};
use super::super::registrations::{
    DecisionChange, KeyedEvent, RegistrationGroup, StoredRegistration,
};
use super::super::{DecisionCommit, StoreError};
use super::queries;
use crate::model::content_hash;
use crate::rules::credit::{Evidence, EvidenceItem};
use crate::rules::{PriorDecision, RegistrationEvent, ReviewOutcome, Status};

pub(in crate::store) fn record_partners(
    c: &mut impl GenericClient,
    names: &[(String, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (partner, name) in names {
        let changed = c.execute(
            "INSERT INTO registration_partners (partner, name, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (partner) DO UPDATE SET name = excluded.name, updated_ms = excluded.updated_ms
             WHERE registration_partners.name <> excluded.name",
            &[partner, name, &now_ms],
        )?;
        if changed > 0 {
            c.execute(
                "UPDATE registrations SET dirty = 1 WHERE partner = $1",
                &[partner],
            )?;
        }
    }
    Ok(())
}

fn mark_group_dirty(c: &mut impl GenericClient, key: &str) -> Result<(), StoreError> {
    // Rows already dirty are left alone: a busy group costs a read, not a rewrite of every row.
    c.execute(
        "UPDATE registrations SET dirty = 1 WHERE dup_key = $1 AND dirty = 0",
        &[&key],
    )?;
    Ok(())
}

pub(in crate::store) fn record_events(
    c: &mut impl GenericClient,
    events: &[KeyedEvent],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for k in events {
        let e = &k.event;
        n += c.execute(
            // A registration an erasure left holding a person is not recorded again.
            "INSERT INTO registration_events (registration_id, at_ms, submitted_ms, fields, fields_hash)
             SELECT $1::TEXT, $2::BIGINT, $3::BIGINT, $4::TEXT, $5::TEXT
             WHERE NOT EXISTS (SELECT 1 FROM erased_records WHERE record_id = $1::TEXT)
             ON CONFLICT DO NOTHING",
            &[
                &e.id,
                &e.at_ms,
                &e.submitted_ms,
                &serde_json::to_string(&e.fields)?,
                &content_hash(&e.fields),
            ],
        )?;
        set_key(c, &e.id, &k.key, &k.partner, now_ms)?;
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(in crate::store) fn touch(
    c: &mut impl GenericClient,
    ids: &[String],
) -> Result<(), StoreError> {
    for id in ids {
        c.execute(
            "UPDATE registrations SET dirty = 1
             WHERE dup_key = (SELECT dup_key FROM registrations WHERE id = $1) AND dirty = 0",
            &[id],
        )?;
    }
    Ok(())
}

pub(in crate::store) fn set_key(
    c: &mut impl GenericClient,
    id: &str,
    key: &str,
    partner: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let old: Option<String> = c
        .query_opt("SELECT dup_key FROM registrations WHERE id = $1", &[&id])?
        .map(|r| r.try_get(0))
        .transpose()?;
    c.execute(
        "INSERT INTO registrations (id, dup_key, partner, dirty, updated_ms) VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (id) DO UPDATE SET dup_key = excluded.dup_key, partner = excluded.partner,
            dirty = 1, updated_ms = excluded.updated_ms",
        &[&id, &key, &partner, &now_ms],
    )?;
    if let Some(old) = old.filter(|o| o != key) {
        mark_group_dirty(c, &old)?;
    }
    mark_group_dirty(c, key)
}

pub(in crate::store) fn outdated(
    c: &mut impl GenericClient,
    rules_version: &str,
) -> Result<bool, StoreError> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM registrations WHERE rules_version IS NULL)
             OR EXISTS (SELECT 1 FROM registrations WHERE rules_version <> $1)",
        &[&rules_version],
    )?
    .try_get(0)?)
}

pub(in crate::store) fn outdated_latest(
    c: &mut impl GenericClient,
    rules_version: &str,
) -> Result<Vec<RegistrationEvent>, StoreError> {
    events(
        c,
        "WHERE e.registration_id IN (SELECT id FROM registrations
                                      WHERE rules_version IS NULL OR rules_version <> $1::TEXT)
           AND e.at_ms = (SELECT MAX(at_ms) FROM registration_events x
                          WHERE x.registration_id = e.registration_id)",
        &[&rules_version],
    )
}

fn events(
    c: &mut impl GenericClient,
    filter: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<RegistrationEvent>, StoreError> {
    let sql = format!(
        "SELECT e.registration_id, e.at_ms, e.submitted_ms, e.fields FROM registration_events e {filter}
         ORDER BY e.registration_id, e.at_ms, e.fields_hash"
    );
    c.query(&sql, args)?
        .iter()
        .map(|r| {
            Ok(RegistrationEvent {
                id: r.try_get(0)?,
                at_ms: r.try_get(1)?,
                submitted_ms: r.try_get(2)?,
                fields: serde_json::from_str(r.try_get::<_, &str>(3)?)?,
            })
        })
        .collect()
}

pub(in crate::store) fn as_of(c: &mut impl GenericClient) -> Result<Option<i64>, StoreError> {
    Ok(
        c.query_one("SELECT MAX(at_ms) FROM registration_events", &[])?
            .try_get(0)?,
    )
}

pub(in crate::store) fn keys_to_decide(
    c: &mut impl GenericClient,
    rules_version: &str,
    as_of_ms: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(c.query(
        "SELECT dup_key FROM registrations WHERE dirty = 1
         UNION SELECT dup_key FROM registrations WHERE rules_version IS NULL
         UNION SELECT dup_key FROM registrations WHERE rules_version <> $1
         UNION SELECT dup_key FROM registrations
               WHERE status = 'approved' AND protected_until <= $2
         ORDER BY dup_key",
        &[&rules_version, &as_of_ms],
    )?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?)
}

pub(in crate::store) fn group(
    c: &mut impl GenericClient,
    key: Option<&str>,
) -> Result<RegistrationGroup, StoreError> {
    let events = events(
        c,
        "WHERE e.registration_id IN (SELECT id FROM registrations
                                      WHERE $1::TEXT IS NULL OR dup_key = $1::TEXT)",
        &[&key],
    )?;
    let reviews = c
        .query(
            "SELECT v.registration_id, v.approve, v.reason, v.at_ms FROM registration_reviews v
             JOIN registrations g ON g.id = v.registration_id
             WHERE $1::TEXT IS NULL OR g.dup_key = $1::TEXT
             ORDER BY v.id",
            &[&key],
        )?
        .iter()
        .map(|r| {
            Ok(ReviewOutcome {
                registration_id: r.try_get(0)?,
                approve: r.try_get::<_, i64>(1)? != 0,
                reason: r.try_get(2)?,
                at_ms: r.try_get(3)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    let mut prior = Vec::new();
    for r in c.query(
        "SELECT id, status, protected_until, COALESCE(protected_under, rules_version)
         FROM registrations WHERE ($1::TEXT IS NULL OR dup_key = $1::TEXT) AND status IS NOT NULL",
        &[&key],
    )? {
        let status: String = r.try_get(1)?;
        if let Some(status) = Status::parse(&status) {
            prior.push(PriorDecision {
                registration_id: r.try_get(0)?,
                status,
                protected_until: r.try_get(2)?,
                rules_version: r.try_get::<_, Option<String>>(3)?.unwrap_or_default(),
            });
        }
    }
    let mut partner_names = std::collections::BTreeMap::new();
    for r in c.query(
        "SELECT DISTINCT p.partner, p.name FROM registration_partners p
         JOIN registrations g ON g.partner = p.partner WHERE $1::TEXT IS NULL OR g.dup_key = $1::TEXT",
        &[&key],
    )? {
        partner_names.insert(r.try_get(0)?, r.try_get(1)?);
    }
    Ok(RegistrationGroup {
        events,
        reviews,
        prior,
        partner_names,
        evidence: evidence(c, key)?,
    })
}

pub(in crate::store) fn commit_decisions(
    c: &mut impl GenericClient,
    commit: &DecisionCommit,
    now_ms: i64,
) -> Result<usize, StoreError> {
    record_credits(c, &commit.credits, now_ms)?;
    let mut changed = 0;
    for d in &commit.decisions {
        let before = c.query_opt(
            "SELECT status, reason, protected_until, duplicate_of FROM registrations WHERE id = $1",
            &[&d.registration_id],
        )?;
        let (old_status, old_reason, old_until, old_dup): (
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
        ) = match before {
            Some(r) => (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?),
            None => (None, None, None, None),
        };
        let same = old_status.as_deref() == Some(d.status.as_str())
            && old_reason.as_deref() == Some(d.reason.as_str())
            && old_until == d.protected_until
            && old_dup == d.duplicate_of;
        c.execute(
            "UPDATE registrations SET status = $2, rule = $3, line = $4, reason = $5,
                protected_until = $6, duplicate_of = $7, trace = $8, rules_version = $9, dirty = 0,
                decided_ms = CASE WHEN $10::BOOLEAN THEN decided_ms ELSE $11 END,
                protected_under = $12
             WHERE id = $1",
            &[
                &d.registration_id,
                &d.status.as_str(),
                &d.rule,
                &(d.line as i64),
                &d.reason,
                &d.protected_until,
                &d.duplicate_of,
                &serde_json::to_string(&d.trace)?,
                &commit.rules_version,
                &same,
                &now_ms,
                &d.protected_under,
            ],
        )?;
        if !same {
            changed += 1;
            c.execute(
                "INSERT INTO registration_decisions
                    (registration_id, at_ms, before_status, after_status, rule, reason, rules_version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &d.registration_id,
                    &now_ms,
                    &old_status,
                    &d.status.as_str(),
                    &d.rule,
                    &d.reason,
                    &commit.rules_version,
                ],
            )?;
        }
    }
    for key in &commit.keys {
        c.execute(
            "UPDATE registrations SET dirty = 0 WHERE dup_key = $1 AND dirty = 1",
            &[key],
        )?;
    }
    queries::commit_plan(c, &commit.plan, now_ms)?;
    Ok(changed)
}

const COLUMNS: &str = "r.id, r.dup_key, r.partner, r.status, r.rule, r.line, r.reason,
    r.protected_until, r.duplicate_of, r.rules_version, r.decided_ms, r.trace, p.name";
const FROM: &str = "registrations r LEFT JOIN registration_partners p ON p.partner = r.partner";

fn stored(r: &postgres::Row) -> Result<StoredRegistration, StoreError> {
    let trace: Option<String> = r.try_get(11)?;
    Ok(StoredRegistration {
        id: r.try_get(0)?,
        key: r.try_get(1)?,
        partner: r.try_get(2)?,
        partner_name: r.try_get(12)?,
        status: r.try_get(3)?,
        rule: r.try_get(4)?,
        line: r.try_get(5)?,
        reason: r.try_get(6)?,
        protected_until: r.try_get(7)?,
        duplicate_of: r.try_get(8)?,
        rules_version: r.try_get(9)?,
        decided_ms: r.try_get(10)?,
        trace: trace
            .map(|t| serde_json::from_str(&t))
            .transpose()?
            .unwrap_or_default(),
    })
}

pub(in crate::store) fn list(
    c: &mut impl GenericClient,
    status: Option<&str>,
) -> Result<Vec<StoredRegistration>, StoreError> {
    c.query(
        &format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE $1::TEXT IS NULL OR r.status = $1::TEXT
             ORDER BY r.dup_key, r.id"
        ),
        &[&status],
    )?
    .iter()
    .map(stored)
    .collect()
}

pub(in crate::store) fn get(
    c: &mut impl GenericClient,
    id: &str,
) -> Result<Option<(StoredRegistration, Vec<DecisionChange>)>, StoreError> {
    let Some(row) = c.query_opt(
        &format!("SELECT {COLUMNS} FROM {FROM} WHERE r.id = $1"),
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let reg = stored(&row)?;
    let history = c
        .query(
            "SELECT at_ms, before_status, after_status, rule, reason, rules_version
             FROM registration_decisions WHERE registration_id = $1 ORDER BY id",
            &[&id],
        )?
        .iter()
        .map(|r| {
            Ok(DecisionChange {
                at_ms: r.try_get(0)?,
                before: r.try_get(1)?,
                after: r.try_get(2)?,
                rule: r.try_get(3)?,
                reason: r.try_get(4)?,
                rules_version: r.try_get(5)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()?;
    Ok(Some((reg, history)))
}

pub(in crate::store) fn add_review(
    c: &mut impl GenericClient,
    id: &str,
    approve: bool,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let Some(key) = c
        .query_opt("SELECT dup_key FROM registrations WHERE id = $1", &[&id])?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?
    else {
        return Ok(false);
    };
    c.execute(
        "INSERT INTO registration_reviews (registration_id, approve, reason, at_ms)
         VALUES ($1, $2, $3, $4)",
        &[&id, &i64::from(approve), &reason, &now_ms],
    )?;
    mark_group_dirty(c, &key)?;
    Ok(true)
}

// --- partner credits (see `store/credits.rs`) ---

/// The desired credits of a deal with none.
const NO_CREDITS: &str = "[]";

fn record_credits(
    c: &mut impl GenericClient,
    rows: &[DesiredCredits],
    now_ms: i64,
) -> Result<(), StoreError> {
    for r in rows {
        let args: [&(dyn postgres::types::ToSql + Sync); 4] =
            [&r.registration_id, &r.desired, &r.reasons, &now_ms];
        if r.desired == NO_CREDITS {
            c.execute(
                "UPDATE partner_credits SET desired = $2, reasons = $3, updated_ms = $4
                 WHERE registration_id = $1
                   AND (desired IS DISTINCT FROM $2 OR reasons IS DISTINCT FROM $3)",
                &args,
            )?;
        } else {
            c.execute(
                "INSERT INTO partner_credits (registration_id, desired, reasons, updated_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (registration_id) DO UPDATE SET desired = excluded.desired,
                     reasons = excluded.reasons, updated_ms = excluded.updated_ms
                 WHERE partner_credits.desired IS DISTINCT FROM excluded.desired
                    OR partner_credits.reasons IS DISTINCT FROM excluded.reasons",
                &args,
            )?;
        }
    }
    Ok(())
}

pub(in crate::store) fn credits_of(
    c: &mut impl GenericClient,
    id: &str,
) -> Result<Option<StoredCredits>, StoreError> {
    Ok(c.query_opt(
        "SELECT desired, sent, reasons, last_error FROM partner_credits WHERE registration_id = $1",
        &[&id],
    )?
    .map(|r| StoredCredits {
        desired: r.get(0),
        sent: r.get(1),
        reasons: r.get(2),
        last_error: r.get(3),
    }))
}

pub(in crate::store) fn sent_credits(
    c: &mut impl GenericClient,
    ids: &[String],
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    Ok(c.query(
        "SELECT registration_id, sent FROM partner_credits
         WHERE registration_id = ANY($1) AND sent IS NOT NULL",
        &[&ids],
    )?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, postgres::Error>>()?)
}

pub(in crate::store) fn unsent_credits(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<UnsentCredits>, StoreError> {
    Ok(c.query(
        "SELECT registration_id, desired FROM partner_credits WHERE sent IS DISTINCT FROM desired
         ORDER BY registration_id LIMIT $1",
        &[&(limit as i64)],
    )?
    .iter()
    .map(|r| {
        Ok(UnsentCredits {
            registration_id: r.try_get(0)?,
            desired: r.try_get(1)?,
        })
    })
    .collect::<Result<_, postgres::Error>>()?)
}

pub(in crate::store) fn complete_credits(
    c: &mut impl GenericClient,
    outcomes: &[(UnsentCredits, Result<(), String>)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (u, outcome) in outcomes {
        match outcome {
            Ok(()) => c.execute(
                "UPDATE partner_credits SET sent = $2, last_error = NULL, updated_ms = $3
                 WHERE registration_id = $1 AND desired = $2",
                &[&u.registration_id, &u.desired, &now_ms],
            )?,
            Err(e) => c.execute(
                "UPDATE partner_credits SET last_error = $2, updated_ms = $3
                 WHERE registration_id = $1",
                &[&u.registration_id, e, &now_ms],
            )?,
        };
    }
    Ok(())
}

// --- MDF requests (see `store/attribution.rs`) ---

pub(in crate::store) fn record_mdf(
    c: &mut impl GenericClient,
    rows: &[(String, Map<String, Value>)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (id, fields) in rows {
        c.execute(
            "INSERT INTO mdf_requests (id, fields, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET fields = excluded.fields, updated_ms = excluded.updated_ms",
            &[id, &serde_json::to_string(fields)?, &now_ms],
        )?;
    }
    Ok(())
}

pub(in crate::store) fn record_evidence(
    c: &mut impl GenericClient,
    rows: &[(String, EvidenceItem)],
    gone: &[(Evidence, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut dirty = Vec::new();
    for (key, e) in rows {
        let was = c
            .query_opt(
                "SELECT dup_key, partner, at_ms FROM credit_evidence WHERE kind = $1 AND id = $2",
                &[&e.kind.as_str(), &e.id],
            )?
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                )
            });
        if was.as_ref() == Some(&(key.clone(), e.partner.clone(), e.at_ms)) {
            continue;
        }
        c.execute(
            "INSERT INTO credit_evidence (kind, id, dup_key, partner, at_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (kind, id) DO UPDATE SET dup_key = excluded.dup_key,
                 partner = excluded.partner, at_ms = excluded.at_ms, updated_ms = excluded.updated_ms",
            &[&e.kind.as_str(), &e.id, key, &e.partner, &e.at_ms, &now_ms],
        )?;
        dirty.extend(was.map(|w| w.0));
        dirty.push(key.clone());
    }
    for (kind, id) in gone {
        if let Some(r) = c.query_opt(
            "DELETE FROM credit_evidence WHERE kind = $1 AND id = $2 RETURNING dup_key",
            &[&kind.as_str(), id],
        )? {
            dirty.push(r.get(0));
        }
    }
    dirty.sort();
    dirty.dedup();
    for key in dirty {
        mark_group_dirty(c, &key)?;
    }
    Ok(())
}

fn evidence(
    c: &mut impl GenericClient,
    key: Option<&str>,
) -> Result<Vec<(String, EvidenceItem)>, StoreError> {
    let rows = c.query(
        "SELECT dup_key, kind, id, partner, at_ms FROM credit_evidence
         WHERE $1::TEXT IS NULL OR dup_key = $1::TEXT ORDER BY dup_key, at_ms, kind, id",
        &[&key],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let kind = Evidence::parse(r.get::<_, &str>(1))?;
            Some((
                r.get(0),
                EvidenceItem {
                    kind,
                    id: r.get(2),
                    partner: r.get(3),
                    at_ms: r.get(4),
                },
            ))
        })
        .collect())
}
