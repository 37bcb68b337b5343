"""`Store`: the local store."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Callable, List, Optional, Type, Union

from ._errors import translated
from ._listeners import ChangeSink, ConflictSink, Resolver
from ._document import Document
from ._native import (
    ChangeEvent,
    Conflict,
    ConflictStrategy,
    DocumentInfo,
    FfiStore,
    PendingChange,
    Priority,
    StoreOptions,
    SyncRecord,
)
from ._streams import EventStream
from ._values import PyValue, to_value

PathLike = Union[str, "os.PathLike[str]"]


class Store:
    """The local store: one SQLite file of Automerge documents. Every write is durable when
    the call returns, online or not. Safe to share between threads.

    Use it as a context manager (`with Store.open(path) as store:`) or call `close()`: that
    releases this handle; the file closes once documents and sync clients made from it are
    released too."""

    def __init__(self, inner: FfiStore) -> None:
        self._handle: Optional[FfiStore] = inner

    @classmethod
    @translated
    def open(cls, path: PathLike, options: Optional[StoreOptions] = None) -> Store:
        """Opens (or creates) the store file at `path`; `SyncError.Storage` if it cannot."""
        if options is None:
            return cls(FfiStore.open(os.fspath(path)))
        return cls(FfiStore.open_with(os.fspath(path), options))

    @property
    def _inner(self) -> FfiStore:
        if self._handle is None:
            raise ValueError("the store is closed")
        return self._handle

    def close(self) -> None:
        """Releases this handle (later calls raise `ValueError`)."""
        self._handle = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def device_id(self) -> str:
        """This device's id, in hex."""
        return self._inner.device_id()

    @translated
    def create(self, collection: str, content: PyValue) -> Document:
        """Creates a document in `collection` with `content` (a dict) and returns it."""
        return Document(self._inner.create(collection, to_value(content)))

    @translated
    def create_at(
        self, doc_id: str, content: PyValue, priority: Priority = Priority.NORMAL
    ) -> Document:
        """Creates the document `doc_id` (`collection/name`), with a sync priority;
        `SyncError.InvalidInput` if it exists."""
        return Document(self._inner.create_at(doc_id, to_value(content), priority))

    @translated
    def create_json(self, collection: str, json: str) -> str:
        """Creates a document from a JSON object and returns its id."""
        return self._inner.create_json(collection, json)

    @translated
    def document(self, doc_id: str) -> Document:
        """The document `doc_id`; `SyncError.NotFound` if there is none."""
        return Document(self._inner.document(doc_id))

    @translated
    def info(self, doc_id: str) -> DocumentInfo:
        """What the store knows of a document without loading it."""
        return self._inner.info(doc_id)

    @translated
    def put_json(self, doc_id: str, path: str, json: str) -> None:
        """Sets the value at `path` (a JSON Pointer) from JSON."""
        self._inner.put_json(doc_id, path, json)

    @translated
    def get_json(self, doc_id: str) -> str:
        """The document's content as JSON."""
        return self._inner.get_json(doc_id)

    @translated
    def delete(self, doc_id: str) -> None:
        """Deletes a document (the deletion syncs like a change)."""
        self._inner.delete(doc_id)

    @translated
    def list(self, collection: str) -> List[str]:
        """The ids of the documents in `collection`."""
        return self._inner.list(collection)

    @translated
    def list_info(self, collection: str) -> List[DocumentInfo]:
        """`info` of every document in `collection`."""
        return self._inner.list_info(collection)

    @translated
    def pending_documents(self) -> List[str]:
        """The documents with changes the relay has not acknowledged."""
        return self._inner.pending_documents()

    @translated
    def pending_changes(self) -> List[PendingChange]:
        """The changes the relay has not acknowledged, oldest first."""
        return self._inner.pending_changes()

    @translated
    def conflicts_json(self, doc_id: str, path: str) -> List[str]:
        """The concurrent values at `path`, as JSON (one unless there is a conflict)."""
        return self._inner.conflicts_json(doc_id, path)

    @translated
    def resolve_json(self, doc_id: str, path: str, json: str) -> None:
        """Resolves the conflict at `path` with one value, from JSON."""
        self._inner.resolve_json(doc_id, path, json)

    @translated
    def sync_history(self, limit: int = 20) -> List[SyncRecord]:
        """The last `limit` connections, newest first: bytes, round trips, how each ended."""
        return self._inner.sync_history(limit)

    @translated
    def conflicted_documents(self) -> List[str]:
        """The documents with an unresolved conflict."""
        return self._inner.conflicted_documents()

    @translated
    def set_conflict_strategy(self, collection: str, strategy: Optional[ConflictStrategy]) -> None:
        """How conflicts in `collection` resolve on their own (None: they stay, to inspect)."""
        self._inner.set_conflict_strategy(collection, strategy)

    @translated
    def set_conflict_resolver(
        self, collection: str, resolve: Callable[[Conflict], PyValue]
    ) -> None:
        """Resolves each new conflict in `collection` with the value `resolve` returns (a
        function of the conflict alone, so that every device picks the same)."""
        self._inner.set_conflict_resolver(
            collection, Resolver(lambda conflict: to_value(resolve(conflict)))
        )

    @translated
    def changes(self, collection: Optional[str] = None) -> EventStream[ChangeEvent]:
        """Every change to `collection` (every collection, with none), local and remote, as
        an async iterator: `async for event in store.changes("todos"):`."""
        inner = self._inner
        if collection is None:
            return EventStream(lambda sink: inner.watch_all(ChangeSink(sink)))
        name = collection
        return EventStream(lambda sink: inner.watch_collection(name, ChangeSink(sink)))

    @translated
    def conflict_events(self, collection: Optional[str] = None) -> EventStream[Conflict]:
        """Each conflict as a merge leaves it, in `collection` (or anywhere)."""
        inner = self._inner
        if collection is None:
            return EventStream(lambda sink: inner.watch_conflicts(ConflictSink(sink)))
        name = collection
        return EventStream(
            lambda sink: inner.watch_collection_conflicts(name, ConflictSink(sink))
        )

    @property
    def subscription_count(self) -> int:
        """How many change and conflict streams are subscribed now."""
        return self._inner.subscription_count()
