//! What a link remembers of one side of a record: a short digest per field (of its name and its
//! value), enough to tell which desired values that side already has, at a fraction of their size.
//!
//! 12 bytes a field: 4 of the name's SHA-256, 8 of the value's (its canonical JSON). A field-name
//! collision within one state (about 1 in 10^8 for a 9-field mapping) or a value collision (1 in
//! 1.8 * 10^19) would make prmsync think a field already holds the desired value.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Bytes per field in the stored form.
const ENTRY: usize = 12;

/// One side's remembered state: (field digest, value digest), sorted by field digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDigest(Vec<(u32, u64)>);

/// Field names repeat for every record of a flow: their digests are kept per thread (a few
/// hundred names at most; the cache starts over if a caller ever sends many more).
const FIELD_CACHE_MAX: usize = 4096;

thread_local! {
    static FIELD_KEYS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

fn field_key(name: &str) -> u32 {
    FIELD_KEYS.with_borrow_mut(|keys| {
        if let Some(k) = keys.get(name) {
            return *k;
        }
        let d = Sha256::digest(name.as_bytes());
        let k = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        if keys.len() >= FIELD_CACHE_MAX {
            keys.clear();
        }
        keys.insert(name.to_owned(), k);
        k
    })
}

fn value_key(value: &Value) -> u64 {
    let d = crate::model::json_sha256(value);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl StateDigest {
    /// The digest of a state given by its values.
    pub fn of(state: &Map<String, Value>) -> StateDigest {
        StateDigest::default().with(state)
    }

    /// Whether nothing is known of this side (no write or observation yet).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `field` is known to hold `value`.
    pub fn holds(&self, field: &str, value: &Value) -> bool {
        let f = field_key(field);
        self.0
            .binary_search_by_key(&f, |(k, _)| *k)
            .is_ok_and(|i| self.0[i].1 == value_key(value))
    }

    /// Whether this is exactly the state `values`.
    pub fn matches(&self, values: &Map<String, Value>) -> bool {
        *self == StateDigest::of(values)
    }

    /// This state with `values` written over it.
    pub fn with(&self, values: &Map<String, Value>) -> StateDigest {
        let mut entries = self.0.clone();
        for (field, value) in values {
            let (f, v) = (field_key(field), value_key(value));
            match entries.binary_search_by_key(&f, |(k, _)| *k) {
                Ok(i) => entries[i].1 = v,
                Err(i) => entries.insert(i, (f, v)),
            }
        }
        StateDigest(entries)
    }

    /// This state without `fields` (nothing known of their values).
    pub fn without<'a>(&self, fields: impl IntoIterator<Item = &'a str>) -> StateDigest {
        let mut entries = self.0.clone();
        for field in fields {
            let f = field_key(field);
            if let Ok(i) = entries.binary_search_by_key(&f, |(k, _)| *k) {
                entries.remove(i);
            }
        }
        StateDigest(entries)
    }

    /// A short, stable key of the whole state (flip-flop detection compares them).
    pub fn key(&self) -> String {
        hex::encode(&Sha256::digest(self.to_bytes())[..8])
    }

    /// The stored form: 12 bytes a field.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * ENTRY);
        for (f, v) in &self.0 {
            out.extend_from_slice(&f.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// Reads the stored form; `None` when it is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<StateDigest> {
        if !bytes.len().is_multiple_of(ENTRY) {
            return None;
        }
        let entries: Vec<(u32, u64)> = bytes
            .chunks_exact(ENTRY)
            .map(|c| {
                let mut f = [0; 4];
                let mut v = [0; 8];
                f.copy_from_slice(&c[..4]);
                v.copy_from_slice(&c[4..]);
                (u32::from_be_bytes(f), u64::from_be_bytes(v))
            })
            .collect();
        entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0)
            .then_some(StateDigest(entries))
    }

    /// The stored form as text (outbox rows, dead letters' writes).
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// Reads [`StateDigest::to_text`], or the JSON object of values that earlier versions
    /// stored; `None` when it is neither.
    pub fn from_text(text: &str) -> Option<StateDigest> {
        if text.trim_start().starts_with('{') {
            let values: Map<String, Value> = serde_json::from_str(text).ok()?;
            return Some(StateDigest::of(&values));
        }
        StateDigest::from_bytes(&URL_SAFE_NO_PAD.decode(text).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_digest_knows_which_values_a_side_holds() {
        let d = StateDigest::of(&state(json!({"amount": "10", "stage": "won"})));
        assert!(d.holds("amount", &json!("10")));
        assert!(!d.holds("amount", &json!(10)), "types count, as in JSON");
        assert!(!d.holds("stage", &json!("lost")));
        assert!(!d.holds("name", &json!("won")));
        let after = d.with(&state(json!({"stage": "lost", "name": "Acme"})));
        assert!(after.holds("stage", &json!("lost")) && after.holds("amount", &json!("10")));
        assert!(after.matches(&state(
            json!({"amount": "10", "stage": "lost", "name": "Acme"})
        )));
        assert_ne!(d.key(), after.key());
        assert!(StateDigest::default().is_empty());
    }

    #[test]
    fn stored_forms_round_trip_and_old_value_maps_still_read() {
        let values = state(json!({"a": 1, "b": {"c": [1, 2]}}));
        let d = StateDigest::of(&values);
        assert_eq!(d.to_bytes().len(), 24);
        assert_eq!(StateDigest::from_bytes(&d.to_bytes()), Some(d.clone()));
        assert_eq!(StateDigest::from_text(&d.to_text()), Some(d.clone()));
        let old = serde_json::to_string(&values).unwrap();
        assert_eq!(StateDigest::from_text(&old), Some(d));
        assert_eq!(StateDigest::from_bytes(&[1, 2, 3]), None);
        assert_eq!(StateDigest::from_text("not base64!"), None);
    }
}
