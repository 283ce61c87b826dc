//! The documents that promise behaviour point at real tests.

use std::path::Path;

/// Every test RELIABILITY.md cites exists, as a test: `module::name` in `tests/it/`,
/// `path.rs::name` elsewhere, a bare `path.rs` for a file's unit tests.
#[test]
fn every_test_reliability_md_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("RELIABILITY.md")).unwrap();
    let rows = text.lines().filter(|line| line.starts_with("| ") && !line.starts_with("| #"));
    let mut cited = 0;
    let mut missing = Vec::new();
    for row in rows.filter(|row| !row.starts_with("|---")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        let Some(tests) = cells.last() else { continue };
        for name in tests.split('`').skip(1).step_by(2) {
            cited += 1;
            if !test_exists(root, name) {
                missing.push(name.to_owned());
            }
        }
    }
    assert!(cited > 100, "RELIABILITY.md's test column was not read: {cited} cited");
    assert!(missing.is_empty(), "RELIABILITY.md cites tests that do not exist: {missing:?}");
}

fn test_exists(root: &Path, name: &str) -> bool {
    let (file, function) = match name.rsplit_once("::") {
        Some((path, function)) if path.ends_with(".rs") => (root.join(path), Some(function)),
        Some((module, function)) => {
            (root.join(format!("tests/it/{}.rs", module.replace("::", "/"))), Some(function))
        }
        None => (root.join(name), None),
    };
    let Ok(source) = std::fs::read_to_string(&file) else { return false };
    match function {
        // The function, with a test attribute among the lines just above it.
        Some(function) => source.find(&format!("fn {function}(")).is_some_and(|at| {
            let above = &source[..at];
            let attributes = above.lines().rev().take(4).collect::<Vec<_>>().join("\n");
            attributes.contains("#[test]") || attributes.contains("::test]")
        }),
        None => source.contains("#[test]"),
    }
}

/// The schemas can fail: a document missing what they require is refused, so the checks of
/// real output elsewhere prove something.
#[test]
fn the_json_schemas_refuse_what_breaks_the_contract() {
    let incomplete = serde_json::json!({"error": "x", "kind": "bad-input", "exit_code": 2});
    let refused = std::panic::catch_unwind(|| crate::support::conforms("error", &incomplete));
    assert!(refused.is_err(), "an error line without schema_version passed");
    let wrong_word = serde_json::json!({"schema_version": 1, "cluster": "c", "runs": [
        {"id": "x", "started": "", "by": "", "command": "", "cluster": "c", "component": "-",
         "package": null, "package_sha256": null, "package_version": null, "mode": "-",
         "result": "Success", "message": null, "instances": []}
    ]});
    let refused = std::panic::catch_unwind(|| crate::support::conforms("history", &wrong_word));
    assert!(refused.is_err(), "a result outside the vocabulary passed");
    let schemas = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema"));
    assert_eq!(schemas.unwrap().count(), 7, "docs/json.md lists seven documents");
}
