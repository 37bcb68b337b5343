"""What the suites share: a real relay on 127.0.0.1, and a token provider."""

import os
import subprocess
import tempfile

RELAY = os.environ.get("SYNCLINE_RELAY_BIN", "syncline-relay")


class Relay:
    """A syncline-relay on 127.0.0.1 with a temporary data directory, killed at the end."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        env = dict(os.environ, RUST_LOG="error,automerge=off")
        self.proc = subprocess.Popen(
            [RELAY, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.dir.name],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("syncline-relay listening on "), line
        self.url = "ws://" + line.rsplit(" ", 1)[1].strip()

    def token(self, device: str, write: str = "todos", read: str = "todos") -> str:
        out = subprocess.run(
            [RELAY, "token", "--data-dir", self.dir.name, "--user", "alice",
             "--device", device, "--read", read, "--write", write, "--ttl", "600"],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


class Tokens:
    """A token provider: a callable returning the token, counting its calls."""

    def __init__(self, token: str) -> None:
        self.value = token
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.value
