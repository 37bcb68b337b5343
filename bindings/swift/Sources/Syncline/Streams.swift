// Streams over the facade's listeners: each `AsyncStream` subscribes (a facade `watch...`
// call) when it is made and cancels that subscription when it terminates, and each listener
// only yields into the stream's unbounded buffer, since it runs on an SDK thread that must
// never block.
//
// An `AsyncStream` terminates when the task iterating it is cancelled, or when the stream and
// every iterator made from it are released: a `for await` over `store.changes(in:)` that
// breaks, or a stream kept nowhere once its loop ends. A stream kept in a variable stays
// subscribed until that variable goes.

import Foundation
import SynclineCore

/// A stream of `Element`s, fed by the listener that `subscribe` registers with the
/// continuation it is given; terminating the stream cancels the subscription `subscribe`
/// returns. (Every `Element` is a generated record or enum, `Sendable` from Swift 6 on; the
/// generated code declares that only for Swift 6 compilers, so it is not required here.)
///
/// - Throws: What `subscribe` throws (nothing is subscribed then).
func subscribedStream<Element>(
    of _: Element.Type,
    _ subscribe: (AsyncStream<Element>.Continuation) throws -> FfiSubscription
) rethrows -> AsyncStream<Element> {
    let (stream, continuation) = AsyncStream.makeStream(
        of: Element.self, bufferingPolicy: .unbounded)
    let subscription = try subscribe(continuation)
    continuation.onTermination = { _ in
        subscription.cancel()
    }
    return stream
}

/// Yields each change event.
final class ChangeForwarder: FfiChangeListener {
    private let continuation: AsyncStream<ChangeEvent>.Continuation

    init(_ continuation: AsyncStream<ChangeEvent>.Continuation) {
        self.continuation = continuation
    }

    /// Released by the SDK (its client stopped, the subscription cancelled): the stream ends.
    deinit {
        continuation.finish()
    }

    func onChange(event: ChangeEvent) {
        continuation.yield(event)
    }
}

/// Yields each conflict.
final class ConflictForwarder: FfiConflictListener {
    private let continuation: AsyncStream<Conflict>.Continuation

    init(_ continuation: AsyncStream<Conflict>.Continuation) {
        self.continuation = continuation
    }

    /// Released by the SDK (its client stopped, the subscription cancelled): the stream ends.
    deinit {
        continuation.finish()
    }

    func onConflict(conflict: Conflict) {
        continuation.yield(conflict)
    }
}

/// Yields each sync error raised or cleared.
final class SyncErrorForwarder: FfiSyncErrorListener {
    private let continuation: AsyncStream<SyncErrorEvent>.Continuation

    init(_ continuation: AsyncStream<SyncErrorEvent>.Continuation) {
        self.continuation = continuation
    }

    /// Released by the SDK (its client stopped, the subscription cancelled): the stream ends.
    deinit {
        continuation.finish()
    }

    func onSyncError(event: SyncErrorEvent) {
        continuation.yield(event)
    }
}

/// Yields each ephemeral message.
final class EphemeralForwarder: FfiEphemeralListener {
    private let continuation: AsyncStream<Ephemeral>.Continuation

    init(_ continuation: AsyncStream<Ephemeral>.Continuation) {
        self.continuation = continuation
    }

    /// Released by the SDK (its client stopped, the subscription cancelled): the stream ends.
    deinit {
        continuation.finish()
    }

    func onEphemeral(message: Ephemeral) {
        continuation.yield(message)
    }
}

/// Yields each new status, after the status current when the stream was made.
///
/// The current status is read (a facade call) and yielded under the same lock as the
/// listener's yields, once the listener is registered: the SDK sets a status before it calls
/// the listeners (and calls them holding none of its locks), so a change racing the read is
/// yielded after it, and the stream's last element is always the latest status.
final class StatusForwarder: FfiStatusListener, @unchecked Sendable {
    private let continuation: AsyncStream<SyncStatus>.Continuation
    /// Orders the yields of `onStatus` (an SDK thread) and `yieldCurrent` (the caller's).
    private let lock = NSLock()

    init(_ continuation: AsyncStream<SyncStatus>.Continuation) {
        self.continuation = continuation
    }

    /// Released by the SDK (its client stopped, the subscription cancelled): the stream ends.
    deinit {
        continuation.finish()
    }

    /// Set once the listener has yielded a status: then the status read by `yieldCurrent` is
    /// not newer, and is left out. Guarded by `lock`.
    private var delivered = false

    func onStatus(status: SyncStatus) {
        lock.lock()
        defer { lock.unlock() }
        delivered = true
        continuation.yield(status)
    }

    /// Yields what `current` returns, read under the lock, unless the listener already
    /// yielded a status (newer, or the same).
    func yieldCurrent(_ current: () -> SyncStatus) {
        lock.lock()
        defer { lock.unlock() }
        if !delivered {
            continuation.yield(current())
        }
    }
}
