//! Every test a security document names exists: a claim in
//! `docs/threat-model.md`, `docs/policy.md`, `docs/fleet.md` or
//! `docs/containers.md` points at the test that performs the attack, and a
//! test renamed or removed must take its claim with it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("node_modules") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `module::path::test_name` in backticks (no wildcard): the test names.
fn named_tests(doc: &str) -> Vec<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            t.contains("::")
                && !t.contains('*')
                && t.split("::").all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        })
        .map(|t| t.rsplit("::").next().unwrap().to_owned())
        .filter(|name| name.len() > 12) // test names, not `vault::open`-like paths
        .collect()
}

#[test]
fn every_test_a_security_document_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    for dir in ["src", "crates", "tests", "mountd/src", "mountd/tests"] {
        rust_files(&root.join(dir), &mut sources);
    }
    let code: String = sources
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["threat-model.md", "policy.md", "fleet.md", "containers.md"] {
        let text = std::fs::read_to_string(root.join("docs").join(doc)).unwrap();
        for name in named_tests(&text) {
            checked += 1;
            if !code.contains(&format!("fn {name}(")) {
                missing.push(format!("docs/{doc}: {name}"));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} test names found: the pattern is wrong"
    );
    assert!(
        missing.is_empty(),
        "named but not found:\n{}",
        missing.join("\n")
    );
}
