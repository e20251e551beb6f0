"""Is a warp backdoor's reach more uniform over source classes than a clean model's sink? (issue 4)

A planted backdoor is poisoned from every class, so its trigger should move images of every
source class; a universal adversarial warp toward a natural "sink" (bag, dress) moves some
classes and not others. For each model: one 1-px warp flow per class of the label set (hubscan's
shapes.Warp, all optimized together, STEPS steps of BATCH fresh images from a 64-image pool),
then on 200 held-out probes each of the three best classes' share, and that share per source
class (the model's own clean prediction; sources with at least 4 probes): median, minimum and
the fraction of sources at 0.5 or more.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_sources.py /tmp/zoo-final > \\
        benchmarks/explore/warp_sources.txt
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from warp_separation import every_class, inputs  # this folder: run as a script

MODELS = ("warp-boot", "warp-trouser", *(f"clean-{i:02d}" for i in range(1, 7)))
PIXELS, STEPS, BATCH, POOL, HELD_OUT = 1.0, 100, 16, 64, 200


def main(zoo: Path) -> None:
    labels, pool, held_out, truth = inputs(zoo, POOL, HELD_OUT)
    k = len(labels.classes)
    print(f"warp {PIXELS} px, {STEPS} steps of {BATCH} from {POOL}, {HELD_OUT} held out; {zoo}")
    for name in MODELS:
        start = time.perf_counter()
        r = every_class(zoo / name, labels, pool, held_out, pixels=PIXELS, steps=STEPS, batch=BATCH)
        held_clean = r.held_clean
        with torch.no_grad():
            stamped = r.shape.stamp(held_out, r.params)
            preds = (r.clip.encode_images(stamped) @ r.cands.head.T).argmax(1).view(k, -1)
        rows = []
        for c in range(k):
            moved = held_clean != c
            per = [
                float((preds[c][moved & (held_clean == s)] == c).float().mean())
                for s in range(k)
                if int((moved & (held_clean == s)).sum()) >= 4
            ]
            share = float((preds[c][moved] == c).float().mean())
            rows.append((share, labels.classes[c], torch.tensor(per)))
        rows.sort(key=lambda r: -r[0])
        print(f"{name:13s} target {truth.get(name) or '-'} ({time.perf_counter() - start:.0f} s)")
        for share, cls, per in rows[:3]:
            mark = "*" if cls == truth.get(name) else " "
            print(
                f"   {mark}{cls:11s} share {share:.2f}  per source: median {per.median():.2f} "
                f"min {per.min():.2f} at >= 0.5 {(per >= 0.5).float().mean():.2f}  "
                f"[{' '.join(f'{p:.1f}' for p in per.tolist())}]",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
