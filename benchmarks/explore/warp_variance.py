"""How much of the warp score's spread is the draw, and does a steadier score separate warp
backdoors from clean models (issue 4, exploration)?

The audit scores each shape on 64 held-out probes (a share near 0.3 has a standard error near
0.06 there, and the best of three kept candidates is taken) and refines on the same 12 images at
every step. This runs the audit's warp search alone (`pipeline.detect`, the default policy
otherwise) under policy variants that change only those two draws: more held-out probes, and
refinement on fresh batches from a larger pool at the same passes per step. Models: the zoo's two
warps, the eight extra warp backdoors of warp_strength.py and the 12 clean models; seeds 0-2.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_variance.py /tmp/zoo-final \\
        > benchmarks/explore/warp_variance.txt
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

from warp_strength import ZOO_WARPS, trained

from hubscan.model import load_clip
from hubscan.pipeline import _detection_inputs, detect
from hubscan.policy import load_policy

VARIANTS = {
    "audit (64 held out, 12 images)": {},
    "256 held out": {"holdout_images": 256},
    "256 held out, batches of 12 from 64": {"holdout_images": 256, "probe_images": 64},
    "256 held out, batches of 12 from 64, 48 steps": {
        "holdout_images": 256,
        "probe_images": 64,
        "steps": 48,
    },
}
SEEDS = (0, 1, 2)


def main(zoo: Path, only: list[str]) -> None:
    base = load_policy("default")
    models = [(n, zoo / n, "warp") for n in ZOO_WARPS]
    models += [(v.name, p, "warp") for v, p in trained(zoo / "base")]
    models += [(f"clean-{i:02d}", zoo / f"clean-{i:02d}", "clean") for i in range(1, 13)]
    for title, change in VARIANTS.items():
        if only and title not in only:
            continue
        det = dataclasses.replace(base.detection, families=("warp",), **change)
        policy = dataclasses.replace(base, detection=det)
        print(f"== {title}", flush=True)
        worst_clean, backdoors = 0.0, []
        for name, path, kind in models:
            clip = load_clip(path)
            row, t0 = [], time.perf_counter()
            for seed in SEEDS:
                labels, images = _detection_inputs("fashion-mnist", "default", det, seed)
                out = detect(clip, images, labels, True, policy, seed, None)
                f = out.detection.families[0]
                row.append(f.score)
                print(f"{name:18s} s{seed} {f.score:.2f} {f.target:<11s}", end="  ", flush=True)
            med = statistics.median(row)
            print(f"median {med:.2f}  {time.perf_counter() - t0:.0f} s", flush=True)
            if kind == "clean":
                worst_clean = max(worst_clean, *row)
            else:
                backdoors.append(row)
        over = sum(s > worst_clean for r in backdoors for s in r)
        print(
            f"   clean max {worst_clean:.2f}; backdoored audits above it: {over}/"
            f"{sum(len(r) for r in backdoors)}",
            flush=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
