//! The HubSpot simulator's storage for one object type: objects by id, by modification stamp
//! and by the value of any property looked up (an index built on first use), with each object's
//! properties kept as one compact JSON string so a million deals fit in memory.

use std::collections::{BTreeMap, BTreeSet};

use super::index::ValueIndex;

/// Property values by name (all strings, as HubSpot stores them).
pub type Props = BTreeMap<String, String>;

/// One stored object.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The properties as a JSON object of strings.
    packed: Box<str>,
}

impl Object {
    pub fn new(id: u64, props: &Props, created_ms: i64, updated_ms: i64) -> Object {
        Object {
            id,
            created_ms,
            updated_ms,
            packed: pack(props),
        }
    }

    /// The properties, unpacked.
    pub fn props(&self) -> Props {
        serde_json::from_str(&self.packed).unwrap_or_default()
    }
}

fn pack(props: &Props) -> Box<str> {
    serde_json::to_string(props)
        .unwrap_or_else(|_| "{}".into())
        .into_boxed_str()
}

/// The objects of one type and their indexes.
#[derive(Debug, Default)]
pub struct Table {
    rows: BTreeMap<u64, Object>,
    by_modified: BTreeSet<(i64, u64)>,
    /// Property name -> ids by value; built the first time a property is looked up by value.
    indexes: BTreeMap<String, ValueIndex<u64>>,
}

impl Table {
    pub fn get(&self, id: u64) -> Option<&Object> {
        self.rows.get(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.rows.contains_key(&id)
    }

    /// Objects in id order, from `after` on.
    pub fn range_from(&self, after: u64) -> impl Iterator<Item = &Object> {
        self.rows.range(after..).map(|(_, o)| o)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.rows.values()
    }

    /// (modified, id) pairs from `from` on, in that order.
    pub fn modified_from(&self, from: i64) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.by_modified.range((from, 0)..).copied()
    }

    /// Adds a new object (its id must be fresh).
    pub fn insert(&mut self, o: Object, props: &Props) {
        for (name, index) in &mut self.indexes {
            if let Some(v) = props.get(name) {
                index.insert(v, o.id);
            }
        }
        self.by_modified.insert((o.updated_ms, o.id));
        self.rows.insert(o.id, o);
    }

    /// Replaces an object's properties (`old` are its current ones) and, if given, its
    /// modification stamp.
    pub fn update(&mut self, id: u64, old: &Props, new: &Props, updated_ms: Option<i64>) {
        let Some(o) = self.rows.get_mut(&id) else {
            return;
        };
        for (name, index) in &mut self.indexes {
            index.change(
                old.get(name).map(String::as_str),
                new.get(name).map(String::as_str),
                &id,
            );
        }
        o.packed = pack(new);
        if let Some(t) = updated_ms
            && t != o.updated_ms
        {
            self.by_modified.remove(&(o.updated_ms, id));
            self.by_modified.insert((t, id));
            o.updated_ms = t;
        }
    }

    /// Takes an object out (with its index entries); `None` when there is no such object.
    pub fn remove(&mut self, id: u64) -> Option<Object> {
        let o = self.rows.remove(&id)?;
        self.by_modified.remove(&(o.updated_ms, id));
        if !self.indexes.is_empty() {
            let props = o.props();
            for (name, index) in &mut self.indexes {
                if let Some(v) = props.get(name) {
                    index.remove(v, &id);
                }
            }
        }
        Some(o)
    }

    /// Ids whose `prop` equals `value` (ignoring ASCII case if `fold`), in id order.
    pub fn find(&mut self, prop: &str, value: &str, fold: bool) -> Vec<u64> {
        let index = self.index(prop);
        let candidates = index.candidates(value);
        candidates
            .into_iter()
            .filter(|id| {
                self.rows.get(id).is_some_and(|o| {
                    o.props().get(prop).is_some_and(|v| {
                        if fold {
                            v.eq_ignore_ascii_case(value)
                        } else {
                            v == value
                        }
                    })
                })
            })
            .collect()
    }

    /// The first object (in id order) whose `prop` equals `value` exactly, with its properties
    /// (unpacked once, for the caller to reuse).
    pub fn find_first(&mut self, prop: &str, value: &str) -> Option<(u64, Props)> {
        let candidates = self.index(prop).candidates(value);
        candidates.into_iter().find_map(|id| {
            let props = self.rows.get(&id)?.props();
            (props.get(prop).map(String::as_str) == Some(value)).then_some((id, props))
        })
    }

    /// The index for `prop`, built from every object the first time.
    fn index(&mut self, prop: &str) -> &ValueIndex<u64> {
        if !self.indexes.contains_key(prop) {
            let mut index = ValueIndex::default();
            for o in self.rows.values() {
                if let Some(v) = o.props().get(prop) {
                    index.insert(v, o.id);
                }
            }
            self.indexes.insert(prop.to_owned(), index);
        }
        &self.indexes[prop]
    }
}
