// `DocumentView`: a read-only view of a document at given heads, wrapping the generated
// `FfiDocumentView`, with Codable decoding.

import Foundation
import SynclineCore

/// A read-only view of a document as it was at given heads (`Document.view(at:)`).
public final class DocumentView: Sendable {
    let core: FfiDocumentView

    init(_ core: FfiDocumentView) {
        self.core = core
    }

    /// The heads this view shows.
    public var heads: [String] {
        core.heads()
    }

    /// The value at `path` then, or nil if nothing was there.
    ///
    /// - Throws: `SyncError.invalidInput` if the path cannot be followed.
    public func get(_ path: String) throws -> Value? {
        try withNativeErrors { try core.get(path: path) }
    }

    /// The whole document then, as JSON text.
    public func toJSON() throws -> String {
        try withNativeErrors { try core.toJson() }
    }

    /// The whole document then, decoded as a `T` (as `Document.decode(_:decoder:)`).
    ///
    /// - Throws: `DecodingError` when it does not fit `T` (its `codingPath` says where).
    public func decode<T: Decodable>(
        _ type: T.Type = T.self, decoder: JSONDecoder = JSONDecoder()
    ) throws -> T {
        try JSONText.decode(type, from: toJSON(), with: decoder)
    }
}
