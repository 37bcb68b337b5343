// The test harness: a real syncline-relay process per test that needs one, temporary stores,
// and small helpers (a latch, a recorder of streams, polling with a deadline). `cargo xtask
// test swift` runs the tests with SYNCLINE_RELAY_BIN (the relay binary) and SYNCLINE_LIB_DIR
// (the native library) set.

import Foundation
import XCTest

import Syncline

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure of the test harness itself (the relay would not start, a token was not minted).
struct HarnessError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// A fresh temporary directory.
func makeTemporaryDirectory(_ prefix: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("\(prefix)-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A syncline-relay on 127.0.0.1 with a temporary data directory; `stop` kills it.
final class Relay {
    let url: String
    private let bin: String
    private let dir: URL
    private let process: Process

    init() throws {
        guard let bin = ProcessInfo.processInfo.environment["SYNCLINE_RELAY_BIN"], !bin.isEmpty
        else {
            throw HarnessError(
                "SYNCLINE_RELAY_BIN is not set: point it at a built syncline-relay "
                    + "(cargo xtask test swift does)")
        }
        let dir = try makeTemporaryDirectory("relay")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path]
        var environment = ProcessInfo.processInfo.environment
        environment["RUST_LOG"] = "error,automerge=off"
        process.environment = environment
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The first line says where it listens: "syncline-relay listening on 127.0.0.1:PORT".
        let line = firstLine(of: stdout.fileHandleForReading)
        guard line.hasPrefix("syncline-relay listening on "),
            let address = line.split(separator: " ").last
        else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: dir)
            throw HarnessError("the relay did not start: \(line.debugDescription)")
        }
        self.url = "ws://\(address)"
        self.bin = bin
        self.dir = dir
        self.process = process
    }

    /// A token for `device` that may read `read` and write `write` (comma-separated
    /// collections; `todos` by default), minted by the same binary from the development key it
    /// created in the data directory.
    func token(device: String, read: String = "todos", write: String = "todos") throws -> String {
        let minter = Process()
        minter.executableURL = URL(fileURLWithPath: bin)
        minter.arguments = [
            "token", "--data-dir", dir.path, "--user", "alice", "--device", device,
            "--read", read, "--write", write, "--ttl", "600",
        ]
        let stdout = Pipe()
        minter.standardOutput = stdout
        try minter.run()
        // Read to the end before waiting, so a full pipe can never stall the child.
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        minter.waitUntilExit()
        guard minter.terminationStatus == 0 else {
            throw HarnessError("minting a token failed (exit status \(minter.terminationStatus))")
        }
        return String(decoding: output, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Kills the relay (SIGKILL: no drain to wait for) and removes its data.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// The first line `handle` yields (without its newline), or what came before end of file.
private func firstLine(of handle: FileHandle) -> String {
    var bytes = Data()
    while !bytes.contains(UInt8(ascii: "\n")) {
        let chunk = handle.availableData
        if chunk.isEmpty {
            break  // end of file: the process exited
        }
        bytes.append(chunk)
    }
    let text = String(decoding: bytes, as: UTF8.self)
    return text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        .first.map(String.init) ?? ""
}

/// A count-down latch (Java's CountDownLatch): `wait` returns once `countDown` ran `count`
/// times. Waiting is synchronous, so it is called from synchronous code only (a token closure,
/// a thread).
final class Latch: @unchecked Sendable {
    private let condition = NSCondition()
    private var remaining: Int

    init(count: Int = 1) {
        remaining = count
    }

    func countDown() {
        condition.lock()
        if remaining > 0 {
            remaining -= 1
        }
        if remaining == 0 {
            condition.broadcast()
        }
        condition.unlock()
    }

    var isOpen: Bool {
        condition.lock()
        defer { condition.unlock() }
        return remaining == 0
    }

    /// True if the latch opened within `seconds`.
    func wait(seconds: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while remaining > 0 {
            if !condition.wait(until: deadline) {
                break
            }
        }
        return remaining == 0
    }
}

/// Values appended from many threads.
final class Collected<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []

    func append(_ item: T) {
        lock.lock()
        items.append(item)
        lock.unlock()
    }

    var all: [T] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}

/// Numbers calls (from 1), from many threads.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    /// Counts one more call and returns its number.
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        count += 1
        return count
    }

    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}

/// Records what a stream yields, on a task of its own; `stop` cancels that task, which ends
/// the stream and so its subscription.
final class Recorder<Element>: @unchecked Sendable {
    private let items: Collected<Element>
    private let task: Task<Void, Never>

    init(_ stream: AsyncStream<Element>) {
        let items = Collected<Element>()
        self.items = items
        task = Task {
            for await item in stream {
                items.append(item)
            }
        }
    }

    /// What the stream yielded so far.
    var all: [Element] {
        items.all
    }

    func stop() {
        task.cancel()
    }
}

/// Waits until `check` holds, polling every 20 ms, at most `seconds`.
func eventually(
    _ what: String, seconds: Double = 20, _ check: () throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try !check() {
        guard Date() < deadline else {
            throw HarnessError("timed out waiting: \(what)")
        }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
}

/// The case of a `SyncError`, to compare in assertions.
func kind(of error: Error) -> String {
    guard let error = error as? SyncError else {
        return "not a SyncError: \(error)"
    }
    switch error {
    case .notFound: return "NotFound"
    case .evicted: return "Evicted"
    case .invalidInput: return "InvalidInput"
    case .storage: return "Storage"
    case .unauthorized: return "Unauthorized"
    case .unreachable: return "Unreachable"
    case .timeout: return "Timeout"
    case .sync: return "Sync"
    case .rateLimited: return "RateLimited"
    }
}

/// The file descriptors this process holds, or nil where they cannot be listed.
func openFileCount() -> Int? {
    #if os(Linux)
        let directory = "/proc/self/fd"
    #else
        let directory = "/dev/fd"
    #endif
    return try? FileManager.default.contentsOfDirectory(atPath: directory).count
}

/// This process's resident memory in KiB, or nil where it cannot be measured.
func residentKib() -> Int? {
    #if os(Linux)
        guard let status = FileHandle(forReadingAtPath: "/proc/self/status") else {
            return nil
        }
        defer { status.closeFile() }
        let text = String(decoding: status.readDataToEndOfFile(), as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            // "VmRSS:     123456 kB"
            return line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                .dropFirst().first.flatMap { Int($0) }
        }
        return nil
    #elseif canImport(Darwin)
        var info = mach_task_basic_info()
        var count = mach_msg_type_number_t(
            MemoryLayout<mach_task_basic_info>.size / MemoryLayout<natural_t>.size)
        let result = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(MACH_TASK_BASIC_INFO), $0, &count)
            }
        }
        guard result == KERN_SUCCESS else {
            return nil
        }
        return Int(info.resident_size / 1024)
    #else
        return nil
    #endif
}

/// A test case with a temporary directory for its stores and, once `startRelay` ran, a relay;
/// both go in tearDown.
class RelayTestCase: XCTestCase {
    private var dir: URL!
    private var relay: Relay?

    override func setUpWithError() throws {
        dir = try makeTemporaryDirectory("stores")
    }

    override func tearDownWithError() throws {
        relay?.stop()
        relay = nil
        if let dir = dir {
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// Starts the relay this test uses; tearDown kills it.
    func startRelay() throws -> Relay {
        let started = try Relay()
        relay = started
        return started
    }

    /// The path of the store file `name` in this test's directory.
    func path(_ name: String) -> String {
        dir.appendingPathComponent("\(name).db").path
    }

    func openStore(_ name: String) throws -> Store {
        try Store.open(path(name))
    }

    /// Connects `store`, waits until it is synced, and disconnects.
    func sync(_ store: Store, through relay: Relay) async throws {
        let token = try relay.token(device: store.deviceId)
        let client = try SyncClient.start(
            store, relayURL: relay.url, collections: ["todos"], tokens: { token })
        try await client.waitSynced(timeout: .seconds(20))
        client.stop()
    }
}
