"""The zoo's cache of trained models: one directory per recipe key under `cache_root()/zoo`,
outside the checkout, so tests, benchmarks and later sessions reuse a model instead of training it
again.

Owns how an entry is written: built in a sibling temp directory and renamed into place, so no
reader ever finds half an entry; when another process finished the same recipe first, its entry
is kept. Must not train, measure or choose keys (zoo.py does).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hubscan.atomic import cache_root

WEIGHTS = "open_clip_model.safetensors"  # present only in a complete entry


def cached_model(key: str, build: Callable[[Path], None], trained: list[str]) -> Path:
    """The entry for `key`, built by `build(dir)` when missing (then `key` is appended to
    `trained`)."""
    final = cache_root() / "zoo" / key
    if not (final / WEIGHTS).is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            with staging(final) as tmp:
                build(tmp)
        except OSError:
            # Another process (a parallel test worker, a second CI job on a shared cache)
            # trained the same recipe first and its entry is in place: keep it.
            if not (final / WEIGHTS).is_file():
                raise
        trained.append(key)
    return final


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """Build into a sibling temp dir and rename it into place: no half-written directory."""
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
