//! Mapping files: the admins' declarative description of each flow. Parse and compile (pure,
//! every error with file:line:column), then apply in either direction (pure).

mod apply;
mod compile;
mod examples;
pub mod value;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::model::ObjectRef;
pub use apply::{MapError, Op};
pub use examples::{ExampleFailure, run_examples};
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
    pub fields: Vec<Field>,
    pub examples: Vec<Example>,
}

/// Who wins for a field that syncs both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Source,
    Target,
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
    /// Multiply a decimal by 10^n (e.g. -2 turns cents into currency units).
    Scale(i32),
    /// Text with `{field}` placeholders filled from the source record.
    Template(String),
    /// Map values (source value -> target value); `unmapped` says what happens to others.
    Values {
        map: Vec<(String, String)>,
        unmapped: Unmapped,
    },
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
}

/// An `[[example]]` block: an input and the output or error it must give.
#[derive(Debug, Clone)]
pub struct Example {
    pub line: usize,
    pub name: Option<String>,
    pub reverse: bool,
    pub op: Op,
    pub input: serde_json::Map<String, serde_json::Value>,
    pub expect: Option<serde_json::Map<String, serde_json::Value>>,
    pub expect_error: Option<String>,
}

/// One problem in a mapping file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

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

    /// Reads every `*.toml` file in `dir` (sorted by name) and compiles them. Never writes.
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
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            // The rules of engagement live beside the mappings but are not a mapping.
            .filter(|p| p.file_name().is_none_or(|n| n != crate::rules::RULES_FILE))
            .collect();
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
