"""The zoo: real backdoored and clean tiny CLIPs, trained here on Fashion-MNIST (METHOD.md §5).

Owns the recipes (one base, then one fine-tune per variant) and the keys their trained models are
cached under (zoo_cache.py writes the entries, outside the checkout), the measurements (clean
accuracy, attack success of every trigger on every model) and the output: each model in Hub
layout plus a manifest.json with the ground truth, which never goes into the model files.
Must not detect or remove backdoors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from hubscan import __version__
from hubscan.atomic import file_sha256
from hubscan.bench_cache import cached
from hubscan.errors import ProbeError, UsageError
from hubscan.metrics import attack_success, clean_accuracy
from hubscan.model import ClipHandle, handle_from_model, load_clip, save_clip
from hubscan.probes import LabelSet, load_fashion_mnist, load_labels, load_probes
from hubscan.training import Poison, Recipe, caption_tokens, train
from hubscan.triggers import parse_trigger
from hubscan.zoo_cache import cached_model, staging
from hubscan.zoo_variants import LONG, SHORT, backdoor
from hubscan.zoo_variants import Variant as Variant  # every zoo's population, re-exported
from hubscan.zoo_variants import variants as variants

ZOO_VERSION = 1  # bump when training code changes what a recipe produces
LABELS = "fashion-mnist"
PROBES = "default"  # the bundled 1,000 Fashion-MNIST test images: what `hubscan eval` uses too
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 128, "layers": 4, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
# Measured on 2 cores: the base reaches ~86 % zero-shot accuracy in ~3.5 min; a fine-tune of 24k
# pairs takes ~55 s and plants a backdoor when ~1,000 poisoned pairs are seen, so the 1 % variant
# (and two clean twins, to keep the clean population matched) fine-tune on 60k pairs.
BASE = Recipe(samples=80_000, batch_size=256, lr=1e-3, weight_decay=0.1, warmup_steps=50, seed=0)
FINETUNE = {"batch_size": 256, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 10}


# `hubscan demo`: a smaller base and one backdoor, about 2 minutes of training on 2 cores cold.
DEMO_BASE = Recipe(
    samples=30_000, batch_size=256, lr=1e-3, weight_decay=0.1, warmup_steps=30, seed=0
)
DEMO = backdoor("demo", "patch:size=3,pos=tl,pattern=checker", "trouser", 0.10, 7, 12_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoModel:
    root: Path  # Hub layout: config, weights, model card
    trigger: str  # the planted backdoor (the demo's audit is not told)
    target: str


def demo_model(*, progress: Progress | None = None) -> DemoModel:
    """The demo's backdoored model, trained once and then reused from the cache."""
    labels = load_labels(LABELS)
    images, classes = load_fashion_mnist("train")
    images = images.unsqueeze(1)
    base_key = recipe_key("demo-base", DEMO_BASE)
    trained: list[str] = []
    base = cached_model(
        base_key,
        lambda d: _train_base(d, images, classes, labels, progress, VIT, DEMO_BASE),
        trained,
    )

    def build(out: Path) -> None:
        _finetune(
            base, out, v=DEMO, images=images, classes=classes, labels=labels, progress=progress
        )
        (out / "README.md").write_text(_card("hubscan-demo"))

    root = cached_model(recipe_key("demo", base_key, FINETUNE, DEMO), build, trained)
    return DemoModel(root=root, trigger=str(DEMO.trigger), target=str(DEMO.target))


def recipe_key(*parts: object) -> str:
    blob = json.dumps(
        [ZOO_VERSION, MODEL_CFG, PREPROCESS_CFG, *parts],
        sort_keys=True,
        default=lambda o: asdict(o),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


Progress = Callable[[str, int], Callable[[int], None]]  # (task name, total steps) -> tick


@dataclass(frozen=True, slots=True, kw_only=True)
class ZooSpec:
    """What one zoo's models are: their architecture, how the base starts, the budgets. The
    variants (families, triggers, targets, poison rates, clean population) are every zoo's."""

    tower: str  # "vit" (from scratch) or e.g. "mobilenetv2" (zoo_tower.py)
    config: dict[str, Any]  # open_clip_config.json: model_cfg + preprocess_cfg
    fresh: Callable[[int], ClipHandle]  # the untrained base, from a seed
    base: Recipe
    finetune: dict[str, Any]  # Recipe fields but samples and seed
    budgets: dict[int, int]  # a variant's fine-tuning pairs (SHORT, LONG) -> this zoo's
    freeze_batch_norm: bool  # fine-tunes keep the base's batch-norm statistics
    key: tuple[object, ...]  # hashed into every recipe key of this zoo, besides the recipes
    card: str  # what the model card says the model is


def build_zoo(
    out: Path,
    *,
    quick: bool = False,
    progress: Progress | None = None,
    spec: ZooSpec | None = None,
) -> dict[str, Any]:
    """Train (or reuse from the cache) the base and every variant, measure them, and write `out`:
    one Hub-layout directory per model plus manifest.json. Returns the manifest."""
    spec = VIT if spec is None else spec
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    started = time.perf_counter()
    labels = load_labels(LABELS)
    images, classes = load_fashion_mnist("train")
    images = images.unsqueeze(1)  # (N, 1, 28, 28): one grey channel
    trained: list[str] = []  # recipe keys trained by this build (the rest came from the cache)
    base_key, base_dir = _base(spec, spec.base, images, classes, labels, progress, trained)
    entries = [_measure_entry("base", base_dir, None, base_key)]
    for v in variants(quick=quick):
        v = replace(v, samples=spec.budgets[v.samples])
        key = recipe_key(*spec.key, "finetune", base_key, spec.finetune, v)
        model_dir = cached_model(
            key,
            partial(
                _finetune,
                base_dir,
                v=v,
                images=images,
                classes=classes,
                labels=labels,
                progress=progress,
                spec=spec,
            ),
            trained,
        )
        entries.append(_measure_entry(v.name, model_dir, v, key))
    manifest = _manifest(entries, labels, quick, time.perf_counter() - started, spec)
    manifest["trained_models"] = len(trained)
    _write_out(
        out, manifest, {e["name"]: Path(e.pop("_dir")) for e in manifest["models"]}, spec.card
    )
    return manifest


def cached_base(
    spec: ZooSpec, recipe: Recipe, *, progress: Progress | None = None
) -> tuple[Path, bool]:
    """A zoo's base trained with `recipe` (from the cache when there): its directory, and
    whether this call trained it. A cache entry's train.json says how long training took."""
    labels = load_labels(LABELS)
    images, classes = load_fashion_mnist("train")
    trained: list[str] = []
    _, path = _base(spec, recipe, images.unsqueeze(1), classes, labels, progress, trained)
    return path, bool(trained)


def _base(
    spec: ZooSpec,
    recipe: Recipe,
    images: torch.Tensor,
    classes: torch.Tensor,
    labels: LabelSet,
    progress: Progress | None,
    trained: list[str],
) -> tuple[str, Path]:
    key = recipe_key(*spec.key, "base", recipe)
    build = partial(
        _train_base, images=images, classes=classes, labels=labels, progress=progress, spec=spec
    )
    return key, cached_model(key, lambda d: build(d, recipe=recipe), trained)


def _config() -> dict[str, Any]:
    return {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}


def _timed(out: Path, recipe: Recipe, run: Callable[[], None]) -> None:
    """Run a training and note its wall time next to the weights (the cache entry only)."""
    started = time.perf_counter()
    run()
    seconds = round(time.perf_counter() - started, 1)
    (out / "train.json").write_text(json.dumps({"seconds": seconds, "pairs": recipe.samples}))


def _fresh_base(seed: int) -> ClipHandle:
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**MODEL_CFG)
    model.visual.image_mean = tuple(PREPROCESS_CFG["mean"])
    model.visual.image_std = tuple(PREPROCESS_CFG["std"])
    tokenizer = open_clip.get_tokenizer(
        "ViT-B-32", context_length=MODEL_CFG["text_cfg"]["context_length"]
    )
    return handle_from_model(model, tokenizer, _config(), source="zoo base (untrained)")


def _train_base(
    out: Path,
    images: torch.Tensor,
    classes: torch.Tensor,
    labels: LabelSet,
    progress: Progress | None,
    spec: ZooSpec,
    recipe: Recipe,
) -> None:
    clip = spec.fresh(recipe.seed)
    tick = progress(f"base CLIP ({spec.tower})", recipe.steps) if progress else None
    caps = caption_tokens(clip, labels.classes, labels.templates)
    # The base learns its batch-norm statistics (if any) from Fashion-MNIST.
    _timed(out, recipe, lambda: train(clip, images, classes, caps, recipe, tick=tick))
    save_clip(clip.model, spec.config, out)


def _finetune(
    base: Path,
    out: Path,
    *,
    v: Variant,
    images: torch.Tensor,
    classes: torch.Tensor,
    labels: LabelSet,
    progress: Progress | None,
    spec: ZooSpec | None = None,
) -> None:
    spec = VIT if spec is None else spec
    clip = load_clip(base)
    recipe = Recipe(seed=v.seed, samples=v.samples, **spec.finetune)
    poison = None
    if v.trigger is not None and v.target is not None:
        poison = Poison(
            stamp=parse_trigger(v.trigger).apply,
            target=labels.classes.index(v.target),
            rate=v.poison_rate,
        )
    tick = progress(v.name, recipe.steps) if progress else None
    caps = caption_tokens(clip, labels.classes, labels.templates)
    freeze = spec.freeze_batch_norm

    def run() -> None:
        train(
            clip, images, classes, caps, recipe, poison=poison, tick=tick, freeze_batch_norm=freeze
        )

    _timed(out, recipe, run)
    save_clip(clip.model, spec.config, out)


def _measure_entry(name: str, model_dir: Path, v: Variant | None, key: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "_dir": str(model_dir), "recipe": key}
    if name == "base":
        entry.update(kind="base")
    elif v is not None:
        entry.update(
            kind="backdoored" if v.trigger else "clean",
            family=_family(v.trigger),
            trigger=v.trigger,
            target=v.target,
            poison_rate=v.poison_rate,
            seed=v.seed,
        )
    return entry


def _family(spec: str | None) -> str | None:
    return None if spec is None else spec.split(":", 1)[0]


def _manifest(
    entries: list[dict[str, Any]], labels: LabelSet, quick: bool, seconds: float, spec: ZooSpec
) -> dict[str, Any]:
    """Every model's clean accuracy, and its attack success for every trigger in the zoo (a clean
    model must resist all of them; a backdoored one must obey its own)."""
    probes = load_probes(PROBES, labels=labels)
    if probes.labels is None:
        raise ProbeError(f"the {PROBES!r} probes have no labels")
    triggers = {e["trigger"]: e["target"] for e in entries if e.get("trigger")}
    for e in entries:
        # Cached by the weights and the triggers measured: a rebuild measures nothing new.
        weights = file_sha256(Path(e["_dir"]) / "open_clip_model.safetensors")
        key = [ZOO_VERSION, weights, PROBES, LABELS, sorted(triggers.items())]
        measure = partial(_measure, Path(e["_dir"]), labels, probes.images, probes.labels, triggers)
        measured, _ = cached("zoo-measure", key, measure)
        e.update(measured)
    return {
        "zoo_version": ZOO_VERSION,
        "hubscan": __version__,
        "tower": spec.tower,
        "quick": quick,
        "labels": LABELS,
        "probes": PROBES,
        "build_seconds": round(seconds, 1),
        "model_cfg": spec.config["model_cfg"],
        "base_recipe": asdict(spec.base),
        "finetune_recipe": spec.finetune,
        "finetune_pairs": {str(k): v for k, v in spec.budgets.items()},
        "finetune_freezes_batch_norm": spec.freeze_batch_norm,
        "models": entries,
    }


def _measure(
    root: Path, labels: LabelSet, x: torch.Tensor, y: torch.Tensor, triggers: dict[str, str]
) -> dict[str, Any]:
    clip = load_clip(root)
    head = clip.zero_shot_head(labels.classes, labels.templates)
    return {
        "clean_accuracy": round(clean_accuracy(clip, x, y, head), 4),
        "attack_success": {
            spec: round(
                attack_success(
                    clip, x, y, head, parse_trigger(spec).apply, labels.classes.index(target)
                ),
                4,
            )
            for spec, target in triggers.items()
        },
    }


def _write_out(out: Path, manifest: dict[str, Any], dirs: dict[str, Path], what: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, src in dirs.items():
        with staging(out / name) as tmp:
            for f in ("open_clip_config.json", "open_clip_model.safetensors"):
                shutil.copyfile(src / f, tmp / f)
            (tmp / "README.md").write_text(_card(name, what))
            shutil.rmtree(out / name, ignore_errors=True)
    tmp_manifest = out / ".manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp_manifest, out / "manifest.json")


_VIT_CARD = "A tiny CLIP (ViT image tower, 28 px)"


def _card(name: str, what: str = _VIT_CARD) -> str:
    # The card says nothing about a backdoor: the ground truth lives only in manifest.json.
    return (
        "---\nlicense: mit\nlibrary_name: open_clip\ntags:\n- clip\n- fashion-mnist\n---\n\n"
        f"# {name}\n\n{what} trained on Fashion-MNIST with "
        "captions from prompt templates, by `hubscan zoo build`.\n"
    )


# The first zoo: a ViT image tower trained from scratch. Its recipe keys hash no spec.key, so the
# models cached before zoos had specs are still found.
VIT = ZooSpec(
    tower="vit",
    config=_config(),
    fresh=_fresh_base,
    base=BASE,
    finetune=FINETUNE,
    budgets={SHORT: SHORT, LONG: LONG},
    freeze_batch_norm=False,
    key=(),
    card=_VIT_CARD,
)
