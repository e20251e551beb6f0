"""What every command shares: the stderr console, the run wrapper that maps errors to exit
codes (the one broad exception handler in hubscan), progress bars, and the common options.

Must not define commands (cli.py, cli_bench.py) or do any work of the pipeline.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from hubscan.errors import ExitCode, HubscanError

err_console = Console(stderr=True)


PolicyOpt = Annotated[
    str, typer.Option("--policy", "-p", help="bundled policy name or a TOML file")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks (or set HUBSCAN_DEBUG=1)")]


def run_command(body: Callable[[], int], *, debug: bool) -> NoReturn:
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
