"""Static header walk of one .safetensors file: every way its header can lie is a Finding.

Owns the safetensors format checks (ST_* codes): the length prefix, the JSON header, each tensor
entry, and the byte layout the entries declare. It reads the 8-byte prefix and at most
`policy.safetensors.max_header_bytes` of header, never the tensor data, and only the standard
library: it must never import torch, safetensors, numpy or pickle, since the file is hostile.
Malformed input becomes a finding, never an exception; an OSError is the caller's to handle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeGuard

from hubscan.policy import Policy
from hubscan.records import Finding

SCANNER = "safetensors"
_U64_MAX = (1 << 64) - 1
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_METADATA = "__metadata__"
_MAX_PER_CODE = 20  # an entry-per-finding header could otherwise blow up the report
_NAME_CHARS = 80

# Bits per element, as the safetensors crate defines them (F6/F4 pack below one byte).
_DTYPE_BITS: dict[str, int] = {
    "F64": 64,
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F4": 4,
    "I64": 64,
    "I32": 32,
    "I16": 16,
    "I8": 8,
    "U64": 64,
    "U32": 32,
    "U16": 16,
    "U8": 8,
    "BOOL": 8,
    "C64": 64,
}


@dataclass(frozen=True, slots=True)
class _Span:
    name: str
    begin: int
    end: int


_Hook = Callable[[list[tuple[str, object]]], dict[str, object]]


class _NotPortableJson(ValueError):
    """JSON Python accepts but serde_json (the reference parser) rejects."""


class _Findings:
    def __init__(self, rel: str, policy: Policy) -> None:
        self._rel, self._policy = rel, policy
        self._items: list[Finding] = []
        self._counts: dict[str, int] = {}

    def add(self, code: str, message: str) -> None:
        self._counts[code] = self._counts.get(code, 0) + 1
        if self._counts[code] <= _MAX_PER_CODE:
            self._items.append(self._finding(code, message))

    def result(self) -> tuple[Finding, ...]:
        extra = [
            self._finding(code, f"{n - _MAX_PER_CODE} more {code} findings in this file not listed")
            for code, n in self._counts.items()
            if n > _MAX_PER_CODE
        ]
        return (*self._items, *extra)

    def _finding(self, code: str, message: str) -> Finding:
        level = self._policy.severity_of(code)
        return Finding(code=code, severity=level, path=self._rel, message=message, scanner=SCANNER)


def scan_safetensors(path: Path, rel: str, *, policy: Policy) -> tuple[Finding, ...]:
    """All ST_* findings for the file at `path`, reported under `rel`; () for a sound file."""
    out = _Findings(rel, policy)
    with path.open("rb") as fh:
        read = _read_header(fh, policy.safetensors.max_header_bytes, out)
    if read is None:
        return out.result()
    raw, data_size = read
    header = _parse_header(raw, out)
    if header is not None:
        spans = _check_entries(header, policy.safetensors.dtypes, out)
        _check_layout(spans, data_size, out)
    return out.result()


def _read_header(fh: BinaryIO, limit: int, out: _Findings) -> tuple[bytes, int] | None:
    """(header bytes, data region size), or None after a finding that ends the walk."""
    size = os.fstat(fh.fileno()).st_size
    prefix = fh.read(8)
    if len(prefix) < 8:
        out.add("ST_TOO_SHORT", f"file is {len(prefix)} bytes, shorter than the 8-byte length")
        return None
    declared = int.from_bytes(prefix, "little")
    # Checked before any read: the declared length is attacker-chosen (2**60 must cost nothing).
    if declared > limit:
        out.add("ST_HEADER_TOO_LARGE", f"header declares {declared} bytes, over the cap {limit}")
        return None
    available = max(size - 8, 0)
    raw = fh.read(declared) if declared <= available else b""
    if len(raw) < declared:  # the file may also have shrunk since fstat
        out.add("ST_HEADER_TRUNCATED", f"header declares {declared} bytes, only {available} follow")
        return None
    return raw, size - 8 - declared


def _parse_header(raw: bytes, out: _Findings) -> dict[str, object] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        out.add("ST_HEADER_NOT_UTF8", f"header byte {err.start} is not valid UTF-8")
        return None
    # The format spec demands a leading '{' (no BOM, no blanks; the crate is laxer than its
    # spec, other readers may not be). Trailing blanks are legal padding: json.loads skips them.
    if not text.startswith("{"):
        out.add("ST_HEADER_NOT_JSON", "header does not start with '{'")
        return None
    duplicates: list[str] = []
    try:
        hook = _pairs_hook(duplicates, surrogates_possible="\\u" in text)
        value: object = json.loads(text, object_pairs_hook=hook, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # RecursionError: hostile nesting depth
        detail = " ".join(str(err).split())[:120] or type(err).__name__
        out.add("ST_HEADER_NOT_JSON", f"header is not valid JSON: {detail}")
        return None
    for key in dict.fromkeys(duplicates):
        out.add("ST_DUPLICATE_KEY", f"header repeats key {_name(key)}, parsers may keep either")
    return value if isinstance(value, dict) else None  # always a dict: the text starts with '{'


def _pairs_hook(duplicates: list[str], *, surrogates_possible: bool) -> _Hook:
    # Python keeps the last of two equal keys; other readers may keep the first (or reject the
    # file), so one file could mean two models. Record every repeat at any depth.
    def hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        obj = dict(pairs)
        if len(obj) != len(pairs):  # the rare slow path, only for a header that has repeats
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    duplicates.append(key)
                seen.add(key)
        strings = (text for pair in pairs for text in pair if isinstance(text, str))
        if surrogates_possible and any(map(_has_lone_surrogate, strings)):
            raise _NotPortableJson("string with an unpaired surrogate escape")
        return obj

    return hook


def _reject_constant(token: str) -> object:
    raise _NotPortableJson(f"non-standard constant {token}")


def _has_lone_surrogate(text: str) -> bool:
    # serde_json rejects an unpaired "\ud800" escape; Python keeps it as a lone surrogate.
    return not text.isascii() and any("\ud800" <= ch <= "\udfff" for ch in text)


def _check_entries(header: dict[str, object], allow: frozenset[str], out: _Findings) -> list[_Span]:
    spans: list[_Span] = []
    for name, value in header.items():
        if name == _METADATA:
            _check_metadata(value, out)
            continue
        span = _check_entry(name, value, allow, out)
        if span is not None:
            spans.append(span)
    return spans


def _check_entry(name: str, value: object, dtypes: frozenset[str], out: _Findings) -> _Span | None:
    """Checks one tensor entry; returns its byte span whenever data_offsets itself is sound."""
    if not isinstance(value, dict) or set(value) != _ENTRY_KEYS:
        out.add("ST_BAD_ENTRY", f"tensor {_name(name)} is not {{dtype, shape, data_offsets}}")
        return None
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    span = _Span(name, offsets[0], offsets[1]) if _is_offsets(offsets) else None
    dims = shape if _is_u64_list(shape) else None
    ok = {"dtype": isinstance(dtype, str), "shape": dims is not None, "data_offsets": span}
    if bad := [key for key, good in ok.items() if not good]:
        # Wanted: dtype a string, shape a list of u64, data_offsets [begin, end] u64, begin <= end.
        out.add("ST_BAD_ENTRY", f"tensor {_name(name)} has a malformed {' and '.join(bad)}")
    if not isinstance(dtype, str):
        return span
    if dtype not in _DTYPE_BITS or dtype not in dtypes:
        why = "is not a safetensors dtype" if dtype not in _DTYPE_BITS else "is not in the policy"
        out.add("ST_DTYPE_NOT_ALLOWED", f"tensor {_name(name)} dtype {_name(dtype)} {why}")
    if mismatch := _size_problem(dtype, dims, span):
        out.add("ST_SIZE_MISMATCH", f"tensor {_name(name)} {mismatch}")
    return span


def _size_problem(dtype: str, shape: list[int] | None, span: _Span | None) -> str | None:
    bits = _DTYPE_BITS.get(dtype)
    if bits is None or span is None or shape is None:
        return None  # nothing to compare: already an ST_BAD_ENTRY or ST_DTYPE_NOT_ALLOWED
    problem = _count_problem(shape, bits, span.end - span.begin)
    return None if problem is None else f"{dtype}{_dims(shape)} {problem}"


def _count_problem(shape: list[int], bits: int, span_bytes: int) -> str | None:
    # Mirror the crate's checked_mul: an overflow at any step is an error, even if a later
    # dimension is 0. Stopping there also keeps the arithmetic bounded on hostile shapes.
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > _U64_MAX:
            return "has an element count that overflows 64 bits"
    nbits = numel * bits
    if nbits > _U64_MAX:
        return f"has {numel} elements, a bit size that overflows 64 bits"
    if nbits % 8:
        return f"has {numel} elements of {bits} bits, not a whole number of bytes"
    if nbits // 8 != span_bytes:
        return f"needs {nbits // 8} bytes but data_offsets span {span_bytes}"
    return None


def _check_metadata(value: object, out: _Findings) -> None:
    if not isinstance(value, dict):
        out.add("ST_METADATA_INVALID", f"{_METADATA} is a JSON {_json_type(value)}, not an object")
        return
    bad = [key for key, item in value.items() if not isinstance(item, str)]
    if bad:
        first = f"{_METADATA}[{_name(bad[0])}] is a JSON {_json_type(value[bad[0]])}"
        out.add("ST_METADATA_INVALID", f"{first}, not a string ({len(bad)} such values)")


def _check_layout(spans: list[_Span], data_size: int, out: _Findings) -> None:
    """Tensors must tile the data region exactly: from 0, back to back, to its very end."""
    cursor, reach = 0, None  # reach: the span that extends furthest so far
    for span in sorted(spans, key=lambda s: (s.begin, s.end, s.name)):
        if span.begin > cursor:
            out.add("ST_OFFSETS_GAP", f"bytes {cursor}..{span.begin} before {_at(span)} are unused")
        elif span.begin < cursor and reach is not None:
            out.add("ST_OFFSETS_OVERLAP", f"{_at(span)} overlaps {_at(reach)}")
        if span.end >= cursor:
            cursor, reach = span.end, span
    if cursor > data_size:
        out.add("ST_DATA_TRUNCATED", f"tensors need {cursor} data bytes, file has {data_size}")
    elif cursor < data_size:
        out.add("ST_TRAILING_BYTES", f"{data_size - cursor} bytes follow the tensors' end {cursor}")


def _is_u64_list(value: object) -> TypeGuard[list[int]]:
    # type() rather than isinstance(): JSON true/false arrive as bool, a subclass of int.
    return isinstance(value, list) and all(type(v) is int and 0 <= v <= _U64_MAX for v in value)


def _is_offsets(value: object) -> TypeGuard[list[int]]:
    return _is_u64_list(value) and len(value) == 2 and value[0] <= value[1]


def _name(text: str) -> str:
    """A header string made safe to print: repr escapes control characters, and it is capped."""
    return repr(text) if len(text) <= _NAME_CHARS else repr(text[:_NAME_CHARS]) + "..."


def _at(span: _Span) -> str:
    return f"tensor {_name(span.name)} at {span.begin}..{span.end}"


def _dims(shape: list[int]) -> str:
    shown = ", ".join(str(d) for d in shape[:8])
    return f"[{shown}{', ...' if len(shape) > 8 else ''}]"


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
