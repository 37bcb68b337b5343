"""`DocumentView` (a document as it was at some heads), and the reads it shares with
`Document`."""

from __future__ import annotations

from typing import Any, List, Optional, Type, TypeVar, Union

from ._decode import decode
from ._errors import translated
from ._native import FfiDocument, FfiDocumentView, Value
from ._values import Plain, from_value


T = TypeVar("T")


class Readable:
    """What a document and a view of it have in common."""

    _view: Union[FfiDocument, FfiDocumentView]

    @translated
    def get(self, path: str) -> Optional[Value]:
        """The value at `path` (a JSON Pointer, `"/title"`), or None."""
        return self._view.get(path)

    @translated
    def to_dict(self) -> Any:
        """The whole content as plain Python values (text as `str`, counters as `int`)."""
        root = self._view.get("")
        return {} if root is None else from_value(root)

    @translated
    def to_json(self) -> str:
        """The whole content as JSON."""
        return self._view.to_json()

    def decode(self, cls: Type[T]) -> T:
        """The whole content as the dataclass `cls`, checked against its type hints;
        `DecodingError` (a `SyncError`) names the path that does not fit."""
        return decode(cls, self.to_dict())

    def value(self, path: str) -> Plain:
        """The value at `path` as a plain Python value (None if there is none)."""
        found = self.get(path)
        return None if found is None else from_value(found)


class DocumentView(Readable):
    """A document as it was at some heads (read only)."""

    def __init__(self, inner: FfiDocumentView) -> None:
        self._inner = inner
        self._view = inner

    @property
    def heads(self) -> List[str]:
        """The heads this view shows."""
        return self._inner.heads()
