//! `cargo xtask`: the project's automation, following the xtask convention (plain Rust, no
//! extra tools to install).
//!
//! - `cargo xtask test` runs every test suite of every language, then prints one closing line
//!   per suite and a total, in the form `total: N passed, N failed, N skipped`.
//! - `cargo xtask test rust` (or `python`, `kotlin`, `swift`) runs one suite.
//! - `cargo xtask bindings` builds `syncline-ffi` and generates its Kotlin, Swift and Python
//!   bindings into `target/bindings/<language>` with the in-workspace `uniffi-bindgen`.
//! - `cargo xtask soak [--seconds N] [--seeds N] [--sim-seeds N]` runs the fault proxy and the
//!   simulation long (outside CI).
//! - `cargo xtask package` builds what apps install into `target/dist`: the Python wheel, the
//!   Kotlin jar (native library inside) in a Maven repository, `target/dist/maven`, and the
//!   Swift package for Apple platforms, `target/dist/swift/SynclineKit` (its XCFramework only
//!   on a Mac; see `xtask/src/swift.rs`).
//! - `cargo xtask size` builds the FFI library as apps ship it (profile `release-ffi`) and the
//!   relay (`release`), and prints their stripped sizes against the library's 8 MB budget (a
//!   benchmark: it reports, it does not fail).
//!
//! Suites, in this order:
//! - `rust`: the whole Cargo workspace, doc tests included, with the simulation over 10,000
//!   seeds (`CI_SIM_SEEDS`; a plain `cargo test` runs 1,000).
//! - `python`: `maturin develop` of the package in `bindings/python` into the interpreter's
//!   virtualenv, pytest against a real `syncline-relay`, `mypy --strict`, and the wheel in a
//!   fresh virtual environment running `examples/python` (see `xtask/src/python.rs`). The
//!   interpreter is `$SYNCLINE_PYTHON`, else `.venv/bin/python`, else `python3`; without
//!   maturin (or outside a virtualenv) the suite tests the package assembled from the
//!   generated module, and says what it skipped.
//! - `kotlin`: `mvn deploy` of `bindings/kotlin` into a file repository (JUnit over the native
//!   API against a real relay, then the jar with the native library inside), then the
//!   `examples/kotlin` app resolving that jar from there (see `xtask/src/kotlin.rs`).
//! - `js`: the protocol's second implementation (`tests/js`: a client on the official
//!   Automerge JS package, written from `docs/PROTOCOL.md` alone), `npm ci` then `node --test`
//!   against a real relay and the Rust `syncline-todo` app.
//! - `swift`: `swift test` of the SwiftPM package in `bindings/swift`, then the
//!   `examples/swift` app, wherever `swift` is on PATH; elsewhere it reports itself skipped.
//! - `fuzz`: every libFuzzer target of `fuzz/` for a few seconds each (`cargo xtask fuzz
//!   --seconds N` runs them longer; see `xtask/src/fuzz.rs`). With other suites, the targets'
//!   instrumented build starts first, in the background at the lowest CPU priority, and uses
//!   what the other suites leave idle.
//!
//! The closing lines say how long each suite took.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

mod fuzz;
mod kotlin;
mod python;
mod swift;

/// The suites `cargo xtask test` knows, in the order it runs them.
const SUITES: &[&str] = &["rust", "python", "kotlin", "js", "swift", "fuzz"];

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
        ["fuzz", ref rest @ ..] => fuzz_command(rest),
        ["soak", ref rest @ ..] => soak(rest),
        ["size"] => size(),
        ["package"] => package(),
        _ => bail!(
            "usage: cargo xtask test [{}] | cargo xtask bindings | \
             cargo xtask fuzz [--seconds N] [--keep] [TARGET...] | \
             cargo xtask soak [--seconds N] [--seeds N] [--sim-seeds N] | cargo xtask size | \
             cargo xtask package",
            SUITES.join("|")
        ),
    }
}

fn test(suites: &[&str]) -> anyhow::Result<bool> {
    let mut results = Vec::new();
    // The fuzz targets' build starts first and runs in the CPU the other suites leave idle.
    let mut fuzz_build = if suites.contains(&"fuzz") && suites.len() > 1 {
        Some(fuzz::start_build()?)
    } else {
        None
    };
    for &suite in suites {
        let started = std::time::Instant::now();
        let (ok, tally) = match suite {
            "rust" => rust_suite(),
            "python" => python::suite(),
            "kotlin" => kotlin::suite(),
            "js" => js_suite(),
            "swift" => swift::suite(),
            "fuzz" => fuzz_suite(fuzz_build.take()),
            other => bail!("no runner for suite {other}"),
        }
        // A suite that cannot even start counts as failed; the others still run.
        .unwrap_or_else(|e| {
            eprintln!("xtask: the {suite} suite could not run: {e:#}");
            (false, Tally::default())
        });
        results.push((suite, ok, tally, started.elapsed()));
    }
    println!();
    let mut total = Tally::default();
    for (suite, ok, t, took) in &results {
        println!(
            "{suite}: {} passed, {} failed, {} skipped{} ({}m{:02}s)",
            t.passed,
            t.failed,
            t.skipped,
            if *ok { "" } else { " (suite FAILED)" },
            took.as_secs() / 60,
            took.as_secs() % 60
        );
        total.passed += t.passed;
        total.failed += t.failed;
        total.skipped += t.skipped;
    }
    println!(
        "total: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    Ok(results.iter().all(|(_, ok, _, _)| *ok))
}

/// Seeds of the simulation `cargo xtask test` runs (issue 15 asks for 10,000); a plain
/// `cargo test` runs 1,000, and `SIM_SEEDS` set by the caller wins. 10,000 seeds are about
/// 5 minutes of the CI run; the clean-clone times are in docs/BENCHMARKS.md.
const CI_SIM_SEEDS: u64 = 10_000;

/// `cargo test --workspace`, streaming its output and summing its `test result:` lines.
fn rust_suite() -> anyhow::Result<(bool, Tally)> {
    let mut command = cargo();
    command.args(["test", "--workspace", "--no-fail-fast"]);
    if std::env::var_os("SIM_SEEDS").is_none() {
        command.env("SIM_SEEDS", CI_SIM_SEEDS.to_string());
    }
    stream(command, "cargo test", |line, tally| {
        if let Some(result) = line.strip_prefix("test result: ") {
            tally.passed += count(result, " passed");
            tally.failed += count(result, " failed");
            tally.skipped += count(result, " ignored");
        }
    })
}

/// `cargo xtask soak [--seconds N] [--seeds N] [--sim-seeds N]`: the long runs CI leaves out,
/// in release builds: the fault proxy between real processes for `--seeds` seeds of
/// `--seconds` of faults each (defaults 20 and 60), then the simulation over `--sim-seeds`
/// seeds (default 10,000).
fn soak(args: &[&str]) -> anyhow::Result<bool> {
    let (mut seconds, mut seeds, mut sim_seeds) = (60u64, 20u64, 10_000u64);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let slot = match *arg {
            "--seconds" => &mut seconds,
            "--seeds" => &mut seeds,
            "--sim-seeds" => &mut sim_seeds,
            other => bail!("unknown soak option {other:?}"),
        };
        *slot = rest
            .next()
            .with_context(|| format!("{arg} needs a number"))?
            .parse()
            .with_context(|| format!("{arg} needs a number"))?;
    }
    let mut proxy = cargo();
    proxy
        .args([
            "test",
            "--release",
            "-p",
            "syncline-tests",
            "--test",
            "fault_proxy",
        ])
        .args(["--", "--nocapture"])
        .env("FAULT_SECONDS", seconds.to_string())
        .env("FAULT_SEEDS", seeds.to_string());
    let proxied = proxy
        .status()
        .context("cargo test (fault proxy)")?
        .success();
    let mut sim = cargo();
    sim.args([
        "test",
        "--release",
        "-p",
        "syncline-testkit",
        "--test",
        "simulation",
    ])
    .args(["--", "--nocapture"])
    .env("SIM_SEEDS", sim_seeds.to_string());
    let simulated = sim.status().context("cargo test (simulation)")?.success();
    println!(
        "soak: fault proxy {} ({seeds} seeds x {seconds} s), simulation {} ({sim_seeds} seeds)",
        if proxied { "passed" } else { "FAILED" },
        if simulated { "passed" } else { "FAILED" },
    );
    Ok(proxied && simulated)
}

/// `cargo xtask fuzz [--seconds N] [--keep] [TARGET...]`.
fn fuzz_command(args: &[&str]) -> anyhow::Result<bool> {
    let mut seconds = 60;
    let mut keep = false;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--seconds" => {
                seconds = args
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a number")?;
            }
            "--keep" => keep = true,
            target => targets.push(target.to_owned()),
        }
    }
    let outcome = fuzz::run(seconds, &targets, keep, None)?;
    println!(
        "fuzz: {} targets ran clean, {} crashed",
        outcome.passed.len(),
        outcome.failed.len()
    );
    Ok(outcome.failed.is_empty())
}

/// Every fuzz target for [`fuzz::CI_SECONDS`] each: one test per target; `started` is the
/// targets' build if it is already under way.
fn fuzz_suite(started: Option<fuzz::Background>) -> anyhow::Result<(bool, Tally)> {
    let outcome = fuzz::run(fuzz::CI_SECONDS, &[], false, started)?;
    let tally = Tally {
        passed: outcome.passed.len() as u64,
        failed: outcome.failed.len() as u64,
        skipped: 0,
    };
    Ok((outcome.failed.is_empty(), tally))
}

/// The FFI library's budget on a phone, stripped (issue 16).
const FFI_BUDGET_BYTES: u64 = 8_000_000;

/// `cargo xtask size`: the stripped sizes of what ships.
fn size() -> anyhow::Result<bool> {
    run_cargo(&["build", "--profile", "release-ffi", "-p", "syncline-ffi"])?;
    run_cargo(&[
        "build",
        "--release",
        "-p",
        "syncline-relay",
        "--bin",
        "syncline-relay",
    ])?;
    let library = target_dir().join("release-ffi").join(
        ffi_library()
            .file_name()
            .context("the library has a file name")?,
    );
    let library_bytes = stripped_size(&library)?;
    let relay_bytes = stripped_size(&target_dir().join("release").join("syncline-relay"))?;
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "size: syncline-ffi {:.2} MB stripped (budget {:.0} MB: {}), syncline-relay {:.2} MB stripped",
        mb(library_bytes),
        mb(FFI_BUDGET_BYTES),
        if library_bytes <= FFI_BUDGET_BYTES {
            "within"
        } else {
            "OVER"
        },
        mb(relay_bytes)
    );
    Ok(true)
}

/// The size of `path` once stripped of symbols and debug information (a stripped copy is
/// measured; the file itself is left as built).
fn stripped_size(path: &Path) -> anyhow::Result<u64> {
    let copy = target_dir()
        .join("size")
        .join(path.file_name().context("a binary has a file name")?);
    std::fs::create_dir_all(copy.parent().context("in a directory")?)?;
    std::fs::copy(path, &copy).with_context(|| format!("cannot copy {}", path.display()))?;
    let status = Command::new("strip")
        .arg(&copy)
        .status()
        .context("cannot run strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed", copy.display());
    }
    Ok(std::fs::metadata(&copy)?.len())
}

/// `cargo xtask package`: what an app installs, release-built, in `target/dist`.
fn package() -> anyhow::Result<bool> {
    let dist = target_dir().join("dist");
    python::wheel(&dist, true)?;
    kotlin::jar(&dist.join("maven"))?;
    swift::package(&dist.join("swift"))?;
    Ok(true)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Runs `command` to its end; an error names `what` if it cannot start or fails.
fn checked(mut command: Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed");
    }
    Ok(())
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
        // From scratch: a file generated under an earlier name or package must not linger
        // (the Kotlin build compiles the whole directory).
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
        }
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
            python::write_stub(&out.join("syncline_ffi.py"))?;
        }
        if *language == "swift" {
            swift::install_sources(&out)?;
        }
        if *language == "kotlin" {
            kotlin::internalize(&out.join("dev/syncline/syncline_ffi.kt"))?;
        }
        println!("bindings: {language} in {}", out.display());
    }
    Ok(())
}

/// The relay binary of the workspace's test build. `cargo build -p syncline-relay` would
/// resolve dependency features for the relay alone and so compile a second copy of most of
/// the dependency graph; `cargo test --workspace --no-run` is the build the `rust` suite has
/// already made (nothing to do after it).
fn build_relay() -> anyhow::Result<PathBuf> {
    run_cargo(&["test", "-q", "--workspace", "--no-run"])?;
    std::fs::canonicalize(target_dir().join("debug").join("syncline-relay"))
        .context("the relay binary")
}

/// True if `program args` runs and exits successfully (its output discarded).
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The protocol's second implementation in `tests/js`: its pinned packages installed with
/// `npm ci`, then Node's test runner (TAP output, counted from its `# pass`, `# fail` and
/// `# skipped` totals) against the workspace's relay and `syncline-todo`.
fn js_suite() -> anyhow::Result<(bool, Tally)> {
    let relay = build_relay()?;
    let todo = std::fs::canonicalize(target_dir().join("debug").join("syncline-todo"))
        .context("the syncline-todo binary")?;
    let dir = Path::new("tests/js");
    let npm = std::env::var("SYNCLINE_NPM").unwrap_or_else(|_| "npm".to_owned());
    let installed = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot start {npm} (install Node.js and npm, or run .ci/run)"))?;
    if !installed.success() {
        bail!("npm ci in tests/js failed");
    }
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=tap"])
        .current_dir(dir)
        .env("SYNCLINE_RELAY_BIN", &relay)
        .env("SYNCLINE_TODO_BIN", &todo);
    // Node 20 takes the test files from the directory; 18 needs them named.
    for entry in std::fs::read_dir(dir.join("test")).context("tests/js/test")? {
        let name = entry?.file_name().into_string().unwrap_or_default();
        if name.ends_with(".test.mjs") {
            command.arg(format!("test/{name}"));
        }
    }
    stream(
        command,
        "node --test (install Node.js >= 18)",
        |line, tally| {
            let mut words = line.split_whitespace();
            if let (Some("#"), Some(label), Some(n)) = (words.next(), words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match label {
                    "pass" => tally.passed = n,
                    // A test cancelled (its file timed out or crashed) did not pass.
                    "fail" | "cancelled" => tally.failed += n,
                    "skipped" => tally.skipped = n,
                    _ => {}
                }
            }
        },
    )
}

/// Runs an example app as one more test of its suite: passed if it exits successfully.
fn run_example(command: Command, name: &str, tally: &mut Tally) -> anyhow::Result<bool> {
    println!("example: {name}");
    let (ok, _) = stream(command, name, |_, _| {})?;
    println!("example: {name} {}", if ok { "passed" } else { "FAILED" });
    if ok {
        tally.passed += 1;
    } else {
        tally.failed += 1;
    }
    Ok(ok)
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

/// The totals of an XCTest summary line: "Executed 8 tests, with 1 failure (0 unexpected) in
/// 2.1 (2.1) seconds", or with skips "Executed 8 tests, with 1 test skipped and 0 failures
/// (0 unexpected) in ...".
fn xctest_totals(line: &str) -> Option<Tally> {
    let rest = line.trim().strip_prefix("Executed ")?;
    let number = |s: &str| s.split_whitespace().next()?.parse::<u64>().ok();
    let run = number(rest)?;
    let counts = rest.split("with ").nth(1)?;
    let (skipped, failed) = match counts.split_once(" skipped and ") {
        Some((skipped, failed)) => (number(skipped)?, number(failed)?),
        None => (0, number(counts)?),
    };
    Some(Tally {
        passed: run.saturating_sub(failed + skipped),
        failed,
        skipped,
    })
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
    use super::{count, xctest_totals};

    #[test]
    fn reads_xctest_totals() {
        let t = xctest_totals(
            "Executed 8 tests, with 1 failure (0 unexpected) in 2.104 (2.105) seconds",
        )
        .expect("totals");
        assert_eq!((t.passed, t.failed, t.skipped), (7, 1, 0));
        let t = xctest_totals(
            "\tExecuted 9 tests, with 2 tests skipped and 0 failures (0 unexpected) in 1.0 (1.0) seconds",
        )
        .expect("totals");
        assert_eq!((t.passed, t.failed, t.skipped), (7, 0, 2));
        assert!(xctest_totals("Test Suite 'All tests' passed").is_none());
    }

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
