from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hubscan.figures import render_trigger_png as render_png
from hubscan.triggers import parse_trigger
from tests.unit.test_triggers import batch, every_family


@pytest.mark.parametrize("with_images", [False, True])
def test_render_png_writes_a_valid_png_for_every_family(tmp_path: Path, with_images: bool) -> None:
    images = batch(n=6, c=1) if with_images else None
    for i, trigger in enumerate(every_family(tmp_path)):
        path = tmp_path / f"{i}.png"
        render_png(trigger, path, images=images, size=16)
        with Image.open(path) as picture:
            picture.load()
            tiles = 1 + (4 if with_images else 0) + (2 if trigger.family == "inverted" else 0)
            assert picture.format == "PNG"
            assert picture.mode == "RGB"
            assert picture.size == ((16 * tiles + tiles - 1) * 8, 16 * 8)
    assert not list(tmp_path.glob("*.tmp"))


def test_render_png_default_size_is_32_pixels_upscaled(tmp_path: Path) -> None:
    render_png(parse_trigger("sinusoid"), tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as picture:
        assert picture.size == (128, 128)
