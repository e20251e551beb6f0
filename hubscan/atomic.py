"""Atomic file writes (a temp file in the target's directory, then a rename) and where hubscan's
own caches live.

Owns the one way hubscan writes outputs, so an interrupted run never leaves half a file where a
reader (a user, CI, the next stage) would take it for a whole one. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Trained models and audit results live outside the checkout: HUBSCAN_CACHE, else
    ~/.cache/hubscan."""
    env = os.environ.get("HUBSCAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hubscan"


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` to fill a temp file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
