"""A hand-built Hugging Face cache, in the layout huggingface_hub itself reads, for offline tests.

    <cache>/models--ORG--NAME/
        refs/main                  the 40-hex commit, no trailing newline (read with f.read())
        snapshots/<commit>/<path>  a relative symlink to ../../blobs/<sha256>, as the real cache
                                   makes them, or a regular file (symlinks=False)
        blobs/<sha256>

Nothing here imports huggingface_hub: the point is to check that its real lookup code finds what
we wrote by hand.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CachedRepo:
    repo_dir: Path  # <cache>/models--ORG--NAME
    commit: str
    snapshot: Path  # <repo_dir>/snapshots/<commit>

    @property
    def blobs(self) -> Path:
        return self.repo_dir / "blobs"


def fake_commit(seed: str) -> str:
    """A deterministic 40-hex commit sha."""
    return hashlib.sha1(seed.encode()).hexdigest()


def build_cached_repo(
    cache_dir: Path,
    repo_id: str,
    files: Mapping[str, bytes],
    *,
    commit: str | None = None,
    refs: Iterable[str] = ("main",),
    symlinks: bool = True,
) -> CachedRepo:
    """Write `files` as the snapshot of `repo_id` at `commit`, with each ref pointing to it."""
    org, name = repo_id.split("/")
    repo_dir = cache_dir / f"models--{org}--{name}"
    sha = commit if commit is not None else fake_commit(repo_id + repr(sorted(files.items())))
    snapshot = repo_dir / "snapshots" / sha
    for ref in refs:
        ref_path = repo_dir / "refs" / ref
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text(sha)  # no trailing newline: huggingface_hub does not strip it
    snapshot.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        _write_file(repo_dir, snapshot / path, data, symlinks=symlinks)
    return CachedRepo(repo_dir=repo_dir, commit=sha, snapshot=snapshot)


def _write_file(repo_dir: Path, pointer: Path, data: bytes, *, symlinks: bool) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if not symlinks:
        pointer.write_bytes(data)
        return
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    # Relative, like huggingface_hub's own _create_relative_symlink.
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
