// `Document`: one document of a store, wrapping the generated `FfiDocument` one call for one
// call, with its change and conflict streams and Codable decoding.

import Foundation
import SynclineCore

/// One document of a store. Every write is durable when its call returns, online or not.
/// Paths are JSON Pointers: `/title`, `/items/0/done`, `""` for the whole document.
public final class Document: Sendable {
    let core: FfiDocument

    init(_ core: FfiDocument) {
        self.core = core
    }

    /// The document's id, `collection/id`.
    public var id: String {
        core.id()
    }

    // MARK: Reading

    /// The value at `path`, or nil if nothing is there.
    ///
    /// - Throws: `SyncError.invalidInput` if the path cannot be followed,
    ///   `SyncError.notFound`.
    public func get(_ path: String) throws -> Value? {
        try withNativeErrors { try core.get(path: path) }
    }

    /// The whole document as JSON text.
    public func toJSON() throws -> String {
        try withNativeErrors { try core.toJson() }
    }

    /// The whole document decoded as a `T` (by `decoder`, from the document's JSON).
    ///
    /// - Throws: `DecodingError` when the document does not fit `T`: its context's
    ///   `codingPath` names the key or index that did not; `SyncError` when the document
    ///   cannot be read.
    public func decode<T: Decodable>(
        _ type: T.Type = T.self, decoder: JSONDecoder = JSONDecoder()
    ) throws -> T {
        try JSONText.decode(type, from: toJSON(), with: decoder)
    }

    /// The current heads (hex change hashes).
    public func heads() throws -> [String] {
        try withNativeErrors { try core.heads() }
    }

    /// Every change, oldest first: which device wrote what, when, with which message.
    public func history() throws -> [Change] {
        try withNativeErrors { try core.history() }
    }

    /// A read-only view of the document as it was at `heads`.
    ///
    /// - Throws: `SyncError.invalidInput` for heads that are not hashes of this document.
    public func view(at heads: [String]) throws -> DocumentView {
        DocumentView(try withNativeErrors { try core.viewAt(heads: heads) })
    }

    /// The patches that turn the document at `from` into the document at `to`.
    ///
    /// - Throws: `SyncError.invalidInput` for heads that are not hashes of this document.
    public func diff(from: [String], to: [String]) throws -> [Patch] {
        try withNativeErrors { try core.diff(from: from, to: to) }
    }

    /// The document's sync priority.
    public func priority() throws -> Priority {
        try withNativeErrors { try core.priority() }
    }

    // MARK: Writing

    /// Sets the value at `path`.
    ///
    /// - Throws: `SyncError.invalidInput` or `SyncError.notFound`.
    public func put(_ value: Value, at path: String) throws {
        try withNativeErrors { try core.put(path: path, value: value) }
    }

    /// Sets the value at `path` from JSON text.
    ///
    /// - Throws: `SyncError.invalidInput` or `SyncError.notFound`.
    public func putJSON(_ json: String, at path: String) throws {
        try withNativeErrors { try core.putJson(path: path, json: json) }
    }

    /// Removes the value at `path`.
    ///
    /// - Throws: `SyncError.invalidInput` or `SyncError.notFound`.
    public func delete(at path: String) throws {
        try withNativeErrors { try core.delete(path: path) }
    }

    /// Edits the text object at `path`: removes `delete` code points at `index`, then inserts
    /// `insert` there.
    public func spliceText(at path: String, index: UInt64, delete: UInt64, insert: String)
        throws
    {
        try withNativeErrors {
            try core.spliceText(path: path, index: index, delete: delete, insert: insert)
        }
    }

    /// Adds `by` (1 unless given; may be negative) to the counter at `path`.
    public func increment(at path: String, by: Int64 = 1) throws {
        try withNativeErrors { try core.increment(path: path, by: by) }
    }

    /// Applies `ops` as one change, with an optional commit message: all of them, or (when one
    /// fails) none.
    ///
    /// - Throws: `SyncError.invalidInput` or `SyncError.notFound`.
    public func apply(_ ops: [WriteOp], message: String? = nil) throws {
        try withNativeErrors { try core.apply(ops: ops, message: message) }
    }

    /// Sets the document's sync priority.
    public func setPriority(_ priority: Priority) throws {
        try withNativeErrors { try core.setPriority(priority: priority) }
    }

    // MARK: Conflicts

    /// The concurrent values at `path` (more than one while devices' writes conflict).
    public func conflicts(at path: String) throws -> [Value] {
        try withNativeErrors { try core.conflicts(path: path) }
    }

    /// Settles the value at `path`, ending a conflict there.
    public func resolve(_ value: Value, at path: String) throws {
        try withNativeErrors { try core.resolve(path: path, value: value) }
    }

    /// Every conflict in the document: each path a merge left with concurrent values.
    public func allConflicts() throws -> [Conflict] {
        try withNativeErrors { try core.allConflicts() }
    }

    // MARK: Streams

    /// Every change to this document, local or remote, until the stream terminates (as for
    /// `Store.changes(in:)`).
    public func changes() -> AsyncStream<ChangeEvent> {
        subscribedStream(of: ChangeEvent.self) { continuation in
            core.watch(listener: ChangeForwarder(continuation))
        }
    }

    /// Each conflict a change leaves in this document.
    public func conflictEvents() -> AsyncStream<Conflict> {
        subscribedStream(of: Conflict.self) { continuation in
            core.watchConflicts(listener: ConflictForwarder(continuation))
        }
    }
}
