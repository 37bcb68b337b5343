// swift-tools-version:5.10
// Syncline for an app on Apple platforms: the package an iOS (or macOS) app adds, with the
// native library as a static XCFramework instead of the workspace's shared library. This file
// is a template: docs/IOS.md builds the XCFramework and the generated sources, and copies them
// and this file into one directory, laid out as below; the app then depends on that package
// alone and writes `import Syncline`.
//
//     Package.swift                        (this file)
//     syncline_ffiFFI.xcframework          (docs/IOS.md, step 3)
//     Sources/SynclineCore/SynclineCore.swift   (generated: docs/IOS.md, step 2)
//     Sources/Syncline/*.swift             (bindings/swift/Sources/Syncline, as they are)
//
// SwiftPM takes a target's sources only from inside the package's own directory, which is why
// the files are copied rather than referred to where they live.

import PackageDescription

let package = Package(
    name: "Syncline",
    // `Duration` (the timeouts of `waitSynced` and `open`) needs iOS 16 / macOS 13.
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "Syncline", targets: ["Syncline"]),
    ],
    targets: [
        // The static library with its header and module map: the module is named
        // `syncline_ffiFFI` by the module.modulemap inside, which the generated Swift imports.
        // TLS (rustls, with bundled roots) and SQLite are compiled in: nothing else to link.
        .binaryTarget(name: "syncline_ffiFFI", path: "syncline_ffiFFI.xcframework"),
        // The generated uniffi layer, an implementation detail of `Syncline`.
        .target(
            name: "SynclineCore", dependencies: ["syncline_ffiFFI"], path: "Sources/SynclineCore"),
        // The native API apps import.
        .target(name: "Syncline", dependencies: ["SynclineCore"], path: "Sources/Syncline"),
    ]
)
