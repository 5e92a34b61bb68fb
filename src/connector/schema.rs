//! A CRM object's live schema as its connector read it (HubSpot properties, Salesforce
//! describe): each field's kind, whether the API may set it on create and on update, and the
//! values a restricted picklist takes. Plain data; the readers are `hubspot/schema.rs` and
//! `salesforce/describe.rs`, the comparison with the mappings is `mapping/drift.rs`.

use std::collections::BTreeMap;

use crate::model::SystemKind;

/// What kind of value a field holds, in prmsync's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveKind {
    /// Free text (and text-like: email, phone, URL, long text).
    Text,
    Number,
    Bool,
    Date,
    DateTime,
    /// A picklist / enumeration.
    Enum,
    /// An id of another record.
    Reference,
    /// A type prmsync does not map to (the vendor's name for it).
    Other(String),
}

impl std::fmt::Display for LiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LiveKind::Text => "text",
            LiveKind::Number => "number",
            LiveKind::Bool => "boolean",
            LiveKind::Date => "date",
            LiveKind::DateTime => "datetime",
            LiveKind::Enum => "picklist",
            LiveKind::Reference => "reference",
            LiveKind::Other(s) => s,
        })
    }
}

/// One field of a live object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveField {
    pub kind: LiveKind,
    pub createable: bool,
    pub updateable: bool,
    /// The values a restricted picklist accepts now (active, not hidden); `None` when any value
    /// is accepted.
    pub options: Option<Vec<String>>,
}

/// The fields one object has now, by API name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObject {
    pub system: SystemKind,
    pub object: String,
    pub fields: BTreeMap<String, LiveField>,
}
