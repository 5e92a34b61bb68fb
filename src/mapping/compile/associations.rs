//! Compile step for `[[association]]`: which HubSpot association the target record gets with a
//! record another flow linked (deal ↔ company, contact ↔ company, task ↔ deal and company), and
//! the cross-file check that the named flow exists and targets HubSpot too.

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::Errs;
use crate::file_error::line_col;
use crate::mapping::{Association, Mapping, MappingError, schema};
use crate::model::{ASSOCIATION_CATEGORIES, AssociationType, ObjectRef, SystemKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssociation {
    /// The flow whose links hold the other record.
    flow: Spanned<String>,
    /// The source path holding the other flow's source id.
    source: Spanned<String>,
    type_id: Option<Spanned<i64>>,
    category: Option<Spanned<String>>,
    label: Option<Spanned<String>>,
}

/// `[[association]]` tables → associations; problems are reported and the table is dropped.
pub(super) fn associations(
    raw: &[Spanned<RawAssociation>],
    target: Option<&ObjectRef>,
    errs: &mut Errs<'_>,
) -> Vec<Association> {
    let mut out = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let key = format!("association[{i}]");
        if let Some(t) = target
            && t.system != SystemKind::HubSpot
        {
            errs.at(
                a.span(),
                &key,
                format!("associations are HubSpot's; {} relates records by lookup fields", t.system),
                Some("map the other record's id into the lookup field (e.g. AccountId) with transforms = [{ lookup = \"flow\" }]"),
            );
            continue;
        }
        if let Some(a) = association(a, &key, errs) {
            out.push(a);
        }
    }
    out
}

fn association(
    raw: &Spanned<RawAssociation>,
    key: &str,
    errs: &mut Errs<'_>,
) -> Option<Association> {
    let a = raw.get_ref();
    let mut ok = true;
    for (value, name) in [(&a.flow, "flow"), (&a.source, "source")] {
        if value.get_ref().trim().is_empty() {
            errs.at(
                value.span(),
                &format!("{key}.{name}"),
                "must not be empty",
                None,
            );
            ok = false;
        }
    }
    let kind = match (&a.type_id, &a.label) {
        (Some(_), Some(label)) => {
            errs.at(
                label.span(),
                &format!("{key}.label"),
                "give a type_id or a label, not both",
                Some("a label's type id is read from the portal, so the label alone is enough"),
            );
            None
        }
        (Some(id), None) => type_id(id, a.category.as_ref(), key, errs),
        (None, Some(label)) => {
            if label.get_ref().trim().is_empty() {
                errs.at(
                    label.span(),
                    &format!("{key}.label"),
                    "must not be empty",
                    None,
                );
                None
            } else {
                category_unused(a.category.as_ref(), key, errs);
                Some(AssociationType::Label(label.get_ref().clone()))
            }
        }
        (None, None) => {
            category_unused(a.category.as_ref(), key, errs);
            Some(AssociationType::Default)
        }
    };
    let kind = kind.filter(|_| ok)?;
    let (line, column) = line_col(errs.text, a.flow.span().start);
    Some(Association {
        flow: a.flow.get_ref().clone(),
        source: a.source.get_ref().clone(),
        kind,
        at: MappingError {
            file: errs.file.to_owned(),
            line,
            column,
            key: format!("{key}.flow"),
            message: String::new(),
            hint: None,
        },
    })
}

fn type_id(
    id: &Spanned<i64>,
    category: Option<&Spanned<String>>,
    key: &str,
    errs: &mut Errs<'_>,
) -> Option<AssociationType> {
    let Ok(type_id) = u32::try_from(*id.get_ref()) else {
        errs.at(
            id.span(),
            &format!("{key}.type_id"),
            format!("{} is not an association type id", id.get_ref()),
            Some("HubSpot's type ids are positive whole numbers, e.g. 341 (deal to company)"),
        );
        return None;
    };
    let category = match category {
        None => "HUBSPOT_DEFINED".to_owned(),
        Some(c) if ASSOCIATION_CATEGORIES.contains(&c.get_ref().as_str()) => c.get_ref().clone(),
        Some(c) => {
            let hint = match schema::closest(c.get_ref(), ASSOCIATION_CATEGORIES) {
                Some(close) => format!("did you mean {close:?}?"),
                None => format!("use {}", ASSOCIATION_CATEGORIES.join(" or ")),
            };
            errs.at(
                c.span(),
                &format!("{key}.category"),
                format!("unknown association category {:?}", c.get_ref()),
                Some(&hint),
            );
            return None;
        }
    };
    Some(AssociationType::Typed { category, type_id })
}

fn category_unused(category: Option<&Spanned<String>>, key: &str, errs: &mut Errs<'_>) {
    if let Some(c) = category {
        errs.at(
            c.span(),
            &format!("{key}.category"),
            "category only applies with a type_id",
            None,
        );
    }
}

/// Checks, across the set, that every association names a flow that exists and whose target
/// is a HubSpot object (the other end of the association).
pub(in crate::mapping) fn check(mappings: &[Arc<Mapping>]) -> Vec<MappingError> {
    let names: Vec<&str> = mappings.iter().map(|m| m.name.as_str()).collect();
    let mut out = Vec::new();
    for a in mappings.iter().flat_map(|m| &m.associations) {
        let problem = match mappings.iter().find(|m| m.name == a.flow) {
            None => Some((
                format!(
                    "association names flow {:?}, which no mapping file defines",
                    a.flow
                ),
                match schema::closest(&a.flow, &names) {
                    Some(c) => format!("did you mean {c:?}?"),
                    None => format!("flows in this set: {}", names.join(", ")),
                },
            )),
            Some(other) if other.target.system != SystemKind::HubSpot => Some((
                format!(
                    "flow {:?} targets {}, so its records cannot be associated in HubSpot",
                    a.flow, other.target
                ),
                "name a flow whose target is a HubSpot object".to_owned(),
            )),
            Some(_) => None,
        };
        if let Some((message, hint)) = problem {
            out.push(MappingError {
                message,
                hint: Some(hint),
                ..a.at.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::mapping::MappingSet;
    use crate::model::AssociationType;

    const COMPANIES: &str = r#"
name = "partner-organisation"
[source]
system = "partnerstack"
object = "partnerships"
[target]
system = "hubspot"
object = "companies"
external_id = "prm_partner_key"
[[field]]
source = "company.name"
target = "name"
"#;

    fn deals(target: &str, section: &str) -> String {
        format!(
            r#"
name = "deal-registration"
[source]
system = "partnerstack"
object = "deals"
[target]
system = "{target}"
object = "{}"
external_id = "{}"
[[field]]
source = "account_name"
target = "{}"
{section}
"#,
            if target == "hubspot" {
                "deals"
            } else {
                "Opportunity"
            },
            if target == "hubspot" {
                "prm_deal_id"
            } else {
                "PRM_Deal_Id__c"
            },
            if target == "hubspot" {
                "dealname"
            } else {
                "Name"
            },
        )
    }

    fn compile(deal_file: String) -> Result<Vec<AssociationType>, String> {
        let files = vec![
            ("companies.toml".to_owned(), COMPANIES.to_owned()),
            ("deals.toml".to_owned(), deal_file),
        ];
        match MappingSet::compile(&files) {
            Ok(set) => Ok(set
                .mappings
                .iter()
                .flat_map(|m| m.associations.iter().map(|a| a.kind.clone()))
                .collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn each_kind_compiles() {
        let cases = [
            ("", AssociationType::Default),
            (
                "type_id = 341",
                AssociationType::Typed {
                    category: "HUBSPOT_DEFINED".into(),
                    type_id: 341,
                },
            ),
            (
                "type_id = 7\ncategory = \"USER_DEFINED\"",
                AssociationType::Typed {
                    category: "USER_DEFINED".into(),
                    type_id: 7,
                },
            ),
            (
                "label = \"Sourcing partner\"",
                AssociationType::Label("Sourcing partner".into()),
            ),
        ];
        for (extra, want) in cases {
            let section = format!(
                "[[association]]\nflow = \"partner-organisation\"\nsource = \"partner_key\"\n{extra}"
            );
            assert_eq!(
                compile(deals("hubspot", &section)),
                Ok(vec![want]),
                "{extra}"
            );
        }
    }

    #[test]
    fn mistakes_are_located_and_explained() {
        let cases = [
            (
                "flow = \"partner-organisations\"\nsource = \"partner_key\"",
                "deals.toml:14:8: association[0].flow: association names flow \"partner-organisations\", which no mapping file defines (hint: did you mean \"partner-organisation\"?)",
            ),
            (
                "flow = \"partner-organisation\"\nsource = \"partner_key\"\ntype_id = 5\nlabel = \"x\"",
                "association[0].label: give a type_id or a label, not both",
            ),
            (
                "flow = \"partner-organisation\"\nsource = \"partner_key\"\ntype_id = 5\ncategory = \"HUBSPOT_DEFINE\"",
                "unknown association category \"HUBSPOT_DEFINE\" (hint: did you mean \"HUBSPOT_DEFINED\"?)",
            ),
            (
                "flow = \"partner-organisation\"\nsource = \"partner_key\"\ntype_id = -1",
                "association[0].type_id: -1 is not an association type id",
            ),
            (
                "flow = \"partner-organisation\"\nsource = \"\"",
                "association[0].source: must not be empty",
            ),
            (
                "flow = \"partner-organisation\"\nsource = \"partner_key\"\nlabel = \"x\"\ncategory = \"USER_DEFINED\"",
                "association[0].category: category only applies with a type_id",
            ),
        ];
        for (body, want) in cases {
            let section = format!("[[association]]\n{body}");
            let err = compile(deals("hubspot", &section)).expect_err(body);
            assert!(err.contains(want), "{body}\n{err}");
        }
        let section = "[[association]]\nflow = \"partner-organisation\"\nsource = \"partner_key\"";
        let err = compile(deals("salesforce", section)).expect_err("salesforce");
        assert!(
            err.contains("association[0]: associations are HubSpot's; salesforce relates records by lookup fields"),
            "{err}"
        );
    }
}
