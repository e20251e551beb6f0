"""`hubscan patch` end to end on real zoo models: a backdoored model comes out as a verified
release that plain open_clip loads; a clean one is left alone; a patch that cannot keep clean
accuracy, a bad --out and an interruption release nothing.

Each patch takes a while on CPU, so each runs once (module fixtures) and several tests read it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from hubscan.model import WEIGHTS_NAME
from tests.support.hub_release import TARGET, Released, fast_policy

runner = CliRunner()
RELEASE_FILES = {
    "README.md",
    "alpha.png",
    "card.diff",
    "open_clip_config.json",
    WEIGHTS_NAME,
    "report.json",
    "trigger.png",
}


@dataclass(frozen=True)
class Patched:
    code: int
    stdout: str
    stderr: str
    out: Path

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "report.json").read_text())
        return data


def patch(model: Path, out: Path, *args: str) -> Patched:
    result = runner.invoke(app, ["patch", str(model), "--out", str(out), *args])
    return Patched(result.exit_code, result.stdout, result.stderr, out)


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(fast_policy(tmp_path_factory.mktemp("policy")))


@pytest.fixture(scope="module")
def estimated(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory, fast: str) -> Patched:
    """The audit finds the trigger; TBAR removes its estimate (the true one is not given)."""
    out = tmp_path_factory.mktemp("patch") / "release"
    args = ("--labels", "fashion-mnist", "--policy", fast)
    return patch(quick_zoo / "patch-white-br-bag", out, *args)


def test_estimated_trigger_patch_releases_a_verified_model(estimated: Patched) -> None:
    assert estimated.code == ExitCode.OK, estimated.stderr
    v = estimated.report["verification"]
    assert v["passed"] and v["reasons"] == []
    (check,) = v["comparisons"]
    assert check["source"] == "estimated" and check["target"] == "bag"
    assert check["before"]["attack_success"] > 0.8
    assert check["after"]["attack_success"] <= 0.1
    assert check["after"]["clean_accuracy"] >= 0.95 * check["before"]["clean_accuracy"]
    assert v["redetection"]["verdict"] == "pass"
    assert "release:" in estimated.stdout and "finds no backdoor" in estimated.stdout


def test_release_holds_exactly_the_listed_files_with_their_sha256(estimated: Patched) -> None:
    files = {f["path"]: f["sha256"] for f in estimated.report["release"]["files"]}
    assert set(files) == RELEASE_FILES - {"report.json"} | {"trigger.safetensors"}
    visible = {p.name for p in estimated.out.iterdir() if not p.name.startswith(".")}
    assert visible == set(files) | {"report.json"}
    for name, digest in files.items():
        assert hashlib.sha256((estimated.out / name).read_bytes()).hexdigest() == digest


def test_patched_weights_keep_keys_and_dtypes_and_carry_provenance(
    estimated: Patched, quick_zoo: Path
) -> None:
    source = quick_zoo / "patch-white-br-bag" / WEIGHTS_NAME
    with safe_open(str(source), "pt") as a, safe_open(str(estimated.out / WEIGHTS_NAME), "pt") as b:
        keys = list(a.keys())  # a safetensors handle, not a dict
        assert set(keys) == set(b.keys())
        assert all(a.get_slice(k).get_dtype() == b.get_slice(k).get_dtype() for k in keys)
        meta = b.metadata()
        changed = {k for k in keys if not a.get_tensor(k).equal(b.get_tensor(k))}
    assert changed and all(k.startswith("visual.") for k in changed)  # only the image tower
    report = estimated.report
    assert meta["policy_sha256"] == report["policy_sha256"]
    assert meta["hubscan_version"] == report["tool_version"]
    assert float(meta["tbar_coef"]) == report["patch"]["coef"] > 0
    assert meta["trigger"] == "inverted:file=trigger.safetensors"
    assert meta["target"] == "bag" and meta["source_repo"].endswith("patch-white-br-bag")


def test_release_loads_with_plain_open_clip(estimated: Patched) -> None:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{estimated.out}")
    assert preprocess is not None and sum(p.numel() for p in model.parameters()) > 0


def test_card_names_the_base_model_the_tag_and_the_numbers(estimated: Patched) -> None:
    card = (estimated.out / "README.md").read_text()
    assert "base_model: patch-white-br-bag" in card and "- hubscan-patched" in card
    assert "## hubscan: backdoor removed" in card and "| estimated: inverted:file=" in card
    diff = (estimated.out / "card.diff").read_text()
    assert diff.startswith("--- a/README.md\n+++ b/README.md")
    assert "+- hubscan-patched" in diff and "+## hubscan: backdoor removed" in diff


def test_the_estimated_trigger_file_reproduces_the_attack_on_the_source(
    estimated: Patched, quick_zoo: Path
) -> None:
    spec = f"inverted:file={estimated.out / 'trigger.safetensors'}"
    args = ["eval", str(quick_zoo / "patch-white-br-bag"), "--trigger", spec, "--target", "bag"]
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["attack_success"] > 0.8


def test_known_trigger_patch_removes_it_and_reports_the_coefficient_curve(
    hub_release: Released,
) -> None:
    known = hub_release  # patched from a fake Hub with --trigger, --target coat, --format json
    assert known.code == ExitCode.OK, known.stderr
    report = json.loads(known.stdout)
    (check,) = report["verification"]["comparisons"]
    assert check["source"] == "known" and check["target"] == TARGET
    assert check["after"]["attack_success"] <= 0.1 < 0.8 < check["before"]["attack_success"]
    patch = report["patch"]
    assert patch["estimated"] is False and patch["variant"] == "fisher"
    dampings = [c["damping"] for c in patch["curves"]]
    assert patch["damping"] in dampings and dampings == sorted(dampings) and len(dampings) > 1
    coefs = [t["coef"] for t in patch["trials"]]
    assert coefs == sorted(coefs) and coefs[0] == 0 and patch["coef"] in coefs
    assert report["detection"] is None  # the known trigger needs no search
    assert not (known.out / "trigger.safetensors").exists()


def test_clean_model_is_not_patched_and_nothing_is_written(quick_zoo: Path, tmp_path: Path) -> None:
    result = patch(quick_zoo / "clean-01", tmp_path / "release", "--labels", "fashion-mnist")
    assert result.code == ExitCode.OK, result.stderr
    assert "no backdoor found" in result.stdout
    assert not result.out.exists()


def test_no_coefficient_within_the_floor_exits_4_with_the_trial_table(
    quick_zoo: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "greedy.toml"
    policy.write_text(
        'schema = 1\nextends = "default"\nname = "greedy"\n'
        "[unlearning]\nsteps = 5\nclean_floor = 1.0\ncoef_step = 8.0\ncoef_max = 16.0\nrefine = 0\n"
    )
    trigger = ("--trigger", "patch:size=3,pos=br,pattern=white", "--target", "bag")
    out = tmp_path / "release"
    result = patch(quick_zoo / "patch-white-br-bag", out, *trigger, "--policy", str(policy))
    assert result.code == ExitCode.NOT_REMEDIATED
    assert "no coefficient keeps agreement >= 1 x" in result.stderr  # label-free: agreement
    assert "TBAR coefficients tried" in result.stderr and "16" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [policy]


def test_out_that_is_not_a_release_is_refused_before_any_work(
    quick_zoo: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    start = time.perf_counter()
    result = patch(quick_zoo / "patch-white-br-bag", tmp_path, "--labels", "fashion-mnist")
    assert result.code == ExitCode.USAGE
    assert "is not a hubscan release" in result.stderr
    assert time.perf_counter() - start < 10
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_killed_patch_leaves_no_release_and_no_staging(quick_zoo: Path, tmp_path: Path) -> None:
    """`kill` (SIGTERM) while the release is being written; Ctrl-C takes the same path
    (KeyboardInterrupt), tested without a subprocess in test_release.py."""
    out = tmp_path / "release"
    model = quick_zoo / "patch-white-br-bag"
    quick = tmp_path.parent / f"{tmp_path.name}-quick.toml"  # not in tmp_path: it must stay empty
    quick.write_text(
        'extends = "default"\n[unlearning]\n'
        "steps = 5\nrefine = 0\nclean_floor = 0.5\ncoef_max = 1.0\nfisher_dampings = [0]\n"
    )
    trigger = ("--trigger", "patch:size=3,pos=br,pattern=white", "--target", "bag")
    args = ["patch", str(model), "--out", str(out), "--labels", "fashion-mnist", *trigger]
    args += ["--policy", str(quick)]
    env = {**os.environ, "HUBSCAN_DEBUG": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubscan", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    # Signal once the staging directory exists: the patched weights are being written or
    # verified, the moment a careless tool would leave half a release behind.
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".release.staging-*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the patch never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert b"interrupted" in stderr
    assert list(tmp_path.iterdir()) == []


def test_too_few_probes_to_split_and_audit_is_one_line_and_no_verdict(
    quick_zoo: Path, tmp_path: Path
) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    image = io.BytesIO()
    Image.new("L", (28, 28), 128).save(image, format="PNG")
    for i in range(300):  # enough to audit once (256), not to split three ways and audit twice
        (probes / f"{i}.png").write_bytes(image.getvalue())
    out = tmp_path / "release"
    result = patch(quick_zoo / "patch-white-br-bag", out, "--probes", str(probes))
    assert result.code == ExitCode.NO_VERDICT, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "need 256 images each" in result.stderr
    assert not out.exists()
