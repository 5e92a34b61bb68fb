//! The PartnerStack simulator's storage for one list (deals, partnerships, ...): items by key, by
//! creation and update stamps, and deals by external key, each item kept as one compact JSON
//! string so a million deals fit in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::index::ValueIndex;

/// One stored item.
#[derive(Debug, Clone)]
struct Item {
    created: i64,
    updated: i64,
    /// The item as a JSON object (with `key`, `created_at` and `updated_at`).
    packed: Box<str>,
}

impl Item {
    fn unpack(&self) -> Map<String, Value> {
        serde_json::from_str(&self.packed).unwrap_or_default()
    }
}

/// Bounds a list request filters on (inclusive, epoch milliseconds), and a partner.
#[derive(Debug, Clone)]
pub struct Filter {
    pub min_updated: i64,
    pub max_updated: i64,
    pub min_created: i64,
    pub max_created: i64,
    pub partner_key: Option<String>,
}

/// Below this many items in the update window, a filtered list sorts the window itself instead of
/// walking every item newest first.
const SMALL_WINDOW: usize = 4096;

/// The items of one list and their indexes.
#[derive(Debug, Default)]
pub struct Table {
    rows: BTreeMap<Box<str>, Item>,
    by_created: BTreeSet<(i64, Box<str>)>,
    by_updated: BTreeSet<(i64, Box<str>)>,
    by_external_key: ValueIndex<Box<str>>,
}

fn stamp(item: &Map<String, Value>, field: &str) -> i64 {
    item.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn external_key(item: &Map<String, Value>) -> Option<&str> {
    item.get("external_key").and_then(Value::as_str)
}

impl Table {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Inserts or replaces the item under `key` (it carries its `created_at` and `updated_at`).
    pub fn put(&mut self, key: &str, item: &Map<String, Value>) {
        let key: Box<str> = key.into();
        self.remove(&key);
        let (created, updated) = (stamp(item, "created_at"), stamp(item, "updated_at"));
        let new_external = external_key(item);
        if let Some(e) = new_external {
            self.by_external_key.insert(e, key.clone());
        }
        self.by_created.insert((created, key.clone()));
        self.by_updated.insert((updated, key.clone()));
        let packed = serde_json::to_string(item)
            .unwrap_or_else(|_| "{}".into())
            .into_boxed_str();
        self.rows.insert(
            key,
            Item {
                created,
                updated,
                packed,
            },
        );
    }

    /// Removes the item under `key` from every index; returns it, or `None` when there is none.
    pub fn remove(&mut self, key: &str) -> Option<Map<String, Value>> {
        let (key, old) = self.rows.remove_entry(key)?;
        self.by_created.remove(&(old.created, key.clone()));
        self.by_updated.remove(&(old.updated, key.clone()));
        let item = old.unpack();
        if let Some(e) = external_key(&item) {
            self.by_external_key.remove(e, &key);
        }
        Some(item)
    }

    pub fn get(&self, key: &str) -> Option<Map<String, Value>> {
        self.rows.get(key).map(Item::unpack)
    }

    /// The item whose key or external key is `key`.
    pub fn find(&self, key: &str) -> Option<Map<String, Value>> {
        self.get(key).or_else(|| {
            self.by_external_key
                .candidates(key)
                .into_iter()
                .filter_map(|k| self.get(&k))
                .find(|d| external_key(d) == Some(key))
        })
    }

    /// Every item, by key.
    pub fn all(&self) -> Vec<Map<String, Value>> {
        self.rows.values().map(Item::unpack).collect()
    }

    /// One page of the items passing `filter`, newest created first, after the item `after`.
    /// `Err(())` if `after` names no item of the filtered list. Returns the page and whether
    /// more items follow it.
    #[allow(clippy::result_unit_err)]
    pub fn page(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Value>, bool), ()> {
        let passes = |key: &str, item: &Item| {
            item.updated >= filter.min_updated
                && item.updated <= filter.max_updated
                && item.created >= filter.min_created
                && item.created <= filter.max_created
                && filter.partner_key.as_deref().is_none_or(|p| {
                    self.get(key)
                        .is_some_and(|d| d.get("partner_key").and_then(Value::as_str) == Some(p))
                })
        };
        let start = match after {
            None => None,
            Some(a) => match self.rows.get_key_value(a) {
                Some((k, item)) if passes(k, item) => Some((item.created, k.clone())),
                _ => return Err(()),
            },
        };
        let window: Vec<&(i64, Box<str>)> = self
            .by_updated
            .range((filter.min_updated, Box::from(""))..)
            .take_while(|(t, _)| *t <= filter.max_updated)
            .take(SMALL_WINDOW + 1)
            .collect();
        let keys: Box<dyn Iterator<Item = (i64, Box<str>)> + '_> = if window.len() <= SMALL_WINDOW {
            // Few items changed in the window: sort just those, newest created first.
            let mut small: Vec<(i64, Box<str>)> = window
                .iter()
                .filter_map(|(_, k)| self.rows.get(k).map(|i| (i.created, k.clone())))
                .filter(|k| start.as_ref().is_none_or(|s| k < s))
                .collect();
            small.sort_unstable_by(|a, b| b.cmp(a));
            Box::new(small.into_iter())
        } else {
            match start {
                Some(s) => Box::new(self.by_created.range(..s).rev().cloned()),
                None => Box::new(self.by_created.iter().rev().cloned()),
            }
        };
        let mut page = Vec::with_capacity(limit);
        let mut more = false;
        for (_, key) in keys {
            let Some(item) = self.rows.get(&key) else {
                continue;
            };
            if !passes(&key, item) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(Value::Object(item.unpack()));
        }
        Ok((page, more))
    }
}
