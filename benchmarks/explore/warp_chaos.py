"""How much of a warp score is the draw of float rounding (issue 4, exploration).

The detection bench re-run on a fresh machine moved the warp score at 33 of 72 audits (by up to
0.17) where patch and blend scores reproduced. This repeats one audit's warp search (warp
only, the default policy otherwise, the audit's own probes and seed) with the probe images
moved by a rounding-sized amount, ±EPS uniform noise (far under one grey level, 1/255), at a
few noise seeds, and prints the held-out score and target each time; the patch and blend
searches are repeated the same way for comparison.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_chaos.py /tmp/zoo-final \\
        clean-06 warp-trouser warp-boot clean-11 > benchmarks/explore/warp_chaos.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hubscan.model import load_clip
from hubscan.pipeline import _detection_inputs, detect
from hubscan.policy import load_policy

EPS = 1e-6
NOISE_SEEDS = 5


def scores(clip, label_set, images, policy) -> str:
    out = detect(clip, images, label_set, True, policy, 0, None)  # as `hubscan audit --seed 0`
    return "  ".join(f"{f.family} {f.score:.2f} {f.target:<10s}" for f in out.detection.families)


def main(zoo: Path, names: list[str]) -> None:
    policy = load_policy("default")
    label_set, images = _detection_inputs("fashion-mnist", "default", policy.detection, 0)
    for name in names:
        clip = load_clip(zoo / name)
        print(f"{name}  as probed: {scores(clip, label_set, images, policy)}", flush=True)
        for s in range(NOISE_SEEDS):
            gen = torch.Generator().manual_seed(s)
            noise = EPS * (2 * torch.rand(images.shape, generator=gen) - 1)
            moved = (images + noise).clamp(0, 1)
            print(f"{name}  noise {s}:   {scores(clip, label_set, moved, policy)}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
