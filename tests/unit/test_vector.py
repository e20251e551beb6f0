"""vector.py: TBAR's trigger vectors and their Fisher damping, on a real zoo model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from hubscan import vector
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import UnlearningPolicy, load_policy
from tests.support.tbar import task

POLICY: UnlearningPolicy = load_policy("default").unlearning


@pytest.fixture(scope="module")
def clip(quick_zoo: Path) -> ClipHandle:
    return load_clip(quick_zoo / "patch-white-br-bag")  # the model tests.support.tbar's task fits


@pytest.mark.parametrize("variant", ["paper", "mixed", "contrast", "fisher"])
def test_every_variant_learns_a_vector_of_the_image_tower_only(
    clip: ClipHandle, variant: str
) -> None:
    pol = dataclasses.replace(POLICY, variant=variant, steps=3)
    tau = vector.trigger_vector(clip, task(clip), pol, seed=0, tick=None)
    assert set(tau) == {k for k, _ in clip.model.visual.named_parameters()}
    assert any(bool(t.abs().sum() > 0) for t in tau.values())


def test_fisher_damps_the_contrast_vector_where_clean_accuracy_is_sensitive(
    clip: ClipHandle,
) -> None:
    t = task(clip)
    pol = dataclasses.replace(POLICY, steps=3, variant="fisher", fisher_dampings=(0.0, 10.0))
    contrast = vector.trigger_vector(
        clip, t, dataclasses.replace(pol, variant="contrast"), seed=0, tick=None
    )
    flags = {k: p.requires_grad for k, p in clip.model.named_parameters()}
    fisher = vector.clean_fisher(clip, t.head, t.tune, t.tune_labels)
    assert flags == {k: p.requires_grad for k, p in clip.model.named_parameters()}
    assert all(bool((f >= 0).all()) for f in fisher.values())

    (lam0, undamped), (lam10, tau) = vector.damped(clip, t, contrast, pol)
    assert (lam0, lam10) == (0.0, 10.0)
    assert all(torch.equal(undamped[k], contrast[k]) for k in contrast)

    def cost(v: dict[str, torch.Tensor]) -> float:  # Σ F·τ²
        return sum(float((fisher[k].double() * v[k].double() ** 2).sum()) for k in v)

    mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
    shape = {k: contrast[k] / (1 + 10.0 * fisher[k] / mean) for k in contrast}
    scale = (cost(contrast) / cost(shape)) ** 0.5
    assert scale > 1  # damping shrinks τ; the scale gives back its clean-loss cost
    for k in contrast:
        assert torch.allclose(tau[k], scale * shape[k], rtol=1e-4, atol=1e-9)
    assert cost(tau) == pytest.approx(cost(contrast), rel=1e-6)
    zero = {k: torch.zeros_like(v) for k, v in contrast.items()}  # a fine-tune that learned nothing
    assert all(not v.any() for _, d in vector.damped(clip, t, zero, pol) for v in d.values())
    # the most clean-sensitive coordinates are damped the most
    flat_f = torch.cat([f.flatten() for f in fisher.values()])
    ratio = torch.cat([(tau[k] / contrast[k]).flatten() for k in contrast])
    keep = torch.isfinite(ratio)
    top = flat_f[keep] >= flat_f[keep].quantile(0.99)
    assert float(ratio[keep][top].mean()) < float(ratio[keep][~top].mean())
    # other variants are never damped
    assert list(vector.damped(clip, t, contrast, dataclasses.replace(pol, variant="contrast"))) == [
        (0.0, contrast)
    ]


def test_a_known_trigger_and_an_estimate_each_follow_their_own_stamp_setting(
    clip: ClipHandle,
) -> None:
    known = task(clip)
    estimate = dataclasses.replace(known, estimated=True)
    pol = dataclasses.replace(
        POLICY, steps=3, variant="contrast", estimate_gain=1.0, estimate_anchor=0.0
    )

    def tau(t: vector.Task, *, soft_trigger: bool, soft_estimate: bool) -> vector.State:
        p = dataclasses.replace(pol, soft_trigger=soft_trigger, soft_estimate=soft_estimate)
        return vector.trigger_vector(clip, t, p, seed=0, tick=None)

    soft_known = tau(known, soft_trigger=True, soft_estimate=False)
    soft_estimate = tau(estimate, soft_trigger=False, soft_estimate=True)
    full_known = tau(known, soft_trigger=False, soft_estimate=True)
    assert all(torch.equal(soft_known[k], soft_estimate[k]) for k in soft_known)
    assert not all(torch.equal(soft_known[k], full_known[k]) for k in soft_known)


@pytest.mark.parametrize(
    ("setting", "values"),
    [
        ("estimate_gain", (1.0, 2.0)),  # the estimate stamped up to twice its strength
        ("estimate_anchor", (0.0, 0.3)),  # the target's clean images in both fine-tunes
    ],
)
def test_an_estimate_s_settings_shape_its_vector_and_a_known_trigger_ignores_them(
    clip: ClipHandle, setting: str, values: tuple[float, float]
) -> None:
    known = task(clip)
    estimate = dataclasses.replace(known, estimated=True)
    pol = dataclasses.replace(POLICY, steps=3, variant="contrast", soft_estimate=True)

    def tau(t: vector.Task, value: float) -> vector.State:
        p = dataclasses.replace(pol, **{setting: value})
        return vector.trigger_vector(clip, t, p, seed=0, tick=None)

    one, two = (tau(known, v) for v in values)
    assert all(torch.equal(one[k], two[k]) for k in one)
    one, two = (tau(estimate, v) for v in values)
    assert not all(torch.equal(one[k], two[k]) for k in one)


def test_the_anchor_takes_the_target_s_images_in_turn_and_is_empty_without_any() -> None:
    x = torch.arange(5.0).view(5, 1, 1, 1)
    y = torch.tensor([0, 2, 1, 2, 0])
    assert vector._anchor(x, y, 2, 5).flatten().tolist() == [1.0, 3.0, 1.0, 3.0, 1.0]
    assert vector._anchor(x, y, 7, 5).shape == (0, 1, 1, 1)
    assert vector._anchor(x, y, 2, 0).shape == (0, 1, 1, 1)


@pytest.mark.parametrize(("soft", "gain"), [(False, 2.0), (True, 2.0), (True, 1.0)])
def test_stamp_strength_extrapolates_the_trigger_change_and_stays_in_range(
    soft: bool, gain: float
) -> None:
    x = torch.full((200, 1, 4, 4), 0.5)

    def stamp(images: torch.Tensor) -> torch.Tensor:
        return images + 0.1  # the trigger adds 0.1 everywhere

    out = vector._stamp(stamp, x, torch.Generator().manual_seed(0), soft=soft, gain=gain)
    added = (out - x)[:, 0, 0, 0] / 0.1  # each image's strength
    assert float(added.min()) >= 0 and float(added.max()) <= gain + 1e-5
    if soft:
        assert float(added.max()) > 0.9 * gain and float(added.min()) < 0.1 * gain
    else:
        assert torch.allclose(added, torch.full_like(added, gain))
    bright = vector._stamp(stamp, torch.ones(3, 1, 2, 2), torch.Generator(), soft=soft, gain=gain)
    assert float(bright.max()) <= 1.0
