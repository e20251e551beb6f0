"""The inversion machinery on a tiny random open_clip model: budgets, pruning, counting, early
stops. Whether it finds real backdoors is tested on the zoo (integration/test_cli_audit.py)."""

from __future__ import annotations

import dataclasses
import itertools
import time

import pytest
import torch

from hubscan.errors import BudgetExhausted, ProbeError
from hubscan.invert import detect
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import DetectionPolicy, load_policy
from hubscan.records import FamilyScore, Verdict
from hubscan.search import (
    Candidates,
    Counter,
    budget_schedule,
    planned_steps,
    predict,
    rounds,
    search_family,
    sustained,
)
from tests.support.factories import write_open_clip_checkpoint

CLASSES = ("cat", "dog", "car", "tree", "boat")
TEMPLATES = ("a photo of a {}.",)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipHandle:
    return load_clip(write_open_clip_checkpoint(tmp_path_factory.mktemp("tiny")))


def small(**changes: object) -> DetectionPolicy:
    """The default policy's detection section, shrunk so a test runs in about a second."""
    base = load_policy("default").detection
    # A random model puts most probes in one class; these tests are about the machinery.
    sizes = {
        "screen_steps": 2,
        "screen_images": 4,
        "screen_batch": 48,
        "steps": 3,
        "probe_images": 4,
        "holdout_images": 8,
        "max_clean_share": 1.0,
    }
    return dataclasses.replace(base, **(sizes | changes))  # type: ignore[arg-type]


def probes(n: int = 16) -> torch.Tensor:
    return torch.rand((n, 1, 16, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("k", "keep", "expected"), [(10, 3, 2), (100, 3, 6), (2, 3, 0), (4, 2, 2)])
def test_screening_halves_the_candidates_until_keep_are_left(
    k: int, keep: int, expected: int
) -> None:
    assert rounds(k, small(keep=keep)) == expected


def test_the_screen_stops_early_only_after_a_candidate_succeeds_several_steps_in_a_row() -> None:
    lucky, steady = torch.tensor([0.99, 0.5]), torch.tensor([0.2, 0.97])
    assert sustained([lucky], 0.95) is None
    assert sustained([steady, lucky, steady], 0.95) is None  # a different winner each step
    won = sustained([lucky, steady, steady, steady], 0.95)
    assert won is not None and won.tolist() == pytest.approx([0.2, 0.97])


def test_the_first_round_shrinks_the_budget_to_the_policys_by_the_ranked_half() -> None:
    factors = budget_schedule(8.0, 24)
    assert factors[0] == 8.0
    assert all(a > b for a, b in itertools.pairwise(factors[:12]))
    assert factors[12:] == [1.0] * 12
    assert budget_schedule(1.0, 6) == [1.0] * 6


def test_planned_steps_counts_every_round_and_the_refinement() -> None:
    policy = small(screen_steps=5, steps=7, keep=3)
    assert planned_steps(10, policy) == 2 * 5 + 7


def test_the_search_counts_its_passes_and_ticks_exactly_the_planned_steps(
    clip: ClipHandle,
) -> None:
    policy = small()
    ticks: list[int] = []
    counter = Counter(deadline=time.perf_counter() + 600)
    head = clip.zero_shot_head(CLASSES, TEMPLATES)
    cands = Candidates(clip=clip, head=head, counter=counter, tick=ticks.append)
    images = probes()
    held = images[4:12]
    result = search_family(
        cands,
        "patch",
        images[:4],
        held,
        holdout_clean=predict(cands, held),
        policy=policy,
        generator=torch.Generator(),
    )
    assert sum(ticks) == planned_steps(len(CLASSES), policy)
    # 6 candidates x 4 images x 2 steps, then 3 x 4 x 2, then at most 3 x 4 x 3 refining
    assert 48 + 24 < counter.passes <= 48 + 24 + 36
    assert counter.forwards == 4 + 8 + 3 * 8  # clean predictions, then the held-out scoring
    assert 0.0 <= result.best_share <= 1.0
    assert result.screen.shape == (len(CLASSES),)


def test_detect_reports_a_verdict_per_family_and_its_budget(clip: ClipHandle) -> None:
    outcome = detect(
        clip, probes(), classes=CLASSES, templates=TEMPLATES, labelled=True, policy=small()
    )
    d = outcome.detection
    assert [f.family for f in d.families] == ["patch", "blend", "warp"]
    assert set(outcome.estimates) == {"patch", "blend", "warp"}
    assert d.verdict in (Verdict.PASS, Verdict.FAIL)
    assert (d.verdict is Verdict.FAIL) == any(f.flagged for f in d.families)
    assert all(f.flagged == (f.score >= f.threshold) for f in d.families)
    assert d.suspected_target in CLASSES
    assert d.budget.passes > 0 and d.budget.seconds > 0


def test_the_same_seed_gives_the_same_scores(clip: ClipHandle) -> None:
    def scores() -> list[float]:
        outcome = detect(
            clip, probes(), classes=CLASSES, templates=TEMPLATES, labelled=True, policy=small()
        )
        return [f.score for f in outcome.detection.families]

    assert scores() == scores()


def test_a_familys_score_does_not_depend_on_the_families_searched_before_it(
    clip: ClipHandle,
) -> None:
    def warp(families: tuple[str, ...]) -> FamilyScore:
        policy = small(families=families)
        outcome = detect(
            clip, probes(), classes=CLASSES, templates=TEMPLATES, labelled=True, policy=policy
        )
        return outcome.detection.families[-1]

    assert warp(("patch", "blend", "warp")) == warp(("warp",))


def test_refinement_steps_draw_refine_batch_images_from_the_probe_pool(clip: ClipHandle) -> None:
    counter = Counter(deadline=time.perf_counter() + 600)
    cands = Candidates(clip=clip, head=clip.zero_shot_head(CLASSES, TEMPLATES), counter=counter)
    images = probes(20)
    policy = small(screen_steps=2, steps=5, refine_batch=3, success_share=1.0, keep=2)
    search_family(
        cands,
        "blend",
        images[:12],
        images[12:],
        holdout_clean=torch.zeros(8, dtype=torch.long),
        policy=policy,
        generator=torch.Generator(),
    )
    screened = 6 * 4 * 2 + 3 * 4 * 2  # 6 candidates, then 3, at 4 images for 2 steps
    assert counter.passes == screened + 2 * 3 * 5  # 2 kept x 3 images x 5 steps


def test_too_few_probe_images_is_a_probe_error_naming_the_need(clip: ClipHandle) -> None:
    with pytest.raises(ProbeError, match="detection needs 12"):
        detect(clip, probes(5), classes=CLASSES, templates=TEMPLATES, labelled=True, policy=small())


def test_a_model_that_puts_most_clean_probes_in_one_class_gets_no_verdict(
    clip: ClipHandle,
) -> None:
    # Random weights: the image tower barely depends on its input, so one class takes most
    # probes, and any trigger "sends everything" there. That is no evidence of a backdoor.
    with pytest.raises(ProbeError, match=r"puts \d+% of the clean probes in '\w+'"):
        detect(
            clip,
            probes(),
            classes=CLASSES,
            templates=TEMPLATES,
            labelled=True,
            policy=small(max_clean_share=0.5),
        )


def test_running_past_the_deadline_raises_budget_exhausted() -> None:
    counter = Counter(deadline=time.perf_counter() - 1)
    with pytest.raises(BudgetExhausted, match="ran out of time after 8 image passes"):
        counter.spend(8, backward=True)
