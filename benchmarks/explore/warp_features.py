"""Statistics of the audit's warp estimate beyond its held-out share (issue 4, exploration).

At any flow budget the held-out share does not separate the zoo's gross warp backdoors from
clean models' natural sinks (warp_strength.txt; more steps or probe images raise both:
warp_strength-longer.txt). Do other statistics of the best warp candidate? For each SPEC (the
default policy's detection fields replaced, warp family only) this audits the eight extra warp
backdoors of warp_strength.py, the zoo's two and the 12 clean models at two seeds on 200
Fashion-MNIST train images, then applies the estimate to 600 test images and prints: the
audit's score and target; `ext` the share of the 600 (not already in the target) sent to it;
`prob` their mean target probability; `margin` the median target-logit margin; `coll` the mean
cosine of the moved images' embeddings to their centre against that of clean images the model
puts in the target; `sim` the mean cosine between each image's clean and stamped embedding.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_features.py /tmp/zoo-final \\
        warp_pixels=0.7 warp_pixels=2.0,probe_images=24,steps=48 \\
        > benchmarks/explore/warp_features.txt
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from policy_variant import parse  # this folder: run as a script
from warp_strength import ZOO_WARPS, trained

from hubscan import zoo
from hubscan.invert import detect
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import DetectionPolicy, load_policy
from hubscan.probes import load_fashion_mnist, load_labels


def features(clip: ClipHandle, policy: DetectionPolicy, seed: int, data: tuple) -> str:
    labels, train, test = data
    head = clip.zero_shot_head(labels.classes, labels.templates)
    g = torch.Generator().manual_seed(100 + seed)
    probes = train[torch.randperm(len(train), generator=g)[:200]]
    out = detect(
        clip,
        probes,
        classes=labels.classes,
        templates=labels.templates,
        labelled=True,
        policy=policy,
        seed=seed,
    )
    family = out.detection.families[0]
    t = labels.classes.index(family.target)
    with torch.no_grad():
        e0 = clip.encode_images(test)
        p0 = (e0 @ head.T).argmax(1)
        e1 = clip.encode_images(out.estimates["warp"].apply(test))
        logits = 100 * e1 @ head.T
        keep = p0 != t
        moved = keep & (logits.argmax(1) == t)
        other = logits[keep].clone()
        other[:, t] = -1e9
        margin = float((logits[keep, t] - other.max(1).values).median())
        nat = F.normalize(e0[p0 == t], dim=-1)
        mv = F.normalize(e1[moved], dim=-1)
        c_nat = float((nat @ F.normalize(nat.mean(0), dim=0)).mean())
        c_mv = float((mv @ F.normalize(mv.mean(0), dim=0)).mean()) if moved.sum() > 2 else 0.0
        return (
            f"score {family.score:.2f} {family.target:10s} "
            f"ext {float(moved.sum() / keep.sum()):.2f} "
            f"prob {float(logits.softmax(1)[keep, t].mean()):.2f} margin {margin:6.2f} "
            f"coll {c_mv:.3f}/{c_nat:.3f} "
            f"sim {float(F.cosine_similarity(e0[keep], e1[keep]).mean()):.3f}"
        )


def main(zoo_dir: Path, specs: list[str]) -> None:
    labels = load_labels(zoo.LABELS)
    train = load_fashion_mnist("train")[0][:2000].unsqueeze(1).float() / 255
    test = load_fashion_mnist("test")[0][2000:2600].unsqueeze(1).float() / 255
    models = [
        *((v.name, path) for v, path in trained(zoo_dir / "base")),
        *((name, zoo_dir / name) for name in ZOO_WARPS),
        *((f"clean-{i:02d}", zoo_dir / f"clean-{i:02d}") for i in range(1, 13)),
    ]
    default = load_policy("default").detection
    for spec in specs:
        policy = dataclasses.replace(default, families=("warp",), **parse(spec))
        print(f"== {spec}", flush=True)
        for name, path in models:
            clip = load_clip(path)
            for seed in (0, 1):
                line = features(clip, policy, seed, (labels, train, test))
                print(f"{name:18s} s{seed} {line}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
