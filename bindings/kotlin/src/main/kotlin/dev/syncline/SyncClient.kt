package dev.syncline

import java.util.concurrent.atomic.AtomicBoolean
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow

/**
 * Gives the sync client a token whenever it needs one. Called on an SDK thread, where it may
 * block (a refresh over the network). Throw [TokenError.SignedOut] to stop the client;
 * anything else it throws means no token now, and the client retries with backoff.
 */
fun interface TokenProvider {
    /** A token for this device. */
    fun token(): String
}

/**
 * Syncs a store's collections with a relay, in the background, for as long as it runs: what
 * is written offline goes up when a connection exists, what others write comes down. No call
 * blocks on the network; [awaitSynced] and [open] suspend.
 *
 * `close()` (or `use { }`) stops it.
 */
class SyncClient private constructor(private val inner: FfiSyncClient) : AutoCloseable {
    companion object {
        /**
         * Starts syncing [store]'s [collections] (normal priority, content kept local) and
         * [subscriptions] (each with its priority, and on demand or not) with the relay at
         * [relayUrl] (`wss://host`), with tokens from [tokens] (last, so that it can be a
         * trailing lambda: `SyncClient.start(store, url, listOf("todos")) { fetchToken() }`).
         *
         * Without a [profile] the device is a desktop on an unmetered network, in real time;
         * [syncInterval] spaces the syncs of a periodic device (`profile.realtime = false`);
         * [deferMeteredUploads] holds large uploads back on a metered network (null: yes);
         * [fallbackUrls] are relays serving the same data, tried in turn.
         */
        fun start(
            store: Store,
            relayUrl: String,
            collections: List<String> = emptyList(),
            subscriptions: List<CollectionSync> = emptyList(),
            profile: Profile? = null,
            syncInterval: Duration? = null,
            deferMeteredUploads: Boolean? = null,
            fallbackUrls: List<String> = emptyList(),
            tokens: TokenProvider,
        ): SyncClient = native {
            val provider = tokenProvider(tokens)
            val plain = subscriptions.isEmpty() && profile == null && syncInterval == null &&
                deferMeteredUploads == null && fallbackUrls.isEmpty()
            if (plain) {
                SyncClient(FfiSyncClient.start(store.inner, relayUrl, collections, provider))
            } else {
                val options = SyncOptions(
                    relayUrl = relayUrl,
                    collections = collections.map { CollectionSync(it, Priority.NORMAL) } + subscriptions,
                    profile = profile ?: Profile(DeviceClass.DESKTOP),
                    syncIntervalMs = syncInterval?.let { milliseconds(it) },
                    deferMeteredUploads = deferMeteredUploads,
                    fallbackUrls = fallbackUrls,
                )
                SyncClient(FfiSyncClient.startWith(store.inner, options, provider))
            }
        }

        private fun tokenProvider(tokens: TokenProvider) = object : FfiTokenProvider {
            override fun token(): String = try {
                tokens.token()
            } catch (e: TokenError.SignedOut) {
                throw FfiTokenException.SignedOut(e.message ?: "signed out")
            } catch (e: Exception) {
                throw FfiTokenException.Unavailable(e.message ?: e.javaClass.name)
            }
        }
    }

    /** The status and the listener feeding it, subscribed on first use of [status]. */
    private val statusState = lazy { StatusState(inner) }

    /** Ends the flows this client feeds when it stops. */
    private val feeds = Feeds()

    private val closed = AtomicBoolean(false)

    /** Offline, connecting, syncing (with progress), synced, or an error: the status now, and
     *  each change of it. (Its listener stays subscribed until [close].) */
    val status: StateFlow<SyncStatus> get() = statusState.value.flow

    /** Totals of the current connection. */
    val stats: SyncStats get() = inner.stats()

    /** Why the last connection ended (null while the first is up or pending). */
    val lastDisconnect: Disconnect? get() = inner.lastDisconnect()

    /** How many status, sync-error and ephemeral listeners are subscribed now. */
    val subscriptionCount: Long get() = inner.subscriptionCount().toLong()

    /** Suspends until everything is synced and nothing is pending, or throws
     *  ([SyncError.Unauthorized], [SyncError.Unreachable], [SyncError.Sync],
     *  [SyncError.Timeout]). */
    suspend fun awaitSynced(timeout: Duration = 30.seconds): SyncStats =
        native { inner.waitSynced(milliseconds(timeout)) }

    /** The document [docId], fetched from the relay first when its content is not here (on
     *  demand, deferred, evicted). */
    suspend fun open(docId: String, timeout: Duration = 30.seconds): Document =
        native { Document(inner.open(docId, milliseconds(timeout))) }

    /** The documents that did not sync, each with why (their changes stay pending). */
    fun syncErrors(): List<DocSyncError> = inner.syncErrors()

    /** Each document that fails to sync, and each that syncs again, while collected (until the
     *  client stops). */
    fun syncErrorEvents(): Flow<SyncErrorEvent> = listenerFlow(feeds) { emit ->
        inner.watchSyncErrors(object : FfiSyncErrorListener {
            override fun onSyncError(event: SyncErrorEvent) = emit(event)
        })
    }

    /** Sends presence (a cursor, "typing") to the devices connected on [docId] now; never
     *  stored. [SyncError.RateLimited] past 30 a second. */
    fun sendEphemeral(docId: String, payload: ByteArray) = native { inner.sendEphemeral(docId, payload) }

    /** What other devices send on [docId] (on any document, with null), while collected
     *  (until the client stops). */
    fun ephemeral(docId: String? = null): Flow<Ephemeral> = listenerFlow(feeds) { emit ->
        inner.watchEphemeral(docId, object : FfiEphemeralListener {
            override fun onEphemeral(message: Ephemeral) = emit(message)
        })
    }

    /** Declares a new profile to the relay (on the live connection). */
    fun setProfile(profile: Profile) = inner.setProfile(profile)

    /** The network changed: metered or not, and its bandwidth if known. */
    fun setNetwork(metered: Boolean, downloadBytesPerS: Long? = null, uploadBytesPerS: Long? = null) {
        require((downloadBytesPerS ?: 0) >= 0 && (uploadBytesPerS ?: 0) >= 0) {
            "a bandwidth is not negative: $downloadBytesPerS, $uploadBytesPerS"
        }
        inner.setNetwork(metered, downloadBytesPerS?.toULong(), uploadBytesPerS?.toULong())
    }

    /** Syncs these collections from now on. */
    fun setSubscriptions(collections: List<CollectionSync>) = native { inner.setSubscriptions(collections) }

    /** The documents the relay listed but did not send, each with why. */
    fun deferred(): List<DeferredDoc> = native { inner.deferred() }

    /** Fetches deferred documents in the background. */
    fun fetch(docIds: List<String>) = native { inner.fetch(docIds) }

    /** Documents whose upload waits for an unmetered network. */
    fun deferredUploads(): List<String> = inner.deferredUploads()

    /** Syncs now (a periodic device between its scheduled syncs). */
    fun syncNow() = inner.syncNow()

    /** Disconnects and stays offline until [resume]. */
    fun pause() = inner.pause()

    /** Connects again after [pause]. */
    fun resume() = inner.resume()

    /** The network is (un)available: stop retrying, or connect at once. */
    fun setNetworkAvailable(available: Boolean) = inner.setNetworkAvailable(available)

    /** Stops syncing; what is pending stays in the store. The flows the client feeds end, and
     *  [status] shows the stopped client's status. */
    fun stop() {
        inner.stop()
        feeds.endAll()
        if (statusState.isInitialized()) statusState.value.refresh()
    }

    /** Stops syncing and releases the client (once: later calls do nothing). */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        stop()
        if (statusState.isInitialized()) statusState.value.close()
        inner.close()
    }
}

/**
 * The status as a [StateFlow], fed by a listener. The status read when subscribing is set
 * only if the listener has not set one yet (under the same lock): the SDK sets a status before
 * it calls listeners, so a change racing the read is never overwritten by the older value.
 */
private class StatusState(private val inner: FfiSyncClient) {
    private val lock = Any()
    private var delivered = false
    private val state: MutableStateFlow<SyncStatus>
    private val subscription: FfiSubscription
    val flow: StateFlow<SyncStatus>

    init {
        state = MutableStateFlow(inner.status())
        flow = state.asStateFlow()
        subscription = inner.watchStatus(object : FfiStatusListener {
            override fun onStatus(status: SyncStatus) {
                synchronized(lock) {
                    delivered = true
                    state.value = status
                }
            }
        })
        refreshUnlessDelivered()
    }

    private fun refreshUnlessDelivered() {
        val now = inner.status()
        synchronized(lock) {
            if (!delivered) state.value = now
        }
    }

    /** The status now (the client stopped: its listeners are gone). */
    fun refresh() {
        state.value = inner.status()
    }

    fun close() {
        subscription.cancel()
        subscription.close()
    }
}

/** A duration as the facade's milliseconds; a negative one is refused. */
private fun milliseconds(duration: Duration): ULong {
    require(!duration.isNegative()) { "a timeout is not negative: $duration" }
    return duration.inWholeMilliseconds.toULong()
}
