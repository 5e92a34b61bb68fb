//! The schema contract at run time: reads the live schema of every CRM object the flows write
//! (at start, on reload and every `daemon.schema_check_secs`), checks each mapped field with
//! `mapping::drift::check` (the checker `prmsync check --live` uses), records the drift for
//! `prmsync status`, and keeps per object a [`Guard`] the writer applies to every write: a
//! drifted field is left out alone, a picklist value the live schema refuses is left out of that
//! record's write only. When a check finds a field fitting again, the records whose writes left
//! it out are read again (a resync of their ids), so the planner writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use super::resync::Scope;
use super::{Engine, EngineError};
use crate::connector::schema::LiveObject;
use crate::mapping::Mapping;
use crate::mapping::drift::{self, Drift, Problem};
use crate::model::SystemKind;
use crate::store::{DriftRow, SchemaSkip, SkippedField};

/// What the writer leaves out of a write to one object, from its last live-schema check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Drifted fields (gone, another type, read-only): left out of every write.
    pub left_out: BTreeSet<String>,
    /// Each restricted picklist's live values: a value not among them is left out of that write.
    pub options: BTreeMap<String, BTreeSet<String>>,
}

/// The guards in force, by (system, object); an object not checked yet has none.
#[derive(Debug, Default)]
pub(super) struct Guards(RwLock<BTreeMap<(SystemKind, String), Arc<Guard>>>);

impl Guards {
    pub(super) fn get(&self, system: SystemKind, object: &str) -> Option<Arc<Guard>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(system, object.to_owned()))
            .cloned()
    }

    fn set(&self, system: SystemKind, object: &str, guard: Guard) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((system, object.to_owned()), Arc::new(guard));
    }
}

/// The guard of `live` given the drift the flows writing it have (pure). The external id is
/// never left out: every write is addressed by it (its drift is reported, not degraded).
pub fn guard(live: &LiveObject, drift: &[(Drift, bool)]) -> Guard {
    Guard {
        left_out: drift
            .iter()
            .filter(|(d, degradable)| *degradable && !matches!(d.problem, Problem::Options { .. }))
            .map(|(d, _)| d.field.clone())
            .collect(),
        options: live
            .fields
            .iter()
            .filter_map(|(name, f)| {
                f.options
                    .as_ref()
                    .map(|o| (name.clone(), o.iter().cloned().collect()))
            })
            .collect(),
    }
}

/// Whether a restricted picklist with `options` takes `text` (a multi-select's values are
/// separated by `;`; an empty value clears the field).
fn takes(options: &BTreeSet<String>, text: &str) -> bool {
    text.is_empty() || options.contains(text) || text.split(';').all(|v| options.contains(v.trim()))
}

/// A value as picklist text (`None`: not a value a picklist judges, e.g. null).
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Guard {
    /// `payload` without what the live schema no longer takes, and what was left out; `None`
    /// when all of it is taken (pure).
    pub fn strip(
        &self,
        payload: &Map<String, Value>,
    ) -> Option<(Map<String, Value>, Vec<SkippedField>)> {
        let mut skipped = Vec::new();
        for (field, value) in payload {
            if self.left_out.contains(field) {
                skipped.push(SkippedField {
                    field: field.clone(),
                    value: None,
                });
            } else if let (Some(options), Some(text)) = (self.options.get(field), as_text(value))
                && !takes(options, &text)
            {
                skipped.push(SkippedField {
                    field: field.clone(),
                    value: Some(text),
                });
            }
        }
        if skipped.is_empty() {
            return None;
        }
        let kept = payload
            .iter()
            .filter(|(k, _)| !skipped.iter().any(|s| &s.field == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some((kept, skipped))
    }

    /// Whether a write that left `skip`'s field out could carry it now.
    pub fn recovered(&self, skip: &SchemaSkip) -> bool {
        !self.left_out.contains(&skip.field)
            && skip.value.as_deref().is_none_or(|v| {
                self.options
                    .get(&skip.field)
                    .is_none_or(|options| takes(options, v))
            })
    }
}

/// A drift as stored for status.
fn row(d: &Drift) -> DriftRow {
    DriftRow {
        object: d.object.clone(),
        field: d.field.clone(),
        flow: d.flow.clone(),
        location: format!("{}:{}:{}", d.file, d.line, d.column),
        kind: d.problem.kind().to_owned(),
        problem: d.problem.to_string(),
    }
}

/// What one schema check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaCheck {
    /// Objects whose live schema was read.
    pub objects: usize,
    /// Drifted mapped fields found (one per flow and field).
    pub drifted: usize,
    /// Records asked to be planned again because a field they lacked recovered.
    pub replanned: usize,
}

impl Engine {
    /// Reads the live schema of every CRM object the active flows write, records the drift and
    /// sets the writer's guards; records whose writes left out a field that fits again are read
    /// again. An object whose schema cannot be read keeps its last guard (checked again next
    /// time).
    pub async fn check_schema(&self) -> Result<SchemaCheck, EngineError> {
        let crm = &self.crm;
        let system = crm.kind();
        let mappings = self.mappings();
        let mut by_object: BTreeMap<String, Vec<&Arc<Mapping>>> = BTreeMap::new();
        for m in mappings.iter().filter(|m| m.target.system == system) {
            by_object
                .entry(m.target.object.clone())
                .or_default()
                .push(m);
        }
        let mut report = SchemaCheck::default();
        let mut checked = Vec::new();
        let mut guards = Vec::new();
        for (object, flows) in &by_object {
            let live = match crm.read_schema(object).await {
                None => return Ok(report),
                Some(Ok(live)) => live,
                Some(Err(error)) => {
                    crate::telemetry::meters::meters()
                        .error(crate::telemetry::meters::error_kind(&error));
                    tracing::warn!(%system, object, error = %error, "cannot read the live schema; the last check's findings stay in force");
                    continue;
                }
            };
            report.objects += 1;
            let drift: Vec<(Drift, bool)> = flows
                .iter()
                .flat_map(|m| {
                    drift::check(m, &live)
                        .into_iter()
                        .map(|d| {
                            let degradable = d.degradable(m);
                            (d, degradable)
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            report.drifted += drift.len();
            checked.push((
                object.clone(),
                drift.iter().map(|(d, _)| row(d)).collect::<Vec<_>>(),
            ));
            guards.push((object.clone(), guard(&live, &drift)));
        }
        let now = (self.clock)();
        let changes = self
            .store
            .record_schema_drift(system, checked, by_object.keys().cloned().collect(), now)
            .await?;
        for d in &changes.appeared {
            tracing::warn!(%system, object = %d.object, field = %d.field, flow = %d.flow, at = %d.location, problem = %d.problem,
                "{}: mapped field drifted from the live schema: {} {}; writes go out without it until the schema is fixed",
                d.location, d.field, d.problem);
        }
        for d in &changes.cleared {
            tracing::info!(%system, object = %d.object, field = %d.field, flow = %d.flow, at = %d.location,
                "{}: mapped field fits the live schema again; records written without it are planned again",
                d.location);
        }
        for (object, guard) in guards {
            let skips = self.store.schema_skips(system, object.clone()).await?;
            let recovered: Vec<SchemaSkip> =
                skips.into_iter().filter(|s| guard.recovered(s)).collect();
            self.guards.set(system, &object, guard);
            if recovered.is_empty() {
                continue;
            }
            let mut by_flow: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for s in &recovered {
                by_flow.entry(&s.flow).or_default().insert(&s.source_id);
            }
            let active: BTreeSet<&str> = mappings.iter().map(|m| m.name.as_str()).collect();
            for (flow, ids) in by_flow {
                if !active.contains(flow) {
                    continue;
                }
                let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
                report.replanned += ids.len();
                tracing::info!(%system, object, flow, records = ids.len(), "reading again the records written without a field that fits again");
                self.request_resync(flow, Scope::Ids(ids)).await?;
            }
            self.store.clear_schema_skips(recovered).await?;
        }
        Ok(report)
    }

    /// The guard of `system`/`object` from its last schema check (`None`: not checked).
    pub(super) fn schema_guard(&self, system: SystemKind, object: &str) -> Option<Arc<Guard>> {
        self.guards.get(system, object)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn guard() -> Guard {
        Guard {
            left_out: ["description".to_owned()].into(),
            options: [(
                "dealstage".to_owned(),
                ["won".to_owned(), "open".to_owned()].into(),
            )]
            .into(),
        }
    }

    fn skip(field: &str, value: Option<&str>) -> SchemaSkip {
        SchemaSkip {
            flow: "f".into(),
            source_id: "1".into(),
            field: field.into(),
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn a_drifted_field_and_a_refused_value_are_left_out_alone() {
        let g = guard();
        let p = json!({"amount": 5, "description": "x", "dealstage": "lost"});
        let (kept, skipped) = g.strip(p.as_object().unwrap()).expect("something left out");
        assert_eq!(Value::Object(kept), json!({"amount": 5}));
        assert_eq!(
            skipped,
            [
                SkippedField {
                    field: "dealstage".into(),
                    value: Some("lost".into())
                },
                SkippedField {
                    field: "description".into(),
                    value: None
                }
            ]
        );
        let fine = json!({"amount": 5, "dealstage": "won;open", "other": null});
        assert_eq!(g.strip(fine.as_object().unwrap()), None);
    }

    #[test]
    fn a_skip_recovers_when_the_field_or_its_value_fits_again() {
        let g = guard();
        assert!(!g.recovered(&skip("description", None)));
        assert!(!g.recovered(&skip("dealstage", Some("lost"))));
        assert!(g.recovered(&skip("dealstage", Some("won"))));
        assert!(g.recovered(&skip("amount", None)));
        assert!(Guard::default().recovered(&skip("description", None)));
    }
}
