// The README's example, compiled and run as written: the code between the markers below is
// the README's block (a Rust test, tests/tests/bindings_surface.rs, checks they are the same).

import dev.syncline.Store
import dev.syncline.SyncClient
import java.io.ByteArrayOutputStream
import java.io.PrintStream
import java.nio.file.Files
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.Serializable
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test

// readme-example: begin
@Serializable
data class Todo(val title: String, val done: Boolean = false)

suspend fun example(relayUrl: String, fetchToken: () -> String) = coroutineScope {
    Store.open("phone.db").use { store ->
        val doc = store.insert("todos", Todo("Buy milk")) // durable now, offline or not
        SyncClient.start(store, relayUrl, listOf("todos")) { fetchToken() }.use { client ->
            client.awaitSynced(30.seconds) // the relay has it
            val change = async(start = CoroutineStart.UNDISPATCHED) {
                store.changes("todos").first() // subscribed from here on
            }
            doc.set("/done", true)
            val todo = store.document(change.await().doc).decode<Todo>()
            println(todo) // Todo(title=Buy milk, done=true)
        }
    }
}
// readme-example: end

class ReadmeExampleTest {
    @Test
    fun theReadmeExampleRunsAsWritten() {
        val relay = Relay()
        val printed = ByteArrayOutputStream()
        val stdout = System.out
        try {
            // "phone.db" is relative: the example runs in the test's working directory, so the
            // store goes there and is removed after. Its device id names the token's device.
            val file = java.io.File("phone.db")
            val device = Store.open(file.path).use { it.deviceId }
            val token = relay.token(device)
            System.setOut(PrintStream(printed, true))
            runBlocking { example(relay.url) { token } }
            System.setOut(stdout)
            assertEquals("Todo(title=Buy milk, done=true)\n", printed.toString())
        } finally {
            System.setOut(stdout)
            relay.stop()
            listOf("", "-wal", "-shm", ".lock").forEach { Files.deleteIfExists(java.nio.file.Path.of("phone.db$it")) }
        }
    }
}
