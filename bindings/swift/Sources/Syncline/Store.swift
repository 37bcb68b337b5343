// `Store`: a local store file and its documents, wrapping the generated `FfiStore` one call for
// one call, with change and conflict streams and Codable inserts.

import Foundation
import SynclineCore

/// A store: the documents of this device in one file, usable offline; every write is durable
/// when its call returns.
///
/// Share one store across the app: it is thread-safe (`Sendable`), and its calls are local
/// work (SQLite and Automerge) that never waits on the network. A single edit is fine on the
/// main actor; a bulk import belongs in a detached task. The file closes when the last
/// reference to it goes: this store, and the documents and sync clients made from it.
public final class Store: Sendable {
    let core: FfiStore

    init(_ core: FfiStore) {
        self.core = core
    }

    /// Opens (or creates) the store file at `path`, with `options` if given (else the SDK's
    /// defaults).
    ///
    /// - Throws: `SyncError.storage` when the file cannot be opened as a store (or another
    ///   process has it open).
    public static func `open`(_ path: String, options: StoreOptions? = nil) throws -> Store {
        try withNativeErrors {
            if let options {
                return Store(try FfiStore.openWith(path: path, options: options))
            }
            return Store(try FfiStore.open(path: path))
        }
    }

    /// This device's id (32 hex digits).
    public var deviceId: String {
        core.deviceId()
    }

    /// How many change and conflict streams are subscribed now (a terminated stream no longer
    /// counts).
    public var subscriptionCount: UInt64 {
        core.subscriptionCount()
    }

    // MARK: Writing

    /// Creates a document in `collection` with `content` (an `.object`).
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection or content that is not an
    ///   object.
    public func create(_ content: Value, in collection: String) throws -> Document {
        Document(try withNativeErrors { try core.create(collection: collection, initial: content) })
    }

    /// Creates the document `id` (`collection/id`, an id the app chooses) with `content` (an
    /// `.object`) and `priority`.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad id, content that is not an object, or an
    ///   id already taken (even by a deleted document).
    public func create(_ content: Value, id: String, priority: Priority = .normal) throws
        -> Document
    {
        Document(
            try withNativeErrors {
                try core.createAt(docId: id, initial: content, priority: priority)
            })
    }

    /// Creates a document in `collection` from `value` encoded as a JSON object (by `encoder`),
    /// and returns it.
    ///
    /// - Throws: `EncodingError` when `value` cannot be encoded; `SyncError.invalidInput` for
    ///   a bad collection or a value that does not encode as an object.
    public func insert<T: Encodable>(
        _ value: T, into collection: String, encoder: JSONEncoder = JSONEncoder()
    ) throws -> Document {
        let json = try JSONText.encode(value, with: encoder)
        return try document(createJSON(json, in: collection))
    }

    /// Creates a document in `collection` from JSON text (an object); returns its id
    /// (`collection/id`).
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection or JSON that is not an object.
    public func createJSON(_ json: String, in collection: String) throws -> String {
        try withNativeErrors { try core.createJson(collection: collection, json: json) }
    }

    /// Sets the value at `path` of document `id` from JSON text.
    ///
    /// - Throws: `SyncError.notFound` or `SyncError.invalidInput`.
    public func putJSON(_ id: String, path: String, json: String) throws {
        try withNativeErrors { try core.putJson(docId: id, path: path, json: json) }
    }

    /// Deletes document `id`: a tombstone that syncs to other devices.
    ///
    /// - Throws: `SyncError.notFound` or `SyncError.invalidInput`.
    public func delete(_ id: String) throws {
        try withNativeErrors { try core.delete(docId: id) }
    }

    // MARK: Reading

    /// The document `id` (`collection/id`).
    ///
    /// - Throws: `SyncError.notFound` if there is none (or it is deleted),
    ///   `SyncError.evicted` when its content was evicted (`SyncClient.open` fetches it),
    ///   `SyncError.invalidInput` for a bad id.
    public func document(_ id: String) throws -> Document {
        Document(try withNativeErrors { try core.document(docId: id) })
    }

    /// Document `id` as JSON text.
    ///
    /// - Throws: `SyncError.notFound` or `SyncError.storage`.
    public func getJSON(_ id: String) throws -> String {
        try withNativeErrors { try core.getJson(docId: id) }
    }

    /// What the store knows of document `id` without loading it (also once deleted).
    ///
    /// - Throws: `SyncError.notFound` if there is none, `SyncError.invalidInput` for a bad id.
    public func info(_ id: String) throws -> DocumentInfo {
        try withNativeErrors { try core.info(docId: id) }
    }

    /// The id of every live document in `collection`, oldest first.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection name.
    public func list(in collection: String) throws -> [String] {
        try withNativeErrors { try core.list(collection: collection) }
    }

    /// Every live document of `collection` with its metadata, oldest first; loads none.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection name.
    public func listInfo(in collection: String) throws -> [DocumentInfo] {
        try withNativeErrors { try core.listInfo(collection: collection) }
    }

    /// The id of every document no relay has acknowledged yet, highest priority first.
    public func pendingDocuments() throws -> [String] {
        try withNativeErrors { try core.pendingDocuments() }
    }

    /// Every change no relay has acknowledged yet, with the document it belongs to.
    public func pendingChanges() throws -> [PendingChange] {
        try withNativeErrors { try core.pendingChanges() }
    }

    /// The last `limit` connections to any relay, newest first (the store keeps the last 200).
    public func syncHistory(limit: UInt32 = 20) throws -> [SyncRecord] {
        try withNativeErrors { try core.syncHistory(limit: limit) }
    }

    // MARK: Conflicts

    /// The concurrent values (JSON text each) at `path` of document `id`.
    ///
    /// - Throws: `SyncError.notFound` or `SyncError.invalidInput`.
    public func conflictsJSON(_ id: String, path: String) throws -> [String] {
        try withNativeErrors { try core.conflictsJson(docId: id, path: path) }
    }

    /// Settles the value at `path` of document `id` (JSON text), ending a conflict there.
    ///
    /// - Throws: `SyncError.notFound` or `SyncError.invalidInput`.
    public func resolveJSON(_ id: String, path: String, json: String) throws {
        try withNativeErrors { try core.resolveJson(docId: id, path: path, json: json) }
    }

    /// The documents a merge left with concurrent values no write has resolved yet.
    public func conflictedDocuments() throws -> [String] {
        try withNativeErrors { try core.conflictedDocuments() }
    }

    /// Resolves `collection`'s conflicts with `strategy` from now on (nil: no longer), and
    /// those already there now. Every device must run the same strategy.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection or device id.
    public func setConflictStrategy(_ strategy: ConflictStrategy?, for collection: String) throws {
        try withNativeErrors {
            try core.setConflictStrategy(collection: collection, strategy: strategy)
        }
    }

    /// Resolves `collection`'s conflicts with `resolve`, from now on and now: it returns the
    /// value to keep. It runs on the thread that merged, and must be deterministic (a function
    /// of the conflict alone, the same on every device), or devices could resolve one conflict
    /// differently for ever.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection.
    public func setConflictResolver(
        for collection: String, _ resolve: @escaping @Sendable (Conflict) -> Value
    ) throws {
        try withNativeErrors {
            try core.setConflictResolver(
                collection: collection, resolver: ConflictResolverClosure(resolve))
        }
    }

    // MARK: Streams

    /// Every change to a document of `collection`, local or remote, from now until the stream
    /// terminates: when the task iterating it is cancelled, or when the stream and its iterator
    /// are released (a `for await` over this call that breaks). Events arrive in an unbounded
    /// buffer, so the SDK never waits for the app to read them.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection name.
    public func changes(in collection: String) throws -> AsyncStream<ChangeEvent> {
        try subscribedStream(of: ChangeEvent.self) { continuation in
            try withNativeErrors {
                try core.watchCollection(
                    collection: collection, listener: ChangeForwarder(continuation))
            }
        }
    }

    /// Every change to any document of the store (every collection), local or remote; each
    /// event says which devices its changes came from.
    public func changes() -> AsyncStream<ChangeEvent> {
        subscribedStream(of: ChangeEvent.self) { continuation in
            core.watchAll(listener: ChangeForwarder(continuation))
        }
    }

    /// Each conflict a change leaves in a document of `collection`.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection name.
    public func conflictEvents(in collection: String) throws -> AsyncStream<Conflict> {
        try subscribedStream(of: Conflict.self) { continuation in
            try withNativeErrors {
                try core.watchCollectionConflicts(
                    collection: collection, listener: ConflictForwarder(continuation))
            }
        }
    }

    /// Each conflict a change leaves in any document of the store.
    public func conflictEvents() -> AsyncStream<Conflict> {
        subscribedStream(of: Conflict.self) { continuation in
            core.watchConflicts(listener: ConflictForwarder(continuation))
        }
    }
}

/// An app's resolver closure as the generated layer's `FfiConflictResolver`.
final class ConflictResolverClosure: FfiConflictResolver {
    private let closure: @Sendable (Conflict) -> Value

    init(_ closure: @escaping @Sendable (Conflict) -> Value) {
        self.closure = closure
    }

    func resolve(conflict: Conflict) -> Value {
        closure(conflict)
    }
}
