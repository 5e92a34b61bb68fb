//! Domain types shared by every module: systems, records, changes and cursors. No vendor wire formats.

mod association;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use association::{AssociationType, CATEGORIES as ASSOCIATION_CATEGORIES};

/// The vendor systems prmsync knows. Adding one touches this enum and one connector folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    PartnerStack,
    HubSpot,
    Salesforce,
    /// A PRM reached through the declarative `rest` profile.
    Rest,
}

impl SystemKind {
    pub const ALL: [SystemKind; 4] = [
        SystemKind::PartnerStack,
        SystemKind::HubSpot,
        SystemKind::Salesforce,
        SystemKind::Rest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SystemKind::PartnerStack => "partnerstack",
            SystemKind::HubSpot => "hubspot",
            SystemKind::Salesforce => "salesforce",
            SystemKind::Rest => "rest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Which side of the integration this system sits on.
    pub fn side(self) -> Side {
        match self {
            SystemKind::PartnerStack | SystemKind::Rest => Side::Prm,
            SystemKind::HubSpot | SystemKind::Salesforce => Side::Crm,
        }
    }
}

impl fmt::Display for SystemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two sides of the integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Prm,
    Crm,
}

/// Which way a planned write goes relative to a flow's source and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ToTarget,
    ToSource,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToTarget => "to_target",
            Direction::ToSource => "to_source",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "to_target" => Some(Direction::ToTarget),
            "to_source" => Some(Direction::ToSource),
            _ => None,
        }
    }
}

/// A (system, object) pair such as `partnerstack/deals` or `hubspot/deals`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub system: SystemKind,
    pub object: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.system, self.object)
    }
}

/// One record as read from a system: its id, its vendor modification time, and its fields as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Vendor modification time in epoch milliseconds.
    pub modified_ms: i64,
    pub fields: Map<String, Value>,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The record was created or updated; the payload carries its fields.
    Upsert,
    /// The record was deleted.
    Delete,
    /// A thin notification (a webhook without the record): re-read the object.
    Hint,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Upsert => "upsert",
            ChangeKind::Delete => "delete",
            ChangeKind::Hint => "hint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upsert" => Some(ChangeKind::Upsert),
            "delete" => Some(ChangeKind::Delete),
            "hint" => Some(ChangeKind::Hint),
            _ => None,
        }
    }
}

/// A change to stage in the inbox: from a poll or a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Unique per delivery of the same fact: a repeat with the same id is applied once.
    pub event_id: String,
    pub object: ObjectRef,
    pub kind: ChangeKind,
    pub record: Record,
}

impl Change {
    /// A full record version (from a poll or a webhook): its event id is derived from the record
    /// version and its content, so overlapping polls and a webhook for the same version stage it
    /// once, while two different versions stamped in the same second (Salesforce's precision) are
    /// both kept.
    pub fn versioned(object: ObjectRef, record: Record) -> Self {
        let hash = content_hash(&record.fields);
        let event_id = format!(
            "{object}:{}:{}:{}",
            record.id,
            record.modified_ms,
            &hash[..16]
        );
        Change {
            event_id,
            object,
            kind: ChangeKind::Upsert,
            record,
        }
    }
}

/// A stable incremental-read position: the (modification time, id) of the newest change staged,
/// and, while a read is under way, where its next page starts. Ordering on the pair means two
/// records modified in the same millisecond are never skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub modified_ms: i64,
    pub id: String,
    /// A read in progress: every page before `page` is staged. `None` once a read has finished.
    pub resume: Option<Resume>,
}

/// Where an unfinished read continues: the lower bound it was started with and the vendor's
/// opaque token for its next page (a HubSpot search position, a Salesforce `nextRecordsUrl`, a
/// PartnerStack `starting_after` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub since_ms: i64,
    pub page: String,
}

/// The stored form of a cursor with a read in progress (a plain cursor keeps the `ms|id` form).
#[derive(Serialize, Deserialize)]
struct StoredCursor {
    ms: i64,
    id: String,
    since: i64,
    page: String,
}

impl Cursor {
    /// A cursor at `(modified_ms, id)` with no read in progress.
    pub fn at(modified_ms: i64, id: impl Into<String>) -> Self {
        Cursor {
            modified_ms,
            id: id.into(),
            resume: None,
        }
    }

    /// The keyset position `(modified_ms, id)`, to compare cursors regardless of paging state.
    pub fn key(&self) -> (i64, &str) {
        (self.modified_ms, &self.id)
    }

    pub fn encode(&self) -> String {
        match &self.resume {
            None => format!("{}|{}", self.modified_ms, self.id),
            Some(r) => serde_json::to_string(&StoredCursor {
                ms: self.modified_ms,
                id: self.id.clone(),
                since: r.since_ms,
                page: r.page.clone(),
            })
            .unwrap_or_else(|_| format!("{}|{}", self.modified_ms, self.id)),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        if s.starts_with('{') {
            let c: StoredCursor = serde_json::from_str(s).ok()?;
            return Some(Cursor {
                modified_ms: c.ms,
                id: c.id,
                resume: Some(Resume {
                    since_ms: c.since,
                    page: c.page,
                }),
            });
        }
        let (ms, id) = s.split_once('|')?;
        Some(Cursor::at(ms.parse().ok()?, id))
    }
}

/// A stable hash of a JSON object: sorted keys, compact form, SHA-256 hex.
pub fn content_hash(fields: &Map<String, Value>) -> String {
    hex::encode(json_sha256(fields))
}

/// SHA-256 of a value's JSON encoding, encoded into a per-thread buffer (no allocation per
/// call). serde_json's Map is a BTreeMap here (no preserve_order), so the encoding is canonical.
pub fn json_sha256<T: serde::Serialize + ?Sized>(value: &T) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        // Writing into a Vec cannot fail, and a JSON value always serializes.
        if serde_json::to_writer(&mut *buf, value).is_err() {
            buf.clear();
        }
        let digest = Sha256::digest(buf.as_slice()).into();
        // A rare huge value does not keep its buffer for the thread's life.
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        digest
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_orders_by_time_then_id() {
        let c = Cursor::at(10, "b|x");
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        let at = |ms: i64, id: &'static str| (ms, id);
        assert!(c.key() < at(10, "c") && c.key() > at(10, "a") && c.key() < at(11, "a"));
        assert_eq!(Cursor::decode("nope"), None);
    }

    #[test]
    fn a_cursor_with_a_read_in_progress_round_trips_and_old_forms_still_decode() {
        let c = Cursor {
            modified_ms: 1_700_000_000_000,
            id: "d|1".into(),
            resume: Some(Resume {
                since_ms: 1_699_000_000_000,
                page: "/services/data/v60.0/query/01gX-2000".into(),
            }),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        assert_eq!(Cursor::decode("5|a"), Some(Cursor::at(5, "a")));
        assert_eq!(Cursor::decode("{not json"), None);
    }

    #[test]
    fn versions_in_the_same_millisecond_with_other_content_are_distinct_events() {
        let obj = ObjectRef {
            system: SystemKind::Salesforce,
            object: "Opportunity".into(),
        };
        let rec = |stage: &str| Record {
            id: "006A".into(),
            modified_ms: 1_700_000_000_000,
            fields: serde_json::from_str(&format!(r#"{{"StageName":"{stage}"}}"#)).unwrap(),
        };
        let a = Change::versioned(obj.clone(), rec("Prospecting"));
        let b = Change::versioned(obj.clone(), rec("Closed Won"));
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(
            a.event_id,
            Change::versioned(obj, rec("Prospecting")).event_id
        );
    }

    #[test]
    fn content_hash_ignores_key_order() {
        let a: Map<String, Value> = serde_json::from_str(r#"{"a":1,"b":"x"}"#).unwrap();
        let b: Map<String, Value> = serde_json::from_str(r#"{"b":"x","a":1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        let c: Map<String, Value> = serde_json::from_str(r#"{"b":"y","a":1}"#).unwrap();
        assert_ne!(content_hash(&a), content_hash(&c));
    }
}
