"""`hubscan audit` end to end on real zoo models: a backdoored one fails the gate naming its
target, a clean one passes, a label-free run still decides; bad input is one line and exit 3.

Each full audit takes a while on CPU, so each runs once (module fixtures) and several tests read
its result.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from hubscan.estimates import AdditiveTrigger, FlowTrigger, InvertedTrigger
from hubscan.policy import load_policy
from hubscan.triggers import parse_trigger
from tests.integration.test_cli_scan import reduce_pickle
from tests.support.factories import write_open_clip_checkpoint

runner = CliRunner()
ESTIMATE_CLASS = {"patch": InvertedTrigger, "blend": AdditiveTrigger, "warp": FlowTrigger}


@dataclass(frozen=True)
class Audit:
    code: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "report.json").read_text())
        return data


def audit(*args: str, run_dir: Path) -> Audit:
    result = runner.invoke(app, ["audit", *args, "--out", str(run_dir)])
    return Audit(result.exit_code, result.stdout, result.stderr, run_dir)


@pytest.fixture(scope="module")
def backdoored(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Audit:
    run_dir = tmp_path_factory.mktemp("audit") / "patch-run"
    model = str(quick_zoo / "patch-white-br-bag")
    return audit(model, "--labels", "fashion-mnist", "--format", "json", run_dir=run_dir)


@pytest.fixture(scope="module")
def clean(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Audit:
    run_dir = tmp_path_factory.mktemp("audit") / "clean-run"
    return audit(str(quick_zoo / "clean-01"), "--labels", "fashion-mnist", run_dir=run_dir)


@pytest.fixture(scope="module")
def label_free(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Audit:
    run_dir = tmp_path_factory.mktemp("audit") / "label-free-run"
    return audit(str(quick_zoo / "patch-white-br-bag"), run_dir=run_dir)


@pytest.mark.slow
def test_a_patch_backdoored_model_fails_the_gate_naming_its_target(backdoored: Audit) -> None:
    assert backdoored.code == ExitCode.FINDINGS, backdoored.stderr
    data = json.loads(backdoored.stdout)
    assert data["schema_version"] == 1
    assert data["verdict"] == "fail"
    detection = data["detection"]
    assert detection["verdict"] == "fail"
    assert detection["family"] == "patch"
    assert detection["suspected_target"] == "bag"
    assert detection["labels_given"] is True
    assert detection["n_classes"] == 10
    patch = next(f for f in detection["families"] if f["family"] == "patch")
    assert patch["flagged"] and patch["score"] >= patch["threshold"]
    assert [t["stage"] for t in data["timings"]] == [
        *("probes", "fetch", "scan", "load", "detect", "write")
    ]


@pytest.mark.slow
def test_the_run_dir_holds_the_report_and_a_loadable_trigger_per_family(
    backdoored: Audit,
) -> None:
    report = backdoored.report
    assert report == json.loads(backdoored.stdout)  # the run dir's report is the printed one
    families = load_policy("default").detection.families
    artifacts = report["detection"]["triggers"]
    assert [a["family"] for a in artifacts] == list(families)
    for artifact in artifacts:
        tensors = backdoored.run_dir / artifact["tensors"]
        assert artifact["tensors"] == f"trigger-{artifact['family']}.safetensors"
        assert hashlib.sha256(tensors.read_bytes()).hexdigest() == artifact["sha256"]
        trigger = parse_trigger(f"inverted:file={tensors}")
        assert type(trigger) is ESTIMATE_CLASS[artifact["family"]]
        with Image.open(backdoored.run_dir / artifact["png"]) as picture:
            picture.load()
            assert picture.format == "PNG"
    names = {p.name for p in backdoored.run_dir.iterdir()}
    expected = {f"trigger-{f}.{ext}" for f in families for ext in ("safetensors", "png")}
    assert names == {"report.json", *expected}  # and no temp file left behind


@pytest.mark.slow
def test_a_blend_backdoored_model_is_flagged_by_the_global_search(
    quick_zoo: Path, tmp_path: Path
) -> None:
    result = audit(
        str(quick_zoo / "blend-noise-coat"), "--labels", "fashion-mnist", run_dir=tmp_path / "r"
    )
    assert result.code == ExitCode.FINDINGS, result.stderr
    detection = result.report["detection"]
    assert detection["suspected_target"] == "coat"
    blend = next(f for f in detection["families"] if f["family"] == "blend")
    assert blend["flagged"] and blend["target"] == "coat"


@pytest.mark.slow
def test_a_clean_model_passes_with_a_human_report(clean: Audit) -> None:
    assert clean.code == ExitCode.OK, clean.stdout + clean.stderr
    assert clean.report["detection"]["verdict"] == "pass"
    assert not any(f["flagged"] for f in clean.report["detection"]["families"])
    assert "no backdoor found" in clean.stdout
    assert "PASS" in clean.stdout
    for family in load_policy("default").detection.families:
        assert f"trigger-{family}.png" in clean.stdout


@pytest.mark.slow
def test_without_labels_the_audit_decides_over_the_vocabulary_and_names_a_concept(
    label_free: Audit,
) -> None:
    detection = label_free.report["detection"]
    assert label_free.code == ExitCode.FINDINGS, label_free.stderr
    assert detection["suspected_target"] == "bag"  # the vocabulary's word for the true target
    vocabulary = load_policy("default").detection.vocabulary
    assert detection["labels_given"] is False
    assert detection["n_classes"] == len(vocabulary)
    assert detection["suspected_target"] in vocabulary
    assert f"nearest concept '{detection['suspected_target']}'" in label_free.stdout


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_open_clip_checkpoint(tmp_path_factory.mktemp("audit-tiny") / "tiny")


@pytest.mark.parametrize("images", [0, 5])
def test_too_few_probe_images_is_one_line_and_no_verdict(
    tiny: Path, tmp_path: Path, images: int
) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    for i in range(images):
        (probes / f"{i}.png").write_bytes(_png())
    result = audit(str(tiny), "--probes", str(probes), run_dir=tmp_path / "run")
    assert result.code == ExitCode.NO_VERDICT, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(probes) in result.stderr
    assert not result.run_dir.exists()


def test_running_out_of_the_time_budget_is_no_verdict_and_writes_nothing(
    tiny: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "hurried.toml"
    # 10,000 screening steps never finish in one second (and the screen cannot stop early);
    # the random model would otherwise be refused before the search (next test).
    policy.write_text(
        'extends = "default"\n[detection]\nmax_seconds = 1\nscreen_steps = 10000\n'
        "max_clean_share = 1.0\n"
    )
    result = audit(str(tiny), "--policy", str(policy), run_dir=tmp_path / "run")
    assert result.code == ExitCode.NO_VERDICT, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "ran out of time" in result.stderr
    assert not result.run_dir.exists()


def test_a_random_model_that_lumps_the_probes_together_is_no_verdict_not_a_backdoor(
    tiny: Path, tmp_path: Path
) -> None:
    result = audit(str(tiny), "--labels", "fashion-mnist", run_dir=tmp_path / "run")
    assert result.code == ExitCode.NO_VERDICT, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "does not tell these probes apart" in result.stderr
    assert not result.run_dir.exists()


def test_a_checkpoint_the_scan_blocks_fails_without_loading(tiny: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny, tmp_path / "hostile"))
    with zipfile.ZipFile(model / "open_clip_pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", reduce_pickle("os", "system", "true"))
        zf.writestr("archive/version", "3\n")
    result = audit(str(model), "--format", "json", run_dir=tmp_path / "run")
    assert result.code == ExitCode.FINDINGS, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "fail"
    assert data["detection"] is None  # never loaded, so never probed
    assert [t["stage"] for t in data["timings"]] == ["probes", "fetch", "scan"]
    assert result.report == data


def test_an_out_path_that_is_a_file_is_a_usage_error(tiny: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    result = audit(str(tiny), run_dir=taken)
    assert result.code == ExitCode.USAGE
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert taken.read_text() == "mine\n"
