//! The Salesforce simulator's storage for one sObject: records by Id, by `SystemModstamp`, and by
//! the value of any field looked up (external ids, `IN` lists; an index built on first use).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::index::ValueIndex;

/// One stored record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub fields: Map<String, Value>,
    pub modstamp_ms: i64,
}

/// The records of one sObject and their indexes.
#[derive(Debug, Default)]
pub struct Table {
    recs: BTreeMap<String, Rec>,
    by_modstamp: BTreeSet<(i64, String)>,
    /// Field name -> Ids by value; built the first time a field is looked up by value.
    indexes: BTreeMap<String, ValueIndex<String>>,
}

fn text<'a>(r: &'a Rec, field: &str) -> Option<&'a str> {
    r.fields.get(field).and_then(Value::as_str)
}

impl Table {
    pub fn get(&self, id: &str) -> Option<&Rec> {
        self.recs.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rec> {
        self.recs.values()
    }

    /// Records modified after `t` (or at `t` if `inclusive`), in (modstamp, Id) order.
    pub fn modified_since(&self, t: i64, inclusive: bool) -> impl Iterator<Item = &Rec> {
        self.by_modstamp
            .range((t, String::new())..)
            .filter(move |(m, _)| inclusive || *m > t)
            .filter_map(|(_, id)| self.recs.get(id))
    }

    /// Inserts or replaces the record `id`.
    pub fn put(&mut self, id: &str, rec: Rec) {
        self.remove(id);
        for (field, index) in &mut self.indexes {
            if let Some(v) = text(&rec, field) {
                index.insert(v, id.to_owned());
            }
        }
        self.by_modstamp.insert((rec.modstamp_ms, id.to_owned()));
        self.recs.insert(id.to_owned(), rec);
    }

    /// Removes the record `id` from every index; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Rec> {
        let old = self.recs.remove(id)?;
        self.by_modstamp.remove(&(old.modstamp_ms, id.to_owned()));
        let key = id.to_owned();
        for (field, index) in &mut self.indexes {
            if let Some(v) = text(&old, field) {
                index.remove(v, &key);
            }
        }
        Some(old)
    }

    /// Ids whose text `field` equals `value` (ignoring ASCII case if `fold`), in Id order.
    pub fn find(&mut self, field: &str, value: &str, fold: bool) -> Vec<String> {
        if !self.indexes.contains_key(field) {
            let mut index = ValueIndex::default();
            for (id, r) in &self.recs {
                if let Some(v) = text(r, field) {
                    index.insert(v, id.clone());
                }
            }
            self.indexes.insert(field.to_owned(), index);
        }
        self.indexes[field]
            .candidates(value)
            .into_iter()
            .filter(|id| {
                self.recs
                    .get(id)
                    .and_then(|r| text(r, field))
                    .is_some_and(|v| {
                        if fold {
                            v.eq_ignore_ascii_case(value)
                        } else {
                            v == value
                        }
                    })
            })
            .collect()
    }
}
