from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

from rich.console import Console

from hubscan import report
from hubscan.records import (
    FileEntry,
    Finding,
    RunReport,
    ScanReport,
    Severity,
    Snapshot,
    SourceKind,
    Timing,
    Verdict,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def run_report(*findings: Finding, commit: str | None = SHA) -> RunReport:
    snap = Snapshot(
        repo_id="acme/tiny-clip",
        commit=commit,
        root=Path("/tmp/snap"),
        source=SourceKind.CACHE,
        files=(FileEntry(path="open_clip_model.safetensors", size=10, sha256="f" * 64),),
    )
    scan = ScanReport(
        snapshot=snap,
        findings=findings,
        scanned=("open_clip_model.safetensors",),
        skipped=(),
        weights_scanned=("open_clip_model.safetensors",),
    )
    return RunReport(
        tool_version="0.1.0",
        policy_name="default",
        policy_sha256="e" * 64,
        fail_on=Severity.HIGH,
        started="2026-11-28T00:00:00+00:00",
        verdict=scan.verdict(Severity.HIGH),
        timings=(Timing(stage="fetch", seconds=0.1),),
        scan=scan,
    )


def finding(
    code: str = "PKL_DANGEROUS_GLOBAL",
    sev: Severity = Severity.CRITICAL,
    msg: str = "imports os.system",
    path: str = "model.bin",
) -> Finding:
    return Finding(code=code, severity=sev, path=path, message=msg, scanner="pickle")


def test_json_report_has_versioned_schema_files_with_sha256_and_findings() -> None:
    data = json.loads(report.render_json(run_report(finding())))
    assert data["schema_version"] == report.JSON_SCHEMA_VERSION
    assert data["tool_version"] == "0.1.0"
    assert data["policy_sha256"] == "e" * 64
    assert data["verdict"] == "fail"
    assert data["scan"]["snapshot"]["commit"] == SHA
    assert data["scan"]["snapshot"]["files"][0]["sha256"] == "f" * 64
    assert data["scan"]["findings"][0] == {
        "code": "PKL_DANGEROUS_GLOBAL",
        "severity": "critical",
        "path": "model.bin",
        "message": "imports os.system",
        "scanner": "pickle",
    }
    assert data["timings"] == [{"stage": "fetch", "seconds": 0.1}]


def test_sarif_is_2_1_0_with_rules_levels_and_stable_fingerprints() -> None:
    run = run_report(finding(), finding("FILE_CODE", Severity.MEDIUM, "code", "x.py"))
    doc = json.loads(report.render_sarif([run]))
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-2.1.0.json")
    (sarif_run,) = doc["runs"]
    rules = [r["id"] for r in sarif_run["tool"]["driver"]["rules"]]
    assert rules == ["FILE_CODE", "PKL_DANGEROUS_GLOBAL"]
    levels = {r["ruleId"]: r["level"] for r in sarif_run["results"]}
    assert levels == {"PKL_DANGEROUS_GLOBAL": "error", "FILE_CODE": "warning"}
    for result in sarif_run["results"]:
        assert rules[result["ruleIndex"]] == result["ruleId"]
    assert sarif_run["originalUriBaseIds"]["SNAPSHOT"]["uri"] == f"hf://acme/tiny-clip@{SHA}/"
    again = json.loads(report.render_sarif([run]))["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in again] == [
        r["partialFingerprints"] for r in sarif_run["results"]
    ]


def test_fingerprints_change_with_commit_file_and_code() -> None:
    run, other = run_report(), run_report(commit="1" * 40)
    base = report.fingerprint(run, "a.bin", "PKL_MALFORMED", "m")
    assert base != report.fingerprint(other, "a.bin", "PKL_MALFORMED", "m")
    assert base != report.fingerprint(run, "b.bin", "PKL_MALFORMED", "m")
    assert base != report.fingerprint(run, "a.bin", "PKL_TOO_COMPLEX", "m")


def test_local_directory_sarif_uses_a_file_uri_base() -> None:
    doc = json.loads(report.render_sarif([run_report(commit=None)]))
    assert doc["runs"][0]["originalUriBaseIds"]["SNAPSHOT"]["uri"].startswith("file:///")


def test_markdown_has_verdict_and_escapes_table_cells() -> None:
    md = report.render_markdown(run_report(finding(msg="a | b")))
    assert "**FAIL**" in md
    assert "a \\| b" in md
    assert "`PKL_DANGEROUS_GLOBAL`" in md


def test_markdown_is_capped_for_job_summaries() -> None:
    many = [finding(msg=f"imports m{i}.x") for i in range(report.MARKDOWN_MAX_FINDINGS + 50)]
    md = report.render_markdown(run_report(*many))
    assert "50 more in the JSON report" in md
    assert len(md.encode()) < 1 << 20


def test_human_report_names_verdict_repo_and_findings() -> None:
    buffer = StringIO()
    report.render_human(run_report(finding()), Console(file=buffer, width=200, no_color=True))
    text = buffer.getvalue()
    assert "FAIL" in text and "acme/tiny-clip" in text and "PKL_DANGEROUS_GLOBAL" in text


def test_human_report_never_calls_an_unscanned_snapshot_clean() -> None:
    run = run_report()
    empty = ScanReport(
        snapshot=run.scan.snapshot, findings=(), scanned=(), skipped=(), weights_scanned=()
    )
    assert empty.verdict(Severity.HIGH) is Verdict.NO_VERDICT
    buffer = StringIO()
    from dataclasses import replace

    report.render_human(
        replace(run, scan=empty, verdict=Verdict.NO_VERDICT),
        Console(file=buffer, width=200, no_color=True),
    )
    assert "NO VERDICT" in buffer.getvalue()
    assert "not a clean result" in buffer.getvalue()
