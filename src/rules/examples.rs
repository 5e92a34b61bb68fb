//! Run a rules file's `[[example]]` blocks: each set of registrations and CRM facts must give the
//! decisions it expects.

use std::fmt;

use super::{Rules, evaluate};

/// An example whose decisions differ from what it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleFailure {
    pub file: String,
    pub line: usize,
    pub name: String,
    pub message: String,
}

impl fmt::Display for ExampleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: example {:?}: {}",
            self.file, self.line, self.name, self.message
        )
    }
}

/// Runs every example of `rules`; returns the failures (empty when all pass).
pub fn run_examples(rules: &Rules) -> Vec<ExampleFailure> {
    let mut failures = Vec::new();
    for ex in &rules.examples {
        let decisions = evaluate(rules, &ex.input);
        let mut fail = |message: String| {
            failures.push(ExampleFailure {
                file: rules.file.clone(),
                line: ex.line,
                name: ex.name.clone(),
                message,
            })
        };
        for want in &ex.expect {
            let Some(got) = decisions
                .iter()
                .find(|d| d.registration_id == want.registration_id)
            else {
                fail(format!(
                    "no decision for {} (is it among the registrations?)",
                    want.registration_id
                ));
                continue;
            };
            if got.status != want.status {
                fail(format!(
                    "{}: expected {}, got {}: {}",
                    want.registration_id, want.status, got.status, got.reason
                ));
                continue;
            }
            if want.duplicate_of.is_some() && got.duplicate_of != want.duplicate_of {
                fail(format!(
                    "{}: expected duplicate of {:?}, got {:?}",
                    want.registration_id, want.duplicate_of, got.duplicate_of
                ));
            }
            if want.protected_until.is_some() && got.protected_until != want.protected_until {
                fail(format!(
                    "{}: expected protection until {:?}, got {:?}",
                    want.registration_id, want.protected_until, got.protected_until
                ));
            }
            if let Some(frag) = &want.reason_contains
                && !got.reason.contains(frag.as_str())
            {
                fail(format!(
                    "{}: expected a reason containing {frag:?}, got {:?}",
                    want.registration_id, got.reason
                ));
            }
        }
    }
    failures
}
