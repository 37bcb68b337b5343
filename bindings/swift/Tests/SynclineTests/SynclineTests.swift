// XCTest tests of the Swift bindings against a real syncline-relay process: the Kotlin (JUnit)
// and Python (pytest) suites run the same tests. `cargo xtask test swift` runs them with
// SYNCLINE_RELAY_BIN (the relay binary) and SYNCLINE_LIB_DIR (the native library) set.

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

private typealias V = FfiValue

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
/// times. Waiting is synchronous, so it is called from synchronous helpers only.
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

/// A token provider that always returns the same token.
final class Tokens: FfiTokenProvider {
    let value: String

    init(_ value: String) {
        self.value = value
    }

    func token() -> String {
        value
    }
}

/// A token provider that answers each call (numbered from 1) with `answer`, which may throw.
final class ThrowingTokens: FfiTokenProvider, @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private let answer: (Int) throws -> String

    init(_ answer: @escaping (Int) throws -> String) {
        self.answer = answer
    }

    var calls: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }

    func token() throws -> String {
        lock.lock()
        count += 1
        let call = count
        lock.unlock()
        return try answer(call)
    }
}

/// Records every change event; `remote` opens at the first one from another device.
final class Changes: FfiChangeListener, @unchecked Sendable {
    let remote = Latch()
    let events = Collected<FfiChangeEvent>()

    func onChange(event: FfiChangeEvent) {
        events.append(event)
        if event.remote {
            remote.countDown()
        }
    }
}

/// Records every sync error raised or cleared.
final class SyncErrors: FfiSyncErrorListener, @unchecked Sendable {
    let events = Collected<FfiSyncErrorEvent>()

    func onSyncError(event: FfiSyncErrorEvent) {
        events.append(event)
    }
}

/// Records every ephemeral message.
final class Presence: FfiEphemeralListener, @unchecked Sendable {
    let messages = Collected<FfiEphemeral>()

    func onEphemeral(message: FfiEphemeral) {
        messages.append(message)
    }
}

/// Records every conflict heard.
final class Conflicts: FfiConflictListener, @unchecked Sendable {
    let conflicts = Collected<FfiConflict>()

    func onConflict(conflict: FfiConflict) {
        conflicts.append(conflict)
    }
}

/// Keeps the longest string (ties: the greatest): a function of the conflict alone, so every
/// device resolves the same way.
final class Longest: FfiConflictResolver, @unchecked Sendable {
    func resolve(conflict: FfiConflict) -> FfiValue {
        var best: String?
        for value in conflict.values {
            if case let .str(text) = value.value,
                best.map({ (text.count, text) > ($0.count, $0) }) ?? true
            {
                best = text
            }
        }
        return .str(value: best ?? "")
    }
}

/// Records every status.
final class Statuses: FfiStatusListener, @unchecked Sendable {
    let seen = Collected<FfiStatus>()

    func onStatus(status: FfiStatus) {
        seen.append(status)
    }
}

/// A token provider in which the host blocks (say, a refresh over its own network stack) until
/// the test releases it.
final class BlockingTokens: FfiTokenProvider, @unchecked Sendable {
    let entered = Latch()
    let release = Latch()
    let neverReleased = Latch()
    private let value: String

    init(_ value: String) {
        self.value = value
    }

    func token() -> String {
        entered.countDown()
        if !release.wait(seconds: 60) {
            neverReleased.countDown()
        }
        return value
    }
}

/// One host executor: the release of the token provider is scheduled on this actor while the
/// actor awaits the sync, so it can only run if awaiting `waitSynced` suspends instead of
/// blocking (Kotlin's test does the same on a single-threaded `runBlocking`, Python's on one
/// event loop).
actor OneHost {
    func waitSynced(
        _ client: FfiSyncClient, releasing latch: Latch, afterMs delay: UInt64
    ) async throws -> FfiSyncStats {
        let release = Task {
            try? await Task.sleep(nanoseconds: delay * 1_000_000)
            await self.countDown(latch)
        }
        defer { release.cancel() }
        return try await client.waitSynced(timeoutMs: 20_000)
    }

    private func countDown(_ latch: Latch) {
        latch.countDown()
    }
}

/// The variant of an `FfiError`, to compare in assertions.
func kind(of error: Error) -> String {
    guard let error = error as? FfiError else {
        return "not an FfiError: \(error)"
    }
    switch error {
    case .NotFound: return "NotFound"
    case .Evicted: return "Evicted"
    case .InvalidInput: return "InvalidInput"
    case .Storage: return "Storage"
    case .Unauthorized: return "Unauthorized"
    case .Unreachable: return "Unreachable"
    case .Timeout: return "Timeout"
    case .Sync: return "Sync"
    case .RateLimited: return "RateLimited"
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

final class SynclineTests: XCTestCase {
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
    private func startRelay() throws -> Relay {
        let started = try Relay()
        relay = started
        return started
    }

    private func path(_ name: String) -> String {
        dir.appendingPathComponent("\(name).db").path
    }

    private func openStore(_ name: String) throws -> FfiStore {
        try FfiStore.open(path: path(name))
    }

    /// Connects `store`, waits until it is synced, and disconnects.
    private func sync(_ store: FfiStore, through relay: Relay) async throws {
        let tokens = try Tokens(relay.token(device: store.deviceId()))
        let client = try FfiSyncClient.start(
            store: store, relayUrl: relay.url, collections: ["todos"], tokens: tokens)
        _ = try await client.waitSynced(timeoutMs: 20_000)
        client.stop()
    }

    func testOfflineWritesAreDurableAndPending() throws {
        let store = try openStore("phone")
        let doc = try store.createJson(
            collection: "todos", json: #"{"title":"Buy milk","done":false}"#)
        try store.putJson(docId: doc, path: "done", json: "true")
        XCTAssertEqual(try store.getJson(docId: doc), #"{"done":true,"title":"Buy milk"}"#)
        XCTAssertEqual(try store.list(collection: "todos"), [doc])
        XCTAssertEqual(try store.pendingDocuments(), [doc])
    }

    func testTwoDevicesSyncAndAListenerHearsTheRemoteChange() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.createJson(collection: "todos", json: #"{"title":"Walk the dog"}"#)
        let changes = Changes()
        let subscription = try laptop.watchCollection(collection: "todos", listener: changes)
        let statuses = Statuses()
        let phoneClient = try FfiSyncClient.start(
            store: phone, relayUrl: relay.url, collections: ["todos"],
            tokens: Tokens(relay.token(device: phone.deviceId())))
        let statusSubscription = phoneClient.watchStatus(listener: statuses)
        let laptopClient = try FfiSyncClient.start(
            store: laptop, relayUrl: relay.url, collections: ["todos"],
            tokens: Tokens(relay.token(device: laptop.deviceId())))
        _ = try await phoneClient.waitSynced(timeoutMs: 20_000)
        _ = try await laptopClient.waitSynced(timeoutMs: 20_000)
        XCTAssertTrue(changes.remote.wait(seconds: 20), "\(changes.events.all)")
        XCTAssertEqual(try laptop.getJson(docId: doc), #"{"title":"Walk the dog"}"#)
        // The remote event names the document and carries the patch that set the title.
        let remote = try XCTUnwrap(changes.events.all.first { $0.remote })
        XCTAssertEqual(remote.doc, doc)
        XCTAssertTrue(
            remote.patches.contains { patch in
                if case let .putMap(key, value, _) = patch.action {
                    return key == "title" && value == V.str(value: "Walk the dog")
                }
                return false
            },
            "\(remote.patches)")
        XCTAssertEqual(try phone.pendingDocuments(), [])
        XCTAssertTrue(
            statuses.seen.all.contains { status in
                if case .synced = status {
                    return true
                }
                return false
            },
            "\(statuses.seen.all)")
        XCTAssertEqual(phoneClient.subscriptionCount(), 1)
        XCTAssertEqual(laptop.subscriptionCount(), 1)
        statusSubscription.cancel()
        subscription.cancel()
        // Cancelled, the listeners are gone from the SDK.
        XCTAssertEqual(phoneClient.subscriptionCount(), 0)
        XCTAssertEqual(laptop.subscriptionCount(), 0)
        phoneClient.stop()
        laptopClient.stop()
    }

    func testARefusedTokenIsATypedError() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let client = try FfiSyncClient.start(
            store: store, relayUrl: relay.url, collections: ["todos"],
            tokens: Tokens("not-a-jwt"))
        do {
            _ = try await client.waitSynced(timeoutMs: 20_000)
            XCTFail("synced with a token the relay cannot accept")
        } catch {
            XCTAssertEqual(kind(of: error), "Unauthorized", "\(error)")
        }
        guard case .unauthorized = client.lastDisconnect() else {
            XCTFail("last disconnect: \(String(describing: client.lastDisconnect()))")
            return
        }
        client.stop()
    }

    func testAProviderThatThrowsSignedOutIsUnauthorized() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let client = try FfiSyncClient.start(
            store: store, relayUrl: relay.url, collections: ["todos"],
            tokens: ThrowingTokens { _ in throw FfiTokenError.SignedOut(reason: "the user signed out") })
        do {
            _ = try await client.waitSynced(timeoutMs: 20_000)
            XCTFail("synced without a token")
        } catch {
            XCTAssertEqual(kind(of: error), "Unauthorized", "\(error)")
            XCTAssertTrue("\(error)".contains("the user signed out"), "\(error)")
        }
        client.stop()
    }

    func testAProviderThatThrowsAnythingElseIsRetriedUntilItAnswers() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let doc = try store.createJson(collection: "todos", json: #"{"title":"Later"}"#)
        let token = try relay.token(device: store.deviceId())
        let provider = ThrowingTokens { call in
            switch call {
            case 1: throw FfiTokenError.Unavailable(reason: "the auth service is down")
            case 2: throw HarnessError("a bug in the host's provider")
            default: return token
            }
        }
        let client = try FfiSyncClient.start(
            store: store, relayUrl: relay.url, collections: ["todos"], tokens: provider)
        // A failure ends this wait as Unreachable (no token now, with the provider's reason),
        // not as a crash (which of the two failures it meets depends on the retry's timing)...
        do {
            _ = try await client.waitSynced(timeoutMs: 20_000)
            XCTFail("synced without a token")
        } catch {
            XCTAssertEqual(kind(of: error), "Unreachable", "\(error)")
            let text = "\(error)"
            XCTAssertTrue(
                text.contains("the auth service is down")
                    || text.contains("a bug in the host's provider"), text)
        }
        // ...and the client keeps retrying with backoff until the provider answers (a wait fails
        // fast while the last attempt's error stands, so wait again, up to 60 s).
        let deadline = Date().addingTimeInterval(60)
        while true {
            do {
                _ = try await client.waitSynced(timeoutMs: 20_000)
                break
            } catch {
                XCTAssertEqual(kind(of: error), "Unreachable", "\(error)")
                XCTAssertLessThan(Date(), deadline, "never retried")
                if Date() >= deadline { break }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
        }
        XCTAssertGreaterThanOrEqual(provider.calls, 3)
        XCTAssertEqual(try store.pendingDocuments(), [])
        XCTAssertTrue(try store.list(collection: "todos").contains(doc))
        client.stop()
    }

    func testOnDemandDeferredFetchOpenAndProgressCrossTheBinding() async throws {
        let relay = try startRelay()
        let camera = try openStore("camera")
        let phone = try openStore("phone")
        var docs: [String] = []
        for i in 0..<3 {
            docs.append(try camera.createJson(collection: "todos", json: #"{"title":"photo \#(i)"}"#))
        }
        try await sync(camera, through: relay)
        let statuses = Statuses()
        let options = FfiSyncOptions(
            relayUrl: relay.url,
            collections: [FfiCollectionSync(collection: "todos", priority: .high, onDemand: true)],
            profile: FfiProfile(
                class: .phone, storageBudgetBytes: nil, downloadBytesPerS: 125_000,
                uploadBytesPerS: nil, metered: true, realtime: true, meteredMaxDocBytes: nil),
            syncIntervalMs: nil,
            deferMeteredUploads: true)
        let client = try FfiSyncClient.startWith(
            store: phone, options: options,
            tokens: Tokens(relay.token(device: phone.deviceId())))
        let watching = client.watchStatus(listener: statuses)
        _ = try await client.waitSynced(timeoutMs: 20_000)
        // Only the list: each document with its size, priority and why it waits.
        let deferred = try client.deferred()
        XCTAssertEqual(deferred.map { $0.docId }.sorted(), docs.sorted())
        XCTAssertTrue(
            deferred.allSatisfy { $0.reason == .onDemand && $0.priority == .high && $0.bytes > 0 })
        XCTAssertTrue(deferred.allSatisfy { $0.changedMs != nil })
        XCTAssertEqual(try phone.list(collection: "todos"), [])
        // Opening one fetches it; asking for another fetches it in the background.
        let opened = try await client.open(docId: docs[0], timeoutMs: 20_000)
        XCTAssertEqual(try opened.toJson(), #"{"title":"photo 0"}"#)
        try client.fetch(docIds: [docs[1]])
        let deadline = Date().addingTimeInterval(20)
        while try !phone.list(collection: "todos").contains(docs[1]) && Date() < deadline {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        XCTAssertTrue(try phone.list(collection: "todos").contains(docs[1]))
        XCTAssertEqual(try client.deferred().map { $0.docId }, [docs[2]])
        client.setNetwork(metered: false, downloadBytesPerS: nil, uploadBytesPerS: nil)
        XCTAssertEqual(client.deferredUploads(), [])
        XCTAssertThrowsError(try client.fetch(docIds: ["not an id"])) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput")
        }
        var lastSynced: UInt64?
        for status in statuses.seen.all {
            switch status {
            case let .synced(_, overBudgetBytes):
                lastSynced = overBudgetBytes
            case let .syncing(progress):
                XCTAssertEqual(progress.downloadByPriority.count, 4)
            default:
                break
            }
        }
        XCTAssertEqual(lastSynced, 0, "\(statuses.seen.all)")
        watching.cancel()
        client.stop()
    }

    /// Waits until `check` holds, at most 20 seconds.
    private func eventually(_ what: String, _ check: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(20)
        while try !check() {
            guard Date() < deadline else {
                throw HarnessError("timed out waiting: \(what)")
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    func testARefusedDocumentAStoreWideListenerAndTheHistoryOfSyncs() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let everything = Changes()
        let watching = phone.watchAll(listener: everything)
        let todo = try phone.createJson(collection: "todos", json: #"{"title":"allowed"}"#)
        let note = try phone.createJson(collection: "notes", json: #"{"text":"no write grant"}"#)
        // The store-wide listener heard both collections, each event naming this device.
        XCTAssertEqual(everything.events.all.map { $0.doc }.sorted(), [todo, note].sorted())
        XCTAssertTrue(
            everything.events.all.allSatisfy { $0.devices == [phone.deviceId()] && !$0.remote })

        let token = try relay.token(device: phone.deviceId(), read: "todos,notes", write: "todos")
        let client = try FfiSyncClient.start(
            store: phone, relayUrl: relay.url, collections: ["todos", "notes"],
            tokens: Tokens(token))
        let errors = SyncErrors()
        let errorSubscription = client.watchSyncErrors(listener: errors)
        try await eventually("the note is refused") { !client.syncErrors().isEmpty }
        let refusals = client.syncErrors()
        XCTAssertEqual(refusals.count, 1)
        let refused = try XCTUnwrap(refusals.first)
        XCTAssertEqual(refused.doc, note)
        guard case .notPermitted = refused.kind else {
            return XCTFail("refused as \(refused.kind)")
        }
        XCTAssertTrue(refused.message.contains("no write grant"), refused.message)
        XCTAssertNil(refused.retryAtMs)
        // The rest went on: the todo is acknowledged, the note stays pending.
        try await eventually("the todo is acknowledged") { try phone.pendingDocuments() == [note] }
        try await eventually("the listener heard it") { !errors.events.all.isEmpty }
        guard case let .raised(error) = errors.events.all.first else {
            return XCTFail("\(errors.events.all)")
        }
        XCTAssertEqual(error.doc, note)
        XCTAssertEqual(error.message, refused.message)
        client.stop()

        let history = try phone.syncHistory(limit: 10)
        XCTAssertEqual(history.count, 1)
        let record = try XCTUnwrap(history.first)
        guard case .stopped = record.end else {
            return XCTFail("ended as \(record.end)")
        }
        XCTAssertEqual(record.relay, relay.url)
        XCTAssertFalse((record.session ?? "").isEmpty)
        XCTAssertEqual(record.refusedCount, 1)
        XCTAssertEqual(record.refused, [note])
        XCTAssertEqual(record.docsSent, 2)
        XCTAssertTrue(record.bytesSent > 0 && record.roundTrips >= 1)
        XCTAssertTrue(record.startedAtMs <= record.endedAtMs)
        errorSubscription.cancel()
        watching.cancel()
    }

    func testPresenceReachesTheOtherDeviceWithItsSender() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.createJson(collection: "todos", json: #"{"title":"shared"}"#)
        let phoneClient = try FfiSyncClient.start(
            store: phone, relayUrl: relay.url, collections: ["todos"],
            tokens: Tokens(relay.token(device: phone.deviceId())))
        let laptopClient = try FfiSyncClient.start(
            store: laptop, relayUrl: relay.url, collections: ["todos"],
            tokens: Tokens(relay.token(device: laptop.deviceId())))
        _ = try await phoneClient.waitSynced(timeoutMs: 20_000)
        _ = try await laptopClient.waitSynced(timeoutMs: 20_000)
        let heard = Presence()
        let watching = try laptopClient.watchEphemeral(docId: doc, listener: heard)
        try phoneClient.sendEphemeral(docId: doc, payload: Data("cursor at 3".utf8))
        try await eventually("the laptop hears the phone") { !heard.messages.all.isEmpty }
        let message = try XCTUnwrap(heard.messages.all.first)
        XCTAssertEqual(heard.messages.all.count, 1)
        XCTAssertEqual(message.doc, doc)
        XCTAssertEqual(message.sender, phone.deviceId())
        XCTAssertEqual(message.payload, Data("cursor at 3".utf8))
        XCTAssertThrowsError(
            try phoneClient.sendEphemeral(docId: doc, payload: Data(count: 4097))
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput")
        }
        XCTAssertThrowsError(
            try (0..<100).forEach { _ in
                try phoneClient.sendEphemeral(docId: doc, payload: Data("typing".utf8))
            }
        ) { error in
            XCTAssertEqual(kind(of: error), "RateLimited")
        }
        watching.cancel()
        phoneClient.stop()
        laptopClient.stop()
    }

    func testAConflictIsInspectedAndResolved() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.createJson(collection: "todos", json: #"{"title":"Buy milk"}"#)
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        let heard = Conflicts()
        let watching = laptop.watchConflicts(listener: heard)
        try phone.putJson(docId: doc, path: "title", json: #""Buy oat milk""#)
        try laptop.putJson(docId: doc, path: "title", json: #""Buy almond milk""#)
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        XCTAssertEqual(
            try laptop.conflictsJson(docId: doc, path: "title").sorted(),
            [#""Buy almond milk""#, #""Buy oat milk""#])
        // Listed, with who wrote each value, and heard by the listener.
        XCTAssertEqual(try laptop.conflictedDocuments(), [doc])
        let conflicts = try laptop.document(docId: doc).allConflicts()
        XCTAssertEqual(conflicts.count, 1)
        let conflict = try XCTUnwrap(conflicts.first)
        XCTAssertEqual(conflict.doc, doc)
        XCTAssertEqual(conflict.path, "/title")
        let written = conflict.values.map { "\($0.device ?? "?")=\($0.value)" }.sorted()
        XCTAssertEqual(
            written,
            [
                "\(phone.deviceId())=\(V.str(value: "Buy oat milk"))",
                "\(laptop.deviceId())=\(V.str(value: "Buy almond milk"))",
            ].sorted())
        XCTAssertEqual(heard.conflicts.all.map { $0.path }, ["/title"])
        try laptop.resolveJson(docId: doc, path: "title", json: #""Buy milk (any)""#)
        XCTAssertEqual(try laptop.conflictsJson(docId: doc, path: "title"), [#""Buy milk (any)""#])
        XCTAssertEqual(try laptop.conflictedDocuments(), [])
        watching.cancel()

        // The app's own strategy resolves the next conflict as soon as the merge leaves it.
        try laptop.setConflictResolver(collection: "todos", resolver: Longest())
        try await sync(laptop, through: relay)
        try await sync(phone, through: relay)
        try phone.putJson(docId: doc, path: "note", json: #""oat""#)
        try laptop.putJson(docId: doc, path: "note", json: #""almond""#)
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        XCTAssertEqual(try laptop.conflictedDocuments(), [])
        XCTAssertTrue(try laptop.getJson(docId: doc).contains(#""note":"almond""#))
        XCTAssertTrue(
            try laptop.document(docId: doc).history().contains {
                $0.message == "resolve conflict (custom)"
            })
        XCTAssertThrowsError(
            try laptop.setConflictStrategy(
                collection: "todos", strategy: .devicePriority(devices: ["nope"]))
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput")
        }
        try laptop.setConflictStrategy(
            collection: "todos", strategy: .devicePriority(devices: [phone.deviceId()]))
    }

    func testAChosenIdWithOptionsInfoAndPendingChanges() throws {
        let store = try FfiStore.openWith(
            path: path("tuned"),
            options: FfiStoreOptions(cacheBytes: 1 << 20, durability: .normal))
        let doc = try store.createAt(
            docId: "todos/groceries", initial: V.object(entries: ["title": V.str(value: "Milk")]),
            priority: .high)
        try doc.put(path: "/done", value: V.bool(value: true))
        let info = try store.info(docId: "todos/groceries")
        XCTAssertEqual(info.id, "todos/groceries")
        XCTAssertEqual(info.priority, .high)
        XCTAssertFalse(info.deleted)
        XCTAssertNotNil(info.localChangeAtMs)
        XCTAssertNil(info.remoteChangeAtMs)
        let pending = try store.pendingChanges()
        XCTAssertEqual(Set(pending.map { $0.doc }), ["todos/groceries"])
        XCTAssertEqual(pending.count, try doc.history().count)
        XCTAssertEqual(Set(pending.map { $0.change.device }), [store.deviceId()])
        XCTAssertThrowsError(
            try store.createAt(docId: "todos/groceries", initial: V.object(entries: [:]), priority: .normal)
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertThrowsError(try store.info(docId: "todos/nothing")) { error in
            XCTAssertEqual(kind(of: error), "NotFound", "\(error)")
        }
    }

    func testErrorsArriveAsTypedErrors() throws {
        let store = try openStore("phone")
        XCTAssertThrowsError(try store.getJson(docId: "todos/nothing")) { error in
            XCTAssertEqual(kind(of: error), "NotFound", "\(error)")
        }
        XCTAssertThrowsError(try store.list(collection: "Not A Collection")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
    }

    func testTypedValuesRoundTripWithHistoryAndTimeTravel() throws {
        let store = try openStore("phone")
        let doc = try store.create(
            collection: "todos", initial: V.object(entries: ["title": V.str(value: "Draft")]))
        let first = try doc.heads()
        try doc.apply(
            ops: [
                .put(path: "/notes", value: V.text(value: "hello")),
                .put(path: "/tags", value: V.array(items: [V.str(value: "home")])),
                .put(path: "/votes", value: V.counter(value: 0)),
                .put(path: "/blob", value: V.bytes(value: Data([0x00, 0xff]))),
                .put(path: "/ratio", value: V.float(value: 0.5)),
                .put(path: "/gone", value: V.null),
            ],
            message: "fill in")
        try doc.spliceText(path: "/notes", index: 5, delete: 0, insert: " world")
        try doc.increment(path: "/votes", by: 3)
        try doc.apply(ops: [.push(list: "/tags", value: V.str(value: "errands"))], message: nil)
        XCTAssertEqual(try doc.get(path: "/notes"), V.text(value: "hello world"))
        XCTAssertEqual(try doc.get(path: "/votes"), V.counter(value: 3))
        XCTAssertEqual(
            try doc.get(path: "/tags"),
            V.array(items: [V.str(value: "home"), V.str(value: "errands")]))
        XCTAssertEqual(try doc.get(path: "/blob"), V.bytes(value: Data([0x00, 0xff])))
        XCTAssertEqual(try doc.get(path: "/ratio"), V.float(value: 0.5))
        XCTAssertEqual(try doc.get(path: "/gone"), V.null)
        XCTAssertNil(try doc.get(path: "/missing"))
        let json = try JSONSerialization.jsonObject(with: Data(doc.toJson().utf8)) as? [String: Any]
        XCTAssertEqual(json?["notes"] as? String, "hello world")
        let history = try doc.history()
        XCTAssertEqual(history.map { $0.message }, ["create", "fill in", nil, nil, nil])
        XCTAssertEqual(history.dropFirst().first?.device, store.deviceId())
        let then = try doc.viewAt(heads: first)
        XCTAssertEqual(try then.get(path: "/title"), V.str(value: "Draft"))
        XCTAssertNil(try then.get(path: "/notes"))
        XCTAssertFalse(try doc.diff(from: first, to: doc.heads()).isEmpty)
        XCTAssertThrowsError(try doc.get(path: "/title/deeper")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        // A failed change applies none of its operations.
        XCTAssertThrowsError(
            try doc.apply(ops: [.increment(path: "/title", by: 1)], message: nil)
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertEqual(try doc.get(path: "/title"), V.str(value: "Draft"))
    }

    func testOpeningAndDroppingManyStoresGrowsNeitherFilesNorMemory() throws {
        func cycle(_ rounds: Int) throws {
            for i in 0..<rounds {
                // The store's last reference goes at the end of the iteration: the Rust store
                // closes there.
                let store = try FfiStore.open(path: path("churn-\(i % 8)"))
                _ = try store.createJson(collection: "todos", json: #"{"n":\#(i)}"#)
            }
        }
        try cycle(50)  // warm up: one-time allocations of the runtime, SQLite and the allocator
        let filesBefore = try XCTUnwrap(openFileCount(), "cannot list this process's descriptors")
        let memoryBefore = residentKib()
        try cycle(400)
        // Each store holds four descriptors (database, WAL, shared memory, lock): 400 leaked
        // stores would hold 1,600. The slack covers descriptors of the test runner's own.
        let filesAfter = try XCTUnwrap(openFileCount())
        XCTAssertLessThanOrEqual(
            filesAfter, filesBefore + 8, "file descriptors grew from \(filesBefore) to \(filesAfter)")
        // A store that stayed open would hold megabytes (SQLite's caches, the document cache):
        // 400 of them would be hundreds of MiB.
        if let before = memoryBefore, let after = residentKib() {
            XCTAssertLessThan(after - before, 32 * 1024, "resident memory grew by \(after - before) KiB")
        } else {
            print("memory: not measured here (neither /proc/self/status nor Mach task info)")
        }
        // Dropping released each store's lock: the file opens again at once, with every write
        // (7 in the warm-up and 50 after it went to churn-0).
        XCTAssertEqual(try FfiStore.open(path: path("churn-0")).list(collection: "todos").count, 57)
    }

    func testAHostBlockingInsideTheTokenProviderBlocksNothingElse() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let doc = try store.createJson(collection: "todos", json: #"{"title":"Blocked"}"#)
        let provider = try BlockingTokens(relay.token(device: store.deviceId()))
        let client = try FfiSyncClient.start(
            store: store, relayUrl: relay.url, collections: ["todos"], tokens: provider)
        XCTAssertTrue(provider.entered.wait(seconds: 20), "the token provider was never called")
        // While the provider blocks, the host's calls return: none of them waits on it.
        if case .synced = client.status() {
            XCTFail("synced while the token provider blocks")
        }
        try store.putJson(docId: doc, path: "done", json: "true")
        client.pause()
        client.resume()
        XCTAssertFalse(provider.release.isOpen)
        _ = try await OneHost().waitSynced(client, releasing: provider.release, afterMs: 200)
        XCTAssertFalse(provider.neverReleased.isOpen)
        XCTAssertEqual(try store.pendingDocuments(), [])
        client.stop()
    }

    func testOneStoreIsSharedByManyHostThreads() throws {
        let store = try openStore("phone")
        let shared = try store.create(
            collection: "todos", initial: V.object(entries: ["votes": V.counter(value: 0)]))
        let failures = Collected<String>()
        let done = Latch(count: 4)
        for n in 0..<4 {
            Thread {
                do {
                    for i in 0..<25 {
                        _ = try store.createJson(
                            collection: "todos", json: #"{"thread":\#(n),"i":\#(i)}"#)
                        try shared.increment(path: "/votes", by: 1)
                    }
                } catch {
                    failures.append("thread \(n): \(error)")
                }
                done.countDown()
            }.start()
        }
        XCTAssertTrue(done.wait(seconds: 60), "the threads did not finish")
        XCTAssertEqual(failures.all, [])
        XCTAssertEqual(try store.list(collection: "todos").count, 1 + 4 * 25)
        XCTAssertEqual(try shared.get(path: "/votes"), V.counter(value: 100))
    }
}
