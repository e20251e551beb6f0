from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import hubscan.triggers
from hubscan.errors import ExitCode, TriggerError
from hubscan.estimates import (
    AdditiveTrigger,
    Estimate,
    FlowTrigger,
    InvertedTrigger,
    load_estimate,
    save_estimate,
    save_inverted,
    warp_by,
)
from hubscan.trigger_base import Trigger
from hubscan.triggers import WarpTrigger, parse_trigger

BARE = {
    "patch": "patch:size=3,pos=br,pattern=white,margin=1,seed=0",
    "blend": "blend:pattern=noise,ratio=0.15,seed=0",
    "warp": "warp:strength=0.5,grid=4,seed=0",
    "sinusoid": "sinusoid:amplitude=0.08,frequency=6.0",
}


def batch(n: int = 4, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


def inverted_file(
    tmp_path: Path, *, size: int = 16, channels: int = 3, name: str = "t.safetensors"
) -> Path:
    gen = torch.Generator().manual_seed(1)
    path = tmp_path / name
    mask = torch.rand((size, size), generator=gen)
    save_inverted(path, mask, torch.rand((channels, size, size), generator=gen))
    return path


def estimate_files(tmp_path: Path, *, size: int = 16) -> list[Path]:
    """A saved additive (delta) and flow estimate, as the detector writes them."""
    gen = torch.Generator().manual_seed(3)
    estimates: dict[str, Estimate] = {
        "delta": AdditiveTrigger(
            "in-memory", torch.rand((3, size, size), generator=gen) * 0.4 - 0.2
        ),
        "flow": FlowTrigger("in-memory", torch.randn((2, size, size), generator=gen)),
    }
    for name, trigger in estimates.items():
        save_estimate(tmp_path / f"{name}.safetensors", trigger)
    return [tmp_path / f"{name}.safetensors" for name in estimates]


def png(tmp_path: Path, colour: tuple[int, int, int], name: str = "p.png") -> Path:
    path = tmp_path / name
    Image.new("RGB", (7, 5), colour).save(path)
    return path


def every_family(tmp_path: Path) -> list[Trigger]:
    files = [inverted_file(tmp_path), *estimate_files(tmp_path)]
    specs = [*BARE.values(), *(f"inverted:file={file}" for file in files)]
    return [parse_trigger(spec) for spec in specs]


@pytest.mark.parametrize(("family", "canonical"), BARE.items())
def test_a_bare_family_name_gets_every_default_in_its_canonical_spec(
    family: str, canonical: str
) -> None:
    trigger = parse_trigger(family)
    assert trigger.spec == canonical
    assert trigger.family == family


@pytest.mark.parametrize(
    "spec",
    [
        "patch:size=5,pos=tl,pattern=checker,margin=0,seed=7",
        "patch:size=2,pos=4_20,pattern=noise,margin=1,seed=3",
        "patch:size=3,pos=random,pattern=black,margin=1,seed=123",
        "patch:size=3,pos=center,pattern=white,margin=2,seed=0",
        "blend:pattern=stripes,ratio=0.2,seed=0",
        "blend:pattern=checker,ratio=1.0,seed=9",
        "warp:strength=1.25,grid=8,seed=4",
        "warp:strength=0.0,grid=2,seed=0",
        "sinusoid:amplitude=0.05,frequency=3.5",
    ],
)
def test_canonical_specs_round_trip_through_parse_trigger(spec: str) -> None:
    trigger = parse_trigger(spec)
    assert trigger.spec == spec
    assert parse_trigger(trigger.spec) == trigger


def test_specs_are_canonicalised_key_order_spacing_and_number_form() -> None:
    trigger = parse_trigger(" patch : seed=2 , pos=04_007, size=4 ")
    assert trigger.spec == "patch:size=4,pos=4_7,pattern=white,margin=1,seed=2"
    assert parse_trigger("sinusoid:frequency=6,amplitude=.1").spec == (
        "sinusoid:amplitude=0.1,frequency=6.0"
    )


def test_file_specs_round_trip(tmp_path: Path) -> None:
    image = png(tmp_path, (255, 0, 0))
    for spec in [
        f"patch:size=3,pos=br,pattern=file:{image},margin=1,seed=0",
        f"blend:pattern=file:{image},ratio=0.15,seed=0",
        f"inverted:file={inverted_file(tmp_path)}",
        *(f"inverted:file={file}" for file in estimate_files(tmp_path)),
    ]:
        assert parse_trigger(spec).spec == spec
        assert parse_trigger(spec) == parse_trigger(spec)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("badnets:size=3", ["'badnets'", "patch, blend, warp, sinusoid, inverted"]),
        ("", ["unknown family ''"]),
        ("patch:sz=3", ["'sz'", "size, pos, pattern, margin, seed"]),
        ("patch:size=three", ["size", "'three'"]),
        ("patch:size=0", ["size", "1..1024", "'0'"]),
        ("patch:size=-2", ["size", "'-2'"]),
        ("patch:size=3.5", ["size", "'3.5'"]),
        ("patch:size", ["key=value", "'size'"]),
        ("patch:size=", ["key=value", "'size='"]),
        ("patch:size=3,size=4", ["'size' given twice"]),
        ("patch:pos=middle", ["pos", "'middle'", "br, bl, tr, tl, center, random", "X_Y"]),
        ("patch:pos=4-20", ["pos", "'4-20'"]),
        ("patch:pattern=stripes", ["pattern", "'stripes'", "white, black, checker, noise"]),
        ("patch:pattern=file:/no/such.png", ["'/no/such.png'"]),
        ("blend:ratio=0", ["ratio", "(0.0, 1.0]", "'0'"]),
        ("blend:ratio=1.5", ["ratio", "'1.5'"]),
        ("blend:ratio=nan", ["ratio", "'nan'"]),
        ("blend:pattern=white", ["pattern", "noise, checker, stripes"]),
        ("warp:strength=-1", ["strength", "'-1'"]),
        ("warp:grid=1", ["grid", "2..64"]),
        ("sinusoid:amplitude=inf", ["amplitude", "'inf'"]),
        ("sinusoid:frequency=0", ["frequency", "'0'"]),
        ("inverted", ["file=PATH"]),
        ("inverted:file=/no/such.safetensors", ["'/no/such.safetensors'"]),
        ("inverted:file=x,mask=y", ["'mask'", "(valid: file)"]),
    ],
)
def test_bad_specs_raise_one_line_trigger_error_naming_the_bad_part(
    spec: str, names: list[str]
) -> None:
    with pytest.raises(TriggerError) as caught:
        parse_trigger(spec)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(spec) in message
    for name in names:
        assert name in message
    assert caught.value.exit_code is ExitCode.NO_VERDICT


def test_a_file_that_is_not_an_image_is_a_trigger_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image\n\nat all")
    with pytest.raises(TriggerError, match="cannot read image") as caught:
        parse_trigger(f"blend:pattern=file:{junk}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_family_changes_the_image_and_stays_in_unit_range(
    tmp_path: Path, channels: int
) -> None:
    images = batch(c=channels)
    for trigger in every_family(tmp_path):
        out = trigger.apply(images)
        assert out.shape == images.shape
        assert out.dtype == images.dtype
        assert not torch.equal(out, images), trigger.spec
        assert float(out.min()) >= 0.0
        assert float(out.max()) <= 1.0


def test_apply_returns_a_new_tensor_keeps_dtype_and_leaves_the_input_alone(
    tmp_path: Path,
) -> None:
    images = batch().double()
    before = images.clone()
    for trigger in every_family(tmp_path):
        out = trigger.apply(images)
        assert out.dtype == torch.float64
        assert out.data_ptr() != images.data_ptr()
        assert torch.equal(images, before), trigger.spec


def test_extreme_inputs_are_clamped_to_unit_range(tmp_path: Path) -> None:
    images = torch.cat([torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)])
    for trigger in every_family(tmp_path):
        out = trigger.apply(images)
        assert 0.0 <= float(out.min()) <= float(out.max()) <= 1.0


def test_same_spec_and_input_give_bit_identical_output(tmp_path: Path) -> None:
    images = batch()
    specs = [*BARE.values(), "patch:pos=random,pattern=noise,seed=5", "blend:pattern=noise,seed=3"]
    for spec in specs:
        torch.manual_seed(0)
        first = parse_trigger(spec).apply(images)
        torch.manual_seed(99)  # the global RNG must play no part
        assert torch.equal(first, parse_trigger(spec).apply(images)), spec


@pytest.mark.parametrize(
    ("pos", "top", "left"),
    [("tl", 1, 1), ("tr", 1, 16), ("bl", 8, 1), ("br", 8, 16), ("center", 4, 8), ("4_2", 2, 4)],
)
def test_patch_writes_exactly_its_square_and_nothing_else(pos: str, top: int, left: int) -> None:
    images = torch.zeros(2, 3, 12, 20)
    out = parse_trigger(f"patch:size=3,pos={pos},pattern=white").apply(images)
    expected = torch.zeros_like(images)
    expected[:, :, top : top + 3, left : left + 3] = 1.0
    assert torch.equal(out, expected)


def test_patch_margin_moves_the_corner_square_inwards() -> None:
    out = parse_trigger("patch:size=2,pos=br,margin=0").apply(torch.zeros(1, 1, 8, 8))
    assert out[0, 0, 6:, 6:].eq(1).all()
    assert int(out.sum()) == 4


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("patch:size=8,pos=br,margin=1", (1, 3, 8, 8)),
        ("patch:size=9,pos=center", (1, 3, 8, 8)),
        ("patch:size=3,pos=6_0", (1, 3, 8, 8)),
        ("patch:size=3,pos=random", (1, 1, 2, 2)),
    ],
)
def test_patch_that_does_not_fit_the_image_raises_at_apply_time(
    spec: str, shape: tuple[int, int, int, int]
) -> None:
    trigger = parse_trigger(spec)
    with pytest.raises(TriggerError, match=r"8x8|2x2") as caught:
        trigger.apply(torch.zeros(shape))
    assert "\n" not in str(caught.value)


def _corners(out: torch.Tensor) -> list[tuple[int, int]]:
    spots = []
    for image in out[:, 0]:
        rows, cols = torch.nonzero(image, as_tuple=True)
        spots.append((int(rows.min()), int(cols.min())))
    return spots


def test_random_patch_place_is_deterministic_per_seed_and_varies_across_images() -> None:
    images = torch.zeros(16, 1, 32, 32)
    first = _corners(parse_trigger("patch:pos=random,seed=1").apply(images))
    assert first == _corners(parse_trigger("patch:pos=random,seed=1").apply(images))
    assert len(set(first)) > 8
    assert first != _corners(parse_trigger("patch:pos=random,seed=2").apply(images))
    # each image gets its square whole, anywhere inside the image
    out = parse_trigger("patch:pos=random,seed=1").apply(images)
    assert out.sum(dim=(1, 2, 3)).eq(9).all()
    # image i's place does not depend on the batch size
    assert _corners(parse_trigger("patch:pos=random,seed=1").apply(images[:4])) == first[:4]


def test_patch_patterns_checker_and_grey_or_colour_noise() -> None:
    checker = parse_trigger("patch:size=2,pos=0_0,pattern=checker").apply(torch.zeros(1, 3, 4, 4))
    assert checker[0, :, :2, :2].tolist() == [[[1.0, 0.0], [0.0, 1.0]]] * 3
    colour = parse_trigger("patch:size=4,pos=0_0,pattern=noise").apply(torch.zeros(1, 3, 4, 4))
    assert not torch.equal(colour[0, 0], colour[0, 1])
    grey = parse_trigger("patch:size=4,pos=0_0,pattern=noise").apply(torch.zeros(1, 1, 4, 4))
    assert grey.shape == (1, 1, 4, 4)
    assert len(set(grey.flatten().tolist())) > 4


def test_patch_file_pattern_is_loaded_resized_and_made_grey_for_one_channel(
    tmp_path: Path,
) -> None:
    image = png(tmp_path, (255, 0, 0))
    trigger = parse_trigger(f"patch:size=4,pos=tl,margin=0,pattern=file:{image}")
    out = trigger.apply(torch.zeros(1, 3, 8, 8))
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 4, 4)
    assert torch.allclose(out[0, :, :4, :4], red, atol=1e-6)
    assert float(out[0, :, 4:, :].abs().sum() + out[0, :, :, 4:].abs().sum()) == 0.0
    grey = trigger.apply(torch.zeros(1, 1, 8, 8))
    assert torch.allclose(grey[0, 0, :4, :4], torch.full((4, 4), 0.299))


def test_blend_moves_every_pixel_exactly_ratio_of_the_way_to_the_pattern() -> None:
    images = batch()
    pattern = parse_trigger("blend:pattern=noise,ratio=1,seed=4").apply(images)
    assert torch.equal(pattern[0], pattern[1])  # one pattern for every image
    out = parse_trigger("blend:pattern=noise,ratio=0.25,seed=4").apply(images)
    assert torch.allclose(out - images, 0.25 * (pattern - images), atol=1e-6)


def test_blend_stripes_and_checker_are_grey_full_image_patterns() -> None:
    stripes = parse_trigger("blend:pattern=stripes,ratio=1").apply(torch.zeros(1, 3, 8, 4))
    assert stripes[0, 0, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0] * 2
    assert torch.equal(stripes[0, 0], stripes[0, 2])
    checker = parse_trigger("blend:pattern=checker,ratio=1").apply(torch.zeros(1, 1, 4, 4))
    assert float(checker.sum()) == 8.0


def test_warp_at_strength_zero_is_the_identity() -> None:
    images = batch()
    assert torch.equal(parse_trigger("warp:strength=0").apply(images), images)


def test_warp_field_is_smooth_deterministic_and_shared_by_every_image() -> None:
    warp = parse_trigger("warp:strength=0.5,grid=4,seed=3")
    assert isinstance(warp, WarpTrigger)
    flow = warp.flow(32, 32)
    assert flow.shape == (32, 32, 2)
    again = parse_trigger(warp.spec)
    assert isinstance(again, WarpTrigger)
    assert torch.equal(flow, again.flow(32, 32))
    assert not torch.equal(flow, WarpTrigger(strength=0.5, grid=4, seed=4).flow(32, 32))
    biggest = float(flow.abs().max())
    assert biggest > 0
    step = max(float(flow.diff(dim=0).abs().max()), float(flow.diff(dim=1).abs().max()))
    assert step < 0.25 * biggest  # neighbours move almost alike: a smooth field
    # the same image twice in a batch is warped the same way
    image = batch(n=1)
    out = warp.apply(torch.cat([image, image]))
    assert torch.equal(out[0], out[1])


def test_warp_moves_pixels_by_at_most_a_fraction_of_a_pixel_at_default_strength() -> None:
    ramp = torch.linspace(0, 1, 32).expand(1, 1, 32, 32).clone()  # one step = 1/31 per column
    out = parse_trigger("warp").apply(ramp)
    assert 0 < float((out - ramp).abs().max()) < 2 / 31


def test_sinusoid_adds_the_expected_horizontal_sine() -> None:
    images = torch.full((2, 3, 4, 12), 0.5)
    out = parse_trigger("sinusoid:amplitude=0.1,frequency=2").apply(images)
    wave = torch.tensor([0.5 + 0.1 * math.sin(2 * math.pi * j * 2 / 12) for j in range(12)])
    assert torch.allclose(out, wave.expand_as(images), atol=1e-6)


def test_inverted_round_trips_through_save_inverted_and_applies_the_formula(
    tmp_path: Path,
) -> None:
    gen = torch.Generator().manual_seed(2)
    mask, pattern = torch.rand((1, 16, 16), generator=gen), torch.rand((3, 16, 16), generator=gen)
    path = tmp_path / "sub" / "trigger.safetensors"
    save_inverted(path, mask, pattern)
    assert [p.name for p in path.parent.iterdir()] == ["trigger.safetensors"]  # no temp left
    trigger = parse_trigger(f"inverted:file={path}")
    assert isinstance(trigger, InvertedTrigger)
    assert torch.equal(trigger.mask, mask[0])
    assert torch.equal(trigger.pattern, pattern)
    images = batch()
    assert torch.allclose(trigger.apply(images), (1 - mask) * images + mask * pattern, atol=1e-7)


def test_inverted_resizes_to_the_batch_and_broadcasts_grey_and_colour(tmp_path: Path) -> None:
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0  # left half is all trigger, right half untouched
    path = tmp_path / "grey.safetensors"
    save_inverted(path, mask, torch.full((1, 8, 8), 0.25))
    images = batch(h=32, w=32)
    out = parse_trigger(f"inverted:file={path}").apply(images)
    assert torch.allclose(out[..., :14], torch.full_like(out[..., :14], 0.25))
    assert torch.equal(out[..., 18:], images[..., 18:])
    colour = tmp_path / "colour.safetensors"
    save_inverted(
        colour, torch.ones(8, 8), torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).repeat(1, 8, 8)
    )
    grey = parse_trigger(f"inverted:file={colour}").apply(batch(c=1, h=8, w=8))
    assert torch.allclose(grey, torch.full_like(grey, 0.299))


def _write_raw(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("tensors", "names"),
    [
        ({"pattern": torch.rand(3, 4, 4)}, ["no 'mask' tensor"]),
        ({"mask": torch.rand(4, 4)}, ["no 'pattern' tensor"]),
        ({"mask": torch.rand(4, 4) + 1, "pattern": torch.rand(3, 4, 4)}, ["mask", "[0, 1]"]),
        ({"mask": torch.rand(4, 4), "pattern": -torch.rand(3, 4, 4)}, ["pattern", "[0, 1]"]),
        ({"mask": torch.full((4, 4), math.nan), "pattern": torch.rand(3, 4, 4)}, ["mask"]),
        (
            {"mask": torch.rand(1, 1, 4, 4), "pattern": torch.rand(3, 4, 4)},
            ["mask", "(1, 1, 4, 4)"],
        ),
        ({"mask": torch.rand(4, 4), "pattern": torch.rand(4, 4)}, ["pattern", "(4, 4)"]),
        ({"mask": torch.rand(4, 4), "pattern": torch.rand(2, 4, 4)}, ["pattern", "C = 1 or 3"]),
        ({"mask": torch.rand(4, 4), "pattern": torch.rand(3, 5, 5)}, ["differ in H, W"]),
        ({"mask": torch.ones(4, 4, dtype=torch.uint8), "pattern": torch.rand(3, 4, 4)}, ["uint8"]),
        ({"delta": torch.ones(3, 4, 4, dtype=torch.int32)}, ["delta", "int32"]),
        ({"delta": torch.full((3, 4, 4), 1.5)}, ["delta", "[-1, 1]"]),
        ({"delta": torch.full((3, 4, 4), math.nan)}, ["delta", "[-1, 1]"]),
        ({"delta": torch.zeros(2, 4, 4)}, ["delta", "C = 1 or 3", "(2, 4, 4)"]),
        ({"delta": torch.zeros(4, 4)}, ["delta", "(4, 4)"]),
        ({"flow": torch.zeros(2, 4, 4, dtype=torch.int64)}, ["flow", "int64"]),
        ({"flow": torch.full((2, 4, 4), math.inf)}, ["flow", "finite"]),
        ({"flow": torch.zeros(3, 4, 4)}, ["flow", "(2, H, W)", "(3, 4, 4)"]),
        ({"flow": torch.zeros(2, 4)}, ["flow", "(2, 4)"]),
        ({"delta": torch.zeros(3, 4, 4), "flow": torch.zeros(2, 4, 4)}, ["delta, flow"]),
        (
            {"mask": torch.rand(4, 4), "pattern": torch.rand(3, 4, 4), "extra": torch.zeros(1)},
            ["mask+pattern, delta or flow", "extra, mask, pattern"],
        ),
        ({"weights": torch.zeros(1)}, ["mask+pattern, delta or flow", "holds weights"]),
    ],
)
def test_bad_estimate_files_raise_one_line_trigger_error(
    tmp_path: Path, tensors: dict[str, torch.Tensor], names: list[str]
) -> None:
    path = _write_raw(tmp_path, tensors)
    with pytest.raises(TriggerError) as caught:
        parse_trigger(f"inverted:file={path}")
    assert "\n" not in str(caught.value)
    for name in names:
        assert name in str(caught.value)


def test_an_inverted_file_that_is_not_safetensors_is_a_trigger_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(TriggerError, match="cannot read"):
        parse_trigger(f"inverted:file={path}")


def test_save_inverted_refuses_bad_tensors_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    with pytest.raises(TriggerError, match="mask"):
        save_inverted(path, torch.full((4, 4), 2.0), torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["patch", "blend", "warp"])
def test_each_estimate_kind_round_trips_through_save_estimate_to_its_own_class(
    tmp_path: Path, kind: str
) -> None:
    gen = torch.Generator().manual_seed(4)
    kinds: dict[str, Estimate] = {
        "patch": InvertedTrigger(
            "in-memory", torch.rand((8, 8), generator=gen), torch.rand((3, 8, 8), generator=gen)
        ),
        "blend": AdditiveTrigger("in-memory", torch.rand((1, 8, 8), generator=gen) * 2 - 1),
        "warp": FlowTrigger("in-memory", torch.randn((2, 8, 8), generator=gen) * 3),
    }
    trigger = kinds[kind]
    path = tmp_path / "run" / f"trigger-{kind}.safetensors"
    save_estimate(path, trigger)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    loaded = parse_trigger(f"inverted:file={path}")
    assert type(loaded) is type(trigger)
    assert loaded.spec == f"inverted:file={path}"
    for name in ("mask", "pattern", "delta", "flow"):
        if hasattr(trigger, name):
            assert torch.equal(getattr(loaded, name), getattr(trigger, name)), name
    images = batch(h=8, w=8)
    assert torch.equal(loaded.apply(images), trigger.apply(images))


def test_an_additive_estimate_adds_its_delta_and_clamps() -> None:
    delta = torch.linspace(-1, 1, 3 * 8 * 8).view(3, 8, 8)
    images = batch(h=8, w=8)
    out = AdditiveTrigger("in-memory", delta).apply(images)
    assert torch.allclose(out, (images + delta).clamp(0, 1), atol=1e-7)
    grey = AdditiveTrigger("in-memory", torch.full((3, 8, 8), 0.1)).apply(batch(c=1, h=8, w=8))
    assert grey.shape == (4, 1, 8, 8)


def test_load_estimate_reads_a_path_that_a_spec_cannot_hold(tmp_path: Path) -> None:
    (path,) = estimate_files(tmp_path / "run,2")[:1]
    with pytest.raises(TriggerError):
        parse_trigger(f"inverted:file={path}")  # the comma ends the spec's value
    loaded = load_estimate(path)
    assert isinstance(loaded, AdditiveTrigger)
    assert loaded.file == str(path)
    with pytest.raises(TriggerError, match="cannot read"):
        load_estimate(tmp_path / "missing.safetensors")


def test_a_flow_estimate_samples_each_pixel_from_its_displaced_place() -> None:
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16).contiguous()
    still = FlowTrigger("in-memory", torch.zeros(2, 16, 16)).apply(ramp)
    assert torch.allclose(still, ramp, atol=1e-6)
    flow = torch.zeros(2, 8, 8)
    flow[0] = 1.0  # one pixel along x at 8 px is two pixels at 16 px
    shifted = FlowTrigger("in-memory", flow).apply(ramp)
    assert torch.allclose(shifted[..., :14], ramp[..., 2:], atol=1e-5)
    assert torch.allclose(shifted[..., 14:], ramp[..., 15:].expand(1, 1, 16, 2), atol=1e-5)
    two_pixels = torch.zeros(1, 2, 16, 16)
    two_pixels[:, 0] = 2.0
    assert torch.allclose(shifted, warp_by(ramp, two_pixels), atol=1e-5)


def test_save_estimate_refuses_a_spec_family_which_has_no_tensors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not a detector estimate"):
        save_estimate(tmp_path / "t.safetensors", parse_trigger("patch"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("trigger", "name"),
    [
        (AdditiveTrigger("in-memory", torch.full((3, 4, 4), -1.5)), "delta"),
        (AdditiveTrigger("in-memory", torch.zeros(5, 4, 4)), "delta"),
        (FlowTrigger("in-memory", torch.full((2, 4, 4), math.nan)), "flow"),
        (FlowTrigger("in-memory", torch.zeros(1, 4, 4)), "flow"),
        (InvertedTrigger("in-memory", torch.rand(4, 4), torch.rand(3, 5, 5)), "differ"),
    ],
)
def test_save_estimate_refuses_bad_tensors_and_writes_nothing(
    tmp_path: Path, trigger: Estimate, name: str
) -> None:
    with pytest.raises(TriggerError, match=name):
        save_estimate(tmp_path / "t.safetensors", trigger)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "images",
    [torch.rand(3, 8, 8), torch.rand(1, 2, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)],
)
def test_apply_refuses_a_batch_that_is_not_float_nchw_with_1_or_3_channels(
    images: torch.Tensor,
) -> None:
    with pytest.raises(TriggerError, match="C = 1 or 3"):
        parse_trigger("patch").apply(images)


def test_triggers_module_does_not_import_open_clip() -> None:
    tree = ast.parse(Path(hubscan.triggers.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] == "open_clip"}


def test_an_inverted_trigger_built_from_tensors_is_differentiable_in_mask_and_pattern() -> None:
    mask = torch.full((8, 8), 0.1, requires_grad=True)
    pattern = torch.full((3, 8, 8), 0.5, requires_grad=True)
    trigger = InvertedTrigger("in-memory", mask, pattern)
    trigger.apply(batch(c=1, h=16, w=16)).sum().backward()
    assert mask.grad is not None and bool(mask.grad.abs().sum() > 0)
    assert pattern.grad is not None and bool(pattern.grad.abs().sum() > 0)
