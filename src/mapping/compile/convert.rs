//! Compile step for `[on_convert]`: which flow takes a source record over when sales converts the
//! Salesforce Lead a flow wrote (the Lead's converted Account, Contact or Opportunity, by that
//! flow's target object), and the cross-file check that the named flow exists, reads the same
//! source object and targets one of those.

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::Errs;
use crate::file_error::line_col;
use crate::mapping::{Mapping, MappingError, OnConvert, schema};
use crate::model::{ObjectRef, SystemKind};

/// The objects a Lead conversion produces.
pub const CONVERTED_OBJECTS: &[&str] = &["Account", "Contact", "Opportunity"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConvert {
    /// The flow that follows the converted record.
    follow: Spanned<String>,
}

/// `[on_convert]` → what a Lead conversion does; only a flow that writes Salesforce Leads has it.
pub(super) fn on_convert(
    raw: Option<&Spanned<RawConvert>>,
    target: Option<&ObjectRef>,
    errs: &mut Errs<'_>,
) -> Option<OnConvert> {
    let raw = raw?;
    let follow = &raw.get_ref().follow;
    if let Some(t) = target
        && (t.system != SystemKind::Salesforce || t.object != "Lead")
    {
        errs.at(
            raw.span(),
            "on_convert",
            format!("only Salesforce Leads are converted; this flow writes {t}"),
            Some("remove [on_convert], or target salesforce Lead"),
        );
        return None;
    }
    if follow.get_ref().trim().is_empty() {
        errs.at(
            follow.span(),
            "on_convert.follow",
            "must not be empty",
            None,
        );
        return None;
    }
    let (line, column) = line_col(errs.text, follow.span().start);
    Some(OnConvert {
        follow: follow.get_ref().clone(),
        at: MappingError {
            file: errs.file.to_owned(),
            line,
            column,
            key: "on_convert.follow".into(),
            message: String::new(),
            hint: None,
        },
    })
}

/// Across the set: the flow `follow` names exists, reads the same source object, and targets a
/// Salesforce Account, Contact or Opportunity.
pub(in crate::mapping) fn check(mappings: &[Arc<Mapping>]) -> Vec<MappingError> {
    let names: Vec<&str> = mappings.iter().map(|m| m.name.as_str()).collect();
    let mut out = Vec::new();
    for m in mappings {
        let Some(c) = &m.on_convert else {
            continue;
        };
        let problem = match mappings.iter().find(|o| o.name == c.follow) {
            None => Some((
                format!(
                    "on_convert follows flow {:?}, which no mapping file defines",
                    c.follow
                ),
                match schema::closest(&c.follow, &names) {
                    Some(n) => format!("did you mean {n:?}?"),
                    None => format!("flows in this set: {}", names.join(", ")),
                },
            )),
            Some(o) if o.source != m.source => Some((
                format!(
                    "flow {:?} reads {}, not {}: it cannot take over this flow's records",
                    c.follow, o.source, m.source
                ),
                "name a flow with the same [source]".to_owned(),
            )),
            Some(o)
                if o.target.system != SystemKind::Salesforce
                    || !CONVERTED_OBJECTS.contains(&o.target.object.as_str()) =>
            {
                Some((
                    format!(
                        "flow {:?} writes {}; a Lead converts into a Salesforce Account, Contact or Opportunity",
                        c.follow, o.target
                    ),
                    "name the flow that writes the converted Opportunity (or Account, Contact)"
                        .to_owned(),
                ))
            }
            Some(_) => None,
        };
        if let Some((message, hint)) = problem {
            out.push(MappingError {
                message,
                hint: Some(hint),
                ..c.at.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::mapping::MappingSet;

    fn flow(name: &str, source: &str, object: &str, id: &str, field: &str, extra: &str) -> String {
        format!(
            r#"
name = "{name}"
[source]
system = "partnerstack"
object = "{source}"
[target]
system = "salesforce"
object = "{object}"
external_id = "{id}"
{extra}
[[field]]
source = "account_name"
target = "{field}"
"#
        )
    }

    fn compile(lead_source: &str, lead_object: &str, follow: &str) -> Result<String, String> {
        let lead = flow(
            "deal-lead",
            lead_source,
            lead_object,
            if lead_object == "Lead" {
                "PRM_Lead_Id__c"
            } else {
                "PRM_Deal_Id__c"
            },
            if lead_object == "Lead" {
                "Company"
            } else {
                "Name"
            },
            &format!("[on_convert]\nfollow = \"{follow}\"\n"),
        );
        let opp = flow(
            "deal-opportunity",
            "deals",
            "Opportunity",
            "PRM_Deal_Id__c",
            "Name",
            "",
        );
        let files = vec![("lead.toml".to_owned(), lead), ("opp.toml".to_owned(), opp)];
        match MappingSet::compile(&files) {
            Ok(set) => Ok(set
                .mappings
                .iter()
                .find_map(|m| m.on_convert.as_ref().map(|c| c.follow.clone()))
                .unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_lead_flow_follows_a_flow_of_the_same_source_into_a_converted_object() {
        assert_eq!(
            compile("deals", "Lead", "deal-opportunity").as_deref(),
            Ok("deal-opportunity")
        );
        let unknown = compile("deals", "Lead", "deal-oportunity").expect_err("unknown flow");
        assert!(
            unknown.contains("lead.toml") && unknown.contains("on_convert.follow"),
            "{unknown}"
        );
        assert!(unknown.contains("no mapping file defines"), "{unknown}");
        let other_source = compile("leads", "Lead", "deal-opportunity").expect_err("source");
        assert!(other_source.contains("cannot take over"), "{other_source}");
        let not_lead = compile("deals", "Opportunity", "deal-opportunity").expect_err("target");
        assert!(
            not_lead.contains("only Salesforce Leads are converted"),
            "{not_lead}"
        );
    }
}
