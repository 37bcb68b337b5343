//! Tidy check: the sans-IO cores stay sans I/O. The SDK's sync engine (`sdk/src/engine`), the
//! relay's per-connection logic (`relay-server/src/session`), its document layer and planner
//! (`relay-server/src/hub`), its core (`relay-server/src/relay_core`: group commit, routing,
//! grant filtering, slow consumers) and the wire protocol (`protocol/src`) import no async runtime, no
//! SQLite, no clock, no thread and no randomness that a seed does not drive: time and seeds
//! come in as arguments, so the simulation can replay them.

mod common;

use common::{root, rust_files};

/// The directories that must stay sans I/O, from the workspace root.
const CORES: &[&str] = &[
    "sdk/src/engine",
    "relay-server/src/session",
    "relay-server/src/hub",
    "relay-server/src/relay_core",
    "protocol/src",
];

/// What a core must not name, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "an async runtime belongs in the shell"),
    ("tokio_util", "an async runtime belongs in the shell"),
    ("rusqlite", "SQL belongs behind the storage port"),
    ("std::fs", "files belong behind a port"),
    ("std::net", "sockets belong in the shell"),
    ("std::process", "processes belong in the shell"),
    ("std::env", "configuration comes in as arguments"),
    ("Instant", "time comes in as `now`"),
    ("SystemTime", "time comes in as `now`"),
    ("std::thread", "threads belong in the shell"),
    ("thread::", "threads belong in the shell"),
    ("thread_rng", "randomness comes from a seed"),
    ("rand::", "randomness comes from a seed"),
    ("getrandom", "randomness comes from a seed"),
    ("uuid::", "ids come from the caller"),
    (
        "fastrand::Rng::new",
        "a fastrand generator must be seeded (`with_seed`)",
    ),
    (
        "fastrand::u",
        "fastrand's free functions use a thread-local generator",
    ),
    (
        "fastrand::i",
        "fastrand's free functions use a thread-local generator",
    ),
    (
        "fastrand::f",
        "fastrand's free functions use a thread-local generator",
    ),
    (
        "fastrand::bool",
        "fastrand's free functions use a thread-local generator",
    ),
    (
        "fastrand::shuffle",
        "fastrand's free functions use a thread-local generator",
    ),
];

/// The forbidden names `source` uses outside comments, with their line numbers.
fn violations(source: &str) -> Vec<(usize, &'static str, &'static str)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        for (name, why) in FORBIDDEN {
            if names(code, name) {
                found.push((n + 1, *name, *why));
            }
        }
    }
    found
}

/// True if `code` names `name` as a path or word of its own: `rand::` is not in `fastrand::`,
/// and `Instant` is not in `Instantiate`. A name with `::` is a path prefix (`fastrand::u`
/// covers `fastrand::u64`), so only its start must be a word boundary.
fn names(code: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(name).any(|(at, _)| {
        let starts = !code[..at].chars().next_back().is_some_and(ident);
        let ends =
            name.contains("::") || !code[at + name.len()..].chars().next().is_some_and(ident);
        starts && ends
    })
}

#[test]
fn the_sans_io_cores_import_no_runtime_clock_thread_sql_or_unseeded_randomness() {
    let root = root();
    let mut report = Vec::new();
    let mut checked = 0;
    for core in CORES {
        let files = rust_files(&root.join(core));
        assert!(!files.is_empty(), "{core} has no Rust files: was it moved?");
        for file in files {
            checked += 1;
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (line, name, why) in violations(&text) {
                let shown = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                report.push(format!("{shown}:{line}: `{name}`: {why}"));
            }
        }
    }
    assert!(checked >= 10, "only {checked} files checked");
    assert!(
        report.is_empty(),
        "sans-IO boundary crossed:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_forbids() {
    assert_eq!(violations("use tokio::sync::mpsc;").len(), 1);
    assert_eq!(violations("let t = std::time::Instant::now();").len(), 1);
    assert_eq!(violations("rusqlite::Connection::open(p)").len(), 1);
    assert_eq!(
        violations("std::thread::spawn(f)").len(),
        2,
        "both thread patterns"
    );
    assert_eq!(violations("let r = fastrand::u64(..);").len(), 1);
    assert!(violations("let r = fastrand::Rng::with_seed(seed);").is_empty());
    assert_eq!(violations("let r = rand::random::<u8>();").len(), 1);
    assert!(violations("fn instantiate(x: Instantiated) {}").is_empty());
    assert_eq!(violations("let f = std::fs::read(path)?;").len(), 1);
    // In-memory readers (zstd's decoder over a slice) are fine: `std::io::Read` is allowed.
    assert!(violations("use std::io::Read;").is_empty());
    assert_eq!(
        violations("use tokio_util::sync::CancellationToken;").len(),
        1
    );
    assert!(violations("// tokio is fine in a comment").is_empty());
    assert!(violations("let now_ms = 3; // not an Instant").is_empty());
}
