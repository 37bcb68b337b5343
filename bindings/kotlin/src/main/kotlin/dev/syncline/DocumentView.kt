package dev.syncline

import kotlinx.serialization.json.Json

/** A document as it was at some heads (read only). */
class DocumentView internal constructor(internal val inner: FfiDocumentView) {
    /** The heads this view shows. */
    val heads: List<String> get() = inner.heads()

    /** The value at [path], or null. */
    fun get(path: String): Value? = native { inner.get(path) }

    /** The whole content as JSON. */
    fun toJson(): String = native { inner.toJson() }

    /** The content as a `@Serializable` [T]. */
    inline fun <reified T> decode(json: Json = SynclineJson): T = decodeJson(json, serializerOf<T>(), toJson())
}
