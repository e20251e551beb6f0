"""Warp backdoors the zoo does not have, and the warp search's flow budget (issue 4, exploration).

The zoo's two warps (`warp:strength=6,grid=4`: 2.1 px mean, 7 px largest displacement on a
28 px image) are found by no budget of the audit's warp search with a margin: at 2 px clean
models' natural "sinks" (bag, sandal) take as many probes, at 1 px and below the backdoors score
little above clean models (warp_budget.txt, warp_separation.txt). Is that the family or these
two triggers? This script fine-tunes eight more warp backdoors from the first zoo's base,
exactly as the zoo fine-tunes its own (zoo._finetune; cached under ~/.cache/hubscan/zoo like
them), with other grids, seeds, targets and strengths, among them WaNet-like subtle ones
(strength 1-3: 0.35-1 px mean); prints each one's clean accuracy and attack success on 2,000
test images; then runs the audit with the warp family only (warp_budget.audits) for each SPEC
on these eight, the zoo's two warps and the 12 clean models, at two seeds.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_strength.py /tmp/zoo-final \\
        warp_pixels=0.5 warp_pixels=0.7 warp_pixels=1.0 warp_pixels=2.0 \\
        > benchmarks/explore/warp_strength.txt

and with longer searches at 0.7 px (more refinement steps, more probe images, both):

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_strength.py /tmp/zoo-final \\
        warp_pixels=0.7,steps=72 warp_pixels=0.7,probe_images=48 \\
        warp_pixels=0.7,steps=72,probe_images=48 > benchmarks/explore/warp_strength-longer.txt
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
from warp_budget import audits  # this folder: run as a script

from hubscan import zoo
from hubscan.atomic import file_sha256
from hubscan.model import load_clip
from hubscan.probes import load_fashion_mnist, load_labels
from hubscan.triggers import parse_trigger
from hubscan.zoo_cache import cached_model
from hubscan.zoo_variants import Variant, backdoor

EXTRA = (
    backdoor("warp-g3-shirt", "warp:strength=6,grid=3,seed=11", "shirt", 0.10, 201),
    backdoor("warp-g6-sandal", "warp:strength=5,grid=6,seed=12", "sandal", 0.10, 202),
    backdoor("warp-g4-pullover", "warp:strength=6,grid=4,seed=13", "pullover", 0.10, 203),
    backdoor("warp-s4-dress", "warp:strength=4,grid=4,seed=14", "dress", 0.10, 204),
    backdoor("warp-g8-coat", "warp:strength=8,grid=8,seed=15", "coat", 0.10, 205),
    backdoor("warp-s3-shirt", "warp:strength=3,grid=4,seed=23", "shirt", 0.10, 213),
    backdoor("warp-s2-pullover", "warp:strength=2,grid=4,seed=21", "pullover", 0.10, 211),
    backdoor("warp-s1-coat", "warp:strength=1,grid=4,seed=22", "coat", 0.10, 212),
)
ZOO_WARPS = ("warp-boot", "warp-trouser")


def trained(base: Path) -> list[tuple[Variant, Path]]:
    """Each extra variant fine-tuned from `base` (from the cache when it was before)."""
    labels = load_labels(zoo.LABELS)
    images, classes = load_fashion_mnist("train")
    base_key = file_sha256(base / "open_clip_model.safetensors")
    out = []
    for v in EXTRA:
        build = partial(
            zoo._finetune,
            base,
            v=v,
            images=images.unsqueeze(1),
            classes=classes,
            labels=labels,
            progress=None,
        )
        key = zoo.recipe_key("explore-warp", base_key, zoo.FINETUNE, v)
        out.append((v, cached_model(key, build, [])))
    return out


def measure(models: list[tuple[Variant, Path]]) -> None:
    """Clean accuracy and attack success (images not of the target) on 2,000 test images."""
    labels = load_labels(zoo.LABELS)
    images, classes = load_fashion_mnist("test")
    images, classes = images[:2000].unsqueeze(1).float() / 255, classes[:2000]
    for v, path in models:
        clip = load_clip(path)
        head = clip.zero_shot_head(labels.classes, labels.templates)
        t = labels.classes.index(str(v.target))
        with torch.no_grad():
            acc = (clip.encode_images(images) @ head.T).argmax(1) == classes
            stamped = parse_trigger(str(v.trigger)).apply(images[classes != t])
            hit = (clip.encode_images(stamped) @ head.T).argmax(1) == t
        print(
            f"{v.name:18s} {v.trigger:32s} -> {v.target:9s} clean accuracy "
            f"{float(acc.float().mean()):.3f}  attack success {float(hit.float().mean()):.3f}",
            flush=True,
        )


def main(zoo_dir: Path, specs: list[str]) -> None:
    extra = trained(zoo_dir / "base")
    measure(extra)
    models = [
        *((v.name, path) for v, path in extra),
        *((name, zoo_dir / name) for name in ZOO_WARPS),
        *((f"clean-{i:02d}", zoo_dir / f"clean-{i:02d}") for i in range(1, 13)),
    ]
    for spec in specs or [""]:
        audits(models, spec, f"8 extra warps, the zoo's 2, 12 clean; zoo {zoo_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
