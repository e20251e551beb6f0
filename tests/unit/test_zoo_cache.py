"""zoo_cache.py: trained models cached by recipe key, never half written."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubscan.zoo_cache import cached_model


def test_a_missing_entry_is_built_in_staging_and_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSCAN_CACHE", str(tmp_path))
    seen: list[Path] = []

    def build(staging: Path) -> None:
        seen.append(staging)
        (staging / "open_clip_model.safetensors").write_bytes(b"weights")

    trained: list[str] = []
    final = cached_model("recipe", build, trained)
    assert final == tmp_path / "zoo" / "recipe" and seen[0] != final
    assert (final / "open_clip_model.safetensors").read_bytes() == b"weights"
    assert cached_model("recipe", build, trained) == final  # found: not built again
    assert trained == ["recipe"] and len(seen) == 1


def test_a_model_another_process_cached_meanwhile_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds of one recipe at once (parallel CI jobs on a shared cache): the second to
    finish finds the first's entry in place, keeps it and leaves no temp dir."""
    monkeypatch.setenv("HUBSCAN_CACHE", str(tmp_path))
    final = tmp_path / "zoo" / "recipe"

    def build(staging: Path) -> None:
        (staging / "open_clip_model.safetensors").write_bytes(b"ours")
        final.mkdir()  # the other build renames its entry into place first
        (final / "open_clip_model.safetensors").write_bytes(b"theirs")

    trained: list[str] = []
    assert cached_model("recipe", build, trained) == final
    assert (final / "open_clip_model.safetensors").read_bytes() == b"theirs"
    assert [p.name for p in (tmp_path / "zoo").iterdir()] == ["recipe"]
