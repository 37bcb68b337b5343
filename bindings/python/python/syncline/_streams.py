"""Listener callbacks as asyncio async iterators.

The SDK calls listeners on its own threads (the writer's, the sync thread); an `EventStream`
takes each event there without blocking (an unbounded buffer) and hands it to the coroutine
iterating it on its event loop. The facade subscription lives exactly as long as the stream:
ending the iteration (`break`, `return` or an exception releases the iterator), a cancelled
wait for the next event (a cancelled task, a timeout), `aclose()`, or leaving `async with`
cancels it at once, as an async generator would be finalised."""

from __future__ import annotations

import asyncio
import collections
import threading
from types import TracebackType
from typing import Callable, Deque, Generic, Optional, Tuple, Type, TypeVar

from ._native import FfiSubscription

T = TypeVar("T")


class _Channel(Generic[T]):
    """The buffer between the SDK's threads and the iterating coroutine. Only the channel is
    reachable from the listener: the SDK never holds the stream itself, so the stream is
    released (and unsubscribes) on the thread that iterated it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: Deque[T] = collections.deque()
        self.waiter: Optional[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = None
        self.closed = False

    def push(self, item: T) -> None:
        """Called on an SDK thread: buffer, and wake the waiting coroutine; never blocks."""
        with self.lock:
            if self.closed:
                return
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        _wake_soon(waiter)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            waiter, self.waiter = self.waiter, None
        _wake_soon(waiter)


class EventStream(Generic[T]):
    """An async iterator of events, subscribed from creation until closed."""

    def __init__(
        self,
        subscribe: Callable[[Callable[[T], None]], FfiSubscription],
        first: Optional[Callable[[], T]] = None,
    ) -> None:
        self._channel: _Channel[T] = _Channel()
        self._subscription: Optional[FfiSubscription] = subscribe(self._channel.push)
        if first is not None:
            # The current state, unless an event newer than it already arrived.
            current = first()
            with self._channel.lock:
                if not self._channel.items:
                    self._channel.items.append(current)

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        channel = self._channel
        while True:
            with channel.lock:
                if channel.items:
                    return channel.items.popleft()
                if channel.closed:
                    raise StopAsyncIteration
                if channel.waiter is not None:
                    raise RuntimeError("another task is already waiting for this stream's next event")
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                channel.waiter = (loop, future)
            try:
                await future
            except asyncio.CancelledError:
                # As with an async generator, a wait cancelled (its task, or a timeout around
                # it) ends the stream: nothing can resume this iteration.
                self.close()
                raise
            finally:
                with channel.lock:
                    if channel.waiter is not None and channel.waiter[1] is future:
                        channel.waiter = None

    def close(self) -> None:
        """Unsubscribes: no more events arrive, and an iteration ends after what is
        buffered."""
        self._channel.close()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.cancel()

    async def aclose(self) -> None:
        """`close()`, for `contextlib.aclosing` and async-generator-style callers."""
        self.close()

    async def __aenter__(self) -> EventStream[T]:
        return self

    async def __aexit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Released (the `async for` that held it ended): unsubscribe at once.
        if getattr(self, "_subscription", None) is not None:
            self.close()


def _wake_soon(waiter: Optional[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    if waiter is None:
        return
    loop, future = waiter
    try:
        loop.call_soon_threadsafe(_wake, future)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
