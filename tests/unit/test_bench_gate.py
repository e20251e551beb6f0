from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubscan import bench_gate


def manifest(tmp_path: Path, kinds: list[tuple[str, str]]) -> Path:
    models = [{"name": name, "kind": kind} for name, kind in kinds]
    (tmp_path / "manifest.json").write_text(json.dumps({"models": models}))
    return tmp_path


def test_models_alternate_backdoored_and_clean(tmp_path: Path) -> None:
    zoo = manifest(
        tmp_path,
        [
            ("base", "base"),
            ("b1", "backdoored"),
            ("b2", "backdoored"),
            ("c1", "clean"),
            ("c2", "clean"),
        ],
    )
    assert bench_gate._pick(zoo, 3) == ["b1", "c1", "b2"]
    with pytest.raises(ValueError, match="fewer than 6"):
        bench_gate._pick(zoo, 6)


def test_a_cached_model_gets_a_pinned_lock_line_and_a_readable_ref(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "open_clip_config.json").write_text("{}")
    line = bench_gate._cache_model(tmp_path / "hf", model, "bench/m")
    repo, commit = line.split("@")
    assert repo == "bench/m" and len(commit) == 40
    ref = tmp_path / "hf" / "models--bench--m" / "refs" / "main"
    assert ref.read_text() == commit
    assert (ref.parent.parent / "snapshots" / commit / "open_clip_config.json").read_text() == "{}"


def test_the_page_shows_both_medians_and_the_speed_up() -> None:
    page = bench_gate.markdown(
        {
            "command": "hubscan bench gate --zoo z",
            "hubscan": "0.1.0",
            "machine": "x86_64, 2 CPUs",
            "policy": "default",
            "models": [{"name": "b1", "verdict": "fail"}],
            "runs": 3,
            "cold_seconds": [10.0, 12.0, 11.0],
            "warm_seconds": [0.8, 0.7, 0.9],
            "cold_median": 11.0,
            "warm_median": 0.8,
            "speedup_median": 13.8,
        }
    )
    assert "| first run (probing) | 11.00 s | 10.00, 12.00, 11.00 |" in page
    assert "**13.8x**" in page and "| `b1` | fail |" in page
