"""Backdoor trigger families as parameterised, deterministic functions on image batches.

Owns the spec grammar (`family:key=value,...`) and the four attack families (patch, blend, warp,
sinusoid); `inverted:file=PATH` reads a detector's estimate through estimates.py (PNGs are drawn
by figures.py).
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
from dataclasses import dataclass, field, fields
from typing import ClassVar, NoReturn

import torch
import torch.nn.functional as F
from PIL import Image

from hubscan.estimates import Estimate, InvertedTrigger, read_estimate
from hubscan.trigger_base import Spec, Trigger, check_images, fail, resize, to_channels

POSITIONS = ("br", "bl", "tr", "tl", "center", "random")
_MAX_SEED = 2**63 - 1
_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_XY = re.compile(r"([0-9]{1,5})_([0-9]{1,5})")


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


@dataclass(frozen=True, slots=True)
class PatchTrigger(Spec):
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
            fail(self.spec, f"a {h}x{w} image is smaller than size+margin = {need} pixels")
        if self.pos == "random":
            gen = torch.Generator().manual_seed(self.seed)
            u = torch.rand((n, 2), generator=gen, dtype=torch.float64)
            return [(int(a * (h - s + 1)), int(b * (w - s + 1))) for a, b in u.tolist()]
        xy = _XY.fullmatch(self.pos)
        if xy is not None:
            left, top = int(xy[1]), int(xy[2])
            if top + s > h or left + s > w:
                fail(self.spec, f"a {s}x{s} patch at x={left}, y={top} leaves a {h}x{w} image")
            return [(top, left)] * n
        top = {"t": m, "b": h - m - s}.get(self.pos[0], (h - s) // 2)  # "center" falls through
        left = {"l": m, "r": w - m - s}.get(self.pos[1], (w - s) // 2)
        return [(top, left)] * n


@dataclass(frozen=True, slots=True)
class BlendTrigger(Spec):
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
class WarpTrigger(Spec):
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
class SinusoidTrigger(Spec):
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


@dataclass(slots=True)
class _Opts:
    """One spec being parsed: its raw values, and typed readers that fail with one line."""

    spec: str
    family: str
    values: dict[str, str]

    def fail(self, problem: str) -> NoReturn:
        fail(self.spec, problem)

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
    return read_estimate(file, o.spec)


_BUILDERS: dict[str, tuple[type[Spec], Callable[[_Opts], Trigger]]] = {
    "patch": (PatchTrigger, _build_patch),
    "blend": (BlendTrigger, _build_blend),
    "warp": (WarpTrigger, _build_warp),
    "sinusoid": (SinusoidTrigger, _build_sinusoid),
    "inverted": (InvertedTrigger, _build_inverted),
}


def _load_image(opts: _Opts, path: str) -> torch.Tensor:
    """An image file as (3, h, w) float32 in [0, 1]; PIL's decompression-bomb guard applies."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        opts.fail(f"cannot read image {path!r}: {' '.join(str(err).split())}")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float() / 255
