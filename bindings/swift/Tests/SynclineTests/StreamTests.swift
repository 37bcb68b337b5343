// The streams' lifetime: each subscribes when it is made, and ending its iteration (a `for
// await` that breaks over a stream kept nowhere else) or cancelling its task unsubscribes,
// which the SDK's own count of listeners shows. The count may drop a moment after the loop or
// the task ends, so the tests poll it with a deadline.

import Foundation
import XCTest

import Syncline

final class StreamTests: RelayTestCase {
    func testBreakingOutOfAChangeStreamUnsubscribes() async throws {
        let store = try openStore("phone")
        XCTAssertEqual(store.subscriptionCount, 0)
        // Writes once the loop below has subscribed.
        let writer = Task {
            try await eventually("the loop subscribes") { store.subscriptionCount == 1 }
            return try store.createJSON(#"{"title":"Buy milk"}"#, in: "todos")
        }
        var heard: ChangeEvent?
        for await event in try store.changes(in: "todos") {
            heard = event
            break
        }
        let doc = try await writer.value
        XCTAssertEqual(heard?.doc, doc)
        XCTAssertEqual(heard?.remote, false)
        try await eventually("the stream unsubscribes") { store.subscriptionCount == 0 }
    }

    func testBreakingOutOfADocumentStreamUnsubscribesAndHearsThatDocumentOnly() async throws {
        let store = try openStore("phone")
        let watched = try store.createJSON(#"{"title":"watched"}"#, in: "todos")
        let other = try store.createJSON(#"{"title":"other"}"#, in: "todos")
        let document = try store.document(watched)
        let writer = Task {
            try await eventually("the loop subscribes") { store.subscriptionCount == 1 }
            try store.putJSON(other, path: "done", json: "true")
            try store.putJSON(watched, path: "done", json: "true")
        }
        var heard: [String] = []
        for await event in document.changes() {
            heard.append(event.doc)
            break
        }
        try await writer.value
        XCTAssertEqual(heard, [watched])
        try await eventually("the stream unsubscribes") { store.subscriptionCount == 0 }
    }

    func testCancellingTheTaskOfAStoreWideStreamUnsubscribes() async throws {
        let store = try openStore("phone")
        let counted = Counter()
        let iterating = Task {
            for await _ in store.changes() {
                _ = counted.next()
            }
        }
        try await eventually("the task subscribes") { store.subscriptionCount == 1 }
        _ = try store.createJSON(#"{"title":"one"}"#, in: "todos")
        try await eventually("the task hears the change") { counted.value == 1 }
        iterating.cancel()
        await iterating.value  // the loop ends: a cancelled stream yields nil
        try await eventually("the stream unsubscribes") { store.subscriptionCount == 0 }
    }

    func testConflictStreamsUnsubscribeWhenTheirTasksAreCancelled() async throws {
        let store = try openStore("phone")
        let doc = try store.create(.object(entries: [:]), in: "todos")
        let tasks: [Task<Void, Error>] = [
            Task { for await _ in try store.conflictEvents(in: "todos") {} },
            Task { for await _ in store.conflictEvents() {} },
            Task { for await _ in doc.conflictEvents() {} },
        ]
        try await eventually("the three tasks subscribe") { store.subscriptionCount == 3 }
        for task in tasks {
            task.cancel()
        }
        for task in tasks {
            _ = await task.result
        }
        try await eventually("the streams unsubscribe") { store.subscriptionCount == 0 }
    }

    func testStatusUpdatesStartWithTheCurrentStatusAndBreakingUnsubscribes() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let token = try relay.token(device: store.deviceId)
        let client = try SyncClient.start(
            store, relayURL: relay.url, collections: ["todos"], tokens: { token })
        try await client.waitSynced(timeout: .seconds(20))
        // Synced and idle: the first element is the current status, yielded at once.
        var first: SyncStatus?
        for await status in client.statusUpdates {
            first = status
            break
        }
        guard case .synced = first else {
            return XCTFail("first status: \(String(describing: first))")
        }
        try await eventually("the status stream unsubscribes") { client.subscriptionCount == 0 }
        client.stop()
    }

    func testClientStreamsUnsubscribeWhenTheirTasksAreCancelled() async throws {
        let relay = try startRelay()
        let store = try openStore("phone")
        let doc = try store.createJSON(#"{"title":"shared"}"#, in: "todos")
        let token = try relay.token(device: store.deviceId)
        let client = try SyncClient.start(
            store, relayURL: relay.url, collections: ["todos"], tokens: { token })
        let tasks: [Task<Void, Error>] = [
            Task { for await _ in client.statusUpdates {} },
            Task { for await _ in client.syncErrorEvents() {} },
            Task { for await _ in try client.ephemeral(for: doc) {} },
            Task { for await _ in try client.ephemeral() {} },
        ]
        try await eventually("the four tasks subscribe") { client.subscriptionCount == 4 }
        for task in tasks {
            task.cancel()
        }
        for task in tasks {
            _ = await task.result
        }
        try await eventually("the streams unsubscribe") { client.subscriptionCount == 0 }
        XCTAssertThrowsError(try client.ephemeral(for: "not an id")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertEqual(client.subscriptionCount, 0)
        client.stop()
    }

    func testAStreamKeptInAVariableStaysSubscribedUntilReleased() async throws {
        let store = try openStore("phone")
        do {
            let changes = store.changes()
            XCTAssertEqual(store.subscriptionCount, 1)
            _ = try store.createJSON(#"{"title":"buffered"}"#, in: "todos")
            // Events wait in the stream's buffer until it is read.
            var iterator = changes.makeAsyncIterator()
            let event = await iterator.next()
            XCTAssertEqual(event?.remote, false)
            // Read up to its end or not, a stream still referenced stays subscribed.
            withExtendedLifetime(changes) {
                XCTAssertEqual(store.subscriptionCount, 1)
            }
        }
        // The stream and its iterator went with the scope: unsubscribed.
        try await eventually("the released stream unsubscribes") { store.subscriptionCount == 0 }
    }
}
