// How a Swift 6 app uses Syncline: a `@MainActor` model holds the store, writes and reads on the
// main actor, imports in a detached task, follows a change stream and the sync status on the
// main actor, and waits for a sync without blocking it. It must compile in the Swift 6 language
// mode with no warning.

import Foundation
import Syncline

/// A todo, as the app models it.
struct Todo: Codable, Sendable, Equatable {
    var title: String
    var done: Bool
}

/// What the run found wrong.
struct ConsumerFailure: Error, CustomStringConvertible {
    let description: String
}

/// The screen's model: main-actor state over a store that background work shares.
@MainActor
final class TodoModel {
    let store: Store
    private(set) var titles: [String] = []
    private(set) var changesSeen = 0
    private(set) var status: SyncStatus?
    private var watching: Task<Void, Never>?

    init(store: Store) {
        self.store = store
    }

    /// Adds a todo from the main actor: one local write, durable when it returns.
    func add(_ title: String) throws {
        _ = try store.insert(Todo(title: title, done: false), into: "todos")
    }

    /// Reads the list again, typed.
    func reload() throws {
        titles = try store.list(in: "todos").map {
            try store.document($0).decode(Todo.self).title
        }
    }

    /// Follows the collection on the main actor until `stopWatching`.
    func startWatching() throws {
        let changes = try store.changes(in: "todos")
        watching = Task { [weak self] in
            for await _ in changes {
                guard let self else { return }
                self.changesSeen += 1
                try? self.reload()
            }
        }
    }

    /// Ends the stream (its task is cancelled, and the subscription with it).
    func stopWatching() {
        watching?.cancel()
        watching = nil
    }

    /// A bulk import off the main actor: the same store, from a detached task.
    func importInBackground(_ titles: [String]) async throws -> Int {
        let store = self.store
        let count = try await Task.detached(priority: .utility) {
            for title in titles {
                _ = try store.insert(Todo(title: title, done: false), into: "todos")
            }
            return try store.list(in: "todos").count
        }.value
        try reload()
        return count
    }

    /// Marks a todo done from a detached task, with the document opened on the main actor.
    func markDoneInBackground(_ id: String) async throws {
        let document = try store.document(id)
        try await Task.detached {
            try document.put(.bool(value: true), at: "/done")
        }.value
    }

    /// Syncs with a relay: the status stream is followed on the main actor, and waiting
    /// suspends this task without blocking the main actor.
    func sync(relayURL: String, token: String) async throws -> SyncStats {
        let client = try SyncClient.start(
            store, relayURL: relayURL, collections: ["todos"], tokens: { token })
        let updates = client.statusUpdates
        let following = Task { [weak self] in
            for await status in updates {
                self?.status = status
            }
        }
        defer {
            following.cancel()
            client.stop()
        }
        return try await client.waitSynced(timeout: .seconds(30))
    }
}

@main
struct Consumer {
    @MainActor
    static func main() async throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("swift6-consumer-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let store = try Store.open(dir.appendingPathComponent("app.db").path)
        let model = TodoModel(store: store)
        try model.startWatching()
        try model.add("Buy milk")
        let total = try await model.importInBackground(["Walk the dog", "Water the plants"])
        if let first = try store.list(in: "todos").first {
            try await model.markDoneInBackground(first)
        }
        // The stream's events reach the main actor whenever it is free: wait for all four.
        let deadline = ContinuousClock.now + .seconds(10)
        while model.changesSeen < 4, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        model.stopWatching()
        guard total == 3, model.changesSeen >= 4, model.titles.count == 3 else {
            throw ConsumerFailure(
                description: "\(total) todos, \(model.changesSeen) changes seen, \(model.titles)")
        }

        let environment = ProcessInfo.processInfo.environment
        if let relayURL = environment["SYNCLINE_RELAY_URL"],
            let token = environment["SYNCLINE_TOKEN"]
        {
            let stats = try await model.sync(relayURL: relayURL, token: token)
            let status = model.status.map { "\($0)" } ?? "none"
            print("synced: \(stats.docsSent) documents sent; last status seen: \(status)")
        }
        print("Swift 6 consumer: \(model.titles.count) todos, \(model.changesSeen) changes seen")
    }
}
