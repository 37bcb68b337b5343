package dev.syncline

import kotlinx.coroutines.flow.Flow
import kotlinx.serialization.json.Json

/**
 * The local store: one SQLite file of Automerge documents. Every write is durable when the
 * call returns, online or not. Safe to share between threads.
 *
 * `close()` (or `use { }`) releases this handle; the file closes once the documents and sync
 * clients made from it are released too.
 */
class Store private constructor(internal val inner: FfiStore) : AutoCloseable {
    companion object {
        /** Opens (or creates) the store file at [path]; [SyncError.Storage] if it cannot. */
        fun open(path: String, options: StoreOptions? = null): Store = native {
            Store(if (options == null) FfiStore.open(path) else FfiStore.openWith(path, options))
        }
    }

    /** This device's id, in hex. */
    val deviceId: String get() = inner.deviceId()

    /** Creates a document in [collection] with [content] (a [Value.Object]). */
    fun create(collection: String, content: Value): Document =
        native { Document(inner.create(collection, content)) }

    /** Creates a document in [collection] from a `@Serializable` [value]. */
    inline fun <reified T> insert(collection: String, value: T, json: Json = SynclineJson): Document {
        val id = createJson(collection, encodeJson(json, serializerOf<T>(), value))
        return document(id)
    }

    /** Creates the document [docId] (`collection/name`) with a sync [priority];
     *  [SyncError.InvalidInput] if it exists. */
    fun createAt(docId: String, content: Value, priority: Priority = Priority.NORMAL): Document =
        native { Document(inner.createAt(docId, content, priority)) }

    /** Creates a document from a JSON object and returns its id. */
    fun createJson(collection: String, json: String): String = native { inner.createJson(collection, json) }

    /** The document [docId]; [SyncError.NotFound] if there is none. */
    fun document(docId: String): Document = native { Document(inner.document(docId)) }

    /** What the store knows of a document without loading it. */
    fun info(docId: String): DocumentInfo = native { inner.info(docId) }

    /** Sets the value at [path] (a JSON Pointer) of [docId] from JSON. */
    fun putJson(docId: String, path: String, json: String) = native { inner.putJson(docId, path, json) }

    /** The content of [docId] as JSON. */
    fun getJson(docId: String): String = native { inner.getJson(docId) }

    /** Deletes a document (the deletion syncs like a change). */
    fun delete(docId: String) = native { inner.delete(docId) }

    /** The ids of the documents in [collection]. */
    fun list(collection: String): List<String> = native { inner.list(collection) }

    /** [info] of every document in [collection]. */
    fun listInfo(collection: String): List<DocumentInfo> = native { inner.listInfo(collection) }

    /** The documents with changes the relay has not acknowledged. */
    fun pendingDocuments(): List<String> = native { inner.pendingDocuments() }

    /** The changes the relay has not acknowledged, oldest first. */
    fun pendingChanges(): List<PendingChange> = native { inner.pendingChanges() }

    /** The concurrent values at [path] of [docId], as JSON (one unless there is a conflict). */
    fun conflictsJson(docId: String, path: String): List<String> = native { inner.conflictsJson(docId, path) }

    /** Resolves the conflict at [path] of [docId] with one value, from JSON. */
    fun resolveJson(docId: String, path: String, json: String) = native { inner.resolveJson(docId, path, json) }

    /** The last [limit] connections, newest first: bytes, round trips, how each ended. */
    fun syncHistory(limit: Int = 20): List<SyncRecord> {
        require(limit >= 0) { "a limit is not negative: $limit" }
        return native { inner.syncHistory(limit.toUInt()) }
    }

    /** The documents with an unresolved conflict. */
    fun conflictedDocuments(): List<String> = native { inner.conflictedDocuments() }

    /** How conflicts in [collection] resolve on their own (null: they stay, to inspect). */
    fun setConflictStrategy(collection: String, strategy: ConflictStrategy?) =
        native { inner.setConflictStrategy(collection, strategy) }

    /** Resolves each new conflict in [collection] with the value [resolve] returns (a function
     *  of the conflict alone, so that every device picks the same). Called on an SDK thread. */
    fun setConflictResolver(collection: String, resolve: (Conflict) -> Value) = native {
        inner.setConflictResolver(collection, object : FfiConflictResolver {
            override fun resolve(conflict: Conflict): Value = resolve(conflict)
        })
    }

    /** Every change to [collection], local and remote, while collected. */
    fun changes(collection: String): Flow<ChangeEvent> =
        listenerFlow { emit -> inner.watchCollection(collection, changeListener(emit)) }

    /** Every change to every collection, while collected. */
    fun changes(): Flow<ChangeEvent> = listenerFlow { emit -> inner.watchAll(changeListener(emit)) }

    /** Each conflict as a merge leaves it, in [collection] (in any, with null). */
    fun conflictEvents(collection: String? = null): Flow<Conflict> = listenerFlow { emit ->
        if (collection == null) {
            inner.watchConflicts(conflictListener(emit))
        } else {
            inner.watchCollectionConflicts(collection, conflictListener(emit))
        }
    }

    /** How many change and conflict flows are collected now. */
    val subscriptionCount: Long get() = inner.subscriptionCount().toLong()

    /** Releases this handle; later calls throw [IllegalStateException]. */
    override fun close() = inner.close()
}

internal fun changeListener(emit: (ChangeEvent) -> Unit) = object : FfiChangeListener {
    override fun onChange(event: ChangeEvent) = emit(event)
}

internal fun conflictListener(emit: (Conflict) -> Unit) = object : FfiConflictListener {
    override fun onConflict(conflict: Conflict) = emit(conflict)
}
