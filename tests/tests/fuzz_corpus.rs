//! Replays every fuzz target's seeds, its committed corpus (`fuzz/corpus/<target>/`) and every
//! input that once crashed it (`fuzz/regressions/<target>/`) without the fuzzer: what fuzzing
//! found stays fixed, in every `cargo xtask test`.

use std::path::Path;

use syncline_testkit::fuzz::{TARGETS, seeds};

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_corpus_entry_and_past_crash_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (name, bytes) in seeds() {
        let (_, target) = TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a seed for a known target");
        target(&bytes);
        replayed += 1;
    }
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in inputs(&root.join(kind).join(name)) {
                let bytes = std::fs::read(&file).expect("read an input");
                let outcome = std::panic::catch_unwind(|| target(&bytes));
                assert!(outcome.is_ok(), "{} fails again", file.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "{replayed} inputs replayed");
    println!("{replayed} fuzz inputs replayed");
}
