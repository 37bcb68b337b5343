"""The per-call cost of one document read, `get("/title")`, through the Python binding,
against the same read in Rust (printed in the same run by `syncline-bench read`).

    python bench/bindings/read_overhead.py target/release/syncline-bench [--reads N]

Needs the `syncline` package installed (a wheel from `cargo xtask package`, or
`maturin develop --release` in bindings/python: a debug build measures debug code).
Figures: nanoseconds per call, the best of five rounds."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import syncline


def per_call(reads: int, read: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(reads):
            read()
        best = min(best, (time.perf_counter_ns() - start) / reads)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", help="the syncline-bench binary")
    parser.add_argument("--reads", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        with syncline.Store.open(Path(directory) / "bench.db") as store:
            doc = store.create("todos", {"title": "Buy milk", "done": False})
            native = per_call(args.reads, lambda: doc.get("/title"))
            plain = per_call(args.reads, lambda: doc.value("/title"))
            generated = per_call(args.reads, lambda: doc._inner.get("/title"))
            count = per_call(args.reads, lambda: store.subscription_count)
            ident = per_call(args.reads, lambda: doc.id)
            floor_python = per_call(args.reads, lambda: None)
    rust = json.loads(subprocess.run(
        [args.bench, "read", "--json", "--reads", str(args.reads * 4)],
        check=True, capture_output=True, text=True,
    ).stdout)
    rows = [
        ("python: doc.get (native API, a Value)", native),
        ("python: doc.value (native API, a str)", plain),
        ("python: the generated layer's get", generated),
        ("python: store.subscription_count (a number back)", count),
        ("python: doc.id (a string back)", ident),
        ("python: an empty call (the loop's own cost)", floor_python),
        ("rust: FfiDocument::get (the facade, no crossing)", rust["facade_ns"]),
        ("rust: Document::get (the SDK)", rust["sdk_ns"]),
        ("floor: automerge get (no Syncline)", rust["floor_automerge_ns"]),
    ]
    for name, ns in rows:
        print(f"{name:52} {ns:10.0f} ns")
    print(f"{'python native / rust SDK':52} {native / rust['sdk_ns']:10.1f} x")


if __name__ == "__main__":
    main()
