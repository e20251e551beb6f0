"""Renderers for `hubscan audit --models`: one combined report over many models.

Owns the combined JSON (the BatchReport with every model's full run), SARIF 2.1.0 with one run per
model (each with its own automationDetails id, so code scanning keeps one category per model; a
model that could not be audited is a run whose invocation failed, never an empty success), the
Markdown job summary, kept under GitHub's 1 MiB step-summary limit, and the human table. Pure
functions of records, like report.py.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from hubscan import report
from hubscan.jsonio import to_jsonable
from hubscan.records import BatchReport, ModelResult, Verdict

SUMMARY_MAX_BYTES = 1 << 20  # GitHub rejects a step summary over 1 MiB
_TEXT = {Verdict.PASS: "PASS", Verdict.FAIL: "FAIL", Verdict.NO_VERDICT: "NO VERDICT"}
_ICON = {Verdict.PASS: "✅", Verdict.FAIL: "❌", Verdict.NO_VERDICT: "⚠️"}


def render_json(batch: BatchReport) -> str:
    data = {"schema_version": report.JSON_SCHEMA_VERSION, **to_jsonable(batch)}
    return json.dumps(data, indent=2) + "\n"


def render_sarif(batch: BatchReport) -> str:
    runs = [
        report.sarif_run(r.run) if r.run is not None else _failed_run(batch, r)
        for r in batch.results
    ]
    # One category per repo keeps alerts tracked across commits; a repo listed at two commits
    # needs two, or code scanning would take one run for the other.
    ids = [run["automationDetails"]["id"] for run in runs]
    for run, result, category in zip(runs, batch.results, ids, strict=True):
        if ids.count(category) > 1:
            run["automationDetails"] = {"id": f"hubscan/{result.ref}/"}
    doc = {"$schema": report.SARIF_SCHEMA, "version": "2.1.0", "runs": runs}
    return json.dumps(doc, indent=2) + "\n"


def _failed_run(batch: BatchReport, result: ModelResult) -> dict[str, Any]:
    repo = result.ref.split("@", 1)[0]
    return {
        "tool": {
            "driver": {
                "name": "hubscan",
                "version": batch.tool_version,
                "informationUri": report.INFO_URI,
                "rules": [],
            }
        },
        "automationDetails": {"id": f"hubscan/{repo}/"},
        "invocations": [
            {
                "executionSuccessful": False,
                "exitCode": result.exit_code,
                "toolExecutionNotifications": [
                    {"level": "error", "message": {"text": result.error or "no verdict"}}
                ],
            }
        ],
        "results": [],
        "properties": {"repo": repo, "ref": result.ref, "verdict": result.verdict.value},
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _outcome(result: ModelResult) -> str:
    """One cell: what decided this model's verdict."""
    run = result.run
    if run is None:
        return _cell(result.error or "no verdict")
    detection = run.detection
    parts = []
    if blocking := [f for f in run.scan.findings if f.severity >= run.fail_on]:
        parts.append(f"{len(blocking)} finding(s) at {run.fail_on.label}+")
    if detection is not None and detection.verdict is Verdict.FAIL:
        parts.append(
            f"backdoor suspected ({detection.family}) → {_cell(detection.suspected_target)}, "
            f"{detection.target_share:.0%} of stamped probes"
        )
    elif detection is not None:
        parts.append("no backdoor found")
    if run.cached:
        parts.append("cached")
    return "; ".join(parts) or "-"


def render_markdown(batch: BatchReport, max_bytes: int = SUMMARY_MAX_BYTES) -> str:
    """The job summary: the table of models, then each model's section while they fit."""
    counts = {v: sum(r.verdict is v for r in batch.results) for v in _TEXT}
    head = [
        f"# hubscan: {len(batch.results)} models — **{_TEXT[batch.verdict]}**",
        "",
        f"{counts[Verdict.FAIL]} fail, {counts[Verdict.NO_VERDICT]} without verdict, "
        f"{counts[Verdict.PASS]} pass · policy `{batch.policy_name}` (sha256 "
        f"`{batch.policy_sha256[:12]}`) · hubscan {batch.tool_version} · {batch.seconds:.1f} s",
        "",
        "| | model | verdict | what decided it |",
        "|---|---|---|---|",
    ]
    # Failures first: on a long list they are what a reader (and the size cap) must keep.
    ordered = sorted(batch.results, key=lambda r: (r.verdict is Verdict.PASS, r.line))
    rows = [
        f"| {_ICON[r.verdict]} | `{r.ref}` | {_TEXT[r.verdict]} | {_outcome(r)} |" for r in ordered
    ]
    sections = [report.render_markdown(r.run) for r in ordered if r.run is not None]
    return _capped(head, rows, sections, max_bytes)


def _capped(head: list[str], rows: list[str], sections: list[str], max_bytes: int) -> str:
    note = (
        "\n_{} left out to stay under the 1 MiB job-summary limit; the JSON and SARIF reports "
        "have everything._\n"
    )
    reserve = len(note.encode()) + 64
    text = "\n".join(head) + "\n"
    size = len(text.encode())
    kept_rows = 0
    for row in rows:
        if size + len(row.encode()) + 1 > max_bytes - reserve:
            break
        text += row + "\n"
        size += len(row.encode()) + 1
        kept_rows += 1
    if kept_rows < len(rows):
        return text + note.format(f"{len(rows) - kept_rows} table rows and every model section")
    kept = 0
    for section in sections:
        chunk = "\n" + section
        if size + len(chunk.encode()) > max_bytes - reserve:
            break
        text += chunk
        size += len(chunk.encode())
        kept += 1
    if kept < len(sections):
        text += note.format(f"{len(sections) - kept} model sections")
    return text


def render_human(batch: BatchReport, console: Console) -> None:
    table = Table(title=f"{len(batch.results)} models, {batch.seconds:.1f} s")
    for column in ("line", "model", "verdict", "what decided it"):
        table.add_column(column, overflow="fold")
    style = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.NO_VERDICT: "yellow"}
    for r in batch.results:
        table.add_row(str(r.line), r.ref, f"[{style[r.verdict]}]{_TEXT[r.verdict]}[/]", _outcome(r))
    console.print(table)
    console.print(
        f"[{style[batch.verdict]}]{_TEXT[batch.verdict]}[/]  {batch.models_file} · policy "
        f"{batch.policy_name} · hubscan {batch.tool_version}"
    )
