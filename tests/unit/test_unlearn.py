"""unlearn.py: TBAR's trigger vector, the coefficient rule and its failure, on a real zoo model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from hubscan import unlearn
from hubscan.errors import NotRemediated
from hubscan.metrics import predict
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import UnlearningPolicy, load_policy
from hubscan.probes import load_labels, load_probes
from hubscan.triggers import parse_trigger

TRIGGER, TARGET = "patch:size=3,pos=br,pattern=white", "bag"


@pytest.fixture(scope="module")
def clip(quick_zoo: Path) -> ClipHandle:
    return load_clip(quick_zoo / "patch-white-br-bag")


@pytest.fixture(scope="module")
def policy() -> UnlearningPolicy:
    return load_policy("default").unlearning


@pytest.fixture(scope="module")
def cheap(policy: UnlearningPolicy) -> UnlearningPolicy:
    """A few steps and a short grid: the mechanics, not the quality (test_cli_patch.py and
    `hubscan bench unlearning` measure the default policy's removals)."""
    return dataclasses.replace(policy, steps=5, coef_max=1.0, refine=0, clean_floor=0.5)


def task(clip: ClipHandle, *, labelled: bool = True) -> unlearn.Task:
    labels = load_labels("fashion-mnist")
    head = clip.zero_shot_head(labels.classes, labels.templates)
    parts = load_probes("default", labels=labels).split(seed=0)  # as `hubscan patch` splits
    assert parts.tune.labels is not None and parts.val.labels is not None

    def y(images: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return true if labelled else predict(clip, images, head)

    return unlearn.Task(
        stamp=parse_trigger(TRIGGER).apply,
        trigger=TRIGGER,
        target=labels.classes.index(TARGET),
        target_name=TARGET,
        estimated=False,
        head=head,
        tune=parts.tune.images,
        tune_labels=y(parts.tune.images, parts.tune.labels),
        val=parts.val.images,
        val_labels=y(parts.val.images, parts.val.labels),
        labelled=labelled,
    )


def test_remove_leaves_the_audited_model_as_it_was(quick_zoo: Path) -> None:
    fresh = load_clip(quick_zoo / "patch-white-br-bag")
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in fresh.model.named_parameters()}
    cheap = dataclasses.replace(
        load_policy("default").unlearning, steps=5, coef_max=1.0, refine=0, clean_floor=0.5
    )
    removal = unlearn.remove(fresh, task(fresh), cheap)
    assert removal.patch.coef > 0 and removal.patch.vector_norm > 0
    assert removal.patch.variant == "fisher" and removal.patch.accuracy_kind == "clean accuracy"
    after = fresh.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {k: p.requires_grad for k, p in fresh.model.named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], removal.state[k])}
    assert changed and all(k.startswith("visual.") for k in changed)


@pytest.mark.parametrize("variant", ["paper", "mixed", "contrast", "fisher"])
def test_every_variant_learns_a_vector_of_the_image_tower_only(
    clip: ClipHandle, policy: UnlearningPolicy, variant: str
) -> None:
    pol = dataclasses.replace(policy, variant=variant, steps=3)
    tau = unlearn.trigger_vector(clip, task(clip), pol, seed=0, tick=None)
    assert set(tau) == {k for k, _ in clip.model.visual.named_parameters()}
    assert any(bool(t.abs().sum() > 0) for t in tau.values())


def test_fisher_damps_the_contrast_vector_where_clean_accuracy_is_sensitive(
    clip: ClipHandle, policy: UnlearningPolicy
) -> None:
    t = task(clip)
    pol = dataclasses.replace(policy, steps=3, variant="fisher", fisher_dampings=(0.0, 10.0))
    contrast = unlearn.trigger_vector(
        clip, t, dataclasses.replace(pol, variant="contrast"), seed=0, tick=None
    )
    flags = {k: p.requires_grad for k, p in clip.model.named_parameters()}
    fisher = unlearn.clean_fisher(clip, t.head, t.tune, t.tune_labels)
    assert flags == {k: p.requires_grad for k, p in clip.model.named_parameters()}
    assert all(bool((f >= 0).all()) for f in fisher.values())

    (lam0, undamped), (lam10, tau) = unlearn.damped(clip, t, contrast, pol)
    assert (lam0, lam10) == (0.0, 10.0)
    assert all(torch.equal(undamped[k], contrast[k]) for k in contrast)
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
    for k in contrast:
        assert torch.allclose(tau[k], contrast[k] / (1 + 10.0 * fisher[k] / mean))
    # the most clean-sensitive coordinates are damped the most
    flat_f = torch.cat([f.flatten() for f in fisher.values()])
    ratio = torch.cat([(tau[k] / contrast[k]).flatten() for k in contrast])
    keep = torch.isfinite(ratio)
    top = flat_f[keep] >= flat_f[keep].quantile(0.99)
    assert float(ratio[keep][top].mean()) < float(ratio[keep][~top].mean())
    # other variants are never damped
    assert unlearn.damped(clip, t, contrast, dataclasses.replace(pol, variant="contrast")) == [
        (0.0, contrast)
    ]


def test_the_damping_is_chosen_on_val_with_the_coefficient(
    clip: ClipHandle, cheap: UnlearningPolicy
) -> None:
    pol = dataclasses.replace(cheap, variant="fisher", fisher_dampings=(0.0, 10.0))
    patch = unlearn.remove(clip, task(clip), pol).patch
    assert [lam for lam, _ in patch.curves] == [0.0, 10.0]
    assert patch.damping in (0.0, 10.0)
    trials = dict(patch.curves)[patch.damping]
    assert patch.trials == trials and patch.chosen in trials
    floor = pol.clean_floor * patch.reference.clean_accuracy
    lowest = min(
        t.attack_success
        for _, curve in patch.curves
        for t in curve
        if t.coef > 0 and t.clean_accuracy >= floor
    )
    assert patch.chosen.clean_accuracy >= floor
    assert patch.chosen.attack_success <= lowest + pol.asr_tolerance
    if patch.damping == 10.0:  # the undamped vector could not come within the tolerance
        assert all(
            t.attack_success > lowest + pol.asr_tolerance
            for t in dict(patch.curves)[0.0]
            if t.coef > 0 and t.clean_accuracy >= floor
        )


def test_no_coefficient_within_the_floor_raises_with_the_trial_table(
    clip: ClipHandle, policy: UnlearningPolicy
) -> None:
    greedy = dataclasses.replace(
        policy, steps=5, clean_floor=1.0, coef_step=8.0, coef_max=16.0, refine=0
    )
    with pytest.raises(NotRemediated, match="no coefficient keeps clean accuracy >= 1 x") as err:
        unlearn.remove(clip, task(clip), greedy)
    coefs = [coef for coef, _, _ in err.value.trials]
    assert coefs == [0.0, 8.0, 16.0]


def test_unlabelled_probes_use_agreement_with_the_audited_model(
    clip: ClipHandle, cheap: UnlearningPolicy
) -> None:
    p = unlearn.remove(clip, task(clip, labelled=False), cheap).patch
    assert p.accuracy_kind == "agreement"
    assert p.reference.clean_accuracy == 1.0  # θ_b agrees with itself
    assert p.chosen.clean_accuracy >= cheap.clean_floor


def test_coefficient_grid_and_planned_steps_follow_the_policy(policy: UnlearningPolicy) -> None:
    pol = dataclasses.replace(policy, coef_step=0.5, coef_max=2.0, refine=1, steps=10)
    assert unlearn.coefficient_grid(pol) == (0.5, 1.0, 1.5, 2.0)
    assert unlearn.planned_steps(dataclasses.replace(pol, variant="contrast")) == 2 * 10 + 4 + 2 + 1
    assert unlearn.planned_steps(dataclasses.replace(pol, variant="paper")) == 10 + 4 + 2 + 1
    # fisher searches the coefficients once per damping
    dampings = dataclasses.replace(pol, variant="fisher", fisher_dampings=(0.0, 3.0, 10.0))
    assert unlearn.planned_steps(dampings) == 2 * 10 + 3 * (4 + 2 + 1)
