//! Tidy check: `docs/ARCHITECTURE.md` stays true. Every repository path it names exists, and
//! every entry of its "Where is…" index names a file that exists and an item that file defines
//! or uses, so the map never sends a newcomer to something that moved.

use std::path::Path;

/// The backticked spans of `line`.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The repository's top-level entries a path in the map can start with (`shared/` lies beside
/// the repository, not in it).
const TOP: &[&str] = &[
    "protocol",
    "sdk",
    "relay-server",
    "bindings",
    "testkit",
    "tests",
    "bench",
    "examples",
    "xtask",
    "docs",
    ".ci",
];

/// True if `span` reads as a path in this repository (not a message pair like `Hello/Welcome`,
/// a command or a URL).
fn is_repo_path(span: &str) -> bool {
    !span.contains(' ')
        && span
            .split_once('/')
            .is_some_and(|(first, _)| TOP.contains(&first))
}

/// True if `text` holds `word` as a whole identifier.
fn names(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// `source` without its comment lines: an item only mentioned in a comment does not count.
fn without_comments(source: &str) -> String {
    source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn map() -> String {
    std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md")
}

#[test]
fn every_path_the_map_names_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for (n, line) in map().lines().enumerate() {
        for span in code_spans(line) {
            if is_repo_path(span) {
                checked += 1;
                if !root().join(span.trim_end_matches('/')).exists() {
                    missing.push(format!("line {}: `{span}`", n + 1));
                }
            }
        }
    }
    assert!(
        checked >= 60,
        "only {checked} paths found: did the map's format change?"
    );
    assert!(
        missing.is_empty(),
        "the map names paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_where_is_entry_names_a_file_and_an_item_in_it() {
    let text = map();
    let index = text
        .split("## Where is")
        .nth(1)
        .expect("a \"Where is\" section");
    let mut entries = 0;
    let mut wrong = Vec::new();
    for line in index.lines().filter(|l| l.starts_with("- ")) {
        let spans = code_spans(line);
        let (Some(file), Some(item)) = (spans.iter().rev().nth(1), spans.last()) else {
            wrong.push(format!("{line}: expected `path` · `item`"));
            continue;
        };
        entries += 1;
        match std::fs::read_to_string(root().join(file)) {
            Ok(source) if names(&without_comments(&source), item) => {}
            Ok(_) => wrong.push(format!("`{file}` does not name `{item}`")),
            Err(e) => wrong.push(format!("`{file}`: {e}")),
        }
    }
    assert!(
        entries >= 30,
        "the index has {entries} entries; it should have at least 30"
    );
    assert!(
        wrong.is_empty(),
        "stale \"Where is\" entries:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    assert!(names("pub fn sync_group(", "sync_group"));
    assert!(!names("pub fn sync_groups(", "sync_group"));
    assert!(is_repo_path("sdk/src/engine/port.rs"));
    assert!(!is_repo_path("Hello/Welcome"));
    assert!(!is_repo_path("ws://h:1"));
    assert!(!is_repo_path("shared/DESIGN.md"));
    assert!(!names(
        &without_comments("/// fn gone()\nfn here() {}"),
        "gone"
    ));
    assert_eq!(code_spans("a `b` c `d` e"), vec!["b", "d"]);
}
