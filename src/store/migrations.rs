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
        // "partner names": partners' names from the PRM, for registration reasons.
        M::up(super::registrations::PARTNERS_MIGRATION),
    ])
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::all().validate().expect("migrations validate");
    }
}
