package dev.syncline


/**
 * What a Syncline call throws: one subclass per kind, each with the SDK's message. Catch
 * `SyncError` for any failure, or a subclass for one kind.
 */
sealed class SyncError(message: String, cause: Throwable? = null) : Exception(message, cause) {
    /** No such document (or it was deleted). */
    class NotFound(message: String) : SyncError(message)

    /** The document's content was evicted to stay within the storage budget: open it through
     *  the sync client to fetch it again. */
    class Evicted(message: String) : SyncError(message)

    /** A bad argument: an id, a path, a collection name, a value that does not fit. */
    class InvalidInput(message: String) : SyncError(message)

    /** The store's file failed (disk full, corrupt, opened by another process). */
    class Storage(message: String) : SyncError(message)

    /** The relay refused the token, or the token provider said the user signed out. */
    class Unauthorized(message: String) : SyncError(message)

    /** No connection to the relay now (or no token now): the client retries on its own. */
    class Unreachable(message: String) : SyncError(message)

    /** A wait ran out of time. */
    class Timeout(message: String) : SyncError(message)

    /** Syncing failed otherwise (a refused change, a stopped client). */
    class Sync(message: String) : SyncError(message)

    /** Too many calls of this kind in a short time (ephemeral messages). */
    class RateLimited(message: String) : SyncError(message)

    /** A document's content did not fit the type asked for: [path] (a JSON path such as
     *  `$.done`) names where. */
    class Decoding(val path: String, message: String, cause: Throwable) : SyncError(message, cause)
}

/** Throw from a [TokenProvider]: [SignedOut] stops the client (it reports
 *  [SyncError.Unauthorized]); anything else a provider throws means no token now, retried
 *  with backoff. */
sealed class TokenError(message: String) : Exception(message) {
    /** The user signed out or lost access: stop connecting. */
    class SignedOut(reason: String) : TokenError(reason)
}

/** Runs a call into the generated layer, its `FfiException` becoming the [SyncError] of the
 *  same kind. */
internal inline fun <T> native(call: () -> T): T =
    try {
        call()
    } catch (e: FfiException) {
        throw e.toSyncError()
    }

internal fun FfiException.toSyncError(): SyncError {
    val text = message ?: ""
    return when (this) {
        is FfiException.NotFound -> SyncError.NotFound(text)
        is FfiException.Evicted -> SyncError.Evicted(text)
        is FfiException.InvalidInput -> SyncError.InvalidInput(text)
        is FfiException.Storage -> SyncError.Storage(text)
        is FfiException.Unauthorized -> SyncError.Unauthorized(text)
        is FfiException.Unreachable -> SyncError.Unreachable(text)
        is FfiException.Timeout -> SyncError.Timeout(text)
        is FfiException.Sync -> SyncError.Sync(text)
        is FfiException.RateLimited -> SyncError.RateLimited(text)
    }
}
