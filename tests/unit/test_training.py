from __future__ import annotations

from pathlib import Path

import torch

from hubscan.model import load_clip
from hubscan.training import Poison, Recipe, _poison_mask, caption_tokens, train
from tests.support.factories import write_open_clip_checkpoint


def test_poison_mask_marks_exactly_the_rate_and_is_seeded() -> None:
    stamp = Poison(stamp=lambda x: x, target=0, rate=0.05)
    a = _poison_mask(1000, stamp, torch.Generator().manual_seed(1))
    b = _poison_mask(1000, stamp, torch.Generator().manual_seed(1))
    assert int(a.sum()) == 50 and torch.equal(a, b)
    assert int(_poison_mask(1000, None, torch.Generator()).sum()) == 0


def test_training_moves_weights_deterministically(tmp_path: Path) -> None:
    root = write_open_clip_checkpoint(tmp_path / "tiny")
    images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    labels = torch.arange(64) % 2
    recipe = Recipe(samples=64, batch_size=16, lr=1e-3, weight_decay=0.0, warmup_steps=1, seed=3)
    results = []
    for _ in range(2):
        clip = load_clip(root)
        before = clip.model.visual.conv1.weight.detach().clone()
        caps = caption_tokens(clip, ["cat", "dog"], ["a {}", "the {}"])
        assert caps.shape[:2] == (2, 2)
        poison = Poison(stamp=lambda x: x.clamp(0.5, 1.0), target=1, rate=0.25)
        ticks: list[int] = []
        train(clip, images, labels, caps, recipe, poison=poison, tick=ticks.append)
        assert sum(ticks) == recipe.steps == 4
        after = clip.model.visual.conv1.weight.detach()
        assert not torch.equal(before, after)
        results.append(after.clone())
    assert torch.equal(results[0], results[1])
