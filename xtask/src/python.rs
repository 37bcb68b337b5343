//! The Python suite and the Python package.
//!
//! - `suite`: `maturin develop` of `bindings/python` into the interpreter's virtualenv (the
//!   native package `syncline` over the generated `syncline._native`), pytest against a real
//!   relay, `mypy --strict` on the package, the tests and `examples/python`, then the wheel
//!   installed into a fresh virtual environment running `import syncline` and the example.
//!   Without maturin (or outside a virtualenv) the package is assembled from the generated
//!   module instead and the wheel check is skipped, saying so.
//! - `wheel`: `maturin build` into a directory (`cargo xtask package` and the suite).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{
    Tally, bindings, build_relay, checked, pytest_count, run_example, stream, succeeds, target_dir,
};

/// Where the Python package's sources live.
const PACKAGE: &str = "bindings/python";

/// The interpreter the suite and the packaging use: `$SYNCLINE_PYTHON`, else
/// `.venv/bin/python`, else `python3`; absolute when given as a path (maturin runs in
/// `bindings/python`, and the venv's `python` is a symlink to keep, not resolve).
fn interpreter() -> anyhow::Result<String> {
    let python = std::env::var("SYNCLINE_PYTHON").unwrap_or_else(|_| {
        if Path::new(".venv/bin/python").exists() {
            ".venv/bin/python".to_owned()
        } else {
            "python3".to_owned()
        }
    });
    if !python.contains('/') {
        return Ok(python);
    }
    Ok(std::path::absolute(&python)
        .with_context(|| format!("the interpreter {python}"))?
        .to_string_lossy()
        .into_owned())
}

/// The virtualenv `python` runs in, if it has maturin.
fn maturin_virtualenv(python: &str) -> Option<String> {
    let in_virtualenv = succeeds(
        python,
        &["-c", "import sys; assert sys.prefix != sys.base_prefix"],
    );
    if !in_virtualenv || !succeeds(python, &["-m", "maturin", "--version"]) {
        return None;
    }
    let prefix = Command::new(python)
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&prefix.stdout).trim().to_owned())
}

/// Builds the wheel with maturin into `out` (release builds use the `release-ffi` profile
/// apps ship) and returns its path.
pub fn wheel(out: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let python = interpreter()?;
    let Some(venv) = maturin_virtualenv(&python) else {
        bail!(
            "building the wheel needs maturin in a virtualenv: \
             `python3 -m venv .venv && .venv/bin/pip install 'maturin>=1.11,<2'`"
        );
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    // Only this build's wheel in `out`, so that the caller finds it.
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            std::fs::remove_file(&path)?;
        }
    }
    let mut maturin = Command::new(&python);
    maturin
        .args(["-m", "maturin", "build", "--quiet", "--out"])
        .arg(&out)
        .current_dir(PACKAGE)
        .env("VIRTUAL_ENV", &venv);
    if release {
        maturin.args(["--profile", "release-ffi"]);
    }
    checked(maturin, "maturin build")?;
    let wheel = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("maturin wrote no wheel")?;
    println!("package: {}", wheel.display());
    Ok(wheel)
}

/// Installs the package for the tests: with maturin, `maturin develop` (editable, into the
/// interpreter's virtualenv); without, the hand-written package with the generated module
/// copied into `_native`, returned as a directory for `PYTHONPATH`.
fn install(python: &str) -> anyhow::Result<Option<PathBuf>> {
    if let Some(venv) = maturin_virtualenv(python) {
        let mut develop = Command::new(python);
        develop
            .args(["-m", "maturin", "develop", "--quiet"])
            .current_dir(PACKAGE)
            .env("VIRTUAL_ENV", &venv);
        checked(develop, "maturin develop")?;
        return Ok(None);
    }
    println!(
        "xtask: no maturin in a virtualenv for {python}: testing the package assembled from \
         the generated module, without building a wheel (.ci/run installs maturin into .venv)"
    );
    bindings(&["python"])?;
    let generated = std::fs::canonicalize(target_dir().join("bindings").join("python"))
        .context("the generated module")?;
    let root = generated.join("package");
    let package = root.join("syncline");
    if package.exists() {
        std::fs::remove_dir_all(&package)?;
    }
    copy_tree(&Path::new(PACKAGE).join("python/syncline"), &package)?;
    let native = package.join("_native");
    std::fs::create_dir_all(&native)?;
    for entry in std::fs::read_dir(&generated)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::copy(&path, native.join(path.file_name().context("file name")?))?;
        }
    }
    std::fs::write(
        native.join("__init__.py"),
        "from .syncline_ffi import *  # NOQA\n",
    )?;
    Ok(Some(root))
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let target = to.join(path.file_name().context("file name")?);
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes the type stub of the generated module (`bindings/python/stubgen.py`) into the
/// package's sources, where it is committed.
pub fn write_stub(generated: &Path) -> anyhow::Result<()> {
    let stub = Path::new(PACKAGE).join("python/syncline/_native/syncline_ffi.pyi");
    if let Some(dir) = stub.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let python = interpreter()?;
    let mut stubgen = Command::new(&python);
    stubgen
        .arg(Path::new(PACKAGE).join("stubgen.py"))
        .arg(generated)
        .arg(&stub);
    checked(
        stubgen,
        &format!("{python} bindings/python/stubgen.py (the type stub)"),
    )
}

/// The package under pytest, mypy, and as a wheel in a fresh virtual environment.
pub fn suite() -> anyhow::Result<(bool, Tally)> {
    let relay = build_relay()?;
    let python = interpreter()?;
    let assembled = install(&python)?;
    let mut pytest = Command::new(&python);
    pytest
        .args(["-m", "pytest", "-q", "bindings/python/tests"])
        .env("SYNCLINE_RELAY_BIN", &relay);
    if let Some(root) = &assembled {
        pytest.env("PYTHONPATH", root);
    }
    let what = format!("{python} (set SYNCLINE_PYTHON, or run .ci/run)");
    let (mut ok, mut tally) = stream(pytest, &what, |line, tally| {
        // pytest's last line: "3 passed, 1 failed, 2 skipped in 0.52s".
        if line.contains(" in ")
            && (line.contains("passed") || line.contains("failed") || line.contains("error"))
        {
            let summary = line.split(" in ").next().unwrap_or("");
            tally.passed += pytest_count(summary, "passed");
            tally.failed += pytest_count(summary, "failed") + pytest_count(summary, "error");
            tally.skipped += pytest_count(summary, "skipped");
        }
    })?;
    ok &= mypy(&python, assembled.as_deref(), &mut tally)?;
    if assembled.is_some() {
        println!("python: SKIPPED the wheel in a fresh virtual environment (no maturin)");
        tally.skipped += 1;
    } else {
        ok &= fresh_install(&python, &relay, &mut tally)?;
    }
    Ok((ok, tally))
}

/// `mypy --strict` (the package's configuration) on the package, the tests and the example:
/// one more test, skipped where mypy is not installed.
fn mypy(python: &str, assembled: Option<&Path>, tally: &mut Tally) -> anyhow::Result<bool> {
    if !succeeds(python, &["-m", "mypy", "--version"]) {
        println!("python: SKIPPED mypy --strict: mypy is not installed for {python}");
        tally.skipped += 1;
        return Ok(true);
    }
    let mut mypy = Command::new(python);
    mypy.args([
        "-m",
        "mypy",
        "--config-file",
        "bindings/python/pyproject.toml",
        "bindings/python/tests",
        "examples/python",
    ]);
    match assembled {
        Some(root) => {
            mypy.arg(root.join("syncline")).env("MYPYPATH", root);
        }
        None => {
            mypy.arg("bindings/python/python/syncline");
        }
    }
    run_example(mypy, "mypy --strict", tally)
}

/// A fresh virtual environment with nothing but the wheel: `import syncline` with nothing
/// else set, then `examples/python` against a relay. Two more tests.
fn fresh_install(python: &str, relay: &Path, tally: &mut Tally) -> anyhow::Result<bool> {
    let dist = target_dir().join("dist-test").join("python");
    let wheel = wheel(&dist, false)?;
    let venv = std::path::absolute(dist.join("venv"))?;
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    let mut create = Command::new(python);
    create.args(["-m", "venv"]).arg(&venv);
    checked(create, "python -m venv (a fresh virtual environment)")?;
    let fresh = venv.join("bin/python");
    // Its own pip, offline: the wheel has no dependencies.
    let mut pip = Command::new(&fresh);
    pip.args([
        "-m",
        "pip",
        "--disable-pip-version-check",
        "-q",
        "install",
        "--no-index",
    ])
    .arg(&wheel);
    checked(
        pip,
        "pip install of the wheel into a fresh virtual environment",
    )?;
    let mut import = Command::new(&fresh);
    import
        .args([
            "-c",
            "import syncline; print('import syncline:', syncline.__file__)",
        ])
        .current_dir(&venv)
        .env_remove("PYTHONPATH");
    let imported = run_example(import, "the wheel: import syncline in a fresh venv", tally)?;
    let mut example = Command::new(&fresh);
    example
        .arg(std::fs::canonicalize("examples/python/todo_sync.py")?)
        .arg(relay)
        .current_dir(&venv)
        .env_remove("PYTHONPATH");
    let ran = run_example(example, "examples/python (from the wheel)", tally)?;
    Ok(imported && ran)
}
