package dev.syncline

import java.util.concurrent.ConcurrentHashMap
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
internal fun <T> listenerFlow(
    feeds: Feeds? = null,
    subscribe: ((T) -> Unit) -> FfiSubscription,
): Flow<T> = flow {
    val events = Channel<T>(Channel.UNLIMITED)
    val subscription = native { subscribe { events.trySend(it) } }
    feeds?.add(events)
    try {
        for (event in events) emit(event)
    } finally {
        feeds?.remove(events)
        subscription.cancel()
        subscription.close()
    }
}

/**
 * The flows a sync client feeds while they are collected: when the client stops, the SDK
 * drops their listeners, and [endAll] ends each collection after the events it holds.
 */
internal class Feeds {
    private val open = ConcurrentHashMap.newKeySet<Channel<*>>()

    fun add(channel: Channel<*>) {
        open.add(channel)
    }

    fun remove(channel: Channel<*>) {
        open.remove(channel)
    }

    fun endAll() {
        open.forEach { it.close() }
    }
}
