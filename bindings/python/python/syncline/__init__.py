"""Syncline for Python: an offline-first store of Automerge documents that syncs through a
Syncline relay.

    import asyncio, syncline

    with syncline.Store.open("phone.db") as store:
        doc = store.create("todos", {"title": "Buy milk"})     # durable, offline or not
        client = syncline.SyncClient.start(store, "wss://relay.example", ["todos"], get_token)
        asyncio.run(client.wait_synced(timeout=30))

Change and status streams are asyncio async iterators (`async for event in
store.changes("todos"):`); errors are `SyncError`s. The records and enums (`ChangeEvent`,
`SyncStatus`, `Profile`, `Value`, ...) are the native layer's, re-exported here."""

from ._client import SyncClient
from ._decode import DecodingError
from ._errors import (
    Evicted,
    InvalidInput,
    NotFound,
    RateLimited,
    SignedOut,
    Storage,
    Sync,
    SyncError,
    Timeout,
    TokenError,
    Unauthorized,
    Unreachable,
)
from ._native import (
    Change,
    ChangeEvent,
    CollectionSync,
    Conflict,
    ConflictStrategy,
    ConflictValue,
    DeferReason,
    DeferredDoc,
    DeviceClass,
    Disconnect,
    DocSyncError,
    DocumentInfo,
    Durability,
    Ephemeral,
    Patch,
    PatchAction,
    PendingChange,
    Priority,
    Profile,
    Progress,
    StoreOptions,
    SyncEnd,
    SyncErrorEvent,
    SyncErrorKind,
    SyncOptions,
    SyncRecord,
    SyncStats,
    SyncStatus,
    Transfer,
    Value,
    WriteOp,
)
from ._document import Document
from ._store import Store
from ._view import DocumentView
from ._streams import EventStream
from ._values import Plain, PyValue

__all__ = [
    "Change",
    "ChangeEvent",
    "CollectionSync",
    "Conflict",
    "DecodingError",
    "ConflictStrategy",
    "ConflictValue",
    "DeferReason",
    "DeferredDoc",
    "DeviceClass",
    "Disconnect",
    "DocSyncError",
    "Document",
    "DocumentInfo",
    "DocumentView",
    "Durability",
    "Ephemeral",
    "EventStream",
    "Evicted",
    "InvalidInput",
    "NotFound",
    "Patch",
    "PatchAction",
    "PendingChange",
    "Plain",
    "Priority",
    "Profile",
    "Progress",
    "PyValue",
    "RateLimited",
    "SignedOut",
    "Storage",
    "Store",
    "StoreOptions",
    "Sync",
    "SyncClient",
    "SyncEnd",
    "SyncError",
    "SyncErrorEvent",
    "SyncErrorKind",
    "SyncOptions",
    "SyncRecord",
    "SyncStats",
    "SyncStatus",
    "Timeout",
    "TokenError",
    "Transfer",
    "Unauthorized",
    "Unreachable",
    "Value",
    "WriteOp",
]
