// `SyncClient`: a store's background sync with a relay, wrapping the generated
// `FfiSyncClient` one call for one call, with `Duration` timeouts, a token closure and status,
// sync-error and ephemeral streams.

import Foundation
import SynclineCore

/// Syncs a store with a relay in the background for as long as it is kept (or until `stop`).
///
/// No call blocks on the network: starting, pausing and resuming return at once, and waiting
/// (`waitSynced`, `open`) suspends the calling task while the wait runs on a thread of the
/// SDK's own. Thread-safe (`Sendable`).
public final class SyncClient: Sendable {
    let core: FfiSyncClient

    init(_ core: FfiSyncClient) {
        self.core = core
    }

    /// Starts syncing `store` with the relay at `relayURL` (`ws://host:port` or `wss://host`).
    ///
    /// - Parameters:
    ///   - collections: Collections synced eagerly at normal priority.
    ///   - subscriptions: Further collections, each with its own priority and mode.
    ///   - profile: The device's capabilities (nil: a desktop on an unmetered network, in real
    ///     time).
    ///   - syncInterval: For a periodic device (`profile.realtime == false`), the time between
    ///     syncs (nil: 15 minutes).
    ///   - deferMeteredUploads: On a metered network, hold back large uploads until it is
    ///     unmetered (nil: yes).
    ///   - fallbackURLs: Other relays serving the same data, tried in turn when a connection
    ///     fails before its relay answered.
    ///   - tokens: Returns a JWT for the relay. The SDK calls it on a thread of its own, so it
    ///     may block while it refreshes one. Throw `TokenError.signedOut` to stop (the client
    ///     reports `SyncError.unauthorized`); any other error means no token right now, and is
    ///     retried with backoff.
    /// - Throws: `SyncError.invalidInput` for a bad collection, `SyncError.sync` if the client
    ///   cannot start.
    public static func start(
        _ store: Store,
        relayURL: String,
        collections: [String] = [],
        subscriptions: [CollectionSync] = [],
        profile: Profile? = nil,
        syncInterval: Duration? = nil,
        deferMeteredUploads: Bool? = nil,
        fallbackURLs: [String] = [],
        tokens: @escaping @Sendable () throws -> String
    ) throws -> SyncClient {
        let plain =
            subscriptions.isEmpty && profile == nil && syncInterval == nil
            && deferMeteredUploads == nil && fallbackURLs.isEmpty
        guard plain else {
            let eager = collections.map {
                CollectionSync(collection: $0, priority: .normal, onDemand: false)
            }
            let options = SyncOptions(
                relayUrl: relayURL,
                collections: eager + subscriptions,
                profile: profile ?? Profile(class: .desktop),
                syncIntervalMs: syncInterval.map(milliseconds),
                deferMeteredUploads: deferMeteredUploads,
                fallbackUrls: fallbackURLs)
            return try start(store, options: options, tokens: tokens)
        }
        return SyncClient(
            try withNativeErrors {
                try FfiSyncClient.start(
                    store: store.core, relayUrl: relayURL, collections: collections,
                    tokens: TokenClosure(tokens))
            })
    }

    /// Starts syncing `store` with every option in `options` (a record the app may keep);
    /// `tokens` as for the `start` with named options.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection, `SyncError.sync` if the client
    ///   cannot start.
    public static func start(
        _ store: Store, options: SyncOptions, tokens: @escaping @Sendable () throws -> String
    ) throws -> SyncClient {
        SyncClient(
            try withNativeErrors {
                try FfiSyncClient.startWith(
                    store: store.core, options: options, tokens: TokenClosure(tokens))
            })
    }

    // MARK: Status

    /// The current status.
    public var status: SyncStatus {
        core.status()
    }

    /// The current status, then every new one, until the stream terminates (when the task
    /// iterating it is cancelled, or when the stream and its iterator are released). Each read
    /// of this property is a stream of its own.
    public var statusUpdates: AsyncStream<SyncStatus> {
        subscribedStream(of: SyncStatus.self) { continuation in
            let forwarder = StatusForwarder(continuation)
            let subscription = core.watchStatus(listener: forwarder)
            forwarder.yieldCurrent { core.status() }
            return subscription
        }
    }

    /// What the current (or last) sync moved.
    public var stats: SyncStats {
        core.stats()
    }

    /// Why the last connection ended, if one did (and the client is not stopped).
    public var lastDisconnect: Disconnect? {
        core.lastDisconnect()
    }

    /// How many status, sync-error and ephemeral streams are subscribed now (0 once the client
    /// is stopped).
    public var subscriptionCount: UInt64 {
        core.subscriptionCount()
    }

    /// Waits until synced with nothing pending: suspends the calling task, never a thread.
    /// `timeout` counts in whole milliseconds (a negative one is `SyncError.invalidInput`). A
    /// cancelled task stops waiting at once (`CancellationError`).
    ///
    /// - Throws: `SyncError.unauthorized`, `.unreachable`, `.sync` (also once the client is
    ///   stopped), `.timeout`.
    @discardableResult
    public func waitSynced(timeout: Duration = .seconds(30)) async throws -> SyncStats {
        let timeoutMs = try milliseconds(timeout)
        let core = self.core
        return try await cancellable {
            try await withNativeErrorsAsync { try await core.waitSynced(timeoutMs: timeoutMs) }
        }
    }

    // MARK: Sync errors

    /// The documents that did not sync, each with why; their changes stay pending in the
    /// store, and an error clears once the document syncs.
    public var syncErrors: [DocSyncError] {
        core.syncErrors()
    }

    /// Each time a document does not sync, and each time one that did not syncs after all.
    public func syncErrorEvents() -> AsyncStream<SyncErrorEvent> {
        subscribedStream(of: SyncErrorEvent.self) { continuation in
            core.watchSyncErrors(listener: SyncErrorForwarder(continuation))
        }
    }

    // MARK: Ephemeral messages

    /// Sends `payload` (presence, a cursor; at most 4 KiB) to the other devices connected on
    /// document `id` now; never stored, and not kept while offline.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad id or a payload over 4 KiB,
    ///   `SyncError.rateLimited` past 30 per second, `SyncError.unreachable` while not
    ///   connected.
    public func sendEphemeral(_ payload: Data, on id: String) throws {
        try withNativeErrors { try core.sendEphemeral(docId: id, payload: payload) }
    }

    /// Each ephemeral message another device sends on document `id` (nil: on any document).
    ///
    /// - Throws: `SyncError.invalidInput` for a bad id.
    public func ephemeral(for id: String? = nil) throws -> AsyncStream<Ephemeral> {
        try subscribedStream(of: Ephemeral.self) { continuation in
            try withNativeErrors {
                try core.watchEphemeral(docId: id, listener: EphemeralForwarder(continuation))
            }
        }
    }

    // MARK: What syncs, and when

    /// Declares a new capability profile (say, the network became metered) on the live
    /// connection.
    public func setProfile(_ profile: Profile) {
        core.setProfile(profile: profile)
    }

    /// The network changed: metered or not, and its bandwidths in bytes per second (nil:
    /// unknown). The relay replans on the live connection.
    public func setNetwork(
        metered: Bool, downloadBytesPerS: UInt64? = nil, uploadBytesPerS: UInt64? = nil
    ) {
        core.setNetwork(
            metered: metered, downloadBytesPerS: downloadBytesPerS,
            uploadBytesPerS: uploadBytesPerS)
    }

    /// Replaces what is synced: removed collections stop, added ones sync at once.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad collection name.
    public func setSubscriptions(_ subscriptions: [CollectionSync]) throws {
        try withNativeErrors { try core.setSubscriptions(collections: subscriptions) }
    }

    /// The documents the relay announced and holds back, highest priority first.
    ///
    /// - Throws: `SyncError.storage`, or `SyncError.sync` once the client is stopped.
    public func deferred() throws -> [DeferredDoc] {
        try withNativeErrors { try core.deferred() }
    }

    /// Asks the relay for these documents now (deferred or on demand); returns at once.
    ///
    /// - Throws: `SyncError.invalidInput` for a bad id.
    public func fetch(_ ids: [String]) throws {
        try withNativeErrors { try core.fetch(docIds: ids) }
    }

    /// Local documents whose upload waits for an unmetered network.
    public var deferredUploads: [String] {
        core.deferredUploads()
    }

    /// Opens document `id`, fetching its content from the relay first when it is not here (on
    /// demand, deferred or evicted), waiting at most `timeout` (whole milliseconds). Suspends
    /// the calling task, never a thread.
    ///
    /// - Throws: `SyncError.unreachable` at once when the document is not here and the relay
    ///   is not connected, `SyncError.timeout`, `SyncError.invalidInput` for a bad id.
    public func `open`(_ id: String, timeout: Duration = .seconds(30)) async throws -> Document {
        let timeoutMs = try milliseconds(timeout)
        let core = self.core
        return Document(
            try await cancellable {
                try await withNativeErrorsAsync {
                    try await core.open(docId: id, timeoutMs: timeoutMs)
                }
            })
    }

    // MARK: Lifecycle

    /// Syncs now (a periodic device between its scheduled syncs).
    public func syncNow() {
        core.syncNow()
    }

    /// Disconnects and stays offline until `resume` (say, when the app goes to the background).
    public func pause() {
        core.pause()
    }

    /// Connects again after `pause`.
    public func resume() {
        core.resume()
    }

    /// The network is (un)available: stop retrying, or connect at once.
    public func setNetworkAvailable(_ available: Bool) {
        core.setNetworkAvailable(available: available)
    }

    /// Stops syncing (as releasing the client does); what is pending stays in the store for
    /// the next start. A `waitSynced` in progress fails at once with `SyncError.sync`.
    public func stop() {
        core.stop()
    }

    /// `stop()`, under the name other resources use.
    public func close() {
        stop()
    }
}

/// `duration` in whole milliseconds, computed exactly (no floating point) and saturating at
/// `UInt64.max`.
///
/// - Throws: `SyncError.invalidInput` for a negative duration (as Kotlin and Python refuse one).
func milliseconds(_ duration: Duration) throws -> UInt64 {
    let (seconds, attoseconds) = duration.components
    // A positive duration has no negative component, whichever way its parts are split.
    guard seconds >= 0, attoseconds >= 0 else {
        throw SyncError.invalidInput(message: "a timeout is not negative: \(duration)")
    }
    let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000)
    let (total, carry) = whole.addingReportingOverflow(
        UInt64(attoseconds / 1_000_000_000_000_000))
    return overflow || carry ? .max : total
}
