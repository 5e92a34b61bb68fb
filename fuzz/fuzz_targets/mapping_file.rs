//! Fuzz target: any text as a mapping file or a rules file compiles or gives positioned errors,
//! never panics; a compiled mapping's examples run without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match prmsync::mapping::MappingSet::compile(&[("fuzz.toml".to_owned(), text.to_owned())]) {
        Ok(set) => {
            for m in &set.mappings {
                let _failures = prmsync::mapping::run_examples(m);
            }
        }
        Err(errors) => {
            for e in errors.0 {
                assert!(e.line >= 1 && e.column >= 1);
            }
        }
    }
    let _rules = prmsync::rules::Rules::compile("fuzz-rules.toml", text);
});
