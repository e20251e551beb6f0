"""Records <-> JSON values: the one serializer of records and its strict inverse.

Owns the mapping both ways (Path <-> str, Severity <-> its label, other Enums <-> their value,
tuple <-> list, record <-> object) so that a report.json written by one run can be read back as
the same records by another: the audit results cache and `hubscan publish` do. Must not read or
write files, and must not accept what it does not understand: `from_jsonable` raises
`JsonShapeError` on any missing, extra or mistyped field (a report.json is untrusted input when it
comes from a run directory someone handed over).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from hubscan.records import Severity

T = TypeVar("T")


class JsonShapeError(ValueError):
    """A JSON value does not have the shape of the record it should be."""


def to_jsonable(value: Any) -> Any:
    """Records -> JSON values: Path -> str, Severity -> its label, Enum -> value, tuple -> list."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Severity):
        return value.label
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(cls: type[T], data: Any) -> T:
    """The record of type `cls` that `to_jsonable` turned into `data`."""
    return typing.cast(T, _convert(cls, data, cls.__name__))


def _convert(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return _union(typing.get_args(hint), data, where)
    if origin is tuple:
        return _tuple(typing.get_args(hint), data, where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _record(hint, data, where)
    if isinstance(hint, type) and issubclass(hint, Severity):
        return _severity(data, where)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(data)
        except ValueError as err:
            raise JsonShapeError(f"{where}: {data!r} is not a {hint.__name__}") from err
    if hint is Path:
        return Path(_expect(str, data, where))
    if hint is float:
        # JSON writes 1.0 as 1.0, but a hand-edited or other writer's file may say 1.
        if isinstance(data, int) and not isinstance(data, bool):
            return float(data)
        return _expect(float, data, where)
    if hint in (str, int, bool):
        return _expect(hint, data, where)
    if hint is Any:
        return data
    raise JsonShapeError(f"{where}: cannot read a value of type {hint!r}")


def _record(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise JsonShapeError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise JsonShapeError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise JsonShapeError(f"{where}: missing field {name}")
    return cls(**values)


def _union(options: tuple[Any, ...], data: Any, where: str) -> Any:
    if data is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(option, data, where)
        except JsonShapeError as err:
            errors.append(str(err))
    raise JsonShapeError(errors[0] if len(errors) == 1 else f"{where}: matches no allowed type")


def _tuple(args: tuple[Any, ...], data: Any, where: str) -> tuple[Any, ...]:
    if len(args) != 2 or args[1] is not Ellipsis:  # records hold only tuple[X, ...]
        raise JsonShapeError(f"{where}: cannot read a fixed-length tuple")
    if not isinstance(data, list):
        raise JsonShapeError(f"{where}: expected a list, got {type(data).__name__}")
    return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(data))


def _severity(data: Any, where: str) -> Severity:
    try:
        return Severity.parse(_expect(str, data, where))
    except KeyError as err:
        raise JsonShapeError(f"{where}: {data!r} is not a severity") from err


def _expect(kind: type[T], data: Any, where: str) -> T:
    # bool is an int in Python; JSON keeps them apart, and so must a strict reader.
    if not isinstance(data, kind) or (kind is not bool and isinstance(data, bool)):
        raise JsonShapeError(f"{where}: expected {kind.__name__}, got {type(data).__name__}")
    return data
