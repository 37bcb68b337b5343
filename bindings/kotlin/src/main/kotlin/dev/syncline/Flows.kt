package dev.syncline

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow

/**
 * A listener of the generated layer as a cold [Flow]. Collecting subscribes at once, in the
 * collector's coroutine before its first suspension (so a collector started with
 * `CoroutineStart.UNDISPATCHED` is subscribed when `launch` returns), and the collector's end
 * (cancelled, failed, or done, as with `first()`) cancels the subscription.
 *
 * The SDK calls listeners on its own threads (the writer's, the sync thread), which must never
 * block: events go into an unbounded buffer that the collector drains.
 */
internal fun <T> listenerFlow(subscribe: ((T) -> Unit) -> FfiSubscription): Flow<T> = flow {
    val events = Channel<T>(Channel.UNLIMITED)
    val subscription = native { subscribe { events.trySend(it) } }
    try {
        for (event in events) emit(event)
    } finally {
        subscription.cancel()
        subscription.close()
    }
}
