"""unlearn.py: TBAR's coefficient rule over the dampings, and its failure, on a real zoo model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from hubscan import unlearn
from hubscan.errors import NotRemediated
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import UnlearningPolicy, load_policy
from hubscan.records import CoefTrial
from tests.support.tbar import task


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
    return dataclasses.replace(
        policy, steps=5, coef_max=1.0, refine=0, clean_floor=0.5, fisher_dampings=(0.0, 10.0)
    )


def test_remove_leaves_the_audited_model_as_it_was(
    quick_zoo: Path, cheap: UnlearningPolicy
) -> None:
    fresh = load_clip(quick_zoo / "patch-white-br-bag")
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in fresh.model.named_parameters()}
    removal = unlearn.remove(fresh, task(fresh), cheap)
    assert removal.patch.coef > 0 and removal.patch.vector_norm > 0
    assert removal.patch.variant == cheap.variant
    assert removal.patch.accuracy_kind == "clean accuracy"
    after = fresh.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {k: p.requires_grad for k, p in fresh.model.named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], removal.state[k])}
    assert changed and all(k.startswith("visual.") for k in changed)


def test_the_damping_is_chosen_on_val_with_the_coefficient(
    clip: ClipHandle, cheap: UnlearningPolicy
) -> None:
    pol = dataclasses.replace(cheap, variant="fisher", fisher_dampings=(0.0, 10.0))
    patch = unlearn.remove(clip, task(clip), pol).patch
    floor = pol.clean_floor * patch.reference.clean_accuracy

    def removed(curve: tuple[CoefTrial, ...]) -> bool:
        return any(
            t.clean_accuracy >= floor and t.attack_success <= pol.asr_tolerance for t in curve
        )

    # ascending, and no further once a damping has removed the backdoor on val
    curves = {c.damping: c.trials for c in patch.curves}
    tried = list(curves)
    assert tried in ([0.0], [0.0, 10.0])
    assert [removed(c.trials) for c in patch.curves[:-1]] == [False] * (len(tried) - 1)
    assert len(tried) == 2 or removed(curves[0.0])
    trials = curves[patch.damping]
    assert patch.trials == trials and patch.chosen in trials
    lowest = min(
        t.attack_success
        for curve in curves.values()
        for t in curve
        if t.coef > 0 and t.clean_accuracy >= floor
    )
    assert patch.chosen.clean_accuracy >= floor
    assert patch.chosen.attack_success <= lowest + pol.asr_tolerance
    if patch.damping == 10.0:  # the undamped vector could not come within the tolerance
        assert all(
            t.attack_success > lowest + pol.asr_tolerance
            for t in curves[0.0]
            if t.coef > 0 and t.clean_accuracy >= floor
        )


def test_the_dampings_are_searched_until_one_removes_the_backdoor_on_val(
    clip: ClipHandle, cheap: UnlearningPolicy
) -> None:
    # a tolerance every trial meets: the undamped vector already "removes" it, nothing more runs
    pol = dataclasses.replace(
        cheap, variant="fisher", fisher_dampings=(0.0, 3.0, 10.0), asr_tolerance=1.0
    )
    patch = unlearn.remove(clip, task(clip), pol).patch
    assert [c.damping for c in patch.curves] == [0.0] and patch.damping == 0.0


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
