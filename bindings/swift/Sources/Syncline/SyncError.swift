// `SyncError`: the one error every Syncline call throws, and the single place where the
// generated layer's `FfiError` becomes it (`withNativeErrors`).

import Foundation
import SynclineCore

/// What a Syncline call throws: the SDK error's kind, with its message (which starts with the
/// kind, as in `not found: todos/x`).
///
/// Decoding a document into a `Decodable` type throws Swift's own `DecodingError` instead
/// (its `codingPath` names what did not fit), and encoding one throws `EncodingError`.
public enum SyncError: Error, Hashable, Sendable {
    /// Not found, or deleted.
    case notFound(message: String)
    /// The document's content was evicted to stay within the storage budget (its metadata is
    /// still listed); `SyncClient.open(_:timeout:)` fetches it again.
    case evicted(message: String)
    /// An id, path, JSON text or value of the wrong shape or type.
    case invalidInput(message: String)
    /// A store that cannot be opened, or a corrupt document.
    case storage(message: String)
    /// The relay refused the token, or the token provider threw `TokenError.signedOut`.
    case unauthorized(message: String)
    /// The relay could not be reached (or there was no token to reach it with).
    case unreachable(message: String)
    /// Not done in the time given.
    case timeout(message: String)
    /// The sync reported an error (a refused change, a protocol error), or the client was
    /// stopped.
    case sync(message: String)
    /// Over a rate the device keeps to (ephemeral messages); retry a little later.
    case rateLimited(message: String)

    /// What happened, for people.
    public var message: String {
        switch self {
        case .notFound(let message), .evicted(let message), .invalidInput(let message),
            .storage(let message), .unauthorized(let message), .unreachable(let message),
            .timeout(let message), .sync(let message), .rateLimited(let message):
            return message
        }
    }
}

extension SyncError: CustomStringConvertible {
    public var description: String { message }
}

extension SyncError: LocalizedError {
    public var errorDescription: String? { message }
}

extension SyncError {
    /// The native form of an error of the generated layer.
    init(_ error: FfiError) {
        switch error {
        case .NotFound(let message): self = .notFound(message: message)
        case .Evicted(let message): self = .evicted(message: message)
        case .InvalidInput(let message): self = .invalidInput(message: message)
        case .Storage(let message): self = .storage(message: message)
        case .Unauthorized(let message): self = .unauthorized(message: message)
        case .Unreachable(let message): self = .unreachable(message: message)
        case .Timeout(let message): self = .timeout(message: message)
        case .Sync(let message): self = .sync(message: message)
        case .RateLimited(let message): self = .rateLimited(message: message)
        }
    }

    /// `error` as this module throws it: a `SyncError` for an `FfiError`, anything else (the
    /// generated layer's internal errors) as it is.
    static func native(_ error: any Error) -> any Error {
        if let error = error as? FfiError {
            return SyncError(error)
        }
        return error
    }
}

/// Runs one call into the generated layer, throwing its errors as `SyncError`s. Every throwing
/// call of this module goes through here or through `withNativeErrorsAsync`.
func withNativeErrors<T>(_ call: () throws -> T) throws -> T {
    do {
        return try call()
    } catch {
        throw SyncError.native(error)
    }
}

/// `withNativeErrors` for the generated layer's async calls (named apart: an overload on the
/// closure's `async` alone would leave the choice to overload ranking).
func withNativeErrorsAsync<T>(_ call: () async throws -> T) async throws -> T {
    do {
        return try await call()
    } catch {
        throw SyncError.native(error)
    }
}

/// Runs `call` in a task of its own and returns what it returns, or throws `CancellationError`
/// as soon as the calling task is cancelled. The facade's waits (`waitSynced`, `open`) do not
/// watch for cancellation themselves: a cancelled caller stops waiting at once, and the wait
/// it leaves ends on its own (synced, or at its timeout).
func cancellable<T>(_ call: @escaping @Sendable () async throws -> T) async throws -> T {
    let (results, continuation) = AsyncThrowingStream.makeStream(of: Unchecked<T>.self)
    let work = Task {
        do {
            continuation.yield(Unchecked(value: try await call()))
            continuation.finish()
        } catch {
            continuation.finish(throwing: error)
        }
    }
    // The stream's iterator returns nil when the calling task is cancelled.
    for try await result in results {
        return result.value
    }
    work.cancel()
    throw CancellationError()
}

/// Carries a result from the task that produced it to the one that waits for it (the
/// generated records are `Sendable` only to Swift 6 compilers).
struct Unchecked<T>: @unchecked Sendable {
    let value: T
}
