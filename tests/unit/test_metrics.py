from __future__ import annotations

import pytest
import torch

from hubscan.metrics import agreement, attack_success, clean_accuracy, predict
from hubscan.model import ClipHandle, load_clip
from tests.support.factories import write_open_clip_checkpoint


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipHandle:
    return load_clip(write_open_clip_checkpoint(tmp_path_factory.mktemp("metrics") / "tiny"))


def test_clean_accuracy_counts_matches_with_the_zero_shot_prediction(clip: ClipHandle) -> None:
    pixels = torch.rand(20, 3, 16, 16)
    head = clip.zero_shot_head(["a", "b", "c"], ["{}"])
    predicted = predict(clip, pixels, head)
    assert clean_accuracy(clip, pixels, predicted, head) == 1.0
    assert clean_accuracy(clip, pixels, (predicted + 1) % 3, head) == 0.0
    assert agreement(clip, predicted, pixels, head) == 1.0


def test_attack_success_ignores_probes_of_the_target_class(clip: ClipHandle) -> None:
    pixels = torch.rand(12, 3, 16, 16)
    head = clip.zero_shot_head(["a", "b", "c"], ["{}"])
    labels = torch.tensor([0, 1, 2] * 4)
    constant = predict(clip, torch.zeros(1, 3, 16, 16), head).item()

    def black(x: torch.Tensor) -> torch.Tensor:  # every stamped image is the same image
        return torch.zeros_like(x)

    assert attack_success(clip, pixels, labels, head, black, int(constant)) == 1.0
    other = (int(constant) + 1) % 3
    assert attack_success(clip, pixels, labels, head, black, other) == 0.0
    only_target = torch.full((12,), int(constant))
    assert attack_success(clip, pixels, only_target, head, black, int(constant)) == 0.0
