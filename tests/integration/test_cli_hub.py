"""`hubscan scan org/name` through the real huggingface_hub client: a hand-built HF cache (offline)
and a fake Hub on 127.0.0.1 (online). Nothing patches an HTTP client."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from tests.support.factories import write_open_clip_checkpoint
from tests.support.fake_hub import FakeHub
from tests.support.hf_cache import build_cached_repo

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = write_open_clip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
    return {p.name: p.read_bytes() for p in root.iterdir()}


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def scan(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["scan", *args])
    return result.exit_code, result.stdout, result.stderr


def test_offline_scan_of_a_cached_repo_reports_the_commit_from_refs_main(
    hf_cache: Path, ckpt_files: dict[str, bytes]
) -> None:
    cached = build_cached_repo(hf_cache, "acme/tiny-clip", ckpt_files)
    code, out, _ = scan("acme/tiny-clip", "--format", "json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data["scan"]["snapshot"]["commit"] == (cached.repo_dir / "refs" / "main").read_text()
    assert data["scan"]["snapshot"]["source"] == "cache"
    assert {f["path"] for f in data["scan"]["snapshot"]["files"]} == set(ckpt_files)


def test_offline_scan_pinned_to_a_commit(hf_cache: Path, ckpt_files: dict[str, bytes]) -> None:
    cached = build_cached_repo(hf_cache, "acme/tiny-clip", ckpt_files)
    code, out, _ = scan(f"acme/tiny-clip@{cached.commit}", "--format", "json", "--offline")
    assert code == ExitCode.OK
    assert json.loads(out)["scan"]["snapshot"]["commit"] == cached.commit


def test_offline_scan_of_an_uncached_repo_exits_3_with_one_line(hf_cache: Path) -> None:
    code, out, err = scan("acme/not-here")
    assert code == ExitCode.NO_VERDICT
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "acme/not-here" in err


@pytest.fixture
def hub_endpoint(fake_hub: FakeHub, online: None, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    return fake_hub


def test_online_scan_resolves_the_branch_once_and_downloads_pinned(
    hub_endpoint: FakeHub, hf_cache: Path, ckpt_files: dict[str, bytes]
) -> None:
    repo = hub_endpoint.add_repo(
        "acme/tiny-clip",
        {**ckpt_files, "modeling.py": b"import os\n"},
        lfs=["open_clip_model.safetensors"],
    )
    code, out, err = scan("acme/tiny-clip", "--format", "json")
    assert code == ExitCode.OK, err
    data = json.loads(out)
    assert data["scan"]["snapshot"]["commit"] == repo.commit
    files = {f["path"]: f for f in data["scan"]["snapshot"]["files"]}
    assert files["modeling.py"]["kind"] == "remote"  # listed and judged, never downloaded
    weights = files["open_clip_model.safetensors"]
    assert weights["sha256"] == weights["hub_sha256"]
    assert "FILE_CODE" in {f["code"] for f in data["scan"]["findings"]}
    assert {rev for _, rev, _ in hub_endpoint.resolve_requests()} == {repo.commit}


@pytest.mark.parametrize(
    ("status", "error_code"),
    [(401, "RepoNotFound"), (403, None), (404, "RepoNotFound"), (429, None), (500, None)],
)
def test_hub_errors_exit_3_with_one_line(
    hub_endpoint: FakeHub,
    hf_cache: Path,
    ckpt_files: dict[str, bytes],
    status: int,
    error_code: str | None,
) -> None:
    hub_endpoint.add_repo("acme/tiny-clip", ckpt_files)
    hub_endpoint.fail("acme/tiny-clip", status, error_code=error_code, scope="api")
    code, out, err = scan("acme/tiny-clip")
    assert code == ExitCode.NO_VERDICT
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "acme/tiny-clip" in err
