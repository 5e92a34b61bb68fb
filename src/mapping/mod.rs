//! Mapping files: the admins' declarative description of each flow. Parse and compile (pure,
//! every error with file:line:column), then apply in either direction (pure).

mod apply;
mod compile;
pub mod drift;
mod examples;
mod filter;
pub mod schema;
pub mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::model::ObjectRef;
pub use apply::{MapError, Op, get_path};
pub use examples::{ExampleFailure, run_examples};
pub use filter::{Condition, Test};
use value::{FieldType, Val};

/// The mapping files built into the binary: the ones shipped in `mappings/`.
pub const BUILTIN: &[(&str, &str)] = &[(
    "mappings/partnerstack-hubspot-deals.toml",
    include_str!("../../mappings/partnerstack-hubspot-deals.toml"),
)];

/// A compiled mapping: one flow from a source object to a target object.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub name: String,
    pub file: String,
    /// A short hash of the file's text; the ledger records which version produced each write.
    pub version: String,
    pub description: Option<String>,
    pub source: ObjectRef,
    pub target: ObjectRef,
    /// The target field that holds the source record's id (the upsert key).
    pub external_id: String,
    /// Where the `[target]` table is written (line, column): reports about the external id.
    pub target_at: (usize, usize),
    pub fields: Vec<Field>,
    /// Which source records the flow takes (all conditions must hold); empty takes all.
    pub filter: Vec<Condition>,
    /// What a deleted source record does to its target.
    pub on_delete: DeletePolicy,
    /// What a deleted target record does to the link and the source.
    pub on_target_delete: TargetDeletePolicy,
    /// Which flow takes a record over when its Salesforce Lead is converted (`[on_convert]`).
    pub on_convert: Option<OnConvert>,
    /// How to find a target record that existed before the first sync.
    pub matching: Option<MatchRules>,
    /// Where the file's `lookup` transforms name other flows (checked across the set).
    pub lookup_refs: Vec<LookupRef>,
    /// HubSpot associations of the target record with other flows' target records.
    pub associations: Vec<Association>,
    pub examples: Vec<Example>,
}

/// A `lookup` transform's flow name and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRef {
    pub flow: String,
    /// The position (file, line, column, key) to report it at.
    pub at: MappingError,
}

/// An `[[association]]`: the target record is associated (HubSpot v4) with the record another
/// flow linked to the source id found at `source`, once both exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Association {
    /// The flow whose links hold the other record; its target object is the other side.
    pub flow: String,
    /// Dotted path in the source record holding the other flow's source id.
    pub source: String,
    pub kind: crate::model::AssociationType,
    /// Where it is written, to report a cross-file problem at.
    pub at: MappingError,
}

/// `[on_convert]`: the flow (same source, target a Salesforce Account, Contact or Opportunity)
/// whose link a source record gets when the Lead this flow wrote is converted; that flow's target
/// object picks the converted record it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct OnConvert {
    pub follow: String,
    /// Where it is written, to report a cross-file problem at.
    pub at: MappingError,
}

/// What a flow does when its source record is deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum DeletePolicy {
    /// Leave the target record as it is.
    Ignore,
    /// Write `value` to `field` on the target record (e.g. a "deleted in PRM" flag).
    Flag {
        field: String,
        value: serde_json::Value,
    },
    /// Delete the target record too.
    Propagate,
}

/// What a flow does when its target record is deleted (`[on_target_delete]`). Every policy but
/// `recreate` leaves a tombstone on the link, so the next source change does not re-create it.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetDeletePolicy {
    /// Unlink (tombstone) and, with a flag, write `value` to `field` on the source record.
    Unlink {
        flag: Option<(String, serde_json::Value)>,
    },
    /// Forget the target record: the next source change creates a new one.
    Recreate,
    /// Delete the source record too (sources with a delete call: HubSpot, Salesforce).
    DeleteSource,
}

/// Match rules for records that exist on both sides before the first sync.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRules {
    /// Tried in order; the first rule with a non-blank key decides.
    pub rules: Vec<MatchRule>,
    pub on_none: OnNone,
    pub on_many: OnMany,
}

/// One way to pair a source record with an existing target record.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRule {
    pub source: String,
    pub target: String,
    pub normalise: Normalise,
}

/// How match keys are normalised before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalise {
    Exact,
    /// Trimmed and lower-cased.
    Lower,
    /// An email address: trimmed and lower-cased.
    Email,
    /// A web domain: scheme, `www.`, port, path and case removed.
    Domain,
}

/// What happens when no existing target record matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNone {
    Create,
    Skip,
}

/// What happens when several existing target records match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMany {
    /// Send the record to the dead letters for a person to decide.
    Fail,
    Skip,
    /// Link to the oldest match.
    Oldest,
}

/// Links of other flows, prefetched from the store, that `lookup` transforms read: flow name ->
/// source id -> target id. Keeps applying a mapping pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    tables: BTreeMap<String, BTreeMap<String, String>>,
}

impl Lookups {
    /// No lookups at all.
    pub const NONE: Lookups = Lookups {
        tables: BTreeMap::new(),
    };

    pub fn insert(&mut self, flow: &str, source_id: String, target_id: String) {
        self.tables
            .entry(flow.to_owned())
            .or_default()
            .insert(source_id, target_id);
    }

    pub fn get(&self, flow: &str, source_id: &str) -> Option<&str> {
        self.tables.get(flow)?.get(source_id).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(BTreeMap::is_empty)
    }
}

/// Who wins for a field that syncs both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Source,
    Target,
    /// Whichever side changed last wins: the field flows both ways.
    Latest,
}

/// Which way a field flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldDirection {
    ToTarget,
    ToSource,
    Both(Owner),
}

/// When a field is written to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    CreateOnly,
    UpdateOnly,
}

/// One step of a field's transform chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Trim,
    Lower,
    Upper,
    /// Reduce a URL or email address to its web domain (`https://www.Acme.example/x` -> `acme.example`).
    Domain,
    /// Multiply a decimal by 10^n (e.g. -2 turns cents into currency units).
    Scale(i32),
    /// Text with `{field}` placeholders filled from the source record.
    Template(String),
    /// Map values (source value -> target value); `unmapped` says what happens to others.
    Values {
        map: Vec<(String, String)>,
        unmapped: Unmapped,
        /// Target value -> source value for the way back (the inverse of `map` unless the file
        /// gives `values_back`).
        back: Vec<(String, String)>,
    },
    /// Round a decimal to n places (half away from zero).
    Round(u32),
    /// Format a number as text with exactly n decimal places.
    Decimals(u32),
    /// Format a date or date-time as text (strftime), in the field's time zone.
    FormatDate(String),
    /// Parse text as a date with a strftime pattern.
    ParseDate(String),
    /// Parse text as a wall-clock date-time with a strftime pattern, in the field's time zone.
    ParseDateTime(String),
    /// Replace a source id with the target id linked to it by another flow.
    Lookup {
        flow: String,
        missing: Missing,
    },
}

/// What a lookup does when the value has no link yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Error,
    Blank,
}

impl Step {
    /// Whether the step can be undone for values flowing back to the source.
    pub fn is_reversible(&self) -> bool {
        !matches!(
            self,
            Step::Template(_)
                | Step::FormatDate(_)
                | Step::ParseDate(_)
                | Step::ParseDateTime(_)
                | Step::Lookup { .. }
        )
    }
}

/// What a value map does with a value it does not list.
#[derive(Debug, Clone, PartialEq)]
pub enum Unmapped {
    Error,
    Default(String),
    Pass,
}

/// A compiled field rule.
#[derive(Debug, Clone)]
pub struct Field {
    /// Dotted path in the source record; `None` for constants.
    pub source: Option<String>,
    pub target: String,
    pub ty: FieldType,
    pub source_ty: FieldType,
    pub tz: TimeZone,
    pub direction: FieldDirection,
    pub when: When,
    pub steps: Vec<Step>,
    pub required: bool,
    pub allow_blank: bool,
    pub default: Option<Val>,
    pub constant: Option<Val>,
    /// Where its `target` key is written in the file (line, column), for reports about the
    /// target field (`prmsync check --live`, drifted fields in the log).
    pub target_at: (usize, usize),
}

/// An `[[example]]` block: an input and the output or error it must give.
#[derive(Debug, Clone)]
pub struct Example {
    pub line: usize,
    pub name: Option<String>,
    pub reverse: bool,
    pub op: Op,
    pub lookups: Lookups,
    pub input: serde_json::Map<String, serde_json::Value>,
    pub expect: Option<serde_json::Map<String, serde_json::Value>>,
    pub expect_error: Option<String>,
    /// The flow's filter must refuse the input.
    pub expect_filtered: bool,
}

/// One problem in a mapping file, with where it is.
pub type MappingError = crate::file_error::FileError;

/// Every problem found in a mapping set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingErrors(pub Vec<MappingError>);

impl fmt::Display for MappingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MappingErrors {}

/// The rules of engagement live next to the mapping files but are not a flow; `load_dir` skips them.
pub use crate::rules::RULES_FILE;

/// A compiled set of mappings, swapped as a whole on reload.
#[derive(Debug, Clone, Default)]
pub struct MappingSet {
    pub mappings: Vec<Arc<Mapping>>,
}

impl MappingSet {
    /// Compiles `(file name, text)` pairs; all errors from all files are returned together.
    pub fn compile(files: &[(String, String)]) -> Result<MappingSet, MappingErrors> {
        let mut errors = Vec::new();
        let mut mappings: Vec<Arc<Mapping>> = Vec::new();
        for (name, text) in files {
            match compile::compile(name, text) {
                Ok(m) => {
                    if let Some(other) = mappings.iter().find(|o| o.name == m.name) {
                        errors.push(MappingError {
                            file: name.clone(),
                            line: 1,
                            column: 1,
                            key: "name".into(),
                            message: format!(
                                "flow name {:?} is already used by {}",
                                m.name, other.file
                            ),
                            hint: Some("every mapping needs its own name".into()),
                        });
                    }
                    mappings.push(Arc::new(m));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        errors.extend(compile::check_lookups(&mappings));
        if errors.is_empty() {
            Ok(MappingSet { mappings })
        } else {
            Err(MappingErrors(errors))
        }
    }

    /// The mapping files built into the binary.
    pub fn builtin() -> Result<MappingSet, MappingErrors> {
        let files: Vec<(String, String)> = BUILTIN
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        Self::compile(&files)
    }

    /// Reads every `*.toml` file in `dir` (sorted by name, except [`RULES_FILE`]) and compiles
    /// them. Never writes.
    pub fn load_dir(dir: &Path) -> Result<MappingSet, MappingErrors> {
        let io_err = |e: std::io::Error| {
            MappingErrors(vec![MappingError {
                file: dir.display().to_string(),
                line: 1,
                column: 1,
                key: "(directory)".into(),
                message: e.to_string(),
                hint: Some("daemon.mappings_dir must be a readable folder".into()),
            }])
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            // The rules of engagement live beside the mappings but are not a mapping.
            let is_rules = path.file_name().is_some_and(|n| n == RULES_FILE);
            if path.extension().is_some_and(|x| x == "toml") && !is_rules {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(io_err)?;
            files.push((p.display().to_string(), text));
        }
        Self::compile(&files)
    }

    /// The mappings whose source and target are both among `systems`.
    pub fn active_for(
        &self,
        prm: crate::model::SystemKind,
        crm: crate::model::SystemKind,
    ) -> Vec<Arc<Mapping>> {
        self.mappings
            .iter()
            .filter(|m| m.source.system == prm && m.target.system == crm)
            .cloned()
            .collect()
    }
}
