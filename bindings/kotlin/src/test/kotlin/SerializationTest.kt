// Documents in and out of `@Serializable` classes, and the typed error naming the path that
// did not fit.

import dev.syncline.Store
import dev.syncline.SyncError
import java.io.File
import java.nio.file.Files
import kotlinx.serialization.Serializable
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

@Serializable
data class TaggedTodo(val title: String, val done: Boolean = false, val tags: List<String> = emptyList())

@Serializable
data class Strict(val title: String, val done: Boolean)

@Serializable
data class Nested(val todo: TaggedTodo)

data class NotSerializable(val title: String)

class SerializationTest {
    private lateinit var dir: File

    @BeforeEach
    fun start() {
        dir = Files.createTempDirectory("stores").toFile()
    }

    @AfterEach
    fun stop() {
        dir.deleteRecursively()
    }

    @Test
    fun aSerializableClassGoesInAndComesBack() {
        Store.open(File(dir, "phone.db").path).use { store ->
            val doc = store.insert("todos", TaggedTodo("Buy milk", tags = listOf("home")))
            assertEquals(TaggedTodo("Buy milk", false, listOf("home")), doc.decode<TaggedTodo>())
            doc.set("/done", true)
            assertEquals(TaggedTodo("Buy milk", true, listOf("home")), store.document(doc.id).decode<TaggedTodo>())
            // A field the class does not declare (another device's newer app) is ignored.
            doc.set("/priority", 3)
            assertEquals("Buy milk", doc.decode<TaggedTodo>().title)
            // A view of an earlier version decodes the same way.
            val first = doc.history().first().hash
            assertEquals(TaggedTodo("Buy milk", false, listOf("home")), doc.viewAt(listOf(first)).decode<TaggedTodo>())
        }
    }

    @Test
    fun aDocumentThatDoesNotFitNamesThePath() {
        Store.open(File(dir, "phone.db").path).use { store ->
            val wrongType = store.document(store.createJson("todos", """{"title":"Buy milk","done":"yes"}"""))
            val error = assertThrows<SyncError.Decoding> { wrongType.decode<Strict>() }
            assertEquals("$.done", error.path, error.message)
            val missing = store.document(store.createJson("todos", """{"title":"Buy milk"}"""))
            assertEquals("$.done", assertThrows<SyncError.Decoding> { missing.decode<Strict>() }.path)
            val nested = store.document(store.createJson("todos", """{"todo":{"title":7}}"""))
            val deep = assertThrows<SyncError.Decoding> { nested.decode<Nested>() }
            assertTrue(deep.path.startsWith("$.todo"), deep.path)
            // A SyncError like any other: one catch covers it.
            assertTrue(deep is SyncError)
            // A class that is not @Serializable is refused the same way, not with the
            // serialization library's own exception.
            assertThrows<SyncError.InvalidInput> { store.insert("todos", NotSerializable("x")) }
            assertThrows<SyncError.InvalidInput> { wrongType.decode<NotSerializable>() }
        }
    }
}
