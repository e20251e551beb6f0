"""PNG figures: triggers (and later the alpha curves) drawn for people and model cards.

Owns turning tensors into pictures. Must not compute results: it draws what it is given.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from hubscan.atomic import write_atomic
from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger
from hubscan.trigger_base import Trigger, check_images, resize, to_channels
from hubscan.triggers import WarpTrigger


def render_trigger_png(
    trigger: Trigger, path: Path, *, images: torch.Tensor | None = None, size: int = 32
) -> None:
    """One PNG row: the trigger's own tensors (an estimate's mask and pattern, its delta or its
    flow, amplified to be seen), the trigger on a base image, then up to 4 stamped images."""
    row = [] if images is None else list(trigger.apply(check_images(images)[:4]).float().cpu())
    h, w = row[0].shape[1:] if row else _native_size(trigger, size)
    base = torch.full((1, 3, h, w), 0.5)
    if isinstance(trigger, WarpTrigger | FlowTrigger):  # a warp of a flat image is invisible
        base[..., ::4, :] = base[..., :, ::4] = 1.0
    own = _own_tiles(trigger, h, w)
    row[:0] = [*own, trigger.apply(base)[0]]
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


def _native_size(trigger: Trigger, size: int) -> tuple[int, int]:
    """An estimate is drawn at the resolution it was found at; a spec family at `size`."""
    if isinstance(trigger, InvertedTrigger):
        return int(trigger.mask.shape[0]), int(trigger.mask.shape[1])
    if isinstance(trigger, AdditiveTrigger):
        return int(trigger.delta.shape[1]), int(trigger.delta.shape[2])
    if isinstance(trigger, FlowTrigger):
        return int(trigger.flow.shape[1]), int(trigger.flow.shape[2])
    return size, size


def _own_tiles(trigger: Trigger, h: int, w: int) -> list[torch.Tensor]:
    """An estimate's tensors as (C, h, w) tiles in [0, 1]: mask and pattern as they are; a delta
    and a flow (x in red, y in green) around grey 0.5, stretched so the largest value reaches
    the end of the range (they are small by construction and would look flat otherwise)."""
    if isinstance(trigger, InvertedTrigger):
        mask, pattern = trigger.mask[None, None], trigger.pattern[None]
        return [resize(mask, h, w)[0], resize(pattern, h, w)[0]]
    if isinstance(trigger, AdditiveTrigger):
        return [_around_grey(resize(trigger.delta[None], h, w)[0])]
    if isinstance(trigger, FlowTrigger):
        flow = _around_grey(resize(trigger.flow[None], h, w)[0])
        return [torch.cat((flow, torch.full((1, h, w), 0.5)))]
    return []


def _around_grey(signed: torch.Tensor) -> torch.Tensor:
    peak = float(signed.detach().abs().max())
    return (0.5 + signed.detach().cpu().float() * (0.5 / peak if peak > 0 else 0.0)).clamp(0, 1)
