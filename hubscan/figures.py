"""PNG figures: triggers and TBAR's alpha curves, drawn for people and model cards.

Owns turning tensors and trials into pictures (PIL only). Must not compute results: it draws
what it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from hubscan.atomic import write_atomic
from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger
from hubscan.records import CoefTrial
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


RGB = tuple[int, int, int]
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont
Point = tuple[float, float]

# Curve colours, cycling (Tableau 10 without its grey and olive): none is the ink, the grid or
# the floor's grey, so a curve's pixels can be told apart.
PALETTE: tuple[RGB, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
)
INK: RGB = (0, 0, 0)
GRID: RGB = (225, 225, 225)
FLOOR: RGB = (150, 150, 150)
CHOSEN: RGB = (80, 80, 80)
ALPHA_SIZE = (900, 560)
ALPHA, EM_DASH = "\N{GREEK SMALL LETTER ALPHA}", "\N{EM DASH}"
# How a character the font has no glyph for is drawn (anything else as "?").
_ASCII = {ALPHA: "alpha", EM_DASH: "-", "\N{EN DASH}": "-"}
_PLOT = (70, 50, 660, 500)  # left, top, right, bottom of the axes box; the legend is right of it


def render_alpha_png(
    curves: Sequence[tuple[str, Sequence[CoefTrial]]],
    path: Path,
    *,
    title: str,
    floor: float | None = None,
    chosen: float | None = None,
) -> None:
    """TBAR's coefficient trials as curves, one colour per named curve (PALETTE, cycling):
    clean accuracy solid, attack success dashed, a dot at each trial. x runs from 0 to the
    largest coefficient, y from 0 to 1; `floor` (an accuracy) is a dashed grey line and
    `chosen` (a coefficient) a vertical line. Empty `curves` or an empty curve is a caller bug."""
    if not curves or any(not trials for _, trials in curves):
        raise ValueError("render_alpha_png needs at least one curve, each with trials")
    top = max(trial.coef for _, trials in curves for trial in trials)
    x_max = top if top > 0 else 1.0
    left, upper, right, lower = _PLOT

    def at(coef: float, share: float) -> Point:
        return left + (right - left) * coef / x_max, lower - (lower - upper) * share

    picture = Image.new("RGB", ALPHA_SIZE, "white")
    draw = ImageDraw.Draw(picture)
    font = _font()
    _axes(draw, font, at, x_max, x_title=f"coefficient {ALPHA}")
    if floor is not None:
        _dashed(draw, [at(0, floor), at(x_max, floor)], FLOOR, width=1)
    if chosen is not None:
        draw.line([at(chosen, 0), at(chosen, 1)], fill=CHOSEN, width=1)
    for i, (_, trials) in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        ordered = sorted(trials, key=lambda trial: trial.coef)
        clean = [at(t.coef, t.clean_accuracy) for t in ordered]
        attack = [at(t.coef, t.attack_success) for t in ordered]
        draw.line(clean, fill=colour, width=2, joint="curve")
        _dashed(draw, attack, colour, width=2)
        for x, y in clean + attack:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    _label(draw, font, (ALPHA_SIZE[0] / 2, upper / 2), title)
    entries: list[tuple[str, RGB, bool]] = [
        (name, PALETTE[i % len(PALETTE)], False) for i, (name, _) in enumerate(curves)
    ]
    entries += [(f"clean accuracy {EM_DASH} solid", INK, False)]
    entries += [(f"attack success {EM_DASH} dashed", INK, True)]
    if floor is not None:
        entries.append((f"clean-accuracy floor {floor:g}", FLOOR, True))
    if chosen is not None:
        entries.append((f"chosen {ALPHA} = {chosen:g}", CHOSEN, False))
    _legend(draw, font, (right + 20, upper), entries)
    write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))


def _font(size: int = 14) -> Font:
    """Pillow's own font at a readable size; the small bitmap one on a Pillow before 10.1."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _drawable(font: Font, text: str) -> str:
    """`text` with each character `font` has no glyph for spelt in ASCII (Pillow's own font has
    no alpha and no em dash; its bitmap font on an old Pillow is latin-1 only)."""
    return "".join(
        char if char.isascii() or _has_glyph(font, char) else _ASCII.get(char, "?") for char in text
    )


def _has_glyph(font: Font, char: str) -> bool:
    """A missing glyph draws the same box as a code point that no font has."""
    try:
        mask, missing = font.getmask(char), font.getmask("\U0010ffff")
    except UnicodeEncodeError:
        return False
    return mask.size != missing.size or bytes(mask) != bytes(missing)


def _axes(
    draw: ImageDraw.ImageDraw,
    font: Font,
    at: Callable[[float, float], Point],
    x_max: float,
    *,
    x_title: str,
) -> None:
    """Grid, frame, tick labels and axis titles; y is a share, 0 to 1 in quarters."""
    left, upper, right, lower = _PLOT
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = at(0, share)
        draw.line([(x, y), at(x_max, share)], fill=GRID)
        _label(draw, font, (x - 6, y), f"{share:g}", anchor=(1.0, 0.5))
    for coef in _nice_ticks(x_max):
        x, y = at(coef, 0)
        draw.line([(x, y), (x, y + 5)], fill=INK)
        _label(draw, font, (x, y + 8), f"{coef:g}", anchor=(0.5, 0.0))
    draw.rectangle((left, upper, right, lower), outline=INK)
    _label(draw, font, ((left + right) / 2, lower + 32), x_title, anchor=(0.5, 0.0))
    _label(draw, font, (left, upper - 8), "share", anchor=(0.5, 1.0))


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    """About `count` ticks from 0 to at most `top`, a step of 1, 2, 2.5 or 5 times a power of 10."""
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _legend(
    draw: ImageDraw.ImageDraw, font: Font, origin: Point, entries: list[tuple[str, RGB, bool]]
) -> None:
    """One row per entry: a short line sample (dashed or solid) in its colour, then its text."""
    x, y = origin
    for text, colour, dashed in entries:
        sample = [(x, y + 8), (x + 28, y + 8)]
        if dashed:
            _dashed(draw, sample, colour, width=2)
        else:
            draw.line(sample, fill=colour, width=2)
        _label(draw, font, (x + 36, y + 8), text, anchor=(0.0, 0.5))
        y += 22


def _label(
    draw: ImageDraw.ImageDraw,
    font: Font,
    xy: Point,
    text: str,
    *,
    anchor: tuple[float, float] = (0.5, 0.5),
) -> None:
    """Text placed so that the point `anchor` (fractions of its box) of its box lies at `xy`;
    done by hand, as the bitmap font takes no anchor."""
    text = _drawable(font, text)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    x = xy[0] - x0 - (x1 - x0) * anchor[0]
    y = xy[1] - y0 - (y1 - y0) * anchor[1]
    draw.text((x, y), text, font=font, fill=INK)


def _dashed(
    draw: ImageDraw.ImageDraw,
    points: Sequence[Point],
    fill: RGB,
    *,
    width: int,
    on: float = 8.0,
    off: float = 5.0,
) -> None:
    """A dashed polyline; the dash pattern runs on across corners."""
    phase = 0.0  # how far into the current dash-and-gap period
    for (xa, ya), (xb, yb) in pairwise(points):
        length = math.hypot(xb - xa, yb - ya)
        done = 0.0
        while done < length:
            step = min((on if phase < on else on + off) - phase, length - done)
            if phase < on:
                a, b = done / length, (done + step) / length
                start = (xa + (xb - xa) * a, ya + (yb - ya) * a)
                draw.line([start, (xa + (xb - xa) * b, ya + (yb - ya) * b)], fill=fill, width=width)
            done += step
            phase = (phase + step) % (on + off)


def render_heatmap_png(
    grid: Sequence[Sequence[float]],
    coefs: Sequence[float],
    path: Path,
    *,
    title: str,
    rows: str,
    cols: str,
    top: float = 2.0,
) -> None:
    """A square grid of values in [0, top] (white 0 → dark red `top`), each cell labelled, rows
    named by `rows` (coefs, top to bottom) and columns by `cols` (coefs, left to right)."""
    cell, left, upper = 56, 90, 60
    n = len(coefs)
    picture = Image.new("RGB", (left + n * cell + 30, upper + n * cell + 70), (255, 255, 255))
    draw, font = ImageDraw.Draw(picture), _font()
    _label(draw, font, (picture.width / 2, 24), title)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            t = min(max(value / top, 0.0), 1.0)
            fill = (255 - round(75 * t), round(255 * (1 - t)), round(255 * (1 - t)))
            box = (left + j * cell, upper + i * cell, left + (j + 1) * cell, upper + (i + 1) * cell)
            draw.rectangle(box, fill=fill, outline=(200, 200, 200))
            _label(draw, font, (box[0] + cell / 2, box[1] + cell / 2), f"{value:.2f}")
    for k, coef in enumerate(coefs):
        _label(draw, font, (left - 10, upper + k * cell + cell / 2), f"{coef:g}", anchor=(1, 0.5))
        _label(draw, font, (left + k * cell + cell / 2, upper + n * cell + 14), f"{coef:g}")
    _label(draw, font, (left + n * cell / 2, upper + n * cell + 44), cols)
    _label(draw, font, (12, upper - 16), rows, anchor=(0, 0.5))
    write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))
