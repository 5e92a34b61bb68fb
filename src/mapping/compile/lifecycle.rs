//! Compile step for `[on_target_delete]`: what a flow does when its target record is deleted.

use serde::Deserialize;
use toml::Spanned;

use super::{Errs, toml_to_json};
use crate::mapping::TargetDeletePolicy;
use crate::model::{ObjectRef, SystemKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTargetDelete {
    policy: Spanned<String>,
    field: Option<Spanned<String>>,
    value: Option<toml::Value>,
}

const KEY: &str = "on_target_delete.policy";

/// `[on_target_delete]` → the policy; `unlink_and_flag_source` (without a flag) when absent.
pub(super) fn target_delete_policy(
    raw: Option<&Spanned<RawTargetDelete>>,
    source: Option<&ObjectRef>,
    errs: &mut Errs<'_>,
) -> TargetDeletePolicy {
    let Some(raw) = raw else {
        return TargetDeletePolicy::Unlink { flag: None };
    };
    let d = raw.get_ref();
    let policy = d.policy.get_ref().as_str();
    if policy != "unlink_and_flag_source" && (d.field.is_some() || d.value.is_some()) {
        errs.at(
            d.policy.span(),
            KEY,
            "field and value only apply to policy = \"unlink_and_flag_source\"",
            None,
        );
    }
    match policy {
        "unlink_and_flag_source" => match (&d.field, &d.value) {
            (Some(field), Some(value)) => TargetDeletePolicy::Unlink {
                flag: Some((field.get_ref().clone(), toml_to_json(value))),
            },
            (None, None) => TargetDeletePolicy::Unlink { flag: None },
            _ => {
                errs.at(
                    d.policy.span(),
                    KEY,
                    "a source flag needs both a field and a value",
                    Some("e.g. field = \"crm_deleted\", value = \"true\""),
                );
                TargetDeletePolicy::Unlink { flag: None }
            }
        },
        "recreate" => TargetDeletePolicy::Recreate,
        "delete_source" => {
            if let Some(s) = source
                && !matches!(s.system, SystemKind::HubSpot | SystemKind::Salesforce)
            {
                errs.at(
                    d.policy.span(),
                    KEY,
                    format!("{} has no delete call prmsync can use", s.system),
                    Some("use unlink_and_flag_source or recreate"),
                );
            }
            TargetDeletePolicy::DeleteSource
        }
        other => {
            errs.at(
                d.policy.span(),
                KEY,
                format!("unknown target delete policy {other:?}"),
                Some("use unlink_and_flag_source, recreate or delete_source"),
            );
            TargetDeletePolicy::Unlink { flag: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::mapping::TargetDeletePolicy;
    use serde_json::json;

    fn compile(source: &str, section: &str) -> Result<TargetDeletePolicy, String> {
        let text = format!(
            "name = \"t\"\n[source]\nsystem = \"{source}\"\nobject = \"deals\"\n\
             [target]\nsystem = \"hubspot\"\nobject = \"x\"\nexternal_id = \"ext\"\n\
             [[field]]\nsource = \"a\"\ntarget = \"b\"\n{section}\n"
        );
        super::super::compile("t.toml", &text)
            .map(|m| m.on_target_delete)
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn each_policy_compiles_and_mistakes_are_located() {
        let unlink = |flag| TargetDeletePolicy::Unlink { flag };
        assert_eq!(compile("partnerstack", ""), Ok(unlink(None)));
        assert_eq!(
            compile(
                "partnerstack",
                "[on_target_delete]\npolicy = \"unlink_and_flag_source\"\nfield = \"gone\"\nvalue = true"
            ),
            Ok(unlink(Some(("gone".into(), json!(true)))))
        );
        assert_eq!(
            compile("partnerstack", "[on_target_delete]\npolicy = \"recreate\""),
            Ok(TargetDeletePolicy::Recreate)
        );
        assert_eq!(
            compile(
                "salesforce",
                "[on_target_delete]\npolicy = \"delete_source\""
            ),
            Ok(TargetDeletePolicy::DeleteSource)
        );
        for (source, section, says) in [
            (
                "partnerstack",
                "policy = \"delete_source\"",
                "has no delete call",
            ),
            (
                "partnerstack",
                "policy = \"remove\"",
                "unknown target delete policy",
            ),
            (
                "partnerstack",
                "policy = \"recreate\"\nfield = \"x\"",
                "only apply to",
            ),
            (
                "partnerstack",
                "policy = \"unlink_and_flag_source\"\nfield = \"x\"",
                "both a field and a value",
            ),
        ] {
            let err = compile(source, &format!("[on_target_delete]\n{section}")).unwrap_err();
            assert!(
                err.contains(says) && err.contains("on_target_delete.policy"),
                "{section}: {err}"
            );
        }
    }
}
