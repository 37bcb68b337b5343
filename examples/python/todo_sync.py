"""Syncline from Python: two devices and a local relay. The phone writes while offline, then
connects and the laptop receives it; the laptop goes offline, edits, and reconnects, and the
phone receives that. Run with the path of a `syncline-relay` binary:

    python examples/python/todo_sync.py /path/to/syncline-relay

(`cargo xtask test python` runs it, with the package installed from a built wheel.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import syncline


@dataclass
class Todo:
    """The app's own type: the document's content, decoded."""

    title: str
    done: bool = False


class LocalRelay:
    """A `syncline-relay serve` on 127.0.0.1 with its data in `directory`; its tokens are
    minted by the same binary from the development key it creates there."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory = binary, directory
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(directory)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("syncline-relay listening on "):
            raise RuntimeError(f"the relay did not start: {line!r}")
        self.url = "ws://" + line.rsplit(" ", 1)[1].strip()

    def tokens(self, device: str) -> Callable[[], str]:
        """A token provider for `device`, allowed to read and write `todos`."""
        token = subprocess.run(
            [self.binary, "token", "--data-dir", str(self.directory), "--user", "alice",
             "--device", device, "--read", "todos", "--write", "todos", "--ttl", "3600"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        return lambda: token

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def step(text: str) -> None:
    print(f"• {text}")


async def first_remote_change(store: syncline.Store, doc_id: str) -> syncline.ChangeEvent:
    """Waits for a change from another device to `doc_id` (leaving the loop unsubscribes)."""
    async for event in store.changes("todos"):
        if event.remote and event.doc == doc_id:
            return event
    raise RuntimeError("the change stream ended")


async def demo(relay: LocalRelay, phone: syncline.Store, laptop: syncline.Store) -> None:
    # 1. Offline: no client runs yet, and the write is durable at once.
    todo = phone.create("todos", {"title": "Buy milk", "done": False})
    step(f"phone, offline: created {todo.id}; pending: {phone.pending_documents()}")

    # 2. Both devices connect; the laptop hears the phone's todo arrive.
    heard = asyncio.ensure_future(first_remote_change(laptop, todo.id))
    await asyncio.sleep(0)  # let the stream subscribe before anything syncs
    phone_sync = syncline.SyncClient.start(phone, relay.url, ["todos"], relay.tokens(phone.device_id))
    laptop_sync = syncline.SyncClient.start(
        laptop, relay.url, ["todos"], relay.tokens(laptop.device_id))
    await phone_sync.wait_synced(timeout=30)
    await laptop_sync.wait_synced(timeout=30)
    await asyncio.wait_for(heard, 30)
    received = laptop.document(todo.id).decode(Todo)
    step(f"laptop, online: received {received}")

    # 3. The laptop goes offline and edits; the edit waits in its store.
    laptop_sync.pause()
    laptop.document(todo.id).put("/done", True)
    step(f"laptop, offline: marked done; pending: {laptop.pending_documents()}")

    # 4. It reconnects: the pending edit goes out, and the phone receives it.
    back = asyncio.ensure_future(first_remote_change(phone, todo.id))
    await asyncio.sleep(0)
    laptop_sync.resume()
    await laptop_sync.wait_synced(timeout=30)
    await asyncio.wait_for(back, 30)
    seen = phone.document(todo.id).decode(Todo)
    if not seen.done:
        raise RuntimeError(f"the phone sees {seen}")
    step(f"laptop reconnected; phone now has {seen}")
    phone_sync.stop()
    laptop_sync.stop()
    step("converged: both devices hold the same todo")


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SYNCLINE_RELAY_BIN")
    if binary is None:
        print("usage: todo_sync.py <path to syncline-relay> (or set SYNCLINE_RELAY_BIN)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        relay = LocalRelay(binary, root / "relay")
        try:
            with syncline.Store.open(root / "phone.db") as phone, \
                    syncline.Store.open(root / "laptop.db") as laptop:
                asyncio.run(demo(relay, phone, laptop))
        except syncline.SyncError as error:
            print(f"syncline error: {error}", file=sys.stderr)
            return 1
        finally:
            relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
