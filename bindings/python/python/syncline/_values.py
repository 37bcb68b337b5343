"""Python values to and from the generated layer's `Value`: dicts, lists, strings, numbers,
bytes and None cross as themselves; a `Value` passes through unchanged, for the Automerge
types Python has no literal for (`Value.TEXT`, `Value.COUNTER`, `Value.TIMESTAMP`)."""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence, Union

from ._native import Value

#: What a document holds, in Python: the JSON-like types plus bytes, or a `Value`.
PyValue = Union[
    None, bool, int, float, str, bytes, Sequence["PyValue"], Mapping[str, "PyValue"], Value
]

#: What a document's content reads back as: counters and timestamps as `int`, text as `str`.
Plain = Union[None, bool, int, float, str, bytes, List["Plain"], Dict[str, "Plain"]]

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1


def string_list(name: str, values: Iterable[str]) -> List[str]:
    """`values` as a list of strings; `TypeError` for one string (which is also an iterable
    of strings, and would otherwise be taken letter by letter)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} is a list of strings, not one string")
    return list(values)


def to_value(value: PyValue) -> Value:
    """The `Value` for a Python value: `TypeError` for one that has no document form,
    `ValueError` for an integer outside -2**63 .. 2**64-1."""
    if isinstance(value, Value):
        return value
    if value is None:
        return Value.NULL()
    if isinstance(value, bool):
        return Value.BOOL(value)
    if isinstance(value, int):
        if not _I64_MIN <= value <= _U64_MAX:
            raise ValueError(f"{value} is outside what a document holds (-2**63 .. 2**64-1)")
        return Value.INT(value) if value <= _I64_MAX else Value.UINT(value)
    if isinstance(value, float):
        return Value.FLOAT(value)
    if isinstance(value, str):
        return Value.STR(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Value.BYTES(bytes(value))
    if isinstance(value, Mapping):
        entries: Dict[str, Value] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"a document's keys are strings, not {type(key).__name__}")
            entries[key] = to_value(item)
        return Value.OBJECT(entries)
    if isinstance(value, Sequence):
        return Value.ARRAY([to_value(item) for item in value])
    raise TypeError(f"{type(value).__name__} cannot be stored in a document")


def from_value(value: Value) -> Plain:
    """The plain Python form of a `Value`."""
    if isinstance(value, Value.NULL):
        return None
    if isinstance(value, (Value.ARRAY,)):
        return [from_value(item) for item in value.items]
    if isinstance(value, Value.OBJECT):
        return {key: from_value(item) for key, item in value.entries.items()}
    if isinstance(
        value,
        (
            Value.BOOL,
            Value.INT,
            Value.UINT,
            Value.FLOAT,
            Value.STR,
            Value.BYTES,
            Value.COUNTER,
            Value.TIMESTAMP,
            Value.TEXT,
        ),
    ):
        plain: Plain = value.value
        return plain
    raise TypeError(f"unknown value {value!r}")
