from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from hubscan.jsonio import JsonShapeError, from_jsonable, to_jsonable
from hubscan.records import Finding, RunReport, Severity, Verdict
from tests.unit.test_report import BACKDOOR, audited, finding, run_report


def roundtrip(run: RunReport) -> RunReport:
    return from_jsonable(RunReport, json.loads(json.dumps(to_jsonable(run))))


def test_a_scan_report_reads_back_as_the_same_records() -> None:
    run = run_report(finding(), finding("FILE_CODE", Severity.MEDIUM, "code", "x.py"))
    assert roundtrip(run) == run


def test_a_detection_with_triggers_reads_back_as_the_same_records() -> None:
    run = audited(*BACKDOOR)
    assert run.detection is not None and run.detection.triggers
    assert roundtrip(run) == run


def test_a_local_directory_snapshot_without_commit_reads_back() -> None:
    run = run_report(commit=None)
    assert roundtrip(run).scan.snapshot.commit is None


def test_an_integer_where_a_float_is_expected_is_accepted() -> None:
    data = to_jsonable(run_report())
    data["timings"][0]["seconds"] = 2
    assert from_jsonable(RunReport, data).timings[0].seconds == 2.0


def edited(path: tuple[str | int, ...], value: Any, *, delete: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(run_report(finding()))
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (edited(("verdict",), "maybe"), "RunReport.verdict: 'maybe' is not a Verdict"),
        (edited(("fail_on",), "urgent"), "RunReport.fail_on: 'urgent' is not a severity"),
        (edited(("scan", "findings", 0, "path"), 3), "findings[0].path: expected str, got int"),
        (edited(("scan", "scanned"), "a.bin"), "RunReport.scan.scanned: expected a list"),
        (edited(("timings", 0, "seconds"), True), "seconds: expected float, got bool"),
        (edited(("scan",), None), "RunReport.scan: expected an object, got NoneType"),
        (edited(("extra",), 1), "RunReport: unknown field(s) extra"),
        (edited(("policy_sha256",), None, delete=True), "RunReport: missing field policy_sha256"),
    ],
    ids=["enum", "severity", "str", "tuple", "bool-is-not-float", "record", "extra", "missing"],
)
def test_a_value_of_the_wrong_shape_is_refused_with_where_it_is(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(JsonShapeError) as caught:
        from_jsonable(RunReport, data)
    assert message in str(caught.value)


def test_optional_records_may_be_null_or_absent() -> None:
    data = to_jsonable(run_report())
    data["detection"] = None
    del data["patch"]
    run = from_jsonable(RunReport, data)
    assert run.detection is None and run.patch is None


def test_findings_keep_their_severity_order() -> None:
    run = replace(run_report(finding(sev=Severity.LOW)), verdict=Verdict.PASS)
    (back,) = roundtrip(run).scan.findings
    assert isinstance(back, Finding) and back.severity is Severity.LOW
