"""The `relay` fixture: a syncline-relay for one test, stopped after it."""

from typing import Iterator

import pytest

from support import Relay


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    yield r
    r.stop()
