from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from hubscan import figures
from hubscan.figures import ALPHA_SIZE, CHOSEN, FLOOR, PALETTE, render_alpha_png
from hubscan.records import CoefTrial

COEFS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


def trials(coefs: tuple[float, ...] = COEFS, *, drop: float = 0.6) -> list[CoefTrial]:
    """Clean accuracy falls slowly and attack success fast as the coefficient grows."""
    return [
        CoefTrial(coef=c, clean_accuracy=0.9 - 0.1 * c, attack_success=max(0.0, 0.95 - drop * c))
        for c in coefs
    ]


def render(
    tmp_path: Path,
    name: str = "alpha.png",
    *,
    curves: list[tuple[str, list[CoefTrial]]] | None = None,
    floor: float | None = None,
    chosen: float | None = None,
) -> np.ndarray:
    if curves is None:
        curves = [("estimated", trials()), ("given", trials(drop=0.3))]
    path = tmp_path / name
    render_alpha_png(curves, path, title="TBAR coefficient trials", floor=floor, chosen=chosen)
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def count(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((pixels == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


def test_render_alpha_png_writes_a_900_by_560_rgb_png(tmp_path: Path) -> None:
    path = tmp_path / "out" / "alpha.png"
    render_alpha_png([("estimated", trials())], path, title="t")
    with Image.open(path) as picture:
        picture.load()
        assert picture.format == "PNG"
        assert picture.mode == "RGB"
        assert picture.size == ALPHA_SIZE == (900, 560)
    assert not list(path.parent.glob("*.tmp"))


def test_each_curve_is_drawn_in_its_own_palette_colour(tmp_path: Path) -> None:
    pixels = render(tmp_path)
    assert count(pixels, PALETTE[0]) > 500
    assert count(pixels, PALETTE[1]) > 500
    assert count(pixels, PALETTE[2]) == 0  # no third curve


def test_palette_has_eight_distinct_non_grey_colours() -> None:
    assert len(set(PALETTE)) == len(PALETTE) == 8
    assert all(len(set(colour)) > 1 for colour in PALETTE)  # never black, white or a grey


def test_more_curves_than_colours_cycle_through_the_palette(tmp_path: Path) -> None:
    curves = [(f"curve {i}", trials(drop=0.1 * (i + 1))) for i in range(len(PALETTE) + 1)]
    pixels = render(tmp_path, curves=curves)
    assert all(count(pixels, colour) > 100 for colour in PALETTE)


def test_floor_draws_a_grey_dashed_line(tmp_path: Path) -> None:
    plain = render(tmp_path, "plain.png")
    floored = render(tmp_path, "floor.png", floor=0.5)
    assert not np.array_equal(plain, floored)
    assert count(floored, FLOOR) > count(plain, FLOOR) + 200  # ~590 px wide, dashed


def test_chosen_draws_a_vertical_line(tmp_path: Path) -> None:
    plain = render(tmp_path, "plain.png")
    marked = render(tmp_path, "chosen.png", chosen=0.75)
    assert not np.array_equal(plain, marked)
    assert count(marked, CHOSEN) > count(plain, CHOSEN) + 300  # ~450 px tall
    columns = (marked == np.array(CHOSEN, dtype=np.uint8)).all(axis=2).sum(axis=0)
    assert columns.max() > 300  # one column holds the line


def test_unsorted_trials_draw_the_same_picture_as_sorted(tmp_path: Path) -> None:
    ordered = render(tmp_path, "sorted.png", curves=[("a", trials())])
    shuffled = [trials()[i] for i in (3, 0, 5, 1, 4, 2)]
    assert [t.coef for t in shuffled] != sorted(t.coef for t in shuffled)
    unsorted = render(tmp_path, "unsorted.png", curves=[("a", shuffled)])
    assert np.array_equal(ordered, unsorted)


def test_a_single_trial_at_coefficient_zero_still_draws(tmp_path: Path) -> None:
    pixels = render(tmp_path, curves=[("reference only", trials((0.0,)))])
    assert count(pixels, PALETTE[0]) > 20  # its dots


@pytest.mark.parametrize(
    "curves",
    [[], [("empty", [])], [("full", trials()), ("empty", [])]],
    ids=["no-curves", "one-empty-curve", "second-curve-empty"],
)
def test_no_curves_or_a_curve_without_trials_raise_value_error(
    tmp_path: Path, curves: list[tuple[str, list[CoefTrial]]]
) -> None:
    with pytest.raises(ValueError):
        render_alpha_png(curves, tmp_path / "alpha.png", title="t")
    assert not (tmp_path / "alpha.png").exists()


def test_title_is_drawn(tmp_path: Path) -> None:
    curves = [("a", trials())]
    render_alpha_png(curves, tmp_path / "a.png", title="one title")
    render_alpha_png(curves, tmp_path / "b.png", title="another, longer title")
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_a_font_without_alpha_or_non_latin_glyphs_still_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's bitmap font (the fallback before Pillow 10.1) is latin-1 only: α, — and other
    non-latin-1 text are drawn in ASCII instead of failing."""
    monkeypatch.setattr(figures, "_font", ImageFont.load_default_imagefont)
    pixels = render(
        tmp_path, curves=[("blend \N{EM DASH} \N{GREEK CAPITAL LETTER OMEGA}", trials())]
    )
    assert count(pixels, PALETTE[0]) > 500
