// The Kotlin bindings through their native API (package dev.syncline), against a real relay.
// Run by `cargo xtask test kotlin`; the Python and Swift suites mirror these tests.

import dev.syncline.ChangeEvent
import dev.syncline.CollectionSync
import dev.syncline.Conflict
import dev.syncline.ConflictStrategy
import dev.syncline.DeferReason
import dev.syncline.DeviceClass
import dev.syncline.Disconnect
import dev.syncline.Durability
import dev.syncline.PatchAction
import dev.syncline.Priority
import dev.syncline.Profile
import dev.syncline.Store
import dev.syncline.StoreOptions
import dev.syncline.SyncClient
import dev.syncline.SyncEnd
import dev.syncline.SyncError
import dev.syncline.SyncErrorEvent
import dev.syncline.SyncErrorKind
import dev.syncline.SyncStatus
import dev.syncline.TokenError
import dev.syncline.TokenProvider
import dev.syncline.Value
import dev.syncline.WriteOp
import java.io.File
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

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

    fun token(device: String, read: String = "todos", write: String = "todos"): String {
        val p = ProcessBuilder(
            bin, "token", "--data-dir", dir.path, "--user", "alice", "--device", device,
            "--read", read, "--write", write, "--ttl", "600",
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

/** Collects a flow on a background scope, so that a test can go on and look at what arrived. */
class Collected<T>(flow: Flow<T>) : AutoCloseable {
    val items = CopyOnWriteArrayList<T>()
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
    private val job: Job = scope.launch { flow.collect { items.add(it) } }

    /** True once the flow ended by itself (not cancelled by [close]). */
    val completed: Boolean get() = job.isCompleted && !job.isCancelled

    /** Cancels the collector and waits for it to end (the flow unsubscribes then). */
    override fun close() {
        runBlocking { job.cancel(); job.join() }
        scope.cancel()
    }
}

fun eventually(what: String, check: () -> Boolean) {
    val deadline = System.currentTimeMillis() + 20_000
    while (!check()) {
        check(System.currentTimeMillis() < deadline) { "timed out waiting: $what" }
        Thread.sleep(20)
    }
}

/** A collector started and subscribed before the test goes on. */
fun <T> collecting(flow: Flow<T>, subscribed: () -> Boolean): Collected<T> =
    Collected(flow).also { eventually("the flow is collected") { subscribed() } }

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

    private fun open(name: String) = Store.open(File(dir, "$name.db").path)

    private fun tokens(store: Store): TokenProvider {
        val token = relay.token(store.deviceId)
        return TokenProvider { token }
    }

    private fun client(store: Store, collections: List<String> = listOf("todos")) =
        SyncClient.start(store, relay.url, collections, tokens = tokens(store))

    private fun sync(store: Store) {
        client(store).use { runBlocking { it.awaitSynced(20.seconds) } }
    }

    @Test
    fun offlineWritesAreDurableAndPending() {
        open("phone").use { store ->
            val doc = store.createJson("todos", """{"title":"Buy milk","done":false}""")
            store.putJson(doc, "done", "true")
            assertEquals("""{"done":true,"title":"Buy milk"}""", store.getJson(doc))
            assertEquals(listOf(doc), store.pendingDocuments())
            val typed = store.create("todos", Value.Object(mapOf("title" to Value.Str("Walk the dog"))))
            typed.set("/done", true)
            assertEquals("""{"done":true,"title":"Walk the dog"}""", typed.toJson())
            assertEquals(setOf(doc, typed.id), store.list("todos").toSet())
            store.delete(doc)
            assertEquals(listOf(typed.id), store.list("todos"))
        }
    }

    @Test
    fun twoDevicesSyncAndAFlowHearsTheRemoteChange() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"Walk the dog"}""")
        val events = collecting(laptop.changes("todos")) { laptop.subscriptionCount == 1L }
        val phoneClient = client(phone)
        val laptopClient = client(laptop)
        runBlocking {
            phoneClient.awaitSynced(20.seconds)
            laptopClient.awaitSynced(20.seconds)
        }
        eventually("the laptop hears the remote change") { events.items.any { it.remote } }
        assertEquals("""{"title":"Walk the dog"}""", laptop.getJson(doc))
        // The remote event names the document and carries the patch that set the title.
        val remote = events.items.first { it.remote }
        assertEquals(doc, remote.doc)
        assertTrue(
            remote.patches.any {
                val action = it.action
                action is PatchAction.PutMap && action.key == "title" &&
                    action.value == Value.Str("Walk the dog")
            },
            remote.patches.toString(),
        )
        // The status is a StateFlow: its value now, and the synced state reached.
        runBlocking { withTimeout(20_000) { phoneClient.status.first { it is SyncStatus.Synced } } }
        assertTrue(phoneClient.status.value is SyncStatus.Synced)
        assertEquals(1L, phoneClient.subscriptionCount) // the StateFlow's listener
        events.close()
        // The collector cancelled, the flow's listener is gone from the SDK.
        assertEquals(0L, laptop.subscriptionCount)
        assertTrue(phoneClient.stats.roundTrips >= 1uL, phoneClient.stats.toString())
        // Stopped, the client ends the flows it feeds, and its status says so.
        val errors = Collected(phoneClient.syncErrorEvents())
        eventually("the sync-error flow is collected") { phoneClient.subscriptionCount == 2L }
        phoneClient.stop()
        eventually("the flow ends when its client stops") { errors.completed }
        assertTrue(phoneClient.status.value is SyncStatus.Offline, phoneClient.status.value.toString())
        phoneClient.close()
        phoneClient.close() // once is enough; twice is not an error
        assertThrows<IllegalArgumentException> { runBlocking { laptopClient.awaitSynced((-1).seconds) } }
        laptopClient.close()
    }

    @Test
    fun cancellingACollectorUnsubscribes() {
        val store = open("phone")
        val doc = store.create("todos", Value.Object(mapOf("title" to Value.Str("watched"))))
        runBlocking {
            // A collector that takes one event and ends.
            val first = launch(Dispatchers.Default) {
                val event = doc.changes().first()
                assertEquals(doc.id, event.doc)
            }
            eventually("subscribed") { store.subscriptionCount == 1L }
            doc.put("/done", Value.Bool(true))
            withTimeout(10_000) { first.join() }
            assertEquals(0L, store.subscriptionCount)
            // A collector cancelled while it waits.
            val forever = launch(Dispatchers.Default) { store.changes().collect { } }
            eventually("subscribed") { store.subscriptionCount == 1L }
            forever.cancel()
            forever.join()
            assertEquals(0L, store.subscriptionCount)
            // Cold: nothing is subscribed until a collector starts.
            val flow = store.conflictEvents("todos")
            assertEquals(0L, store.subscriptionCount)
            val collector = launch(Dispatchers.Default) { flow.collect { } }
            eventually("subscribed") { store.subscriptionCount == 1L }
            collector.cancel()
            collector.join()
            assertEquals(0L, store.subscriptionCount)
        }
    }

    @Test
    fun aRefusedTokenIsATypedException() {
        val store = open("phone")
        SyncClient.start(store, relay.url, listOf("todos")) { "not-a-jwt" }.use { client ->
            assertThrows<SyncError.Unauthorized> { runBlocking { client.awaitSynced(20.seconds) } }
            assertTrue(client.lastDisconnect is Disconnect.Unauthorized, client.lastDisconnect.toString())
        }
    }

    @Test
    fun aProviderThatThrowsSignedOutIsUnauthorized() {
        val store = open("phone")
        val client = SyncClient.start(store, relay.url, listOf("todos")) {
            throw TokenError.SignedOut("the user signed out")
        }
        val error = assertThrows<SyncError.Unauthorized> { runBlocking { client.awaitSynced(20.seconds) } }
        assertTrue(error.message!!.contains("the user signed out"), error.message)
        client.close()
    }

    @Test
    fun aProviderThatThrowsAnythingElseIsRetriedUntilItAnswers() {
        val store = open("phone")
        val doc = store.createJson("todos", """{"title":"Later"}""")
        val token = relay.token(store.deviceId)
        val calls = AtomicInteger()
        val client = SyncClient.start(store, relay.url, listOf("todos")) {
            when (calls.incrementAndGet()) {
                1 -> throw java.io.IOException("the auth service is down")
                2 -> throw IllegalStateException("a bug in the host's provider")
                else -> token
            }
        }
        // A failure ends this wait as Unreachable (no token now, with the provider's reason),
        // not as a crash (which of the two failures it meets depends on the retry's timing)...
        val error = assertThrows<SyncError.Unreachable> { runBlocking { client.awaitSynced(20.seconds) } }
        assertTrue(
            listOf("the auth service is down", "a bug in the host's provider").any { error.message!!.contains(it) },
            error.message,
        )
        // ...and the client keeps retrying with backoff until the provider answers (a wait fails
        // fast while the last attempt's error stands, so wait again, up to 60 s).
        val deadline = System.nanoTime() + 60_000_000_000L
        while (true) {
            try {
                runBlocking { client.awaitSynced(20.seconds) }
                break
            } catch (e: SyncError.Unreachable) {
                assertTrue(System.nanoTime() < deadline, "never retried")
                Thread.sleep(100)
            }
        }
        assertTrue(calls.get() >= 3, calls.toString())
        assertEquals(emptyList<String>(), store.pendingDocuments())
        assertTrue(store.list("todos").contains(doc))
        client.close()
    }

    @Test
    fun aConflictIsInspectedAndResolved() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"Buy milk"}""")
        sync(phone)
        sync(laptop)
        val heard = collecting(laptop.conflictEvents()) { laptop.subscriptionCount == 1L }
        phone.putJson(doc, "title", "\"Buy oat milk\"")
        laptop.putJson(doc, "title", "\"Buy almond milk\"")
        sync(phone)
        sync(laptop)
        assertEquals(listOf("\"Buy almond milk\"", "\"Buy oat milk\""), laptop.conflictsJson(doc, "title").sorted())
        // Listed, with who wrote each value, and heard by the flow.
        assertEquals(listOf(doc), laptop.conflictedDocuments())
        val conflict = laptop.document(doc).allConflicts().single()
        assertEquals(doc, conflict.doc)
        assertEquals("/title", conflict.path)
        assertEquals(
            setOf(phone.deviceId to Value.Str("Buy oat milk"), laptop.deviceId to Value.Str("Buy almond milk")),
            conflict.values.map { it.device to it.value }.toSet(),
        )
        eventually("the flow hears the conflict") { heard.items.isNotEmpty() }
        assertEquals(listOf(conflict), heard.items.toList())
        laptop.resolveJson(doc, "title", "\"Buy milk (any)\"")
        assertEquals(listOf("\"Buy milk (any)\""), laptop.conflictsJson(doc, "title"))
        assertEquals(emptyList<String>(), laptop.conflictedDocuments())
        heard.close()

        // The app's own strategy resolves the next conflict as soon as the merge leaves it.
        laptop.setConflictResolver("todos") { c: Conflict ->
            c.values.map { it.value }.filterIsInstance<Value.Str>()
                .maxWith(compareBy<Value.Str>({ it.value.length }, { it.value }))
        }
        sync(laptop)
        sync(phone)
        phone.putJson(doc, "note", "\"oat\"")
        laptop.putJson(doc, "note", "\"almond\"")
        sync(phone)
        sync(laptop)
        assertEquals(emptyList<String>(), laptop.conflictedDocuments())
        assertTrue(laptop.getJson(doc).contains("\"note\":\"almond\""), laptop.getJson(doc))
        assertTrue(laptop.document(doc).history().any { it.message == "resolve conflict (custom)" })
        assertThrows<SyncError.InvalidInput> {
            laptop.setConflictStrategy("todos", ConflictStrategy.DevicePriority(listOf("nope")))
        }
        laptop.setConflictStrategy("todos", ConflictStrategy.DevicePriority(listOf(phone.deviceId)))
        laptop.setConflictStrategy("todos", null)
    }

    @Test
    fun aConflictOnOneDocumentIsResolvedThroughIt() {
        val phone = open("phone")
        val laptop = open("laptop")
        val id = phone.createJson("todos", """{"title":"Buy milk"}""")
        sync(phone)
        sync(laptop)
        val doc = laptop.document(id)
        val heard = collecting(doc.conflictEvents()) { laptop.subscriptionCount == 1L }
        phone.document(id).put("/title", Value.Str("Buy oat milk"))
        doc.put("/title", Value.Str("Buy almond milk"))
        sync(phone)
        sync(laptop)
        eventually("the document's flow hears the conflict") { heard.items.isNotEmpty() }
        assertEquals("/title", heard.items.first().path)
        assertEquals(2, doc.conflicts("/title").size)
        doc.resolve("/title", Value.Str("Buy milk (any)"))
        assertEquals(listOf(Value.Str("Buy milk (any)")), doc.conflicts("/title"))
        heard.close()
        assertEquals(0L, laptop.subscriptionCount)
    }

    @Test
    fun aChosenIdWithOptionsInfoAndPendingChanges() {
        val options = StoreOptions(cacheBytes = 1uL shl 20, durability = Durability.NORMAL)
        val store = Store.open(File(dir, "tuned.db").path, options)
        val doc = store.createAt(
            "todos/groceries", Value.Object(mapOf("title" to Value.Str("Milk"))), Priority.HIGH,
        )
        doc.put("/done", Value.Bool(true))
        val info = store.info("todos/groceries")
        assertEquals("todos/groceries", info.id)
        assertEquals(Priority.HIGH, info.priority)
        assertFalse(info.deleted)
        assertTrue(info.localChangeAtMs != null && info.remoteChangeAtMs == null, info.toString())
        assertEquals(listOf("todos/groceries"), store.listInfo("todos").map { it.id })
        assertEquals(Priority.HIGH, doc.priority)
        doc.priority = Priority.LOW
        assertEquals(Priority.LOW, store.info(doc.id).priority)
        val pending = store.pendingChanges()
        assertTrue(pending.all { it.doc == "todos/groceries" }, pending.toString())
        assertEquals(doc.history().size, pending.size)
        assertEquals(setOf(store.deviceId), pending.map { it.change.device }.toSet())
        assertThrows<SyncError.InvalidInput> {
            store.createAt("todos/groceries", Value.Object(emptyMap()), Priority.NORMAL)
        }
        assertThrows<SyncError.NotFound> { store.info("todos/nothing") }
        store.close()
        assertThrows<IllegalStateException> { store.list("todos") }
    }

    @Test
    fun errorsArriveAsTypedExceptions() {
        val store = open("phone")
        assertThrows<SyncError.NotFound> { store.getJson("todos/nothing") }
        assertThrows<SyncError.InvalidInput> { store.list("Not A Collection") }
        val error = assertThrows<SyncError> { store.document("todos/nothing") }
        assertTrue(error is SyncError.NotFound && error.message!!.contains("todos/nothing"), error.toString())
        // A flow on a bad collection fails its collector with the same typed error.
        assertThrows<SyncError.InvalidInput> { runBlocking { store.changes("Not A Collection").first() } }
    }

    @Test
    fun typedValuesRoundTripWithHistoryAndTimeTravel() {
        val store = open("phone")
        val doc = store.create("todos", Value.Object(mapOf("title" to Value.Str("Draft"))))
        val first = doc.heads()
        doc.apply(
            listOf(
                WriteOp.Put("/notes", Value.Text("hello")),
                WriteOp.Put("/tags", Value.Array(listOf(Value.Str("home")))),
                WriteOp.Put("/votes", Value.Counter(0)),
                WriteOp.Put("/blob", Value.Bytes(byteArrayOf(0, -1))),
            ),
            "fill in",
        )
        doc.spliceText("/notes", 5, 0, " world")
        doc.increment("/votes", 3)
        doc.apply(listOf(WriteOp.Push("/tags", Value.Str("errands"))))
        doc.putJson("/gone", "null")
        doc.delete("/gone")
        assertEquals(Value.Text("hello world"), doc.get("/notes"))
        assertEquals(Value.Counter(3), doc.get("/votes"))
        assertEquals(Value.Array(listOf(Value.Str("home"), Value.Str("errands"))), doc.get("/tags"))
        val blob = doc.get("/blob") as Value.Bytes
        assertTrue(blob.value.contentEquals(byteArrayOf(0, -1)))
        assertNull(doc.get("/missing"))
        assertNull(doc.get("/gone"))
        val history = doc.history()
        assertEquals(7, history.size)
        assertEquals("fill in", history[1].message)
        assertEquals(store.deviceId, history[1].device)
        val then = doc.viewAt(first)
        assertEquals(first, then.heads)
        assertEquals(Value.Str("Draft"), then.get("/title"))
        assertNull(then.get("/notes"))
        assertEquals("""{"title":"Draft"}""", then.toJson())
        assertTrue(doc.diff(first, doc.heads()).isNotEmpty())
        assertThrows<SyncError.InvalidInput> { doc.get("/title/deeper") }
    }

    @Test
    fun openingAndClosingManyStoresGrowsNeitherFilesNorMemory() {
        fun openFiles() = File("/proc/self/fd").list()!!.size
        fun cycle(rounds: Int) {
            repeat(rounds) { i ->
                Store.open(File(dir, "churn-${i % 8}.db").path).use { store ->
                    store.createJson("todos", """{"n":$i}""")
                }
            }
        }
        fun residentKib(): Long {
            System.gc()
            return File("/proc/self/status").readLines()
                .first { it.startsWith("VmRSS:") }
                .split(Regex("\\s+"))[1].toLong()
        }
        cycle(50) // warm up: the JVM's and SQLite's one-time allocations
        val memoryBefore = residentKib()
        val filesBefore = openFiles()
        cycle(400)
        // Each store holds four descriptors (database, WAL, shared memory, lock); 400 leaked
        // stores would hold 1,600. The slack covers descriptors of the JVM's own.
        val filesAfter = openFiles()
        assertTrue(filesAfter <= filesBefore + 8, "file handles grew from $filesBefore to $filesAfter")
        // A store that stayed open would hold megabytes (SQLite's caches, the document cache):
        // 400 of them would be hundreds of MiB. The bound leaves room for the JVM's own noise.
        val grownKib = residentKib() - memoryBefore
        assertTrue(grownKib < 64 * 1024, "resident memory grew by $grownKib KiB")
        // Closing released each store's lock: the file opens again at once, with every write
        // (7 in the warm-up and 50 after it went to churn-0).
        Store.open(File(dir, "churn-0.db").path).use { assertEquals(57, it.list("todos").size) }
    }

    @Test
    fun aHostBlockingInsideTheTokenProviderBlocksNothingElse() {
        val store = open("phone")
        val doc = store.createJson("todos", """{"title":"Blocked"}""")
        val entered = CountDownLatch(1)
        val release = CountDownLatch(1)
        val token = relay.token(store.deviceId)
        val client = SyncClient.start(store, relay.url, listOf("todos")) {
            entered.countDown()
            // The host blocks (say, a refresh over its own network stack) until released.
            check(release.await(60, TimeUnit.SECONDS)) { "never released" }
            token
        }
        assertTrue(entered.await(20, TimeUnit.SECONDS))
        // While the provider blocks, the host's calls return: none of them waits on it.
        assertFalse(client.status.value is SyncStatus.Synced)
        store.putJson(doc, "done", "true")
        client.pause()
        client.resume()
        assertEquals(1L, release.count)
        runBlocking {
            // The coroutine waiting for the sync suspends instead of blocking its thread: the
            // release below runs on this same (single) thread while the wait is in progress.
            launch {
                delay(200)
                release.countDown()
            }
            client.awaitSynced(20.seconds)
        }
        assertEquals(emptyList<String>(), store.pendingDocuments())
        client.close()
    }

    @Test
    fun oneStoreIsSharedByManyHostThreads() {
        val store = open("phone")
        val shared = store.create("todos", Value.Object(mapOf("votes" to Value.Counter(0))))
        val failures = CopyOnWriteArrayList<Throwable>()
        val threads = (0 until 4).map { n ->
            Thread {
                try {
                    repeat(25) { i ->
                        store.createJson("todos", """{"thread":$n,"i":$i}""")
                        shared.increment("/votes")
                    }
                } catch (e: Throwable) {
                    failures.add(e)
                }
            }.apply { start() }
        }
        threads.forEach { it.join(60_000) }
        assertEquals(emptyList<Throwable>(), failures)
        assertEquals(1 + 4 * 25, store.list("todos").size)
        assertEquals(Value.Counter(100), shared.get("/votes"))
    }

    @Test
    fun aDeviceGivenFallbackRelaysSyncsThroughOneThatAnswers() {
        val dead = java.net.ServerSocket(0).use { "ws://127.0.0.1:${it.localPort}" }
        val store = open("failover")
        val doc = store.createJson("todos", """{"title":"through the fallback"}""")
        SyncClient.start(
            store, dead, listOf("todos"),
            profile = Profile(DeviceClass.PHONE),
            fallbackUrls = listOf(relay.url),
            tokens = tokens(store),
        ).use { runBlocking { it.awaitSynced(20.seconds) } }
        assertEquals(emptyList<String>(), store.pendingDocuments())
        val other = open("other")
        sync(other)
        assertEquals("""{"title":"through the fallback"}""", other.getJson(doc))
    }

    @Test
    fun onDemandDeferredFetchOpenAndProgressCrossTheBinding() {
        val camera = open("camera")
        val phone = open("phone")
        val docs = (0 until 3).map { camera.createJson("todos", """{"title":"photo $it"}""") }
        sync(camera)
        val client = SyncClient.start(
            phone, relay.url,
            subscriptions = listOf(CollectionSync("todos", Priority.HIGH, onDemand = true)),
            profile = Profile(DeviceClass.PHONE, downloadBytesPerS = 125_000uL, metered = true),
            deferMeteredUploads = true,
            syncInterval = 60.seconds,
            tokens = tokens(phone),
        )
        val statuses = Collected(client.status)
        runBlocking { client.awaitSynced(20.seconds) }
        // Only the list: each document with its size, priority and why it waits.
        val deferred = client.deferred()
        assertEquals(docs.sorted(), deferred.map { it.docId }.sorted())
        assertTrue(deferred.all { it.reason == DeferReason.ON_DEMAND && it.priority == Priority.HIGH && it.bytes > 0uL })
        assertTrue(deferred.all { it.changedMs != null })
        assertEquals(emptyList<String>(), phone.list("todos"))
        // Opening one fetches it; asking for another fetches it in the background.
        val opened = runBlocking { client.open(docs[0], 20.seconds) }
        assertEquals("""{"title":"photo 0"}""", opened.toJson())
        client.fetch(listOf(docs[1]))
        eventually("the fetched document arrives") { docs[1] in phone.list("todos") }
        // Stored before the deferred list forgets it: the list follows a moment later.
        eventually("only the third stays deferred") { client.deferred().map { it.docId } == listOf(docs[2]) }
        // The network changes on the live connection; nothing is held back on the way up.
        client.setNetwork(false)
        client.setNetworkAvailable(true)
        client.setProfile(Profile(DeviceClass.PHONE))
        client.setSubscriptions(listOf(CollectionSync("todos", Priority.HIGH, onDemand = true)))
        client.syncNow()
        assertEquals(emptyList<String>(), client.deferredUploads())
        assertThrows<SyncError.InvalidInput> { client.fetch(listOf("not an id")) }
        eventually("a synced status") { statuses.items.any { it is SyncStatus.Synced } }
        statuses.close()
        val synced = statuses.items.filterIsInstance<SyncStatus.Synced>()
        assertTrue(synced.isNotEmpty() && synced.last().overBudgetBytes == 0uL, statuses.items.toString())
        statuses.items.filterIsInstance<SyncStatus.Syncing>().forEach {
            assertEquals(4, it.progress.downloadByPriority.size)
        }
        client.close()
    }

    @Test
    fun aRefusedDocumentAStoreWideFlowAndTheHistoryOfSyncs() {
        val phone = open("phone")
        val everything = collecting(phone.changes()) { phone.subscriptionCount == 1L }
        val todo = phone.createJson("todos", """{"title":"allowed"}""")
        val note = phone.createJson("notes", """{"text":"no write grant"}""")
        // The store-wide flow heard both collections, each event naming this device.
        eventually("both changes are heard") { everything.items.size == 2 }
        assertEquals(listOf(todo, note).sorted(), everything.items.map { it.doc }.sorted())
        assertTrue(everything.items.all { it.devices == listOf(phone.deviceId) && !it.remote })

        val token = relay.token(phone.deviceId, read = "todos,notes", write = "todos")
        val client = SyncClient.start(phone, relay.url, listOf("todos", "notes")) { token }
        val events = collecting(client.syncErrorEvents()) { client.subscriptionCount == 1L }
        eventually("the note is refused") { client.syncErrors().isNotEmpty() }
        val refused = client.syncErrors().single()
        assertEquals(note, refused.doc)
        assertTrue(refused.kind is SyncErrorKind.NotPermitted, refused.kind.toString())
        assertTrue(refused.message.contains("no write grant"), refused.message)
        assertNull(refused.retryAtMs)
        // The rest went on: the todo is acknowledged, the note stays pending.
        eventually("the todo is acknowledged") { phone.pendingDocuments() == listOf(note) }
        eventually("the flow heard it") { events.items.isNotEmpty() }
        assertEquals(SyncErrorEvent.Raised(refused), events.items.first())
        client.close()

        val record = phone.syncHistory(10).single()
        assertTrue(record.end is SyncEnd.Stopped, record.end.toString())
        assertEquals(relay.url, record.relay)
        assertFalse(record.session.isNullOrEmpty())
        assertEquals(1uL, record.refusedCount)
        assertEquals(listOf(note), record.refused)
        assertEquals(2uL, record.docsSent)
        assertTrue(record.bytesSent > 0uL && record.roundTrips >= 1uL)
        assertTrue(record.startedAtMs <= record.endedAtMs)
        events.close()
        everything.close()
    }

    @Test
    fun presenceReachesTheOtherDeviceWithItsSender() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"shared"}""")
        val phoneClient = client(phone)
        val laptopClient = client(laptop)
        runBlocking {
            phoneClient.awaitSynced(20.seconds)
            laptopClient.awaitSynced(20.seconds)
        }
        val heard = collecting(laptopClient.ephemeral(doc)) { laptopClient.subscriptionCount == 1L }
        val anywhere = collecting(laptopClient.ephemeral()) { laptopClient.subscriptionCount == 2L }
        phoneClient.sendEphemeral(doc, "cursor at 3".toByteArray())
        eventually("the laptop hears the phone") { heard.items.isNotEmpty() && anywhere.items.isNotEmpty() }
        val message = heard.items.single()
        assertEquals(doc, message.doc)
        assertEquals(phone.deviceId, message.sender)
        assertEquals("cursor at 3", String(message.payload))
        val other = anywhere.items.single()
        assertEquals(message.doc to message.sender, other.doc to other.sender)
        assertTrue(message.payload.contentEquals(other.payload))
        assertThrows<SyncError.InvalidInput> { phoneClient.sendEphemeral(doc, ByteArray(4097)) }
        assertThrows<SyncError.RateLimited> {
            repeat(100) { phoneClient.sendEphemeral(doc, "typing".toByteArray()) }
        }
        heard.close()
        anywhere.close()
        assertEquals(0L, laptopClient.subscriptionCount)
        phoneClient.close()
        laptopClient.close()
    }
}
