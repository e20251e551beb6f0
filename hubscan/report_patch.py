"""Renderers of a patch (`hubscan patch`'s answer): the before/after table, the coefficient
trials, the model-card section and the Markdown part of a report.

Owns how a removal reads: what was removed, the coefficient chosen by rule and why, clean
accuracy and attack success before and after on the test split, the re-audit, and where the
release is. Pure functions of records; report.py puts them into whole reports (this module must
not import it). No I/O beyond the rich Console passed in, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from hubscan.records import Patch, RunReport, Verdict, Verification

CARD_HEADING = "## hubscan: backdoor removed"
_HOME = "https://github.com/hubscan/hubscan"


def summary(patch: Patch, verification: Verification) -> str:
    head = verification.comparisons[0]
    return (
        f"removed: {head.source} trigger {patch.trigger} -> '{patch.target}', attack success "
        f"{head.before.attack_success:.1%} -> {head.after.attack_success:.1%}, "
        f"{verification.accuracy_kind} {head.before.clean_accuracy:.1%} -> "
        f"{head.after.clean_accuracy:.1%} (test split, {verification.test_images} images)"
    )


def comparison_rows(verification: Verification) -> list[tuple[str, str, str, str, str, str]]:
    """(trigger, target, CA before, CA after, ASR before, ASR after) per trigger measured."""
    return [
        (
            f"{c.source}: {c.trigger}",
            c.target,
            f"{c.before.clean_accuracy:.1%}",
            f"{c.after.clean_accuracy:.1%}",
            f"{c.before.attack_success:.1%}",
            f"{c.after.attack_success:.1%}",
        )
        for c in verification.comparisons
    ]


def _redetection(verification: Verification) -> str:
    d = verification.redetection
    if d is None:
        return "not re-audited"
    verdict = "still finds a backdoor" if d.verdict is Verdict.FAIL else "finds no backdoor"
    closest = f"closest: {d.target_share:.0%} to '{d.suspected_target}'"
    return f"re-audit of the patched model {verdict} ({closest})"


def render_human(run: RunReport, console: Console) -> None:
    patch, verification = run.patch, run.verification
    if patch is None or verification is None:
        return
    kind = verification.accuracy_kind
    table = Table(title=f"TBAR patch, test split ({verification.test_images} images)")
    for column in (
        "trigger",
        "target",
        f"{kind} before",
        "after",
        "attack success before",
        "after",
    ):
        table.add_column(column, overflow="fold")
    for row in comparison_rows(verification):
        table.add_row(*row)
    console.print(table)
    console.print(
        f"coefficient {patch.coef:g} ({_vector(patch)}, |tau| {patch.vector_norm:.2f}) "
        f"chosen on the val split: lowest attack success with {kind} >= "
        f"{patch.clean_floor:g} x {patch.reference.clean_accuracy:.1%}; "
        f"{len(patch.trials) - 1} coefficients tried",
        highlight=False,
    )
    console.print(_redetection(verification), highlight=False)
    if run.release is not None:
        console.print(f"release: [bold]{run.release.root}[/] ({len(run.release.files) + 1} files)")


def _vector(patch: Patch) -> str:
    if len(patch.curves) == 1:
        return f"{patch.variant} vector"
    tried = ", ".join(f"{c.damping:g}" for c in patch.curves)
    return f"{patch.variant} vector, damping {patch.damping:g} of {tried}"


def render_trials(trials: Sequence[tuple[float, float, float]], console: Console) -> None:
    """The coefficient table NotRemediated carries: why no coefficient qualified."""
    table = Table(title="TBAR coefficients tried (val split)")
    for column in ("coefficient", "accuracy (or agreement)", "attack success"):
        table.add_column(column, justify="right")
    for coef, clean, attack in trials:
        table.add_row(f"{coef:g}", f"{clean:.1%}", f"{attack:.1%}")
    console.print(table)


def render_markdown(run: RunReport) -> list[str]:
    patch, verification = run.patch, run.verification
    if patch is None or verification is None:
        return []
    kind = verification.accuracy_kind
    lines = [
        f"| trigger | target | {kind} before | after | attack success before | after |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        "| " + " | ".join(_cell(c) for c in row) + " |" for row in comparison_rows(verification)
    ]
    lines += [
        "",
        f"- TBAR ({_vector(patch)} from {patch.tune_images} images, "
        f"{patch.steps} steps), coefficient **{patch.coef:g}** chosen on {patch.val_images} "
        f"val images: the lowest attack success keeping {kind} >= {patch.clean_floor:g} x the "
        f"audited model's",
        f"- measured on {verification.test_images} test images neither step saw, from the "
        f"patched file (sha256 `{verification.weights_sha256[:12]}`)",
        f"- {_redetection(verification)}",
    ]
    return lines


def card_section(run: RunReport) -> str:
    """The model card's hubscan section (starts with CARD_HEADING)."""
    snap = run.scan.snapshot
    lines = [
        CARD_HEADING,
        "",
        f"This checkpoint is `{snap.repo_id}` at commit `{snap.commit or 'local directory'}` "
        f"with a backdoor removed by [hubscan]({_HOME}) {run.tool_version} "
        "(TBAR: task-vector negation of the trigger's direction in weight space, "
        "arXiv 2510.14845). Only the image tower's weights changed.",
        "",
        *render_markdown(run),
        f"- policy `{run.policy_name}` (sha256 `{run.policy_sha256[:12]}`)",
        "",
        "Check it yourself: `hubscan audit <this repo>`, and `hubscan eval <this repo> "
        "--labels <label set> --trigger '<spec>' --target <class>`.",
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
