"""The detection benchmark's arithmetic: rates, AUROC and calibration over a population."""

from __future__ import annotations

from typing import Any

import pytest

from hubscan.bench_detection import auroc, calibration, markdown, summarize


def row(
    name: str, kind: str, family: str | None, flagged: bool, score: float, **kw: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "seed": kw.get("seed", 0),
        "kind": kind,
        "family": family,
        "trigger": None,
        "target": kw.get("target"),
        "flagged": flagged,
        "flagged_by": "patch" if flagged else None,
        "suspected_target": kw.get("suspected", "bag"),
        "target_share": score,
        "score": score,
        "families": {"patch": {"score": score, "target": "bag"}},
        "passes": 100,
        "seconds": kw.get("seconds", 1.0),
    }


ROWS = [
    row("a", "backdoored", "patch", True, 1.6, target="bag"),
    row("b", "backdoored", "patch", True, 1.2, target="coat"),
    row("c", "backdoored", "warp", False, 0.5, target="boot"),
    row("d", "clean", None, False, 0.6),
    row("e", "clean", None, True, 1.1),
]


def test_rates_are_per_family_and_overall() -> None:
    s = summarize(ROWS)
    assert s["all"]["tpr"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["patch"]["tpr"] == 1.0
    assert s["warp"]["tpr"] == 0.0
    assert s["fpr"] == 0.5
    # Target identification counts detected models only: a right, b wrong
    assert s["patch"]["target_identified"] == 0.5
    assert s["warp"]["target_identified"] is None


@pytest.mark.parametrize(
    ("pos", "neg", "expected"),
    [([2.0, 3.0], [1.0], 1.0), ([1.0], [2.0, 3.0], 0.0), ([1.0], [1.0], 0.5), ([], [1.0], None)],
)
def test_auroc_counts_pairs_with_ties_as_half(
    pos: list[float], neg: list[float], expected: float | None
) -> None:
    assert auroc(pos, neg) == expected


def test_calibration_lists_every_clean_score_against_the_threshold() -> None:
    c = calibration(ROWS, {"patch": 0.6, "blend": 0.45})
    assert c["patch"]["clean_scores"] == [0.6, 1.1]
    assert c["patch"]["clean_max"] == 1.1
    assert "blend" not in c  # no clean model was searched with it


def test_several_seeds_count_audits_and_each_models_stability() -> None:
    rows = [
        row("a", "backdoored", "patch", True, 1.6, target="bag", seed=0),
        row("a", "backdoored", "patch", False, 0.9, target="bag", seed=1),
        row("b", "backdoored", "patch", True, 1.2, target="bag", seed=0),
        row("b", "backdoored", "patch", True, 1.3, target="bag", seed=1),
        row("d", "clean", None, False, 0.6, seed=0),
        row("d", "clean", None, True, 1.1, seed=1),
        row("e", "clean", None, False, 0.5, seed=0),
        row("e", "clean", None, False, 0.4, seed=1),
    ]
    s = summarize(rows)
    assert (s["all"]["models"], s["all"]["audits"]) == (2, 4)
    assert s["all"]["tpr"] == 0.75
    assert s["all"]["flagged_at_every_seed"] == 0.5  # a was missed at seed 1
    assert (s["clean_models"], s["clean_audits"], s["fpr"]) == (2, 4, 0.25)
    assert s["clean_flagged_at_any_seed"] == 0.5  # d at seed 1


def test_the_markdown_names_the_command_and_every_model() -> None:
    result = {
        "command": "hubscan bench detection --zoo z",
        "hubscan": "0",
        "policy": "default",
        "labels": "fashion-mnist",
        "machine": "m",
        "seeds": 1,
        "thresholds": {"patch": 0.6},
        "models": ROWS,
        "summary": summarize(ROWS),
        "calibration": calibration(ROWS, {"patch": 0.6}),
    }
    text = markdown(result)
    assert "`hubscan bench detection --zoo z`" in text
    assert all(f"| {r['name']} |" in text for r in ROWS)
