"""The pre-trained-tower zoo (zoo_tower.py): the first zoo's population fine-tuned from a timm-tower
base with batch norm frozen, cached apart from the first zoo, and the equal-budget bases bench.
Everything runs a tiny timm tower for a handful of steps (seconds), never the real budgets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from hubscan import bench_towers, zoo, zoo_tower
from hubscan.cli import app
from hubscan.errors import ExitCode, UsageError
from hubscan.model import ClipHandle, handle_from_model, load_clip
from hubscan.towers import IMAGENET_MEAN, IMAGENET_STD
from hubscan.training import Recipe, caption_tokens, train
from hubscan.zoo import ZooSpec
from hubscan.zoo_variants import LONG, SHORT

runner = CliRunner()

# The tower zoo's layout (towers.TOWER_MODEL_CFG) at a width and resolution that run in
# milliseconds, as in tests/integration/test_cli_timm_tower.py.
TINY_CFG: dict[str, Any] = {
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
TINY_CONFIG = {
    "model_cfg": TINY_CFG,
    "preprocess_cfg": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
}
TINY_RECIPE = Recipe(samples=16, batch_size=8, lr=1e-3, weight_decay=0.1, warmup_steps=1, seed=0)


def tiny_clip(seed: int) -> ClipHandle:
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CFG)
    model.visual.image_mean, model.visual.image_std = IMAGENET_MEAN, IMAGENET_STD
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    model.eval()
    return handle_from_model(model, tokenizer, TINY_CONFIG, source="tiny timm tower")


def tiny_spec(spec: ZooSpec, name: str) -> ZooSpec:
    return replace(
        spec,
        config=TINY_CONFIG,
        fresh=tiny_clip,
        base=TINY_RECIPE,
        finetune={"batch_size": 8, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1},
        budgets={SHORT: 16, LONG: 24},
        key=(*spec.key, f"test-{name}"),
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HUBSCAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def batch_norm_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k
    }


def tower_parameters(model: Any) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.visual.named_parameters()}


def train_tiny(clip: ClipHandle, *, freeze_batch_norm: bool) -> None:
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(32) % 2
    caps = caption_tokens(clip, ["cat", "dog"], ["a {}"])
    train(clip, images, labels, caps, TINY_RECIPE, freeze_batch_norm=freeze_batch_norm)


def test_frozen_batch_norm_keeps_running_statistics_while_the_weights_learn() -> None:
    clip = tiny_clip(0)
    stats, params = batch_norm_state(clip.model), tower_parameters(clip.model)
    train_tiny(clip, freeze_batch_norm=True)
    after = batch_norm_state(clip.model)
    assert stats and all(torch.equal(stats[k], after[k]) for k in stats)
    moved = tower_parameters(clip.model)
    assert any(not torch.equal(params[k], moved[k]) for k in params)
    assert not clip.model.training  # train() leaves the model in eval mode either way


def test_unfrozen_batch_norm_learns_running_statistics() -> None:
    clip = tiny_clip(0)
    stats = batch_norm_state(clip.model)
    train_tiny(clip, freeze_batch_norm=False)
    after = batch_norm_state(clip.model)
    assert any(not torch.equal(stats[k], after[k]) for k in stats)


def test_tower_zoo_plants_the_first_zoos_population_with_its_own_budgets() -> None:
    first = zoo.variants(quick=False)
    assert {v.samples for v in first} == set(zoo_tower.BUDGETS)
    assert zoo_tower.TOWER_SPEC.freeze_batch_norm and not zoo.VIT.freeze_batch_norm
    assert zoo_tower.TOWER_SPEC.config["model_cfg"]["vision_cfg"]["timm_model_name"] == (
        "mobilenetv2_100"
    )


def test_tower_zoo_recipe_keys_never_collide_with_the_first_zoos() -> None:
    def keys(spec: ZooSpec) -> set[str]:
        base = zoo.recipe_key(*spec.key, "base", spec.base)
        tuned = {
            zoo.recipe_key(*spec.key, "finetune", base, spec.finetune, v)
            for v in zoo.variants(quick=False)
        }
        same_recipe = zoo.recipe_key(*spec.key, "base", zoo_tower.BASE)
        return {base, same_recipe} | tuned

    specs = (zoo.VIT, zoo_tower.TOWER_SPEC, zoo_tower.RANDOM_TOWER_SPEC)
    sets = [keys(s) for s in specs]
    assert all(len(s) >= 1 + len(zoo.variants(quick=False)) for s in sets)
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_first_zoo_keys_are_the_ones_cached_before_zoos_had_specs() -> None:
    # recipe_key("base", BASE) and ("finetune", base, FINETUNE, v): what zoo.py hashed before.
    assert zoo.VIT.key == ()
    assert zoo.VIT.budgets == {SHORT: SHORT, LONG: LONG}


def test_spec_for_refuses_an_unknown_tower() -> None:
    assert zoo_tower.spec_for("mobilenetv2") is zoo_tower.TOWER_SPEC
    assert zoo_tower.spec_for("vit") is zoo.VIT
    with pytest.raises(UsageError, match="resnet"):
        zoo_tower.spec_for("resnet")


def test_zoo_build_cli_exits_2_on_an_unknown_tower(tmp_path: Path) -> None:
    result = runner.invoke(app, ["zoo", "build", "--out", str(tmp_path / "z"), "--tower", "x"])
    assert result.exit_code == ExitCode.USAGE
    assert not (tmp_path / "z").exists()


def test_tiny_tower_zoo_fine_tunes_parameters_only_and_writes_the_manifest(
    cache: Path, tmp_path: Path
) -> None:
    spec = tiny_spec(zoo_tower.TOWER_SPEC, "zoo")
    manifest = zoo.build_zoo(tmp_path / "zoo", quick=True, spec=spec)
    assert manifest["tower"] == "mobilenetv2" and manifest["finetune_freezes_batch_norm"]
    assert manifest["trained_models"] == 5
    names = [m["name"] for m in manifest["models"]]
    assert names == ["base", *(v.name for v in zoo.variants(quick=True))]
    base = load_clip(tmp_path / "zoo" / "base").model
    for m in manifest["models"][1:]:
        root = tmp_path / "zoo" / m["name"]
        assert {p.name for p in root.iterdir()} == {
            "open_clip_config.json",
            "open_clip_model.safetensors",
            "README.md",
        }
        card = (root / "README.md").read_text()
        assert "MobileNetV2" in card and "backdoor" not in card.lower()
        tuned = load_clip(root).model
        stats, base_stats = batch_norm_state(tuned), batch_norm_state(base)
        assert all(torch.equal(stats[k], base_stats[k]) for k in stats), m["name"]
        before, after = tower_parameters(base), tower_parameters(tuned)
        assert any(not torch.equal(before[k], after[k]) for k in before), m["name"]
        assert 0.0 <= m["clean_accuracy"] <= 1.0 and len(m["attack_success"]) == 2
    on_disk = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert on_disk["models"] == manifest["models"]
    again = zoo.build_zoo(tmp_path / "again", quick=True, spec=spec)
    assert again["trained_models"] == 0  # the cache, keyed by the tower's recipe


def test_bench_towers_trains_every_base_with_one_recipe_and_writes_both_accuracies(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared = (
        ("pre-trained", tiny_spec(zoo_tower.TOWER_SPEC, "bench")),
        ("random", tiny_spec(zoo_tower.RANDOM_TOWER_SPEC, "bench")),
    )
    monkeypatch.setattr(zoo_tower, "COMPARED", compared)
    monkeypatch.setattr(zoo_tower, "BASE", TINY_RECIPE)  # the recipe the compared bases share
    monkeypatch.setattr(zoo, "BASE", replace(TINY_RECIPE, samples=8))  # the reference row
    monkeypatch.setattr(bench_towers, "PROBE_SETS", (("default", "probes"),))
    result = bench_towers.run_towers_bench(out=tmp_path, pairs=24, command="hubscan bench towers")
    rows = result["bases"]
    assert [r["base"] for r in rows[:2]] == ["pre-trained", "random"]
    assert [r["pairs"] for r in rows] == [24, 24, 8]
    assert rows[0]["steps"] == rows[1]["steps"] == 3
    assert all(r["trained_now"] and r["train_seconds"] is not None for r in rows)
    assert all(0.0 <= r["zero_shot_accuracy"]["default"] <= 1.0 for r in rows)
    assert json.loads((tmp_path / "towers.json").read_text()) == result
    assert "| pre-trained | 24 | 3 |" in (tmp_path / "towers.md").read_text()
