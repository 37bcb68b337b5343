//! The Swift suite and the Swift package.
//!
//! - `suite`: `swift test` of `bindings/swift` (XCTest against a real relay), the
//!   `examples/swift` app, and the Swift 6 consumer fixture (built with warnings as errors),
//!   wherever `swift` is on PATH; elsewhere one skipped test and a line saying why.
//! - `package`: `target/dist/swift/SynclineKit`, the package an app on Apple platforms adds
//!   (`bindings/swift/apple/Package.swift` with the generated `SynclineCore` and the native
//!   `Syncline` sources), and on a Mac with Xcode the static XCFramework it names, by the steps
//!   of docs/IOS.md. Elsewhere the package is written without the XCFramework, and it says so.
//!   (The XCFramework part has not been run: the project is developed on Linux.)
//! - `install_sources`: the step of `cargo xtask bindings` that puts the generated Swift into
//!   the SwiftPM package in `bindings/swift`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{
    Tally, bindings, build_relay, checked, run_cargo, run_example, stream, succeeds, target_dir,
    xctest_totals,
};

/// `swift test` of the SwiftPM package in `bindings/swift`, then the `examples/swift` app,
/// where a Swift toolchain is on PATH; elsewhere, one skipped test and a line saying why.
pub fn suite() -> anyhow::Result<(bool, Tally)> {
    if !succeeds("swift", &["--version"]) {
        println!(
            "swift: SKIPPED: no Swift toolchain on PATH here. The XCTest suite in \
             bindings/swift and the examples/swift app run wherever `swift` is installed."
        );
        return Ok((
            true,
            Tally {
                skipped: 1,
                ..Tally::default()
            },
        ));
    }
    bindings(&["swift"])?;
    let relay = build_relay()?;
    let library_dir =
        std::fs::canonicalize(target_dir().join("debug")).context("the library directory")?;
    let mut command = Command::new("swift");
    command
        .args(["test", "--package-path", "bindings/swift"])
        .env("SYNCLINE_RELAY_BIN", &relay)
        .env("SYNCLINE_LIB_DIR", &library_dir);
    let (ok, mut tally) = stream(command, "swift test", |line, tally| {
        // The last "Executed ..." line is the whole run's (earlier ones are per suite).
        if let Some(totals) = xctest_totals(line) {
            *tally = totals;
        }
    })?;
    if !ok {
        return Ok((false, tally));
    }
    let mut example = Command::new("swift");
    example
        .args(["run", "--package-path", "examples/swift"])
        .env("SYNCLINE_RELAY_BIN", &relay)
        .env("SYNCLINE_LIB_DIR", &library_dir);
    let example_ok = run_example(example, "examples/swift", &mut tally)?;
    // A Swift 6 language-mode app of the native API, built (not run) with its warnings as
    // errors (its Package.swift passes -warnings-as-errors): a concurrency diagnostic in how
    // an app must use `Store` from the main actor and a detached task fails the suite.
    let mut consumer = Command::new("swift");
    consumer
        .args([
            "build",
            "--package-path",
            "bindings/swift/Fixtures/Swift6Consumer",
        ])
        .env("SYNCLINE_LIB_DIR", &library_dir);
    let consumer_ok = run_example(
        consumer,
        "bindings/swift/Fixtures/Swift6Consumer (Swift 6 mode, built)",
        &mut tally,
    )?;
    Ok((example_ok && consumer_ok, tally))
}

/// Copies the generated Swift sources (the module `SynclineCore` that the hand-written
/// `Syncline` wraps), header and module map into the SwiftPM package in `bindings/swift`
/// (where they are ignored by git: they are build output).
pub fn install_sources(generated: &Path) -> anyhow::Result<()> {
    let package = Path::new("bindings/swift/Sources");
    let copies = [
        (
            "SynclineCore.swift",
            package.join("SynclineCore/SynclineCore.swift"),
        ),
        (
            "syncline_ffiFFI.h",
            package.join("SynclineFFI/include/syncline_ffiFFI.h"),
        ),
        (
            "syncline_ffiFFI.modulemap",
            package.join("SynclineFFI/include/module.modulemap"),
        ),
    ];
    for (name, to) in copies {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::copy(generated.join(name), &to)
            .with_context(|| format!("copying {name} to {}", to.display()))?;
    }
    Ok(())
}

/// The iOS targets of the XCFramework: the device, and the two simulators (made one slice).
const IOS_DEVICE: &str = "aarch64-apple-ios";
const IOS_SIMULATORS: [&str; 2] = ["aarch64-apple-ios-sim", "x86_64-apple-ios"];

/// `cargo xtask package`: the Swift package for Apple platforms in `dist/SynclineKit`.
pub fn package(dist: &Path) -> anyhow::Result<()> {
    bindings(&["swift"])?;
    let kit = dist.join("SynclineKit");
    if kit.exists() {
        std::fs::remove_dir_all(&kit).with_context(|| format!("clearing {}", kit.display()))?;
    }
    let core = kit.join("Sources/SynclineCore");
    std::fs::create_dir_all(&core)?;
    std::fs::copy(
        "bindings/swift/apple/Package.swift",
        kit.join("Package.swift"),
    )
    .context("copying the Apple manifest")?;
    let generated = target_dir().join("bindings").join("swift");
    std::fs::copy(
        generated.join("SynclineCore.swift"),
        core.join("SynclineCore.swift"),
    )
    .context("copying the generated Swift")?;
    let native = kit.join("Sources/Syncline");
    std::fs::create_dir_all(&native)?;
    for entry in std::fs::read_dir("bindings/swift/Sources/Syncline")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "swift") {
            std::fs::copy(&path, native.join(path.file_name().context("file name")?))?;
        }
    }
    if cfg!(target_os = "macos") && succeeds("xcodebuild", &["-version"]) {
        xcframework(&generated, &kit)?;
        println!("package: {} (with its XCFramework)", kit.display());
    } else {
        println!(
            "package: {} without syncline_ffiFFI.xcframework: building it needs a Mac with \
             Xcode (docs/IOS.md, steps 1 to 3)",
            kit.display()
        );
    }
    Ok(())
}

/// docs/IOS.md, steps 1 to 3: static libraries for the device and the simulators, the header
/// and module map, and `xcodebuild -create-xcframework` into the package.
fn xcframework(generated: &Path, kit: &Path) -> anyhow::Result<()> {
    let mut targets = vec![IOS_DEVICE];
    targets.extend(IOS_SIMULATORS);
    for target in &targets {
        run_cargo(&[
            "rustc",
            "-q",
            "--profile",
            "release-ffi",
            "-p",
            "syncline-ffi",
            "--lib",
            "--target",
            target,
            "--crate-type",
            "staticlib",
        ])?;
    }
    let library = |target: &str| -> PathBuf {
        target_dir()
            .join(target)
            .join("release-ffi")
            .join("libsyncline_ffi.a")
    };
    let simulator = target_dir().join("ios-simulator/release-ffi");
    std::fs::create_dir_all(&simulator)?;
    let mut lipo = Command::new("lipo");
    lipo.arg("-create");
    for target in IOS_SIMULATORS {
        lipo.arg(library(target));
    }
    lipo.arg("-output").arg(simulator.join("libsyncline_ffi.a"));
    checked(lipo, "lipo")?;
    // The module map must be named module.modulemap, in a directory of the module's name.
    let headers = target_dir().join("ios-headers");
    if headers.exists() {
        std::fs::remove_dir_all(&headers)?;
    }
    let module = headers.join("syncline_ffiFFI");
    std::fs::create_dir_all(&module)?;
    std::fs::copy(
        generated.join("syncline_ffiFFI.h"),
        module.join("syncline_ffiFFI.h"),
    )?;
    std::fs::copy(
        generated.join("syncline_ffiFFI.modulemap"),
        module.join("module.modulemap"),
    )?;
    let mut xcodebuild = Command::new("xcodebuild");
    xcodebuild
        .arg("-create-xcframework")
        .arg("-library")
        .arg(library(IOS_DEVICE))
        .arg("-headers")
        .arg(&headers)
        .arg("-library")
        .arg(simulator.join("libsyncline_ffi.a"))
        .arg("-headers")
        .arg(&headers)
        .arg("-output")
        .arg(kit.join("syncline_ffiFFI.xcframework"));
    checked(xcodebuild, "xcodebuild -create-xcframework")
}
