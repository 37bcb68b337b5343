//! `cargo xtask`: the project's automation, following the xtask convention (plain Rust, no
//! extra tools to install).
//!
//! - `cargo xtask test` runs every test suite of every language, then prints one closing line
//!   per suite and a total, in the form `total: N passed, N failed, N skipped`.
//! - `cargo xtask test rust` (or `python`) runs one suite.
//! - `cargo xtask bindings` builds `syncline-ffi` and generates its Kotlin, Swift and Python
//!   bindings into `target/bindings/<language>` with the in-workspace `uniffi-bindgen`.
//!
//! Suites: `rust` (the whole Cargo workspace, doc tests included), `python` (pytest over
//! the generated module, against a real `syncline-relay`; the interpreter is `$SYNCLINE_PYTHON`,
//! else `.venv/bin/python`, else `python3`) and `kotlin` (the Maven project in
//! `bindings/kotlin`: JUnit over the generated sources, against a real relay). The Swift suite
//! is not built yet.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

/// The suites `cargo xtask test` knows, in the order it runs them.
const SUITES: &[&str] = &["rust", "python", "kotlin"];

/// The languages `cargo xtask bindings` generates.
const LANGUAGES: &[&str] = &["python", "kotlin", "swift"];

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
        ["bindings"] => {
            bindings(LANGUAGES)?;
            Ok(true)
        }
        _ => bail!(
            "usage: cargo xtask test [{}] | cargo xtask bindings",
            SUITES.join("|")
        ),
    }
}

fn test(suites: &[&str]) -> anyhow::Result<bool> {
    let mut results = Vec::new();
    for &suite in suites {
        let (ok, tally) = match suite {
            "rust" => rust_suite(),
            "python" => python_suite(),
            "kotlin" => kotlin_suite(),
            other => bail!("no runner for suite {other}"),
        }
        // A suite that cannot even start counts as failed; the others still run.
        .unwrap_or_else(|e| {
            eprintln!("xtask: the {suite} suite could not run: {e:#}");
            (false, Tally::default())
        });
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
    let mut command = cargo();
    command.args(["test", "--workspace", "--no-fail-fast"]);
    stream(command, "cargo test", |line, tally| {
        if let Some(result) = line.strip_prefix("test result: ") {
            tally.passed += count(result, " passed");
            tally.failed += count(result, " failed");
            tally.skipped += count(result, " ignored");
        }
    })
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn run_cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = cargo().args(args).status().context("cannot start cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// The built `syncline-ffi` library of this platform.
fn ffi_library() -> PathBuf {
    let name = if cfg!(target_os = "macos") {
        "libsyncline_ffi.dylib"
    } else {
        "libsyncline_ffi.so"
    };
    target_dir().join("debug").join(name)
}

/// Builds the library and the bindgen, and generates `languages` into `target/bindings`.
fn bindings(languages: &[&str]) -> anyhow::Result<()> {
    run_cargo(&["build", "-q", "-p", "syncline-ffi", "--lib"])?;
    run_cargo(&[
        "build",
        "-q",
        "-p",
        "syncline-ffi",
        "--features",
        "cli",
        "--bin",
        "uniffi-bindgen",
    ])?;
    let library = ffi_library();
    let bindgen = target_dir().join("debug").join("uniffi-bindgen");
    for language in languages {
        let out = target_dir().join("bindings").join(language);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let status = Command::new(&bindgen)
            .arg("generate")
            .arg("--library")
            .arg(&library)
            .args(["--language", language, "--out-dir"])
            .arg(&out)
            .status()
            .context("cannot start uniffi-bindgen")?;
        if !status.success() {
            bail!("generating the {language} bindings failed");
        }
        if *language == "python" {
            // The generated module loads the library from its own directory.
            let name = library.file_name().context("library name")?;
            std::fs::copy(&library, out.join(name)).context("copying the library")?;
        }
        println!("bindings: {language} in {}", out.display());
    }
    Ok(())
}

/// pytest over `bindings/python/tests`, with the generated module and a relay binary.
fn python_suite() -> anyhow::Result<(bool, Tally)> {
    bindings(&["python"])?;
    run_cargo(&[
        "build",
        "-q",
        "-p",
        "syncline-relay",
        "--bin",
        "syncline-relay",
    ])?;
    let python = std::env::var("SYNCLINE_PYTHON").unwrap_or_else(|_| {
        if Path::new(".venv/bin/python").exists() {
            ".venv/bin/python".to_owned()
        } else {
            "python3".to_owned()
        }
    });
    let relay = std::fs::canonicalize(target_dir().join("debug").join("syncline-relay"))
        .context("the relay binary")?;
    let module = std::fs::canonicalize(target_dir().join("bindings").join("python"))
        .context("the generated module")?;
    let mut command = Command::new(&python);
    command
        .args(["-m", "pytest", "-q", "bindings/python/tests"])
        .env("PYTHONPATH", &module)
        .env("SYNCLINE_RELAY_BIN", &relay);
    let what = format!("{python} (set SYNCLINE_PYTHON, or run .ci/run)");
    stream(command, &what, |line, tally| {
        // pytest's last line: "3 passed, 1 failed, 2 skipped in 0.52s".
        if line.contains(" in ")
            && (line.contains("passed") || line.contains("failed") || line.contains("error"))
        {
            let summary = line.split(" in ").next().unwrap_or("");
            tally.passed += pytest_count(summary, "passed");
            tally.failed += pytest_count(summary, "failed") + pytest_count(summary, "error");
            tally.skipped += pytest_count(summary, "skipped");
        }
    })
}

/// `mvn test` in `bindings/kotlin`, over the generated sources and the built library.
fn kotlin_suite() -> anyhow::Result<(bool, Tally)> {
    bindings(&["kotlin"])?;
    run_cargo(&[
        "build",
        "-q",
        "-p",
        "syncline-relay",
        "--bin",
        "syncline-relay",
    ])?;
    let mvn = std::env::var("SYNCLINE_MVN").unwrap_or_else(|_| "mvn".to_owned());
    let absolute =
        |p: PathBuf| std::fs::canonicalize(&p).with_context(|| format!("{}", p.display()));
    // The generated sources, the library and the relay, wherever the target directory is.
    let sources = absolute(target_dir().join("bindings").join("kotlin"))?;
    let native = absolute(target_dir().join("debug"))?;
    let relay = absolute(target_dir().join("debug").join("syncline-relay"))?;
    let mut command = Command::new(&mvn);
    command
        .args([
            "-B",
            "--no-transfer-progress",
            "test",
            "-f",
            "bindings/kotlin/pom.xml",
        ])
        .arg(format!("-Dgenerated.sources={}", sources.display()))
        .arg(format!("-Dnative.dir={}", native.display()))
        .arg(format!("-Drelay.bin={}", relay.display()));
    let what = format!("{mvn} (install Maven and a JDK, or run .ci/run)");
    stream(command, &what, |line, tally| {
        // Surefire's totals: "Tests run: 5, Failures: 0, Errors: 0, Skipped: 0" (per-class
        // lines end with " -- in <class>").
        if let Some(totals) = line
            .split("Tests run: ")
            .nth(1)
            .filter(|t| !t.contains(" -- in "))
        {
            let field = |name: &str| -> u64 {
                totals
                    .split(", ")
                    .find_map(|part| part.strip_prefix(name)?.trim().parse().ok())
                    .unwrap_or(0)
            };
            let run = totals
                .split(',')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let failed = field("Failures: ") + field("Errors: ");
            let skipped = field("Skipped: ");
            tally.passed += run - failed.min(run) - skipped.min(run);
            tally.failed += failed;
            tally.skipped += skipped;
        }
    })
}

/// Runs `command`, printing its output as it comes and letting `parse` count each line;
/// returns whether it succeeded and the tally.
fn stream(
    mut command: Command,
    what: &str,
    mut parse: impl FnMut(&str, &mut Tally),
) -> anyhow::Result<(bool, Tally)> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("reading the output of {what}"))?;
        println!("{line}");
        parse(&line, &mut tally);
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    Ok((status.success(), tally))
}

/// The number before `label` in a pytest summary such as `3 passed, 1 failed`.
fn pytest_count(summary: &str, label: &str) -> u64 {
    summary
        .split(',')
        .find_map(|part| {
            let mut words = part.split_whitespace();
            let n = words.next()?.parse().ok()?;
            words.next()?.starts_with(label).then_some(n)
        })
        .unwrap_or(0)
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

    #[test]
    fn parses_pytest_summaries() {
        use super::pytest_count;
        assert_eq!(pytest_count("3 passed, 1 failed, 2 skipped", "passed"), 3);
        assert_eq!(pytest_count("3 passed, 1 failed, 2 skipped", "failed"), 1);
        assert_eq!(pytest_count("3 passed, 1 failed, 2 skipped", "skipped"), 2);
        assert_eq!(pytest_count("5 passed", "failed"), 0);
        assert_eq!(pytest_count("1 error", "error"), 1);
    }
}
