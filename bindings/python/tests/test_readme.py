"""The README's example, run as written: the code between its `readme-example` markers, with
the two names it leaves to the app (`RELAY_URL`, `get_token`) given, in an empty directory."""

import contextlib
import io
import os
from pathlib import Path
from typing import Dict

import syncline
from support import Relay, Tokens

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    begin = text.index("<!-- readme-example: begin -->")
    end = text.index("<!-- readme-example: end -->")
    block = text[begin:end]
    return block[block.index("```python\n") + len("```python\n"):block.rindex("```")]


def test_the_readme_example_runs_as_written(tmp_path: Path, relay: Relay) -> None:
    # The example opens "phone.db": open it first to learn the device its token is for.
    with syncline.Store.open(tmp_path / "phone.db") as store:
        device = store.device_id
    names: Dict[str, object] = {
        "__name__": "readme",
        "RELAY_URL": relay.url,
        "get_token": Tokens(relay.token(device)),
    }
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(readme_example(), str(README), "exec"), names)
    finally:
        os.chdir(cwd)
    assert printed.getvalue() == "Todo(title='Buy milk', done=True)\n"
