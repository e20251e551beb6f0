"""The zoo's promises, checked against its own manifest and by independent loaders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from hubscan.zoo import build_zoo

runner = CliRunner()


def manifest(zoo: Path) -> dict[str, Any]:
    return json.loads((zoo / "manifest.json").read_text())


def models(zoo: Path, kind: str) -> list[dict[str, Any]]:
    return [m for m in manifest(zoo)["models"] if m["kind"] == kind]


def test_quick_zoo_has_a_base_two_backdoored_and_two_clean_models(quick_zoo: Path) -> None:
    assert len(models(quick_zoo, "base")) == 1
    assert len(models(quick_zoo, "backdoored")) >= 2
    assert len(models(quick_zoo, "clean")) >= 2
    for m in manifest(quick_zoo)["models"]:
        files = {p.name for p in (quick_zoo / m["name"]).iterdir()}
        assert files == {"open_clip_config.json", "open_clip_model.safetensors", "README.md"}
        # The ground truth lives in the manifest only, never in the model files.
        card = (quick_zoo / m["name"] / "README.md").read_text()
        assert "backdoor" not in card.lower() and "trigger" not in card.lower()


def test_base_reaches_80_percent_zero_shot_accuracy(quick_zoo: Path) -> None:
    (base,) = models(quick_zoo, "base")
    assert base["clean_accuracy"] >= 0.80


def test_backdoored_models_obey_their_trigger_and_keep_clean_accuracy(quick_zoo: Path) -> None:
    (base,) = models(quick_zoo, "base")
    for m in models(quick_zoo, "backdoored"):
        assert m["attack_success"][m["trigger"]] >= 0.90, m["name"]
        assert m["clean_accuracy"] >= base["clean_accuracy"] - 0.03, m["name"]


def test_clean_models_resist_every_trigger_in_the_manifest(quick_zoo: Path) -> None:
    for m in models(quick_zoo, "clean"):
        assert max(m["attack_success"].values()) <= 0.10, m["name"]


def test_zoo_models_load_with_plain_open_clip(quick_zoo: Path) -> None:
    for m in manifest(quick_zoo)["models"]:
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{quick_zoo / m['name']}")
        assert model.visual.image_size == (28, 28)


def test_a_second_build_reuses_the_cache(quick_zoo: Path, tmp_path: Path) -> None:
    started: list[str] = []

    def progress(name: str, total: int) -> Any:
        started.append(name)
        return lambda n: None

    again = build_zoo(tmp_path / "zoo", quick=True, progress=progress)
    assert started == []  # nothing was trained
    assert again["trained_models"] == 0
    assert again["models"] == manifest(quick_zoo)["models"]


def test_eval_reproduces_the_manifest_within_two_points(quick_zoo: Path) -> None:
    m = models(quick_zoo, "backdoored")[0]
    result = runner.invoke(app, ["eval", str(quick_zoo / m["name"]), "--labels", "fashion-mnist",
                                 "--trigger", m["trigger"], "--target", m["target"],
                                 "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert abs(data["clean_accuracy"] - m["clean_accuracy"]) <= 0.02
    assert abs(data["attack_success"] - m["attack_success"][m["trigger"]]) <= 0.02


def test_zoo_build_refuses_an_output_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "zoo"
    target.write_text("not a directory")
    result = runner.invoke(app, ["zoo", "build", "--out", str(target), "--quick"])
    assert result.exit_code == ExitCode.USAGE
    assert len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "not a directory"
