//! `cargo xtask fuzz`: builds the libFuzzer targets of `fuzz/` on the stable toolchain and runs
//! each for a bounded time.
//!
//! Coverage comes from LLVM's SanitizerCoverage, enabled with stable `-C passes` and
//! `-C llvm-args` flags (as cargo-fuzz does, without its nightly-only sanitizers); the flags
//! apply to the host target only (`--target`), not to build scripts and proc macros. Each
//! target starts from its committed corpus (`fuzz/corpus/<target>/`) and the seeds that
//! `syncline_testkit::fuzz::seeds` writes; what it learns goes to `target/fuzz/corpus/<target>`
//! (`--keep` merges what adds coverage into the committed corpus). A crash leaves its input in
//! `target/fuzz/artifacts/<target>/`; fixed, it belongs in `fuzz/regressions/<target>/`, which
//! every `cargo xtask test` replays.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// Every target, as named in `fuzz/Cargo.toml` and `syncline_testkit::fuzz::TARGETS`.
pub const TARGETS: &[&str] = &[
    "frame", "payload", "session", "hub", "token", "config", "device",
];

/// Seconds each target runs in `cargo xtask test` (the CI's short bounded run).
pub const CI_SECONDS: u64 = 10;

const SANCOV: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
];

/// What one run did.
pub struct Outcome {
    /// Targets that ran their time without a crash.
    pub passed: Vec<String>,
    /// Targets that crashed, with the crashing input.
    pub failed: Vec<(String, PathBuf)>,
}

/// Builds the targets and runs `targets` (all when empty) for `seconds` each; `keep` merges
/// what they learned into the committed corpus.
///
/// # Errors
/// When the targets cannot be built or started.
pub fn run(
    seconds: u64,
    targets: &[String],
    keep: bool,
    started: Option<Background>,
) -> anyhow::Result<Outcome> {
    let root = workspace_root();
    let chosen: Vec<String> = if targets.is_empty() {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target {t:?}; known: {}", TARGETS.join(", "));
            }
        }
        targets.to_vec()
    };
    let work = root.join("target/fuzz");
    let seeds = work.join("seeds");
    write_seeds(&root, &seeds)?;
    let binaries = match started {
        Some(build) => build.wait()?,
        None => build(&root, &work)?,
    };
    let mut outcome = Outcome {
        passed: Vec::new(),
        failed: Vec::new(),
    };
    for target in &chosen {
        let learned = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        let committed = root.join("fuzz/corpus").join(target);
        for dir in [&learned, &artifacts, &committed] {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        println!("fuzz: {target} for {seconds} s");
        let status = Command::new(binaries.join(target))
            .arg(format!("-max_total_time={seconds}"))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-max_len=65536")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&learned)
            .arg(&committed)
            .arg(seeds.join(target))
            .status()
            .with_context(|| format!("cannot start the {target} target"))?;
        if status.success() {
            outcome.passed.push(target.clone());
            if keep {
                merge(&binaries.join(target), &committed, &learned)?;
            }
        } else {
            let crash = newest(&artifacts).unwrap_or(artifacts);
            eprintln!(
                "fuzz: {target} FAILED; input: {} (fix it, then add it to fuzz/regressions/{target}/)",
                crash.display()
            );
            outcome.failed.push((target.clone(), crash));
        }
    }
    Ok(outcome)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Writes each target's seeds (valid inputs built by the testkit) under `dir/<target>/`.
fn write_seeds(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let status = super::cargo()
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "syncline-testkit",
            "--example",
            "fuzz_seeds",
            "--",
        ])
        .arg(dir)
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("writing the fuzz seeds failed");
    }
    Ok(())
}

/// Builds the fuzz crate with coverage instrumentation; returns the binaries' directory.
fn build(root: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let host = host_triple()?;
    let status = build_command(root, work, &host, super::cargo())
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    Ok(work.join("build").join(host).join("release"))
}

/// `cargo build` of the fuzz crate with coverage instrumentation, in its own target directory
/// (its flags differ from the workspace's).
fn build_command(root: &Path, work: &Path, host: &str, mut cargo: Command) -> Command {
    let mut flags = SANCOV.join(" ");
    if let Ok(extra) = std::env::var("RUSTFLAGS") {
        flags = format!("{extra} {flags}");
    }
    cargo
        .current_dir(root.join("fuzz"))
        .env("RUSTFLAGS", flags)
        .env("CARGO_TARGET_DIR", work.join("build"))
        .args(["build", "--release", "--bins", "--target", host]);
    cargo
}

/// The fuzz targets' build, running in the background.
pub struct Background {
    child: Child,
    log: PathBuf,
    binaries: PathBuf,
}

/// Starts building the fuzz targets in the background at the lowest CPU priority (through
/// `nice -n 19` where it exists), its output going to `target/fuzz/build.log`. `cargo xtask
/// test` starts it before the other suites: the instrumented release build takes minutes of
/// CPU, and the other suites leave much of it idle while their tests wait on sockets and
/// timers, so it mostly runs in that idle time instead of after them.
///
/// # Errors
/// When the build cannot be started.
pub fn start_build() -> anyhow::Result<Background> {
    let root = workspace_root();
    let work = root.join("target/fuzz");
    std::fs::create_dir_all(&work).with_context(|| format!("{}", work.display()))?;
    let host = host_triple()?;
    let cargo = super::cargo().get_program().to_owned();
    let launcher = if super::succeeds("nice", &["-n", "19", "true"]) {
        let mut nice = Command::new("nice");
        nice.args(["-n", "19"]).arg(cargo);
        nice
    } else {
        Command::new(cargo)
    };
    let log = work.join("build.log");
    let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    let child = build_command(&root, &work, &host, launcher)
        .stdin(Stdio::null())
        .stdout(out.try_clone().context("the build log")?)
        .stderr(out)
        .spawn()
        .context("cannot start cargo")?;
    println!(
        "fuzz: building the targets in the background (log: {})",
        log.display()
    );
    Ok(Background {
        child,
        log,
        binaries: work.join("build").join(host).join("release"),
    })
}

impl Drop for Background {
    /// An `xtask` that stops early does not leave the build running.
    fn drop(&mut self) {
        // After `wait` the child is gone already: nothing to do then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Background {
    /// Waits for the build; returns the binaries' directory.
    ///
    /// # Errors
    /// When the build failed (its log is printed).
    pub fn wait(mut self) -> anyhow::Result<PathBuf> {
        let status = self.child.wait().context("waiting for the fuzz build")?;
        if !status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("{log}");
            bail!(
                "building the fuzz targets failed (log: {})",
                self.log.display()
            );
        }
        Ok(self.binaries.clone())
    }
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot run rustc")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")
}

/// Merges the inputs in `learned` that add coverage into `committed` (libFuzzer's
/// `-set_cover_merge`: a small set with the same coverage).
fn merge(binary: &Path, committed: &Path, learned: &Path) -> anyhow::Result<()> {
    let status = Command::new(binary)
        .arg("-set_cover_merge=1")
        .arg(committed)
        .arg(learned)
        .status()
        .context("cannot start the merge")?;
    if !status.success() {
        bail!("merging into {} failed", committed.display());
    }
    Ok(())
}

fn newest(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}
