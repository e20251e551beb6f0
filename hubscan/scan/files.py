"""The file inventory scanner: what is in the snapshot, judged without deserializing anything.

Owns the FILE_* and HUB_* findings: paths and symlinks that leave the snapshot, special files,
executables and code, sizes over the cap, hash mismatches against the Hub's LFS sha256, the
open_clip_config.json sanity check, weights hubscan cannot scan, and the Hub's own security scan.
Reads at most a few magic bytes of a file and the bounded config JSON. Must never import torch,
open_clip or pickle, and never open a file that fetch marked as unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import PurePosixPath

from hubscan.policy import Policy, matches
from hubscan.records import FileEntry, FileKind, Finding, Snapshot

CONFIG_NAME = "open_clip_config.json"
# Native executables and scripts, by their first bytes: ELF, PE, Mach-O (32/64, both endians, fat).
_EXEC_MAGIC = (
    b"\x7fELF",
    b"MZ",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"#!",
)
_FLAGGED_HUB_STATUS = frozenset({"unsafe", "suspicious", "caution", "infected", "dangerous"})


def readable(entry: FileEntry) -> bool:
    """Fetch hashed it, so it is a regular file inside the snapshot and under the size cap."""
    return entry.kind is FileKind.REGULAR and entry.sha256 is not None


def scan_files(snapshot: Snapshot, *, policy: Policy) -> tuple[Finding, ...]:
    return tuple(_inventory(snapshot, policy)) + tuple(_hub_findings(snapshot, policy))


def _finding(policy: Policy, code: str, path: str, message: str, scanner: str = "files") -> Finding:
    return Finding(
        code=code, severity=policy.severity_of(code), path=path, message=message, scanner=scanner
    )


def _inventory(snapshot: Snapshot, policy: Policy) -> Iterator[Finding]:
    if snapshot.truncated:
        yield _finding(
            policy,
            "FILE_TOO_MANY",
            "",
            f"listing stopped at {policy.limits.max_files} files; the rest was not scanned",
        )
    for entry in snapshot.files:
        yield from _entry_findings(snapshot, entry, policy)
    yield from _layout_findings(snapshot, policy)


def _entry_findings(snapshot: Snapshot, entry: FileEntry, policy: Policy) -> Iterator[Finding]:
    pure = PurePosixPath(entry.path)
    if pure.is_absolute() or ".." in pure.parts:
        yield _finding(policy, "FILE_PATH_ESCAPE", entry.path, "path leaves the snapshot root")
    if entry.kind is FileKind.LINK_ESCAPE:
        yield _finding(
            policy,
            "FILE_PATH_ESCAPE",
            entry.path,
            f"symlink points outside the snapshot, to {entry.link_target}",
        )
    elif entry.kind is FileKind.SPECIAL:
        yield _finding(
            policy, "FILE_SPECIAL", entry.path, "not a regular file (fifo, socket or device)"
        )
    if entry.size > policy.limits.max_file_bytes:
        yield _finding(
            policy,
            "FILE_TOO_LARGE",
            entry.path,
            f"{entry.size} bytes, over the cap of {policy.limits.max_file_bytes}; not read",
        )
    if readable(entry) and _has_exec_magic(snapshot, entry):
        yield _finding(policy, "FILE_EXECUTABLE", entry.path, "native executable or shebang script")
    elif matches(entry.path, policy.files.code):
        yield _finding(policy, "FILE_CODE", entry.path, "code shipped beside the weights")
    if entry.sha256 and entry.hub_sha256 and entry.sha256 != entry.hub_sha256:
        yield _finding(
            policy,
            "FILE_HASH_MISMATCH",
            entry.path,
            f"sha256 {entry.sha256[:12]}… differs from the Hub's {entry.hub_sha256[:12]}…",
        )
    if matches(entry.path, policy.files.other_weights):
        yield _finding(
            policy,
            "FILE_WEIGHTS_UNSCANNED",
            entry.path,
            "weights in a format hubscan does not scan",
        )


def _has_exec_magic(snapshot: Snapshot, entry: FileEntry) -> bool:
    with snapshot.path_of(entry).open("rb") as fh:
        head = fh.read(4)
    return any(head.startswith(magic) for magic in _EXEC_MAGIC)


def _layout_findings(snapshot: Snapshot, policy: Policy) -> Iterator[Finding]:
    weights = [e for e in snapshot.files if _is_weights(e.path, policy)]
    safe = [e for e in weights if matches(e.path, policy.files.safetensors)]
    if weights and not safe:
        yield _finding(
            policy,
            "FILE_PICKLE_WEIGHTS",
            weights[0].path,
            "weights only in a pickle format; hubscan loads safetensors only",
        )
    config = next((e for e in snapshot.files if e.path == CONFIG_NAME), None)
    if config is None:
        if weights:
            yield _finding(
                policy,
                "FILE_CONFIG_MISSING",
                "",
                f"no {CONFIG_NAME}: not an open_clip checkpoint layout",
            )
        return
    if readable(config):
        problem = _config_problem(snapshot, config, policy)
        if problem:
            yield _finding(policy, "FILE_CONFIG_INVALID", config.path, problem)


def _is_weights(path: str, policy: Policy) -> bool:
    return matches(path, policy.files.safetensors) or matches(path, policy.files.pickle)


def _config_problem(snapshot: Snapshot, entry: FileEntry, policy: Policy) -> str | None:
    """What is wrong with open_clip_config.json, or None. open_clip reads `model_cfg` (the
    architecture: embed_dim, vision_cfg, text_cfg) and optionally `preprocess_cfg`."""
    if entry.size > policy.limits.max_config_bytes:
        return f"{entry.size} bytes, over the config cap of {policy.limits.max_config_bytes}"
    try:
        cfg = json.loads(snapshot.path_of(entry).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return f"not valid UTF-8 JSON ({type(err).__name__})"
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        return "no `model_cfg` object"
    model_cfg = cfg["model_cfg"]
    if type(model_cfg.get("embed_dim")) is not int or model_cfg["embed_dim"] <= 0:
        return "`model_cfg.embed_dim` is not a positive integer"
    for tower in ("vision_cfg", "text_cfg"):
        if not isinstance(model_cfg.get(tower), dict):
            return f"`model_cfg.{tower}` is not an object"
    if "preprocess_cfg" in cfg and not isinstance(cfg["preprocess_cfg"], dict):
        return "`preprocess_cfg` is not an object"
    return None


def _hub_findings(snapshot: Snapshot, policy: Policy) -> Iterator[Finding]:
    if snapshot.hub_scans_done is False:
        yield _finding(
            policy, "HUB_SCAN_PENDING", "", "the Hub has not finished scanning this commit", "hub"
        )
    for scan in snapshot.hub_scans:
        if scan.status.lower() in _FLAGGED_HUB_STATUS:
            yield _finding(
                policy,
                "HUB_FLAGGED",
                scan.path,
                f"the Hub's scan says {scan.status}: {scan.detail}",
                "hub",
            )
