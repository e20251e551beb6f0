"""Backdoor trigger families as parameterised, deterministic functions on image batches.

Owns the spec grammar (`family:key=value,...`), the five families (patch, blend, warp, sinusoid,
and the detector's estimates: mask+pattern, additive delta, flow field) and the estimate's
safetensors file, whose tensors say which estimate it holds (its PNG is drawn by figures.py).
Images are float tensors (N, C, H, W), C = 1 or 3, in [0, 1] pixel space *before* normalization;
`apply` returns a new tensor of the same shape and dtype, clamped to [0, 1]. Randomness comes only
from a torch.Generator seeded by the spec, so a spec and an input give bit-identical output.

Must not import open_clip or know about models, datasets or probe sets: the zoo, TBAR and the
detector all call this one implementation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hubscan.atomic import write_atomic
from hubscan.errors import TriggerError

POSITIONS = ("br", "bl", "tr", "tl", "center", "random")
_MAX_SEED = 2**63 - 1
_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_XY = re.compile(r"([0-9]{1,5})_([0-9]{1,5})")
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's "L" mode: colour -> grey


class Trigger(Protocol):
    """What every family offers; `spec` is canonical and round-trips through parse_trigger."""

    @property
    def spec(self) -> str: ...
    @property
    def family(self) -> str: ...
    def apply(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True, slots=True)
class Pattern:
    """A named pattern, or `file:PATH` with the image already loaded as (3, h, w) in [0, 1]."""

    name: str
    image: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def render(self, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
        """The pattern as a (channels, height, width) float32 tensor in [0, 1]."""
        rows, cols = torch.arange(height).view(-1, 1), torch.arange(width)
        if self.image is not None:
            return to_channels(resize(self.image[None], height, width)[0], channels)
        if self.name == "noise":  # colour noise for colour images, grey noise for grey ones
            gen = torch.Generator().manual_seed(seed)
            return torch.rand((channels, height, width), generator=gen)
        grey = {
            "white": torch.ones(height, width),
            "black": torch.zeros(height, width),
            "checker": (1 - (rows + cols) % 2).float().expand(height, width),
            "stripes": ((rows // 2) % 2).float().expand(height, width),  # 2 px bands, period 4
        }[self.name]
        return grey.expand(channels, height, width).clone()

    def __str__(self) -> str:  # how the pattern appears in a spec
        return self.name


class _Spec:
    """The canonical spec: every compared field in order; str(float) is exact, so it round-trips."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every subclass is a dataclass
    family: ClassVar[str]

    @property
    def spec(self) -> str:
        pairs = (f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.compare)
        return f"{self.family}:" + ",".join(pairs)


@dataclass(frozen=True, slots=True)
class PatchTrigger(_Spec):
    """BadNets: a size x size square at a corner (margin px in), the centre, X_Y or at random.

    `random` draws image i's place from Generator(seed): it depends on i's index in the batch.
    """

    size: int = 3
    pos: str = "br"
    pattern: Pattern = field(default_factory=lambda: Pattern("white"))
    margin: int = 1
    seed: int = 0
    family: ClassVar[str] = "patch"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        n, c, h, w = x.shape
        s = self.size
        stamp = self.pattern.render(c, s, s, self.seed).to(x)
        out = x.clone()
        for i, (top, left) in enumerate(self._corners(n, h, w)):
            out[i, :, top : top + s, left : left + s] = stamp
        return out.clamp_(0, 1)

    def _corners(self, n: int, h: int, w: int) -> list[tuple[int, int]]:
        s, m = self.size, self.margin
        need = s + (m if self.pos in ("br", "bl", "tr", "tl") else 0)
        if h < need or w < need:
            _fail(self.spec, f"a {h}x{w} image is smaller than size+margin = {need} pixels")
        if self.pos == "random":
            gen = torch.Generator().manual_seed(self.seed)
            u = torch.rand((n, 2), generator=gen, dtype=torch.float64)
            return [(int(a * (h - s + 1)), int(b * (w - s + 1))) for a, b in u.tolist()]
        xy = _XY.fullmatch(self.pos)
        if xy is not None:
            left, top = int(xy[1]), int(xy[2])
            if top + s > h or left + s > w:
                _fail(self.spec, f"a {s}x{s} patch at x={left}, y={top} leaves a {h}x{w} image")
            return [(top, left)] * n
        top = {"t": m, "b": h - m - s}.get(self.pos[0], (h - s) // 2)  # "center" falls through
        left = {"l": m, "r": w - m - s}.get(self.pos[1], (w - s) // 2)
        return [(top, left)] * n


@dataclass(frozen=True, slots=True)
class BlendTrigger(_Spec):
    """Blended: x' = (1 - ratio) * x + ratio * P, with P a full-image pattern."""

    pattern: Pattern = field(default_factory=lambda: Pattern("noise"))
    ratio: float = 0.15
    seed: int = 0
    family: ClassVar[str] = "blend"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        p = self.pattern.render(x.shape[1], x.shape[2], x.shape[3], self.seed).to(x)
        return ((1 - self.ratio) * x + self.ratio * p).clamp_(0, 1)


@dataclass(frozen=True, slots=True)
class WarpTrigger(_Spec):
    """WaNet (Nguyen & Tran, ICLR 2021): a grid x grid random field in [-1, 1], scaled to mean
    |.| = 1, upsampled bicubically to H x W, times strength / size, applied with grid_sample."""

    strength: float = 0.5
    grid: int = 4
    seed: int = 0
    family: ClassVar[str] = "warp"

    def flow(self, height: int, width: int) -> torch.Tensor:
        """The displacement in grid_sample units, (height, width, 2) with [..., 0] along x."""
        gen = torch.Generator().manual_seed(self.seed)
        field_ = torch.rand((1, 2, self.grid, self.grid), generator=gen) * 2 - 1
        field_ = field_ / field_.abs().mean()
        up = F.interpolate(field_, size=(height, width), mode="bicubic", align_corners=True)
        scale = torch.tensor([self.strength / width, self.strength / height])
        return up[0].permute(1, 2, 0) * scale

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        if self.strength == 0:  # grid_sample is not bit-exact at pixel centres
            return x.clone()
        n, _, h, w = x.shape
        gy, gx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        grid = (torch.stack((gx, gy), dim=-1) + self.flow(h, w)).clamp(-1, 1)
        grid = grid.to(x)[None].expand(n, h, w, 2)
        return F.grid_sample(x, grid, mode="bilinear", align_corners=True).clamp_(0, 1)


@dataclass(frozen=True, slots=True)
class SinusoidTrigger(_Spec):
    """SIG (Barni et al. 2019): x' = x + amplitude * sin(2 pi j frequency / W) for column j."""

    amplitude: float = 0.08
    frequency: float = 6.0
    family: ClassVar[str] = "sinusoid"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        w = x.shape[3]
        cols = torch.arange(w, dtype=torch.float64)
        wave = self.amplitude * torch.sin(2 * math.pi * cols * self.frequency / w)
        return (x + wave.to(x)).clamp_(0, 1)


@dataclass(frozen=True, slots=True)
class InvertedTrigger(_Spec):
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
class AdditiveTrigger(_Spec):
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
class FlowTrigger(_Spec):
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


def parse_trigger(spec: str) -> Trigger:
    """`family[:key=value,...]` -> a Trigger; any problem is one TriggerError line naming it."""
    family, _, rest = spec.strip().partition(":")
    opts = _Opts(spec, family.strip(), {})
    if opts.family not in _BUILDERS:
        opts.fail(f"unknown family {opts.family!r} (valid: {', '.join(_BUILDERS)})")
    cls, build = _BUILDERS[opts.family]
    keys = [f.name for f in fields(cls) if f.compare]
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not value:
            opts.fail(f"expected key=value, got {item!r}")
        if key not in keys:
            opts.fail(f"unknown key {key!r} for {opts.family} (valid: {', '.join(keys)})")
        if key in opts.values:
            opts.fail(f"key {key!r} given twice")
        opts.values[key] = value
    return build(opts)


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


@dataclass(slots=True)
class _Opts:
    """One spec being parsed: its raw values, and typed readers that fail with one line."""

    spec: str
    family: str
    values: dict[str, str]

    def fail(self, problem: str) -> NoReturn:
        _fail(self.spec, problem)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        raw = self.values.get(key, str(default))
        if not _INT.fullmatch(raw) or not lo <= int(raw) <= hi:
            self.fail(f"{key} must be an integer in {lo}..{hi}, got {raw!r}")
        return int(raw)

    def number(self, key: str, default: float, lo: float, hi: float, *, open_lo: bool) -> float:
        raw = self.values.get(key, repr(default))
        value = float(raw) if _FLOAT.fullmatch(raw) else math.nan
        if not (lo < value if open_lo else lo <= value) or not value <= hi:
            span = f"{'(' if open_lo else '['}{lo}, {hi}]"
            self.fail(f"{key} must be a number in {span}, got {raw!r}")
        return value

    def pattern(self, default: str, names: tuple[str, ...]) -> Pattern:
        raw = self.values.get("pattern", default)
        if raw.startswith("file:"):  # the image is read now, so a bad path fails at parse time
            return Pattern(raw, _load_image(self, raw.removeprefix("file:")))
        if raw not in names:
            self.fail(f"pattern must be one of {', '.join(names)}, file:PATH; got {raw!r}")
        return Pattern(raw)


def _build_patch(o: _Opts) -> PatchTrigger:
    pos = o.values.get("pos", "br")
    xy = _XY.fullmatch(pos)
    if pos not in POSITIONS and xy is None:
        o.fail(f"pos must be one of {', '.join(POSITIONS)} or X_Y pixel coordinates, got {pos!r}")
    pos = f"{int(xy[1])}_{int(xy[2])}" if xy else pos  # canonical: no leading zeros
    pattern = o.pattern("white", ("white", "black", "checker", "noise"))
    size, margin = o.integer("size", 3, 1, 1024), o.integer("margin", 1, 0, 1024)
    return PatchTrigger(size, pos, pattern, margin, o.integer("seed", 0, 0, _MAX_SEED))


def _build_blend(o: _Opts) -> BlendTrigger:
    pattern = o.pattern("noise", ("noise", "checker", "stripes"))
    ratio = o.number("ratio", 0.15, 0.0, 1.0, open_lo=True)
    return BlendTrigger(pattern, ratio, o.integer("seed", 0, 0, _MAX_SEED))


def _build_warp(o: _Opts) -> WarpTrigger:
    strength = o.number("strength", 0.5, 0.0, 16.0, open_lo=False)
    return WarpTrigger(strength, o.integer("grid", 4, 2, 64), o.integer("seed", 0, 0, _MAX_SEED))


def _build_sinusoid(o: _Opts) -> SinusoidTrigger:
    amplitude = o.number("amplitude", 0.08, 0.0, 1.0, open_lo=True)
    return SinusoidTrigger(amplitude, o.number("frequency", 6.0, 0.0, 512.0, open_lo=True))


def _build_inverted(o: _Opts) -> Estimate:
    file = o.values.get("file")
    if file is None:
        o.fail("inverted needs file=PATH (a safetensors file with mask+pattern, delta or flow)")
    return _read_estimate(file, o.spec)


def load_estimate(path: Path) -> Estimate:
    """A saved estimate (see save_estimate), read without a spec: any path works, even one with
    a comma, which a spec cannot hold. Problems are one TriggerError line, as in parse_trigger."""
    return _read_estimate(str(path), str(path))


def _read_estimate(file: str, source: str) -> Estimate:
    """The file's tensors pick the class: mask + pattern, delta, or flow (and nothing else)."""
    try:
        tensors = load_file(file)
    except (OSError, SafetensorError) as err:
        _fail(source, f"cannot read {file!r}: {' '.join(str(err).split())}")
    kinds = [kind for kind in _KINDS if set(kind) & set(tensors)]
    unknown = sorted(set(tensors) - {name for kind in _KINDS for name in kind})
    if len(kinds) != 1 or unknown:
        found = ", ".join(sorted(tensors)) or "none"
        _fail(source, f"expected tensors mask+pattern, delta or flow; the file holds {found}")
    if "delta" in tensors:
        return AdditiveTrigger(file, _valid_delta(source, tensors["delta"]))
    if "flow" in tensors:
        return FlowTrigger(file, _valid_flow(source, tensors["flow"]))
    return InvertedTrigger(file, *_validated(source, tensors))


_KINDS = (("mask", "pattern"), ("delta",), ("flow",))  # the tensors of each estimate file


_BUILDERS: dict[str, tuple[type[_Spec], Callable[[_Opts], Trigger]]] = {
    "patch": (PatchTrigger, _build_patch),
    "blend": (BlendTrigger, _build_blend),
    "warp": (WarpTrigger, _build_warp),
    "sinusoid": (SinusoidTrigger, _build_sinusoid),
    "inverted": (InvertedTrigger, _build_inverted),
}


def _validated(source: str, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (H, W), pattern (C, H, W)) as contiguous float32 CPU tensors, or a TriggerError."""
    for name in ("mask", "pattern"):
        t = tensors.get(name)
        if t is None:
            _fail(source, f"inverted trigger has no {name!r} tensor")
        if not t.is_floating_point():
            _fail(source, f"{name} must be a float tensor, got {t.dtype}")
        if t.numel() == 0 or not bool(((t >= 0) & (t <= 1)).all()):  # NaN fails both
            _fail(source, f"{name} values must lie in [0, 1]")
    mask, pattern = (tensors[k].detach().cpu().float().contiguous() for k in ("mask", "pattern"))
    mask = mask[0] if mask.dim() == 3 and mask.shape[0] == 1 else mask
    if mask.dim() != 2:
        _fail(source, f"mask must be (H, W) or (1, H, W), got shape {tuple(mask.shape)}")
    if pattern.dim() != 3 or pattern.shape[0] not in (1, 3):
        _fail(source, f"pattern must be (C, H, W) with C = 1 or 3, got {tuple(pattern.shape)}")
    if pattern.shape[1:] != mask.shape:
        _fail(source, f"mask {tuple(mask.shape)} and pattern {tuple(pattern.shape)} differ in H, W")
    return mask, pattern


def _valid_delta(source: str, delta: torch.Tensor) -> torch.Tensor:
    """delta (C, H, W), C = 1 or 3, float in [-1, 1], as a contiguous float32 CPU tensor."""
    if not delta.is_floating_point():
        _fail(source, f"delta must be a float tensor, got {delta.dtype}")
    if delta.numel() == 0 or not bool(((delta >= -1) & (delta <= 1)).all()):  # NaN fails both
        _fail(source, "delta values must lie in [-1, 1]")
    if delta.dim() != 3 or delta.shape[0] not in (1, 3):
        _fail(source, f"delta must be (C, H, W) with C = 1 or 3, got {tuple(delta.shape)}")
    return delta.detach().cpu().float().contiguous()


def _valid_flow(source: str, flow: torch.Tensor) -> torch.Tensor:
    """flow (2, H, W), finite float pixels, as a contiguous float32 CPU tensor."""
    if not flow.is_floating_point():
        _fail(source, f"flow must be a float tensor, got {flow.dtype}")
    if flow.dim() != 3 or flow.shape[0] != 2 or flow.numel() == 0:
        _fail(source, f"flow must be (2, H, W), got {tuple(flow.shape)}")
    if not bool(flow.isfinite().all()):
        _fail(source, "flow values must be finite")
    return flow.detach().cpu().float().contiguous()


def _load_image(opts: _Opts, path: str) -> torch.Tensor:
    """An image file as (3, h, w) float32 in [0, 1]; PIL's decompression-bomb guard applies."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        opts.fail(f"cannot read image {path!r}: {' '.join(str(err).split())}")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float() / 255


def check_images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        shape = f"{images.dtype} {tuple(images.shape)}"
        raise TriggerError(f"trigger input must be a float (N, C, H, W), C = 1 or 3; got {shape}")
    return images


def resize(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(batch.shape[-2:]) == (height, width):
        return batch
    # antialias: a large image or mask shrunk to a few pixels must not alias
    return F.interpolate(batch, size=(height, width), mode="bilinear", antialias=True)


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) -> (channels, H, W): grey repeats into colour, colour turns grey by luma."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1)
    return (image * _LUMA.to(image).view(3, 1, 1)).sum(0, keepdim=True)


def _fail(source: str, problem: str) -> NoReturn:
    raise TriggerError(f"invalid trigger {source!r}: {problem}")
