"""PNG figures: triggers (and later the alpha curves) drawn for people and model cards.

Owns turning tensors into pictures. Must not compute results: it draws what it is given.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from hubscan.atomic import write_atomic
from hubscan.triggers import (
    InvertedTrigger,
    Trigger,
    WarpTrigger,
    check_images,
    resize,
    to_channels,
)


def render_trigger_png(
    trigger: Trigger, path: Path, *, images: torch.Tensor | None = None, size: int = 32
) -> None:
    """One PNG row: [mask, pattern,] the trigger on a base image, then up to 4 stamped images."""
    row = [] if images is None else list(trigger.apply(check_images(images)[:4]).float().cpu())
    h, w = row[0].shape[1:] if row else (size, size)
    if isinstance(trigger, InvertedTrigger):
        h, w = row[0].shape[1:] if row else trigger.mask.shape
        mask, pattern = trigger.mask[None, None], trigger.pattern[None]
        row[:0] = [resize(mask, h, w)[0], resize(pattern, h, w)[0]]
    base = torch.full((1, 3, h, w), 0.5)
    if isinstance(trigger, WarpTrigger):  # a warp of a flat image is invisible: draw a grid
        base[..., ::4, :] = base[..., :, ::4] = 1.0
    row.insert(2 if isinstance(trigger, InvertedTrigger) else 0, trigger.apply(base)[0])
    gap = torch.ones(3, h, 1)
    tiles = [to_channels(tile.detach().float().cpu(), 3) for tile in row]
    strip = torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=2)
    raw = (strip * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    picture = Image.frombytes("RGB", (raw.shape[1], raw.shape[0]), bytes(raw.flatten().tolist()))
    scale = max(1, 128 // max(h, w))  # nearest upscaling keeps 32 px pixels visible
    picture = picture.resize(
        (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
    )
    write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))
