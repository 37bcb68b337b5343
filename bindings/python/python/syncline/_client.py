"""`SyncClient`: syncs a store with a relay in the background."""

from __future__ import annotations

import atexit
import datetime
import weakref
from types import TracebackType
from typing import Any, Callable, List, Optional, Sequence, Type, TypeVar, Union

from ._errors import translated, translated_async
from ._listeners import EphemeralSink, StatusSink, SyncErrorSink, Tokens
from ._native import (
    CollectionSync,
    DeferredDoc,
    DeviceClass,
    Disconnect,
    DocSyncError,
    Ephemeral,
    FfiSyncClient,
    Priority,
    Profile,
    SyncErrorEvent,
    SyncOptions,
    SyncStats,
    SyncStatus,
)
from ._document import Document
from ._store import Store
from ._streams import EventStream
from ._values import string_list

T = TypeVar("T")

#: A duration: seconds (int or float) or a `datetime.timedelta`.
Seconds = Union[int, float, datetime.timedelta]


def _milliseconds(timeout: Seconds) -> int:
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    if seconds < 0:
        raise ValueError("a timeout is not negative")
    return round(seconds * 1000)


def _subscriptions(
    collections: Sequence[Union[str, CollectionSync]],
) -> List[CollectionSync]:
    if isinstance(collections, str):
        raise TypeError("collections is a list of collections, not one string")
    return [
        c if isinstance(c, CollectionSync) else CollectionSync(collection=c, priority=Priority.NORMAL)
        for c in collections
    ]


#: The clients not stopped yet, stopped when the interpreter exits: past that point the SDK's
#: sync thread must not call into Python (a status stream's listener, a token provider).
_running: "weakref.WeakSet[SyncClient]" = weakref.WeakSet()


@atexit.register
def _stop_running_clients() -> None:
    for client in list(_running):
        client.stop()


class SyncClient:
    """Syncs a store's collections with a relay, in the background, for as long as it runs:
    what is written offline goes up when a connection exists, what others write comes down.
    No call blocks on the network; `wait_synced` and `open` are coroutines.

    Use it as a context manager, or call `stop()` (also `close()`)."""

    def __init__(self, inner: FfiSyncClient) -> None:
        self._inner = inner
        # The streams this client feeds, ended by `stop()` (the SDK drops their listeners).
        self._streams: "weakref.WeakSet[EventStream[Any]]" = weakref.WeakSet()
        _running.add(self)

    def _fed(self, stream: EventStream[T]) -> EventStream[T]:
        self._streams.add(stream)
        return stream

    @classmethod
    @translated
    def start(
        cls,
        store: Store,
        relay_url: str,
        collections: Sequence[Union[str, CollectionSync]],
        tokens: Callable[[], str],
        *,
        profile: Optional[Profile] = None,
        sync_interval: Optional[Seconds] = None,
        defer_metered_uploads: Optional[bool] = None,
        fallback_urls: Sequence[str] = (),
    ) -> SyncClient:
        """Starts syncing `collections` of `store` with the relay at `relay_url`
        (`wss://host`). `tokens` returns a token whenever one is needed (called on an SDK
        thread; it may block): raise `syncline.SignedOut` to stop, anything else is retried.

        A collection is a name (normal priority, content kept local) or a `CollectionSync`
        (its priority, and `on_demand=True` to fetch content when opened). Without a
        `profile` the device is a desktop on an unmetered network, syncing in real time."""
        provider = Tokens(tokens)
        subscriptions = _subscriptions(collections)
        urls = string_list("fallback_urls", fallback_urls)
        plain = (
            all(isinstance(c, str) for c in collections)
            and profile is None
            and sync_interval is None
            and defer_metered_uploads is None
            and not urls
        )
        if plain:
            names = [c for c in collections if isinstance(c, str)]
            return cls(FfiSyncClient.start(store._inner, relay_url, names, provider))
        options = SyncOptions(
            relay_url=relay_url,
            collections=subscriptions,
            profile=profile if profile is not None else Profile(_class=DeviceClass.DESKTOP),
            sync_interval_ms=None if sync_interval is None else _milliseconds(sync_interval),
            defer_metered_uploads=defer_metered_uploads,
            fallback_urls=urls,
        )
        return cls(FfiSyncClient.start_with(store._inner, options, provider))

    @property
    def status(self) -> SyncStatus:
        """Offline, connecting, syncing (with progress), synced, or an error."""
        return self._inner.status()

    def status_updates(self) -> EventStream[SyncStatus]:
        """The status now, then each change of it: `async for status in
        client.status_updates():`."""
        inner = self._inner
        return self._fed(
            EventStream(lambda sink: inner.watch_status(StatusSink(sink)), inner.status)
        )

    @property
    def stats(self) -> SyncStats:
        """Totals of the current connection."""
        return self._inner.stats()

    @property
    def last_disconnect(self) -> Optional[Disconnect]:
        """Why the last connection ended (None while the first is up or pending)."""
        return self._inner.last_disconnect()

    @property
    def subscription_count(self) -> int:
        """How many status, sync-error and ephemeral streams are subscribed now."""
        return self._inner.subscription_count()

    def sync_errors(self) -> List[DocSyncError]:
        """The documents that did not sync, each with why (their changes stay pending)."""
        return self._inner.sync_errors()

    def sync_error_events(self) -> EventStream[SyncErrorEvent]:
        """Each document that fails to sync, and each that syncs again."""
        inner = self._inner
        return self._fed(EventStream(lambda sink: inner.watch_sync_errors(SyncErrorSink(sink))))

    @translated
    def send_ephemeral(self, doc_id: str, payload: bytes) -> None:
        """Sends presence (a cursor, "typing") to the devices connected on `doc_id` now;
        never stored. `SyncError.RateLimited` past 30 a second."""
        self._inner.send_ephemeral(doc_id, payload)

    @translated
    def ephemeral(self, doc_id: Optional[str] = None) -> EventStream[Ephemeral]:
        """What other devices send on `doc_id` (on any document, with None)."""
        inner = self._inner
        return self._fed(
            EventStream(lambda sink: inner.watch_ephemeral(doc_id, EphemeralSink(sink)))
        )

    @translated_async
    async def wait_synced(self, timeout: Seconds = 30) -> SyncStats:
        """Suspends until everything is synced and nothing is pending, or raises
        (`SyncError.Unauthorized`, `Unreachable`, `Sync`, `Timeout`)."""
        return await self._inner.wait_synced(_milliseconds(timeout))

    @translated_async
    async def open(self, doc_id: str, timeout: Seconds = 30) -> Document:
        """The document `doc_id`, fetched from the relay first if its content is not here
        (on demand, deferred, evicted)."""
        return Document(await self._inner.open(doc_id, _milliseconds(timeout)))

    def set_profile(self, profile: Profile) -> None:
        """Declares a new profile to the relay (on the live connection)."""
        self._inner.set_profile(profile)

    def set_network(
        self,
        metered: bool,
        download_bytes_per_s: Optional[int] = None,
        upload_bytes_per_s: Optional[int] = None,
    ) -> None:
        """The network changed: metered or not, and its bandwidth if known."""
        self._inner.set_network(metered, download_bytes_per_s, upload_bytes_per_s)

    @translated
    def set_subscriptions(self, collections: Sequence[Union[str, CollectionSync]]) -> None:
        """Syncs these collections from now on."""
        self._inner.set_subscriptions(_subscriptions(collections))

    @translated
    def deferred(self) -> List[DeferredDoc]:
        """The documents the relay listed but did not send (on demand, metered, low priority,
        over the storage budget), each with why."""
        return self._inner.deferred()

    @translated
    def fetch(self, doc_ids: Sequence[str]) -> None:
        """Fetches deferred documents in the background."""
        self._inner.fetch(string_list("doc_ids", doc_ids))

    def deferred_uploads(self) -> List[str]:
        """Documents whose upload waits for an unmetered network."""
        return self._inner.deferred_uploads()

    def sync_now(self) -> None:
        """Syncs now (a periodic device between its scheduled syncs)."""
        self._inner.sync_now()

    def pause(self) -> None:
        """Disconnects and stays offline until `resume()`."""
        self._inner.pause()

    def resume(self) -> None:
        """Connects again after `pause()`."""
        self._inner.resume()

    def set_network_available(self, available: bool) -> None:
        """The network is (un)available: stop retrying, or connect at once."""
        self._inner.set_network_available(available)

    def stop(self) -> None:
        """Stops syncing; what is pending stays in the store. The streams it feeds end (after
        what they hold)."""
        _running.discard(self)
        self._inner.stop()
        for stream in list(self._streams):
            stream.close()

    close = stop

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.stop()
