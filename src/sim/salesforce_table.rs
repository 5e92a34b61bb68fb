//! The Salesforce simulator's storage for one sObject: records by Id, by `SystemModstamp` (whole
//! seconds, as Salesforce keeps it, so records share a second), and by the value of any field
//! looked up (external ids, `IN` lists; an index built on first use).

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

/// Salesforce datetimes have whole seconds: `2026-03-02T10:00:07.000+0000`.
pub fn whole_second(ms: i64) -> i64 {
    ms.div_euclid(1000) * 1000
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

    /// Inserts or replaces the record `id`; its `SystemModstamp` is floored to the second.
    pub fn put(&mut self, id: &str, mut rec: Rec) {
        rec.modstamp_ms = whole_second(rec.modstamp_ms);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: i64) -> Rec {
        Rec {
            fields: Map::new(),
            modstamp_ms: ms,
        }
    }

    #[test]
    fn stamps_are_whole_seconds_and_a_second_holds_many_records_in_id_order() {
        let mut t = Table::default();
        t.put("b", rec(1_700_000_000_999));
        t.put("a", rec(1_700_000_000_001));
        t.put("c", rec(1_700_000_001_000));
        let stamps: Vec<(i64, String)> = t
            .modified_since(1_700_000_000_000, true)
            .map(|r| (r.modstamp_ms, String::new()))
            .collect();
        assert_eq!(stamps[0].0, 1_700_000_000_000);
        assert_eq!(
            stamps[1].0, 1_700_000_000_000,
            "two records share the second"
        );
        let ids: Vec<&str> = t.by_modstamp.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "(SystemModstamp, Id) order");
        assert_eq!(t.modified_since(1_700_000_000_000, false).count(), 1);
    }
}
