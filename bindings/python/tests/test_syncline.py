"""The Python package of Syncline (`bindings/python`: uniffi bindings of syncline-ffi, built by
maturin), tested against a real syncline-relay process. Run by `cargo xtask test python`, which
installs the package with `maturin develop` and points SYNCLINE_RELAY_BIN at the relay binary.
The Kotlin and Swift suites mirror these tests."""

import asyncio
import json
import socket
import os
import subprocess
import tempfile
import threading
import time

import pytest

import syncline as sl

RELAY = os.environ.get("SYNCLINE_RELAY_BIN", "syncline-relay")


class Relay:
    """A syncline-relay on 127.0.0.1 with a temporary data directory, killed at the end."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        env = dict(os.environ, RUST_LOG="error,automerge=off")
        self.proc = subprocess.Popen(
            [RELAY, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.dir.name],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("syncline-relay listening on "), line
        self.url = "ws://" + line.rsplit(" ", 1)[1].strip()

    def token(self, device, write="todos", read="todos"):
        out = subprocess.run(
            [RELAY, "token", "--data-dir", self.dir.name, "--user", "alice",
             "--device", device, "--read", read, "--write", write, "--ttl", "600"],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


@pytest.fixture
def relay():
    r = Relay()
    yield r
    r.stop()


class Tokens(sl.FfiTokenProvider):
    def __init__(self, token):
        self.value = token
        self.calls = 0

    def token(self):
        self.calls += 1
        return self.value


class Changes(sl.FfiChangeListener):
    def __init__(self):
        self.remote = threading.Event()
        self.docs = []

    def on_change(self, event):
        self.docs.append(event)
        if event.remote:
            self.remote.set()


class Conflicts(sl.FfiConflictListener):
    def __init__(self):
        self.conflicts = []

    def on_conflict(self, conflict):
        self.conflicts.append(conflict)


class Longest(sl.FfiConflictResolver):
    """Keeps the longest string: a function of the conflict alone, so devices agree."""

    def resolve(self, conflict):
        texts = [v.value for v in conflict.values if isinstance(v.value, sl.FfiValue.STR)]
        return max(texts, key=lambda v: (len(v.value), v.value))


class Statuses(sl.FfiStatusListener):
    def __init__(self):
        self.seen = []

    def on_status(self, status):
        self.seen.append(status)


def open_store(tmp_path, name):
    return sl.FfiStore.open(str(tmp_path / f"{name}.db"))


def test_offline_writes_are_durable_and_pending(tmp_path):
    store = open_store(tmp_path, "phone")
    doc = store.create_json("todos", json.dumps({"title": "Buy milk", "done": False}))
    store.put_json(doc, "done", "true")
    assert json.loads(store.get_json(doc)) == {"title": "Buy milk", "done": True}
    assert store.list("todos") == [doc]
    assert store.pending_documents() == [doc]


def test_a_chosen_id_with_options_info_and_pending_changes(tmp_path):
    options = sl.FfiStoreOptions(cache_bytes=1 << 20, durability=sl.FfiDurability.NORMAL)
    store = sl.FfiStore.open_with(str(tmp_path / "tuned.db"), options)
    doc = store.create_at("todos/groceries", sl.FfiValue.OBJECT({"title": sl.FfiValue.STR("Milk")}),
                          sl.FfiPriority.HIGH)
    doc.put("/done", sl.FfiValue.BOOL(True))
    info = store.info("todos/groceries")
    assert (info.id, info.priority, info.deleted) == ("todos/groceries", sl.FfiPriority.HIGH, False)
    assert info.local_change_at_ms is not None and info.remote_change_at_ms is None
    pending = store.pending_changes()
    assert [p.doc for p in pending] == ["todos/groceries"] * len(pending)
    assert len(pending) == len(doc.history())
    assert {p.change.device for p in pending} == {store.device_id()}
    with pytest.raises(sl.FfiError.InvalidInput):
        store.create_at("todos/groceries", sl.FfiValue.OBJECT({}), sl.FfiPriority.NORMAL)
    with pytest.raises(sl.FfiError.NotFound):
        store.info("todos/nothing")


def test_errors_arrive_as_typed_exceptions(tmp_path):
    store = open_store(tmp_path, "phone")
    with pytest.raises(sl.FfiError.NotFound):
        store.get_json("todos/nothing")
    with pytest.raises(sl.FfiError.InvalidInput):
        store.list("Not A Collection")


def test_two_devices_sync_and_a_listener_hears_the_remote_change(tmp_path, relay):
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create_json("todos", json.dumps({"title": "Walk the dog"}))
    changes = Changes()
    subscription = laptop.watch_collection("todos", changes)
    statuses = Statuses()
    phone_client = sl.FfiSyncClient.start(
        phone, relay.url, ["todos"], Tokens(relay.token(phone.device_id()))
    )
    status_subscription = phone_client.watch_status(statuses)
    laptop_client = sl.FfiSyncClient.start(
        laptop, relay.url, ["todos"], Tokens(relay.token(laptop.device_id()))
    )

    async def both_synced():
        await phone_client.wait_synced(20_000)
        await laptop_client.wait_synced(20_000)

    asyncio.run(both_synced())
    assert changes.remote.wait(20), changes.docs
    assert json.loads(laptop.get_json(doc)) == {"title": "Walk the dog"}
    # The remote event names the document and carries the patch that set the title.
    remote = next(e for e in changes.docs if e.remote)
    assert remote.doc == doc
    assert any(
        isinstance(p.action, sl.FfiPatchAction.PUT_MAP)
        and p.action.key == "title"
        and p.action.value == sl.FfiValue.STR("Walk the dog")
        for p in remote.patches
    ), remote.patches
    assert phone.pending_documents() == []
    assert any(isinstance(s, sl.FfiStatus.SYNCED) for s in statuses.seen), statuses.seen
    assert (phone_client.subscription_count(), laptop.subscription_count()) == (1, 1)
    status_subscription.cancel()
    subscription.cancel()
    # Cancelled, the listeners are gone from the SDK.
    assert (phone_client.subscription_count(), laptop.subscription_count()) == (0, 0)
    phone_client.stop()
    laptop_client.stop()


def test_a_refused_token_is_a_typed_exception(tmp_path, relay):
    store = open_store(tmp_path, "phone")
    client = sl.FfiSyncClient.start(store, relay.url, ["todos"], Tokens("not-a-jwt"))
    with pytest.raises(sl.FfiError.Unauthorized):
        asyncio.run(client.wait_synced(20_000))
    assert isinstance(client.last_disconnect(), sl.FfiDisconnect.UNAUTHORIZED)
    client.stop()


def test_a_provider_that_throws_signed_out_is_unauthorized(tmp_path, relay):
    store = open_store(tmp_path, "phone")

    class SignedOut(sl.FfiTokenProvider):
        def token(self):
            raise sl.FfiTokenError.SignedOut("the user signed out")

    client = sl.FfiSyncClient.start(store, relay.url, ["todos"], SignedOut())
    with pytest.raises(sl.FfiError.Unauthorized, match="the user signed out"):
        asyncio.run(client.wait_synced(20_000))
    client.stop()


def test_a_provider_that_throws_anything_else_is_retried_until_it_answers(tmp_path, relay):
    store = open_store(tmp_path, "phone")
    doc = store.create_json("todos", json.dumps({"title": "Later"}))
    token = relay.token(store.device_id())

    class Flaky(sl.FfiTokenProvider):
        def __init__(self):
            self.calls = 0

        def token(self):
            self.calls += 1
            if self.calls == 1:
                raise sl.FfiTokenError.Unavailable("the auth service is down")
            if self.calls == 2:
                raise RuntimeError("a bug in the host's provider")
            return token

    flaky = Flaky()
    client = sl.FfiSyncClient.start(store, relay.url, ["todos"], flaky)
    # A failure ends this wait as Unreachable (no token now, with the provider's reason), not
    # as a crash (which of the two failures it meets depends on the retry's timing)...
    with pytest.raises(sl.FfiError.Unreachable,
                       match="the auth service is down|a bug in the host's provider"):
        asyncio.run(client.wait_synced(20_000))
    # ...and the client keeps retrying with backoff until the provider answers (a wait fails
    # fast while the last attempt's error stands, so wait again, up to 60 s).
    deadline = time.monotonic() + 60
    while True:
        try:
            asyncio.run(client.wait_synced(20_000))
            break
        except sl.FfiError.Unreachable:
            assert time.monotonic() < deadline, "never retried"
            time.sleep(0.1)
    assert flaky.calls >= 3
    assert store.pending_documents() == []
    assert doc in store.list("todos")
    client.stop()


def test_a_conflict_is_inspected_and_resolved(tmp_path, relay):
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create_json("todos", json.dumps({"title": "Buy milk"}))
    tokens = {s.device_id(): Tokens(relay.token(s.device_id())) for s in (phone, laptop)}

    def sync(store):
        client = sl.FfiSyncClient.start(store, relay.url, ["todos"], tokens[store.device_id()])
        asyncio.run(client.wait_synced(20_000))
        client.stop()

    sync(phone)
    sync(laptop)
    heard = Conflicts()
    watching = laptop.watch_conflicts(heard)
    phone.put_json(doc, "title", json.dumps("Buy oat milk"))
    laptop.put_json(doc, "title", json.dumps("Buy almond milk"))
    sync(phone)
    sync(laptop)
    conflicts = sorted(json.loads(v) for v in laptop.conflicts_json(doc, "title"))
    assert conflicts == ["Buy almond milk", "Buy oat milk"]
    # Listed, with who wrote each value, and heard by the listener.
    assert laptop.conflicted_documents() == [doc]
    [conflict] = laptop.document(doc).all_conflicts()
    assert (conflict.doc, conflict.path) == (doc, "/title")
    assert sorted((v.device, v.value.value) for v in conflict.values) == sorted([
        (phone.device_id(), "Buy oat milk"),
        (laptop.device_id(), "Buy almond milk"),
    ])
    assert heard.conflicts == [conflict]
    laptop.resolve_json(doc, "title", json.dumps("Buy milk (any)"))
    assert laptop.conflicts_json(doc, "title") == ['"Buy milk (any)"']
    assert laptop.conflicted_documents() == []
    watching.cancel()

    # The app's own strategy resolves the next conflict as soon as the merge leaves it.
    laptop.set_conflict_resolver("todos", Longest())
    sync(laptop)
    sync(phone)
    phone.put_json(doc, "note", json.dumps("oat"))
    laptop.put_json(doc, "note", json.dumps("almond"))
    sync(phone)
    sync(laptop)
    assert laptop.conflicted_documents() == []
    assert json.loads(laptop.get_json(doc))["note"] == "almond"
    messages = [c.message for c in laptop.document(doc).history()]
    assert "resolve conflict (custom)" in messages, messages
    with pytest.raises(sl.FfiError.InvalidInput):
        laptop.set_conflict_strategy("todos", sl.FfiConflictStrategy.DEVICE_PRIORITY(["nope"]))
    laptop.set_conflict_strategy("todos", sl.FfiConflictStrategy.DEVICE_PRIORITY([phone.device_id()]))


def test_typed_values_round_trip_with_history_and_time_travel(tmp_path):
    store = open_store(tmp_path, "phone")
    V, Op = sl.FfiValue, sl.FfiWriteOp
    doc = store.create("todos", V.OBJECT({"title": V.STR("Draft")}))
    first = doc.heads()
    doc.apply(
        [
            Op.PUT("/notes", V.TEXT("hello")),
            Op.PUT("/tags", V.ARRAY([V.STR("home")])),
            Op.PUT("/votes", V.COUNTER(0)),
            Op.PUT("/blob", V.BYTES(b"\x00\xff")),
            Op.PUT("/ratio", V.FLOAT(0.5)),
            Op.PUT("/gone", V.NULL()),
        ],
        "fill in",
    )
    doc.splice_text("/notes", 5, 0, " world")
    doc.increment("/votes", 3)
    doc.apply([Op.PUSH("/tags", V.STR("errands"))], None)
    assert doc.get("/notes") == V.TEXT("hello world")
    assert doc.get("/votes") == V.COUNTER(3)
    assert doc.get("/tags") == V.ARRAY([V.STR("home"), V.STR("errands")])
    assert doc.get("/blob") == V.BYTES(b"\x00\xff")
    assert doc.get("/ratio") == V.FLOAT(0.5)
    assert doc.get("/gone") == V.NULL()
    assert doc.get("/missing") is None
    assert json.loads(doc.to_json())["notes"] == "hello world"
    history = doc.history()
    assert [c.message for c in history] == ["create", "fill in", None, None, None]
    assert history[1].device == store.device_id()
    then = doc.view_at(first)
    assert then.get("/title") == V.STR("Draft")
    assert then.get("/notes") is None
    assert doc.diff(first, doc.heads())
    with pytest.raises(sl.FfiError.InvalidInput):
        doc.get("/title/deeper")
    with pytest.raises(sl.FfiError.InvalidInput):
        doc.apply([Op.INCREMENT("/title", 1)], None)
    assert doc.get("/title") == V.STR("Draft")


def _open_files():
    return len(os.listdir("/proc/self/fd"))


def _resident_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_opening_and_dropping_many_stores_grows_neither_files_nor_memory(tmp_path):
    def cycle(rounds):
        for i in range(rounds):
            store = sl.FfiStore.open(str(tmp_path / f"churn-{i % 8}.db"))
            store.create_json("todos", json.dumps({"n": i}))
            del store  # the last reference: the Rust store closes here

    cycle(50)  # warm up: one-time allocations of Python, SQLite and the allocator
    files, memory = _open_files(), _resident_kib()
    cycle(400)
    # Each store holds four descriptors (database, WAL, shared memory, lock): 400 leaked
    # stores would hold 1,600, and megabytes of caches each.
    assert _open_files() == files
    grown = _resident_kib() - memory
    assert grown < 32 * 1024, f"resident memory grew by {grown} KiB"
    # Dropping released each store's lock: the file opens again at once with every write.
    assert len(sl.FfiStore.open(str(tmp_path / "churn-0.db")).list("todos")) == 57


def test_a_host_blocking_inside_the_token_provider_blocks_nothing_else(tmp_path, relay):
    store = open_store(tmp_path, "phone")
    doc = store.create_json("todos", json.dumps({"title": "Blocked"}))
    entered, release = threading.Event(), threading.Event()
    token = relay.token(store.device_id())

    class Blocking(sl.FfiTokenProvider):
        def token(self):
            entered.set()
            # The host blocks (a refresh over its own network stack, say) until released.
            assert release.wait(60), "never released"
            return token

    client = sl.FfiSyncClient.start(store, relay.url, ["todos"], Blocking())
    assert entered.wait(20)
    # While the provider blocks, the host's calls return: none of them waits on it.
    assert not isinstance(client.status(), sl.FfiStatus.SYNCED)
    store.put_json(doc, "done", "true")
    client.pause()
    client.resume()
    assert not release.is_set()

    async def wait_while_the_loop_runs():
        # The release is scheduled on this same event loop: it can only run if awaiting the
        # sync suspends the coroutine instead of blocking the loop's thread.
        asyncio.get_running_loop().call_later(0.2, release.set)
        return await client.wait_synced(20_000)

    asyncio.run(wait_while_the_loop_runs())
    assert store.pending_documents() == []
    client.stop()


def test_one_store_is_shared_by_many_host_threads(tmp_path):
    store = open_store(tmp_path, "phone")
    shared = store.create("todos", sl.FfiValue.OBJECT({"votes": sl.FfiValue.COUNTER(0)}))
    errors = []

    def work(n):
        try:
            for i in range(25):
                store.create_json("todos", json.dumps({"thread": n, "i": i}))
                shared.increment("/votes", 1)
        except Exception as e:  # reported below, with the thread's number
            errors.append((n, e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(store.list("todos")) == 1 + 4 * 25
    assert shared.get("/votes") == sl.FfiValue.COUNTER(100)


def phone_profile(metered=False, download_bytes_per_s=None):
    # uniffi names the field `class` `_class` in Python.
    return sl.FfiProfile(
        _class=sl.FfiDeviceClass.PHONE, storage_budget_bytes=None,
        download_bytes_per_s=download_bytes_per_s, upload_bytes_per_s=None, metered=metered,
        realtime=True, metered_max_doc_bytes=None,
    )


def test_a_device_given_fallback_relays_syncs_through_one_that_answers(tmp_path, relay):
    # The first relay refuses connections (nothing listens there): the next connection goes
    # to the fallback, which the device then keeps.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    store = open_store(tmp_path, "failover")
    doc_id = store.create_json("todos", json.dumps({"title": "through the fallback"}))
    client = sl.FfiSyncClient.start_with(
        store,
        sl.FfiSyncOptions(
            relay_url=dead,
            collections=[sl.FfiCollectionSync(collection="todos", priority=sl.FfiPriority.NORMAL,
                                              on_demand=False)],
            profile=phone_profile(),
            sync_interval_ms=None,
            defer_metered_uploads=None,
            fallback_urls=[relay.url],
        ),
        Tokens(relay.token(store.device_id())),
    )
    asyncio.run(client.wait_synced(20_000))
    assert store.pending_documents() == []
    client.stop()
    other = open_store(tmp_path, "other")
    reader = sl.FfiSyncClient.start(other, relay.url, ["todos"],
                                    Tokens(relay.token(other.device_id())))
    asyncio.run(reader.wait_synced(20_000))
    reader.stop()
    assert json.loads(other.get_json(doc_id)) == {"title": "through the fallback"}


def test_on_demand_deferred_fetch_open_and_progress_cross_the_binding(tmp_path, relay):
    camera, phone = open_store(tmp_path, "camera"), open_store(tmp_path, "phone")
    docs = [camera.create_json("photos", json.dumps({"title": f"photo {i}"})) for i in range(3)]
    camera_client = sl.FfiSyncClient.start_with(
        camera,
        sl.FfiSyncOptions(
            relay_url=relay.url,
            collections=[sl.FfiCollectionSync(collection="photos", priority=sl.FfiPriority.NORMAL,
                                              on_demand=False)],
            profile=phone_profile(),
            sync_interval_ms=None,
            defer_metered_uploads=None,
        ),
        Tokens(relay.token(camera.device_id(), write="photos", read="photos")),
    )
    asyncio.run(camera_client.wait_synced(20_000))
    camera_client.stop()

    statuses = Statuses()
    client = sl.FfiSyncClient.start_with(
        phone,
        sl.FfiSyncOptions(
            relay_url=relay.url,
            collections=[sl.FfiCollectionSync(collection="photos", priority=sl.FfiPriority.HIGH,
                                              on_demand=True)],
            profile=phone_profile(metered=True, download_bytes_per_s=125_000),
            sync_interval_ms=None,
            defer_metered_uploads=True,
        ),
        Tokens(relay.token(phone.device_id(), write="photos", read="photos")),
    )
    watching = client.watch_status(statuses)
    asyncio.run(client.wait_synced(20_000))
    # Only the list: each document with its size, priority and why it waits.
    deferred = client.deferred()
    assert sorted(d.doc_id for d in deferred) == sorted(docs)
    assert all(d.reason == sl.FfiDeferReason.ON_DEMAND for d in deferred)
    assert all(d.priority == sl.FfiPriority.HIGH and d.bytes > 0 for d in deferred)
    assert all(d.changed_ms is not None for d in deferred)
    assert phone.list("photos") == []
    # Opening one fetches it; asking for another fetches it in the background.
    opened = asyncio.run(client.open(docs[0], 20_000))
    assert json.loads(opened.to_json()) == {"title": "photo 0"}
    client.fetch([docs[1]])
    deadline = time.time() + 20
    while docs[1] not in phone.list("photos") and time.time() < deadline:
        time.sleep(0.05)
    assert docs[1] in phone.list("photos")
    assert [d.doc_id for d in client.deferred()] == [docs[2]]
    # The network changes on the live connection; nothing is held back on the way up.
    client.set_network(False, None, None)
    assert client.deferred_uploads() == []
    with pytest.raises(sl.FfiError.InvalidInput):
        client.fetch(["not an id"])
    synced = [s for s in statuses.seen if isinstance(s, sl.FfiStatus.SYNCED)]
    assert synced and synced[-1].over_budget_bytes == 0
    for s in statuses.seen:
        if isinstance(s, sl.FfiStatus.SYNCING):
            assert len(s.progress.download_by_priority) == 4
            assert len(s.progress.upload_by_priority) == 4
    watching.cancel()
    client.stop()


class SyncErrors(sl.FfiSyncErrorListener):
    def __init__(self):
        self.events = []

    def on_sync_error(self, event):
        self.events.append(event)


def eventually(what, check, seconds=20):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


def test_a_refused_document_a_store_wide_listener_and_the_history_of_syncs(tmp_path, relay):
    phone = open_store(tmp_path, "phone")
    everything = Changes()
    watching = phone.watch_all(everything)
    todo = phone.create_json("todos", json.dumps({"title": "allowed"}))
    note = phone.create_json("notes", json.dumps({"text": "no write grant"}))
    # The store-wide listener heard both collections, each event naming this device.
    assert sorted(e.doc for e in everything.docs) == sorted([todo, note])
    assert all(e.devices == [phone.device_id()] and not e.remote for e in everything.docs)

    token = relay.token(phone.device_id(), write="todos", read="todos,notes")
    client = sl.FfiSyncClient.start(phone, relay.url, ["todos", "notes"], Tokens(token))
    errors = SyncErrors()
    error_subscription = client.watch_sync_errors(errors)
    eventually("the note is refused", lambda: client.sync_errors() != [])
    [refused] = client.sync_errors()
    assert refused.doc == note
    assert isinstance(refused.kind, sl.FfiSyncErrorKind.NOT_PERMITTED), refused.kind
    assert "no write grant" in refused.message
    assert refused.retry_at_ms is None
    # The rest went on: the todo is acknowledged, the note stays pending.
    eventually("the todo is acknowledged", lambda: phone.pending_documents() == [note])
    eventually("the listener heard it", lambda: errors.events != [])
    assert isinstance(errors.events[0], sl.FfiSyncErrorEvent.RAISED)
    assert errors.events[0].error == refused
    client.stop()

    [record] = phone.sync_history(10)
    assert isinstance(record.end, sl.FfiSyncEnd.STOPPED), record.end
    assert record.relay == relay.url
    assert record.session
    assert (record.refused_count, record.refused) == (1, [note])
    assert record.docs_sent == 2 and record.bytes_sent > 0 and record.round_trips >= 1
    assert record.started_at_ms <= record.ended_at_ms
    error_subscription.cancel()
    watching.cancel()


class Presence(sl.FfiEphemeralListener):
    def __init__(self):
        self.messages = []

    def on_ephemeral(self, message):
        self.messages.append(message)


def test_presence_reaches_the_other_device_with_its_sender(tmp_path, relay):
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create_json("todos", json.dumps({"title": "shared"}))
    phone_client = sl.FfiSyncClient.start(
        phone, relay.url, ["todos"], Tokens(relay.token(phone.device_id())))
    laptop_client = sl.FfiSyncClient.start(
        laptop, relay.url, ["todos"], Tokens(relay.token(laptop.device_id())))

    async def both_synced():
        await phone_client.wait_synced(20_000)
        await laptop_client.wait_synced(20_000)

    asyncio.run(both_synced())
    heard = Presence()
    watching = laptop_client.watch_ephemeral(doc, heard)
    phone_client.send_ephemeral(doc, b"cursor at 3")
    eventually("the laptop hears the phone", lambda: heard.messages != [])
    [message] = heard.messages
    assert (message.doc, message.sender, message.payload) == (doc, phone.device_id(), b"cursor at 3")
    with pytest.raises(sl.FfiError.InvalidInput):
        phone_client.send_ephemeral(doc, bytes(4097))
    with pytest.raises(sl.FfiError.RateLimited):
        for _ in range(100):
            phone_client.send_ephemeral(doc, b"typing")
    watching.cancel()
    phone_client.stop()
    laptop_client.stop()
