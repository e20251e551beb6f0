"""refit.py: the audit's global estimate refit to the smallest that still reaches the target, on
a real zoo model and the bundled probes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from hubscan import refit
from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger
from hubscan.metrics import attack_success
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import UnlearningPolicy, load_policy
from hubscan.probes import load_labels, load_probes
from hubscan.triggers import parse_trigger

POLICY: UnlearningPolicy = load_policy("default").unlearning
TRIGGER, TARGET = parse_trigger("blend:pattern=noise,ratio=0.15,seed=3"), 4  # coat


@pytest.fixture(scope="module")
def clip(quick_zoo: Path) -> ClipHandle:
    return load_clip(quick_zoo / "blend-noise-coat")  # the model TRIGGER -> coat was planted in


@pytest.fixture(scope="module")
def probes(clip: ClipHandle) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(head, tune images, their labels, val images + labels stacked as a pair's first two)."""
    labels = load_labels("fashion-mnist")
    parts = load_probes("default", labels=labels).split(seed=0)
    assert parts.tune.labels is not None and parts.val.labels is not None
    head = clip.zero_shot_head(labels.classes, labels.templates)
    return head, parts.tune.images, parts.tune.labels, parts.val.images


def _box_estimate(images: torch.Tensor) -> AdditiveTrigger:
    """What the audit's L-inf search returns for a blend: the trigger's mean change, pushed out
    to a ±0.08 box wherever it is not small (mostly sign, like a saturated tanh)."""
    change = (TRIGGER.apply(images) - images).mean(dim=0)
    return AdditiveTrigger("in-memory", (change.sign() * 0.08).where(change.abs() > 0.01, change))


def _rms(delta: torch.Tensor) -> float:
    return float(delta.pow(2).mean().sqrt())


def test_an_additive_estimate_shrinks_and_keeps_sending_unseen_images_to_the_target(
    clip: ClipHandle, probes: tuple[torch.Tensor, ...]
) -> None:
    head, tune, tune_y, val = probes
    start = _box_estimate(tune)
    weights = {k: v.clone() for k, v in clip.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in clip.model.named_parameters()}
    ticks: list[int] = []
    pol = dataclasses.replace(POLICY, refit_steps=80)
    out = refit.refit(clip, head, start, tune, tune_y, TARGET, pol, seed=0, tick=ticks.append)

    assert isinstance(out, AdditiveTrigger) and out.delta.shape == start.delta.shape
    assert _rms(out.delta) < 0.8 * _rms(start.delta)
    val_y = torch.full((len(val),), -1)  # every val image counts (none is labelled coat)
    assert attack_success(clip, val, val_y, head, out.apply, TARGET) >= 0.6
    assert sum(ticks) == 80
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in weights.items())
    assert flags == {k: p.requires_grad for k, p in clip.model.named_parameters()}


def test_a_flow_estimate_comes_back_a_smooth_finite_flow_of_its_shape(
    clip: ClipHandle, probes: tuple[torch.Tensor, ...]
) -> None:
    head, tune, tune_y, _ = probes
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn((1, 2, 5, 5), generator=gen)
    flow = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bicubic")[0]
    pol = dataclasses.replace(POLICY, refit_steps=5)
    out = refit.refit(clip, head, FlowTrigger("in-memory", flow), tune, tune_y, 4, pol, seed=0)

    assert isinstance(out, FlowTrigger) and out.flow.shape == (2, 28, 28)
    assert bool(out.flow.isfinite().all()) and not torch.equal(out.flow, flow)
    # smooth: neighbouring pixels move alike (the refit stays on the audit's coarse grid)
    assert float((out.flow[:, 1:] - out.flow[:, :-1]).abs().max()) < 0.5 * float(
        out.flow.abs().max()
    )


def test_a_patch_estimate_zero_steps_and_no_image_off_target_leave_the_estimate_as_it_is(
    clip: ClipHandle, probes: tuple[torch.Tensor, ...]
) -> None:
    head, tune, tune_y, _ = probes
    patch = InvertedTrigger("in-memory", torch.zeros(28, 28), torch.zeros(1, 28, 28))
    additive = _box_estimate(tune)
    assert refit.refit(clip, head, patch, tune, tune_y, TARGET, POLICY, seed=0) is patch
    assert not refit.applies(patch, POLICY)
    off = dataclasses.replace(POLICY, refit_steps=0)
    assert refit.refit(clip, head, additive, tune, tune_y, TARGET, off, seed=0) is additive
    only_target = torch.full_like(tune_y, TARGET)
    assert refit.refit(clip, head, additive, tune, only_target, TARGET, POLICY, seed=0) is additive
