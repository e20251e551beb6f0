"""The gate in CI: `hubscan audit --models models.lock` over real zoo models in a hand-built HF
cache (offline, the real huggingface_hub client): one combined report, one SARIF run per model with
stable fingerprints, the results cache making a second run over unchanged models at least 10x
faster, and exit codes for a failing gate, --exit-zero, a model that cannot be fetched and a bad
models file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from tests.support.fake_hub import FakeHub
from tests.support.hf_cache import build_cached_repo, fake_commit
from tests.support.sarif import problems

runner = CliRunner()
BAD, GOOD = "acme/bad-clip", "acme/good-clip"


@dataclass(frozen=True)
class Lock:
    path: Path
    commits: dict[str, str]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-cache")


@pytest.fixture(scope="module")
def lock(quick_zoo: Path, hub_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Lock:
    commits = {}
    for repo_id, model in ((BAD, "patch-white-br-bag"), (GOOD, "clean-01")):
        files = {p.name: p.read_bytes() for p in (quick_zoo / model).iterdir() if p.is_file()}
        commits[repo_id] = build_cached_repo(hub_cache, repo_id, files).commit
    path = tmp_path_factory.mktemp("lock") / "models.lock"
    path.write_text(
        "# models this deployment depends on\n"
        f"{BAD}@{commits[BAD]}\n\n"
        f"{GOOD}@{commits[GOOD]}  # the clean one\n"
    )
    return Lock(path, commits)


@pytest.fixture
def in_cache(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache


@pytest.fixture
def warm(
    two_sarif_runs: TwoRuns, warm_cache: Path, in_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The HF cache with both models, and the audit cache holding their results."""
    monkeypatch.setenv("HUBSCAN_AUDIT_CACHE", str(warm_cache))
    return warm_cache


def gate(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", "--labels", "fashion-mnist", *args])
    return result.exit_code, result.stdout, result.stderr


@dataclass(frozen=True)
class TwoRuns:
    first: tuple[int, str, str]
    second: tuple[int, str, str]
    first_seconds: float
    second_seconds: float


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit cache two_sarif_runs fills: later tests read it instead of probing again."""
    return tmp_path_factory.mktemp("audits")


@pytest.fixture(scope="module")
def two_sarif_runs(lock: Lock, hub_cache: Path, warm_cache: Path) -> TwoRuns:
    """The same models.lock audited twice in a row into one (initially empty) audit cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
        patch.setenv("HUBSCAN_AUDIT_CACHE", str(warm_cache))
        clock = time.perf_counter()
        first = gate("--models", str(lock.path), "--format", "sarif")
        middle = time.perf_counter()
        second = gate("--models", str(lock.path), "--format", "sarif")
        end = time.perf_counter()
    return TwoRuns(first, second, middle - clock, end - middle)


def sarif(text: str) -> dict[str, Any]:
    """The parsed SARIF log, after checking it is valid SARIF 2.1.0 for code scanning."""
    doc: dict[str, Any] = json.loads(text)
    assert problems(doc) == []
    return doc


def test_models_file_gives_one_sarif_run_per_model_and_fails_the_gate(
    two_sarif_runs: TwoRuns, lock: Lock
) -> None:
    code, out, _ = two_sarif_runs.first
    assert code == ExitCode.FINDINGS
    doc = sarif(out)
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    runs = {run["properties"]["repo"]: run for run in doc["runs"]}
    assert list(runs) == [BAD, GOOD]
    assert [run["automationDetails"]["id"] for run in runs.values()] == [
        f"hubscan/{BAD}/",
        f"hubscan/{GOOD}/",
    ]
    assert runs[BAD]["properties"]["commit"] == lock.commits[BAD]
    assert [r["ruleId"] for r in runs[BAD]["results"]] == ["BACKDOOR_SUSPECTED"]
    assert runs[GOOD]["results"] == []
    assert all(run["invocations"][0]["executionSuccessful"] for run in runs.values())


def test_second_run_over_unchanged_models_reuses_the_cache_and_is_10x_faster(
    two_sarif_runs: TwoRuns,
) -> None:
    first, second = sarif(two_sarif_runs.first[1]), sarif(two_sarif_runs.second[1])
    assert two_sarif_runs.second[0] == two_sarif_runs.first[0]
    fingerprints = [[r["partialFingerprints"] for r in run["results"]] for run in first["runs"]]
    assert fingerprints == [
        [r["partialFingerprints"] for r in run["results"]] for run in second["runs"]
    ]
    assert two_sarif_runs.second_seconds * 10 <= two_sarif_runs.first_seconds, (
        two_sarif_runs.first_seconds,
        two_sarif_runs.second_seconds,
    )


def test_combined_json_lists_each_model_with_its_line_and_cached_result(
    lock: Lock, warm: Path
) -> None:
    code, out, _ = gate("--models", str(lock.path), "--format", "json")
    data = json.loads(out)
    assert code == ExitCode.FINDINGS and data["verdict"] == "fail"
    assert [m["ref"] for m in data["results"]] == [
        f"{BAD}@{lock.commits[BAD]}",
        f"{GOOD}@{lock.commits[GOOD]}",
    ]
    assert [m["line"] for m in data["results"]] == [2, 4]
    assert [m["verdict"] for m in data["results"]] == ["fail", "pass"]
    assert [m["exit_code"] for m in data["results"]] == [ExitCode.FINDINGS, ExitCode.OK]
    assert [m["run"]["cached"] for m in data["results"]] == [True, True]
    assert data["results"][0]["run"]["detection"]["suspected_target"] == "bag"


def test_no_cache_probes_again(lock: Lock, warm: Path, tmp_path: Path) -> None:
    models = tmp_path / "models.lock"
    models.write_text(f"{GOOD}@{lock.commits[GOOD]}\n")
    _, out, _ = gate("--models", str(models), "--format", "json", "--no-cache")
    assert [m["run"]["cached"] for m in json.loads(out)["results"]] == [False]


def test_exit_zero_reports_a_failing_gate_without_failing_the_job(
    lock: Lock, warm: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    code, out, _ = gate(
        "--models", str(lock.path), "--exit-zero", "--format", "json", "--summary", str(summary)
    )
    assert code == ExitCode.OK
    assert json.loads(out)["verdict"] == "fail"
    text = summary.read_text()
    assert text.startswith("earlier step\n# hubscan: 2 models — **FAIL**")
    assert f"`{BAD}@{lock.commits[BAD]}`" in text and "backdoor suspected" in text


def test_a_model_that_cannot_be_fetched_is_reported_and_the_rest_still_audited(
    lock: Lock, warm: Path, tmp_path: Path
) -> None:
    missing = f"acme/gone@{fake_commit('gone')}"
    models = tmp_path / "models.lock"
    models.write_text(f"{missing}\n{GOOD}@{lock.commits[GOOD]}\n")
    code, out, _ = gate("--models", str(models), "--format", "sarif")
    assert code == ExitCode.NO_VERDICT
    gone, good = sarif(out)["runs"]
    assert gone["invocations"][0]["executionSuccessful"] is False
    assert gone["invocations"][0]["exitCode"] == ExitCode.NO_VERDICT
    assert "acme/gone" in gone["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]
    assert gone["automationDetails"]["id"] == "hubscan/acme/gone/"
    assert good["invocations"][0]["executionSuccessful"] is True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("acme/clip@main\n", "line 1: 'acme/clip@main' is not org/name@<40-hex commit sha>"),
        ("# nothing here\n\n", "lists no models"),
        ("acme/clip\n", "line 1: 'acme/clip'"),
    ],
    ids=["branch-not-commit", "empty", "unpinned"],
)
def test_a_bad_models_file_exits_3_with_the_line_before_auditing_anything(
    tmp_path: Path, content: str, message: str
) -> None:
    models = tmp_path / "models.lock"
    models.write_text(content)
    code, out, err = gate("--models", str(models))
    assert code == ExitCode.NO_VERDICT
    assert out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_ref_and_models_together_is_a_usage_error(lock: Lock) -> None:
    code, _, err = gate(BAD, "--models", str(lock.path))
    assert code == ExitCode.USAGE
    assert "not both" in err


@pytest.mark.parametrize(
    ("status", "error_code", "message"),
    [
        (401, None, "refused access"),
        (404, "RepoNotFound", "not found on the Hub"),
        (429, None, "rate limited"),
        (500, None, "HTTP 500"),
    ],
)
def test_a_hub_error_for_one_model_is_its_result_and_exits_3(
    fake_hub: FakeHub,
    online: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    status: int,
    error_code: str | None,
    message: str,
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    repo = fake_hub.add_repo("acme/flaky", {"open_clip_config.json": b"{}"})
    fake_hub.fail("acme/flaky", status, error_code=error_code, scope="api")
    models = tmp_path / "models.lock"
    models.write_text(f"acme/flaky@{repo.commit}\n")
    code, out, _ = gate("--models", str(models), "--format", "json")
    assert code == ExitCode.NO_VERDICT
    (result,) = json.loads(out)["results"]
    assert result["verdict"] == "no_verdict" and result["exit_code"] == ExitCode.NO_VERDICT
    assert message in result["error"] and result["run"] is None
