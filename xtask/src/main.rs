//! `cargo xtask`: the project's automation, following the xtask convention (plain Rust, no
//! extra tools to install).
//!
//! - `cargo xtask test` runs every test suite of every language, then prints one closing line
//!   per suite and a total, in the form `total: N passed, N failed, N skipped`.
//! - `cargo xtask test rust` runs one suite.
//!
//! Today the only suite is `rust` (the whole Cargo workspace, doc tests included). The
//! Kotlin, Python and Swift suites arrive with the bindings.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

/// The suites `cargo xtask test` knows, in the order it runs them.
const SUITES: &[&str] = &["rust"];

#[derive(Default, Clone, Copy)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["test"] => test(SUITES),
        ["test", suite] if SUITES.contains(&suite) => test(&[suite]),
        ["test", suite] => bail!("unknown suite {suite:?}; known: {}", SUITES.join(", ")),
        _ => bail!("usage: cargo xtask test [{}]", SUITES.join("|")),
    }
}

fn test(suites: &[&str]) -> anyhow::Result<bool> {
    let mut results = Vec::new();
    for &suite in suites {
        let (ok, tally) = match suite {
            "rust" => rust_suite()?,
            other => bail!("no runner for suite {other}"),
        };
        results.push((suite, ok, tally));
    }
    println!();
    let mut total = Tally::default();
    for (suite, ok, t) in &results {
        println!(
            "{suite}: {} passed, {} failed, {} skipped{}",
            t.passed,
            t.failed,
            t.skipped,
            if *ok { "" } else { " (suite FAILED)" }
        );
        total.passed += t.passed;
        total.failed += t.failed;
        total.skipped += t.skipped;
    }
    println!(
        "total: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    Ok(results.iter().all(|(_, ok, _)| *ok))
}

/// `cargo test --workspace`, streaming its output and summing its `test result:` lines.
fn rust_suite() -> anyhow::Result<(bool, Tally)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            tally.passed += count(result, " passed");
            tally.failed += count(result, " failed");
            tally.skipped += count(result, " ignored");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((status.success(), tally))
}

/// The number before `label` in a cargo `test result:` line, e.g. `ok. 3 passed; 0 failed`.
fn count(result: &str, label: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn parses_cargo_result_lines() {
        let line =
            "ok. 12 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.1s";
        assert_eq!(count(line, " passed"), 12);
        assert_eq!(count(line, " failed"), 1);
        assert_eq!(count(line, " ignored"), 3);
        assert_eq!(count("FAILED. 2 passed; 5 failed; 0 ignored", " failed"), 5);
    }
}
