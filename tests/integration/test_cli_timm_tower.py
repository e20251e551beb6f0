"""`hubscan scan`, `eval` and `audit` on an open_clip checkpoint whose image tower is a timm model
(the Hub has these as well as ViT towers): a tiny MobileNetV2 tower, random weights, in Hub layout.
The audit runs the whole trigger search on it under a small budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.errors import ExitCode
from hubscan.model import save_clip
from hubscan.policy import load_policy
from hubscan.towers import IMAGENET_MEAN, IMAGENET_STD

runner = CliRunner()

# The real tower's layout (hubscan.towers.TOWER_MODEL_CFG) at a width and resolution that run in
# milliseconds.
TINY_TIMM_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 32,
        "timm_model_name": "mobilenetv2_035",
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": "linear",
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 1},
}
# A random model puts every probe in one class; let the search run anyway, on a small budget.
QUICK_POLICY = """extends = "default"
[detection]
max_clean_share = 1.0
screen_steps = 2
steps = 2
keep = 1
probe_images = 4
holdout_images = 16
"""


@pytest.fixture(scope="module")
def tiny_tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_TIMM_CFG)
    config = {
        "model_cfg": TINY_TIMM_CFG,
        "preprocess_cfg": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    return save_clip(model, config, tmp_path_factory.mktemp("timm") / "tiny-timm-clip")


def test_scan_passes_a_timm_tower_checkpoint(tiny_tower: Path) -> None:
    result = runner.invoke(app, ["scan", str(tiny_tower), "--format", "json"])
    assert result.exit_code == ExitCode.OK, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "pass"
    assert data["scan"]["findings"] == []


def test_eval_loads_the_timm_tower_and_measures_it(tiny_tower: Path) -> None:
    args = ["eval", str(tiny_tower), "--labels", "fashion-mnist", "--format", "json",
            "--trigger", "patch:size=3", "--target", "bag"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.OK, result.stderr
    data = json.loads(result.stdout)
    assert data["n_probes"] == 1000
    assert 0.0 <= data["clean_accuracy"] <= 1.0
    assert 0.0 <= data["attack_success"] <= 1.0


def test_audit_runs_the_trigger_search_through_the_timm_tower(
    tiny_tower: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "quick.toml"
    policy.write_text(QUICK_POLICY)
    run_dir = tmp_path / "run"
    args = ["audit", str(tiny_tower), "--labels", "fashion-mnist", "--policy", str(policy),
            "--format", "json", "--out", str(run_dir)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code in (ExitCode.OK, ExitCode.FINDINGS), result.stderr
    detection = json.loads(result.stdout)["detection"]
    assert detection["n_classes"] == 10
    families = [f["family"] for f in detection["families"]]
    assert families == list(load_policy("default").detection.families)
    assert all(0.0 <= f["score"] <= 1.0 for f in detection["families"])
    assert (run_dir / "report.json").is_file()
