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

/// A todo, as the app models it: documents are read back into it with `decode`.
struct Todo: Codable {
    var title: String
    var done: Bool
}

/// What went wrong in the story (as opposed to a `SyncError` from the SDK).
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

    /// A token for `device` that may read and write the `todos` collection. A real app's token
    /// closure fetches one from its backend (the SDK calls it on a thread of its own, so it may
    /// block while it does).
    func token(device: String) throws -> String {
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
        return String(decoding: output, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func close() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }
}

func step(_ text: String) {
    print("• \(text)")
}

/// The first change another device made to `doc` that `changes` yields, or nil when none came
/// within `timeout`. The loop runs in a child task, which the timeout cancels (and with it the
/// stream's subscription).
func remoteChange(
    to doc: String, in changes: AsyncStream<ChangeEvent>, within timeout: Duration
) async -> ChangeEvent? {
    await withTaskGroup(of: ChangeEvent?.self) { group in
        group.addTask {
            for await event in changes where event.remote && event.doc == doc {
                return event
            }
            return nil
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

func demo(relay: LocalRelay, phone: Store, laptop: Store) async throws {
    // 1. Offline: no client runs yet, and the write is durable at once.
    let todo = try phone.insert(Todo(title: "Buy milk", done: false), into: "todos")
    let waiting = try phone.pendingDocuments()
    step("phone, offline: created \(todo.id); pending: \(waiting)")

    // 2. Both devices connect; the laptop hears the phone's todo arrive. The stream subscribes
    // now, so nothing that arrives from here on is missed.
    let arriving = try laptop.changes(in: "todos")
    let phoneToken = try relay.token(device: phone.deviceId)
    let phoneSync = try SyncClient.start(
        phone, relayURL: relay.url, collections: ["todos"], tokens: { phoneToken })
    let laptopToken = try relay.token(device: laptop.deviceId)
    let laptopSync = try SyncClient.start(
        laptop, relayURL: relay.url, collections: ["todos"], tokens: { laptopToken })
    // Waiting suspends this task; no thread blocks on the network.
    try await phoneSync.waitSynced(timeout: .seconds(30))
    try await laptopSync.waitSynced(timeout: .seconds(30))
    guard await remoteChange(to: todo.id, in: arriving, within: .seconds(30)) != nil else {
        throw ExampleError("the laptop never heard the todo")
    }
    let received = try laptop.document(todo.id).decode(Todo.self)
    step("laptop, online: received \"\(received.title)\", done: \(received.done)")

    // 3. The laptop goes offline and edits; the edit waits in its store.
    laptopSync.pause()
    try laptop.document(todo.id).put(.bool(value: true), at: "/done")
    let edited = try laptop.pendingDocuments()
    step("laptop, offline: marked done; pending: \(edited)")

    // 4. It reconnects: the pending edit goes out, and the phone receives it.
    let back = try phone.changes(in: "todos")
    laptopSync.resume()
    try await laptopSync.waitSynced(timeout: .seconds(30))
    guard await remoteChange(to: todo.id, in: back, within: .seconds(30)) != nil else {
        throw ExampleError("the phone never heard the edit")
    }
    let seen = try todo.decode(Todo.self)
    guard seen.done else {
        throw ExampleError("the phone sees done = \(seen.done)")
    }
    let converged = try phone.getJSON(todo.id)
    step("laptop reconnected; phone now has \(converged)")
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
    let phone = try Store.open(dir.appendingPathComponent("phone.db").path)
    let laptop = try Store.open(dir.appendingPathComponent("laptop.db").path)
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
} catch let error as SyncError {
    fail("syncline error: \(error)", status: 1)
} catch {
    fail("failed: \(error)", status: 1)
}
exit(0)
