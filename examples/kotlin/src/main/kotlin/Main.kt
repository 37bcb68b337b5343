// Syncline from Kotlin: two devices and a local relay. The phone writes while offline, then
// connects and the laptop receives it; the laptop goes offline, edits, and reconnects, and the
// phone receives that. Run with the path of a `syncline-relay` binary:
//     mvn -f examples/kotlin/pom.xml package exec:exec -Drelay.bin=/path/to/syncline-relay
package dev.syncline.examples

import dev.syncline.ChangeEvent
import dev.syncline.Store
import dev.syncline.SyncClient
import dev.syncline.SyncError
import dev.syncline.TokenProvider
import java.io.File
import java.nio.file.Files
import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Deferred
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.yield
import kotlinx.serialization.Serializable

/** The app's own type: a document's content, decoded. */
@Serializable
data class Todo(val title: String, val done: Boolean = false)

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

    /** Tokens for [device], allowed to read and write the `todos` collection. */
    fun tokens(device: String): TokenProvider {
        val p = ProcessBuilder(
            bin, "token", "--data-dir", dir.path, "--user", "alice", "--device", device,
            "--read", "todos", "--write", "todos", "--ttl", "3600",
        ).start()
        val token = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0) { "minting a token failed" }
        return TokenProvider { token }
    }

    override fun close() {
        process.destroyForcibly().waitFor()
    }
}

fun step(text: String) = println("• $text")

fun run(relayBin: String) {
    // The native library comes out of the jar (a JNA resource), not from a path set here.
    check(System.getProperty("jna.library.path") == null) { "jna.library.path is set" }
    val dir = Files.createTempDirectory("syncline-example").toFile()
    try {
        LocalRelay(relayBin, File(dir, "relay")).use { relay ->
            Store.open(File(dir, "phone.db").path).use { phone ->
                Store.open(File(dir, "laptop.db").path).use { laptop ->
                    runBlocking { demo(relay, phone, laptop) }
                }
            }
        }
    } finally {
        dir.deleteRecursively()
    }
}

/** The first change from another device to [docId]; returns once the flow is collected
 *  (subscribed), so that nothing that syncs after it can be missed. */
suspend fun CoroutineScope.remoteChange(store: Store, docId: String): Deferred<ChangeEvent> {
    val subscribed = store.subscriptionCount + 1
    val change = async { store.changes("todos").first { it.remote && it.doc == docId } }
    withTimeout(10_000) { while (store.subscriptionCount < subscribed) yield() }
    return change
}

suspend fun demo(relay: LocalRelay, phone: Store, laptop: Store) = coroutineScope {
    // 1. Offline: no client runs yet, and the write is durable at once.
    val todo = phone.insert("todos", Todo("Buy milk"))
    step("phone, offline: created ${todo.id}; pending: ${phone.pendingDocuments()}")

    // 2. Both devices connect; the laptop hears the phone's todo arrive.
    val heard = remoteChange(laptop, todo.id)
    val phoneSync = SyncClient.start(phone, relay.url, listOf("todos"), tokens = relay.tokens(phone.deviceId))
    val laptopSync = SyncClient.start(laptop, relay.url, listOf("todos"), tokens = relay.tokens(laptop.deviceId))
    phoneSync.awaitSynced(30.seconds)
    laptopSync.awaitSynced(30.seconds)
    val arrived: ChangeEvent = withTimeout(30_000) { heard.await() }
    step("laptop, online: received ${laptop.document(arrived.doc).decode<Todo>()}")

    // 3. The laptop goes offline and edits; the edit waits in its store.
    laptopSync.pause()
    laptop.document(todo.id).set("/done", true)
    step("laptop, offline: marked done; pending: ${laptop.pendingDocuments()}")

    // 4. It reconnects: the pending edit goes out, and the phone receives it.
    val back = remoteChange(phone, todo.id)
    laptopSync.resume()
    laptopSync.awaitSynced(30.seconds)
    withTimeout(30_000) { back.await() }
    val seen = phone.document(todo.id).decode<Todo>()
    check(seen.done) { "the phone sees $seen" }
    step("laptop reconnected; phone now has $seen")
    phoneSync.close()
    laptopSync.close()
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
    } catch (e: SyncError) {
        System.err.println("syncline error: ${e.message}")
        exitProcess(1)
    } catch (e: IllegalStateException) {
        System.err.println("failed: ${e.message}")
        exitProcess(1)
    }
    exitProcess(0)
}
