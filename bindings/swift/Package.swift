// swift-tools-version:5.10
// Syncline for Swift: the SwiftPM package of the module `Syncline`, the native API apps import,
// over `SynclineCore`, the uniffi bindings of `syncline-ffi`, linked against the native library
// the workspace builds. `cargo xtask bindings` copies the generated Swift, header and module
// map into `Sources/`; they are build output and not committed. `Sources/Syncline` is
// hand-written.
//
// The library is found in $SYNCLINE_LIB_DIR (set by `cargo xtask test swift`), else in the
// workspace's `target/debug`; it is linked with an rpath to that directory, so tests and apps
// built here load it at run time without DYLD_LIBRARY_PATH / LD_LIBRARY_PATH. An app for Apple
// platforms links a static XCFramework instead, through the package in `apple/` (see
// docs/IOS.md).

import Foundation
import PackageDescription

/// The directory holding libsyncline_ffi.so / libsyncline_ffi.dylib.
let libraryDirectory: String = {
    if let dir = Context.environment["SYNCLINE_LIB_DIR"], !dir.isEmpty {
        return dir
    }
    // Resolved, so that a package reached through a symbolic link (examples/swift reaches
    // this one so) still finds the workspace it lives in.
    return URL(fileURLWithPath: Context.packageDirectory)
        .resolvingSymlinksInPath()
        .appendingPathComponent("../../target/debug")
        .standardized
        .path
}()

let package = Package(
    name: "Syncline",
    // `Duration` (the timeouts of `waitSynced` and `open`) needs macOS 13 / iOS 16.
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "Syncline", targets: ["Syncline"]),
    ],
    targets: [
        // The C declarations of the FFI: include/syncline_ffiFFI.h and include/module.modulemap
        // (which names the module `syncline_ffiFFI`, as the generated Swift imports it);
        // shim.c only gives the target the one source file a C target needs. The target is
        // named after that module, not after its directory: SwiftPM compiles a C target as the
        // module of the target's name (-fmodule-name), and Xcode and explicit module builds
        // look a target's module up by that name, so the two must agree.
        .target(
            name: "syncline_ffiFFI",
            path: "Sources/SynclineFFI"
        ),
        // The generated Swift (Sources/SynclineCore/SynclineCore.swift): `FfiStore`,
        // `FfiSyncClient`, the records and enums, `FfiError`. Public, as uniffi generates it,
        // but an implementation detail: apps import `Syncline`.
        .target(
            name: "SynclineCore",
            dependencies: ["syncline_ffiFFI"],
            path: "Sources/SynclineCore",
            linkerSettings: [
                .linkedLibrary("syncline_ffi"),
                .unsafeFlags([
                    "-L", libraryDirectory,
                    "-Xlinker", "-rpath", "-Xlinker", libraryDirectory,
                ]),
            ]
        ),
        // The native API, hand-written: `Store`, `Document`, `SyncClient`, `SyncError`, async
        // streams, Codable; one `SynclineCore` call per call. Checked for complete concurrency
        // safety (warnings in this Swift 5 mode package; Fixtures/Swift6Consumer builds a
        // Swift 6 client of it with warnings as errors).
        .target(
            name: "Syncline",
            dependencies: ["SynclineCore"],
            path: "Sources/Syncline",
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        .testTarget(
            name: "SynclineTests",
            dependencies: ["Syncline"],
            path: "Tests/SynclineTests"
        ),
    ]
)
