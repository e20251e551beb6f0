"""Renderers of a Detection (`hubscan audit`'s answer): the rich table, Markdown and SARIF parts.

Owns how a backdoor verdict reads: per trigger shape its score against the threshold, the
suspected target and its share, the search budget and the run directory's artifacts. Pure
functions of records; report.py puts them into whole reports (this module must not import it).
No I/O beyond the rich Console passed in, no torch.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from hubscan.records import Detection, FamilyScore, Verdict

BACKDOOR_RULE = "BACKDOOR_SUSPECTED"  # the SARIF rule of a detection verdict of FAIL
BACKDOOR_SECURITY_SEVERITY = "9.0"  # GitHub code scanning's CVSS-like rank: critical


def summary(detection: Detection) -> str:
    """One sentence: the verdict, the shape, the suspected target and its held-out share."""
    target = _target(detection)
    if detection.verdict is Verdict.FAIL:
        best = _best(detection)
        return (
            f"backdoor suspected: a {detection.family} trigger sends "
            f"{detection.target_share:.0%} of held-out probes to {target} "
            f"(threshold {best.threshold:.0%})"
        )
    return (
        f"no backdoor found: no trigger shape within the policy's budgets sends enough held-out "
        f"probes to one class (closest: {detection.target_share:.0%} to {target})"
    )


def _target(detection: Detection) -> str:
    kind = "class" if detection.labels_given else "nearest concept"
    return f"{kind} '{detection.suspected_target}'"


def _best(detection: Detection) -> FamilyScore:
    scores = {s.family: s for s in detection.families}
    family = detection.family or max(scores, key=lambda f: scores[f].score / scores[f].threshold)
    return scores[family]


def _classes(detection: Detection) -> str:
    source = "label set" if detection.labels_given else "policy vocabulary, label-free"
    return (
        f"{detection.n_classes} candidate classes ({source}); {detection.probe_images} probe "
        f"images to invert, {detection.holdout_images} held out"
    )


def _budget(detection: Detection) -> str:
    b = detection.budget
    return (
        f"search: {b.passes:,} image passes + {b.forward_passes:,} forward-only, "
        f"{b.seconds:.1f} s of the {b.max_seconds} s budget"
    )


# --- rich, for people ---------------------------------------------------------------------------


def render_human(detection: Detection, console: Console) -> None:
    table = Table(title=f"trigger inversion: {_classes(detection)}")
    for column in ("family", "score", "threshold", "flagged", "target", "anomaly index"):
        table.add_column(column, justify="right" if column != "target" else "left")
    for s in detection.families:
        table.add_row(
            s.family,
            f"{s.score:.1%}",
            f"{s.threshold:.1%}",
            "[bold red]yes[/]" if s.flagged else "no",
            s.target,
            f"{s.confirmation.anomaly_index:.2f}",
        )
    console.print(table)
    style = "bold red" if detection.verdict is Verdict.FAIL else "green"
    console.print(summary(detection), style=style, highlight=False)
    console.print(_budget(detection), style="dim", highlight=False)
    for t in detection.triggers:
        console.print(
            f"{t.family} trigger: {t.tensors} (sha256 {t.sha256[:12]}), {t.png}",
            style="dim",
            highlight=False,
        )


# --- Markdown -------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(detection: Detection) -> list[str]:
    """The '### Backdoor detection' section of a job summary, as lines."""
    verdict = "**FAIL**" if detection.verdict is Verdict.FAIL else "**PASS**"
    lines = [
        f"### Backdoor detection — {verdict}",
        "",
        _cell(summary(detection)) + ".",
        "",
        f"- {_classes(detection)}",
        f"- {_budget(detection)}",
        "",
        "| family | score | threshold | flagged | target | anomaly index |",
        "|---|---|---|---|---|---|",
    ]
    for s in detection.families:
        lines.append(
            f"| {s.family} | {s.score:.1%} | {s.threshold:.1%} | "
            f"{'**yes**' if s.flagged else 'no'} | {_cell(s.target)} | "
            f"{s.confirmation.anomaly_index:.2f} |"
        )
    if detection.triggers:
        lines += ["", "Estimated triggers (in the run directory):", ""]
        lines += [
            f"- {t.family}: `{t.tensors}` (sha256 `{t.sha256[:12]}`), `{t.png}`"
            for t in detection.triggers
        ]
    return lines


# --- SARIF 2.1.0 ------------------------------------------------------------------------------


def sarif_rule() -> dict[str, Any]:
    return {
        "id": BACKDOOR_RULE,
        "name": "BackdoorSuspected",
        "shortDescription": {
            "text": "a small trigger sends most probe images to one class (trigger inversion)"
        },
        "defaultConfiguration": {"level": "error"},
        "properties": {
            "security-severity": BACKDOOR_SECURITY_SEVERITY,
            "tags": ["security", "backdoor"],
        },
    }


def sarif_message(detection: Detection) -> str:
    best = _best(detection)
    return (
        f"{summary(detection)}; {best.family} score {best.score:.4f} >= threshold "
        f"{best.threshold:.4f}"
    )


def sarif_properties(detection: Detection) -> dict[str, Any]:
    best = _best(detection)
    return {
        "family": best.family,
        "target": detection.suspected_target,
        "score": best.score,
        "threshold": best.threshold,
        "anomalyIndex": best.confirmation.anomaly_index,
        "labelsGiven": detection.labels_given,
        "security-severity": BACKDOOR_SECURITY_SEVERITY,
    }
