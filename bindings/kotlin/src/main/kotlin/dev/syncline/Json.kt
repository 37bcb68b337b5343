package dev.syncline

import kotlinx.serialization.DeserializationStrategy
import kotlinx.serialization.KSerializer
import kotlinx.serialization.MissingFieldException
import kotlinx.serialization.SerializationException
import kotlinx.serialization.SerializationStrategy
import kotlinx.serialization.json.Json
import kotlinx.serialization.serializer

/**
 * How documents map to `@Serializable` classes: keys a class does not declare are ignored
 * (another device, or a newer version of the app, may have added fields), and defaults are
 * written out.
 */
val SynclineJson: Json = Json {
    ignoreUnknownKeys = true
    encodeDefaults = true
}

/** The serializer of [T]; a class that is not `@Serializable` is [SyncError.InvalidInput]. */
@PublishedApi
internal inline fun <reified T> serializerOf(): KSerializer<T> =
    try {
        serializer<T>()
    } catch (e: SerializationException) {
        throw SyncError.InvalidInput(e.message ?: "${T::class} is not serializable")
    }

@PublishedApi
internal fun <T> encodeJson(json: Json, serializer: SerializationStrategy<T>, value: T): String =
    try {
        json.encodeToString(serializer, value)
    } catch (e: SerializationException) {
        throw SyncError.InvalidInput(e.message ?: "cannot encode the value")
    }

@PublishedApi
internal fun <T> decodeJson(json: Json, deserializer: DeserializationStrategy<T>, text: String): T =
    try {
        json.decodeFromString(deserializer, text)
    } catch (e: SerializationException) {
        throw SyncError.Decoding(pathOf(e), e.message ?: "the content does not fit", e)
    } catch (e: IllegalArgumentException) {
        // kotlinx.serialization reports some mismatches (a class's own `require`) this way.
        throw SyncError.Decoding("$", e.message ?: "the content does not fit", e)
    }

/** The JSON path kotlinx.serialization names in its message (`at path: $.done`), with the
 *  missing field appended when one is missing. */
private fun pathOf(e: SerializationException): String {
    val named = Regex("""at path:? (\$\S*)""").find(e.message ?: "")?.groupValues?.get(1)
    val base = named?.trimEnd('.', ',') ?: "$"
    if (e is MissingFieldException && e.missingFields.size == 1) {
        return "$base.${e.missingFields.single()}"
    }
    return base
}
