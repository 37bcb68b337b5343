// The example README.md opens with, compiled and run against a real relay. The lines between
// the `readme-example` markers are the README's code block, line for line (a check in the
// workspace compares the two): change both together.

import XCTest

// readme-example: begin
import Syncline

struct Todo: Codable {
    var title: String
    var done: Bool
}

/// Writes a todo offline, syncs it through the relay at `relayURL`, and reads it back typed.
/// `token` returns this device's JWT, from your backend.
func syncTodos(
    storePath: String, relayURL: String, token: @escaping @Sendable () throws -> String
) async throws {
    let store = try Store.open(storePath)
    let changes = try store.changes(in: "todos")  // every change, local or remote

    // Offline: each write is durable when it returns, and waits in the store for a relay.
    let doc = try store.insert(Todo(title: "Buy milk", done: false), into: "todos")
    try doc.put(.bool(value: true), at: "/done")

    // Online: waiting suspends this task; no thread blocks on the network.
    let client = try SyncClient.start(
        store, relayURL: relayURL, collections: ["todos"], tokens: token)
    try await client.waitSynced(timeout: .seconds(30))
    client.stop()

    for await change in changes where change.doc == doc.id {
        let todo = try store.document(change.doc).decode(Todo.self)
        print("\(todo.title): \(todo.done ? "done" : "to do")")
        if todo.done { break }
    }
}
// readme-example: end

final class ReadmeExampleTests: RelayTestCase {
    func testTheReadmeExampleRunsAgainstARelay() async throws {
        let relay = try startRelay()
        let phone = path("phone")
        // The store file keeps this device's id, which the relay's token is minted for (the
        // store closes again at the end of the statement).
        let token = try relay.token(device: Store.open(phone).deviceId)
        try await syncTodos(storePath: phone, relayURL: relay.url, token: { token })
        // The todo reached the relay, done: a second device receives it.
        let laptop = try openStore("laptop")
        try await sync(laptop, through: relay)
        let ids = try laptop.list(in: "todos")
        XCTAssertEqual(ids.count, 1)
        let todo = try laptop.document(XCTUnwrap(ids.first)).decode(Todo.self)
        XCTAssertEqual(todo.title, "Buy milk")
        XCTAssertTrue(todo.done)
    }
}
