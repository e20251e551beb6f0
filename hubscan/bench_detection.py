"""`hubscan bench detection`: the audit over a built zoo -> benchmarks/detection.md|json.

Owns the detection metrics over a population (METHOD.md §2): TPR per trigger family and overall,
FPR on the clean models, AUROC of the combined score, target identification, audit times, and the
calibration table (every search family's score on every clean model against its threshold).
Must not change what it measures: each model goes through pipeline.audit exactly as the CLI does.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubscan import __version__, pipeline
from hubscan.errors import UsageError
from hubscan.policy import Policy
from hubscan.records import Detection, Verdict

Tick = Callable[[str], None]  # told each model's name as its audit starts


def run_detection_bench(
    *,
    zoo: Path,
    out: Path,
    policy: Policy,
    labels: str | None,
    command: str,
    tick: Tick | None,
    seeds: int = 1,
) -> dict[str, Any]:
    """Audit every clean and backdoored model of `zoo` at seeds 0 .. seeds-1 (each seed draws
    other probes and other starting triggers): the rates count audits, and each model's share
    of flagged seeds shows how much a verdict depends on the draw."""
    manifest_path = zoo / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"--zoo {zoo} has no manifest.json (build it with `hubscan zoo build`)")
    manifest = json.loads(manifest_path.read_text())
    rows = []
    for model in manifest["models"]:
        if model["kind"] == "base":
            continue
        for seed in range(seeds):
            if tick is not None:
                tick(model["name"])
            start = time.perf_counter()
            run = pipeline.audit(str(zoo / model["name"]), policy=policy, labels=labels, seed=seed)
            seconds = time.perf_counter() - start
            if run.detection is None:
                raise UsageError(f"{model['name']}: the static scan blocked the audit")
            rows.append(_row(model, run.detection, seconds, seed))
    result = {
        "benchmark": "detection",
        "command": command,
        "hubscan": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "policy": policy.name,
        "policy_sha256": policy.sha256,
        "seeds": seeds,
        "labels": labels or "vocabulary (label-free)",
        "thresholds": dict(policy.detection.thresholds),
        "models": rows,
        "summary": summarize(rows),
        "calibration": calibration(rows, dict(policy.detection.thresholds)),
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = "detection" if labels is not None else "detection-label-free"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    return result


def _row(model: dict[str, Any], det: Detection, seconds: float, seed: int) -> dict[str, Any]:
    return {
        "name": model["name"],
        "seed": seed,
        "kind": model["kind"],
        "family": model.get("family"),
        "trigger": model.get("trigger"),
        "target": model.get("target"),
        "flagged": det.verdict is Verdict.FAIL,
        "flagged_by": det.family,
        "suspected_target": det.suspected_target,
        "target_share": det.target_share,
        "score": max(f.score / f.threshold for f in det.families),
        "families": {f.family: {"score": f.score, "target": f.target} for f in det.families},
        "passes": det.budget.passes,
        "seconds": round(seconds, 2),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates over audits (a model audited at several seeds counts once per seed), and per model
    population the share flagged at every seed (backdoored) or at any seed (clean)."""
    clean = [r for r in rows if r["kind"] == "clean"]
    bad = [r for r in rows if r["kind"] == "backdoored"]
    groups = {"all": bad} | {f: [r for r in bad if r["family"] == f] for f in _families(bad)}
    out: dict[str, Any] = {
        "clean_models": len(_by_model(clean)),
        "clean_audits": len(clean),
        "fpr": _rate([r["flagged"] for r in clean]),
        "clean_flagged_at_any_seed": _rate([any(f) for f in _by_model(clean).values()]),
        "median_seconds": statistics.median(r["seconds"] for r in rows) if rows else None,
        "median_passes": statistics.median(r["passes"] for r in rows) if rows else None,
    }
    for name, group in groups.items():
        detected = [r for r in group if r["flagged"]]
        out[name] = {
            "models": len(_by_model(group)),
            "audits": len(group),
            "tpr": _rate([r["flagged"] for r in group]),
            "flagged_at_every_seed": _rate([all(f) for f in _by_model(group).values()]),
            "auroc": auroc([r["score"] for r in group], [r["score"] for r in clean]),
            "target_identified": _rate([r["suspected_target"] == r["target"] for r in detected]),
        }
    return out


def _by_model(rows: list[dict[str, Any]]) -> dict[str, list[bool]]:
    flags: dict[str, list[bool]] = {}
    for r in rows:
        flags.setdefault(r["name"], []).append(r["flagged"])
    return flags


def calibration(rows: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Any]:
    """Per search family: the clean models' scores, their maximum, and the threshold's margin."""
    clean = [r for r in rows if r["kind"] == "clean"]
    out = {}
    for family, threshold in thresholds.items():
        scores = sorted(r["families"][family]["score"] for r in clean if family in r["families"])
        if scores:
            out[family] = {
                "threshold": threshold,
                "clean_max": scores[-1],
                "clean_median": statistics.median(scores),
                "clean_scores": scores,
            }
    return out


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """P(score of a random positive > a random negative), ties counting half."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 4)


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _families(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["family"] for r in rows})


def _seeds(r: dict[str, Any]) -> str:
    n = int(r["seeds"])
    return "seed 0" if n == 1 else f"seeds 0-{n - 1} (each draws other probes and starts)"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def markdown(r: dict[str, Any]) -> str:
    s = r["summary"]
    lines = [
        "# Detection on the zoo",
        "",
        f"Produced by `{r['command']}` (hubscan {r['hubscan']}, policy `{r['policy']}`, "
        f"labels: {r['labels']}, {r['machine']}). Each model is audited exactly as "
        f"`hubscan audit` does, at {_seeds(r)}; a model is flagged when any search family's "
        "held-out score reaches its threshold. Rates count audits.",
        "",
        "| population | models | audits | TPR | flagged at every seed | AUROC "
        "| target identified |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ["all", *_families([m for m in r["models"] if m["kind"] == "backdoored"])]:
        g = s[name]
        auroc_cell = "-" if g["auroc"] is None else f"{g['auroc']:.3f}"
        lines.append(
            f"| backdoored: {name} | {g['models']} | {g['audits']} | {_pct(g['tpr'])} "
            f"| {_pct(g['flagged_at_every_seed'])} | {auroc_cell} "
            f"| {_pct(g['target_identified'])} |"
        )
    lines += [
        "",
        f"FPR on {s['clean_audits']} audits of {s['clean_models']} clean models: "
        f"**{_pct(s['fpr'])}** (clean models flagged at any seed: "
        f"{_pct(s['clean_flagged_at_any_seed'])}). Median audit "
        f"{s['median_seconds']:.1f} s wall, {s['median_passes']:.0f} image forward+backward "
        "passes (load and scan included in the time).",
        "",
        "## Calibration (clean models)",
        "",
        "| search family | threshold | clean max | clean median | clean scores |",
        "|---|---|---|---|---|",
    ]
    for family, c in r["calibration"].items():
        scores = ", ".join(f"{v:.2f}" for v in c["clean_scores"])
        lines.append(
            f"| {family} | {c['threshold']:.2f} | {c['clean_max']:.2f} | "
            f"{c['clean_median']:.2f} | {scores} |"
        )
    lines += [
        "",
        "## Every model",
        "",
        "| model | seed | kind | true target | flagged | by | suspected target | share | "
        + " | ".join(r["thresholds"])
        + " | s |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(r["thresholds"]) + "---|",
    ]
    for m in r["models"]:
        fams = " | ".join(
            f"{m['families'][f]['score']:.2f} {m['families'][f]['target']}"
            if f in m["families"]
            else "-"
            for f in r["thresholds"]
        )
        lines.append(
            f"| {m['name']} | {m['seed']} | {m['kind']} | {m['target'] or '-'} | "
            f"{'yes' if m['flagged'] else 'no'} | {m['flagged_by'] or '-'} | "
            f"{m['suspected_target']} | {m['target_share']:.2f} | {fams} | {m['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
