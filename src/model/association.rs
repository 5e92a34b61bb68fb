//! Which kind of HubSpot association a mapping asks for: the default (unlabeled) type, a type id
//! with its category, or a label the portal defines; stored as text in the state file.

use std::fmt;

/// The association type a flow's `[[association]]` writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssociationType {
    /// HubSpot's default type for the pair (v4 `batch/associate/default`).
    Default,
    /// A type id with its category (`HUBSPOT_DEFINED` or `USER_DEFINED`), v4 `batch/create`.
    Typed { category: String, type_id: u32 },
    /// A label the portal defines; its type id is read from the portal's labels (ids of
    /// custom labels differ per portal) before `batch/create`.
    Label(String),
}

/// The categories HubSpot's v4 API accepts for a type an integration writes.
pub const CATEGORIES: &[&str] = &["HUBSPOT_DEFINED", "USER_DEFINED"];

impl AssociationType {
    /// The stored form: `default`, `typed:CATEGORY:ID` or `label:TEXT`.
    pub fn key(&self) -> String {
        match self {
            AssociationType::Default => "default".into(),
            AssociationType::Typed { category, type_id } => format!("typed:{category}:{type_id}"),
            AssociationType::Label(l) => format!("label:{l}"),
        }
    }

    /// Reads [`AssociationType::key`] back; `None` for text it never wrote.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "default" {
            return Some(AssociationType::Default);
        }
        if let Some(l) = s.strip_prefix("label:") {
            return Some(AssociationType::Label(l.to_owned()));
        }
        let (category, id) = s.strip_prefix("typed:")?.rsplit_once(':')?;
        Some(AssociationType::Typed {
            category: category.to_owned(),
            type_id: id.parse().ok()?,
        })
    }
}

impl fmt::Display for AssociationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssociationType::Default => f.write_str("the default type"),
            AssociationType::Typed { category, type_id } => write!(f, "type {category}/{type_id}"),
            AssociationType::Label(l) => write!(f, "label {l:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AssociationType;

    #[test]
    fn keys_read_back() {
        for t in [
            AssociationType::Default,
            AssociationType::Typed {
                category: "HUBSPOT_DEFINED".into(),
                type_id: 341,
            },
            AssociationType::Label("Reseller: EMEA".into()),
        ] {
            assert_eq!(AssociationType::parse(&t.key()), Some(t));
        }
        assert_eq!(AssociationType::parse("typed:X:notanumber"), None);
    }
}
