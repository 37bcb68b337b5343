// Codable over the facade's JSON calls: a value is encoded to the JSON text `createJson`
// takes, and a document's `toJson` text is decoded into the app's type.

import Foundation

enum JSONText {
    /// `value` as JSON text.
    ///
    /// - Throws: `EncodingError` when `value` cannot be encoded.
    static func encode<T: Encodable>(_ value: T, with encoder: JSONEncoder) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// `json` decoded as a `T`.
    ///
    /// - Throws: `DecodingError` when it does not fit `T`; its context's `codingPath` names
    ///   the key or index that did not.
    static func decode<T: Decodable>(
        _ type: T.Type, from json: String, with decoder: JSONDecoder
    ) throws -> T {
        try decoder.decode(type, from: Data(json.utf8))
    }
}
