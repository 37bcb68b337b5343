//! Tidy check: every Rust source file of the workspace opens with a `//!` line saying what it
//! is for (integration tests and benches included), so each module states its one job.

mod common;

use common::{root, rust_files};

#[test]
fn every_module_has_a_doc_header() {
    let root = root();
    let files = rust_files(root);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.lines().next().is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:#?}"
    );
}
