"""The command line: thin Typer commands that parse, call the pipeline, render and exit.

Owns the app, argument parsing, the output format choice and writing --output atomically; the
bench and zoo commands live in cli_bench.py, the error-to-exit-code wrapper and shared options in
cli_common.py. Must not do any work itself:
stages run in pipeline.py, rendering lives in report.py. Uses only Typer's public API (never
`import click`). `hubscan scan` must never import torch: keep heavy imports inside commands.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hubscan import __version__, pipeline, report
from hubscan.atomic import write_text_atomic
from hubscan.cli_bench import bench_app, zoo_app
from hubscan.cli_common import DebugOpt, PolicyOpt, err_console, run_command
from hubscan.errors import ExitCode
from hubscan.policy import Policy, load_policy, with_fail_on
from hubscan.records import RunReport, Severity, Verdict

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


class Format(StrEnum):
    human = "human"
    json = "json"
    sarif = "sarif"
    markdown = "markdown"


RefArg = Annotated[
    str, typer.Argument(help="org/name, org/name@REV (branch, tag or commit sha), or a directory")
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output format")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="write the report to FILE instead of stdout")
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="use only the local HF cache (as HF_HUB_OFFLINE=1)")
]
SeverityName = Enum("SeverityName", {s.label: s.label for s in Severity}, type=str)  # type: ignore[misc]
FailOnOpt = Annotated[
    SeverityName | None, typer.Option("--fail-on", help="override the policy's gate")
]


VERDICT_EXIT = {
    Verdict.PASS: ExitCode.OK,
    Verdict.FAIL: ExitCode.FINDINGS,
    Verdict.NO_VERDICT: ExitCode.NO_VERDICT,
}


def _render(run: RunReport, fmt: Format, *, to_file: bool) -> str:
    if fmt is Format.json:
        return report.render_json(run)
    if fmt is Format.sarif:
        return report.render_sarif([run])
    if fmt is Format.markdown:
        return report.render_markdown(run)
    buffer = io.StringIO()
    # A terminal gets colour; a file gets plain text at a fixed width.
    console = (
        Console(file=buffer, width=120, no_color=True)
        if to_file
        else Console(file=buffer, force_terminal=sys.stdout.isatty(), width=Console().width)
    )
    report.render_human(run, console)
    return buffer.getvalue()


def _emit(run: RunReport, fmt: Format, output: Path | None) -> None:
    text = _render(run, fmt, to_file=output is not None)
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text)


def _policy(spec: str, fail_on: SeverityName | None) -> Policy:
    policy = load_policy(spec)
    return policy if fail_on is None else with_fail_on(policy, Severity.parse(fail_on.value))


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
        pol = _policy(policy, fail_on)
        with _stages() as progress:
            run = pipeline.scan(ref, policy=pol, offline=offline or None, progress=progress)
        _emit(run, format, output)
        return VERDICT_EXIT[run.verdict]

    run_command(body, debug=debug)


@contextmanager
def _stages() -> Iterator[pipeline.Progress]:
    """A transient spinner on stderr naming the running stage; silent when stderr is not a
    terminal (CI logs and captured output get only results and one-line errors)."""
    with err_console.status("starting…", spinner="dots") as status:
        yield lambda stage: status.update(f"{stage}…")


LabelsOpt = Annotated[
    str, typer.Option("--labels", help="label set: fashion-mnist, or a text file of class names")
]
ProbesOpt = Annotated[
    str,
    typer.Option("--probes", help="default (bundled), fashion-mnist[:test|:train], or a folder"),
]
SeedOpt = Annotated[int, typer.Option(help="seed for anything random")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, or cuda when a GPU is present")]


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
        pol = _policy(policy, fail_on)
        with _live() as (progress, bars):
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
        _emit(run, format, output)
        return VERDICT_EXIT[run.verdict]

    run_command(body, debug=debug)


@contextmanager
def _live() -> Iterator[tuple[pipeline.Progress, pipeline.Bars]]:
    """On a terminal's stderr, transient: a spinner naming the running stage, and a bar with a
    step count for a long one. Silent when stderr is not a terminal, like `_stages`."""
    if not err_console.is_terminal:
        yield (lambda stage: None), (lambda name, total: lambda n: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, Task
    from rich.progress import TimeElapsedColumn as Elapsed
    from rich.text import Text

    class Count(MofNCompleteColumn):  # "done/total", and nothing for the stage spinner's "0/?"
        def render(self, task: Task) -> Text:
            return Text("") if task.total is None else super().render(task)

    columns = (SpinnerColumn(), "{task.description}", BarColumn(), Count(), Elapsed())
    with Progress(*columns, console=err_console, transient=True) as live:
        spinner = live.add_task("starting…", total=None)

        def stage(name: str) -> None:
            for task in live.task_ids:
                live.update(task, visible=task == spinner)
            live.update(spinner, description=f"{name}…")

        def bars(name: str, total: int) -> Callable[[int], None]:
            live.update(spinner, visible=False)
            bar = live.add_task(name, total=total)
            return lambda n: live.advance(bar, n)

        yield stage, bars


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
        with _stages() as progress:
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
