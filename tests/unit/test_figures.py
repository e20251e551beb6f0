from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger
from hubscan.figures import render_trigger_png as render_png
from hubscan.trigger_base import Trigger
from hubscan.triggers import parse_trigger
from tests.unit.test_triggers import batch, every_family

OWN_TILES = {InvertedTrigger: 2, AdditiveTrigger: 1, FlowTrigger: 1}  # the estimate's tensors


@pytest.mark.parametrize("with_images", [False, True])
def test_render_png_writes_a_valid_png_for_every_family(tmp_path: Path, with_images: bool) -> None:
    images = batch(n=6, c=1) if with_images else None
    for i, trigger in enumerate(every_family(tmp_path)):
        path = tmp_path / f"{i}.png"
        render_png(trigger, path, images=images, size=16)
        with Image.open(path) as picture:
            picture.load()
            tiles = 1 + (4 if with_images else 0) + OWN_TILES.get(type(trigger), 0)
            assert picture.format == "PNG"
            assert picture.mode == "RGB"
            assert picture.size == ((16 * tiles + tiles - 1) * 8, 16 * 8)
    assert not list(tmp_path.glob("*.tmp"))


def test_render_png_default_size_is_32_pixels_upscaled(tmp_path: Path) -> None:
    render_png(parse_trigger("sinusoid"), tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as picture:
        assert picture.size == (128, 128)


def _tiles(path: Path, count: int, side: int) -> list[torch.Tensor]:
    """The PNG's tiles back at their own resolution, as (3, side, side) floats in [0, 1]."""
    with Image.open(path) as picture:
        small = picture.resize((side * count + count - 1, side), Image.Resampling.NEAREST)
        data = torch.from_numpy(np.array(small.convert("RGB"))).float() / 255
    return [data[:, i * (side + 1) : i * (side + 1) + side].permute(2, 0, 1) for i in range(count)]


def test_an_additive_estimate_is_drawn_stretched_and_as_grey_plus_delta(tmp_path: Path) -> None:
    delta = torch.zeros(3, 16, 16)
    delta[:, :, :8] = 0.05  # left half a little brighter, right half a little darker
    delta[:, :, 8:] = -0.05
    render_png(AdditiveTrigger("in-memory", delta), tmp_path / "d.png")
    stretched, on_grey = _tiles(tmp_path / "d.png", 2, 16)
    assert torch.allclose(stretched[..., :8], torch.ones(3, 16, 8), atol=1 / 255)
    assert torch.allclose(stretched[..., 8:], torch.zeros(3, 16, 8), atol=1 / 255)
    assert torch.allclose(on_grey, 0.5 + delta, atol=1 / 255)


def test_a_flow_estimate_is_drawn_as_its_field_and_a_warped_grid(tmp_path: Path) -> None:
    flow = torch.zeros(2, 16, 16)
    flow[0] = 1.0  # everything samples one pixel to the right
    trigger: Trigger = FlowTrigger("in-memory", flow)
    render_png(trigger, tmp_path / "f.png", images=batch(n=2, c=1))
    field, grid, *stamped = _tiles(tmp_path / "f.png", 4, 16)
    assert len(stamped) == 2
    assert torch.allclose(field[0], torch.ones(16, 16), atol=1 / 255)  # x: the largest, in red
    assert torch.allclose(field[1:], torch.full((2, 16, 16), 0.5), atol=1 / 255)  # no y, no blue
    columns = grid[0, 1].gt(0.9).nonzero().flatten().tolist()  # the grid's lines (0, 4, 8, 12)
    assert columns == [3, 7, 11]  # move one pixel left; the border column repeats itself


def test_heatmap_is_a_png_with_a_cell_per_value_darker_for_larger(tmp_path: Path) -> None:
    from hubscan.figures import render_heatmap_png

    path = tmp_path / "xi.png"
    grid = [[0.0, 2.0], [1.0, 0.5]]
    render_heatmap_png(grid, (-1.0, 1.0), path, title="xi", rows="a_c", cols="a_t")
    picture = Image.open(path).convert("RGB")
    cell, left, upper = 56, 90, 60  # the renderer's layout
    white = picture.getpixel((left + 5, upper + 5))
    dark = picture.getpixel((left + cell + 5, upper + 5))
    assert white == (255, 255, 255)
    assert sum(dark) < sum(picture.getpixel((left + 5, upper + cell + 5))) < sum(white)
