// Syncline from Kotlin: two devices and a local relay. The phone writes while offline, then
// connects and the laptop receives it; the laptop goes offline, edits, and reconnects, and the
// phone receives that. Run with the path of a `syncline-relay` binary:
//     mvn -f examples/kotlin/pom.xml package exec:exec -Drelay.bin=/path/to/syncline-relay
package dev.syncline.examples

import java.io.File
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking
import dev.syncline.ffi.ChangeEvent
import dev.syncline.ffi.FfiChangeListener
import dev.syncline.ffi.FfiException
import dev.syncline.ffi.FfiStore
import dev.syncline.ffi.FfiSyncClient
import dev.syncline.ffi.FfiTokenProvider
import dev.syncline.ffi.Value

/** A `syncline-relay serve` on 127.0.0.1 with its data in [dir]; its tokens are minted by
 *  the same binary from the development key it creates there. */
class LocalRelay(private val bin: String, private val dir: File) : AutoCloseable {
    private val process: Process =
        ProcessBuilder(bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path)
            .redirectError(ProcessBuilder.Redirect.DISCARD)
            .start()
    val url: String

    init {
        val line = process.inputStream.bufferedReader().readLine()
            ?: error("the relay exited before listening")
        check(line.startsWith("syncline-relay listening on ")) { line }
        url = "ws://" + line.substringAfterLast(' ').trim()
    }

    /** A token for [device] that may read and write the `todos` collection. */
    fun tokens(device: String): FfiTokenProvider {
        val p = ProcessBuilder(
            bin, "token", "--data-dir", dir.path, "--user", "alice", "--device", device,
            "--read", "todos", "--write", "todos", "--ttl", "3600",
        ).start()
        val token = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0) { "minting a token failed" }
        return object : FfiTokenProvider {
            override fun token(): String = token
        }
    }

    override fun close() {
        process.destroyForcibly().waitFor()
    }
}

/** Counts down when a change from another device reaches [doc]'s collection. */
class RemoteChange(private val doc: String) : FfiChangeListener {
    val arrived = CountDownLatch(1)

    override fun onChange(event: ChangeEvent) {
        if (event.remote && event.doc == doc) arrived.countDown()
    }
}

fun step(text: String) = println("• $text")

fun run(relayBin: String) {
    val dir = Files.createTempDirectory("syncline-example").toFile()
    try {
        LocalRelay(relayBin, File(dir, "relay")).use { relay ->
            FfiStore.open(File(dir, "phone.db").path).use { phone ->
                FfiStore.open(File(dir, "laptop.db").path).use { laptop ->
                    demo(relay, phone, laptop)
                }
            }
        }
    } finally {
        dir.deleteRecursively()
    }
}

fun demo(relay: LocalRelay, phone: FfiStore, laptop: FfiStore) {
    // 1. Offline: no client runs yet, and the write is durable at once.
    val todo = phone.create("todos", Value.Object(mapOf("title" to Value.Str("Buy milk"))))
    step("phone, offline: created ${todo.id()}; pending: ${phone.pendingDocuments()}")

    // 2. Both devices connect; the laptop hears the phone's todo arrive.
    val heard = RemoteChange(todo.id())
    val listening = laptop.watchCollection("todos", heard)
    val phoneSync = FfiSyncClient.start(phone, relay.url, listOf("todos"), relay.tokens(phone.deviceId()))
    val laptopSync = FfiSyncClient.start(laptop, relay.url, listOf("todos"), relay.tokens(laptop.deviceId()))
    runBlocking {
        phoneSync.waitSynced(30_000u)
        laptopSync.waitSynced(30_000u)
    }
    check(heard.arrived.await(30, TimeUnit.SECONDS)) { "the laptop never heard the todo" }
    step("laptop, online: received ${laptop.getJson(todo.id())}")
    listening.cancel()

    // 3. The laptop goes offline and edits; the edit waits in its store.
    laptopSync.pause()
    laptop.document(todo.id()).put("/done", Value.Bool(true))
    step("laptop, offline: marked done; pending: ${laptop.pendingDocuments()}")

    // 4. It reconnects: the pending edit goes out, and the phone receives it.
    val back = RemoteChange(todo.id())
    val phoneListening = phone.watchCollection("todos", back)
    laptopSync.resume()
    runBlocking { laptopSync.waitSynced(30_000u) }
    check(back.arrived.await(30, TimeUnit.SECONDS)) { "the phone never heard the edit" }
    val seen = phone.document(todo.id()).get("/done")
    check(seen == Value.Bool(true)) { "the phone sees done = $seen" }
    step("laptop reconnected; phone now has ${phone.getJson(todo.id())}")
    phoneListening.cancel()
    phoneSync.stop()
    laptopSync.stop()
    step("converged: both devices hold the same todo")
}

fun main(args: Array<String>) {
    val relayBin = args.firstOrNull() ?: System.getenv("SYNCLINE_RELAY_BIN")
    if (relayBin == null) {
        System.err.println("usage: Main <path to syncline-relay> (or set SYNCLINE_RELAY_BIN)")
        exitProcess(2)
    }
    try {
        run(relayBin)
    } catch (e: FfiException) {
        System.err.println("syncline error: ${e.message}")
        exitProcess(1)
    } catch (e: IllegalStateException) {
        System.err.println("failed: ${e.message}")
        exitProcess(1)
    }
    exitProcess(0)
}
