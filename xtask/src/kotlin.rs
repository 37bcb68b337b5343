//! The Kotlin suite and the Kotlin package.
//!
//! - `suite`: `mvn deploy` of `bindings/kotlin` into a file repository under
//!   `target/dist-test/maven` (the JUnit suite of the native API against a real relay, then
//!   the jar carrying the native library as a JNA resource), then `examples/kotlin`, a separate
//!   Maven project, resolving that jar from the file repository (the local repository's copy of
//!   `dev.syncline` is removed first, so that it cannot come from there) and running with no
//!   `jna.library.path`.
//! - `jar`: the same deploy of a release build (profile `release-ffi`), tests skipped, into
//!   `target/dist/maven` (`cargo xtask package`).
//! - `internalize`: the step of `cargo xtask bindings` that hides the generated layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{Tally, bindings, build_relay, checked, run_cargo, run_example, stream, target_dir};

fn mvn() -> String {
    std::env::var("SYNCLINE_MVN").unwrap_or_else(|_| "mvn".to_owned())
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(&path).with_context(|| format!("{}", path.display()))
}

/// `mvn deploy` of `bindings/kotlin` with the library of `native` into the repository `repo`.
fn deploy(native: &Path, repo: &Path, relay: Option<&Path>) -> anyhow::Result<Command> {
    // Absolute: Maven resolves a relative path against the project, not this directory.
    let sources = absolute(target_dir().join("bindings").join("kotlin"))?;
    let mut command = Command::new(mvn());
    command
        .args([
            "-B",
            "--no-transfer-progress",
            "deploy",
            "-f",
            "bindings/kotlin/pom.xml",
        ])
        .arg(format!("-Dgenerated.sources={}", sources.display()))
        .arg(format!("-Dnative.dir={}", native.display()))
        .arg(format!("-Dnative.platform={}", jna_platform()))
        .arg(format!("-Ddist.repo={}", repo.display()));
    match relay {
        Some(relay) => command.arg(format!("-Drelay.bin={}", relay.display())),
        None => command.arg("-DskipTests"),
    };
    Ok(command)
}

/// The resource directory JNA looks in for this machine's library (`linux-x86-64`,
/// `darwin-aarch64`, ...): the jar carries the library there.
fn jna_platform() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("macos", "aarch64") => "darwin-aarch64",
        ("macos", _) => "darwin-x86-64",
        ("windows", _) => "win32-x86-64",
        (_, "aarch64") => "linux-aarch64",
        _ => "linux-x86-64",
    }
}

/// A directory made absolute (and created) for Maven, which takes `file://` URLs.
fn repository(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.exists() {
        std::fs::remove_dir_all(&path).with_context(|| format!("clearing {}", path.display()))?;
    }
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    absolute(path)
}

/// `cargo xtask package`: the release jar into the Maven repository `repo`.
pub fn jar(repo: &Path) -> anyhow::Result<()> {
    bindings(&["kotlin"])?;
    run_cargo(&[
        "build",
        "-q",
        "--profile",
        "release-ffi",
        "-p",
        "syncline-ffi",
        "--lib",
    ])?;
    let native = absolute(target_dir().join("release-ffi"))?;
    let repo = repository(repo.to_path_buf())?;
    checked(
        deploy(&native, &repo, None)?,
        "mvn deploy of bindings/kotlin",
    )?;
    println!("package: dev.syncline:syncline in {}", repo.display());
    Ok(())
}

/// The bindings' JUnit suite, deployed, then `examples/kotlin` on the deployed jar.
pub fn suite() -> anyhow::Result<(bool, Tally)> {
    bindings(&["kotlin"])?;
    let relay = build_relay()?;
    let native = absolute(target_dir().join("debug"))?;
    let repo = repository(target_dir().join("dist-test").join("maven"))?;
    let command = deploy(&native, &repo, Some(&relay))?;
    let what = format!("{} (install Maven and a JDK, or run .ci/run)", mvn());
    let (ok, mut tally) = stream(command, &what, |line, tally| {
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
    })?;
    if !ok {
        return Ok((false, tally));
    }
    forget_local_copy()?;
    let mut example = Command::new(mvn());
    example
        .args([
            "-B",
            "-q",
            "--no-transfer-progress",
            "package",
            "exec:exec",
            "-f",
            "examples/kotlin/pom.xml",
        ])
        .arg(format!("-Dsyncline.repo={}", repo.display()))
        .arg(format!("-Drelay.bin={}", relay.display()));
    let example_ok = run_example(
        example,
        "examples/kotlin (a separate project on the deployed jar)",
        &mut tally,
    )?;
    Ok((example_ok, tally))
}

/// Removes `dev/syncline` from the local Maven repository (`~/.m2/repository`, or
/// `$SYNCLINE_M2_REPOSITORY`), where an earlier `mvn install` may have left the bindings: the
/// example must resolve them from the file repository.
fn forget_local_copy() -> anyhow::Result<()> {
    let local = match std::env::var_os("SYNCLINE_M2_REPOSITORY") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".m2/repository"),
            None => return Ok(()),
        },
    };
    let ours = local.join("dev").join("syncline").join("syncline");
    if ours.exists() {
        std::fs::remove_dir_all(&ours).with_context(|| format!("removing {}", ours.display()))?;
    }
    Ok(())
}

/// Makes the generated Kotlin `internal`, all but its records and enums: the objects,
/// callback interfaces and errors the native API wraps (`FfiStore`, `FfiChangeListener`,
/// `FfiException`...) and uniffi's plumbing (converters, `RustBuffer`, `Disposable`...), so
/// that `dev.syncline` shows only the native API (src/main/kotlin) and the records and enums
/// it shares with the generated code. uniffi has no setting for this. Every top-level
/// declaration is rewritten but a `data class`, `enum class` or `sealed class` whose name has
/// no `Ffi` prefix; a change of uniffi's output that breaks this fails the Kotlin build (a
/// public record exposing an internal type).
pub fn internalize(file: &Path) -> anyhow::Result<()> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = String::with_capacity(source.len() + 4096);
    let mut changed = 0;
    for line in source.lines() {
        out.push_str(
            &internalized(line)
                .inspect(|_| changed += 1)
                .unwrap_or_else(|| line.to_owned()),
        );
        out.push('\n');
    }
    if changed == 0 {
        bail!(
            "found no declaration to make internal in {}",
            file.display()
        );
    }
    std::fs::write(file, out).with_context(|| format!("writing {}", file.display()))
}

/// A top-level declaration of the generated layer made `internal`, or `None` for a line that
/// stays as it is (a record or an enum, a nested or non-public declaration, anything else).
fn internalized(line: &str) -> Option<String> {
    const MODIFIERS: &[&str] = &["open", "abstract", "inline", "sealed", "data", "enum"];
    const KINDS: &[&str] = &["class", "interface", "object", "fun", "val", "var"];
    let rest = line.strip_prefix("public ").unwrap_or(line);
    let mut words = rest.split_whitespace();
    let mut modifiers = Vec::new();
    let kind = loop {
        let word = words.next()?;
        if MODIFIERS.contains(&word) {
            modifiers.push(word);
        } else if KINDS.contains(&word) {
            break word;
        } else {
            return None; // internal, private, an annotation, a statement, indented code
        }
    };
    // Not indented: `split_whitespace` skipped nothing before the first word.
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    let name = words.next().unwrap_or("");
    let record_or_enum = kind == "class"
        && modifiers
            .iter()
            .any(|m| matches!(*m, "data" | "enum" | "sealed"))
        && !name.starts_with("Ffi");
    if record_or_enum {
        return None;
    }
    Some(format!("internal {rest}"))
}
