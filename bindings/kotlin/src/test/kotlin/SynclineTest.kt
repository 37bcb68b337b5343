// JUnit tests of the Kotlin bindings against a real syncline-relay process (the Python suite
// mirrors them).

import java.io.File
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import dev.syncline.ffi.ChangeEvent
import dev.syncline.ffi.CollectionSync
import dev.syncline.ffi.DeferReason
import dev.syncline.ffi.DeviceClass
import dev.syncline.ffi.Profile
import dev.syncline.ffi.SyncOptions
import dev.syncline.ffi.FfiChangeListener
import dev.syncline.ffi.PatchAction
import dev.syncline.ffi.Value
import dev.syncline.ffi.WriteOp
import dev.syncline.ffi.FfiException
import dev.syncline.ffi.SyncStatus
import dev.syncline.ffi.FfiStatusListener
import dev.syncline.ffi.FfiStore
import dev.syncline.ffi.StoreOptions
import dev.syncline.ffi.Priority
import dev.syncline.ffi.Durability
import dev.syncline.ffi.Disconnect
import dev.syncline.ffi.FfiSyncClient
import dev.syncline.ffi.FfiTokenException
import dev.syncline.ffi.FfiTokenProvider
import dev.syncline.ffi.SyncEnd
import dev.syncline.ffi.Conflict
import dev.syncline.ffi.FfiConflictListener
import dev.syncline.ffi.FfiConflictResolver
import dev.syncline.ffi.ConflictStrategy
import dev.syncline.ffi.Ephemeral
import dev.syncline.ffi.FfiEphemeralListener
import dev.syncline.ffi.SyncErrorEvent
import dev.syncline.ffi.SyncErrorKind
import dev.syncline.ffi.FfiSyncErrorListener

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
        val events = CopyOnWriteArrayList<ChangeEvent>()
        val subscription = laptop.watchCollection("todos", object : FfiChangeListener {
            override fun onChange(event: ChangeEvent) {
                events.add(event)
                if (event.remote) heard.countDown()
            }
        })
        val statuses = CopyOnWriteArrayList<SyncStatus>()
        val phoneClient = FfiSyncClient.start(phone, relay.url, listOf("todos"), Tokens(relay.token(phone.deviceId())))
        val statusSubscription = phoneClient.watchStatus(object : FfiStatusListener {
            override fun onStatus(status: SyncStatus) {
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
        // The remote event names the document and carries the patch that set the title.
        val remote = events.first { it.remote }
        assertEquals(doc, remote.doc)
        assertTrue(
            remote.patches.any {
                val action = it.action
                action is PatchAction.PutMap && action.key == "title" &&
                    action.value == Value.Str("Walk the dog")
            },
            remote.patches.toString(),
        )
        assertTrue(statuses.any { it is SyncStatus.Synced }, statuses.toString())
        assertEquals(1uL to 1uL, phoneClient.subscriptionCount() to laptop.subscriptionCount())
        statusSubscription.cancel()
        subscription.cancel()
        // Cancelled, the listeners are gone from the SDK.
        assertEquals(0uL to 0uL, phoneClient.subscriptionCount() to laptop.subscriptionCount())
        phoneClient.stop()
        laptopClient.stop()
    }

    @Test
    fun aRefusedTokenIsATypedException() {
        val store = open("phone")
        val client = FfiSyncClient.start(store, relay.url, listOf("todos"), Tokens("not-a-jwt"))
        assertThrows<FfiException.Unauthorized> { runBlocking { client.waitSynced(20_000u) } }
        assertTrue(client.lastDisconnect() is Disconnect.Unauthorized, client.lastDisconnect().toString())
        client.stop()
    }

    @Test
    fun aProviderThatThrowsSignedOutIsUnauthorized() {
        val store = open("phone")
        val provider = object : FfiTokenProvider {
            override fun token(): String = throw FfiTokenException.SignedOut("the user signed out")
        }
        val client = FfiSyncClient.start(store, relay.url, listOf("todos"), provider)
        val error = assertThrows<FfiException.Unauthorized> { runBlocking { client.waitSynced(20_000u) } }
        assertTrue(error.message!!.contains("the user signed out"), error.message)
        client.stop()
    }

    @Test
    fun aProviderThatThrowsAnythingElseIsRetriedUntilItAnswers() {
        val store = open("phone")
        val doc = store.createJson("todos", """{"title":"Later"}""")
        val token = relay.token(store.deviceId())
        val calls = AtomicInteger()
        val provider = object : FfiTokenProvider {
            override fun token(): String = when (calls.incrementAndGet()) {
                1 -> throw FfiTokenException.Unavailable("the auth service is down")
                2 -> throw IllegalStateException("a bug in the host's provider")
                else -> token
            }
        }
        val client = FfiSyncClient.start(store, relay.url, listOf("todos"), provider)
        // A failure ends this wait as Unreachable (no token now, with the provider's reason),
        // not as a crash (which of the two failures it meets depends on the retry's timing)...
        val error = assertThrows<FfiException.Unreachable> { runBlocking { client.waitSynced(20_000u) } }
        assertTrue(
            listOf("the auth service is down", "a bug in the host's provider").any { error.message!!.contains(it) },
            error.message,
        )
        // ...and the client keeps retrying with backoff until the provider answers (a wait fails
        // fast while the last attempt's error stands, so wait again, up to 60 s).
        val deadline = System.nanoTime() + 60_000_000_000L
        while (true) {
            try {
                runBlocking { client.waitSynced(20_000u) }
                break
            } catch (e: FfiException.Unreachable) {
                assertTrue(System.nanoTime() < deadline, "never retried")
                Thread.sleep(100)
            }
        }
        assertTrue(calls.get() >= 3, calls.toString())
        assertEquals(emptyList<String>(), store.pendingDocuments())
        assertTrue(store.list("todos").contains(doc))
        client.stop()
    }

    @Test
    fun aConflictIsInspectedAndResolved() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"Buy milk"}""")
        sync(phone)
        sync(laptop)
        val heard = CopyOnWriteArrayList<Conflict>()
        val watching = laptop.watchConflicts(object : FfiConflictListener {
            override fun onConflict(conflict: Conflict) {
                heard.add(conflict)
            }
        })
        phone.putJson(doc, "title", "\"Buy oat milk\"")
        laptop.putJson(doc, "title", "\"Buy almond milk\"")
        sync(phone)
        sync(laptop)
        assertEquals(listOf("\"Buy almond milk\"", "\"Buy oat milk\""), laptop.conflictsJson(doc, "title").sorted())
        // Listed, with who wrote each value, and heard by the listener.
        assertEquals(listOf(doc), laptop.conflictedDocuments())
        val conflict = laptop.document(doc).allConflicts().single()
        assertEquals(doc, conflict.doc)
        assertEquals("/title", conflict.path)
        assertEquals(
            setOf(phone.deviceId() to Value.Str("Buy oat milk"), laptop.deviceId() to Value.Str("Buy almond milk")),
            conflict.values.map { it.device to it.value }.toSet(),
        )
        assertEquals(listOf(conflict), heard.toList())
        laptop.resolveJson(doc, "title", "\"Buy milk (any)\"")
        assertEquals(listOf("\"Buy milk (any)\""), laptop.conflictsJson(doc, "title"))
        assertEquals(emptyList<String>(), laptop.conflictedDocuments())
        watching.cancel()

        // The app's own strategy resolves the next conflict as soon as the merge leaves it.
        laptop.setConflictResolver("todos", object : FfiConflictResolver {
            override fun resolve(conflict: Conflict): Value =
                conflict.values.map { it.value }.filterIsInstance<Value.Str>()
                    .maxWith(compareBy<Value.Str>({ it.value.length }, { it.value }))
        })
        sync(laptop)
        sync(phone)
        phone.putJson(doc, "note", "\"oat\"")
        laptop.putJson(doc, "note", "\"almond\"")
        sync(phone)
        sync(laptop)
        assertEquals(emptyList<String>(), laptop.conflictedDocuments())
        assertTrue(laptop.getJson(doc).contains("\"note\":\"almond\""), laptop.getJson(doc))
        assertTrue(laptop.document(doc).history().any { it.message == "resolve conflict (custom)" })
        assertThrows<FfiException.InvalidInput> {
            laptop.setConflictStrategy("todos", ConflictStrategy.DevicePriority(listOf("nope")))
        }
        laptop.setConflictStrategy("todos", ConflictStrategy.DevicePriority(listOf(phone.deviceId())))
    }

    @Test
    fun aChosenIdWithOptionsInfoAndPendingChanges() {
        val options = StoreOptions(cacheBytes = 1uL shl 20, durability = Durability.NORMAL)
        val store = FfiStore.openWith(File(dir, "tuned.db").path, options)
        val doc = store.createAt(
            "todos/groceries", Value.Object(mapOf("title" to Value.Str("Milk"))), Priority.HIGH,
        )
        doc.put("/done", Value.Bool(true))
        val info = store.info("todos/groceries")
        assertEquals("todos/groceries", info.id)
        assertEquals(Priority.HIGH, info.priority)
        assertFalse(info.deleted)
        assertTrue(info.localChangeAtMs != null && info.remoteChangeAtMs == null, info.toString())
        val pending = store.pendingChanges()
        assertTrue(pending.all { it.doc == "todos/groceries" }, pending.toString())
        assertEquals(doc.history().size, pending.size)
        assertEquals(setOf(store.deviceId()), pending.map { it.change.device }.toSet())
        assertThrows<FfiException.InvalidInput> {
            store.createAt("todos/groceries", Value.Object(emptyMap()), Priority.NORMAL)
        }
        assertThrows<FfiException.NotFound> { store.info("todos/nothing") }
    }

    @Test
    fun errorsArriveAsTypedExceptions() {
        val store = open("phone")
        assertThrows<FfiException.NotFound> { store.getJson("todos/nothing") }
        assertThrows<FfiException.InvalidInput> { store.list("Not A Collection") }
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
        doc.spliceText("/notes", 5uL, 0uL, " world")
        doc.increment("/votes", 3)
        doc.apply(listOf(WriteOp.Push("/tags", Value.Str("errands"))), null)
        assertEquals(Value.Text("hello world"), doc.get("/notes"))
        assertEquals(Value.Counter(3), doc.get("/votes"))
        assertEquals(Value.Array(listOf(Value.Str("home"), Value.Str("errands"))), doc.get("/tags"))
        val blob = doc.get("/blob") as Value.Bytes
        assertTrue(blob.value.contentEquals(byteArrayOf(0, -1)))
        assertNull(doc.get("/missing"))
        val history = doc.history()
        assertEquals(5, history.size)
        assertEquals("fill in", history[1].message)
        assertEquals(store.deviceId(), history[1].device)
        val then = doc.viewAt(first)
        assertEquals(Value.Str("Draft"), then.get("/title"))
        assertNull(then.get("/notes"))
        assertTrue(doc.diff(first, doc.heads()).isNotEmpty())
        assertThrows<FfiException.InvalidInput> { doc.get("/title/deeper") }
    }

    @Test
    fun openingAndClosingManyStoresGrowsNeitherFilesNorMemory() {
        fun openFiles() = File("/proc/self/fd").list()!!.size
        fun cycle(rounds: Int) {
            repeat(rounds) { i ->
                FfiStore.open(File(dir, "churn-${i % 8}.db").path).use { store ->
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
        FfiStore.open(File(dir, "churn-0.db").path).use { assertEquals(57, it.list("todos").size) }
    }

    @Test
    fun aHostBlockingInsideTheTokenProviderBlocksNothingElse() {
        val store = open("phone")
        val doc = store.createJson("todos", """{"title":"Blocked"}""")
        val entered = CountDownLatch(1)
        val release = CountDownLatch(1)
        val token = relay.token(store.deviceId())
        val provider = object : FfiTokenProvider {
            override fun token(): String {
                entered.countDown()
                // The host blocks (say, a refresh over its own network stack) until released.
                check(release.await(60, TimeUnit.SECONDS)) { "never released" }
                return token
            }
        }
        val client = FfiSyncClient.start(store, relay.url, listOf("todos"), provider)
        assertTrue(entered.await(20, TimeUnit.SECONDS))
        // While the provider blocks, the host's calls return: none of them waits on it.
        assertFalse(client.status() is SyncStatus.Synced)
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
            client.waitSynced(20_000u)
        }
        assertEquals(emptyList<String>(), store.pendingDocuments())
        client.stop()
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
                        shared.increment("/votes", 1)
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
    fun onDemandDeferredFetchOpenAndProgressCrossTheBinding() {
        val camera = open("camera")
        val phone = open("phone")
        val docs = (0 until 3).map { camera.createJson("todos", """{"title":"photo $it"}""") }
        sync(camera)
        val statuses = CopyOnWriteArrayList<SyncStatus>()
        val options = SyncOptions(
            relay.url,
            listOf(CollectionSync("todos", Priority.HIGH, true)),
            // Positional: the first field is named `class` in Rust.
            Profile(DeviceClass.PHONE, null, 125_000uL, null, true, true, null),
            null,
            true,
        )
        val client = FfiSyncClient.startWith(phone, options, Tokens(relay.token(phone.deviceId())))
        val watching = client.watchStatus(object : FfiStatusListener {
            override fun onStatus(status: SyncStatus) {
                statuses.add(status)
            }
        })
        runBlocking { client.waitSynced(20_000u) }
        // Only the list: each document with its size, priority and why it waits.
        val deferred = client.deferred()
        assertEquals(docs.sorted(), deferred.map { it.docId }.sorted())
        assertTrue(deferred.all { it.reason == DeferReason.ON_DEMAND && it.priority == Priority.HIGH && it.bytes > 0uL })
        assertTrue(deferred.all { it.changedMs != null })
        assertEquals(emptyList<String>(), phone.list("todos"))
        // Opening one fetches it; asking for another fetches it in the background.
        val opened = runBlocking { client.open(docs[0], 20_000u) }
        assertEquals("""{"title":"photo 0"}""", opened.toJson())
        client.fetch(listOf(docs[1]))
        val deadline = System.currentTimeMillis() + 20_000
        while (docs[1] !in phone.list("todos") && System.currentTimeMillis() < deadline) {
            Thread.sleep(50)
        }
        assertTrue(docs[1] in phone.list("todos"))
        assertEquals(listOf(docs[2]), client.deferred().map { it.docId })
        client.setNetwork(false, null, null)
        assertEquals(emptyList<String>(), client.deferredUploads())
        assertThrows<FfiException.InvalidInput> { client.fetch(listOf("not an id")) }
        val synced = statuses.filterIsInstance<SyncStatus.Synced>()
        assertTrue(synced.isNotEmpty() && synced.last().overBudgetBytes == 0uL, statuses.toString())
        statuses.filterIsInstance<SyncStatus.Syncing>().forEach {
            assertEquals(4, it.progress.downloadByPriority.size)
        }
        watching.cancel()
        client.stop()
    }

    private fun eventually(what: String, check: () -> Boolean) {
        val deadline = System.currentTimeMillis() + 20_000
        while (!check()) {
            check(System.currentTimeMillis() < deadline) { "timed out waiting: $what" }
            Thread.sleep(20)
        }
    }

    @Test
    fun aRefusedDocumentAStoreWideListenerAndTheHistoryOfSyncs() {
        val phone = open("phone")
        val everything = CopyOnWriteArrayList<ChangeEvent>()
        val watching = phone.watchAll(object : FfiChangeListener {
            override fun onChange(event: ChangeEvent) {
                everything.add(event)
            }
        })
        val todo = phone.createJson("todos", """{"title":"allowed"}""")
        val note = phone.createJson("notes", """{"text":"no write grant"}""")
        // The store-wide listener heard both collections, each event naming this device.
        assertEquals(listOf(todo, note).sorted(), everything.map { it.doc }.sorted())
        assertTrue(everything.all { it.devices == listOf(phone.deviceId()) && !it.remote })

        val token = relay.token(phone.deviceId(), read = "todos,notes", write = "todos")
        val client = FfiSyncClient.start(phone, relay.url, listOf("todos", "notes"), Tokens(token))
        val events = CopyOnWriteArrayList<SyncErrorEvent>()
        val errorSubscription = client.watchSyncErrors(object : FfiSyncErrorListener {
            override fun onSyncError(event: SyncErrorEvent) {
                events.add(event)
            }
        })
        eventually("the note is refused") { client.syncErrors().isNotEmpty() }
        val refused = client.syncErrors().single()
        assertEquals(note, refused.doc)
        assertTrue(refused.kind is SyncErrorKind.NotPermitted, refused.kind.toString())
        assertTrue(refused.message.contains("no write grant"), refused.message)
        assertNull(refused.retryAtMs)
        // The rest went on: the todo is acknowledged, the note stays pending.
        eventually("the todo is acknowledged") { phone.pendingDocuments() == listOf(note) }
        eventually("the listener heard it") { events.isNotEmpty() }
        assertEquals(SyncErrorEvent.Raised(refused), events.first())
        client.stop()

        val record = phone.syncHistory(10u).single()
        assertTrue(record.end is SyncEnd.Stopped, record.end.toString())
        assertEquals(relay.url, record.relay)
        assertFalse(record.session.isNullOrEmpty())
        assertEquals(1uL, record.refusedCount)
        assertEquals(listOf(note), record.refused)
        assertEquals(2uL, record.docsSent)
        assertTrue(record.bytesSent > 0uL && record.roundTrips >= 1uL)
        assertTrue(record.startedAtMs <= record.endedAtMs)
        errorSubscription.cancel()
        watching.cancel()
    }

    @Test
    fun presenceReachesTheOtherDeviceWithItsSender() {
        val phone = open("phone")
        val laptop = open("laptop")
        val doc = phone.createJson("todos", """{"title":"shared"}""")
        val phoneClient = FfiSyncClient.start(phone, relay.url, listOf("todos"), Tokens(relay.token(phone.deviceId())))
        val laptopClient = FfiSyncClient.start(laptop, relay.url, listOf("todos"), Tokens(relay.token(laptop.deviceId())))
        runBlocking {
            phoneClient.waitSynced(20_000u)
            laptopClient.waitSynced(20_000u)
        }
        val heard = CopyOnWriteArrayList<Ephemeral>()
        val watching = laptopClient.watchEphemeral(doc, object : FfiEphemeralListener {
            override fun onEphemeral(message: Ephemeral) {
                heard.add(message)
            }
        })
        phoneClient.sendEphemeral(doc, "cursor at 3".toByteArray())
        eventually("the laptop hears the phone") { heard.isNotEmpty() }
        val message = heard.single()
        assertEquals(doc, message.doc)
        assertEquals(phone.deviceId(), message.sender)
        assertEquals("cursor at 3", String(message.payload))
        assertThrows<FfiException.InvalidInput> { phoneClient.sendEphemeral(doc, ByteArray(4097)) }
        assertThrows<FfiException.RateLimited> {
            repeat(100) { phoneClient.sendEphemeral(doc, "typing".toByteArray()) }
        }
        watching.cancel()
        phoneClient.stop()
        laptopClient.stop()
    }
}
