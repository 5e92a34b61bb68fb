//! Counts records a simulator serves again after a client restarts although they did not change
//! since they were first served: the waste a checkpointed reader avoids (benchmarks only).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// Which records were served, and how many were served again unchanged after [`Rereads::restart`].
#[derive(Debug, Default)]
pub struct Rereads {
    served: HashSet<u64>,
    restarted_at: Option<i64>,
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
        let first = self.served.insert(key_hash(key));
        if !first && self.restarted_at.is_some_and(|t| modified_ms < t) {
            self.rereads += 1;
        }
    }

    /// The client restarts now: records served from here on that were served before and have
    /// not changed since count as re-reads.
    pub fn restart(&mut self, now_ms: i64) {
        self.restarted_at = Some(now_ms);
    }

    pub fn rereads(&self) -> u64 {
        self.rereads
    }
}
