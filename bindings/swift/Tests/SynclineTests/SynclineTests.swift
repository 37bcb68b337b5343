// XCTest tests of the Swift bindings' native API against a real syncline-relay process: the
// Kotlin (JUnit) and Python (pytest) suites run the same scenarios. The harness (relay, stores,
// helpers) is in Harness.swift; streams, Codable and the README example have files of their own.

import Foundation
import XCTest

import Syncline

private typealias V = Value

final class SynclineTests: RelayTestCase {
    func testOfflineWritesAreDurableAndPending() throws {
        let store = try openStore("phone")
        let doc = try store.createJSON(#"{"title":"Buy milk","done":false}"#, in: "todos")
        try store.putJSON(doc, path: "done", json: "true")
        XCTAssertEqual(try store.getJSON(doc), #"{"done":true,"title":"Buy milk"}"#)
        XCTAssertEqual(try store.list(in: "todos"), [doc])
        XCTAssertEqual(try store.pendingDocuments(), [doc])
    }

    func testTwoDevicesSyncAndAStreamHearsTheRemoteChange() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.createJSON(#"{"title":"Walk the dog"}"#, in: "todos")
        let changes = Recorder(try laptop.changes(in: "todos"))
        let phoneToken = try relay.token(device: phone.deviceId)
        let phoneClient = try SyncClient.start(
            phone, relayURL: relay.url, collections: ["todos"], tokens: { phoneToken })
        let statuses = Recorder(phoneClient.statusUpdates)
        let laptopToken = try relay.token(device: laptop.deviceId)
        let laptopClient = try SyncClient.start(
            laptop, relayURL: relay.url, collections: ["todos"], tokens: { laptopToken })
        try await phoneClient.waitSynced(timeout: .seconds(20))
        try await laptopClient.waitSynced(timeout: .seconds(20))
        try await eventually("the laptop hears the remote change") {
            changes.all.contains { $0.remote }
        }
        XCTAssertEqual(try laptop.getJSON(doc), #"{"title":"Walk the dog"}"#)
        // The remote event names the document and carries the patch that set the title.
        let remote = try XCTUnwrap(changes.all.first { $0.remote })
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
        try await eventually("the status stream saw the phone synced") {
            statuses.all.contains { status in
                if case .synced = status {
                    return true
                }
                return false
            }
        }
        XCTAssertEqual(phoneClient.subscriptionCount, 1)
        XCTAssertEqual(laptop.subscriptionCount, 1)
        statuses.stop()
        changes.stop()
        // Ended, the streams' listeners are gone from the SDK.
        try await eventually("the status stream unsubscribed") {
            phoneClient.subscriptionCount == 0
        }
        try await eventually("the change stream unsubscribed") { laptop.subscriptionCount == 0 }
        phoneClient.stop()
        laptopClient.stop()
    }

    func testARefusedTokenIsATypedError() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let client = try SyncClient.start(
            store, relayURL: relay.url, collections: ["todos"], tokens: { "not-a-jwt" })
        do {
            try await client.waitSynced(timeout: .seconds(20))
            XCTFail("synced with a token the relay cannot accept")
        } catch {
            XCTAssertEqual(kind(of: error), "Unauthorized", "\(error)")
        }
        guard case .unauthorized = client.lastDisconnect else {
            XCTFail("last disconnect: \(String(describing: client.lastDisconnect))")
            return
        }
        client.stop()
    }

    func testATokenClosureThatThrowsSignedOutIsUnauthorized() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let client = try SyncClient.start(
            store, relayURL: relay.url, collections: ["todos"],
            tokens: { throw TokenError.signedOut(reason: "the user signed out") })
        do {
            try await client.waitSynced(timeout: .seconds(20))
            XCTFail("synced without a token")
        } catch {
            XCTAssertEqual(kind(of: error), "Unauthorized", "\(error)")
            XCTAssertTrue("\(error)".contains("the user signed out"), "\(error)")
        }
        client.stop()
    }

    func testATokenClosureThatThrowsAnythingElseIsRetriedUntilItAnswers() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let doc = try store.createJSON(#"{"title":"Later"}"#, in: "todos")
        let token = try relay.token(device: store.deviceId)
        let calls = Counter()
        let client = try SyncClient.start(store, relayURL: relay.url, collections: ["todos"]) {
            switch calls.next() {
            case 1: throw TokenError.unavailable(reason: "the auth service is down")
            case 2: throw HarnessError("a bug in the host's provider")
            default: return token
            }
        }
        // A failure ends this wait as Unreachable (no token now, with the closure's reason),
        // not as a crash (which of the two failures it meets depends on the retry's timing)...
        do {
            try await client.waitSynced(timeout: .seconds(20))
            XCTFail("synced without a token")
        } catch {
            XCTAssertEqual(kind(of: error), "Unreachable", "\(error)")
            let text = "\(error)"
            XCTAssertTrue(
                text.contains("the auth service is down")
                    || text.contains("a bug in the host's provider"), text)
        }
        // ...and the client keeps retrying with backoff until the closure answers (a wait fails
        // fast while the last attempt's error stands, so wait again, up to 60 s).
        let deadline = Date().addingTimeInterval(60)
        while true {
            do {
                try await client.waitSynced(timeout: .seconds(20))
                break
            } catch {
                XCTAssertEqual(kind(of: error), "Unreachable", "\(error)")
                XCTAssertLessThan(Date(), deadline, "never retried")
                if Date() >= deadline { break }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
        }
        XCTAssertGreaterThanOrEqual(calls.value, 3)
        XCTAssertEqual(try store.pendingDocuments(), [])
        XCTAssertTrue(try store.list(in: "todos").contains(doc))
        client.stop()
    }

    func testOnDemandDeferredFetchOpenAndProgressCrossTheBinding() async throws {
        let relay = try startRelay()
        let camera = try openStore("camera")
        let phone = try openStore("phone")
        var docs: [String] = []
        for i in 0..<3 {
            docs.append(try camera.createJSON(#"{"title":"photo \#(i)"}"#, in: "todos"))
        }
        try await sync(camera, through: relay)
        let token = try relay.token(device: phone.deviceId)
        // Options beyond the plain ones: the client starts through `startWith`.
        let client = try SyncClient.start(
            phone, relayURL: relay.url,
            subscriptions: [CollectionSync(collection: "todos", priority: .high, onDemand: true)],
            profile: Profile(class: .phone, downloadBytesPerS: 125_000, metered: true),
            syncInterval: .seconds(60),
            deferMeteredUploads: true,
            tokens: { token })
        let statuses = Recorder(client.statusUpdates)
        try await client.waitSynced(timeout: .seconds(20))
        // Only the list: each document with its size, priority and why it waits.
        let deferred = try client.deferred()
        XCTAssertEqual(deferred.map { $0.docId }.sorted(), docs.sorted())
        XCTAssertTrue(
            deferred.allSatisfy { $0.reason == .onDemand && $0.priority == .high && $0.bytes > 0 })
        XCTAssertTrue(deferred.allSatisfy { $0.changedMs != nil })
        XCTAssertEqual(try phone.list(in: "todos"), [])
        // Opening one fetches it; asking for another fetches it in the background.
        let opened = try await client.open(docs[0], timeout: .seconds(20))
        XCTAssertEqual(try opened.toJSON(), #"{"title":"photo 0"}"#)
        try client.fetch([docs[1]])
        try await eventually("the fetched document arrives") {
            try phone.list(in: "todos").contains(docs[1])
        }
        // Stored before the deferred list forgets it: the list follows a moment later.
        try await eventually("only the third stays deferred") {
            try client.deferred().map { $0.docId } == [docs[2]]
        }
        // The network changes on the live connection; nothing is held back on the way up.
        client.setNetwork(metered: false)
        client.setNetworkAvailable(true)
        client.setProfile(Profile(class: .phone))
        try client.setSubscriptions([
            CollectionSync(collection: "todos", priority: .high, onDemand: true)
        ])
        client.syncNow()
        XCTAssertGreaterThanOrEqual(client.stats.roundTrips, 0)
        XCTAssertEqual(client.deferredUploads, [])
        XCTAssertThrowsError(try client.fetch(["not an id"])) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput")
        }
        try await eventually("the status stream saw a synced status") {
            statuses.all.contains { status in
                if case .synced = status {
                    return true
                }
                return false
            }
        }
        var lastSynced: UInt64?
        for status in statuses.all {
            switch status {
            case let .synced(_, overBudgetBytes):
                lastSynced = overBudgetBytes
            case let .syncing(progress):
                XCTAssertEqual(progress.downloadByPriority.count, 4)
            default:
                break
            }
        }
        XCTAssertEqual(lastSynced, 0, "\(statuses.all)")
        statuses.stop()
        client.stop()
    }

    func testARefusedDocumentAStoreWideStreamAndTheHistoryOfSyncs() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let everything = Recorder(phone.changes())
        let todo = try phone.createJSON(#"{"title":"allowed"}"#, in: "todos")
        let note = try phone.createJSON(#"{"text":"no write grant"}"#, in: "notes")
        // The store-wide stream heard both collections, each event naming this device.
        try await eventually("the store-wide stream heard both") { everything.all.count >= 2 }
        XCTAssertEqual(everything.all.map { $0.doc }.sorted(), [todo, note].sorted())
        XCTAssertTrue(
            everything.all.allSatisfy { $0.devices == [phone.deviceId] && !$0.remote })

        let token = try relay.token(device: phone.deviceId, read: "todos,notes", write: "todos")
        let client = try SyncClient.start(
            phone, relayURL: relay.url, collections: ["todos", "notes"], tokens: { token })
        let errors = Recorder(client.syncErrorEvents())
        try await eventually("the note is refused") { !client.syncErrors.isEmpty }
        let refusals = client.syncErrors
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
        try await eventually("the stream heard it") { !errors.all.isEmpty }
        guard case let .raised(error) = errors.all.first else {
            return XCTFail("\(errors.all)")
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
        errors.stop()
        everything.stop()
    }

    func testPresenceReachesTheOtherDeviceWithItsSender() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.createJSON(#"{"title":"shared"}"#, in: "todos")
        let phoneToken = try relay.token(device: phone.deviceId)
        let phoneClient = try SyncClient.start(
            phone, relayURL: relay.url, collections: ["todos"], tokens: { phoneToken })
        // The whole options record, as an app that keeps one passes it.
        let laptopToken = try relay.token(device: laptop.deviceId)
        let laptopClient = try SyncClient.start(
            laptop,
            options: SyncOptions(
                relayUrl: relay.url,
                collections: [CollectionSync(collection: "todos", priority: .normal)],
                profile: Profile(class: .desktop)),
            tokens: { laptopToken })
        try await phoneClient.waitSynced(timeout: .seconds(20))
        try await laptopClient.waitSynced(timeout: .seconds(20))
        let heard = Recorder(try laptopClient.ephemeral(for: doc))
        try phoneClient.sendEphemeral(Data("cursor at 3".utf8), on: doc)
        try await eventually("the laptop hears the phone") { !heard.all.isEmpty }
        let message = try XCTUnwrap(heard.all.first)
        XCTAssertEqual(heard.all.count, 1)
        XCTAssertEqual(message.doc, doc)
        XCTAssertEqual(message.sender, phone.deviceId)
        XCTAssertEqual(message.payload, Data("cursor at 3".utf8))
        XCTAssertThrowsError(try phoneClient.sendEphemeral(Data(count: 4097), on: doc)) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput")
        }
        XCTAssertThrowsError(
            try (0..<100).forEach { _ in
                try phoneClient.sendEphemeral(Data("typing".utf8), on: doc)
            }
        ) { error in
            XCTAssertEqual(kind(of: error), "RateLimited")
        }
        heard.stop()
        phoneClient.stop()
        laptopClient.stop()
    }

    func testAConflictIsInspectedAndResolved() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.createJSON(#"{"title":"Buy milk"}"#, in: "todos")
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        let heard = Recorder(laptop.conflictEvents())
        try phone.putJSON(doc, path: "title", json: #""Buy oat milk""#)
        try laptop.putJSON(doc, path: "title", json: #""Buy almond milk""#)
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        XCTAssertEqual(
            try laptop.conflictsJSON(doc, path: "title").sorted(),
            [#""Buy almond milk""#, #""Buy oat milk""#])
        // Listed, with who wrote each value, and heard by the stream.
        XCTAssertEqual(try laptop.conflictedDocuments(), [doc])
        let conflicts = try laptop.document(doc).allConflicts()
        XCTAssertEqual(conflicts.count, 1)
        let conflict = try XCTUnwrap(conflicts.first)
        XCTAssertEqual(conflict.doc, doc)
        XCTAssertEqual(conflict.path, "/title")
        let written = conflict.values.map { "\($0.device ?? "?")=\($0.value)" }.sorted()
        XCTAssertEqual(
            written,
            [
                "\(phone.deviceId)=\(V.str(value: "Buy oat milk"))",
                "\(laptop.deviceId)=\(V.str(value: "Buy almond milk"))",
            ].sorted())
        try await eventually("the conflict stream heard it") {
            heard.all.map { $0.path } == ["/title"]
        }
        try laptop.resolveJSON(doc, path: "title", json: #""Buy milk (any)""#)
        XCTAssertEqual(try laptop.conflictsJSON(doc, path: "title"), [#""Buy milk (any)""#])
        XCTAssertEqual(try laptop.conflictedDocuments(), [])
        heard.stop()

        // The app's own strategy resolves the next conflict as soon as the merge leaves it:
        // the longest string (ties: the greatest), a function of the conflict alone, so every
        // device resolves the same way.
        try laptop.setConflictResolver(for: "todos") { conflict in
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
        try await sync(laptop, through: relay)
        try await sync(phone, through: relay)
        try phone.putJSON(doc, path: "note", json: #""oat""#)
        try laptop.putJSON(doc, path: "note", json: #""almond""#)
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        XCTAssertEqual(try laptop.conflictedDocuments(), [])
        XCTAssertTrue(try laptop.getJSON(doc).contains(#""note":"almond""#))
        XCTAssertTrue(
            try laptop.document(doc).history().contains {
                $0.message == "resolve conflict (custom)"
            })
        XCTAssertThrowsError(
            try laptop.setConflictStrategy(.devicePriority(devices: ["nope"]), for: "todos")
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput")
        }
        try laptop.setConflictStrategy(.devicePriority(devices: [phone.deviceId]), for: "todos")
        try laptop.setConflictStrategy(.lastWriterWins, for: "todos")
        try laptop.setConflictStrategy(nil, for: "todos")
    }

    func testAConflictOnOneDocumentIsResolvedThroughIt() async throws {
        let relay = try startRelay()
        let phone = try openStore("phone")
        let laptop = try openStore("laptop")
        let doc = try phone.create(
            V.object(entries: ["title": V.str(value: "Buy milk")]), in: "todos")
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        let document = try laptop.document(doc.id)
        let heard = Recorder(document.conflictEvents())
        try doc.put(V.str(value: "Buy oat milk"), at: "/title")
        try document.put(V.str(value: "Buy almond milk"), at: "/title")
        try await sync(phone, through: relay)
        try await sync(laptop, through: relay)
        try await eventually("the document's stream hears the conflict") { !heard.all.isEmpty }
        XCTAssertEqual(heard.all.first?.path, "/title")
        try document.resolve(V.str(value: "Buy milk (any)"), at: "/title")
        XCTAssertEqual(try document.conflicts(at: "/title"), [V.str(value: "Buy milk (any)")])
        XCTAssertEqual(try document.allConflicts(), [])
        heard.stop()
        try await eventually("the stream unsubscribes") { laptop.subscriptionCount == 0 }
    }

    func testADeviceGivenFallbackRelaysSyncsThroughOneThatAnswers() async throws {
        let relay = try startRelay()
        // The first relay refuses connections (it is gone, nothing listens there): the next
        // connection goes to the fallback, which the device then keeps.
        let gone = try Relay()
        let dead = gone.url
        gone.stop()
        let store = try openStore("failover")
        let doc = try store.createJSON(#"{"title":"through the fallback"}"#, in: "todos")
        let token = try relay.token(device: store.deviceId)
        let client = try SyncClient.start(
            store, relayURL: dead, collections: ["todos"], profile: Profile(class: .phone),
            fallbackURLs: [relay.url], tokens: { token })
        try await client.waitSynced(timeout: .seconds(20))
        XCTAssertEqual(try store.pendingDocuments(), [])
        client.stop()
        let other = try openStore("other")
        try await sync(other, through: relay)
        XCTAssertEqual(try other.getJSON(doc), #"{"title":"through the fallback"}"#)
    }

    func testAChosenIdWithOptionsInfoAndPendingChanges() throws {
        let store = try Store.open(
            path("tuned"), options: StoreOptions(cacheBytes: 1 << 20, durability: .normal))
        let doc = try store.create(
            V.object(entries: ["title": V.str(value: "Milk")]), id: "todos/groceries",
            priority: .high)
        try doc.put(V.bool(value: true), at: "/done")
        let info = try store.info("todos/groceries")
        XCTAssertEqual(info.id, "todos/groceries")
        XCTAssertEqual(info.priority, .high)
        XCTAssertFalse(info.deleted)
        XCTAssertNotNil(info.localChangeAtMs)
        XCTAssertNil(info.remoteChangeAtMs)
        XCTAssertEqual(try store.listInfo(in: "todos").map { $0.id }, ["todos/groceries"])
        let pending = try store.pendingChanges()
        XCTAssertEqual(Set(pending.map { $0.doc }), ["todos/groceries"])
        XCTAssertEqual(pending.count, try doc.history().count)
        XCTAssertEqual(Set(pending.map { $0.change.device }), [store.deviceId])
        XCTAssertThrowsError(
            try store.create(V.object(entries: [:]), id: "todos/groceries")
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertThrowsError(try store.info("todos/nothing")) { error in
            XCTAssertEqual(kind(of: error), "NotFound", "\(error)")
        }
    }

    func testErrorsArriveAsTypedErrors() throws {
        let store = try openStore("phone")
        XCTAssertThrowsError(try store.getJSON("todos/nothing")) { error in
            XCTAssertEqual(kind(of: error), "NotFound", "\(error)")
            // The case says which kind, and the message what.
            guard let syncError = error as? SyncError, case let .notFound(message) = syncError
            else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(syncError.message, message)
            XCTAssertEqual("\(syncError)", message)
            XCTAssertTrue(message.hasPrefix("not found"), message)
        }
        XCTAssertThrowsError(try store.list(in: "Not A Collection")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertThrowsError(try store.changes(in: "Not A Collection")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        // Nothing was subscribed by the stream that could not start.
        XCTAssertEqual(store.subscriptionCount, 0)
    }

    func testTypedValuesRoundTripWithHistoryAndTimeTravel() throws {
        let store = try openStore("phone")
        let doc = try store.create(V.object(entries: ["title": V.str(value: "Draft")]), in: "todos")
        let first = try doc.heads()
        try doc.apply(
            [
                .put(path: "/notes", value: V.text(value: "hello")),
                .put(path: "/tags", value: V.array(items: [V.str(value: "home")])),
                .put(path: "/votes", value: V.counter(value: 0)),
                .put(path: "/blob", value: V.bytes(value: Data([0x00, 0xff]))),
                .put(path: "/ratio", value: V.float(value: 0.5)),
                .put(path: "/gone", value: V.null),
            ],
            message: "fill in")
        try doc.spliceText(at: "/notes", index: 5, delete: 0, insert: " world")
        try doc.increment(at: "/votes", by: 3)
        try doc.apply([.push(list: "/tags", value: V.str(value: "errands"))])
        XCTAssertEqual(try doc.get("/notes"), V.text(value: "hello world"))
        XCTAssertEqual(try doc.get("/votes"), V.counter(value: 3))
        XCTAssertEqual(
            try doc.get("/tags"), V.array(items: [V.str(value: "home"), V.str(value: "errands")]))
        XCTAssertEqual(try doc.get("/blob"), V.bytes(value: Data([0x00, 0xff])))
        XCTAssertEqual(try doc.get("/ratio"), V.float(value: 0.5))
        XCTAssertEqual(try doc.get("/gone"), V.null)
        XCTAssertNil(try doc.get("/missing"))
        let json = try JSONSerialization.jsonObject(with: Data(doc.toJSON().utf8)) as? [String: Any]
        XCTAssertEqual(json?["notes"] as? String, "hello world")
        let history = try doc.history()
        XCTAssertEqual(history.map { $0.message }, ["create", "fill in", nil, nil, nil])
        XCTAssertEqual(history.dropFirst().first?.device, store.deviceId)
        let then = try doc.view(at: first)
        XCTAssertEqual(then.heads, first)
        XCTAssertEqual(try then.get("/title"), V.str(value: "Draft"))
        XCTAssertNil(try then.get("/notes"))
        XCTAssertEqual(try then.toJSON(), #"{"title":"Draft"}"#)
        XCTAssertFalse(try doc.diff(from: first, to: doc.heads()).isEmpty)
        XCTAssertThrowsError(try doc.get("/title/deeper")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        // A failed change applies none of its operations.
        XCTAssertThrowsError(try doc.apply([.increment(path: "/title", by: 1)])) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertEqual(try doc.get("/title"), V.str(value: "Draft"))
        // The rest of a document's calls, each once.
        try doc.putJSON(#"{"at":"home"}"#, at: "/place")
        XCTAssertEqual(try doc.get("/place/at"), V.str(value: "home"))
        try doc.delete(at: "/place")
        XCTAssertNil(try doc.get("/place"))
        XCTAssertEqual(try doc.priority(), .normal)
        try doc.setPriority(.low)
        XCTAssertEqual(try store.info(doc.id).priority, .low)
        XCTAssertEqual(try doc.conflicts(at: "/title"), [V.str(value: "Draft")])
        try doc.resolve(V.str(value: "Final"), at: "/title")
        XCTAssertEqual(try doc.get("/title"), V.str(value: "Final"))
        XCTAssertEqual(try doc.allConflicts(), [])
        try store.delete(doc.id)
        XCTAssertThrowsError(try store.document(doc.id)) { error in
            XCTAssertEqual(kind(of: error), "NotFound", "\(error)")
        }
    }

    func testOpeningAndDroppingManyStoresGrowsNeitherFilesNorMemory() throws {
        func cycle(_ rounds: Int) throws {
            for i in 0..<rounds {
                // The store's last reference goes at the end of the iteration: the Rust store
                // closes there.
                let store = try Store.open(path("churn-\(i % 8)"))
                _ = try store.createJSON(#"{"n":\#(i)}"#, in: "todos")
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
        XCTAssertEqual(try Store.open(path("churn-0")).list(in: "todos").count, 57)
    }

    func testAHostBlockingInsideTheTokenClosureBlocksNothingElse() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let doc = try store.createJSON(#"{"title":"Blocked"}"#, in: "todos")
        let token = try relay.token(device: store.deviceId)
        let entered = Latch()
        let release = Latch()
        let neverReleased = Latch()
        // The host blocks in its token closure (say, a refresh over its own network stack)
        // until the test releases it.
        let client = try SyncClient.start(store, relayURL: relay.url, collections: ["todos"]) {
            entered.countDown()
            if !release.wait(seconds: 60) {
                neverReleased.countDown()
            }
            return token
        }
        XCTAssertTrue(entered.wait(seconds: 20), "the token closure was never called")
        // While the closure blocks, the host's calls return: none of them waits on it.
        if case .synced = client.status {
            XCTFail("synced while the token closure blocks")
        }
        try store.putJSON(doc, path: "done", json: "true")
        client.pause()
        client.resume()
        XCTAssertFalse(release.isOpen)
        // More waits than the cooperative pool has threads, and the release in one more task:
        // if a wait blocked its thread instead of suspending, the release could never run
        // (Kotlin's test does the same on a single-threaded `runBlocking`, Python's on one
        // event loop).
        let waits = ProcessInfo.processInfo.activeProcessorCount + 1
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<waits {
                group.addTask { try await client.waitSynced(timeout: .seconds(20)) }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(200))
                release.countDown()
            }
            try await group.waitForAll()
        }
        XCTAssertFalse(neverReleased.isOpen)
        XCTAssertEqual(try store.pendingDocuments(), [])
        client.stop()
    }

    func testOneStoreIsSharedByManyHostThreads() throws {
        let store = try openStore("phone")
        let shared = try store.create(
            V.object(entries: ["votes": V.counter(value: 0)]), in: "todos")
        let failures = Collected<String>()
        let done = Latch(count: 4)
        for n in 0..<4 {
            Thread {
                do {
                    for i in 0..<25 {
                        _ = try store.createJSON(#"{"thread":\#(n),"i":\#(i)}"#, in: "todos")
                        try shared.increment(at: "/votes", by: 1)
                    }
                } catch {
                    failures.append("thread \(n): \(error)")
                }
                done.countDown()
            }.start()
        }
        XCTAssertTrue(done.wait(seconds: 60), "the threads did not finish")
        XCTAssertEqual(failures.all, [])
        XCTAssertEqual(try store.list(in: "todos").count, 1 + 4 * 25)
        XCTAssertEqual(try shared.get("/votes"), V.counter(value: 100))
    }
}
