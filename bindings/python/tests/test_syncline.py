"""The Python package of Syncline (`bindings/python`: the native API in `python/syncline` over
the uniffi bindings of syncline-ffi, built by maturin), tested against a real syncline-relay
process. Run by `cargo xtask test python`, which installs the package with `maturin develop`
and points SYNCLINE_RELAY_BIN at the relay binary. The Kotlin and Swift suites mirror these
tests."""

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Generic, List, Optional, TypeVar

import pytest

import syncline as sl

from support import Relay, Tokens


def text(value: sl.Value) -> str:
    """The string a `Value.STR` holds."""
    assert isinstance(value, sl.Value.STR), value
    return value.value


def longest(conflict: sl.Conflict) -> sl.PyValue:
    """Keeps the longest string: a function of the conflict alone, so devices agree."""
    texts = [text(v.value) for v in conflict.values if isinstance(v.value, sl.Value.STR)]
    return max(texts, key=lambda v: (len(v), v))


def collect(stream: "sl.EventStream[T]") -> "Collected[T]":
    """Gathers a stream's events on a thread of its own (its own event loop), so that a test
    can go on synchronously and look at what arrived."""
    return Collected(stream)


T = TypeVar("T")


class Collected(Generic[T]):
    def __init__(self, stream: "sl.EventStream[T]") -> None:
        self.items: List[T] = []
        self.stream = stream
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        async for item in self.stream:
            self.items.append(item)

    def close(self) -> None:
        self.stream.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


def open_store(tmp_path: Path, name: str) -> sl.Store:
    return sl.Store.open(tmp_path / f"{name}.db")


def start(store: sl.Store, relay: Relay, collections: List[str] = ["todos"]) -> sl.SyncClient:
    return sl.SyncClient.start(store, relay.url, collections, Tokens(relay.token(store.device_id)))


def sync(store: sl.Store, relay: Relay) -> None:
    """One sync of `store` with `relay`, from start to stop."""
    with start(store, relay) as client:
        asyncio.run(client.wait_synced(timeout=20))


def eventually(what: str, check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


def test_offline_writes_are_durable_and_pending(tmp_path: Path) -> None:
    with open_store(tmp_path, "phone") as store:
        doc = store.create("todos", {"title": "Buy milk", "done": False})
        doc.put("/done", True)
        assert doc.to_dict() == {"title": "Buy milk", "done": True}
        assert store.list("todos") == [doc.id]
        assert store.pending_documents() == [doc.id]
        # The same through JSON, for apps that hold their documents as JSON text.
        other = store.create_json("todos", json.dumps({"title": "Walk the dog"}))
        store.put_json(other, "done", "true")
        assert json.loads(store.get_json(other)) == {"title": "Walk the dog", "done": True}
    # Closed, the handle refuses further calls.
    with pytest.raises(ValueError, match="closed"):
        store.list("todos")


def test_python_values_cross_as_themselves(tmp_path: Path) -> None:
    store = open_store(tmp_path, "phone")
    content: Dict[str, sl.PyValue] = {
        "title": "Draft",
        "done": False,
        "count": 3,
        "big": 2**64 - 1,
        "ratio": 0.25,
        "blob": b"\x00\xff",
        "tags": ["home", None],
        "nested": {"deep": {"list": [1, 2]}},
    }
    doc = store.create("todos", content)
    assert doc.to_dict() == content
    assert store.document(doc.id).value("/nested/deep/list") == [1, 2]
    assert doc.get("/big") == sl.Value.UINT(2**64 - 1)
    assert doc.value("/missing") is None
    # Automerge's own types, given as a Value, read back as plain Python values.
    doc.put("/notes", sl.Value.TEXT("hello"))
    doc.put("/votes", sl.Value.COUNTER(1))
    doc.increment("/votes", 2)
    assert (doc.value("/notes"), doc.value("/votes")) == ("hello", 3)
    with pytest.raises(TypeError, match="cannot be stored"):
        doc.put("/bad", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys are strings"):
        store.create("todos", {1: "one"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="outside what a document holds"):
        doc.put("/huge", 2**64)
    with pytest.raises(TypeError, match="not one string"):
        doc.view_at(doc.heads()[0])


def test_a_chosen_id_with_options_info_and_pending_changes(tmp_path: Path) -> None:
    options = sl.StoreOptions(cache_bytes=1 << 20, durability=sl.Durability.NORMAL)
    store = sl.Store.open(tmp_path / "tuned.db", options)
    doc = store.create_at("todos/groceries", {"title": "Milk"}, sl.Priority.HIGH)
    doc.put("/done", True)
    info = store.info("todos/groceries")
    assert (info.id, info.priority, info.deleted) == ("todos/groceries", sl.Priority.HIGH, False)
    assert info.local_change_at_ms is not None and info.remote_change_at_ms is None
    assert [i.id for i in store.list_info("todos")] == ["todos/groceries"]
    assert doc.priority == sl.Priority.HIGH
    doc.priority = sl.Priority.LOW
    assert store.info(doc.id).priority == sl.Priority.LOW
    pending = store.pending_changes()
    assert [p.doc for p in pending] == ["todos/groceries"] * len(pending)
    assert len(pending) == len(doc.history())
    assert {p.change.device for p in pending} == {store.device_id}
    with pytest.raises(sl.SyncError.InvalidInput):
        store.create_at("todos/groceries", {}, sl.Priority.NORMAL)
    with pytest.raises(sl.NotFound):
        store.info("todos/nothing")
    store.delete(doc.id)
    assert store.list("todos") == []


def test_errors_arrive_as_typed_exceptions(tmp_path: Path) -> None:
    store = open_store(tmp_path, "phone")
    with pytest.raises(sl.SyncError.NotFound):
        store.get_json("todos/nothing")
    with pytest.raises(sl.SyncError.InvalidInput):
        store.list("Not A Collection")
    with pytest.raises(sl.SyncError) as caught:
        store.document("todos/nothing")
    assert isinstance(caught.value, sl.NotFound) and "todos/nothing" in str(caught.value)


def test_two_devices_sync_and_a_stream_hears_the_remote_change(tmp_path: Path, relay: Relay) -> None:
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create("todos", {"title": "Walk the dog"})
    changes = collect(laptop.changes("todos"))
    phone_client = start(phone, relay)
    statuses = collect(phone_client.status_updates())
    laptop_client = start(laptop, relay)

    async def both_synced() -> None:
        await phone_client.wait_synced(timeout=20)
        await laptop_client.wait_synced(timeout=20)

    asyncio.run(both_synced())
    eventually("the laptop hears the remote change", lambda: any(e.remote for e in changes.items))
    assert laptop.document(doc.id).to_dict() == {"title": "Walk the dog"}
    # The remote event names the document and carries the patch that set the title.
    remote = next(e for e in changes.items if e.remote)
    assert remote.doc == doc.id
    assert any(
        isinstance(p.action, sl.PatchAction.PUT_MAP)
        and p.action.key == "title"
        and p.action.value == sl.Value.STR("Walk the dog")
        for p in remote.patches
    ), remote.patches
    assert phone.pending_documents() == []
    eventually("the phone's status stream says synced",
               lambda: any(isinstance(s, sl.SyncStatus.SYNCED) for s in statuses.items))
    assert isinstance(phone_client.status, sl.SyncStatus.SYNCED)
    assert (phone_client.subscription_count, laptop.subscription_count) == (1, 1)
    statuses.close()
    changes.close()
    # Closed, the streams' listeners are gone from the SDK.
    assert (phone_client.subscription_count, laptop.subscription_count) == (0, 0)
    assert phone_client.stats.round_trips >= 1
    # Stopped, the client ends the streams it feeds.
    ended = collect(phone_client.status_updates())
    phone_client.stop()
    ended.thread.join(10)
    assert not ended.thread.is_alive(), "the status stream did not end when its client stopped"
    laptop_client.stop()


def test_breaking_out_of_a_stream_unsubscribes(tmp_path: Path) -> None:
    store = open_store(tmp_path, "phone")
    doc = store.create("todos", {"title": "watched"})

    async def first_change_then_break() -> sl.ChangeEvent:
        async for event in store.changes("todos"):
            return event  # leaving the loop releases the stream
        raise AssertionError("the stream ended")

    async def main() -> None:
        waiting = asyncio.ensure_future(first_change_then_break())
        await asyncio.sleep(0.05)
        assert store.subscription_count == 1
        doc.put("/done", True)  # on this thread: the event arrives through the loop
        event = await asyncio.wait_for(waiting, 10)
        assert event.doc == doc.id and not event.remote
        assert store.subscription_count == 0

        # A task cancelled while it waits for the next event unsubscribes too.
        async def forever() -> None:
            async for _ in doc.changes():
                pass

        task = asyncio.ensure_future(forever())
        await asyncio.sleep(0.05)
        assert store.subscription_count == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert store.subscription_count == 0

        # One stream, one reader at a time: a second waiting task is an error.
        stream = store.changes("todos")
        reader = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="another task"):
            await stream.__anext__()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        del stream, reader
        assert store.subscription_count == 0

        # Every collection at once, as a scoped stream.
        async with store.changes() as everything:
            store.create("notes", {"text": "another collection"})
            event = await asyncio.wait_for(everything.__anext__(), 10)
            assert event.doc.startswith("notes/")
        assert store.subscription_count == 0

    asyncio.run(main())


def test_the_status_stream_starts_with_the_status_now_and_unsubscribes_on_break(
    tmp_path: Path, relay: Relay
) -> None:
    store = open_store(tmp_path, "phone")
    store.create("todos", {"title": "one"})
    client = start(store, relay)

    async def until_synced() -> List[sl.SyncStatus]:
        seen: List[sl.SyncStatus] = []
        async for status in client.status_updates():
            seen.append(status)
            if isinstance(status, sl.SyncStatus.SYNCED):
                break
        return seen

    async def main() -> List[sl.SyncStatus]:
        return await asyncio.wait_for(until_synced(), 20)

    seen = asyncio.run(main())
    assert isinstance(seen[-1], sl.SyncStatus.SYNCED)
    assert client.subscription_count == 0
    # Subscribed once synced, the first status is the current one.
    again = asyncio.run(asyncio.wait_for(until_synced(), 20))
    assert len(again) == 1
    client.stop()


def test_one_string_where_a_list_is_meant_is_refused(tmp_path: Path, relay: Relay) -> None:
    store = open_store(tmp_path, "phone")
    # A string is a sequence of strings: "todos" would otherwise sync "t", "o", "d", "o", "s".
    with pytest.raises(TypeError, match="not one string"):
        sl.SyncClient.start(store, relay.url, "todos", Tokens("t"))
    with pytest.raises(TypeError, match="not one string"):
        sl.SyncClient.start(store, relay.url, ["todos"], Tokens("t"), fallback_urls=relay.url)
    with start(store, relay) as client:
        with pytest.raises(TypeError, match="not one string"):
            client.fetch("todos/abc")
        with pytest.raises(TypeError, match="not one string"):
            client.set_subscriptions("todos")
        with pytest.raises(ValueError, match="not negative"):
            asyncio.run(client.wait_synced(timeout=-1))


def test_a_refused_token_is_a_typed_exception(tmp_path: Path, relay: Relay) -> None:
    store = open_store(tmp_path, "phone")
    with sl.SyncClient.start(store, relay.url, ["todos"], Tokens("not-a-jwt")) as client:
        with pytest.raises(sl.SyncError.Unauthorized):
            asyncio.run(client.wait_synced(timeout=20))
        assert isinstance(client.last_disconnect, sl.Disconnect.UNAUTHORIZED)


def test_a_provider_that_raises_signed_out_is_unauthorized(tmp_path: Path, relay: Relay) -> None:
    store = open_store(tmp_path, "phone")

    def signed_out() -> str:
        raise sl.SignedOut("the user signed out")

    client = sl.SyncClient.start(store, relay.url, ["todos"], signed_out)
    with pytest.raises(sl.Unauthorized, match="the user signed out"):
        asyncio.run(client.wait_synced(timeout=20))
    client.stop()


def test_a_provider_that_raises_anything_else_is_retried_until_it_answers(
    tmp_path: Path, relay: Relay
) -> None:
    store = open_store(tmp_path, "phone")
    doc = store.create("todos", {"title": "Later"})
    token = relay.token(store.device_id)
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the auth service is down")
        if calls == 2:
            raise RuntimeError("a bug in the host's provider")
        return token

    client = sl.SyncClient.start(store, relay.url, ["todos"], flaky)
    # A failure ends this wait as Unreachable (no token now, with the provider's reason), not
    # as a crash (which of the two failures it meets depends on the retry's timing)...
    with pytest.raises(sl.SyncError.Unreachable,
                       match="the auth service is down|a bug in the host's provider"):
        asyncio.run(client.wait_synced(timeout=20))
    # ...and the client keeps retrying with backoff until the provider answers (a wait fails
    # fast while the last attempt's error stands, so wait again, up to 60 s).
    deadline = time.monotonic() + 60
    while True:
        try:
            asyncio.run(client.wait_synced(timeout=20))
            break
        except sl.SyncError.Unreachable:
            assert time.monotonic() < deadline, "never retried"
            time.sleep(0.1)
    assert calls >= 3
    assert store.pending_documents() == []
    assert doc.id in store.list("todos")
    client.stop()


def test_a_conflict_is_inspected_and_resolved(tmp_path: Path, relay: Relay) -> None:
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create("todos", {"title": "Buy milk"}).id

    sync(phone, relay)
    sync(laptop, relay)
    heard = collect(laptop.conflict_events())
    in_todos = collect(laptop.conflict_events("todos"))
    phone.document(doc).put("/title", "Buy oat milk")
    laptop.document(doc).put("/title", "Buy almond milk")
    sync(phone, relay)
    sync(laptop, relay)
    conflicts = sorted(json.loads(v) for v in laptop.conflicts_json(doc, "title"))
    assert conflicts == ["Buy almond milk", "Buy oat milk"]
    assert sorted(text(v) for v in laptop.document(doc).conflicts("/title")) == [
        "Buy almond milk", "Buy oat milk"]
    # Listed, with who wrote each value, and heard by the streams.
    assert laptop.conflicted_documents() == [doc]
    [conflict] = laptop.document(doc).all_conflicts()
    assert (conflict.doc, conflict.path) == (doc, "/title")
    assert sorted((v.device, text(v.value)) for v in conflict.values) == sorted([
        (phone.device_id, "Buy oat milk"),
        (laptop.device_id, "Buy almond milk"),
    ])
    eventually("the streams hear the conflict", lambda: heard.items != [] and in_todos.items != [])
    assert heard.items == [conflict] and in_todos.items == [conflict]
    laptop.resolve_json(doc, "title", json.dumps("Buy milk (any)"))
    assert laptop.conflicts_json(doc, "title") == ['"Buy milk (any)"']
    assert laptop.conflicted_documents() == []
    heard.close()
    in_todos.close()

    # The app's own strategy resolves the next conflict as soon as the merge leaves it.
    laptop.set_conflict_resolver("todos", longest)
    sync(laptop, relay)
    sync(phone, relay)
    phone.document(doc).put("/note", "oat")
    laptop.document(doc).put("/note", "almond")
    sync(phone, relay)
    sync(laptop, relay)
    assert laptop.conflicted_documents() == []
    assert laptop.document(doc).value("/note") == "almond"
    messages = [c.message for c in laptop.document(doc).history()]
    assert "resolve conflict (custom)" in messages, messages
    with pytest.raises(sl.SyncError.InvalidInput):
        laptop.set_conflict_strategy("todos", sl.ConflictStrategy.DEVICE_PRIORITY(["nope"]))
    laptop.set_conflict_strategy("todos", sl.ConflictStrategy.DEVICE_PRIORITY([phone.device_id]))
    laptop.set_conflict_strategy("todos", sl.ConflictStrategy.LAST_WRITER_WINS())
    laptop.set_conflict_strategy("todos", None)


def test_a_conflict_on_one_document_is_resolved_through_it(tmp_path: Path, relay: Relay) -> None:
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create("todos", {"title": "Buy milk"}).id

    sync(phone, relay)
    sync(laptop, relay)
    document = laptop.document(doc)
    heard = collect(document.conflict_events())
    phone.document(doc).put("/title", "Buy oat milk")
    document.put("/title", "Buy almond milk")
    sync(phone, relay)
    sync(laptop, relay)
    eventually("the document's stream hears the conflict", lambda: heard.items != [])
    assert heard.items[0].path == "/title"
    document.resolve("/title", "Buy milk (any)")
    assert document.conflicts("/title") == [sl.Value.STR("Buy milk (any)")]
    assert document.all_conflicts() == []
    heard.close()
    assert laptop.subscription_count == 0


def test_typed_values_round_trip_with_history_and_time_travel(tmp_path: Path) -> None:
    store = open_store(tmp_path, "phone")
    V, Op = sl.Value, sl.WriteOp
    doc = store.create("todos", {"title": "Draft"})
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
    doc.apply([Op.PUSH("/tags", V.STR("errands"))])
    doc.delete("/gone")
    assert doc.get("/notes") == V.TEXT("hello world")
    assert doc.get("/votes") == V.COUNTER(3)
    assert doc.get("/tags") == V.ARRAY([V.STR("home"), V.STR("errands")])
    assert doc.get("/blob") == V.BYTES(b"\x00\xff")
    assert doc.get("/ratio") == V.FLOAT(0.5)
    assert doc.get("/gone") is None
    assert doc.get("/missing") is None
    assert json.loads(doc.to_json())["notes"] == "hello world"
    history = doc.history()
    assert [c.message for c in history] == ["create", "fill in", None, None, None, None]
    assert history[1].device == store.device_id
    then = doc.view_at(first)
    assert then.heads == first
    assert then.get("/title") == V.STR("Draft")
    assert then.get("/notes") is None
    assert then.to_dict() == {"title": "Draft"}
    assert json.loads(then.to_json()) == {"title": "Draft"}
    assert doc.diff(first, doc.heads())
    with pytest.raises(sl.SyncError.InvalidInput):
        doc.get("/title/deeper")
    with pytest.raises(sl.SyncError.InvalidInput):
        doc.apply([Op.INCREMENT("/title", 1)])
    assert doc.get("/title") == V.STR("Draft")
    doc.put_json("/title", json.dumps("Final"))
    assert doc.value("/title") == "Final"


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_opening_and_closing_many_stores_grows_neither_files_nor_memory(tmp_path: Path) -> None:
    def cycle(rounds: int) -> None:
        for i in range(rounds):
            with sl.Store.open(tmp_path / f"churn-{i % 8}.db") as store:
                store.create_json("todos", json.dumps({"n": i}))
            # Closed: the last handle, so the Rust store closes here.

    cycle(50)  # warm up: one-time allocations of Python, SQLite and the allocator
    files, memory = _open_files(), _resident_kib()
    cycle(400)
    # Each store holds four descriptors (database, WAL, shared memory, lock): 400 leaked
    # stores would hold 1,600, and megabytes of caches each.
    assert _open_files() == files
    grown = _resident_kib() - memory
    assert grown < 32 * 1024, f"resident memory grew by {grown} KiB"
    # Closing released each store's lock: the file opens again at once with every write.
    assert len(sl.Store.open(tmp_path / "churn-0.db").list("todos")) == 57


def test_a_host_blocking_inside_the_token_provider_blocks_nothing_else(
    tmp_path: Path, relay: Relay
) -> None:
    store = open_store(tmp_path, "phone")
    doc = store.create("todos", {"title": "Blocked"})
    entered, release = threading.Event(), threading.Event()
    token = relay.token(store.device_id)

    def blocking() -> str:
        entered.set()
        # The host blocks (a refresh over its own network stack, say) until released.
        assert release.wait(60), "never released"
        return token

    client = sl.SyncClient.start(store, relay.url, ["todos"], blocking)
    assert entered.wait(20)
    # While the provider blocks, the host's calls return: none of them waits on it.
    assert not isinstance(client.status, sl.SyncStatus.SYNCED)
    doc.put("/done", True)
    client.pause()
    client.resume()
    assert not release.is_set()

    async def wait_while_the_loop_runs() -> sl.SyncStats:
        # The release is scheduled on this same event loop: it can only run if awaiting the
        # sync suspends the coroutine instead of blocking the loop's thread.
        asyncio.get_running_loop().call_later(0.2, release.set)
        return await client.wait_synced(timeout=20)

    asyncio.run(wait_while_the_loop_runs())
    assert store.pending_documents() == []
    client.stop()


def test_one_store_is_shared_by_many_host_threads(tmp_path: Path) -> None:
    store = open_store(tmp_path, "phone")
    shared = store.create("todos", {"votes": sl.Value.COUNTER(0)})
    errors = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                store.create("todos", {"thread": n, "i": i})
                shared.increment("/votes")
        except Exception as e:  # reported below, with the thread's number
            errors.append((n, e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(store.list("todos")) == 1 + 4 * 25
    assert shared.get("/votes") == sl.Value.COUNTER(100)


def phone_profile(metered: bool = False, download_bytes_per_s: Optional[int] = None) -> sl.Profile:
    # uniffi names the field `class` `_class` in Python; the others have defaults.
    return sl.Profile(_class=sl.DeviceClass.PHONE, metered=metered,
                      download_bytes_per_s=download_bytes_per_s)


def test_a_device_given_fallback_relays_syncs_through_one_that_answers(
    tmp_path: Path, relay: Relay
) -> None:
    # The first relay refuses connections (nothing listens there): the next connection goes
    # to the fallback, which the device then keeps.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    store = open_store(tmp_path, "failover")
    doc = store.create("todos", {"title": "through the fallback"})
    client = sl.SyncClient.start(
        store, dead, ["todos"], Tokens(relay.token(store.device_id)),
        profile=phone_profile(), fallback_urls=[relay.url],
    )
    asyncio.run(client.wait_synced(timeout=20))
    assert store.pending_documents() == []
    client.stop()
    other = open_store(tmp_path, "other")
    with start(other, relay) as reader:
        asyncio.run(reader.wait_synced(timeout=20))
    assert other.document(doc.id).to_dict() == {"title": "through the fallback"}


def test_on_demand_deferred_fetch_open_and_progress_cross_the_binding(
    tmp_path: Path, relay: Relay
) -> None:
    camera, phone = open_store(tmp_path, "camera"), open_store(tmp_path, "phone")
    docs = [camera.create("photos", {"title": f"photo {i}"}).id for i in range(3)]
    camera_client = sl.SyncClient.start(
        camera, relay.url, ["photos"],
        Tokens(relay.token(camera.device_id, write="photos", read="photos")),
        profile=phone_profile(),
    )
    asyncio.run(camera_client.wait_synced(timeout=20))
    camera_client.stop()

    client = sl.SyncClient.start(
        phone, relay.url,
        [sl.CollectionSync(collection="photos", priority=sl.Priority.HIGH, on_demand=True)],
        Tokens(relay.token(phone.device_id, write="photos", read="photos")),
        profile=phone_profile(metered=True, download_bytes_per_s=125_000),
        defer_metered_uploads=True,
    )
    statuses = collect(client.status_updates())
    asyncio.run(client.wait_synced(timeout=20))
    # Only the list: each document with its size, priority and why it waits.
    deferred = client.deferred()
    assert sorted(d.doc_id for d in deferred) == sorted(docs)
    assert all(d.reason == sl.DeferReason.ON_DEMAND for d in deferred)
    assert all(d.priority == sl.Priority.HIGH and d.bytes > 0 for d in deferred)
    assert all(d.changed_ms is not None for d in deferred)
    assert phone.list("photos") == []
    # Opening one fetches it; asking for another fetches it in the background.
    opened: sl.Document = asyncio.run(client.open(docs[0], timeout=20))
    assert opened.to_dict() == {"title": "photo 0"}
    client.fetch([docs[1]])
    eventually("the fetched photo arrives", lambda: docs[1] in phone.list("photos"))
    assert [d.doc_id for d in client.deferred()] == [docs[2]]
    # The network changes on the live connection; nothing is held back on the way up.
    client.set_network(False)
    client.set_network_available(True)
    client.set_profile(phone_profile())
    client.set_subscriptions(["photos"])
    client.sync_now()
    assert client.deferred_uploads() == []
    with pytest.raises(sl.SyncError.InvalidInput):
        client.fetch(["not an id"])
    eventually("a synced status", lambda: any(isinstance(s, sl.SyncStatus.SYNCED)
                                              for s in statuses.items))
    statuses.close()
    synced = [s for s in statuses.items if isinstance(s, sl.SyncStatus.SYNCED)]
    assert synced and synced[-1].over_budget_bytes == 0
    for s in statuses.items:
        if isinstance(s, sl.SyncStatus.SYNCING):
            assert len(s.progress.download_by_priority) == 4
            assert len(s.progress.upload_by_priority) == 4
    client.stop()


def test_a_refused_document_a_store_wide_stream_and_the_history_of_syncs(
    tmp_path: Path, relay: Relay
) -> None:
    phone = open_store(tmp_path, "phone")
    everything = collect(phone.changes())
    todo = phone.create("todos", {"title": "allowed"}).id
    note = phone.create("notes", {"text": "no write grant"}).id
    # The store-wide stream heard both collections, each event naming this device.
    eventually("both changes are heard", lambda: len(everything.items) == 2)
    assert sorted(e.doc for e in everything.items) == sorted([todo, note])
    assert all(e.devices == [phone.device_id] and not e.remote for e in everything.items)

    token = relay.token(phone.device_id, write="todos", read="todos,notes")
    client = sl.SyncClient.start(phone, relay.url, ["todos", "notes"], Tokens(token))
    errors = collect(client.sync_error_events())
    eventually("the note is refused", lambda: client.sync_errors() != [])
    [refused] = client.sync_errors()
    assert refused.doc == note
    assert isinstance(refused.kind, sl.SyncErrorKind.NOT_PERMITTED), refused.kind
    assert "no write grant" in refused.message
    assert refused.retry_at_ms is None
    # The rest went on: the todo is acknowledged, the note stays pending.
    eventually("the todo is acknowledged", lambda: phone.pending_documents() == [note])
    eventually("the stream heard it", lambda: errors.items != [])
    raised = errors.items[0]
    assert isinstance(raised, sl.SyncErrorEvent.RAISED)
    assert raised.error == refused
    client.stop()

    [record] = phone.sync_history(10)
    assert isinstance(record.end, sl.SyncEnd.STOPPED), record.end
    assert record.relay == relay.url
    assert record.session
    assert (record.refused_count, record.refused) == (1, [note])
    assert record.docs_sent == 2 and record.bytes_sent > 0 and record.round_trips >= 1
    assert record.started_at_ms <= record.ended_at_ms
    errors.close()
    everything.close()


def test_presence_reaches_the_other_device_with_its_sender(tmp_path: Path, relay: Relay) -> None:
    phone, laptop = open_store(tmp_path, "phone"), open_store(tmp_path, "laptop")
    doc = phone.create("todos", {"title": "shared"}).id
    phone_client, laptop_client = start(phone, relay), start(laptop, relay)

    async def both_synced() -> None:
        await phone_client.wait_synced(timeout=20)
        await laptop_client.wait_synced(timeout=20)

    asyncio.run(both_synced())
    heard = collect(laptop_client.ephemeral(doc))
    anywhere = collect(laptop_client.ephemeral())
    phone_client.send_ephemeral(doc, b"cursor at 3")
    eventually("the laptop hears the phone", lambda: heard.items != [] and anywhere.items != [])
    [message] = heard.items
    assert (message.doc, message.sender, message.payload) == (doc, phone.device_id, b"cursor at 3")
    assert anywhere.items == [message]
    with pytest.raises(sl.SyncError.InvalidInput):
        phone_client.send_ephemeral(doc, bytes(4097))
    with pytest.raises(sl.SyncError.RateLimited):
        for _ in range(100):
            phone_client.send_ephemeral(doc, b"typing")
    with pytest.raises(sl.SyncError.InvalidInput):
        laptop_client.ephemeral("not an id")
    heard.close()
    anywhere.close()
    assert laptop_client.subscription_count == 0
    phone_client.stop()
    laptop_client.stop()
