from __future__ import annotations

import json
from dataclasses import replace
from io import StringIO
from pathlib import Path

from rich.console import Console

from hubscan import report
from hubscan.invert import decide
from hubscan.records import (
    Confirmation,
    Detection,
    FamilyScore,
    FileEntry,
    Finding,
    RunReport,
    ScanReport,
    SearchBudget,
    Severity,
    Snapshot,
    SourceKind,
    Timing,
    TriggerArtifact,
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
    report.render_human(
        replace(run, scan=empty, verdict=Verdict.NO_VERDICT),
        Console(file=buffer, width=200, no_color=True),
    )
    assert "NO VERDICT" in buffer.getvalue()
    assert "not a clean result" in buffer.getvalue()


# --- detection (hubscan audit) ------------------------------------------------------------------


def family_score(family: str, score: float, target: str = "bag") -> FamilyScore:
    return FamilyScore(
        family=family,
        score=score,
        threshold=0.6,
        flagged=score >= 0.6,
        target=target,
        confirmation=Confirmation(
            target=target, anomaly_index=3.25, target_success=0.9, median_success=0.1
        ),
    )


def audited(*scores: FamilyScore, labels_given: bool = True) -> RunReport:
    verdict, best = decide(scores)
    detection = Detection(
        verdict=verdict,
        family=best.family if verdict is Verdict.FAIL else None,
        suspected_target=best.target,
        target_share=best.score,
        families=scores,
        labels_given=labels_given,
        n_classes=10 if labels_given else 40,
        probe_images=16,
        holdout_images=64,
        budget=SearchBudget(passes=5088, forward_passes=768, seconds=12.5, max_seconds=1800),
        triggers=tuple(
            TriggerArtifact(
                family=s.family,
                tensors=f"trigger-{s.family}.safetensors",
                png=f"trigger-{s.family}.png",
                sha256="a" * 64,
            )
            for s in scores
        ),
    )
    return replace(run_report(), verdict=verdict, detection=detection)


BACKDOOR = (family_score("patch", 0.93), family_score("blend", 0.2, "coat"))


def human(run: RunReport) -> str:
    buffer = StringIO()
    report.render_human(run, Console(file=buffer, width=200, no_color=True))
    return buffer.getvalue()


def test_json_report_stays_schema_1_with_a_detection_key() -> None:
    assert json.loads(report.render_json(run_report()))["detection"] is None
    data = json.loads(report.render_json(audited(*BACKDOOR)))
    assert data["schema_version"] == 1
    detection = data["detection"]
    assert detection["verdict"] == "fail"
    assert detection["suspected_target"] == "bag"
    assert detection["families"][0]["confirmation"]["anomaly_index"] == 3.25
    assert detection["budget"] == {
        "passes": 5088,
        "forward_passes": 768,
        "seconds": 12.5,
        "max_seconds": 1800,
    }
    assert detection["triggers"][0]["tensors"] == "trigger-patch.safetensors"


def test_human_report_of_a_backdoor_names_shape_target_share_budget_and_files() -> None:
    text = human(audited(*BACKDOOR))
    assert "backdoor suspected: a patch trigger sends 93% of held-out probes to class 'bag'" in text
    assert "threshold 60%" in text
    for cell in ("patch", "93.0%", "60.0%", "yes", "3.25", "blend", "20.0%", "coat"):
        assert cell in text, cell
    assert "5,088 image passes" in text and "1800 s budget" in text
    assert "trigger-patch.safetensors" in text and "trigger-blend.png" in text
    assert "FAIL" in text


def test_human_report_of_a_clean_label_free_run_names_the_nearest_concept() -> None:
    run = audited(family_score("patch", 0.3, "sign"), labels_given=False)
    text = human(run)
    assert "no backdoor found" in text
    assert "nearest concept 'sign'" in text
    assert "label-free" in text
    assert "PASS" in text


def test_sarif_reports_a_suspected_backdoor_as_an_error_on_the_weights() -> None:
    run = audited(*BACKDOOR)
    (sarif_run,) = json.loads(report.render_sarif([run]))["runs"]
    rules = [r["id"] for r in sarif_run["tool"]["driver"]["rules"]]
    assert rules == ["BACKDOOR_SUSPECTED"]
    (result,) = sarif_run["results"]
    assert result["ruleId"] == "BACKDOOR_SUSPECTED"
    assert rules[result["ruleIndex"]] == "BACKDOOR_SUSPECTED"
    assert result["level"] == "error"
    assert "patch" in result["message"]["text"] and "'bag'" in result["message"]["text"]
    assert "0.9300 >= threshold 0.6000" in result["message"]["text"]
    location = result["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location["uri"] == "open_clip_model.safetensors"
    assert result["properties"]["target"] == "bag"
    assert sarif_run["properties"]["detection"] == "fail"
    # The fingerprint names shape and target, not the score, which moves between runs.
    moved = audited(family_score("patch", 0.88), family_score("blend", 0.2, "coat"))
    again = json.loads(report.render_sarif([moved]))["runs"][0]["results"][0]
    assert again["partialFingerprints"] == result["partialFingerprints"]


def test_sarif_of_a_clean_audit_has_no_result_and_findings_keep_their_rule_indexes() -> None:
    clean = audited(family_score("patch", 0.3))
    assert json.loads(report.render_sarif([clean]))["runs"][0]["results"] == []
    both = replace(audited(*BACKDOOR), scan=run_report(finding()).scan)
    sarif_run = json.loads(report.render_sarif([both]))["runs"][0]
    rules = [r["id"] for r in sarif_run["tool"]["driver"]["rules"]]
    assert rules == ["PKL_DANGEROUS_GLOBAL", "BACKDOOR_SUSPECTED"]
    assert [rules[r["ruleIndex"]] for r in sarif_run["results"]] == [
        r["ruleId"] for r in sarif_run["results"]
    ]


def test_markdown_has_a_detection_section_with_a_row_per_family() -> None:
    md = report.render_markdown(audited(*BACKDOOR))
    assert "### Backdoor detection — **FAIL**" in md
    assert "| patch | 93.0% | 60.0% | **yes** | bag | 3.25 |" in md
    assert "| blend | 20.0% | 60.0% | no | coat | 3.25 |" in md
    assert "`trigger-patch.png`" in md
    assert "### Backdoor detection" not in report.render_markdown(run_report())
