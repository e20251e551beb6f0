"""bench_disentangle: the answer the page gives from the unlearning benchmark's result."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hubscan.bench_disentangle import markdown, removal_answer
from hubscan.bench_unlearning import _summary
from hubscan.policy import Policy, load_policy


def after(ca: float, asr: float, status: str = "released") -> dict[str, Any]:
    return {
        "status": status,
        "ca_before": 0.9,
        "asr_before": 0.99,
        "ca_after": ca,
        "asr_after": asr,
    }


def contrast_default() -> Policy:
    """The answer names the default variant; these pages are written with `contrast` as it."""
    p = load_policy("default")
    return dataclasses.replace(p, unlearning=dataclasses.replace(p.unlearning, variant="contrast"))


def row(name: str, contrast: dict[str, Any], paper: dict[str, Any]) -> dict[str, Any]:
    methods = {
        "tbar-known-contrast": contrast,
        "tbar-known-paper": paper,
        "clean-ft": after(0.9, 0.01, "below floor"),  # a baseline: never part of the answer
        "oracle": after(0.9, 0.0, "within floor"),
    }
    return {"name": name, "family": "patch", "methods": methods}


def zoo(name: str, tower: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"zoo": name, "tower": tower, "models": rows, "summary": _summary(rows)}


def page(answer: dict[str, Any] | None) -> str:
    """The page with no grids, only the answer section."""
    return markdown(
        {
            "command": "c",
            "hubscan": "0",
            "policy": "default",
            "coefs": [0.0],
            "images": 1,
            "zoos": [],
            "removal": answer,
        }
    )


def test_answer_counts_removal_within_the_floor_and_names_the_winning_variant(
    tmp_path: Path,
) -> None:
    nothing = {"status": "no coefficient within the floor"}
    rows_a = [
        row("a1", after(0.89, 0.02), nothing),
        # attack success low but clean accuracy under 97 % of before: not within the floor
        row("a2", after(0.80, 0.00, "not remediated"), nothing),
    ]
    rows_b = [row("b1", after(0.9, 0.01), after(0.9, 0.5, "not remediated"))]
    (tmp_path / "unlearning.json").write_text(
        json.dumps(
            {
                "command": "hubscan bench unlearning --zoo a --zoo b",
                "zoos": [zoo("a", "vit", rows_a), zoo("b", "mobilenetv2", rows_b)],
            }
        )
    )
    answer = removal_answer(tmp_path / "unlearning.json", contrast_default())
    assert answer is not None
    a, b = answer["zoos"]
    assert a["methods"]["tbar-known-contrast"]["removed"] == 1
    assert a["methods"]["oracle"]["removed"] == 2 and "clean-ft" not in a["methods"]
    assert b["methods"]["tbar-known-paper"]["removed"] == 0
    assert a["winner"] == b["winner"] == "contrast"
    text = page(answer)
    assert "| tbar-known-contrast | 1/2 (mean attack success after " in text
    assert (
        "- `a` (vit): removed within the floor by `contrast` 1/2, `paper` 0/2, `oracle` 2/2" in text
    )
    assert "is `contrast` in every zoo, which is `hubscan patch`'s default (`contrast`)" in text


def test_when_the_zoos_disagree_the_page_gives_totals_and_where_the_default_wins(
    tmp_path: Path,
) -> None:
    nothing = {"status": "no coefficient within the floor"}
    rows_a = [row("a1", after(0.9, 0.01), nothing), row("a2", after(0.9, 0.02), nothing)]
    rows_b = [row("b1", after(0.9, 0.6, "not remediated"), after(0.9, 0.01))]
    (tmp_path / "unlearning.json").write_text(
        json.dumps({"command": "c", "zoos": [zoo("a", "vit", rows_a), zoo("b", "tiny", rows_b)]})
    )
    answer = removal_answer(tmp_path / "unlearning.json", contrast_default())
    assert answer is not None
    assert (
        "- The winning variant differs between zoos: `contrast` on `a` (vit), `paper` on `b` "
        "(tiny). Over all 3 models: `contrast` 2/3, `paper` 1/3. `hubscan patch`'s default "
        "(`contrast`) wins on `a`." in page(answer)
    )


def test_without_an_unlearning_result_the_page_says_what_to_run(tmp_path: Path) -> None:
    assert removal_answer(tmp_path / "unlearning.json", contrast_default()) is None
    assert "run `hubscan bench unlearning` first" in page(None)
