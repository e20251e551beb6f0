"""Renderers: records -> text for people and machines.

Owns the output formats: a rich table (human), JSON (a stable, versioned schema), SARIF 2.1.0 and
Markdown (GitHub job summary); a detection's parts come from report_detection.py. Pure functions
of records: no I/O beyond the rich Console passed in, no scanning, no torch. `to_jsonable` is the
one serializer of records.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from hubscan import report_detection, report_patch
from hubscan.codes import CODES
from hubscan.jsonio import to_jsonable as to_jsonable
from hubscan.records import Evaluation, RunReport, Severity, Verdict

JSON_SCHEMA_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFO_URI = "https://github.com/hubscan/hubscan"
MARKDOWN_MAX_FINDINGS = 200  # a job summary is capped at 1 MiB; the JSON report has them all

_SARIF_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub code scanning ranks security results by this CVSS-like score.
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}
_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
_VERDICT_TEXT = {Verdict.PASS: "PASS", Verdict.FAIL: "FAIL", Verdict.NO_VERDICT: "NO VERDICT"}


def render_json(run: RunReport) -> str:
    return json.dumps({"schema_version": JSON_SCHEMA_VERSION, **to_jsonable(run)}, indent=2) + "\n"


# --- SARIF 2.1.0 ------------------------------------------------------------------------------


def _location_base(run: RunReport) -> str:
    snap = run.scan.snapshot
    if snap.commit is None:
        return snap.root.resolve().as_uri() + "/"
    return f"hf://{snap.repo_id}@{snap.commit}/"


def fingerprint(run: RunReport, path: str, code: str, message: str) -> str:
    """Stable across runs of the same commit: repo, commit, file, code (and the message, which
    names the specific global/tensor, so two findings of one code in one file stay distinct)."""
    snap = run.scan.snapshot
    key = "\x00".join((snap.repo_id, snap.commit or "", path, code, message))
    return hashlib.sha256(key.encode()).hexdigest()


def _sarif_rule(code: str) -> dict[str, Any]:
    info = CODES[code]
    return {
        "id": code,
        "name": "".join(part.title() for part in code.split("_")),
        "shortDescription": {"text": info.summary},
        "defaultConfiguration": {"level": _SARIF_LEVEL[info.severity]},
        "properties": {
            "security-severity": _SECURITY_SEVERITY[info.severity],
            "tags": ["security", info.scanner],
        },
    }


def sarif_run(run: RunReport) -> dict[str, Any]:
    findings = run.scan.findings
    codes = sorted({f.code for f in findings})
    results = [
        {
            "ruleId": f.code,
            "ruleIndex": codes.index(f.code),
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path or ".", "uriBaseId": "SNAPSHOT"}
                    }
                }
            ],
            "partialFingerprints": {"hubscan/v1": fingerprint(run, f.path, f.code, f.message)},
            "properties": {
                "severity": f.severity.label,
                "security-severity": _SECURITY_SEVERITY[f.severity],
            },
        }
        for f in findings
    ]
    rules = [_sarif_rule(c) for c in codes]
    if (backdoor := _sarif_backdoor(run, len(rules))) is not None:
        rules.append(report_detection.sarif_rule())
        results.append(backdoor)
    snap = run.scan.snapshot
    return {
        "tool": {
            "driver": {
                "name": "hubscan",
                "version": run.tool_version,
                "informationUri": INFO_URI,
                "rules": rules,
            }
        },
        "automationDetails": {"id": f"hubscan/{snap.repo_id}/"},
        "originalUriBaseIds": {"SNAPSHOT": {"uri": _location_base(run)}},
        "invocations": [
            {
                "executionSuccessful": run.verdict is not Verdict.NO_VERDICT,
                "startTimeUtc": run.started,
            }
        ],
        "results": results,
        "properties": {
            "repo": snap.repo_id,
            "commit": snap.commit,
            "verdict": run.verdict.value,
            "detection": None if run.detection is None else run.detection.verdict.value,
            "policy": run.policy_name,
            "policySha256": run.policy_sha256,
        },
    }


def _sarif_backdoor(run: RunReport, rule_index: int) -> dict[str, Any] | None:
    """A suspected backdoor as one error on the weights file; its fingerprint names the shape
    and target (not the score, which moves a little between runs)."""
    detection = run.detection
    if detection is None or detection.verdict is not Verdict.FAIL:
        return None
    weights = run.scan.weights_scanned
    path = next((w for w in weights if w.endswith(".safetensors")), weights[0] if weights else "")
    key = f"{detection.family}:{detection.suspected_target}"
    code = report_detection.BACKDOOR_RULE
    return {
        "ruleId": code,
        "ruleIndex": rule_index,
        "level": "error",
        "message": {"text": report_detection.sarif_message(detection)},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": path or ".", "uriBaseId": "SNAPSHOT"}
                }
            }
        ],
        "partialFingerprints": {"hubscan/v1": fingerprint(run, path, code, key)},
        "properties": report_detection.sarif_properties(detection),
    }


def render_sarif(runs: list[RunReport]) -> str:
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [sarif_run(r) for r in runs]}
    return json.dumps(doc, indent=2) + "\n"


# --- Markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(run: RunReport) -> str:
    snap = run.scan.snapshot
    findings = run.scan.findings
    lines = [
        f"## hubscan: `{snap.repo_id}` — **{_VERDICT_TEXT[run.verdict]}**",
        "",
        f"- commit: `{snap.commit or 'local directory'}`",
        f"- policy: `{run.policy_name}` (sha256 `{run.policy_sha256[:12]}`), fails on "
        f"**{run.fail_on.label}** and above",
        f"- files: {len(snap.files)} listed, {len(run.scan.scanned)} scanned, "
        f"{len(run.scan.weights_scanned)} weight files; {len(findings)} findings",
        *([f"- cached: the result of the audit started {run.started}"] if run.cached else []),
        "",
    ]
    if findings:
        lines += ["| severity | code | file | finding |", "|---|---|---|---|"]
        for f in findings[:MARKDOWN_MAX_FINDINGS]:
            lines.append(
                f"| {f.severity.label} | `{f.code}` | `{_md_cell(f.path) or '.'}` | "
                f"{_md_cell(f.message)} |"
            )
        if len(findings) > MARKDOWN_MAX_FINDINGS:
            lines.append(f"\n_{len(findings) - MARKDOWN_MAX_FINDINGS} more in the JSON report._")
    else:
        lines.append("No findings.")
    if run.detection is not None:
        lines += ["", *report_detection.render_markdown(run.detection)]
    if run.patch is not None:
        lines += ["", "### Backdoor removal", "", *report_patch.render_markdown(run)]
    return "\n".join(lines) + "\n"


# --- rich, for people ---------------------------------------------------------------------------


def render_human(run: RunReport, console: Console) -> None:
    snap = run.scan.snapshot
    findings = run.scan.findings
    if findings:
        table = Table(title=f"{len(findings)} findings", show_lines=False)
        for column in ("severity", "code", "file", "finding"):
            table.add_column(column, overflow="fold")
        for f in findings:
            table.add_row(
                f"[{_STYLE[f.severity]}]{f.severity.label}[/]", f.code, f.path or ".", f.message
            )
        console.print(table)
    if run.detection is not None:
        report_detection.render_human(run.detection, console)
    report_patch.render_human(run, console)
    style = {Verdict.PASS: "bold green", Verdict.FAIL: "bold red"}.get(run.verdict, "bold yellow")
    commit = snap.commit or "local directory"
    console.print(f"[{style}]{_VERDICT_TEXT[run.verdict]}[/]  {snap.repo_id} @ {commit}")
    console.print(
        f"policy {run.policy_name} (fails on {run.fail_on.label}+) · {len(snap.files)} files, "
        f"{len(run.scan.weights_scanned)} weight files scanned · "
        + " · ".join(f"{t.stage} {t.seconds:.2f}s" for t in run.timings),
        style="dim",
    )
    if run.cached:
        console.print(f"cached: the result of the audit started {run.started}", style="dim")
    if run.verdict is Verdict.NO_VERDICT:
        console.print("no weights were scanned, so this is not a clean result", style="yellow")


# --- evaluation and zoo ---------------------------------------------------------------------------


def render_evaluation(result: Evaluation, console: Console) -> None:
    console.print(f"[bold]{result.repo_id}[/] @ {result.commit or 'local directory'}")
    console.print(f"probes          {result.probes} ({result.n_probes} images)", highlight=False)
    console.print(f"labels          {result.labels}", highlight=False)
    console.print(f"clean accuracy  [bold]{result.clean_accuracy:.1%}[/]")
    if result.attack_success is not None:
        console.print(f"trigger         {result.trigger} -> {result.target}", highlight=False)
        console.print(f"attack success  [bold]{result.attack_success:.1%}[/]")


def render_zoo(manifest: dict[str, Any], console: Console) -> None:
    table = Table(title=f"zoo ({len(manifest['models'])} models, {manifest['build_seconds']} s)")
    for column in (
        "model",
        "kind",
        "trigger",
        "target",
        "poison",
        "clean acc",
        "own ASR",
        "max other ASR",
    ):
        table.add_column(column)
    for m in manifest["models"]:
        asr = m["attack_success"]
        own = asr.get(m.get("trigger"), None)
        others = [v for k, v in asr.items() if k != m.get("trigger")]
        table.add_row(
            m["name"],
            m["kind"],
            m.get("trigger") or "-",
            m.get("target") or "-",
            f"{m['poison_rate']:.0%}" if m.get("poison_rate") else "-",
            f"{m['clean_accuracy']:.1%}",
            "-" if own is None else f"{own:.1%}",
            f"{max(others):.1%}" if others else "-",
        )
    console.print(table)
