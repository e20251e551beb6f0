"""Stage 1: a model reference -> Snapshot (commit sha, file list, sizes, sha256).

Owns parsing references (`org/name[@revision]` or a local directory), choosing what a Hub scan
downloads under the policy's size budget, and listing files without trusting them: symlinks are
resolved but never followed out of the snapshot root (or, in an HF cache, the repo's blobs/),
directory symlinks are never walked, fifos/sockets/devices are never opened, and every read is
bounded by policy.limits.

Must not import huggingface_hub (all Hub traffic goes through hubscan.hub), torch, pickle or
safetensors, and must not interpret file contents: judging them is scan/'s job.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from hubscan.errors import FetchError, RefError, TooLarge
from hubscan.policy import Policy, matches
from hubscan.records import FileEntry, FileKind, RepoRef, Snapshot, SourceKind

if TYPE_CHECKING:
    from hubscan.hub import RemoteFile

_COMMIT = re.compile(r"[0-9a-f]{40}")
# The Hub's repo id rules: ASCII letters, digits, "-", "_", "." (no "--" or ".." anywhere).
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_REF = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<rev>.*))?")
_REVISION = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}")
_PATH_MARKERS = ("/", "./", "../", "~", "\\")
# O_NONBLOCK: a file swapped for a fifo between lstat and open must not hang the scan.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)


def parse_ref(text: str) -> RepoRef:
    """`org/name`, `org/name@rev` (branch, tag or 40-hex sha) or a local directory path.

    A text that starts like a path (/, ./, ../, ~) or names an existing directory is local;
    anything else must be a Hub reference.
    """
    stripped = text.strip()
    if not stripped:
        raise RefError("empty model reference: expected org/name[@revision] or a directory")
    if stripped.startswith(_PATH_MARKERS) or Path(stripped).is_dir():
        return _local_ref(stripped)
    return _hub_ref(stripped)


def _local_ref(text: str) -> RepoRef:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise RefError(f"{text!r} is not a directory")
    return RepoRef(repo_id=text, local_path=path)


def _hub_ref(text: str) -> RepoRef:
    match = _HUB_REF.fullmatch(text)
    if match is None or "--" in match["repo"] or ".." in match["repo"]:
        raise RefError(
            f"{text!r} is not a model reference: expected org/name[@revision] or a directory"
        )
    revision = match["rev"]
    if revision is not None and not _valid_revision(revision):
        raise RefError(f"{text!r} has an invalid revision: expected a branch, tag or 40-hex sha")
    return RepoRef(repo_id=match["repo"], revision=revision)


def _valid_revision(revision: str) -> bool:
    # The revision ends up in a cache path (refs/<revision>): no traversal, no empty segments.
    return (
        _REVISION.fullmatch(revision) is not None
        and ".." not in revision
        and "//" not in revision
        and not revision.endswith("/")
    )


def fetch_snapshot(
    ref: RepoRef,
    *,
    policy: Policy,
    offline: bool | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
) -> Snapshot:
    """List (and, for the Hub, download) what `ref` points to.

    offline=None honours HF_HUB_OFFLINE; cache_dir=None is huggingface_hub's HF_HUB_CACHE.
    """
    if ref.local_path is not None:
        return _from_directory(ref, policy)
    # Imported here: huggingface_hub costs ~0.4 s to import and a local directory never needs it.
    from hubscan import hub

    if hub.offline_mode() if offline is None else offline:
        return _from_cache(ref, policy, cache_dir)
    return _from_hub(ref, policy, endpoint, cache_dir)


# --- the three sources ---------------------------------------------------------------------------


def _from_directory(ref: RepoRef, policy: Policy) -> Snapshot:
    given = ref.local_path
    if given is None or not given.is_dir():
        raise RefError(f"{ref.repo_id!r} is not a directory")
    root = given.resolve()
    cache_id = _cache_snapshot_id(root)
    if cache_id is None:
        return _list_local(ref, root, None, policy, repo_id=ref.repo_id, commit=None)
    repo_id, commit = cache_id
    return _list_local(ref, root, _blobs_of(root), policy, repo_id=repo_id, commit=commit)


def _from_cache(ref: RepoRef, policy: Policy, cache_dir: Path | None) -> Snapshot:
    from hubscan import hub

    found = hub.cached(ref.repo_id, ref.revision, cache_dir=cache_dir)
    root = found.root.resolve()
    return _list_local(
        ref, root, _blobs_of(found.root), policy, repo_id=ref.repo_id, commit=found.commit
    )


def _from_hub(
    ref: RepoRef, policy: Policy, endpoint: str | None, cache_dir: Path | None
) -> Snapshot:
    from hubscan import hub

    repo = hub.resolve(ref.repo_id, ref.revision, endpoint=endpoint)
    listed = repo.files[: policy.limits.max_files]
    wanted = [f for f in listed if _downloadable(f, policy)]
    _check_budget(ref, wanted, policy.limits.max_download_bytes)
    root = hub.download(repo, [f.path for f in wanted], endpoint=endpoint, cache_dir=cache_dir)
    area = _Area.of(root, _blobs_of(root))
    fetched = {f.path for f in wanted}
    max_bytes = policy.limits.max_file_bytes
    return Snapshot(
        repo_id=repo.repo_id,
        commit=repo.commit,
        root=root,
        source=SourceKind.HUB,
        files=tuple(_hub_entry(area, f, f.path in fetched, max_bytes) for f in listed),
        revision=ref.revision,
        truncated=len(repo.files) > len(listed),
        hub_scans=repo.scans,
        hub_scans_done=repo.scans_done,
    )


# --- Hub selection -------------------------------------------------------------------------------


def _downloadable(remote: RemoteFile, policy: Policy) -> bool:
    # Over max_file_bytes stays REMOTE (the file scanner flags it); an unsafe path is never
    # materialised on disk (huggingface_hub refuses it too, but with an error that stops the run).
    return (
        matches(remote.path, policy.files.download)
        and remote.size <= policy.limits.max_file_bytes
        and _safe_relpath(remote.path)
    )


def _safe_relpath(path: str) -> bool:
    # No absolute path, no backslash, and no empty, "." or ".." segment ("" also rules out "a//b").
    return "\\" not in path and all(p not in ("", ".", "..") for p in path.split("/"))


def _check_budget(ref: RepoRef, wanted: Sequence[RemoteFile], budget: int) -> None:
    total = sum(f.size for f in wanted)
    if total > budget:
        raise TooLarge(
            f"{ref.display}: the {len(wanted)} files to download total {total:,} bytes, over the "
            f"policy's limits.max_download_bytes ({budget:,})"
        )


def _hub_entry(area: _Area, remote: RemoteFile, fetched: bool, max_bytes: int) -> FileEntry:
    if not fetched:
        return FileEntry(
            path=remote.path, size=remote.size, kind=FileKind.REMOTE, hub_sha256=remote.lfs_sha256
        )
    return replace(_inspect(area, remote.path, max_bytes), hub_sha256=remote.lfs_sha256)


# --- local listing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Area:
    """Where reads may land: the snapshot root and, in an HF cache, the repo's blobs/ directory."""

    root: Path
    blobs: Path | None

    @classmethod
    def of(cls, root: Path, blobs: Path | None) -> _Area:
        # Compare real paths: the root itself may be reached through a symlink.
        return cls(Path(os.path.realpath(root)), Path(os.path.realpath(blobs)) if blobs else None)

    def holds(self, real: Path) -> bool:
        if real.is_relative_to(self.root):
            return True
        return self.blobs is not None and real.is_relative_to(self.blobs)


def _cache_snapshot_id(root: Path) -> tuple[str, str] | None:
    """(repo_id, commit) for <cache>/models--ORG--NAME/snapshots/<40-hex>, else None."""
    repo_dir = root.parent.parent
    if root.parent.name != "snapshots" or not _COMMIT.fullmatch(root.name):
        return None
    if not repo_dir.name.startswith("models--"):
        return None
    # Repo ids cannot contain "--", so the folder name splits back unambiguously.
    parts = repo_dir.name.removeprefix("models--").split("--")
    if len(parts) != 2 or not all(parts):
        return None
    return "/".join(parts), root.name


def _blobs_of(snapshot_root: Path) -> Path:
    return snapshot_root.parent.parent / "blobs"


def _list_local(
    ref: RepoRef,
    root: Path,
    blobs: Path | None,
    policy: Policy,
    *,
    repo_id: str,
    commit: str | None,
) -> Snapshot:
    area = _Area.of(root, blobs)
    limit = policy.limits.max_files
    try:
        paths = list(islice(_walk(root), limit + 1))
    except OSError as err:
        raise FetchError(f"cannot list {root}: {err.strerror or err}") from err
    max_bytes = policy.limits.max_file_bytes
    return Snapshot(
        repo_id=repo_id,
        commit=commit,
        root=root,
        source=SourceKind.CACHE if commit is not None else SourceKind.DIRECTORY,
        files=tuple(_inspect(area, p, max_bytes) for p in paths[:limit]),
        revision=ref.revision,
        truncated=len(paths) > limit,
    )


def _walk(root: Path) -> Iterator[str]:
    """POSIX paths under root, sorted depth-first; directory symlinks are listed, never entered.

    An explicit stack rather than recursion: a hostile tree may nest deeper than Python recurses.
    """
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", _sorted_entries(root))]
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
        elif entry.is_dir(follow_symlinks=False):
            stack.append((f"{prefix}{entry.name}/", _sorted_entries(Path(entry.path))))
        else:
            yield prefix + entry.name


def _sorted_entries(directory: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return iter(sorted(it, key=lambda e: e.name))


def _inspect(area: _Area, rel: str, max_bytes: int) -> FileEntry:
    path = area.root / rel
    try:
        info = os.lstat(path)
    except OSError as err:
        raise FetchError(f"cannot stat {rel}: {err.strerror or err}") from err
    if stat.S_ISLNK(info.st_mode):
        return _inspect_link(area, rel, path, max_bytes)
    if stat.S_ISREG(info.st_mode):
        return _read_regular(rel, path, max_bytes)
    return FileEntry(path=rel, size=info.st_size, kind=FileKind.SPECIAL)


def _inspect_link(area: _Area, rel: str, path: Path, max_bytes: int) -> FileEntry:
    """Resolved, and used only when it lands inside the area: a regular file there is REGULAR,
    a fifo, socket or device SPECIAL.

    Links out of the area, dangling or looping links, and links to directories all become
    LINK_ESCAPE with their target recorded: nothing outside the area is ever stat-ed or opened.
    """
    target = os.readlink(path)
    real = Path(os.path.realpath(path))
    mode = _lstat_mode(real) if area.holds(real) else None
    if mode is not None and stat.S_ISREG(mode):
        return _read_regular(rel, real, max_bytes)
    if mode is not None and _is_special(mode):
        return FileEntry(path=rel, size=0, kind=FileKind.SPECIAL, link_target=target)
    return FileEntry(path=rel, size=0, kind=FileKind.LINK_ESCAPE, link_target=target)


def _lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None  # dangling or looping: reported like an escape


def _is_special(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _read_regular(rel: str, path: Path, max_bytes: int) -> FileEntry:
    """Size and sha256 of a regular file, streamed; over max_bytes it is never read."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        raise FetchError(f"cannot read {rel}: {err.strerror or err}") from err
    with open(fd, "rb") as handle:
        # fstat on the open descriptor: what was lstat-ed may have been swapped since.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return FileEntry(path=rel, size=info.st_size, kind=FileKind.SPECIAL)
        if info.st_size > max_bytes:
            return FileEntry(path=rel, size=info.st_size)
        try:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as err:
            raise FetchError(f"cannot read {rel}: {err.strerror or err}") from err
    return FileEntry(path=rel, size=info.st_size, sha256=digest)
