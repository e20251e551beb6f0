"""`hubscan publish RUN_DIR`: offer a verified release back as a Hub pull request.

Thin like every command: check the release and show what will be sent (stderr), find an open
hubscan pull request for the same audited commit (then nothing is sent), ask unless --yes, send
one commit, print where it went (stdout). Tokens come from huggingface_hub's own auth only; this
module never sees one. The Hub client is imported only when the command runs, so other commands
start without it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hubscan.cli_common import DebugOpt, Format, FormatOpt, err_console, run_command
from hubscan.errors import ExitCode, RefError, UsageError
from hubscan.fetch import parse_ref

if TYPE_CHECKING:
    from hubscan import publish as publishing


def publish(
    run_dir: Annotated[
        Path, typer.Argument(help="a release directory written by `hubscan patch --out`")
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="ORG/NAME to open the pull request on (default: the audited repo)"
        ),
    ] = None,
    new_repo: Annotated[
        bool,
        typer.Option(
            "--new-repo", help="create --to ORG/NAME and publish there instead of opening a PR"
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    format: FormatOpt = Format.human,
    debug: DebugOpt = False,
) -> None:
    """Open a pull request carrying a verified patch (weights, model card, evidence) on the Hub:
    one commit whose parent is the audited commit; files checked against their verified sha256."""

    def body() -> int:
        from hubscan import publish as publishing  # huggingface_hub: only when publishing

        if to is not None:
            ref = parse_ref(to)
            if ref.local_path is not None or ref.revision is not None:
                raise RefError(f"--to wants ORG/NAME, not {to!r}")
        plan = publishing.plan(run_dir, to=to, new_repo=new_repo)
        existing = publishing.existing_pr(plan)
        if existing is not None:
            err_console.print(
                f"an open hubscan pull request for {plan.audited_commit[:12]} already exists "
                f"(#{existing.num}): nothing was published",
                markup=False,
                highlight=False,
            )
            _result(format, url=existing.url, commit=None, pr_num=existing.num, plan=plan)
            return ExitCode.OK
        _show(plan)
        if not yes:
            _confirm(plan)
        done = publishing.publish(plan)
        _result(format, url=done.url, commit=done.commit, pr_num=done.pr_num, plan=plan)
        return ExitCode.OK

    run_command(body, debug=debug)


def _show(plan: publishing.Plan) -> None:
    where = (
        f"new repo {plan.target_repo}"
        if plan.new_repo
        else f"pull request on {plan.target_repo} from commit {plan.audited_commit}"
    )
    err_console.print(f"{plan.title}\n  → {where}", markup=False, highlight=False)
    for u in plan.uploads:
        err_console.print(
            f"  {u.path_in_repo}  {u.size} bytes  sha256 {u.sha256[:16]}…",
            markup=False,
            highlight=False,
        )


def _confirm(plan: publishing.Plan) -> None:
    """A yes from the terminal, or nothing is sent (no terminal, EOF or no: a usage error)."""
    err_console.print(f"publish {len(plan.uploads)} files? [y/N] ", end="", markup=False)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("not confirmed: nothing was published (pass --yes to skip the question)")


def _result(
    fmt: Format, *, url: str, commit: str | None, pr_num: int | None, plan: publishing.Plan
) -> None:
    if fmt is Format.json:
        data = {
            "url": url,
            "pr_num": pr_num,
            "commit": commit,
            "created": commit is not None,
            "repo": plan.target_repo,
            "parent_commit": None if plan.new_repo else plan.audited_commit,
            "files": [{"path": u.path_in_repo, "sha256": u.sha256} for u in plan.uploads],
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(url + "\n")
