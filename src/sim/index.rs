//! Indexes the simulators keep beside their records so reads and writes stay cheap at a million
//! records: ids by a property's value (hashed, so the index holds no copies of the values).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

/// Ids by the value of one property, compared without ASCII case. The index stores a hash of the
/// value, not the value: callers confirm each candidate against the record itself.
#[derive(Debug, Clone)]
pub struct ValueIndex<K> {
    entries: BTreeSet<(u64, K)>,
}

impl<K> Default for ValueIndex<K> {
    fn default() -> Self {
        ValueIndex {
            entries: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone + MinKey> ValueIndex<K> {
    /// Records that `id` has `value` (empty values are not indexed: they mean "no value").
    pub fn insert(&mut self, value: &str, id: K) {
        if !value.is_empty() {
            self.entries.insert((fold_hash(value), id));
        }
    }

    pub fn remove(&mut self, value: &str, id: &K) {
        if !value.is_empty() {
            self.entries.remove(&(fold_hash(value), id.clone()));
        }
    }

    /// Moves `id` from `old` to `new` (either may be absent).
    pub fn change(&mut self, old: Option<&str>, new: Option<&str>, id: &K) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.remove(o, id);
        }
        if let Some(n) = new {
            self.insert(n, id.clone());
        }
    }

    /// Ids that may have `value` (same hash), in id order.
    pub fn candidates(&self, value: &str) -> Vec<K> {
        let h = fold_hash(value);
        self.entries
            .range((h, K::min_key())..)
            .take_while(|(x, _)| *x == h)
            .map(|(_, k)| k.clone())
            .collect()
    }
}

/// Key types with a smallest value, for range starts.
pub trait MinKey {
    fn min_key() -> Self;
}

impl MinKey for u64 {
    fn min_key() -> Self {
        0
    }
}

impl MinKey for String {
    fn min_key() -> Self {
        String::new()
    }
}

impl MinKey for Box<str> {
    fn min_key() -> Self {
        Box::from("")
    }
}

/// A hash of `value` that ignores ASCII case (both exact and case-blind lookups find it).
pub fn fold_hash(value: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for b in value.bytes() {
        b.to_ascii_lowercase().hash(&mut h);
    }
    h.finish()
}
