"""Syncline's errors as Python exceptions: `SyncError` and one subclass per kind, raised in
place of the generated layer's `FfiError`; `TokenError` for token providers."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Dict, NoReturn, ParamSpec, Type, TypeVar

from ._native import FfiError

if TYPE_CHECKING:
    from ._decode import DecodingError

P = ParamSpec("P")
R = TypeVar("R")


class SyncError(Exception):
    """What a Syncline call raises. Catch `SyncError` for any failure, or a subclass
    (`SyncError.NotFound`, `SyncError.Timeout`, ...) for one kind; `str(error)` is the SDK's
    message."""

    NotFound: Type[SyncError]
    Evicted: Type[SyncError]
    InvalidInput: Type[SyncError]
    Storage: Type[SyncError]
    Unauthorized: Type[SyncError]
    Unreachable: Type[SyncError]
    Timeout: Type[SyncError]
    Sync: Type[SyncError]
    RateLimited: Type[SyncError]
    Decoding: Type[DecodingError]


class NotFound(SyncError):
    """No such document (or it was deleted)."""


class Evicted(SyncError):
    """The document's content was evicted to stay within the storage budget: `open` it
    through the sync client to fetch it again."""


class InvalidInput(SyncError):
    """A bad argument: an id, a path, a collection name, a value that does not fit."""


class Storage(SyncError):
    """The store's file failed (disk full, corrupt, opened by another process)."""


class Unauthorized(SyncError):
    """The relay refused the token, or the token provider said the user signed out."""


class Unreachable(SyncError):
    """No connection to the relay now (or no token now): the client retries on its own."""


class Timeout(SyncError):
    """A wait ran out of time."""


class Sync(SyncError):
    """Syncing failed otherwise (a refused change, a stopped client)."""


class RateLimited(SyncError):
    """Too many calls of this kind in a short time (ephemeral messages)."""


_KINDS: Dict[str, Type[SyncError]] = {
    kind.__name__: kind
    for kind in (
        NotFound,
        Evicted,
        InvalidInput,
        Storage,
        Unauthorized,
        Unreachable,
        Timeout,
        Sync,
        RateLimited,
    )
}
for _name, _kind in _KINDS.items():
    setattr(SyncError, _name, _kind)


class TokenError(Exception):
    """Raise from a token provider: `SignedOut` stops the client (it reports
    `Unauthorized`); anything else a provider raises means no token now, retried with
    backoff."""


class SignedOut(TokenError):
    """The user signed out or lost access: stop connecting."""


def _raise_native(error: FfiError) -> NoReturn:
    kind = _KINDS.get(type(error).__name__, SyncError)
    raise kind(str(error)) from None


def translated(call: Callable[P, R]) -> Callable[P, R]:
    """Wraps a call into the generated layer so that its `FfiError` arrives as the
    `SyncError` of the same kind."""

    @functools.wraps(call)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return call(*args, **kwargs)
        except FfiError as error:
            _raise_native(error)

    return wrapper


def translated_async(
    call: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """`translated` for a coroutine function."""

    @functools.wraps(call)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except FfiError as error:
            _raise_native(error)

    return wrapper
