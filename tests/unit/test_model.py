from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from hubscan.errors import ExitCode, ModelError, RefusedToLoad, WeightsMismatch
from hubscan.model import load_clip, refuse_if_blocked, save_clip
from hubscan.records import Finding, ScanReport, Severity, Snapshot, SourceKind
from tests.support.factories import write_open_clip_checkpoint

RESNET_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_open_clip_checkpoint(tmp_path_factory.mktemp("m") / "tiny")


def test_loads_a_checkpoint_written_by_open_clip_and_matches_open_clips_own_loader(
    tiny_dir: Path,
) -> None:
    clip = load_clip(tiny_dir)
    reference, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_dir}")
    reference.eval()
    pixels = torch.rand(3, 3, 16, 16)
    ours = clip.encode_images(pixels)
    theirs = torch.nn.functional.normalize(reference.encode_image(clip.prepare(pixels)), dim=-1)
    assert torch.allclose(ours, theirs.detach(), atol=1e-6)
    assert clip.image_size == 16


def test_loads_a_resnet_tower_too(tmp_path: Path) -> None:
    from open_clip.push_to_hf_hub import save_config_for_hf

    model = open_clip.CLIP(**RESNET_CFG)
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    save_file(model.state_dict(), str(tmp_path / "open_clip_model.safetensors"))
    save_config_for_hf(model, tmp_path / "open_clip_config.json", model_config=RESNET_CFG)
    clip = load_clip(tmp_path)
    assert clip.encode_images(torch.rand(2, 1, 40, 40)).shape == (2, 16)


def test_prepare_resizes_greys_and_normalizes(tiny_dir: Path) -> None:
    clip = load_clip(tiny_dir)
    out = clip.prepare(torch.full((2, 1, 28, 28), 0.5))
    assert out.shape == (2, 3, 16, 16)
    expected = (0.5 - clip.mean) / clip.std
    assert torch.allclose(out[:, :, 5, 5], expected.view(1, 3).expand(2, 3))


def test_zero_shot_head_is_one_unit_vector_per_class(tiny_dir: Path) -> None:
    clip = load_clip(tiny_dir)
    head = clip.zero_shot_head(["cat", "dog", "bag"], ["a photo of a {}.", "a {}"])
    assert head.shape == (3, 16)
    assert torch.allclose(head.norm(dim=1), torch.ones(3), atol=1e-5)
    logits = clip.logits(torch.rand(4, 3, 16, 16), head)
    assert logits.shape == (4, 3)


def test_save_clip_round_trips_exactly(tiny_dir: Path, tmp_path: Path) -> None:
    clip = load_clip(tiny_dir)
    save_clip(clip.model, clip.config, tmp_path / "copy")
    again = load_file(str(tmp_path / "copy" / "open_clip_model.safetensors"))
    original = load_file(str(tiny_dir / "open_clip_model.safetensors"))
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k]) for k in original)
    assert json.loads((tmp_path / "copy" / "open_clip_config.json").read_text()) == clip.config
    assert not list((tmp_path / "copy").glob(".*tmp"))


def _rewrite_weights(src: Path, dst: Path, change: str) -> Path:
    dst.mkdir()
    (dst / "open_clip_config.json").write_bytes((src / "open_clip_config.json").read_bytes())
    state = load_file(str(src / "open_clip_model.safetensors"))
    if change == "missing":
        del state["logit_scale"]
    elif change == "unexpected":
        state["backdoor.extra"] = torch.zeros(1)
    elif change == "shape":
        state["text_projection"] = torch.zeros(3, 3)
    save_file(state, str(dst / "open_clip_model.safetensors"))
    return dst


@pytest.mark.parametrize(
    ("change", "named"),
    [("missing", "logit_scale"), ("unexpected", "backdoor.extra"), ("shape", "text_projection")],
)
def test_weights_that_do_not_fit_are_refused_naming_the_keys(
    tiny_dir: Path, tmp_path: Path, change: str, named: str
) -> None:
    bad = _rewrite_weights(tiny_dir, tmp_path / "bad", change)
    with pytest.raises(WeightsMismatch, match=named) as err:
        load_clip(bad)
    assert err.value.exit_code is ExitCode.NO_VERDICT
    assert "\n" not in str(err.value)


def test_no_safetensors_weights_is_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_bytes(
        (tiny_dir / "open_clip_config.json").read_bytes()
    )
    with pytest.raises(ModelError, match="safetensors"):
        load_clip(tmp_path)


def test_a_blocking_scan_refuses_loading_with_exit_1(tmp_path: Path) -> None:
    snap = Snapshot(
        repo_id="acme/x", commit=None, root=tmp_path, source=SourceKind.DIRECTORY, files=()
    )
    bad = Finding(
        code="PKL_DANGEROUS_GLOBAL",
        severity=Severity.CRITICAL,
        path="m.bin",
        message="imports os.system",
        scanner="pickle",
    )
    scan = ScanReport(snapshot=snap, findings=(bad,), scanned=(), skipped=(), weights_scanned=())
    with pytest.raises(RefusedToLoad, match="PKL_DANGEROUS_GLOBAL") as err:
        refuse_if_blocked(scan, Severity.HIGH)
    assert err.value.exit_code is ExitCode.FINDINGS
    medium = ScanReport(
        snapshot=snap,
        findings=(replace(bad, severity=Severity.MEDIUM),),
        scanned=(),
        skipped=(),
        weights_scanned=(),
    )
    refuse_if_blocked(medium, Severity.HIGH)  # under the gate: loading goes ahead
