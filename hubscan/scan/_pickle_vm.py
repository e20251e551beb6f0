"""Symbolic pickle machine: walks one pickle's opcodes and records what a real Unpickler would do.

Owns the opcode simulation (reading through _bounded.BoundedReader); scan/pickle.py owns files,
archives, classification and findings. This module must never unpickle: it does not import
`pickle`, never resolves a global and never builds an object from the stream. It only follows
`pickletools.genops`, keeping a stack and a memo of *where each item came from* (a string
constant, an imported global, the result of a call, or something else), so that globals are
resolved through memo and DUP tricks and calls on computed objects are caught.
"""

from __future__ import annotations

import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, cast

from hubscan.scan._bounded import ArchiveReadError, BoundedReader, Budget, BudgetExceeded

MALFORMED = "PKL_MALFORMED"
TOO_COMPLEX = "PKL_TOO_COMPLEX"
ARCHIVE_INVALID = "PKL_ARCHIVE_INVALID"

_MAX_CONST = 1024  # longer strings cannot be module or global names worth tracking


class _Invalid(Exception):
    """The opcode stream is well-formed bytes but an Unpickler would reject it here."""


# --- stack items: where a value came from -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    value: str  # a str constant (STRING family or UNICODE family): a possible global name


@dataclass(frozen=True, slots=True)
class Imported:
    module: str | None  # None: computed at runtime (STACK_GLOBAL on non-constants, EXT*)
    name: str | None

    @property
    def label(self) -> str:
        return f"{self.module or '<computed>'}.{self.name or '<computed>'}"


@dataclass(frozen=True, slots=True)
class Called:
    callee: str  # what was called, for messages


@dataclass(frozen=True, slots=True)
class Other:
    what: str  # e.g. "an object built by the pickle"


Item = Const | Imported | Called | Other
_OTHER = Other("an object built by the pickle")


@dataclass(slots=True)
class StreamResult:
    """What one pickle stream would make an Unpickler do, up to where parsing stopped."""

    globals: dict[tuple[str, str], None] = field(default_factory=dict)  # ordered, deduped
    # (module, name, how): the parts known statically (None when computed), and how it was named
    unresolved: dict[tuple[str | None, str | None, str], None] = field(default_factory=dict)
    calls: dict[str, None] = field(default_factory=dict)  # indirect-call messages, deduped
    failure: tuple[str, str] | None = None  # (code, message) when parsing stopped early
    ops: int = 0
    complete: bool = False  # STOP reached

    @property
    def has_signals(self) -> bool:
        return bool(self.globals or self.unresolved or self.calls)


def run_stream(reader: BoundedReader, budget: Budget) -> StreamResult:
    """Walk one pickle from the reader's position to its STOP, or to the first error.

    Ops parsed before an error still count: a truncated pickle runs its REDUCE before failing.
    """
    machine = _Machine()
    result = machine.result
    try:
        # genops only calls read, readline and tell on the reader.
        for op, arg, pos in pickletools.genops(cast(IO[bytes], reader)):
            if budget.opcodes <= 0:
                raise BudgetExceeded(f"more than max_opcodes ({budget.max_opcodes}) opcodes")
            budget.opcodes -= 1
            result.ops += 1
            machine.step(op, arg, pos)
    except BudgetExceeded as err:
        result.failure = (TOO_COMPLEX, str(err))
    except ArchiveReadError as err:
        result.failure = (ARCHIVE_INVALID, f"member data cannot be decompressed: {err}")
    except _Invalid as err:
        result.failure = (MALFORMED, str(err))
    except (ValueError, struct.error, OverflowError) as err:  # what genops' readers raise
        result.failure = (MALFORMED, f"opcode stream does not parse: {err}")
    finally:
        reader.settle()  # the next stream or member reads the budget
    return result


_STRING_OPS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
    }
)
_MARK_MUTATORS = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})  # target sits below the MARK


class _Machine:
    """The stack, the MARK positions and the memo of one stream, with Unpickler semantics."""

    def __init__(self) -> None:
        self.result = StreamResult()
        self._stack: list[Item] = []
        self._marks: list[int] = []  # stack heights at each MARK (the Unpickler's metastack)
        self._memo: dict[int, Item] = {}

    def step(self, op: pickletools.OpcodeInfo, arg: Any, pos: int | None) -> None:
        try:
            handler = _HANDLERS.get(op.name)
            if handler is None:
                self._generic(op.name)
            else:
                handler(self, op.name, arg)
        except _Invalid as err:
            raise _Invalid(f"{op.name} at offset {pos}: {err}") from None

    # --- stack primitives, with the Unpickler's rule that a pop never crosses a MARK ------------

    def _push(self, item: Item) -> None:
        self._stack.append(item)

    def _floor(self) -> int:
        return self._marks[-1] if self._marks else 0

    def _pop(self) -> Item:
        if len(self._stack) <= self._floor():
            raise _Invalid("stack underflow")
        return self._stack.pop()

    def _top(self) -> Item:
        if len(self._stack) <= self._floor():
            raise _Invalid("stack underflow")
        return self._stack[-1]

    def _pop_to_mark(self) -> list[Item]:
        if not self._marks:
            raise _Invalid("no MARK to pop to")
        height = self._marks.pop()
        items = self._stack[height:]
        del self._stack[height:]
        return items

    def _generic(self, name: str) -> None:
        # Opcodes that only build plain data: apply their documented stack effect.
        to_mark, pops, pushes = _EFFECTS[name]
        if to_mark:
            self._pop_to_mark()
        for _ in range(pops):
            self._pop()
        self._stack.extend([_OTHER] * pushes)

    # --- handlers -------------------------------------------------------------------------------

    def _string(self, name: str, arg: Any) -> None:
        self._push(Const(arg) if isinstance(arg, str) and len(arg) <= _MAX_CONST else _OTHER)

    def _global(self, name: str, arg: Any) -> None:
        self._push(self._import(arg, name))

    def _import(self, arg: Any, opcode: str) -> Imported:
        # genops joins GLOBAL/INST's two lines with a space; names with spaces are ambiguous.
        module, _, attr = str(arg).partition(" ")
        if " " in attr or not module or not attr:
            how = f"through {opcode} with an ambiguous name (extra spaces)"
            self.result.unresolved[(None, None, how)] = None
            return Imported(None, None)
        # No real module or attribute name is this long; cut hostile ones to bound memory.
        module, attr = module[:_MAX_CONST], attr[:_MAX_CONST]
        self.result.globals[(module, attr)] = None
        return Imported(module, attr)

    def _stack_global(self, name: str, arg: Any) -> None:
        attr, module = self._pop(), self._pop()
        mod = module.value if isinstance(module, Const) else None
        nam = attr.value if isinstance(attr, Const) else None
        if mod is None or nam is None:
            how = f"through {name} on values that are not string constants"
            self.result.unresolved[(mod, nam, how)] = None
        else:
            self.result.globals[(mod, nam)] = None
        self._push(Imported(mod, nam))

    def _ext(self, name: str, arg: Any) -> None:
        # The copyreg extension registry maps a code to a global known only at load time.
        how = f"through {name} code {arg} of the copyreg extension registry"
        self.result.unresolved[(None, None, how)] = None
        self._push(Imported(None, None))

    def _inst(self, name: str, arg: Any) -> None:
        self._pop_to_mark()
        cls = self._import(arg, name)
        self._push(Called(cls.label))

    def _call(self, name: str, arg: Any) -> None:
        self._pop()  # arguments (and, for NEWOBJ_EX, keyword arguments below them)
        if name == "NEWOBJ_EX":
            self._pop()
        self._push(self._called(self._pop(), name))

    def _obj(self, name: str, arg: Any) -> None:
        items = self._pop_to_mark()
        if not items:
            raise _Invalid("OBJ without a class")
        self._push(self._called(items[0], name))

    def _called(self, fn: Item, opcode: str) -> Called:
        if isinstance(fn, Imported):
            return Called(fn.label)
        self.result.calls[f"{opcode} calls {_describe(fn)}"] = None
        return Called("a computed object")

    def _mutate(self, name: str, arg: Any) -> None:
        # BUILD calls target.__setstate__ or setattr()s on it; APPEND(S), SETITEM(S) and ADDITEMS
        # call its append/extend/__setitem__/add. On a plain container that is harmless; on an
        # imported global it rewrites a module or class (the monkeypatch primitive).
        if name in _MARK_MUTATORS:
            self._pop_to_mark()
        else:
            for _ in range(2 if name == "SETITEM" else 1):
                self._pop()
        target = self._top()
        if isinstance(target, Imported):
            self.result.calls[f"{name} mutates imported {target.label}"] = None

    def _mark(self, name: str, arg: Any) -> None:
        self._marks.append(len(self._stack))

    def _pop_op(self, name: str, arg: Any) -> None:
        # The Unpickler's POP discards the MARK itself when nothing sits above it.
        if len(self._stack) > self._floor():
            self._stack.pop()
        elif self._marks:
            self._marks.pop()
        else:
            raise _Invalid("stack underflow")

    def _dup(self, name: str, arg: Any) -> None:
        self._push(self._top())

    def _put(self, name: str, arg: Any) -> None:
        key = len(self._memo) if name == "MEMOIZE" else arg
        if not isinstance(key, int) or key < 0:
            raise _Invalid(f"bad memo key {key!r}")
        self._memo[key] = self._top()

    def _get(self, name: str, arg: Any) -> None:
        if arg not in self._memo:
            raise _Invalid(f"memo key {arg!r} was never stored")
        self._push(self._memo[arg])

    def _persid(self, name: str, arg: Any) -> None:
        if name == "BINPERSID":
            self._pop()
        self._push(Called("persistent_load"))

    def _proto(self, name: str, arg: Any) -> None:
        if not isinstance(arg, int) or not 0 <= arg <= 5:
            raise _Invalid(f"unsupported protocol {arg!r}")

    def _stop(self, name: str, arg: Any) -> None:
        self._pop()
        self.result.complete = True


_Handler = Callable[[_Machine, str, Any], None]
_HANDLERS: dict[str, _Handler] = {
    **dict.fromkeys(_STRING_OPS, _Machine._string),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"), _Machine._put),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _Machine._get),
    **dict.fromkeys(("REDUCE", "NEWOBJ", "NEWOBJ_EX"), _Machine._call),
    **dict.fromkeys(("BUILD", "APPEND", "SETITEM", *_MARK_MUTATORS), _Machine._mutate),
    **dict.fromkeys(("EXT1", "EXT2", "EXT4"), _Machine._ext),
    **dict.fromkeys(("PERSID", "BINPERSID"), _Machine._persid),
    "GLOBAL": _Machine._global,
    "STACK_GLOBAL": _Machine._stack_global,
    "INST": _Machine._inst,
    "OBJ": _Machine._obj,
    "MARK": _Machine._mark,
    "POP": _Machine._pop_op,
    "DUP": _Machine._dup,
    "STOP": _Machine._stop,
    "PROTO": _Machine._proto,
}


def _effect(op: pickletools.OpcodeInfo) -> tuple[bool, int, int]:
    """(pops to a MARK, then pops this many, then pushes this many) from pickletools' metadata."""
    before = op.stack_before
    to_mark = pickletools.markobject in before
    if to_mark:
        before = before[: before.index(pickletools.markobject)]
    return to_mark, len(before), len(op.stack_after)


# Every opcode without a handler only builds plain data (numbers, bytes, containers, frames).
_EFFECTS = {op.name: _effect(op) for op in pickletools.opcodes if op.name not in _HANDLERS}


def _describe(item: Item) -> str:
    if isinstance(item, Called):
        return f"the result of calling {item.callee}"
    if isinstance(item, Const):
        return "a string constant"
    if isinstance(item, Other):
        return item.what
    return item.label
