"""The command line: thin Typer commands that parse, call the pipeline, render and exit.

Owns the app, argument parsing, the output format choice and writing --output atomically; the
bench and zoo commands live in cli_bench.py, the error-to-exit-code wrapper and shared options in
cli_common.py. Must not do any work itself:
stages run in pipeline.py, rendering lives in report.py. Uses only Typer's public API (never
`import click`). `hubscan scan` must never import torch: keep heavy imports inside commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hubscan import __version__, pipeline, pipeline_gate, report
from hubscan.cli_bench import bench_app, zoo_app
from hubscan.cli_common import (
    VERDICT_EXIT,
    DebugOpt,
    DeviceOpt,
    FailOnOpt,
    Format,
    FormatOpt,
    LabelsOpt,
    OfflineOpt,
    OutputOpt,
    PolicyOpt,
    ProbesOpt,
    RefArg,
    SeedOpt,
    emit,
    emit_batch,
    err_console,
    live,
    policy_with,
    run_command,
    stages,
)
from hubscan.cli_patch import demo, patch
from hubscan.cli_publish import publish
from hubscan.errors import ExitCode, UsageError
from hubscan.policy import load_policy
from hubscan.records import BatchReport, RunReport

EXIT_CODES = """\
Exit codes:
0 finished: nothing at or above fail_on, no backdoor found ·
1 the gate fails: findings at/above fail_on, loading refused, backdoor suspected ·
2 usage error ·
3 no verdict: bad policy, repo, revision, auth or input; no weights scanned;
too few probe images; detection out of time or unable to judge the model ·
4 a patch did not pass verification ·
5 internal error (rerun with --debug)."""

app = typer.Typer(
    name="hubscan",
    help="Vet CLIP checkpoints from the Hugging Face Hub before they ship.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
policy_app = typer.Typer(help="Show and check policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(bench_app, name="bench")
app.add_typer(zoo_app, name="zoo")
app.command()(patch)
app.command()(demo)
app.command()(publish)


@app.command()
def scan(
    ref: RefArg,
    policy: PolicyOpt = "default",
    format: FormatOpt = Format.human,
    output: OutputOpt = None,
    offline: OfflineOpt = False,
    fail_on: FailOnOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Scan a checkpoint's files without loading them (never imports torch)."""

    def body() -> int:
        pol = policy_with(policy, fail_on)
        with stages() as progress:
            run = pipeline.scan(ref, policy=pol, offline=offline or None, progress=progress)
        emit(run, format, output)
        return VERDICT_EXIT[run.verdict]

    run_command(body, debug=debug)


ModelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--models",
        help="a models.lock (one org/name@<commit sha> per line): audit each, one combined "
        "report, one SARIF run per model",
    ),
]
ExitZeroOpt = Annotated[
    bool,
    typer.Option(
        "--exit-zero", help="report only: exit 0 when the gate fails (3, 4 and 5 still fail)"
    ),
]
SummaryOpt = Annotated[
    Path | None,
    typer.Option(
        "--summary",
        help="append a Markdown job summary (under 1 MiB) to FILE, e.g. $GITHUB_STEP_SUMMARY",
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="probe again even when the audit cache holds a result for this commit, policy, "
        "hubscan version and inputs",
    ),
]


@app.command()
def audit(
    ref: Annotated[
        str | None,
        typer.Argument(
            help="org/name, org/name@REV (branch, tag or commit sha), or a directory; "
            "or use --models"
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="candidate target classes: fashion-mnist or a file of class names "
            "(default: none, label-free over the policy's vocabulary)",
        ),
    ] = None,
    models: ModelsOpt = None,
    probes: ProbesOpt = "default",
    policy: PolicyOpt = "default",
    fail_on: FailOnOpt = None,
    exit_zero: ExitZeroOpt = False,
    format: FormatOpt = Format.human,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="run directory: report.json and the estimated triggers (with --models, one "
            "sub-directory per model)",
        ),
    ] = None,
    no_cache: NoCacheOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Scan, load and probe a checkpoint (or every model of a models.lock) for a backdoor by
    trigger inversion: the gate."""

    def body() -> int:
        if (ref is None) == (models is None):
            raise UsageError("give one model REF or --models FILE (not both, not neither)")
        pol = policy_with(policy, fail_on)
        with live() as (progress, bars):
            if models is not None:
                result: RunReport | BatchReport = pipeline_gate.audit_models(
                    models,
                    policy=pol,
                    labels=labels,
                    probes=probes,
                    offline=offline or None,
                    device=device,
                    seed=seed,
                    out=out,
                    use_cache=not no_cache,
                    started=_announce,
                    progress=progress,
                    bars=bars,
                )
            else:
                result = pipeline.audit(
                    ref or "",
                    policy=pol,
                    labels=labels,
                    probes=probes,
                    offline=offline or None,
                    device=device,
                    seed=seed,
                    out=out,
                    use_cache=not no_cache,
                    progress=progress,
                    bars=bars,
                )
        if isinstance(result, BatchReport):
            emit_batch(result, format, output, summary)
        else:
            emit(result, format, output, summary)
        code = VERDICT_EXIT[result.verdict]
        return ExitCode.OK if exit_zero and code is ExitCode.FINDINGS else code

    run_command(body, debug=debug)


def _announce(index: int, total: int, ref: str) -> None:
    err_console.print(f"[{index + 1}/{total}] {ref}", markup=False, highlight=False)


@app.command("eval")
def eval_(
    ref: RefArg,
    labels: LabelsOpt = "fashion-mnist",
    probes: ProbesOpt = "default",
    trigger: Annotated[
        str | None, typer.Option(help="trigger spec, e.g. patch:size=3,pos=br,pattern=white")
    ] = None,
    target: Annotated[str | None, typer.Option(help="the class the trigger aims at")] = None,
    policy: PolicyOpt = "default",
    format: FormatOpt = Format.human,
    offline: OfflineOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    debug: DebugOpt = False,
) -> None:
    """Clean accuracy (and attack success with --trigger/--target) of a model, zero-shot."""

    def body() -> int:
        pol = load_policy(policy)
        with stages() as progress:
            progress("evaluate")
            result = pipeline.evaluate(
                ref,
                policy=pol,
                labels=labels,
                probes=probes,
                trigger=trigger,
                target=target,
                offline=offline or None,
                seed=seed,
                device=device,
            )
        if format is Format.json:
            sys.stdout.write(json.dumps(report.to_jsonable(result), indent=2) + "\n")
        else:
            report.render_evaluation(result, Console(file=sys.stdout))
        return ExitCode.OK

    run_command(body, debug=debug)


@policy_app.command("show")
def policy_show(
    policy: Annotated[str, typer.Argument(help="bundled name or TOML file")] = "default",
) -> None:
    """Print the effective policy (after `extends`) as JSON."""

    def body() -> int:
        pol = load_policy(policy)
        data = report.to_jsonable(pol)
        data["safetensors"]["dtypes"] = sorted(pol.safetensors.dtypes)
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return ExitCode.OK

    run_command(body, debug=False)


@policy_app.command("check")
def policy_check(policy: Annotated[str, typer.Argument(help="bundled name or TOML file")]) -> None:
    """Validate a policy; every problem is listed, exit 3 if any."""

    def body() -> int:
        pol = load_policy(policy)
        sys.stdout.write(f"ok: policy {pol.name!r} from {pol.source} (sha256 {pol.sha256})\n")
        return ExitCode.OK

    run_command(body, debug=False)


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"hubscan {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """Vet CLIP checkpoints from the Hugging Face Hub before they ship."""


def main() -> None:
    app(prog_name="hubscan")


__all__ = ["app", "main"]
