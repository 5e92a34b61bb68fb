//! Numbered, append-only schema migrations tracked by SQLite's `user_version`. Never edit a shipped step.

use rusqlite_migration::{M, Migrations};

/// Every migration, in order. Append new steps; never change or reorder existing ones.
pub fn all() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        // "credentials": rotated connector credentials (Salesforce refresh tokens).
        M::up(CREDENTIALS),
        // "registrations": rules-of-engagement registrations, decisions and reviews.
        M::up(super::registrations::MIGRATION),
        // "ordering": newest vendor modification time applied per link side.
        M::up(ORDERING),
        // "holds": connections paused until re-authorised.
        M::up(HOLDS),
        // "dlq replay": what a dead letter needs to be replayed.
        M::up(DLQ_REPLAY),
        // "flip history": recent writes per link, for flip-flop quarantine.
        M::up(FLIP_HISTORY),
        // "priority": live writes drain before backfill.
        M::up(PRIORITY),
        // "counters": status and metrics counts kept by triggers (see counters.rs).
        M::up(super::counters::MIGRATION),
        // "hot indexes": what hot queries and retention filter on.
        M::up(HOT_INDEXES),
        // "partner names": partners' names from the PRM, for registration reasons.
        M::up(super::registrations::PARTNERS_MIGRATION),
        // "lifecycle": delete writes in the outbox, tombstones on links.
        M::up(LIFECYCLE),
        // "state digests": links keep field digests instead of values.
        M::up(STATE_DIGESTS),
        // "resync": `prmsync resync` requests and how far each read has come.
        M::up(super::resync::MIGRATION),
        // "associations": HubSpot associations flows asked for, until confirmed.
        M::up(super::associations::MIGRATION),
        // "erasure": the audit of erasures (no personal data).
        M::up(super::erasure::MIGRATION),
        // "mdf requests": the PRM's MDF requests, for the attribution report.
        M::up(super::attribution::MIGRATION),
        // "dirty marks": marking a registration group finds only its rows not yet marked.
        M::up(DIRTY_MARKS),
        // "erase requests": `prmsync erase` requests the running daemon carries out.
        M::up(super::erase_requests::MIGRATION),
        // "partner credits": each sourced deal's partner credits and what the CRM confirmed.
        M::up(super::credits::MIGRATION),
        // "credit evidence": partners' leads and activities, for multi-partner credit.
        M::up(super::credits::EVIDENCE_MIGRATION),
        // "credit reasons": each partner credit's reason, for `registrations show`.
        M::up(super::credits::REASONS_MIGRATION),
        // "schema drift": drifted mapped CRM fields, and the writes that left a field out.
        M::up(super::schema_drift::MIGRATION),
    ])
}

/// Step "dirty marks" (scale): a registration's new version marks its group dirty; with the group
/// key alone in the index that visited every row of the group (thousands for a big account, on
/// every event: 70 % of the writer thread in a 100k backfill). Keyed by (group, dirty), the mark
/// and the clear seek only the rows they change.
const DIRTY_MARKS: &str = r#"
CREATE INDEX registrations_by_key_dirty ON registrations (dup_key, dirty);
DROP INDEX registrations_by_key;
"#;

const V1: &str = r#"
CREATE TABLE cursors (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    position    TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (system, object)
) STRICT;

CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    system       TEXT NOT NULL,
    object       TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    modified_ms  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    received_ms  INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    processed_ms INTEGER
) STRICT;
CREATE INDEX inbox_pending ON inbox (state, id);

CREATE TABLE links (
    flow          TEXT NOT NULL,
    source_id     TEXT NOT NULL,
    target_id     TEXT,
    target_state  TEXT NOT NULL DEFAULT '{}',
    target_hash   TEXT,
    source_state  TEXT NOT NULL DEFAULT '{}',
    source_hash   TEXT,
    updated_ms    INTEGER NOT NULL,
    PRIMARY KEY (flow, source_id)
) STRICT;
CREATE INDEX links_by_target ON links (flow, target_id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    flow            TEXT NOT NULL,
    direction       TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    target_id       TEXT,
    system          TEXT NOT NULL,
    object          TEXT NOT NULL,
    id_property     TEXT,
    payload         TEXT NOT NULL,
    state_after     TEXT NOT NULL,
    content_hash    TEXT NOT NULL,
    mapping_version TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    UNIQUE (flow, direction, source_id)
) STRICT;
CREATE INDEX outbox_due ON outbox (system, next_attempt_ms);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    flow        TEXT,
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    payload     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE ledger (
    id              INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    flow            TEXT NOT NULL,
    direction       TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    target_id       TEXT,
    action          TEXT NOT NULL,
    content_hash    TEXT,
    mapping_version TEXT,
    detail          TEXT
) STRICT;
CREATE INDEX ledger_by_record ON ledger (flow, source_id, at_ms);
"#;

/// Step "credentials" (connectors issue): rotated OAuth refresh tokens, one row per connector.
const CREDENTIALS: &str = r#"
CREATE TABLE credentials (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
) STRICT;
"#;

/// Step "ordering" (delivery guarantees): the vendor modification time of the last version of
/// each side that prmsync applied or saw, so an older version arriving late is never applied.
const ORDERING: &str = r#"
ALTER TABLE links ADD COLUMN source_modified_ms INTEGER;
ALTER TABLE links ADD COLUMN target_modified_ms INTEGER;
"#;

/// Step "holds" (delivery guarantees): connections paused until re-authorised, for `status`.
const HOLDS: &str = r#"
CREATE TABLE connection_holds (
    system     TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL,
    since_ms   INTEGER NOT NULL
) STRICT;
"#;

/// Step "dlq replay" (delivery guarantees): what a dead letter needs to be replayed: the full
/// write for outbox failures, the record version's modification time for inbox failures.
const DLQ_REPLAY: &str = r#"
ALTER TABLE dead_letters ADD COLUMN write TEXT;
ALTER TABLE dead_letters ADD COLUMN modified_ms INTEGER;
"#;

/// Step "flip history" (delivery guarantees): the last writes queued per link, [at_ms, "side:hash"],
/// so a record whose values keep flipping back and forth is quarantined instead of looping.
const FLIP_HISTORY: &str = r#"
ALTER TABLE links ADD COLUMN write_history TEXT NOT NULL DEFAULT '[]';
"#;

/// Step "priority" (delivery guarantees): live changes and new registrations (0) drain before
/// backfill updates of old versions (1).
const PRIORITY: &str = r#"
ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_by_priority ON outbox (system, priority, next_attempt_ms);
"#;

/// Step "hot indexes" (scale): every per-record lookup and every status read is an index seek.
/// - quarantine check in each link lookup (`EXISTS` over dead letters by flow and record);
/// - the pending inbox row a new dead letter takes its version time from;
/// - the newest registration time (`as_of`) and the retention walk over registration versions;
/// - the groups to decide: dirty ones, ones decided under other rules, expiring protections;
/// - the last outbox errors shown by `status`.
const HOT_INDEXES: &str = r#"
CREATE INDEX dead_letters_by_record ON dead_letters (flow, record_id, origin);
CREATE INDEX inbox_pending_by_record ON inbox (record_id) WHERE state = 'pending';
CREATE INDEX registration_events_by_time ON registration_events (at_ms);
CREATE INDEX registrations_dirty ON registrations (dup_key) WHERE dirty = 1;
CREATE INDEX registrations_by_rules ON registrations (rules_version, dup_key);
CREATE INDEX registrations_protected ON registrations (status, protected_until);
CREATE INDEX outbox_errors ON outbox (id) WHERE last_error IS NOT NULL;
"#;

/// Step "lifecycle" (issue 11): an outbox row either upserts or deletes its record; a link whose
/// record was deleted on one side keeps a tombstone (the reason) so it is not silently re-created.
const LIFECYCLE: &str = r#"
ALTER TABLE outbox ADD COLUMN op TEXT NOT NULL DEFAULT 'upsert';
ALTER TABLE links ADD COLUMN tombstone TEXT;
"#;

/// Step "state digests" (scale): a link keeps 12 bytes per field of each side (see
/// `store/digest.rs`) instead of the values and a whole-state hash. Rows written before keep their
/// values in the text columns and are read from them until the side is next written.
/// The table is rebuilt keyed by (flow, source id) without a rowid (one b-tree instead of a
/// table and its key index), without the unused whole-state hashes.
const STATE_DIGESTS: &str = r#"
CREATE TABLE links_by_key (
    flow               TEXT NOT NULL,
    source_id          TEXT NOT NULL,
    target_id          TEXT,
    target_digest      BLOB,
    source_digest      BLOB,
    source_modified_ms INTEGER,
    target_modified_ms INTEGER,
    updated_ms         INTEGER NOT NULL,
    write_history      TEXT NOT NULL DEFAULT '[]',
    target_state       TEXT NOT NULL DEFAULT '{}',
    source_state       TEXT NOT NULL DEFAULT '{}',
    tombstone          TEXT,
    PRIMARY KEY (flow, source_id)
) STRICT, WITHOUT ROWID;
INSERT INTO links_by_key (flow, source_id, target_id, source_modified_ms, target_modified_ms,
                          updated_ms, write_history, target_state, source_state, tombstone)
    SELECT flow, source_id, target_id, source_modified_ms, target_modified_ms, updated_ms,
           write_history, target_state, source_state, tombstone
    FROM links;
DROP TABLE links;
ALTER TABLE links_by_key RENAME TO links;
CREATE INDEX links_by_target ON links (flow, target_id);
CREATE TRIGGER links_count_insert AFTER INSERT ON links BEGIN
    UPDATE gauges SET value = value + 1 WHERE name = 'links';
END;
CREATE TRIGGER links_count_delete AFTER DELETE ON links BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'links';
END;
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::all().validate().expect("migrations validate");
    }

    /// The per-record and per-tick queries (as the store runs them) seek an index: none reads a
    /// whole table, so their cost does not grow with the links, the ledger or the registrations.
    #[test]
    fn hot_queries_use_an_index() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        super::all().to_latest(&mut conn).expect("migrate");
        let hot = [
            "SELECT EXISTS (SELECT 1 FROM dead_letters d WHERE d.origin = 'quarantine'
                AND d.flow = links.flow AND d.record_id = links.source_id)
             FROM links WHERE flow = ?1 AND source_id = ?2",
            "SELECT source_id FROM links WHERE flow = ?1 AND target_id = ?2",
            "SELECT id FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?1",
            "SELECT modified_ms FROM inbox WHERE system = ?1 AND object = ?2 AND record_id = ?3
             AND state = 'pending' ORDER BY id DESC LIMIT 1",
            "SELECT MAX(at_ms) FROM registration_events",
            "SELECT EXISTS (SELECT 1 FROM registrations WHERE rules_version IS NULL)
                 OR EXISTS (SELECT 1 FROM registrations WHERE rules_version < ?1)
                 OR EXISTS (SELECT 1 FROM registrations WHERE rules_version > ?1)",
            "WITH k (dup_key) AS MATERIALIZED (
                 SELECT dup_key FROM registrations WHERE dirty = 1
                 UNION ALL SELECT dup_key FROM registrations WHERE rules_version IS NULL
                 UNION ALL SELECT dup_key FROM registrations WHERE rules_version < ?1
                 UNION ALL SELECT dup_key FROM registrations WHERE rules_version > ?1
                 UNION ALL SELECT dup_key FROM registrations
                           WHERE status = 'approved' AND protected_until <= ?2)
             SELECT DISTINCT dup_key FROM k ORDER BY dup_key",
            "SELECT flow FROM outbox WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 5",
            "SELECT name, value FROM gauges",
            "SELECT a.flow, f.target_id, t.target_id FROM associations a
             JOIN links f ON f.flow = a.flow AND f.source_id = a.source_id
             JOIN links t ON t.flow = a.with_flow AND t.source_id = a.with_key
             WHERE a.state = 'pending' AND a.flow = ?1 AND f.target_id IS NOT NULL
             ORDER BY a.updated_ms LIMIT ?2",
            "SELECT at_ms, rowid FROM registration_events
             WHERE at_ms < ?1 AND (at_ms, rowid) > (?2, ?3) ORDER BY at_ms, rowid LIMIT ?4",
            "UPDATE registrations SET dirty = 1 WHERE dup_key = ?1 AND dirty = 0",
            "UPDATE registrations SET dirty = 0 WHERE dup_key = ?1 AND dirty = 1",
        ];
        for sql in hot {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect(sql);
            let n = stmt.parameter_count();
            let args: Vec<i64> = vec![1; n];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .expect("plan")
                .collect::<Result<_, _>>()
                .expect("plan rows");
            // A scan is fine only over a partial index of the few rows it selects (dirty
            // groups, failed writes), a constant, a materialised result or the gauges' rows.
            let scans: Vec<&String> = plan
                .iter()
                .filter(|step| step.starts_with("SCAN"))
                .filter(|step| {
                    !(step.ends_with("INDEX registrations_dirty")
                        || step.ends_with("INDEX outbox_errors")
                        || matches!(
                            step.as_str(),
                            "SCAN CONSTANT ROW" | "SCAN k" | "SCAN gauges"
                        ))
                })
                .collect();
            assert!(scans.is_empty(), "{sql}\n{plan:#?}");
            // Marking and clearing a group seek the rows they change, not the whole group.
            if sql.starts_with("UPDATE registrations SET dirty") {
                assert!(
                    plan.iter().any(|s| s.contains("(dup_key=? AND dirty=?)")),
                    "{sql}\n{plan:#?}"
                );
            }
        }
    }
}
