"""The trigger shapes the detector searches over: how each is parametrized, stamped onto images
and kept within its budget (patch: mask area; blend: L-inf; warp: mean flow displacement), and
how one candidate becomes an estimated Trigger.

Each shape stamps a batch of K candidates at once (params have a leading K dimension) and is
projected onto its budget inside `stamp`, so no optimizer step can leave it. Must not optimize
(search.py) or judge (invert.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger, warp_by
from hubscan.policy import DetectionPolicy
from hubscan.trigger_base import Trigger

WARP_GRID = 5  # control points per side of the flow field: smooth, like WaNet's


class Shape(Protocol):
    """K candidate triggers of one kind, each within the same budget."""

    def params(
        self, k: int, c: int, h: int, w: int, gen: torch.Generator
    ) -> list[torch.Tensor]: ...
    def stamp(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor: ...
    def trigger(self, params: list[torch.Tensor], i: int, h: int, w: int) -> Trigger: ...
    def scaled(self, factor: float) -> Shape: ...


@dataclass(frozen=True, slots=True)
class Patch:
    """x' = (1 - m) x + m p, with mean(m) <= area (m is scaled down when it grows larger)."""

    area: float

    def params(self, k: int, c: int, h: int, w: int, gen: torch.Generator) -> list[torch.Tensor]:
        mask = torch.randn((k, 1, h, w), generator=gen) * 0.5 - 2.0
        return [mask, torch.randn((k, c, h, w), generator=gen)]

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(logits)
        return m * (self.area / m.mean(dim=(1, 2, 3), keepdim=True)).clamp(max=1.0)

    def stamp(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        m, p = self._mask(params[0])[:, None], torch.sigmoid(params[1])[:, None]
        return ((1 - m) * x[None] + m * p).flatten(0, 1)

    def trigger(self, params: list[torch.Tensor], i: int, h: int, w: int) -> Trigger:
        mask = self._mask(params[0][i : i + 1])[0, 0].detach()
        return InvertedTrigger("in-memory", mask, torch.sigmoid(params[1][i]).detach())

    def scaled(self, factor: float) -> Patch:
        return Patch(self.area * factor)


@dataclass(frozen=True, slots=True)
class Blend:
    """x' = x + delta with |delta| <= linf everywhere: blended and sinusoid triggers fit inside."""

    linf: float

    def params(self, k: int, c: int, h: int, w: int, gen: torch.Generator) -> list[torch.Tensor]:
        return [torch.randn((k, c, h, w), generator=gen) * 0.01]

    def stamp(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        delta = self.linf * torch.tanh(params[0])
        return (x[None] + delta[:, None]).clamp(0, 1).flatten(0, 1)

    def trigger(self, params: list[torch.Tensor], i: int, h: int, w: int) -> Trigger:
        return AdditiveTrigger("in-memory", (self.linf * torch.tanh(params[0][i])).detach())

    def scaled(self, factor: float) -> Blend:
        return Blend(self.linf * factor)


@dataclass(frozen=True, slots=True)
class Warp:
    """A smooth flow field (bicubic from a coarse grid), mean displacement <= pixels."""

    pixels: float

    def params(self, k: int, c: int, h: int, w: int, gen: torch.Generator) -> list[torch.Tensor]:
        return [torch.randn((k, 2, WARP_GRID, WARP_GRID), generator=gen) * 0.1]

    def _flow(self, coarse: torch.Tensor, h: int, w: int) -> torch.Tensor:
        up = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        mean = up.abs().mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
        return up * (self.pixels / mean).clamp(max=1.0)  # (k, 2, h, w) in pixels

    def stamp(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        k, (n, c, h, w) = params[0].shape[0], x.shape
        flow = self._flow(params[0], h, w).repeat_interleave(n, dim=0)
        return warp_by(x[None].expand(k, n, c, h, w).flatten(0, 1), flow)

    def trigger(self, params: list[torch.Tensor], i: int, h: int, w: int) -> Trigger:
        return FlowTrigger("in-memory", self._flow(params[0][i : i + 1], h, w)[0].detach())

    def scaled(self, factor: float) -> Warp:
        return Warp(self.pixels * factor)


def shape_of(family: str, policy: DetectionPolicy) -> Shape:
    if family == "patch":
        return Patch(policy.patch_area)
    if family == "blend":
        return Blend(policy.blend_linf)
    return Warp(policy.warp_pixels)
