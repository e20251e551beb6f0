from __future__ import annotations

import json
from dataclasses import replace

from hubscan import report_batch
from hubscan.records import BatchReport, ModelResult, RunReport, Verdict
from tests.support.sarif import problems
from tests.unit.test_report import BACKDOOR, SHA, audited, run_report


def batch(*results: ModelResult) -> BatchReport:
    return BatchReport(
        tool_version="0.1.0",
        policy_name="default",
        policy_sha256="e" * 64,
        models_file="models.lock",
        started="2026-11-29T00:00:00+00:00",
        verdict=Verdict.FAIL,
        results=results,
        seconds=1.5,
    )


def in_repo(run: RunReport, repo: str) -> RunReport:
    snap = replace(run.scan.snapshot, repo_id=repo)
    return replace(run, scan=replace(run.scan, snapshot=snap))


def ok(line: int, repo: str = "acme/tiny-clip") -> ModelResult:
    run = in_repo(replace(run_report(), verdict=Verdict.PASS), repo)
    return ModelResult(ref=f"{repo}@{SHA}", line=line, verdict=Verdict.PASS, exit_code=0, run=run)


FAILED = ModelResult(
    ref=f"acme/bad@{SHA}",
    line=3,
    verdict=Verdict.FAIL,
    exit_code=1,
    run=in_repo(audited(*BACKDOOR), "acme/bad"),
)
GONE = ModelResult(
    ref=f"acme/gone@{SHA}",
    line=5,
    verdict=Verdict.NO_VERDICT,
    exit_code=3,
    error="repository acme/gone not found on the Hub",
)


def test_markdown_summary_lists_failures_first_with_what_decided_them() -> None:
    text = report_batch.render_markdown(batch(ok(1), FAILED, GONE))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`acme/" in line]
    assert [r.split("`")[1].split("@")[0] for r in rows] == [
        "acme/bad",
        "acme/gone",
        "acme/tiny-clip",
    ]
    assert "backdoor suspected (patch) → bag" in rows[0]
    assert "not found on the Hub" in rows[1]


def test_markdown_summary_stays_under_the_cap_and_says_what_it_left_out() -> None:
    many = batch(*(ok(i, f"acme/model-{i}") for i in range(200)))
    full = report_batch.render_markdown(many)
    capped = report_batch.render_markdown(many, max_bytes=20_000)
    assert len(capped.encode()) <= 20_000 < len(full.encode())
    assert "left out to stay under the 1 MiB job-summary limit" in capped
    assert len(full.encode()) <= report_batch.SUMMARY_MAX_BYTES


def test_sarif_has_a_failed_invocation_for_a_model_without_a_run() -> None:
    doc = json.loads(report_batch.render_sarif(batch(FAILED, GONE)))
    failed, gone = doc["runs"]
    assert failed["automationDetails"]["id"] == "hubscan/acme/bad/"
    assert gone["automationDetails"]["id"] == "hubscan/acme/gone/"
    assert gone["invocations"] == [
        {
            "executionSuccessful": False,
            "exitCode": 3,
            "toolExecutionNotifications": [{"level": "error", "message": {"text": GONE.error}}],
        }
    ]
    assert gone["results"] == []


def test_json_has_the_schema_version_and_every_result() -> None:
    data = json.loads(report_batch.render_json(batch(ok(1), GONE)))
    assert data["schema_version"] == 1
    assert [r["line"] for r in data["results"]] == [1, 5]
    assert data["results"][1]["run"] is None


def test_sarif_of_passing_failing_and_unaudited_models_is_valid_2_1_0() -> None:
    doc = json.loads(report_batch.render_sarif(batch(ok(1), FAILED, GONE)))
    assert problems(doc) == []


def test_the_sarif_checker_finds_what_code_scanning_would_reject() -> None:
    doc = json.loads(report_batch.render_sarif(batch(ok(1), FAILED, GONE)))
    doc["runs"][1]["results"][0]["ruleIndex"] = 7
    doc["runs"][2]["invocations"][0]["executionSuccessful"] = "no"
    doc["runs"][0]["automationDetails"]["id"] = doc["runs"][1]["automationDetails"]["id"]
    del doc["runs"][1]["results"][0]["message"]
    found = problems(doc)
    assert any("share an automationDetails.id" in p for p in found)
    assert any("ruleIndex 7 is not a rule" in p for p in found)
    assert any("executionSuccessful is required" in p for p in found)
    assert any("message needs text or id" in p for p in found)
    assert problems({"version": "2.0.0", "runs": [{}] * 21}) == [
        "version must be '2.1.0'",
        "21 runs: code scanning accepts at most 20 per upload",
        "runs share an automationDetails.id (code scanning needs one per run)",
        *[f"runs[{i}].tool.driver.name is required" for i in range(21)],
    ]


def test_a_repo_listed_at_two_commits_gets_one_category_per_commit() -> None:
    later = replace(ok(2), ref=f"acme/tiny-clip@{'9' * 40}")
    doc = json.loads(report_batch.render_sarif(batch(ok(1), later)))
    assert [r["automationDetails"]["id"] for r in doc["runs"]] == [
        f"hubscan/acme/tiny-clip@{SHA}/",
        f"hubscan/acme/tiny-clip@{'9' * 40}/",
    ]
    assert problems(doc) == []
