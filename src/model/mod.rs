//! Domain types shared by every module: systems, records, changes and cursors. No vendor wire formats.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// version, so overlapping polls and a webhook for the same version stage it once.
    pub fn versioned(object: ObjectRef, record: Record) -> Self {
        let event_id = format!("{object}:{}:{}", record.id, record.modified_ms);
        Change {
            event_id,
            object,
            kind: ChangeKind::Upsert,
            record,
        }
    }
}

/// A stable incremental-read position: the (modification time, id) of the last change staged.
/// Ordering on the pair means two records modified in the same millisecond are never skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub modified_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}|{}", self.modified_ms, self.id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('|')?;
        Some(Cursor {
            modified_ms: ms.parse().ok()?,
            id: id.to_owned(),
        })
    }

    /// Whether `record` is strictly after this position.
    pub fn is_before(&self, modified_ms: i64, id: &str) -> bool {
        (self.modified_ms, self.id.as_str()) < (modified_ms, id)
    }
}

/// A stable hash of a JSON object: sorted keys, compact form, SHA-256 hex.
pub fn content_hash(fields: &Map<String, Value>) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's Map is a BTreeMap here (no preserve_order), so the encoding is canonical.
    let bytes = serde_json::to_vec(fields).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_orders_by_time_then_id() {
        let c = Cursor {
            modified_ms: 10,
            id: "b|x".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        assert!(c.is_before(10, "c"));
        assert!(!c.is_before(10, "a"));
        assert!(c.is_before(11, "a"));
        assert_eq!(Cursor::decode("nope"), None);
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
