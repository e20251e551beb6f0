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

from hubscan import __version__, pipeline, report
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
    live,
    policy_with,
    run_command,
    stages,
)
from hubscan.cli_patch import demo, patch
from hubscan.errors import ExitCode
from hubscan.policy import load_policy

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


@app.command()
def audit(
    ref: RefArg,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="candidate target classes: fashion-mnist or a file of class names "
            "(default: none, label-free over the policy's vocabulary)",
        ),
    ] = None,
    probes: ProbesOpt = "default",
    policy: PolicyOpt = "default",
    fail_on: FailOnOpt = None,
    format: FormatOpt = Format.human,
    output: OutputOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="run directory: report.json and the estimated triggers"),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Scan, load and probe a checkpoint for a backdoor by trigger inversion (the gate)."""

    def body() -> int:
        pol = policy_with(policy, fail_on)
        with live() as (progress, bars):
            run = pipeline.audit(
                ref,
                policy=pol,
                labels=labels,
                probes=probes,
                offline=offline or None,
                device=device,
                seed=seed,
                out=out,
                progress=progress,
                bars=bars,
            )
        emit(run, format, output)
        return VERDICT_EXIT[run.verdict]

    run_command(body, debug=debug)


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
