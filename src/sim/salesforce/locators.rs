//! The Salesforce simulator's query locators (`nextRecordsUrl` cursors), kept as Salesforce keeps
//! them: at most 10 open per user (opening another drops the least recently used), expired after
//! 15 minutes without use, and, for tests, after a set number of further pages.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// "A query cursor … is deleted after 15 minutes of inactivity"; "a user can have up to 10 query
/// cursors open at a time" (Salesforce REST API Developer Guide, "Execute a SOQL Query").
pub const MAX_OPEN: usize = 10;
pub const IDLE_MS: i64 = 15 * 60 * 1000;

type Rows = Arc<Vec<Map<String, Value>>>;

#[derive(Debug, Default)]
pub struct Locators {
    open: BTreeMap<String, Open>,
    /// Every locator expires after serving this many further pages (`None`: never).
    pages_before_expiry: Option<u32>,
    /// Locators refused because they had expired or were dropped.
    pub expired: u64,
}

#[derive(Debug)]
struct Open {
    rows: Rows,
    last_used_ms: i64,
    pages_served: u32,
}

impl Locators {
    /// Keeps `rows` under `id` (its first page was just served).
    pub fn keep(&mut self, id: String, rows: Rows, now_ms: i64) {
        match self.open.get_mut(&id) {
            Some(o) => {
                o.last_used_ms = now_ms;
                o.pages_served += 1;
            }
            None => {
                while self.open.len() >= MAX_OPEN {
                    let oldest = self
                        .open
                        .iter()
                        .min_by_key(|(_, o)| o.last_used_ms)
                        .map(|(k, _)| k.clone());
                    match oldest {
                        Some(k) => self.open.remove(&k),
                        None => break,
                    };
                }
                self.open.insert(
                    id,
                    Open {
                        rows,
                        last_used_ms: now_ms,
                        pages_served: 0,
                    },
                );
            }
        }
    }

    /// The rows of an open locator, or `None` when it is unknown, dropped or expired.
    pub fn rows(&mut self, id: &str, now_ms: i64) -> Option<Rows> {
        let o = self.open.get(id)?;
        let spent = self
            .pages_before_expiry
            .is_some_and(|n| o.pages_served >= n);
        if now_ms - o.last_used_ms > IDLE_MS || spent {
            self.open.remove(id);
            self.expired += 1;
            return None;
        }
        Some(o.rows.clone())
    }

    /// The last page was served: the locator is closed.
    pub fn close(&mut self, id: &str) {
        self.open.remove(id);
    }

    pub fn expire_after(&mut self, pages: Option<u32>) {
        self.pages_before_expiry = pages;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleven_open_drop_the_least_recently_used_and_idle_ones_expire() {
        let mut l = Locators::default();
        for i in 0..11 {
            l.keep(format!("q{i}"), Arc::default(), i64::from(i));
        }
        assert_eq!(l.len(), MAX_OPEN);
        assert!(l.rows("q0", 20).is_none(), "the oldest was dropped");
        assert!(l.rows("q1", 20).is_some());
        assert!(
            l.rows("q2", 10 + IDLE_MS + 1).is_none(),
            "idle past 15 minutes"
        );
        l.expire_after(Some(1));
        l.keep("q3".into(), Arc::default(), 30);
        assert!(l.rows("q3", 31).is_none(), "spent its one further page");
    }
}
