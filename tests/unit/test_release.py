"""release.py: the staged release directory, the patched safetensors, the config copy, the model
card through the real huggingface_hub ModelCard, and SIGTERM cleanup through cli_common."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import typer
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import save_file

from hubscan import cli_common
from hubscan.errors import ModelError, UsageError
from hubscan.release import (
    MARKER_NAME,
    check_out,
    copy_config,
    sha256_files,
    staged,
    write_card,
    write_weights,
)
from tests.support.hf_cache import build_cached_repo

SECTION = "## hubscan: backdoor removed\n\nTBAR, alpha 0.8.\n"
HEADING = "## hubscan: backdoor removed"
CARD = """---
license: mit
library_name: open_clip
tags:
- clip
- zero-shot-image-classification
---

# Tiny CLIP

Trained on things.

## Citation

Someone, 2024.
"""


def _source(path: Path) -> Path:
    save_file(
        {"visual.w": torch.zeros(2, 3, dtype=torch.float16), "text.b": torch.ones(4)},
        str(path),
        metadata={"format": "pt"},
    )
    return path


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# --- write_weights ---------------------------------------------------------------------------


def test_write_weights_keeps_source_keys_dtypes_and_stores_metadata(tmp_path: Path) -> None:
    like = _source(tmp_path / "source.safetensors")
    state = {"visual.w": torch.full((2, 3), 0.5), "text.b": torch.full((4,), 2.0).double()}
    meta = {"hubscan.source": "acme/clip", "hubscan.alpha": "0.8"}

    out = write_weights(tmp_path, state, like=like, metadata=meta)

    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == ["text.b", "visual.w"]
        assert f.metadata() == meta
        assert f.get_tensor("visual.w").dtype == torch.float16
        assert f.get_tensor("text.b").dtype == torch.float32
        assert torch.equal(f.get_tensor("text.b"), torch.full((4,), 2.0))
    assert out.name == "open_clip_model.safetensors"


def test_write_weights_copies_tensors_that_share_storage(tmp_path: Path) -> None:
    like = tmp_path / "source.safetensors"
    save_file({"a": torch.ones(3), "b": torch.ones(3)}, str(like))
    tied = torch.arange(3.0)

    out = write_weights(tmp_path, {"a": tied, "b": tied}, like=like, metadata={})

    with safe_open(str(out), framework="pt") as f:
        assert torch.equal(f.get_tensor("b"), tied)


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"visual.w": torch.zeros(2, 3)}, "text.b"),
        ({"visual.w": torch.zeros(2, 3), "text.b": torch.ones(4), "extra": torch.ones(1)}, "extra"),
    ],
    ids=["missing", "extra"],
)
def test_write_weights_refuses_keys_that_differ_from_the_source(
    tmp_path: Path, state: dict[str, torch.Tensor], named: str
) -> None:
    like = _source(tmp_path / "source.safetensors")
    with pytest.raises(ModelError, match=re.escape(named)) as err:
        write_weights(tmp_path, state, like=like, metadata={})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "open_clip_model.safetensors").exists()


def test_write_weights_refuses_a_shape_that_differs_from_the_source(tmp_path: Path) -> None:
    like = _source(tmp_path / "source.safetensors")
    state = {"visual.w": torch.zeros(3, 2), "text.b": torch.ones(4)}
    with pytest.raises(ModelError, match=r"visual\.w"):
        write_weights(tmp_path, state, like=like, metadata={})


def test_write_weights_refuses_a_source_that_is_not_safetensors(tmp_path: Path) -> None:
    like = tmp_path / "source.safetensors"
    like.write_bytes(b"\x00" * 3)
    with pytest.raises(ModelError, match="header"):
        write_weights(tmp_path, {}, like=like, metadata={})


# --- staged ----------------------------------------------------------------------------------


def test_staged_moves_the_stage_into_place_with_the_marker(tmp_path: Path) -> None:
    out = tmp_path / "release"
    with staged(out) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".release.staging-")
        assert list(stage.iterdir()) == []
        (stage / "a.txt").write_text("a")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "a"
    assert (out / MARKER_NAME).is_file()
    assert _leftovers(tmp_path, "release") == []


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_staged_removes_the_stage_and_writes_nothing_when_interrupted(
    tmp_path: Path, raised: type[BaseException]
) -> None:
    out = tmp_path / "release"
    with pytest.raises(raised), staged(out) as stage:
        (stage / "half.safetensors").write_bytes(b"half")
        raise raised
    assert not out.exists()
    assert _leftovers(tmp_path, "release") == []


def test_staged_replaces_a_previous_release(tmp_path: Path) -> None:
    out = tmp_path / "release"
    with staged(out) as stage:
        (stage / "old.txt").write_text("old")
    with staged(out) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "new.txt"]
    assert _leftovers(tmp_path, "release") == []


def test_staged_keeps_a_previous_release_when_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "release"
    with staged(out) as stage:
        (stage / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged(out) as stage:
        raise KeyboardInterrupt
    assert (out / "old.txt").read_text() == "old"


def test_staged_fills_an_empty_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "release"
    out.mkdir()
    with staged(out) as stage:
        (stage / "a.txt").write_text("a")
    assert (out / "a.txt").is_file()


def test_staged_refuses_a_foreign_directory_before_yielding(tmp_path: Path) -> None:
    out = tmp_path / "my-photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpg")
    entered = False
    with pytest.raises(UsageError, match="is not a hubscan release"), staged(out):
        entered = True
    assert not entered
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    assert _leftovers(tmp_path, "my-photos") == []


def test_check_out_accepts_absent_empty_and_release_and_refuses_the_rest(tmp_path: Path) -> None:
    check_out(tmp_path / "absent" / "release")
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")
    with staged(tmp_path / "previous") as stage:
        (stage / "open_clip_model.safetensors").write_bytes(b"weights")
    check_out(tmp_path / "previous")
    (tmp_path / "previous" / MARKER_NAME).unlink()
    with pytest.raises(UsageError, match="choose another directory"):
        check_out(tmp_path / "previous")
    with pytest.raises(UsageError):
        check_out(Path("/"))


@pytest.mark.parametrize("kind", ["file", "symlink to a release"])
def test_staged_refuses_a_file_or_a_symlink_as_out(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "release"
    if kind == "file":
        out.write_text("notes")
    else:
        real = tmp_path / "real"
        with staged(real):
            pass
        out.symlink_to(real)
    with pytest.raises(UsageError), staged(out):
        pass
    assert os.path.lexists(out)


def test_staged_refuses_if_out_became_foreign_while_working(tmp_path: Path) -> None:
    out = tmp_path / "release"
    with pytest.raises(UsageError), staged(out):
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert _leftovers(tmp_path, "release") == []


# --- copy_config ------------------------------------------------------------------------------


def test_copy_config_copies_bytes_from_an_hf_cache_symlink(tmp_path: Path) -> None:
    config = b'{"model_cfg": {"embed_dim": 8}}  \n'
    repo = build_cached_repo(tmp_path / "cache", "acme/clip", {"open_clip_config.json": config})
    assert (repo.snapshot / "open_clip_config.json").is_symlink()
    stage = tmp_path / "stage"
    stage.mkdir()
    assert copy_config(stage, repo.snapshot).read_bytes() == config


def test_copy_config_refuses_a_symlink_out_of_the_snapshot(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    root = tmp_path / "model"
    root.mkdir()
    (root / "open_clip_config.json").symlink_to(secret)
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(ModelError, match="links out"):
        copy_config(stage, root)
    assert list(stage.iterdir()) == []


# --- write_card -------------------------------------------------------------------------------


def _card(
    tmp_path: Path, original: str | None, tags: Sequence[str] = ("hubscan-patched",)
) -> tuple[str, str]:
    card, diff = write_card(
        tmp_path, original=original, base_model="acme/clip", section=SECTION, tags=tags
    )
    return card.read_text(encoding="utf-8"), diff.read_text(encoding="utf-8")


def test_card_gains_base_model_tag_and_section_and_keeps_the_rest(tmp_path: Path) -> None:
    text, diff = _card(tmp_path, CARD)
    card = ModelCard(text)
    assert card.data.base_model == "acme/clip"
    assert card.data.tags == ["clip", "zero-shot-image-classification", "hubscan-patched"]
    assert card.data.license == "mit" and card.data.library_name == "open_clip"
    assert "Trained on things." in card.text and "## Citation" in card.text
    assert card.text.rstrip().endswith("TBAR, alpha 0.8.")
    assert diff.startswith("--- a/README.md\n+++ b/README.md\n")
    assert f"+{HEADING}\n" in diff and "+base_model: acme/clip\n" in diff
    assert "+- hubscan-patched\n" in diff
    assert not [line for line in diff.splitlines() if line.startswith("-") and "---" not in line]


def test_card_section_is_replaced_not_duplicated_when_patching_a_patched_model(
    tmp_path: Path,
) -> None:
    once, _ = _card(tmp_path, CARD)
    with_later_section = once + "\n## Later\n\nAdded by the owner.\n"
    twice, _ = write_card(
        tmp_path,
        original=with_later_section,
        base_model="acme/clip",
        section="## hubscan: backdoor removed\n\nTBAR, alpha 0.5.\n",
    )
    text = twice.read_text(encoding="utf-8")
    assert text.count(HEADING) == 1
    assert "alpha 0.5" in text and "alpha 0.8" not in text
    assert "Added by the owner." in text and "## Citation" in text
    assert ModelCard(text).data.tags.count("hubscan-patched") == 1


def test_card_is_unchanged_when_the_same_section_is_applied_twice(tmp_path: Path) -> None:
    once, _ = _card(tmp_path, CARD)
    twice, diff = _card(tmp_path, once)
    assert twice == once
    assert diff == ""


def test_card_section_ends_at_the_next_heading_not_at_a_comment_in_code(tmp_path: Path) -> None:
    section = f"{HEADING}\n\n```sh\n# rerun\nhubscan patch acme/clip\n```\n"
    once = write_card(tmp_path, original=CARD, base_model="acme/clip", section=section)[0]
    twice, _ = _card(tmp_path, once.read_text(encoding="utf-8"))
    assert "hubscan patch acme/clip" not in twice
    assert twice.count(HEADING) == 1


def test_card_without_front_matter_gets_one(tmp_path: Path) -> None:
    text, diff = _card(tmp_path, "# Plain card\n\nNo metadata here.")
    card = ModelCard(text)
    assert card.data.base_model == "acme/clip"
    assert card.data.tags == ["hubscan-patched"]
    assert card.text.startswith("# Plain card\n\nNo metadata here.\n\n" + HEADING)
    assert "\\ No newline at end of file" in diff


def test_missing_card_becomes_a_minimal_one(tmp_path: Path) -> None:
    text, diff = _card(tmp_path, None, tags=("hubscan-patched", "backdoor-removed"))
    card = ModelCard(text)
    assert card.data.base_model == "acme/clip"
    assert card.data.tags == ["hubscan-patched", "backdoor-removed"]
    assert card.text.startswith("# acme/clip\n") and HEADING in card.text
    assert diff.startswith("--- a/README.md\n+++ b/README.md\n@@ -0,0 +1,")


def test_card_with_broken_yaml_keeps_its_body_and_says_its_metadata_was_replaced(
    tmp_path: Path,
) -> None:
    broken = "---\nlicense: mit\ntags: [clip\n---\n# Tiny CLIP\n\nTrained on things.\n"
    text, diff = _card(tmp_path, broken)
    card = ModelCard(text)
    assert card.data.to_dict() == {"base_model": "acme/clip", "tags": ["hubscan-patched"]}
    assert card.text.startswith("# Tiny CLIP\n\nTrained on things.\n")
    assert "could not read this card's original metadata" in card.text
    assert "-tags: [clip\n" in diff


def test_card_with_an_invalid_model_index_keeps_the_rest_of_its_metadata(tmp_path: Path) -> None:
    bad = "---\nlicense: mit\nmodel-index:\n- name: x\n  results: 5\n---\n# Tiny CLIP\n"
    text, _ = _card(tmp_path, bad)
    card = ModelCard(text)
    assert card.data.license == "mit" and card.data.base_model == "acme/clip"
    assert "model-index could not be parsed and was dropped" in card.text


def test_card_section_must_start_with_a_heading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="heading"):
        write_card(tmp_path, original=CARD, base_model="acme/clip", section="no heading\n")


# --- sha256_files -----------------------------------------------------------------------------


def test_sha256_files_hashes_every_regular_file_but_the_marker(tmp_path: Path) -> None:
    out = tmp_path / "release"
    with staged(out) as stage:
        (stage / "a.txt").write_bytes(b"a")
        (stage / "figures").mkdir()
        (stage / "figures" / "trigger.png").write_bytes(b"png")
        (stage / "link").symlink_to(stage / "a.txt")
    digests = sha256_files(out)
    assert digests == {
        "a.txt": hashlib.sha256(b"a").hexdigest(),
        "figures/trigger.png": hashlib.sha256(b"png").hexdigest(),
    }


# --- SIGTERM --------------------------------------------------------------------------------


def test_run_command_restores_the_previous_sigterm_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def body() -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        return 0

    with pytest.raises(typer.Exit):
        cli_common.run_command(body, debug=False)
    assert seen and seen[0] is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_during_a_patch_removes_the_staging_dir(tmp_path: Path) -> None:
    out = tmp_path / "release"
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        import typer
        from hubscan.cli_common import run_command
        from hubscan.release import staged

        def body() -> int:
            with staged(Path({str(out)!r})) as stage:
                (stage / "half.safetensors").write_bytes(b"half")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
            return 0

        try:
            run_command(body, debug=False)
        except typer.Exit as done:
            sys.exit(done.exit_code)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert not out.exists()
    assert os.listdir(tmp_path) == []
