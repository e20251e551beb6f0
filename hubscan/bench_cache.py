"""Results of a benchmark's long units of work (one model's row), cached outside the checkout.

Owns the cache of benchmark results: JSON keyed by the sha256 of everything the caller says the
result depends on (weights digests, settings, the benchmark's version), under
`<cache root>/bench-<kind>/`, written atomically. A benchmark over two zoos takes hours on 2 CPU
cores; a rerun after an interruption, or with one more zoo, measures only what is new. Must not
decide what a result depends on: the caller's key does; and must not measure anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from hubscan.atomic import cache_root, write_text_atomic


def cached(
    kind: str, key: list[Any], compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """(result, whether it came from the cache). An unreadable entry is computed again."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root() / f"bench-{kind}" / f"{digest}.json"
    try:
        found = json.loads(path.read_text())
        if isinstance(found, dict):
            return found, True
    except (OSError, ValueError):
        pass  # not measured yet, or unreadable: measure
    result = compute()
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    return result, False
