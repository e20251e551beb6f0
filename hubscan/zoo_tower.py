"""The second zoo: the first zoo's backdoors, planted by fine-tuning a CLIP whose image tower
starts from ImageNet MobileNetV2 (towers.py) — the regime the TBAR paper studied (poisoning
during the fine-tuning of a pre-trained model), at 64 px (issue 7).

Owns the tower zoo's recipes and budgets (what `hubscan zoo build --tower mobilenetv2` trains) and
the bases `hubscan bench towers` compares at one training budget: the ImageNet trunk, the same
architecture from random weights, and the first zoo's ViT from scratch. Everything else — the
variants, the cache, the measurements, the manifest — is zoo.py's. Must not detect or remove
backdoors.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hubscan import towers
from hubscan.errors import UsageError
from hubscan.model import ClipHandle, handle_from_model
from hubscan.training import Recipe
from hubscan.zoo import VIT, Progress, ZooSpec, build_zoo
from hubscan.zoo_variants import LONG, SHORT

TOWER = "mobilenetv2"
TOWERS = ("vit", TOWER)  # what `hubscan zoo build --tower` accepts
# Measured on 2 idle cores: ~110 pairs/s at 64 px, a third of the first zoo's 28 px ViT; the base
# (24k pairs, 3.5 min) reaches 92 % zero-shot where the from-scratch base needs 80k pairs for 87 %
# (benchmarks/towers.md), and 12k-pair fine-tunes (~1.7 min) plant the quick zoo's backdoors at
# >= 99.6 % attack success. Batch 128 gives the fresh text tower and projection more steps.
BASE = Recipe(samples=24_000, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=20, seed=0)
FINETUNE: dict[str, Any] = {"batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 10}
BUDGETS = {SHORT: 12_000, LONG: 30_000}

# What the tower zoo's recipe keys hash besides the recipes: nothing here can collide with the
# first zoo's cache entries, and new weights or a new architecture retrain everything.
_KEY: dict[str, Any] = {
    "tower": TOWER,
    "weights_sha256": towers.WEIGHTS_SHA256,
    "model_cfg": towers.TOWER_MODEL_CFG,
    "preprocess_cfg": towers.TOWER_PREPROCESS_CFG,
    "finetune_freezes_batch_norm": True,
}

TOWER_SPEC = ZooSpec(
    tower=TOWER,
    config=towers.tower_config(),
    fresh=lambda seed: towers.fresh_tower_clip(seed=seed),
    base=BASE,
    finetune=FINETUNE,
    budgets=BUDGETS,
    # The zoo's fine-tunes keep batch norm in eval mode: the running statistics stay the base's,
    # so a backdoored model differs from its base in parameters only. TBAR's trigger vector and
    # the oracle (backdoored minus base) are differences of parameters (vector.tower_params) and
    # vector.finetune runs in eval mode too; with drifting statistics part of the backdoor would
    # live in buffers that no vector can subtract, and the oracle would not be an upper bound.
    freeze_batch_norm=True,
    key=(_KEY,),
    card="A small CLIP (ImageNet MobileNetV2 image tower, 64 px)",
)


def random_tower_clip(seed: int) -> ClipHandle:
    """The tower CLIP's architecture with every weight random (the control for pre-training)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.CLIP(**towers.TOWER_MODEL_CFG)
    model.visual.image_mean = towers.IMAGENET_MEAN
    model.visual.image_std = towers.IMAGENET_STD
    context = towers.TOWER_MODEL_CFG["text_cfg"]["context_length"]
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=context)
    model.eval()
    return handle_from_model(model, tokenizer, towers.tower_config(), source="random tower")


RANDOM_TOWER_SPEC = replace(
    TOWER_SPEC,
    tower=f"{TOWER}-random",
    fresh=random_tower_clip,
    key=({**_KEY, "tower": f"{TOWER}-random", "weights_sha256": None},),
)
# The bases `hubscan bench towers` trains with one recipe: (label, spec).
COMPARED = (
    ("ImageNet MobileNetV2, 64 px (the tower zoo's base)", TOWER_SPEC),
    ("MobileNetV2 from random weights, 64 px", RANDOM_TOWER_SPEC),
    ("ViT from scratch, 28 px (the first zoo's architecture)", VIT),
)


def spec_for(tower: str) -> ZooSpec:
    if tower == TOWER:
        return TOWER_SPEC
    if tower == "vit":
        return VIT
    raise UsageError(f"unknown --tower {tower!r}; choose one of {', '.join(TOWERS)}")


def build(
    out: Path, *, tower: str, quick: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """`hubscan zoo build --tower`: the zoo of that tower (zoo.build_zoo does the work)."""
    return build_zoo(out, quick=quick, progress=progress, spec=spec_for(tower))
