"""`Document`: one document, its writes, history, conflicts and changes."""

from __future__ import annotations

from typing import List, Optional, Sequence

from ._errors import translated
from ._listeners import ChangeSink, ConflictSink
from ._native import Change, ChangeEvent, Conflict, FfiDocument, Patch, Priority, Value, WriteOp
from ._streams import EventStream
from ._values import PyValue, string_list, to_value
from ._view import DocumentView, Readable


class Document(Readable):
    """One document: an Automerge document with an id `collection/name`."""

    def __init__(self, inner: FfiDocument) -> None:
        self._inner = inner
        self._view = inner

    @property
    def id(self) -> str:
        """`collection/name`."""
        return self._inner.id()

    @translated
    def put(self, path: str, value: PyValue) -> None:
        """Sets the value at `path`; durable when it returns."""
        self._inner.put(path, to_value(value))

    @translated
    def put_json(self, path: str, json: str) -> None:
        """Sets the value at `path` from JSON."""
        self._inner.put_json(path, json)

    @translated
    def delete(self, path: str) -> None:
        """Deletes the value at `path`."""
        self._inner.delete(path)

    @translated
    def splice_text(self, path: str, index: int, delete: int, insert: str) -> None:
        """Edits the text at `path`: deletes `delete` characters at `index`, inserts
        `insert`."""
        self._inner.splice_text(path, index, delete, insert)

    @translated
    def increment(self, path: str, by: int = 1) -> None:
        """Adds `by` to the counter at `path`."""
        self._inner.increment(path, by)

    @translated
    def apply(self, ops: Sequence[WriteOp], message: Optional[str] = None) -> None:
        """Applies `ops` as one change (all or none), with an optional message."""
        self._inner.apply(list(ops), message)

    @translated
    def heads(self) -> List[str]:
        """The document's current heads (its version)."""
        return self._inner.heads()

    @translated
    def history(self) -> List[Change]:
        """Every change, oldest first."""
        return self._inner.history()

    @translated
    def view_at(self, heads: Sequence[str]) -> DocumentView:
        """The document as it was at `heads`."""
        return DocumentView(self._inner.view_at(string_list("heads", heads)))

    @translated
    def diff(self, since: Sequence[str], to: Sequence[str]) -> List[Patch]:
        """What changed between two versions, as patches."""
        return self._inner.diff(string_list("since", since), string_list("to", to))

    @translated
    def conflicts(self, path: str) -> List[Value]:
        """The concurrent values at `path` (one unless there is a conflict)."""
        return self._inner.conflicts(path)

    @translated
    def resolve(self, path: str, value: PyValue) -> None:
        """Resolves the conflict at `path` with `value`."""
        self._inner.resolve(path, to_value(value))

    @property
    @translated
    def priority(self) -> Priority:
        """The document's sync priority (assignable)."""
        return self._inner.priority()

    @priority.setter
    @translated
    def priority(self, priority: Priority) -> None:
        self._inner.set_priority(priority)

    @translated
    def all_conflicts(self) -> List[Conflict]:
        """Every unresolved conflict in the document."""
        return self._inner.all_conflicts()

    def changes(self) -> EventStream[ChangeEvent]:
        """Every change to this document, as an async iterator."""
        inner = self._inner
        return EventStream(lambda sink: inner.watch(ChangeSink(sink)))

    def conflict_events(self) -> EventStream[Conflict]:
        """Each conflict in this document as a merge leaves it."""
        inner = self._inner
        return EventStream(lambda sink: inner.watch_conflicts(ConflictSink(sink)))
