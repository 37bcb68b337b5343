// swift-tools-version:5.9
// Syncline from Swift: a command-line app on the native `Syncline` library of bindings/swift.
//
// The dependency goes through the symbolic link `syncline-bindings` (-> ../../bindings/swift)
// rather than the path ../../bindings/swift itself: SwiftPM names a local package after its
// directory, and both this package and that one live in a directory called `swift`. With the
// same identity, SwiftPM takes the dependency for this root package and cannot resolve it.

import PackageDescription

let package = Package(
    name: "SynclineExample",
    // As the bindings package: `Duration` needs macOS 13.
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: "syncline-bindings"),
    ],
    targets: [
        .executableTarget(
            name: "SynclineExample",
            dependencies: [.product(name: "Syncline", package: "syncline-bindings")],
            path: "Sources/SynclineExample"
        ),
    ]
)
