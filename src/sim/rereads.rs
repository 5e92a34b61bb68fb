//! Counts records a simulator serves again after a client restarts although they did not change
//! since they were first served: the waste a checkpointed reader avoids (benchmarks only). A poller
//! re-reads its last `overlap` by design on every pass (stamps that lag); those are not counted.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Which records were served (with the modification time served), and how many were served again
/// unchanged after [`Rereads::restart`].
#[derive(Debug, Default)]
pub struct Rereads {
    served: HashMap<u64, i64>,
    /// The newest modification time served so far.
    newest_ms: i64,
    /// Records modified before this are re-reads when served again unchanged after the restart.
    reread_before: Option<i64>,
    rereads: u64,
}

fn key_hash(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl Rereads {
    /// Records that the record `key`, last modified at `modified_ms`, was served.
    pub fn served(&mut self, key: &str, modified_ms: i64) {
        // A record served again with the modification time it was served with before is a
        // re-read; one modified since (by anyone, prmsync's own write-back included) is news.
        let before = self.served.insert(key_hash(key), modified_ms);
        self.newest_ms = self.newest_ms.max(modified_ms);
        if before == Some(modified_ms) && self.reread_before.is_some_and(|t| modified_ms < t) {
            self.rereads += 1;
        }
    }

    /// The client restarts now: records served from here on that were served before, have not
    /// changed since, and are older than the newest served minus `overlap_ms` (the window a
    /// poller re-reads on every pass) count as re-reads.
    pub fn restart(&mut self, overlap_ms: i64) {
        self.reread_before = Some(self.newest_ms - overlap_ms);
    }

    pub fn rereads(&self) -> u64 {
        self.rereads
    }
}

#[cfg(test)]
mod tests {
    use super::Rereads;

    #[test]
    fn only_unchanged_records_served_again_after_a_restart_are_rereads() {
        let mut r = Rereads::default();
        r.served("a", 10);
        r.served("b", 10);
        r.served("a", 10); // before the restart: not counted
        r.served("b", 20); // modified (e.g. by a write-back) before the restart
        r.served("d", 95); // the newest: the overlap window is 90..100
        r.restart(5);
        r.served("a", 10); // unchanged since served: a re-read
        r.served("b", 20); // unchanged since its last serving: a re-read
        r.served("d", 95); // inside the overlap window: re-read by design, not counted
        r.served("c", 5); // never served: news
        r.served("c", 40); // modified after the restart: news
        assert_eq!(r.rereads(), 2);
    }
}
