// JUnit tests of the Kotlin bindings against a real syncline-relay process (the Python suite
// mirrors them).

import java.io.File
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import uniffi.syncline_ffi.FfiChangeListener
import uniffi.syncline_ffi.FfiException
import uniffi.syncline_ffi.FfiStatus
import uniffi.syncline_ffi.FfiStatusListener
import uniffi.syncline_ffi.FfiStore
import uniffi.syncline_ffi.FfiSyncClient
import uniffi.syncline_ffi.FfiTokenProvider

/** A syncline-relay on 127.0.0.1 with a temporary data directory. */
class Relay {
    private val bin = System.getProperty("syncline.relay")
    private val dir: File = Files.createTempDirectory("relay").toFile()
    private val process: Process =
        ProcessBuilder(bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path)
            .redirectError(ProcessBuilder.Redirect.DISCARD)
            .start()
    val url: String

    init {
        val line = process.inputStream.bufferedReader().readLine()
        check(line.startsWith("syncline-relay listening on ")) { line }
        url = "ws://" + line.substringAfterLast(' ').trim()
    }

    fun token(device: String): String {
        val p = ProcessBuilder(
            bin, "token", "--data-dir", dir.path, "--user", "alice", "--device", device,
            "--read", "todos", "--write", "todos", "--ttl", "600",
        ).start()
        val out = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0) { "token failed" }
        return out
    }

    fun stop() {
        process.destroyForcibly().waitFor()
        dir.deleteRecursively()
    }
}

class Tokens(private val value: String) : FfiTokenProvider {
    override fun token(): String = value
}

class SynclineTest {
    private lateinit var relay: Relay
    private lateinit var dir: File

    @BeforeEach
    fun start() {
        relay = Relay()
        dir = Files.createTempDirectory("stores").toFile()
    }

    @AfterEach
    fun stop() {
        relay.stop()
        dir.deleteRecursively()
    }

    private fun open(name: String) = FfiStore.open(File(dir, "$name.db").path)

    private fun sync(store: FfiStore) {
        val client = FfiSyncClient.start(store, relay.url, listOf("todos"), Tokens(relay.token(store.deviceId())))
        runBlocking { client.waitSynced(20_000u) }
        client.stop()
    }

    @Test
    fun offlineWritesAreDurableAndPending() {
        val store = open("phone")
        val doc = store.createJson("todos", """{"title":"Buy milk","done":false}""")
        store.putJson(doc, "done", "true")
        assertEquals("""{"done":true,"title":"Buy milk"}""", store.getJson(doc))
        assertEquals(listOf(doc), store.pendingDocuments())
    }

    @Test
    fun twoDevicesSyncAndAListenerHearsTheRemoteChange() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"Walk the dog"}""")
        val heard = CountDownLatch(1)
        val subscription = laptop.watchCollection("todos", object : FfiChangeListener {
            override fun onChange(doc: String, remote: Boolean) {
                if (remote) heard.countDown()
            }
        })
        val statuses = CopyOnWriteArrayList<FfiStatus>()
        val phoneClient = FfiSyncClient.start(phone, relay.url, listOf("todos"), Tokens(relay.token(phone.deviceId())))
        val statusSubscription = phoneClient.watchStatus(object : FfiStatusListener {
            override fun onStatus(status: FfiStatus) {
                statuses.add(status)
            }
        })
        val laptopClient = FfiSyncClient.start(laptop, relay.url, listOf("todos"), Tokens(relay.token(laptop.deviceId())))
        runBlocking {
            phoneClient.waitSynced(20_000u)
            laptopClient.waitSynced(20_000u)
        }
        assertTrue(heard.await(20, TimeUnit.SECONDS))
        assertEquals("""{"title":"Walk the dog"}""", laptop.getJson(doc))
        assertTrue(statuses.any { it is FfiStatus.Synced }, statuses.toString())
        statusSubscription.cancel()
        subscription.cancel()
        phoneClient.stop()
        laptopClient.stop()
    }

    @Test
    fun aRefusedTokenIsATypedException() {
        val store = open("phone")
        val client = FfiSyncClient.start(store, relay.url, listOf("todos"), Tokens("not-a-jwt"))
        assertThrows<FfiException.Unauthorized> { runBlocking { client.waitSynced(20_000u) } }
        client.stop()
    }

    @Test
    fun aConflictIsInspectedAndResolved() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"Buy milk"}""")
        sync(phone)
        sync(laptop)
        phone.putJson(doc, "title", "\"Buy oat milk\"")
        laptop.putJson(doc, "title", "\"Buy almond milk\"")
        sync(phone)
        sync(laptop)
        assertEquals(listOf("\"Buy almond milk\"", "\"Buy oat milk\""), laptop.conflictsJson(doc, "title").sorted())
        laptop.resolveJson(doc, "title", "\"Buy milk (any)\"")
        assertEquals(listOf("\"Buy milk (any)\""), laptop.conflictsJson(doc, "title"))
    }

    @Test
    fun errorsArriveAsTypedExceptions() {
        val store = open("phone")
        assertThrows<FfiException.NotFound> { store.getJson("todos/nothing") }
        assertThrows<FfiException.InvalidInput> { store.list("Not A Collection") }
    }
}
