"""Bounded reading for the pickle scanner: every byte and opcode is charged to a budget.

Owns the Budget a scanned file may spend (the policy's opcode and byte caps, shared by all its
streams and archive members) and BoundedReader, the file-like that pickletools parses through. It
caps reads before allocating, so a huge declared length or an endless line ends in BudgetExceeded
instead of eating memory. Must never unpickle or interpret what it reads.
"""

from __future__ import annotations

import lzma
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Protocol

_CHUNK = 1 << 16  # refill size; large reads are gathered in pieces, never pre-allocated


class RawReader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BudgetExceeded(Exception):
    """A policy bound was hit; the message says which one."""


class ArchiveReadError(Exception):
    """Decompressing an archive member failed (corrupt data, bad CRC)."""


@dataclass(slots=True)
class Budget:
    """What one scanned file may still spend, shared by all its streams and members.

    Charging the whole file, not each stream, keeps a file of a million tiny pickles (or an
    archive of many members) from multiplying the work the policy allows.
    """

    max_opcodes: int
    max_pickle_bytes: int
    opcodes: int = field(init=False)
    pickle_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.opcodes = self.max_opcodes
        self.pickle_bytes = self.max_pickle_bytes


class BoundedReader:
    """The file object genops reads through: every read is capped before anything is allocated.

    A pickle can declare an 8-byte length (BINBYTES8) or an endless line (GLOBAL); reading that
    naively would allocate or buffer gigabytes. Here a read never takes more than the remaining
    allowance plus one byte, gathered in chunks, and exceeding it raises BudgetExceeded.

    Short buffered reads (nearly every opcode) take a fast path that is charged lazily: `settle`
    charges what was consumed since the last call, and `_fast_end` keeps such reads in budget.
    """

    def __init__(self, raw: RawReader, budget: Budget, *, cap: int | None = None) -> None:
        self._raw = raw
        self._budget = budget
        self._max_cap = cap  # decompressed bytes this source may deliver (zip members)
        self._cap = sys.maxsize if cap is None else cap  # what is left of it
        self._buf = b""
        self._pos = 0  # next byte to consume, in _buf
        self._base = 0  # offset of _buf[0] in the source
        self._charged = 0  # offset up to which consumed bytes were charged
        self._fast_end = 0  # the fast path may consume _buf up to here

    def tell(self) -> int:
        return self._base + self._pos

    def settle(self) -> None:
        """Charge the bytes consumed since the last settle; call before reading the budget."""
        used = self._base + self._pos - self._charged
        self._budget.pickle_bytes -= used
        self._cap -= used
        self._charged += used
        self._fast_end = min(len(self._buf), self._pos + self._limit())

    def peek(self, size: int) -> bytes:
        """Up to `size` bytes ahead, not consumed and not charged."""
        if len(self._buf) - self._pos >= size:
            return self._buf[self._pos : self._pos + size]
        self.settle()
        while len(self._buf) - self._pos < size:
            more = self._raw_read(size - (len(self._buf) - self._pos))
            if not more:
                break
            self._base += self._pos
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
        self.settle()
        return self._buf[self._pos : self._pos + size]

    def read(self, size: int = -1) -> bytes:
        start = self._pos
        end = start + size
        if size >= 0 and end <= self._fast_end:
            self._pos = end
            return self._buf[start:end]
        self.settle()
        limit = self._limit()
        want = limit + 1 if size < 0 or size > limit else size
        parts: list[bytes] = []
        got = 0
        while got < want:
            if self._pos >= len(self._buf) and not self._refill():
                break
            take = min(want - got, len(self._buf) - self._pos)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            got += take
        return self._charge(b"".join(parts), limit)

    def readline(self) -> bytes:
        self.settle()
        limit = self._limit()
        parts: list[bytes] = []
        got = 0
        while True:
            newline = self._buf.find(b"\n", self._pos)
            end = newline + 1 if newline >= 0 else len(self._buf)
            parts.append(self._buf[self._pos : end])
            got += end - self._pos
            self._pos = end
            if newline >= 0 or got > limit or not self._refill():
                break
        return self._charge(b"".join(parts), limit)

    def _limit(self) -> int:
        return max(0, min(self._cap, self._budget.pickle_bytes))

    def _charge(self, data: bytes, limit: int) -> bytes:
        self.settle()
        if len(data) > limit:
            if self._max_cap is not None and self._cap <= self._budget.pickle_bytes:
                raise BudgetExceeded(f"member decompresses past max_member_bytes ({self._max_cap})")
            raise BudgetExceeded(
                f"pickle data past max_pickle_bytes ({self._budget.max_pickle_bytes})"
            )
        return data

    def _refill(self) -> bool:
        self._base += len(self._buf)
        self._buf = self._raw_read(_CHUNK)
        self._pos = 0
        return bool(self._buf)

    def _raw_read(self, size: int) -> bytes:
        try:
            return self._raw.read(size)
        except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as err:
            raise ArchiveReadError(str(err) or type(err).__name__) from err
        except OSError as err:
            if err.errno is not None:
                raise  # a real I/O error: the caller maps it
            raise ArchiveReadError(str(err)) from err  # bz2 reports corrupt data as OSError
