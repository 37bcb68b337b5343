package dev.syncline

import kotlinx.coroutines.flow.Flow
import kotlinx.serialization.json.Json

/** One document: an Automerge document with an id `collection/name`. Every write is durable
 *  when its call returns. */
class Document internal constructor(internal val inner: FfiDocument) {
    /** `collection/name`. */
    val id: String get() = inner.id()

    /** The value at [path] (a JSON Pointer, `"/title"`), or null. */
    fun get(path: String): Value? = native { inner.get(path) }

    /** The whole content as JSON. */
    fun toJson(): String = native { inner.toJson() }

    /** The content as a `@Serializable` [T]; [SyncError.Decoding] names the path that did not
     *  fit. */
    inline fun <reified T> decode(json: Json = SynclineJson): T = decodeJson(json, serializerOf<T>(), toJson())

    /** Sets the value at [path]. */
    fun put(path: String, value: Value) = native { inner.put(path, value) }

    /** Sets the value at [path] from a `@Serializable` (or plain) [value]. */
    inline fun <reified T> set(path: String, value: T, json: Json = SynclineJson) =
        putJson(path, encodeJson(json, serializerOf<T>(), value))

    /** Sets the value at [path] from JSON. */
    fun putJson(path: String, json: String) = native { inner.putJson(path, json) }

    /** Deletes the value at [path]. */
    fun delete(path: String) = native { inner.delete(path) }

    /** Edits the text at [path]: deletes [delete] characters at [index], inserts [insert]. */
    fun spliceText(path: String, index: Long, delete: Long, insert: String) =
        native { inner.spliceText(path, index.toULong(), delete.toULong(), insert) }

    /** Adds [by] to the counter at [path]. */
    fun increment(path: String, by: Long = 1) = native { inner.increment(path, by) }

    /** Applies [ops] as one change (all or none), with an optional [message]. */
    fun apply(ops: List<WriteOp>, message: String? = null) = native { inner.apply(ops, message) }

    /** The current heads (the document's version). */
    fun heads(): List<String> = native { inner.heads() }

    /** Every change, oldest first. */
    fun history(): List<Change> = native { inner.history() }

    /** The document as it was at [heads]. */
    fun viewAt(heads: List<String>): DocumentView = native { DocumentView(inner.viewAt(heads)) }

    /** What changed between two versions, as patches. */
    fun diff(from: List<String>, to: List<String>): List<Patch> = native { inner.diff(from, to) }

    /** The concurrent values at [path] (one unless there is a conflict). */
    fun conflicts(path: String): List<Value> = native { inner.conflicts(path) }

    /** Resolves the conflict at [path] with [value]. */
    fun resolve(path: String, value: Value) = native { inner.resolve(path, value) }

    /** The sync priority. */
    var priority: Priority
        get() = native { inner.priority() }
        set(value) = native { inner.setPriority(value) }

    /** Every unresolved conflict in the document. */
    fun allConflicts(): List<Conflict> = native { inner.allConflicts() }

    /** Every change to this document, local and remote, while collected. */
    fun changes(): Flow<ChangeEvent> = listenerFlow { emit -> inner.watch(changeListener(emit)) }

    /** Each conflict in this document as a merge leaves it, while collected. */
    fun conflictEvents(): Flow<Conflict> = listenerFlow { emit -> inner.watchConflicts(conflictListener(emit)) }
}
