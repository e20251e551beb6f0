"""Pickle scanner: judges the globals a pickle file or PyTorch zip checkpoint would import and call.

Owns format detection (plain pickle stream, zip archive, unsupported archive), the walk over zip
members and the mapping of what the opcode walk saw (_pickle_vm.py) to Findings. It must never
unpickle: no `pickle`, `torch` or `numpy` import, no find_class, no object built from the file.
Every read is bounded by the policy's [pickle] budgets, which one file spends as a whole.
"""

from __future__ import annotations

import _compat_pickle
import copy
import itertools
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hubscan.policy import Policy, Rule
from hubscan.records import Finding
from hubscan.scan._bounded import ArchiveReadError, BoundedReader, Budget
from hubscan.scan._pickle_vm import (
    ARCHIVE_INVALID,
    MALFORMED,
    TOO_COMPLEX,
    StreamResult,
    run_stream,
)

DANGEROUS = "PKL_DANGEROUS_GLOBAL"
UNKNOWN = "PKL_UNKNOWN_GLOBAL"
UNRESOLVED = "PKL_UNRESOLVED_GLOBAL"
INDIRECT = "PKL_INDIRECT_CALL"
NESTED = "PKL_ARCHIVE_NESTED"
UNSUPPORTED = "PKL_ARCHIVE_UNSUPPORTED"
NO_PICKLE = "PKL_NO_PICKLE"

_HEAD = 512  # enough for every magic below, tar's "ustar" at offset 257 included
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # torch.load checks the first
# Other containers, by name; `strong` magics are long enough that tensor bytes never match them.
_ARCHIVE_MAGICS: tuple[tuple[int, bytes, str, bool], ...] = (
    (0, b"7z\xbc\xaf\x27\x1c", "7z", True),
    (0, b"\xfd7zXZ\x00", "xz", True),
    (0, b"Rar!\x1a\x07", "rar", True),
    (0, b"\x28\xb5\x2f\xfd", "zstd", True),
    (257, b"ustar", "tar", True),
    (0, b"\x1f\x8b\x08", "gzip", False),
)
_RULE_ORDER: dict[Rule, int] = {"allow": 0, "unknown": 1, "deny": 2}
_MAX_NAME_PARTS = 32  # a dotted attribute path longer than this is judged by its prefix only
# zipfile loads the whole central directory at once; real entries are ~100 bytes each, so a
# directory over this many bytes per allowed member is hostile (checked before zipfile reads it).
_CD_BYTES_PER_MEMBER = 1024


def scan_pickle_file(path: Path, rel: str, *, policy: Policy) -> tuple[Finding, ...]:
    """Findings for one pickle-format weights file; OSError from reading `path` propagates."""
    budget = Budget(
        max_opcodes=policy.pickle.max_opcodes, max_pickle_bytes=policy.pickle.max_pickle_bytes
    )
    with path.open("rb") as f:
        head = f.read(_HEAD)
        f.seek(0)
        if head.startswith(_ZIP_MAGICS):
            findings = _scan_zip(f, rel, policy, budget)
        elif (kind := _archive_kind(head, strong_only=False)) is not None:
            findings = [_finding(policy, UNSUPPORTED, rel, f"is a {kind} archive, not a pickle")]
        else:
            findings = _scan_plain(f, rel, policy, budget)
    return tuple(dict.fromkeys(findings))  # the same finding from several streams counts once


def _finding(policy: Policy, code: str, where: str, message: str) -> Finding:
    return Finding(
        code=code, severity=policy.severity_of(code), path=where, message=message, scanner="pickle"
    )


def _archive_kind(head: bytes, *, strong_only: bool) -> str | None:
    if not strong_only and head.startswith(_ZIP_MAGICS):
        return "zip"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    for offset, magic, kind, strong in _ARCHIVE_MAGICS:
        if (strong or not strong_only) and head[offset : offset + len(magic)] == magic:
            return kind
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
        return "bzip2"
    return None


# --- plain pickle files -----------------------------------------------------------------------


def _scan_plain(f: IO[bytes], rel: str, policy: Policy, budget: Budget) -> list[Finding]:
    reader = BoundedReader(f, budget)
    head = reader.peek(1)
    if not head:
        return [_finding(policy, NO_PICKLE, rel, "file is empty")]
    findings, first = _walk(reader, budget, rel, policy)
    if first.ops == 0 and first.failure is not None and first.failure[0] == MALFORMED:
        # Not even one opcode parsed: this is some other format, not a broken pickle.
        return [_finding(policy, NO_PICKLE, rel, f"holds no pickle (first byte 0x{head.hex()})")]
    return findings


def _walk(
    reader: BoundedReader,
    budget: Budget,
    where: str,
    policy: Policy,
    *,
    storage: bool = False,
    quiet: bool = False,
) -> tuple[list[Finding], StreamResult]:
    """Findings from every stream at the reader, and the first stream's result.

    `storage`: report a stream only if it is a whole pickle that imports or calls something.
    `quiet`: report no parse failures (the member already has a finding that explains them).
    """
    findings: dict[Finding, None] = {}  # deduped as they come: a file may hold many streams
    streams = _streams(reader, budget)
    first = next(streams)
    for index, result in enumerate(itertools.chain([first], streams)):
        if storage and not (result.complete and result.has_signals):
            continue  # random tensor bytes that merely start like a pickle
        failures = not quiet and _reports_failure(index, result)
        findings.update(dict.fromkeys(_stream_findings(result, where, policy, failures=failures)))
    return list(findings), first


def _streams(reader: BoundedReader, budget: Budget) -> Iterator[StreamResult]:
    """The first pickle, then each following one while the next bytes open a pickle (PROTO 2-5)."""
    while True:
        result = run_stream(reader, budget)
        yield result
        if not result.complete:
            return
        try:
            head = reader.peek(2)
        except ArchiveReadError as err:  # e.g. a bad CRC, noticed on reaching the member's end
            yield StreamResult(failure=(ARCHIVE_INVALID, f"member data is corrupt: {err}"))
            return
        if not _starts_pickle(head):
            return


def _reports_failure(index: int, result: StreamResult) -> bool:
    # The legacy torch.save format is several pickles then raw tensor bytes: a later "stream"
    # that does not parse is that raw tail, so only the first stream can be malformed. A later
    # stream over budget still counts: its unread part may hold the payload.
    return index == 0 or result.failure is None or result.failure[0] != MALFORMED


def _starts_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


# --- zip archives (PyTorch checkpoints) ---------------------------------------------------------


def _scan_zip(f: IO[bytes], rel: str, policy: Policy, budget: Budget) -> list[Finding]:
    limits = policy.pickle
    declared = _central_directory_size(f)
    if declared is not None:
        entries, cd_bytes = declared
        if (
            entries > limits.max_zip_members
            or cd_bytes > limits.max_zip_members * _CD_BYTES_PER_MEMBER
        ):
            return [
                _finding(
                    policy,
                    TOO_COMPLEX,
                    rel,
                    f"archive declares {entries} members in a "
                    f"{cd_bytes}-byte directory, over max_zip_members "
                    f"({limits.max_zip_members})",
                )
            ]
    try:
        archive = zipfile.ZipFile(f)
    except NotImplementedError as err:  # e.g. a "needs zip version 9.9" entry torch would read
        return [_finding(policy, UNSUPPORTED, rel, f"zip archive cannot be opened: {err}")]
    except (zipfile.BadZipFile, ValueError, EOFError, struct.error, OverflowError) as err:
        return [_finding(policy, ARCHIVE_INVALID, rel, f"zip archive cannot be read: {err}")]
    with archive:
        return _scan_members(archive, rel, policy, budget)


def _central_directory_size(f: IO[bytes]) -> tuple[int, int] | None:
    """(entries, bytes) the end-of-central-directory record declares; None if there is none.

    Mirrors zipfile's own lookup (last EOCD in the final 64 KiB, zip64 record just before it).
    """
    size = f.seek(0, 2)
    tail_len = min(size, 22 + 0xFFFF + 20 + 56)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    f.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, cd_bytes = struct.unpack_from("<HI", tail, at + 10)
    zip64 = at - 20 - 56
    if (
        zip64 >= 0
        and tail[at - 20 : at - 16] == b"PK\x06\x07"
        and tail[zip64 : zip64 + 4] == b"PK\x06\x06"
    ):
        entries64, cd_bytes64 = struct.unpack_from("<QQ", tail, zip64 + 32)
        entries, cd_bytes = max(entries, entries64), max(cd_bytes, cd_bytes64)
    return int(entries), int(cd_bytes)


def _is_storage(name: str) -> bool:
    """A tensor-storage member (`<prefix>/data/<digits>`): raw bytes that may look like anything."""
    parent, _, leaf = name.rpartition("/")
    return leaf.isdigit() and (parent == "data" or parent.endswith("/data"))


def _scan_members(
    archive: zipfile.ZipFile, rel: str, policy: Policy, budget: Budget
) -> list[Finding]:
    infos = archive.infolist()
    findings: list[Finding] = []
    if len(infos) > policy.pickle.max_zip_members:
        findings.append(
            _finding(
                policy,
                TOO_COMPLEX,
                rel,
                f"archive has {len(infos)} members, "
                f"over max_zip_members ({policy.pickle.max_zip_members})",
            )
        )
        infos = infos[: policy.pickle.max_zip_members]
    # Storage members last: their chance pickle-like bytes must not spend the budget the
    # real pickles need. Every entry is visited, duplicates of a name included.
    ordered = [i for i in infos if not _is_storage(i.filename)] + [
        i for i in infos if _is_storage(i.filename)
    ]
    pickles = 0
    for info in ordered:
        member_findings, was_pickle = _scan_member(archive, info, rel, policy, budget)
        findings += member_findings
        pickles += was_pickle
    if pickles == 0:
        findings.append(_finding(policy, NO_PICKLE, rel, "zip archive holds no pickle member"))
    return findings


def _scan_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, rel: str, policy: Policy, budget: Budget
) -> tuple[list[Finding], bool]:
    """Findings for one member, and whether it was scanned as a pickle."""
    where = f"{rel}:{_printable(info.filename, limit=None)}"
    if info.header_offset < 0:  # zipfile would seek there and fail with an OS-level EINVAL
        return [_finding(policy, ARCHIVE_INVALID, where, "member offset is negative")], False
    findings: list[Finding] = []
    if info.flag_bits & 0x1:
        findings.append(_finding(policy, UNSUPPORTED, where, "member is encrypted"))
        # torch's zip reader ignores the flag and reads the bytes anyway (a known scanner
        # bypass), so read them the same way: clear the flag on a copy and scan what is there.
        info = copy.copy(info)
        info.flag_bits &= ~0x1
    try:
        found, was_pickle = _read_member(archive, info, where, policy, budget, quiet=bool(findings))
    except (NotImplementedError, RuntimeError) as err:  # zipfile: unknown method or encryption
        found, was_pickle = (
            [_finding(policy, UNSUPPORTED, where, f"member cannot be opened: {err}")],
            False,
        )
    except _MEMBER_ERRORS as err:
        found, was_pickle = (
            [_finding(policy, ARCHIVE_INVALID, where, f"member cannot be read: {err}")],
            False,
        )
    return findings + found, was_pickle


# What zipfile raises on a corrupt local header or compressed stream.
_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    ArchiveReadError,
    ValueError,
    EOFError,
    OverflowError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


def _read_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    where: str,
    policy: Policy,
    budget: Budget,
    *,
    quiet: bool,
) -> tuple[list[Finding], bool]:
    storage = _is_storage(info.filename)
    with archive.open(info) as raw:
        reader = BoundedReader(raw, budget, cap=policy.pickle.max_member_bytes)
        head = reader.peek(_HEAD)
        kind = _archive_kind(head, strong_only=storage)
        if kind is not None:
            return [_finding(policy, NESTED, where, f"member is a {kind} archive")], False
        if not (info.filename.lower().endswith(".pkl") or _starts_pickle(head)):
            return [], False
        # quiet: an encrypted member already has its finding; its garbage need not add more.
        found, _ = _walk(reader, budget, where, policy, storage=storage, quiet=quiet)
        return found, not storage or bool(found)


# --- from what the walk saw to findings ---------------------------------------------------------


def _stream_findings(
    result: StreamResult, where: str, policy: Policy, *, failures: bool
) -> list[Finding]:
    findings: list[Finding] = []
    for module, name in result.globals:
        findings += _global_finding(module, name, where, policy)
    for mod, attr, how in result.unresolved:
        label = f"{_printable(mod or '<computed>')}.{_printable(attr or '<computed>')}"
        findings.append(_finding(policy, UNRESOLVED, where, f"imports {label} {how}"))
        if mod is not None and policy.pickle.classify(mod, "<computed>") == "deny":
            findings.append(_finding(policy, DANGEROUS, where, f"imports {label}"))
    for message in result.calls:
        findings.append(_finding(policy, INDIRECT, where, _printable(message)))
    if failures and result.failure is not None:
        code, message = result.failure
        findings.append(_finding(policy, code, where, _printable(message)))
    return findings


def _global_finding(module: str, name: str, where: str, policy: Policy) -> list[Finding]:
    rule = _classify(policy, module, name)
    if rule == "allow":
        return []
    message = f"imports {_printable(module)}.{_printable(name)}"
    loaded = _python2_mapping(module, name)
    if loaded != (module, name):
        message += f" (loaded as {_printable(loaded[0])}.{_printable(loaded[1])})"
    return [_finding(policy, DANGEROUS if rule == "deny" else UNKNOWN, where, message)]


def _classify(policy: Policy, module: str, name: str) -> Rule:
    """The worst rule over every way an Unpickler could resolve (module, name).

    Protocols 0-2 map Python 2 names (`commands` -> `subprocess`); protocol 4+ walks a dotted name
    attribute by attribute, so `torch.serialization` + `os.system` reaches os.system.
    """
    table = policy.pickle
    candidates = {(module, name), _python2_mapping(module, name)}
    parts = name.split(".")[:_MAX_NAME_PARTS]
    for k in range(1, len(parts)):
        candidates.add((module, ".".join(parts[:k])))  # each attribute on the way is touched
        candidates.add((".".join([module, *parts[:k]]), ".".join(parts[k:])))  # a submodule
        candidates.add((parts[k - 1], parts[k]))  # a module re-exported under another name
    rule = max((table.classify(m, n) for m, n in candidates), key=_RULE_ORDER.__getitem__)
    if rule == "allow" and "." in name:
        return "unknown"  # an attribute path can lead anywhere the allowlist did not vouch for
    return rule


def _python2_mapping(module: str, name: str) -> tuple[str, str]:
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _printable(text: str, *, limit: int | None = 200) -> str:
    """Hostile names may carry terminal escapes or run for kilobytes: escape and shorten them."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text
