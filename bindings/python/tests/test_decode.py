"""Documents decoded into dataclasses, and the error naming the path that does not fit."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import syncline as sl


@dataclass
class Todo:
    title: str
    done: bool = False
    tags: List[str] = field(default_factory=list)
    note: Optional[str] = None


@dataclass
class Strict:
    title: str
    done: bool


@dataclass
class Board:
    name: str
    todos: List[Todo]
    counts: Dict[str, int]
    ratio: float


def test_a_document_decodes_into_a_dataclass(tmp_path: Path) -> None:
    with sl.Store.open(tmp_path / "phone.db") as store:
        doc = store.create("todos", {"title": "Buy milk", "tags": ["home"]})
        assert doc.decode(Todo) == Todo("Buy milk", False, ["home"], None)
        first = doc.heads()
        # Keys the class does not declare (a newer app's fields) are ignored.
        doc.put("/done", True)
        doc.put("/priority", 3)
        assert store.document(doc.id).decode(Todo) == Todo("Buy milk", True, ["home"], None)
        # An earlier version decodes the same way.
        assert doc.view_at(first).decode(Todo) == Todo("Buy milk", False, ["home"], None)
        # Nested dataclasses, lists, dicts, and an int where a float is declared.
        board = store.create("boards", {
            "name": "home", "todos": [{"title": "a"}, {"title": "b", "done": True}],
            "counts": {"open": 1}, "ratio": 1,
        })
        assert board.decode(Board) == Board(
            "home", [Todo("a"), Todo("b", True)], {"open": 1}, 1.0)


def test_what_does_not_fit_names_its_path(tmp_path: Path) -> None:
    with sl.Store.open(tmp_path / "phone.db") as store:
        wrong = store.create("todos", {"title": "Buy milk", "done": "yes"})
        with pytest.raises(sl.DecodingError) as caught:
            wrong.decode(Strict)
        assert caught.value.path == "$.done"
        missing = store.create("todos", {"title": "Buy milk"})
        with pytest.raises(sl.SyncError.Decoding) as missed:
            missing.decode(Strict)
        assert missed.value.path == "$.done"
        deep = store.create("boards", {
            "name": "home", "todos": [{"title": "a"}, {"title": 7}], "counts": {}, "ratio": 0.5,
        })
        with pytest.raises(sl.SyncError) as nested:  # one catch covers it
            deep.decode(Board)
        assert isinstance(nested.value, sl.DecodingError)
        assert nested.value.path == "$.todos[1].title"
        # A bool is not an int, though Python makes it one.
        flag = store.create("boards", {"name": "x", "todos": [], "counts": {"n": True}, "ratio": 0})
        with pytest.raises(sl.DecodingError, match=r"\$\.counts\.n"):
            flag.decode(Board)
        with pytest.raises(TypeError, match="dataclass"):
            wrong.decode(dict)
