"""disentangle.error_grid on a real zoo model: ξ is 0 where neither vector moves anything,
within [0, 2] everywhere, follows the clean vector's effect, and leaves the model as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hubscan import vector
from hubscan.disentangle import error_grid
from hubscan.model import ClipHandle, load_clip
from hubscan.probes import load_labels, load_probes
from hubscan.triggers import parse_trigger

COEFS = (-2.0, 0.0, 2.0)


@pytest.fixture(scope="module")
def clip(quick_zoo: Path) -> ClipHandle:
    return load_clip(quick_zoo / "patch-white-br-bag")


def inputs(clip: ClipHandle) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = load_labels("fashion-mnist")
    head = clip.zero_shot_head(labels.classes, labels.templates)
    images = load_probes("default", labels=labels, limit=60, seed=0).images
    return head, images, parse_trigger("patch:size=3,pos=br,pattern=white").apply(images)


def test_zero_vectors_give_zero_error_everywhere(clip: ClipHandle) -> None:
    head, clean, triggered = inputs(clip)
    zero = {k: torch.zeros_like(v) for k, v in vector.tower_params(clip).items()}
    grid = error_grid(clip, head, zero, zero, clean, triggered, COEFS)
    assert grid.xi == ((0.0,) * 3,) * 3 and grid.mean() == 0.0


def test_error_is_bounded_zero_at_the_origin_and_the_model_is_restored(
    clip: ClipHandle,
) -> None:
    head, clean, triggered = inputs(clip)
    before = vector.tower_params(clip)
    gen = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in before.items()}
    zero = {k: torch.zeros_like(v) for k, v in before.items()}
    grid = error_grid(clip, head, noise, zero, clean, triggered, COEFS)
    assert grid.xi[1][1] == 0.0
    assert all(0.0 <= x <= 2.0 for row in grid.xi for x in row)
    # With τ_t = 0 only the triggered term remains: how far a_c·τ_c moves triggered predictions.
    assert grid.xi[0][1] > 0 and grid.xi[2][1] > 0
    assert grid.mean(removal_only=True) >= 0
    after = vector.tower_params(clip)
    assert all(torch.equal(before[k], after[k]) for k in before)
