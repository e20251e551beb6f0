"""The metrics of METHOD.md §2, defined once: clean accuracy, agreement, attack success.

Owns the definitions only; callers choose probes and splits. Must not train, load or save.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hubscan.model import ClipHandle

Stamp = Callable[[torch.Tensor], torch.Tensor]  # a trigger's apply(): pixels -> pixels


def predict(clip: ClipHandle, pixels: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    return clip.logits(pixels, head).argmax(dim=1).cpu()


def clean_accuracy(
    clip: ClipHandle, pixels: torch.Tensor, labels: torch.Tensor, head: torch.Tensor
) -> float:
    """Zero-shot top-1 accuracy on clean probes."""
    return float((predict(clip, pixels, head) == labels).float().mean())


def agreement(
    clip: ClipHandle, reference: torch.Tensor, pixels: torch.Tensor, head: torch.Tensor
) -> float:
    """Share of probes on which `clip` predicts what the audited model predicted (`reference`):
    the clean-accuracy proxy when the probes have no labels."""
    return float((predict(clip, pixels, head) == reference).float().mean())


def attack_success(
    clip: ClipHandle,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    head: torch.Tensor,
    stamp: Stamp,
    target: int,
) -> float:
    """Among probes whose true class is not the target, the share classified as the target once
    the trigger is applied."""
    keep = labels != target
    if not bool(keep.any()):
        return 0.0
    return float((predict(clip, stamp(pixels[keep]), head) == target).float().mean())
