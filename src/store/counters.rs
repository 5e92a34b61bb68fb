//! Counters and gauges kept by SQLite triggers in the same transactions as the writes they count,
//! so `prmsync status` and `/metrics` read a handful of rows whatever the number of links.

use rusqlite::Connection;

use super::StoreError;
use super::queries::FlowCounts;

/// Migration step "counters": the tables, their starting values (one full count, at migration
/// time), and the triggers that keep them current. Every write path (planner, writers, dead-letter
/// replay, registrations) is covered without it having to know about the counters.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE gauges (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO gauges (name, value) VALUES
    ('links',           (SELECT COUNT(*) FROM links)),
    ('inbox_pending',   (SELECT COUNT(*) FROM inbox WHERE state = 'pending')),
    ('outbox_depth',    (SELECT COUNT(*) FROM outbox)),
    ('outbox_retrying', (SELECT COUNT(*) FROM outbox WHERE attempts > 0)),
    ('dead_letters',    (SELECT COUNT(*) FROM dead_letters));

-- Totals since the state file was created: pruning the ledger does not lower them.
CREATE TABLE ledger_totals (
    flow       TEXT NOT NULL,
    direction  TEXT NOT NULL,
    action     TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (flow, direction, action)
) STRICT, WITHOUT ROWID;
INSERT INTO ledger_totals (flow, direction, action, count)
    SELECT flow, direction, action, COUNT(*) FROM ledger GROUP BY flow, direction, action;

CREATE TABLE registration_totals (
    status  TEXT PRIMARY KEY,
    count   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO registration_totals (status, count)
    SELECT COALESCE(status, 'undecided'), COUNT(*) FROM registrations GROUP BY 1;

CREATE TRIGGER links_count_insert AFTER INSERT ON links BEGIN
    UPDATE gauges SET value = value + 1 WHERE name = 'links';
END;
CREATE TRIGGER links_count_delete AFTER DELETE ON links BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'links';
END;

CREATE TRIGGER inbox_count_insert AFTER INSERT ON inbox WHEN NEW.state = 'pending' BEGIN
    UPDATE gauges SET value = value + 1 WHERE name = 'inbox_pending';
END;
CREATE TRIGGER inbox_count_update AFTER UPDATE OF state ON inbox BEGIN
    UPDATE gauges SET value = value + (NEW.state = 'pending') - (OLD.state = 'pending')
    WHERE name = 'inbox_pending';
END;
CREATE TRIGGER inbox_count_delete AFTER DELETE ON inbox WHEN OLD.state = 'pending' BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'inbox_pending';
END;

CREATE TRIGGER outbox_count_insert AFTER INSERT ON outbox BEGIN
    UPDATE gauges SET value = value + 1 WHERE name = 'outbox_depth';
    UPDATE gauges SET value = value + (NEW.attempts > 0) WHERE name = 'outbox_retrying';
END;
CREATE TRIGGER outbox_count_update AFTER UPDATE OF attempts ON outbox BEGIN
    UPDATE gauges SET value = value + (NEW.attempts > 0) - (OLD.attempts > 0)
    WHERE name = 'outbox_retrying';
END;
CREATE TRIGGER outbox_count_delete AFTER DELETE ON outbox BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'outbox_depth';
    UPDATE gauges SET value = value - (OLD.attempts > 0) WHERE name = 'outbox_retrying';
END;

CREATE TRIGGER dead_letters_count_insert AFTER INSERT ON dead_letters BEGIN
    UPDATE gauges SET value = value + 1 WHERE name = 'dead_letters';
END;
CREATE TRIGGER dead_letters_count_delete AFTER DELETE ON dead_letters BEGIN
    UPDATE gauges SET value = value - 1 WHERE name = 'dead_letters';
END;

CREATE TRIGGER ledger_count_insert AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_totals (flow, direction, action, count)
    VALUES (NEW.flow, NEW.direction, NEW.action, 1)
    ON CONFLICT (flow, direction, action) DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER registrations_count_insert AFTER INSERT ON registrations BEGIN
    INSERT INTO registration_totals (status, count) VALUES (COALESCE(NEW.status, 'undecided'), 1)
    ON CONFLICT (status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER registrations_count_update AFTER UPDATE OF status ON registrations
WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE registration_totals SET count = count - 1
    WHERE status = COALESCE(OLD.status, 'undecided');
    INSERT INTO registration_totals (status, count) VALUES (COALESCE(NEW.status, 'undecided'), 1)
    ON CONFLICT (status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER registrations_count_delete AFTER DELETE ON registrations BEGIN
    UPDATE registration_totals SET count = count - 1
    WHERE status = COALESCE(OLD.status, 'undecided');
END;
"#;

/// The kept counts, read in a few indexed lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub links: i64,
    pub inbox_pending: i64,
    pub outbox_depth: i64,
    pub outbox_retrying: i64,
    pub dead_letters: i64,
    pub ledger: Vec<FlowCounts>,
    /// Registrations by decision status (`undecided` when not decided yet), non-zero only.
    pub registrations: Vec<(String, i64)>,
}

/// Whether this state file keeps counters (a file from before the step does not; `prmsync
/// status` never migrates, so it then counts the slow way).
pub(super) fn kept(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gauges')",
        [],
        |r| r.get(0),
    )?)
}

/// The counts as the triggers kept them.
pub(super) fn read(conn: &Connection) -> Result<Counts, StoreError> {
    let mut c = Counts::default();
    {
        let mut stmt = conn.prepare_cached("SELECT name, value FROM gauges")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, value) = row?;
            match name.as_str() {
                "links" => c.links = value,
                "inbox_pending" => c.inbox_pending = value,
                "outbox_depth" => c.outbox_depth = value,
                "outbox_retrying" => c.outbox_retrying = value,
                "dead_letters" => c.dead_letters = value,
                // A gauge added by a newer prmsync: not ours to show.
                _ => {}
            }
        }
    }
    c.ledger = ledger(
        conn,
        "SELECT flow, direction, action, count FROM ledger_totals
         ORDER BY flow, direction, action",
    )?;
    c.registrations = registrations(
        conn,
        "SELECT status, count FROM registration_totals WHERE count > 0 ORDER BY status",
    )?;
    Ok(c)
}

/// The same counts by scanning every table: for state files without counters, and for tests
/// that check the counters against the truth. `ledger` counts the rows still kept.
pub(super) fn recount(conn: &Connection) -> Result<Counts, StoreError> {
    let count =
        |sql: &str| -> Result<i64, StoreError> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    let has_registrations: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'registrations')",
        [],
        |r| r.get(0),
    )?;
    Ok(Counts {
        links: count("SELECT COUNT(*) FROM links")?,
        inbox_pending: count("SELECT COUNT(*) FROM inbox WHERE state = 'pending'")?,
        outbox_depth: count("SELECT COUNT(*) FROM outbox")?,
        outbox_retrying: count("SELECT COUNT(*) FROM outbox WHERE attempts > 0")?,
        dead_letters: count("SELECT COUNT(*) FROM dead_letters")?,
        ledger: ledger(
            conn,
            "SELECT flow, direction, action, COUNT(*) FROM ledger
             GROUP BY flow, direction, action ORDER BY flow, direction, action",
        )?,
        registrations: if has_registrations {
            registrations(
                conn,
                "SELECT COALESCE(status, 'undecided'), COUNT(*) FROM registrations
                 GROUP BY 1 ORDER BY 1",
            )?
        } else {
            Vec::new()
        },
    })
}

fn ledger(conn: &Connection, sql: &str) -> Result<Vec<FlowCounts>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| {
        Ok(FlowCounts {
            flow: r.get(0)?,
            direction: r.get(1)?,
            action: r.get(2)?,
            count: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn registrations(conn: &Connection, sql: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
