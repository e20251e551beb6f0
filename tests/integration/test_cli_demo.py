"""`hubscan demo`: offline, it builds (or reuses) a small backdoored CLIP, finds the backdoor
without being told, removes it and says where the release is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode

runner = CliRunner()


@pytest.mark.slow
def test_demo_audits_patches_and_releases_a_small_backdoored_model(tmp_path: Path) -> None:
    out = tmp_path / "demo-release"
    result = runner.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == ExitCode.OK, result.stderr
    assert "backdoor suspected" in result.stdout
    assert f"release: {out}" in result.stdout.replace("\n", "")
    report = json.loads((out / "report.json").read_text())
    estimated, true = report["verification"]["comparisons"]
    assert (estimated["source"], true["source"]) == ("estimated", "known")
    assert true["trigger"].startswith("patch:size=3,pos=tl,pattern=checker")  # canonical spec
    assert true["target"] == "trouser"
    assert true["before"]["attack_success"] > 0.8 > 0.1 >= true["after"]["attack_success"]
    assert report["verification"]["passed"]
