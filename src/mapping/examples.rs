//! Run a mapping's `[[example]]` blocks: each input must give its expected output or error.

use std::fmt;

use super::Mapping;

/// An example whose result differs from what it expects.
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
            "{}:{}: example {}: {}",
            self.file, self.line, self.name, self.message
        )
    }
}

/// Runs every example of `mapping`; returns the failures (empty when all pass).
pub fn run_examples(mapping: &Mapping) -> Vec<ExampleFailure> {
    let mut failures = Vec::new();
    for (i, ex) in mapping.examples.iter().enumerate() {
        let name = ex.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        let fail = |message: String| ExampleFailure {
            file: mapping.file.clone(),
            line: ex.line,
            name: name.clone(),
            message,
        };
        let accepted = ex.reverse || mapping.accepts(&ex.input);
        if ex.expect_filtered || !accepted {
            if ex.expect_filtered == accepted {
                failures.push(fail(if accepted {
                    "expected the flow's filter to refuse the input, but it takes it".into()
                } else {
                    "the flow's filter refuses this input".into()
                }));
            }
            continue;
        }
        let result = if ex.reverse {
            mapping.to_source(&ex.input)
        } else {
            mapping.to_target_with(&ex.input, ex.op, &ex.lookups)
        };
        match (result, &ex.expect, &ex.expect_error) {
            (Ok(got), Some(want), _) => {
                if &got != want {
                    failures.push(fail(format!(
                        "expected {}, got {}",
                        serde_json::Value::Object(want.clone()),
                        serde_json::Value::Object(got)
                    )));
                }
            }
            (Ok(got), None, Some(want)) => failures.push(fail(format!(
                "expected an error containing {want:?}, got {}",
                serde_json::Value::Object(got)
            ))),
            (Err(e), _, Some(want)) => {
                if !e.to_string().contains(want.as_str()) {
                    failures.push(fail(format!(
                        "expected an error containing {want:?}, got: {e}"
                    )));
                }
            }
            (Err(e), _, None) => failures.push(fail(format!("unexpected error: {e}"))),
            (Ok(_), None, None) => {}
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::super::MappingSet;
    use super::*;

    fn failures(examples: &str) -> Vec<String> {
        let text = format!(
            "name = \"t\"\n[source]\nsystem = \"partnerstack\"\nobject = \"deals\"\n\
             [target]\nsystem = \"hubspot\"\nobject = \"x\"\nexternal_id = \"ext\"\n\
             [[filter]]\nfield = \"s\"\nequals = \"ok\"\n\
             [[field]]\nsource = \"a\"\ntarget = \"b\"\nrequired = true\n{examples}"
        );
        let set = MappingSet::compile(&[("t.toml".into(), text)]).expect("compiles");
        run_examples(&set.mappings[0])
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    #[test]
    fn each_outcome_is_checked() {
        let cases = [
            (
                "input = { s = \"ok\", a = \"x\" }\nexpect = { b = \"x\" }",
                vec![],
            ),
            (
                "input = { s = \"ok\", a = \"x\" }\nexpect = { b = \"y\" }",
                vec!["expected {\"b\":\"y\"}, got {\"b\":\"x\"}"],
            ),
            (
                "input = { s = \"ok\" }\nexpect_error = \"a: is required\"",
                vec![],
            ),
            (
                "input = { s = \"ok\", a = \"x\" }\nexpect_error = \"nope\"",
                vec!["expected an error containing \"nope\", got {\"b\":\"x\"}"],
            ),
            ("input = { s = \"no\" }\nexpect_filtered = true", vec![]),
            (
                "input = { s = \"ok\", a = \"x\" }\nexpect_filtered = true",
                vec!["expected the flow's filter to refuse the input, but it takes it"],
            ),
            (
                "input = { s = \"no\", a = \"x\" }\nexpect = { b = \"x\" }",
                vec!["the flow's filter refuses this input"],
            ),
        ];
        for (example, want) in cases {
            assert_eq!(
                failures(&format!("[[example]]\n{example}\n")),
                want,
                "{example}"
            );
        }
    }
}
