"""The command line: thin Typer commands that parse, call the pipeline, render and exit.

Owns argument parsing, the output format choice, writing --output atomically, and the mapping of
errors to exit codes (the one broad exception handler in hubscan). Must not do any work itself:
stages run in pipeline.py, rendering lives in report.py. Uses only Typer's public API (never
`import click`). `hubscan scan` must never import torch: keep heavy imports inside commands.
"""

from __future__ import annotations

import io
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from hubscan import __version__, pipeline, report
from hubscan.atomic import write_text_atomic
from hubscan.errors import ExitCode, HubscanError
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
bench_app = typer.Typer(help="Benchmarks; results go to benchmarks/.", no_args_is_help=True)
zoo_app = typer.Typer(
    help="Build real backdoored and clean tiny CLIPs offline.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")
app.add_typer(bench_app, name="bench")
app.add_typer(zoo_app, name="zoo")

err_console = Console(stderr=True)


class Format(StrEnum):
    human = "human"
    json = "json"
    sarif = "sarif"
    markdown = "markdown"


RefArg = Annotated[
    str, typer.Argument(help="org/name, org/name@REV (branch, tag or commit sha), or a directory")
]
PolicyOpt = Annotated[
    str, typer.Option("--policy", "-p", help="bundled policy name or a TOML file")
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
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks (or set HUBSCAN_DEBUG=1)")]

VERDICT_EXIT = {
    Verdict.PASS: ExitCode.OK,
    Verdict.FAIL: ExitCode.FINDINGS,
    Verdict.NO_VERDICT: ExitCode.NO_VERDICT,
}


def _run(body: Callable[[], int], *, debug: bool) -> NoReturn:
    """Run a command body; every failure becomes one line on stderr and its exit code."""
    debug = debug or os.environ.get("HUBSCAN_DEBUG", "") not in ("", "0")
    try:
        code = body()
    except HubscanError as err:
        if debug:
            traceback.print_exc()
        err_console.print(f"hubscan: {err}", markup=False, highlight=False, soft_wrap=True)
        code = err.exit_code
    except KeyboardInterrupt:
        err_console.print("hubscan: interrupted; nothing was written", markup=False)
        code = 130
    except Exception as err:  # the one broad handler: a bug, reported as such
        if debug:
            traceback.print_exc()
        err_console.print(
            f"hubscan: internal error: {type(err).__name__}: {err} (rerun with --debug)",
            markup=False,
        )
        code = ExitCode.INTERNAL
    raise typer.Exit(int(code))


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

    _run(body, debug=debug)


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

    _run(body, debug=debug)


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

    _run(body, debug=debug)


@zoo_app.command("build")
def zoo_build(
    out: Annotated[Path, typer.Option("--out", help="where the models and manifest.json go")],
    quick: Annotated[bool, typer.Option(help="base + 2 backdoored + 2 clean only")] = False,
    debug: DebugOpt = False,
) -> None:
    """Train (or reuse from the cache) the zoo and write it in Hub layout with a manifest."""

    def body() -> int:
        from hubscan import zoo

        with _progress_bars() as bars:
            manifest = zoo.build_zoo(out, quick=quick, progress=bars)
        report.render_zoo(manifest, Console(file=sys.stdout))
        return ExitCode.OK

    _run(body, debug=debug)


@contextmanager
def _progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Rich progress bars on stderr, one per task: `bars(name, total)` returns its tick."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console) as bars:

        def add(name: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(name, total=total)
            return lambda n: bars.advance(task, n)

        yield add


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

    _run(body, debug=False)


@policy_app.command("check")
def policy_check(policy: Annotated[str, typer.Argument(help="bundled name or TOML file")]) -> None:
    """Validate a policy; every problem is listed, exit 3 if any."""

    def body() -> int:
        pol = load_policy(policy)
        sys.stdout.write(f"ok: policy {pol.name!r} from {pol.source} (sha256 {pol.sha256})\n")
        return ExitCode.OK

    _run(body, debug=False)


@bench_app.command("scan")
def bench_scan(
    size_mb: Annotated[int, typer.Option(help="size of the safetensors file to scan")] = 600,
    runs: Annotated[int, typer.Option(help="timed runs; the median is reported")] = 5,
    out: Annotated[Path, typer.Option(help="where scan.md and scan.json go")] = Path("benchmarks"),
) -> None:
    """Time `hubscan scan` on a large safetensors file (median of several runs)."""
    from hubscan import bench

    _run(lambda: bench.scan_speed(size_mb=size_mb, runs=runs, out=out), debug=False)


@bench_app.command("zoo")
def bench_zoo(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    out: Annotated[Path, typer.Option(help="where zoo.md and zoo.json go")] = Path("benchmarks"),
) -> None:
    """Summarize a built zoo against its promises (exit 1 if a model breaks one)."""
    from hubscan import bench

    command = f"hubscan zoo build --out {zoo} && hubscan bench zoo --zoo {zoo}"
    _run(lambda: bench.zoo_summary(zoo=zoo, out=out, command=command), debug=False)


@bench_app.command("detection")
def bench_detection(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    labels: Annotated[
        str | None, typer.Option(help="label set for every audit; omit for label-free")
    ] = "fashion-mnist",
    label_free: Annotated[bool, typer.Option(help="audit without a label set")] = False,
    policy: PolicyOpt = "default",
    out: Annotated[Path, typer.Option(help="where detection.md and .json go")] = Path("benchmarks"),
) -> None:
    """Audit every model of a zoo: TPR/FPR/AUROC, target identification, times, calibration."""
    from hubscan import bench_detection

    def body() -> int:
        chosen = None if label_free else labels
        command = f"hubscan bench detection --zoo {zoo}" + (" --label-free" if label_free else "")
        with _progress_bars() as bars:
            tick = bars("audits", _zoo_size(zoo))
            result = bench_detection.run_detection_bench(
                zoo=zoo,
                out=out,
                policy=load_policy(policy),
                labels=chosen,
                command=command,
                tick=lambda name: tick(1),
            )
        s = result["summary"]
        sys.stdout.write(
            f"TPR {s['all']['tpr']:.0%} · FPR {s['fpr']:.0%} · AUROC {s['all']['auroc']}\n"
        )
        return ExitCode.OK

    _run(body, debug=False)


@bench_app.command("perf")
def bench_perf(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    model: Annotated[str, typer.Option(help="the zoo model to audit")] = "patch-white-br-bag",
    vit: Annotated[bool, typer.Option(help="also audit ViT-B-32 at 224 px (minutes)")] = True,
    policy: PolicyOpt = "default",
    out: Annotated[Path, typer.Option(help="where perf.md and .json go")] = Path("benchmarks"),
) -> None:
    """Detection cost: hubscan vs per-class Neural Cleanse (100 classes), and ViT-B-32 timing."""
    from hubscan import bench_perf

    def body() -> int:
        command = f"hubscan bench perf --zoo {zoo} --model {model}" + ("" if vit else " --no-vit")
        result = bench_perf.run_perf_bench(
            zoo=zoo, model=model, out=out, policy=load_policy(policy), command=command, vit=vit
        )
        sys.stdout.write(
            f"hubscan {result['hubscan_detector']['passes']:,} passes vs Neural Cleanse "
            f"{result['neural_cleanse']['passes']:,} ({result['pass_ratio']}x)\n"
        )
        return ExitCode.OK

    _run(body, debug=False)


def _zoo_size(zoo: Path) -> int:
    try:
        return sum(
            m["kind"] != "base" for m in json.loads((zoo / "manifest.json").read_text())["models"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return 0


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
