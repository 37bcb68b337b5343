"""The generated layer's listener interfaces, each forwarding to a plain function (an
`EventStream`'s sink, a conflict resolver, a token provider)."""

from __future__ import annotations

from typing import Callable

from ._native import (
    ChangeEvent,
    Conflict,
    Ephemeral,
    FfiChangeListener,
    FfiConflictListener,
    FfiConflictResolver,
    FfiEphemeralListener,
    FfiStatusListener,
    FfiSyncErrorListener,
    FfiTokenError,
    FfiTokenProvider,
    SyncErrorEvent,
    SyncStatus,
    Value,
)
from ._errors import SignedOut


class ChangeSink(FfiChangeListener):
    def __init__(self, sink: Callable[[ChangeEvent], None]) -> None:
        self._sink = sink

    def on_change(self, event: ChangeEvent) -> None:
        self._sink(event)


class ConflictSink(FfiConflictListener):
    def __init__(self, sink: Callable[[Conflict], None]) -> None:
        self._sink = sink

    def on_conflict(self, conflict: Conflict) -> None:
        self._sink(conflict)


class StatusSink(FfiStatusListener):
    def __init__(self, sink: Callable[[SyncStatus], None]) -> None:
        self._sink = sink

    def on_status(self, status: SyncStatus) -> None:
        self._sink(status)


class SyncErrorSink(FfiSyncErrorListener):
    def __init__(self, sink: Callable[[SyncErrorEvent], None]) -> None:
        self._sink = sink

    def on_sync_error(self, event: SyncErrorEvent) -> None:
        self._sink(event)


class EphemeralSink(FfiEphemeralListener):
    def __init__(self, sink: Callable[[Ephemeral], None]) -> None:
        self._sink = sink

    def on_ephemeral(self, message: Ephemeral) -> None:
        self._sink(message)


class Resolver(FfiConflictResolver):
    """A conflict resolver given as a function of the conflict."""

    def __init__(self, resolve: Callable[[Conflict], Value]) -> None:
        self._resolve = resolve

    def resolve(self, conflict: Conflict) -> Value:
        return self._resolve(conflict)


class Tokens(FfiTokenProvider):
    """A token provider given as a function: `SignedOut` stops the client, anything else it
    raises means no token now (retried with backoff)."""

    def __init__(self, provide: Callable[[], str]) -> None:
        self._provide = provide

    def token(self) -> str:
        try:
            return self._provide()
        except SignedOut as error:
            raise FfiTokenError.SignedOut(str(error)) from error
        except Exception as error:
            raise FfiTokenError.Unavailable(str(error) or type(error).__name__) from error
