//! Schema drift: a flow's target fields compared with the target object's live schema (pure).
//! Each mapped field must exist, hold a compatible type, be writable when the flow writes it
//! (on create, on update), and a restricted picklist must accept every value the field's value
//! map can produce. Each problem names the mapping file's line and column.

use std::fmt;

use super::value::{FieldType, Val};
use super::{FieldDirection, Mapping, Step, Unmapped, When};
use crate::connector::schema::{LiveKind, LiveObject};
use crate::model::SystemKind;

/// One mapped target field the live schema no longer fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub flow: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub system: SystemKind,
    pub object: String,
    pub field: String,
    pub problem: Problem,
}

/// What no longer fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The object has no such field (deleted or renamed); `hint` names a close one.
    Missing { hint: Option<String> },
    /// The field holds another kind of value than the mapping writes.
    Type { mapped: FieldType, live: LiveKind },
    /// The API may not set the field when the flow does (`create`, `update`, or both).
    ReadOnly { when: &'static str },
    /// The value map can produce values the picklist does not accept.
    Options { refused: Vec<String> },
}

impl Problem {
    /// A short stable name (status, metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => "missing",
            Problem::Type { .. } => "type",
            Problem::ReadOnly { .. } => "read_only",
            Problem::Options { .. } => "options",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { hint: Some(h) } => {
                write!(f, "does not exist any more (did you mean {h:?}?)")
            }
            Problem::Missing { hint: None } => f.write_str("does not exist any more"),
            Problem::Type { mapped, live } => {
                write!(f, "is a {live} field; the mapping writes {mapped}")
            }
            Problem::ReadOnly { when } => write!(f, "is read-only on {when}"),
            Problem::Options { refused } => write!(
                f,
                "no longer accepts {} that the value map produces",
                refused
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: flow {}: {}/{} field {:?} {}",
            self.file,
            self.line,
            self.column,
            self.flow,
            self.system,
            self.object,
            self.field,
            self.problem
        )
    }
}

impl Drift {
    /// Whether the flow can run without this field (it is skipped alone): every field but the
    /// external id, which every write is addressed by.
    pub fn degradable(&self, m: &Mapping) -> bool {
        self.field != m.external_id
    }
}

/// Whether a field of `live` kind takes values the mapping writes as `ty`.
fn compatible(ty: FieldType, live: &LiveKind) -> bool {
    match live {
        // Text takes any value's text; a vendor type prmsync does not know is not judged.
        LiveKind::Text | LiveKind::Other(_) => true,
        LiveKind::Enum => matches!(
            ty,
            FieldType::String | FieldType::Enum | FieldType::Bool | FieldType::Int
        ),
        LiveKind::Reference => ty == FieldType::String,
        LiveKind::Number => matches!(ty, FieldType::Int | FieldType::Decimal),
        LiveKind::Bool => ty == FieldType::Bool,
        LiveKind::Date => ty == FieldType::Date,
        LiveKind::DateTime => ty == FieldType::DateTime,
    }
}

/// The values a field can write that are known from the file: its value map's targets and
/// default, and its constant. `None` when other values pass through (`unmapped = "pass"`, or no
/// value map and no constant).
fn produced(field: &super::Field) -> Option<Vec<String>> {
    if let Some(Val::Str(c)) = &field.constant {
        return Some(vec![c.clone()]);
    }
    field.steps.iter().rev().find_map(|s| match s {
        Step::Values { map, unmapped, .. } => {
            let mut out: Vec<String> = map.iter().map(|(_, to)| to.clone()).collect();
            match unmapped {
                Unmapped::Pass => return None,
                Unmapped::Default(d) => out.push(d.clone()),
                Unmapped::Error => {}
            }
            out.sort();
            out.dedup();
            Some(out)
        }
        _ => None,
    })
}

/// Every mapped field of `m` (and its external id) that `live` no longer fits.
pub fn check(m: &Mapping, live: &LiveObject) -> Vec<Drift> {
    let drift = |field: &str, (line, column): (usize, usize), problem: Problem| Drift {
        flow: m.name.clone(),
        file: m.file.clone(),
        line,
        column,
        system: live.system,
        object: live.object.clone(),
        field: field.to_owned(),
        problem,
    };
    let names: Vec<&str> = live.fields.keys().map(String::as_str).collect();
    let missing = |field: &str| Problem::Missing {
        hint: super::schema::closest(field, &names).map(str::to_owned),
    };
    let mut out = Vec::new();
    if !live.fields.contains_key(&m.external_id) {
        out.push(drift(&m.external_id, m.target_at, missing(&m.external_id)));
    }
    for f in &m.fields {
        let Some(lf) = live.fields.get(&f.target) else {
            out.push(drift(&f.target, f.target_at, missing(&f.target)));
            continue;
        };
        if !compatible(f.ty, &lf.kind) {
            out.push(drift(
                &f.target,
                f.target_at,
                Problem::Type {
                    mapped: f.ty,
                    live: lf.kind.clone(),
                },
            ));
            continue;
        }
        if f.direction == FieldDirection::ToSource {
            continue;
        }
        let on_create = f.when != When::UpdateOnly && !lf.createable;
        let on_update = f.when != When::CreateOnly && !lf.updateable;
        let when = match (on_create, on_update) {
            (true, true) => Some("create and update"),
            (true, false) => Some("create"),
            (false, true) => Some("update"),
            (false, false) => None,
        };
        if let Some(when) = when {
            out.push(drift(&f.target, f.target_at, Problem::ReadOnly { when }));
            continue;
        }
        if let (Some(options), Some(values)) = (&lf.options, produced(f)) {
            let refused: Vec<String> = values
                .into_iter()
                .filter(|v| !options.contains(v))
                .collect();
            if !refused.is_empty() {
                out.push(drift(&f.target, f.target_at, Problem::Options { refused }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::connector::schema::LiveField;

    fn flow() -> Mapping {
        let text = r#"name = "deals"
[source]
system = "partnerstack"
object = "deals"
[target]
system = "hubspot"
object = "deals"
external_id = "prm_deal_id"

[[field]]
source = "name"
target = "dealname"

[[field]]
source = "amount"
target = "amount"
type = "decimal"

[[field]]
source = "stage"
target = "dealstage"
type = "enum"
values = { won = "closedwon", lost = "closedlost" }

[[field]]
source = "reason"
target = "closed_lost_reason"
direction = "to_source"
"#;
        super::super::compile::compile("deals.toml", text).unwrap()
    }

    fn field(kind: LiveKind) -> LiveField {
        LiveField {
            kind,
            createable: true,
            updateable: true,
            options: None,
        }
    }

    fn live() -> LiveObject {
        let mut fields = BTreeMap::new();
        fields.insert("prm_deal_id".into(), field(LiveKind::Text));
        fields.insert("dealname".into(), field(LiveKind::Text));
        fields.insert("amount".into(), field(LiveKind::Number));
        fields.insert(
            "dealstage".into(),
            LiveField {
                options: Some(vec!["closedwon".into(), "closedlost".into()]),
                ..field(LiveKind::Enum)
            },
        );
        fields.insert("closed_lost_reason".into(), field(LiveKind::Text));
        LiveObject {
            system: SystemKind::HubSpot,
            object: "deals".into(),
            fields,
        }
    }

    #[test]
    fn a_fitting_schema_has_no_drift() {
        assert_eq!(check(&flow(), &live()), Vec::new());
    }

    #[test]
    fn each_kind_of_drift_is_located_in_the_file() {
        let m = flow();
        let mut l = live();
        let name = l.fields.remove("dealname").unwrap();
        l.fields.insert("deal_name".into(), name);
        l.fields.get_mut("amount").unwrap().kind = LiveKind::Date;
        l.fields.get_mut("dealstage").unwrap().options = Some(vec!["closedwon".into()]);
        // A read-only field the flow only reads is no drift.
        l.fields.get_mut("closed_lost_reason").unwrap().updateable = false;
        let got = check(&m, &l);
        let lines: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "deals.toml:12:10: flow deals: hubspot/deals field \"dealname\" does not exist any more (did you mean \"deal_name\"?)",
                "deals.toml:16:10: flow deals: hubspot/deals field \"amount\" is a date field; the mapping writes decimal",
                "deals.toml:21:10: flow deals: hubspot/deals field \"dealstage\" no longer accepts \"closedlost\" that the value map produces",
            ]
        );
        assert!(got.iter().all(|d| d.degradable(&m)));
        l.fields.get_mut("dealstage").unwrap().createable = false;
        l.fields.remove("prm_deal_id");
        let got = check(&m, &l);
        assert_eq!(got[0].field, "prm_deal_id");
        assert!(!got[0].degradable(&m));
        assert!(
            got.iter()
                .any(|d| d.problem == Problem::ReadOnly { when: "create" })
        );
    }
}
