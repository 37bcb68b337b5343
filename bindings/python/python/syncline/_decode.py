"""A document's content as a dataclass: `doc.decode(Todo)`.

The plain content (`to_dict()`) is checked against the class's type hints, recursively:
`str`, `int`, `float` (an `int` fits), `bool`, `bytes`, `None`, `Any`, `Optional[...]` and
other unions, `list[...]`/`List[...]`, `dict[str, ...]`/`Dict[str, ...]`, nested dataclasses,
and fields with defaults that the document may leave out. Keys the class does not declare are
ignored (another device, or a newer version of the app, may have added fields). What does not
fit raises `DecodingError`, whose `path` names where (`$.items[2].done`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Dict, Type, TypeVar, Union

from ._errors import SyncError

T = TypeVar("T")


class DecodingError(SyncError):
    """A document's content does not fit the class asked for; `path` (a JSON path such as
    `$.done`) names where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


SyncError.Decoding = DecodingError


def decode(cls: Type[T], content: Any) -> T:
    """`content` (plain Python values) as an instance of the dataclass `cls`."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"decode takes a dataclass, not {cls!r}")
    value: T = _fit(cls, content, "$")
    return value


def _fit(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _fit(option, value, path)
            except DecodingError as error:
                errors.append(error)
        raise DecodingError(path, f"{_describe(value)} fits none of {hint}")
    if hint is type(None) or hint is None:
        if value is None:
            return None
        raise DecodingError(path, f"expected null, found {_describe(value)}")
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise DecodingError(path, f"expected a list, found {_describe(value)}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_fit(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise DecodingError(path, f"expected an object, found {_describe(value)}")
        _, item = typing.get_args(hint) or (str, Any)
        return {k: _fit(item, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, path)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise DecodingError(path, f"expected a number, found {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise DecodingError(path, f"expected an integer, found {_describe(value)}")
    if hint in (str, bool, bytes):
        if type(value) is hint:
            return value
        raise DecodingError(path, f"expected {hint.__name__}, found {_describe(value)}")
    raise TypeError(f"decode cannot check the type {hint!r} (at {path})")


def _dataclass(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise DecodingError(path, f"expected an object for {cls.__name__}, found {_describe(value)}")
    try:
        hints = typing.get_type_hints(cls)
    except NameError as error:  # a string annotation naming what its module does not define
        raise TypeError(f"cannot resolve the type hints of {cls.__name__}: {error}") from None
    fields: Dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        where = f"{path}.{field.name}"
        if field.name not in value:
            has_default = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise DecodingError(where, f"missing, and {cls.__name__} has no default for it")
        fields[field.name] = _fit(hints[field.name], value[field.name], where)
    return cls(**fields)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:80]
