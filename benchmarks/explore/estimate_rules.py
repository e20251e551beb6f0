"""Coefficient rules compared on the curves of estimate_curves.py (issue 5, exploration).

Each rule picks (damping, coefficient) from what hubscan sees on val; the outcome is what
verification then measures on test: released when the true trigger's test attack success is at
most 10 % and test clean accuracy at least 95 % of the model's (the re-audit is not simulated),
and the benchmark's mean counts an unreleased model with its attack success unchanged.

    python benchmarks/explore/estimate_rules.py curves.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

Row = dict[str, float]
Rule = Callable[[dict[str, list[Row]]], tuple[str, Row] | None]


def floor_rule(kappa: float, tolerance: float = 0.0) -> Rule:
    """hubscan's rule: dampings in ascending order (stop at one reaching ASR <= tolerance);
    among α whose val CA >= κ·before, the lowest val ASR, the smallest damping and α within
    the tolerance of it."""

    def rule(curves: dict[str, list[Row]]) -> tuple[str, Row] | None:
        floor = kappa * curves["0.0"][0]["val_ca"]
        ok: dict[str, list[Row]] = {}
        for lam, rows in curves.items():
            ok[lam] = [r for r in rows[1:] if r["val_ca"] >= floor]
            if any(r["val_asr"] <= tolerance for r in ok[lam]):
                break
        if not any(ok.values()):
            return None
        lowest = min(r["val_asr"] for rows in ok.values() for r in rows)
        for lam, rows in ok.items():
            near = [r for r in rows if r["val_asr"] <= lowest + tolerance]
            if near:
                return lam, min(near, key=lambda r: r["coef"])
        return None

    return rule


def outcome(curves: dict[str, list[Row]], rule: Rule) -> tuple[str, float, float, str]:
    before = curves["0.0"][0]
    pick = rule(curves)
    if pick is None:
        return "none", before["test_true"], 1.0, ""
    lam, r = pick
    retention = r["test_ca"] / before["test_ca"]
    ok = r["test_true"] <= 0.10 and retention >= 0.95
    shown = r["test_true"] if ok else before["test_true"]
    return ("released" if ok else "refused"), shown, retention, f"λ{lam} α{r['coef']:.3f}"


RULES: dict[str, Rule] = {
    "floor 0.97 (default)": floor_rule(0.97),
    "floor 0.97, tolerance 0.005": floor_rule(0.97, 0.005),
    "floor 0.97, tolerance 0.02": floor_rule(0.97, 0.02),
    "floor 0.96": floor_rule(0.96),
    "floor 0.96, tolerance 0.02": floor_rule(0.96, 0.02),
}


def main(path: Path) -> None:
    data = json.loads(path.read_text())
    for mode in ("known", "estimated"):
        print(f"## {mode}")
        for label, rule in RULES.items():
            cells, asr, ret, released = [], [], [], 0
            for name, row in data.items():
                if mode not in row:
                    before = row["known"]["0.0"][0]["test_true"]
                    asr.append(before)
                    cells.append(f"{name} not detected")
                    continue
                status, shown, retention, where = outcome(row[mode], rule)
                released += status == "released"
                asr.append(shown)
                if status == "released":
                    ret.append(retention)
                cells.append(f"{name} {status} {shown:.3f} ret {retention:.3f} {where}")
            mean_ret = sum(ret) / len(ret) if ret else float("nan")
            print(
                f"{label}: {released}/{len(asr)} released, mean ASR {sum(asr) / len(asr):.3f},"
                f" mean retention (released) {mean_ret:.3f}"
            )
            for c in cells:
                print("   ", c)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
