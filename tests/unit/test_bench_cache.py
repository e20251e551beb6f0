"""bench_cache: a result is computed once per key, and a damaged entry is computed again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hubscan.bench_cache import cached


def test_a_result_is_computed_once_per_key_and_a_damaged_entry_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSCAN_CACHE", str(tmp_path))
    calls: list[str] = []

    def compute(tag: str) -> dict[str, Any]:
        calls.append(tag)
        return {"tag": tag}

    assert cached("t", [1, "a"], lambda: compute("a")) == ({"tag": "a"}, False)
    assert cached("t", [1, "a"], lambda: compute("again")) == ({"tag": "a"}, True)
    assert cached("t", [2, "a"], lambda: compute("b")) == ({"tag": "b"}, False)
    (entry,) = [p for p in (tmp_path / "bench-t").iterdir() if p.read_text().count('"a"')]
    entry.write_text("{not json")
    assert cached("t", [1, "a"], lambda: compute("c")) == ({"tag": "c"}, False)
    assert calls == ["a", "b", "c"]
