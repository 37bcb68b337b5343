// swift-tools-version:6.0
// A consumer of the Syncline package in the Swift 6 language mode: an app's `@MainActor` model
// that uses one `Store` from the main actor and from a detached task and follows a change
// stream. `cargo xtask test swift` builds it with its warnings as errors (-warnings-as-errors,
// this target only: the dependency's own warnings are its business), so a concurrency
// diagnostic anywhere in how an app must use the API fails the suite. Runnable too: `swift run`
// exercises it offline (and syncs when SYNCLINE_RELAY_URL and SYNCLINE_TOKEN are set).
//
// The dependency is the path ../.. (bindings/swift). SwiftPM names a local package after its
// directory, so its identity is `swift`, which `package:` below uses; this package's is
// `swift6consumer`. The two differ, which is all SwiftPM needs (examples/swift/Package.swift
// describes what happens when they do not).

import PackageDescription

let package = Package(
    name: "Swift6Consumer",
    platforms: [.macOS(.v13), .iOS(.v16)],
    dependencies: [
        .package(path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "Swift6Consumer",
            dependencies: [.product(name: "Syncline", package: "swift")],
            path: "Sources/Swift6Consumer",
            swiftSettings: [.unsafeFlags(["-warnings-as-errors"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
