// Codable over the store: `insert(_:into:)` encodes an app's type into a new document, and
// `decode(_:)` reads a document (or a view of one) back into it; what does not fit throws
// Swift's own `DecodingError`, whose `codingPath` names where.

import Foundation
import XCTest

import Syncline

/// A chore, as an app would model it.
private struct Chore: Codable, Equatable {
    struct Owner: Codable, Equatable {
        var name: String
        var age: Int
    }

    var title: String
    var done: Bool
    var tags: [String]
    var owner: Owner?
}

final class CodableTests: RelayTestCase {
    func testAnInsertedValueDecodesBackFromTheDocumentAndItsPast() throws {
        let store = try openStore("phone")
        let chore = Chore(
            title: "Water the plants", done: false, tags: ["home"],
            owner: Chore.Owner(name: "Ann", age: 34))
        let doc = try store.insert(chore, into: "chores")
        XCTAssertTrue(doc.id.hasPrefix("chores/"), doc.id)
        XCTAssertEqual(try doc.decode(Chore.self), chore)
        XCTAssertEqual(try store.document(doc.id).decode(Chore.self), chore)
        // The store holds it as a document like any other: its fields are paths.
        XCTAssertEqual(try doc.get("/owner/name"), Value.str(value: "Ann"))
        let before = try doc.heads()
        try doc.put(Value.bool(value: true), at: "/done")
        // The type is inferred where it can be.
        let now: Chore = try doc.decode()
        XCTAssertTrue(now.done)
        XCTAssertEqual(try doc.view(at: before).decode(Chore.self), chore)
        XCTAssertEqual(try store.list(in: "chores"), [doc.id])
    }

    func testADocumentThatDoesNotFitThrowsADecodingErrorNamingThePath() throws {
        let store = try openStore("phone")
        let id = try store.createJSON(
            #"{"title":"Feed the cat","done":false,"tags":[],"owner":{"name":"Bo","age":"ten"}}"#,
            in: "chores")
        XCTAssertThrowsError(try store.document(id).decode(Chore.self)) { error in
            guard let decoding = error as? DecodingError,
                case let .typeMismatch(type, context) = decoding
            else {
                return XCTFail("not a type mismatch: \(error)")
            }
            XCTAssertTrue(type == Int.self, "\(type)")
            XCTAssertEqual(context.codingPath.map { $0.stringValue }, ["owner", "age"])
        }
        try store.putJSON(id, path: "/owner/age", json: "10")
        XCTAssertEqual(try store.document(id).decode(Chore.self).owner?.age, 10)
        // A missing key: the error names the key, and the path of the object it is missing in.
        let untitled = try store.createJSON(#"{"done":true,"tags":["x"]}"#, in: "chores")
        XCTAssertThrowsError(try store.document(untitled).decode(Chore.self)) { error in
            guard let decoding = error as? DecodingError,
                case let .keyNotFound(key, context) = decoding
            else {
                return XCTFail("not a missing key: \(error)")
            }
            XCTAssertEqual(key.stringValue, "title")
            XCTAssertEqual(context.codingPath.map { $0.stringValue }, [])
        }
    }

    func testAValueThatIsNotAnObjectIsInvalidInput() throws {
        let store = try openStore("phone")
        XCTAssertThrowsError(try store.insert(["just", "a", "list"], into: "chores")) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertThrowsError(
            try store.insert(Chore(title: "x", done: false, tags: [], owner: nil), into: "Bad Name")
        ) { error in
            XCTAssertEqual(kind(of: error), "InvalidInput", "\(error)")
        }
        XCTAssertEqual(try store.list(in: "chores"), [])
    }
}
