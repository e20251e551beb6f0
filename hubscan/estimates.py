"""The detector's trigger estimates: mask + pattern, additive delta and flow field, and the
safetensors file that carries one from the audit to the patch step.

Owns the three estimate kinds (differentiable in their tensors when built in memory), writing
them atomically and reading them back with every tensor validated; `inverted:file=PATH` in a
trigger spec reads through here. Must not know models, probes or how estimates are found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hubscan.atomic import write_atomic
from hubscan.trigger_base import Spec, Trigger, check_images, fail, resize, to_channels


@dataclass(frozen=True, slots=True)
class InvertedTrigger(Spec):
    """The detector's estimate: x' = (1 - m) * x + m * p; m (H, W), p (C, H, W) from `file`.

    Built directly from tensors (during inversion), `apply` is differentiable in m and p.
    """

    file: str
    mask: torch.Tensor = field(compare=False, repr=False)
    pattern: torch.Tensor = field(compare=False, repr=False)
    family: ClassVar[str] = "inverted"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        _, c, h, w = x.shape
        m = resize(self.mask[None, None], h, w)[0].to(x)
        p = to_channels(resize(self.pattern[None], h, w)[0], c).to(x)
        return ((1 - m) * x + m * p).clamp_(0, 1)


@dataclass(frozen=True, slots=True)
class AdditiveTrigger(Spec):
    """The detector's global estimate: x' = x + delta; delta (C, H, W) in [-1, 1] from `file`."""

    file: str
    delta: torch.Tensor = field(compare=False, repr=False)
    family: ClassVar[str] = "inverted"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        _, c, h, w = x.shape
        delta = to_channels(resize(self.delta[None], h, w)[0], c).to(x)
        return (x + delta).clamp_(0, 1)


@dataclass(frozen=True, slots=True)
class FlowTrigger(Spec):
    """The detector's warp estimate: a displacement field flow (2, H, W) in pixels ([0] along x)
    from `file`, applied like WarpTrigger."""

    file: str
    flow: torch.Tensor = field(compare=False, repr=False)
    family: ClassVar[str] = "inverted"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        n, _, h, w = x.shape
        fh, fw = self.flow.shape[-2:]
        # Resizing a displacement field rescales its vectors with the image.
        scale = torch.tensor([w / fw, h / fh]).view(1, 2, 1, 1)
        flow = resize(self.flow[None], h, w) * scale
        return warp_by(x, flow.to(x).expand(n, 2, h, w)).clamp_(0, 1)


Estimate = InvertedTrigger | AdditiveTrigger | FlowTrigger  # what the detector estimates


def warp_by(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample each image (N, C, H, W) displaced by its flow (N, 2, H, W), in pixels."""
    _, _, h, w = images.shape
    gy, gx = torch.meshgrid(
        torch.linspace(-1, 1, h, device=images.device),
        torch.linspace(-1, 1, w, device=images.device),
        indexing="ij",
    )
    units = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=images.device)
    grid = torch.stack((gx, gy), dim=-1)[None] + flow.permute(0, 2, 3, 1) * units
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def save_inverted(path: Path, mask: torch.Tensor, pattern: torch.Tensor) -> None:
    """Write an inverted trigger (mask (H, W) or (1, H, W), pattern (C, H, W)) atomically."""
    m, p = _validated(str(path), {"mask": mask, "pattern": pattern})
    write_atomic(path, lambda tmp: save_file({"mask": m, "pattern": p}, str(tmp)))


def save_estimate(path: Path, trigger: Trigger) -> None:
    """Write a detector's estimate atomically as safetensors: {mask, pattern} for an
    InvertedTrigger, {delta} for an AdditiveTrigger, {flow} for a FlowTrigger. The tensors are
    validated as `parse_trigger("inverted:file=PATH")` reads them; a bad one writes nothing.
    A spec family (patch, blend, ...) has no tensors to save: TypeError, as for any bug."""
    if isinstance(trigger, InvertedTrigger):
        save_inverted(path, trigger.mask, trigger.pattern)
        return
    if isinstance(trigger, AdditiveTrigger):
        tensors = {"delta": _valid_delta(str(path), trigger.delta)}
    elif isinstance(trigger, FlowTrigger):
        tensors = {"flow": _valid_flow(str(path), trigger.flow)}
    else:
        raise TypeError(f"{trigger.spec} is not a detector estimate; save its spec instead")
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)))


def load_estimate(path: Path) -> Estimate:
    """A saved estimate (see save_estimate), read without a spec: any path works, even one with
    a comma, which a spec cannot hold. Problems are one TriggerError line, as in parse_trigger."""
    return read_estimate(str(path), str(path))


def read_estimate(file: str, source: str) -> Estimate:
    """The file's tensors pick the class: mask + pattern, delta, or flow (and nothing else)."""
    try:
        tensors = load_file(file)
    except (OSError, SafetensorError) as err:
        fail(source, f"cannot read {file!r}: {' '.join(str(err).split())}")
    kinds = [kind for kind in _KINDS if set(kind) & set(tensors)]
    unknown = sorted(set(tensors) - {name for kind in _KINDS for name in kind})
    if len(kinds) != 1 or unknown:
        found = ", ".join(sorted(tensors)) or "none"
        fail(source, f"expected tensors mask+pattern, delta or flow; the file holds {found}")
    if "delta" in tensors:
        return AdditiveTrigger(file, _valid_delta(source, tensors["delta"]))
    if "flow" in tensors:
        return FlowTrigger(file, _valid_flow(source, tensors["flow"]))
    return InvertedTrigger(file, *_validated(source, tensors))


_KINDS = (("mask", "pattern"), ("delta",), ("flow",))  # the tensors of each estimate file


def _validated(source: str, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (H, W), pattern (C, H, W)) as contiguous float32 CPU tensors, or a TriggerError."""
    for name in ("mask", "pattern"):
        t = tensors.get(name)
        if t is None:
            fail(source, f"inverted trigger has no {name!r} tensor")
        if not t.is_floating_point():
            fail(source, f"{name} must be a float tensor, got {t.dtype}")
        if t.numel() == 0 or not bool(((t >= 0) & (t <= 1)).all()):  # NaN fails both
            fail(source, f"{name} values must lie in [0, 1]")
    mask, pattern = (tensors[k].detach().cpu().float().contiguous() for k in ("mask", "pattern"))
    mask = mask[0] if mask.dim() == 3 and mask.shape[0] == 1 else mask
    if mask.dim() != 2:
        fail(source, f"mask must be (H, W) or (1, H, W), got shape {tuple(mask.shape)}")
    if pattern.dim() != 3 or pattern.shape[0] not in (1, 3):
        fail(source, f"pattern must be (C, H, W) with C = 1 or 3, got {tuple(pattern.shape)}")
    if pattern.shape[1:] != mask.shape:
        fail(source, f"mask {tuple(mask.shape)} and pattern {tuple(pattern.shape)} differ in H, W")
    return mask, pattern


def _valid_delta(source: str, delta: torch.Tensor) -> torch.Tensor:
    """delta (C, H, W), C = 1 or 3, float in [-1, 1], as a contiguous float32 CPU tensor."""
    if not delta.is_floating_point():
        fail(source, f"delta must be a float tensor, got {delta.dtype}")
    if delta.numel() == 0 or not bool(((delta >= -1) & (delta <= 1)).all()):  # NaN fails both
        fail(source, "delta values must lie in [-1, 1]")
    if delta.dim() != 3 or delta.shape[0] not in (1, 3):
        fail(source, f"delta must be (C, H, W) with C = 1 or 3, got {tuple(delta.shape)}")
    return delta.detach().cpu().float().contiguous()


def _valid_flow(source: str, flow: torch.Tensor) -> torch.Tensor:
    """flow (2, H, W), finite float pixels, as a contiguous float32 CPU tensor."""
    if not flow.is_floating_point():
        fail(source, f"flow must be a float tensor, got {flow.dtype}")
    if flow.dim() != 3 or flow.shape[0] != 2 or flow.numel() == 0:
        fail(source, f"flow must be (2, H, W), got {tuple(flow.shape)}")
    if not bool(flow.isfinite().all()):
        fail(source, "flow values must be finite")
    return flow.detach().cpu().float().contiguous()
