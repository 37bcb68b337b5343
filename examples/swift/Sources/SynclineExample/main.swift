// Syncline from Swift: two devices and a local relay. The phone writes while offline, then
// connects and the laptop receives it; the laptop goes offline, edits, and reconnects, and the
// phone receives that. Run with the path of a `syncline-relay` binary:
//     swift run --package-path examples/swift SynclineExample /path/to/syncline-relay
// (or set SYNCLINE_RELAY_BIN). Exits 0 once both devices converged, 1 on a failure.

import Foundation
import Syncline

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What went wrong in the story (as opposed to an `FfiError` from the SDK).
struct ExampleError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// A `syncline-relay serve` on 127.0.0.1 with its data in `dir`; its tokens are minted by the
/// same binary from the development key it creates there.
final class LocalRelay {
    let url: String
    private let bin: String
    private let dir: URL
    private let process: Process

    init(bin: String, dir: URL) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path]
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The first line says where it listens: "syncline-relay listening on 127.0.0.1:PORT".
        var bytes = Data()
        while !bytes.contains(UInt8(ascii: "\n")) {
            let chunk = stdout.fileHandleForReading.availableData
            if chunk.isEmpty {
                break  // the relay exited
            }
            bytes.append(chunk)
        }
        let line = String(decoding: bytes, as: UTF8.self)
            .split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
            .first.map(String.init) ?? ""
        guard line.hasPrefix("syncline-relay listening on "),
            let address = line.split(separator: " ").last
        else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw ExampleError("the relay did not start: \(line.debugDescription)")
        }
        self.url = "ws://\(address)"
        self.bin = bin
        self.dir = dir
        self.process = process
    }

    /// A token provider for `device` that may read and write the `todos` collection.
    func tokens(device: String) throws -> FfiTokenProvider {
        let minter = Process()
        minter.executableURL = URL(fileURLWithPath: bin)
        minter.arguments = [
            "token", "--data-dir", dir.path, "--user", "alice", "--device", device,
            "--read", "todos", "--write", "todos", "--ttl", "3600",
        ]
        let stdout = Pipe()
        minter.standardOutput = stdout
        try minter.run()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        minter.waitUntilExit()
        guard minter.terminationStatus == 0 else {
            throw ExampleError("minting a token failed (exit status \(minter.terminationStatus))")
        }
        let token = String(decoding: output, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return FixedToken(token)
    }

    func close() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }
}

/// The same token every time. The SDK calls `token()` on one of its own threads, so a real app
/// may block in it while it refreshes a token from its backend.
final class FixedToken: FfiTokenProvider {
    let value: String

    init(_ value: String) {
        self.value = value
    }

    func token() -> String {
        value
    }
}

/// Opens when a change from another device reaches `doc`. Listeners are called on the SDK's
/// threads (an app hops to the main actor before it touches its UI).
final class RemoteChange: FfiChangeListener, @unchecked Sendable {
    private let doc: String
    private let condition = NSCondition()
    private var arrived = false

    init(doc: String) {
        self.doc = doc
    }

    func onChange(event: FfiChangeEvent) {
        guard event.remote, event.doc == doc else {
            return
        }
        condition.lock()
        arrived = true
        condition.broadcast()
        condition.unlock()
    }

    /// True if the change arrived within `seconds`.
    func wait(seconds: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while !arrived {
            if !condition.wait(until: deadline) {
                break
            }
        }
        return arrived
    }
}

func step(_ text: String) {
    print("• \(text)")
}

func demo(relay: LocalRelay, phone: FfiStore, laptop: FfiStore) async throws {
    // 1. Offline: no client runs yet, and the write is durable at once.
    let todo = try phone.create(
        collection: "todos", initial: .object(entries: ["title": .str(value: "Buy milk")]))
    let waiting = try phone.pendingDocuments()
    step("phone, offline: created \(todo.id()); pending: \(waiting)")

    // 2. Both devices connect; the laptop hears the phone's todo arrive.
    let heard = RemoteChange(doc: todo.id())
    let listening = try laptop.watchCollection(collection: "todos", listener: heard)
    let phoneSync = try FfiSyncClient.start(
        store: phone, relayUrl: relay.url, collections: ["todos"],
        tokens: relay.tokens(device: phone.deviceId()))
    let laptopSync = try FfiSyncClient.start(
        store: laptop, relayUrl: relay.url, collections: ["todos"],
        tokens: relay.tokens(device: laptop.deviceId()))
    // Waiting suspends this task; no thread blocks on the network.
    _ = try await phoneSync.waitSynced(timeoutMs: 30_000)
    _ = try await laptopSync.waitSynced(timeoutMs: 30_000)
    guard heard.wait(seconds: 30) else {
        throw ExampleError("the laptop never heard the todo")
    }
    let received = try laptop.getJson(docId: todo.id())
    step("laptop, online: received \(received)")
    listening.cancel()

    // 3. The laptop goes offline and edits; the edit waits in its store.
    laptopSync.pause()
    try laptop.document(docId: todo.id()).put(path: "/done", value: .bool(value: true))
    let edited = try laptop.pendingDocuments()
    step("laptop, offline: marked done; pending: \(edited)")

    // 4. It reconnects: the pending edit goes out, and the phone receives it.
    let back = RemoteChange(doc: todo.id())
    let phoneListening = try phone.watchCollection(collection: "todos", listener: back)
    laptopSync.resume()
    _ = try await laptopSync.waitSynced(timeoutMs: 30_000)
    guard back.wait(seconds: 30) else {
        throw ExampleError("the phone never heard the edit")
    }
    let seen = try phone.document(docId: todo.id()).get(path: "/done")
    guard seen == FfiValue.bool(value: true) else {
        throw ExampleError("the phone sees done = \(String(describing: seen))")
    }
    let converged = try phone.getJson(docId: todo.id())
    step("laptop reconnected; phone now has \(converged)")
    phoneListening.cancel()
    phoneSync.stop()
    laptopSync.stop()
    step("converged: both devices hold the same todo")
}

func run(relayBin: String) async throws {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("syncline-example-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let relay = try LocalRelay(bin: relayBin, dir: dir.appendingPathComponent("relay"))
    defer { relay.close() }
    // A store closes when its last reference goes (here, when `run` returns).
    let phone = try FfiStore.open(path: dir.appendingPathComponent("phone.db").path)
    let laptop = try FfiStore.open(path: dir.appendingPathComponent("laptop.db").path)
    try await demo(relay: relay, phone: phone, laptop: laptop)
}

func fail(_ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data("\(message)\n".utf8))
    exit(status)
}

let arguments = CommandLine.arguments.dropFirst()
guard let relayBin = arguments.first ?? ProcessInfo.processInfo.environment["SYNCLINE_RELAY_BIN"]
else {
    fail("usage: SynclineExample <path to syncline-relay> (or set SYNCLINE_RELAY_BIN)", status: 2)
}
do {
    try await run(relayBin: relayBin)
} catch let error as FfiError {
    fail("syncline error: \(error)", status: 1)
} catch {
    fail("failed: \(error)", status: 1)
}
exit(0)
