"""What every command shares: the stderr console, the run wrapper that maps errors to exit
codes (the one broad exception handler in hubscan), progress bars, and the common options.

Must not define commands (cli.py, cli_bench.py) or do any work of the pipeline.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from hubscan import pipeline, report, report_batch
from hubscan.atomic import write_text_atomic
from hubscan.errors import ExitCode, HubscanError, UsageError
from hubscan.policy import Policy, load_policy, with_fail_on
from hubscan.records import BatchReport, RunReport, Severity, Verdict

err_console = Console(stderr=True)


PolicyOpt = Annotated[
    str, typer.Option("--policy", "-p", help="bundled policy name or a TOML file")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks (or set HUBSCAN_DEBUG=1)")]


def run_command(body: Callable[[], int], *, debug: bool) -> NoReturn:
    """Run a command body; every failure becomes one line on stderr and its exit code."""
    debug = debug or os.environ.get("HUBSCAN_DEBUG", "") not in ("", "0")
    try:
        with _sigterm_as_interrupt():
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


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a CI job cancelled) raises KeyboardInterrupt like Ctrl-C, so the same
    cleanup runs: a staged release directory is removed instead of left half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        # None: a handler not set from Python, which cannot be put back; the default is closest.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Rich progress bars on stderr, one per task: `bars(name, total)` returns its tick."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console) as bars:

        def add(name: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(name, total=total)
            return lambda n: bars.advance(task, n)

        yield add


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


def render_run(run: RunReport, fmt: Format, *, to_file: bool) -> str:
    if fmt is Format.json:
        return report.render_json(run)
    if fmt is Format.sarif:
        return report.render_sarif([run])
    if fmt is Format.markdown:
        return report.render_markdown(run)
    buffer = io.StringIO()
    report.render_human(run, _console(buffer, to_file=to_file))
    return buffer.getvalue()


def _console(buffer: io.StringIO, *, to_file: bool) -> Console:
    """A terminal gets colour; a file gets plain text at a fixed width."""
    if to_file:
        return Console(file=buffer, width=120, no_color=True)
    return Console(file=buffer, force_terminal=sys.stdout.isatty(), width=Console().width)


def emit(run: RunReport, fmt: Format, output: Path | None, summary: Path | None = None) -> None:
    _write(render_run(run, fmt, to_file=output is not None), output)
    if summary is not None:
        append_summary(summary, report.render_markdown(run))


def emit_batch(
    batch: BatchReport, fmt: Format, output: Path | None, summary: Path | None = None
) -> None:
    if fmt is Format.json:
        text = report_batch.render_json(batch)
    elif fmt is Format.sarif:
        text = report_batch.render_sarif(batch)
    elif fmt is Format.markdown:
        text = report_batch.render_markdown(batch)
    else:
        buffer = io.StringIO()
        report_batch.render_human(batch, _console(buffer, to_file=output is not None))
        text = buffer.getvalue()
    _write(text, output)
    if summary is not None:
        append_summary(summary, report_batch.render_markdown(batch))


def append_summary(path: Path, markdown: str) -> None:
    """Append to a job summary file ($GITHUB_STEP_SUMMARY is appended to by every step)."""
    try:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(markdown)
    except OSError as err:
        raise UsageError(f"cannot write the summary to {path}: {err.strerror or err}") from err


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text)


def policy_with(spec: str, fail_on: SeverityName | None) -> Policy:
    policy = load_policy(spec)
    return policy if fail_on is None else with_fail_on(policy, Severity.parse(fail_on.value))


@contextmanager
def stages() -> Iterator[pipeline.Progress]:
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


@contextmanager
def live() -> Iterator[tuple[pipeline.Progress, pipeline.Bars]]:
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
