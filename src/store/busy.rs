//! The state file's busy handler: when another connection holds the lock, wait and try again
//! for up to the busy timeout (as SQLite's own `busy_timeout` does), counting each busy event
//! in `prmsync_sqlite_busy_events_total`.

use std::time::Duration;

use rusqlite::Connection;

use super::BUSY_TIMEOUT;

/// The waits between attempts, in milliseconds (SQLite's own schedule), then 100 ms each.
const DELAYS_MS: &[u64] = &[1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/// Installs the counting busy handler on `conn`.
pub(super) fn install(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(on_busy))
}

/// The wait before attempt `attempt + 1`, or `None` once the busy timeout is spent.
fn delay(attempt: usize) -> Option<Duration> {
    let spent: u64 = (0..attempt)
        .map(|i| DELAYS_MS.get(i).copied().unwrap_or(100))
        .sum();
    let next = DELAYS_MS.get(attempt).copied().unwrap_or(100);
    let limit = u64::try_from(BUSY_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    (spent < limit).then(|| Duration::from_millis(next.min(limit - spent)))
}

fn on_busy(attempt: i32) -> bool {
    if attempt == 0 {
        crate::telemetry::meters::meters().sqlite_busy();
    }
    match delay(usize::try_from(attempt).unwrap_or(0)) {
        Some(d) => {
            std::thread::sleep(d);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_add_up_to_the_busy_timeout() {
        let total: Duration = (0..).map_while(delay).sum();
        assert_eq!(total, BUSY_TIMEOUT);
        assert_eq!(delay(0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn a_locked_file_is_waited_for_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let a = Connection::open(&path).unwrap();
        a.execute_batch("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let b = Connection::open(&path).unwrap();
        install(&b).unwrap();
        let before = crate::telemetry::meters::meters().sqlite_busy_events();
        // The lock is held for the whole busy timeout: the write fails, after waiting.
        let e = b.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        assert!(crate::telemetry::meters::meters().sqlite_busy_events() > before);
    }
}
