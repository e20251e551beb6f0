"""The removal commands: `hubscan patch` (audit + TBAR + verify + release directory) and
`hubscan demo` (the same on a small backdoored model built offline). Thin like every command:
parse, call the pipeline, render, exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubscan.cli_common import (
    VERDICT_EXIT,
    DebugOpt,
    DeviceOpt,
    Format,
    FormatOpt,
    OfflineOpt,
    OutputOpt,
    PolicyOpt,
    ProbesOpt,
    RefArg,
    SeedOpt,
    emit,
    err_console,
    live,
    run_command,
)
from hubscan.errors import ExitCode, NotRemediated
from hubscan.policy import load_policy

OutOpt = Annotated[
    Path, typer.Option("--out", help="release directory (written whole, or not at all)")
]


def patch(
    ref: RefArg,
    out: OutOpt,
    trigger: Annotated[
        str | None,
        typer.Option(help="known trigger spec (with --target); default: the audit's estimate"),
    ] = None,
    target: Annotated[str | None, typer.Option(help="the class the known trigger aims at")] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="label set: fashion-mnist or a file of class names (default: label-free over "
            "the policy's vocabulary; accuracy is then agreement with the audited model)",
        ),
    ] = None,
    probes: ProbesOpt = "default",
    policy: PolicyOpt = "default",
    format: FormatOpt = Format.human,
    output: OutputOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Audit a checkpoint, remove a backdoor by TBAR, verify it from disk, write a release.

    Exit 0 when no backdoor was found (nothing is written) or it was removed and verified;
    4 when no coefficient keeps clean accuracy or verification fails (nothing is written).
    """

    def body() -> int:
        from hubscan import pipeline_patch

        pol = load_policy(policy)
        try:
            with live() as (progress, bars):
                run = pipeline_patch.patch(
                    ref,
                    policy=pol,
                    out=out,
                    labels=labels,
                    probes=probes,
                    trigger=trigger,
                    target=target,
                    offline=offline or None,
                    device=device,
                    seed=seed,
                    progress=progress,
                    bars=bars,
                )
        except NotRemediated as err:
            _show_trials(err)
            raise
        emit(run, format, output)
        return VERDICT_EXIT[run.verdict]

    run_command(body, debug=debug)


def demo(
    out: Annotated[Path, typer.Option("--out", help="where the demo's release goes")] = Path(
        "hubscan-demo"
    ),
    debug: DebugOpt = False,
) -> None:
    """Offline, end to end: build (or reuse) a small backdoored CLIP, audit it, patch it."""

    def body() -> int:
        from hubscan import pipeline_patch, zoo
        from hubscan.cli_common import progress_bars

        with progress_bars() as bars:
            model = zoo.demo_model(progress=bars)
        err_console.print(
            f"demo model: {model.root} (backdoor planted: {model.trigger} -> {model.target}; "
            "the audit is not told)",
            highlight=False,
        )
        with live() as (progress, live_bars):
            run = pipeline_patch.patch(
                str(model.root),
                policy=load_policy("default"),
                out=out,
                labels=zoo.LABELS,
                trigger=model.trigger,
                target=model.target,
                estimate=True,
                progress=progress,
                bars=live_bars,
            )
        emit(run, Format.human, None)
        return ExitCode.OK if run.release is not None else ExitCode.NOT_REMEDIATED

    run_command(body, debug=debug)


def _show_trials(err: NotRemediated) -> None:
    """Why nothing was released: the coefficient table, or the failed verification's numbers."""
    from hubscan import report_patch
    from hubscan.records import RunReport

    if err.trials:
        report_patch.render_trials(err.trials, err_console)
    if isinstance(err.run, RunReport):
        report_patch.render_human(err.run, err_console)
