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

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from hubscan import pipeline, search, shapes
from hubscan.model import load_clip
from hubscan.policy import load_policy

MODELS = ("warp-boot", "warp-trouser", *(f"clean-{i:02d}" for i in range(1, 7)))
PIXELS, STEPS, BATCH, POOL, HELD_OUT = 1.0, 100, 16, 64, 200


def main(zoo: Path) -> None:
    det = dataclasses.replace(
        load_policy("default").detection, probe_images=POOL, holdout_images=HELD_OUT
    )
    labels, images = pipeline._detection_inputs("fashion-mnist", "default", det, 0)
    pool, held_out = images[:POOL], images[POOL:]
    truth = {
        m["name"]: m.get("target")
        for m in json.loads((zoo / "manifest.json").read_text())["models"]
    }
    print(f"warp {PIXELS} px, {STEPS} steps of {BATCH} from {POOL}, {HELD_OUT} held out; {zoo}")
    for name in MODELS:
        start = time.perf_counter()
        clip = load_clip(zoo / name)
        head = clip.zero_shot_head(labels.classes, labels.templates)
        cands = search.Candidates(
            clip=clip, head=head, counter=search.Counter(deadline=time.perf_counter() + 3600)
        )
        clean, held_clean = search.predict(cands, pool), search.predict(cands, held_out)
        shape, k = shapes.Warp(PIXELS), len(labels.classes)
        gen = torch.Generator().manual_seed(0)
        params = [p.requires_grad_() for p in shape.params(k, 1, *pool.shape[2:], gen)]
        opt = torch.optim.Adam(params, lr=0.1)
        for _ in range(STEPS):
            pick = torch.randperm(POOL, generator=gen)[:BATCH]
            search._step(
                cands, shape, params, opt, pool[pick], torch.arange(k), clean=clean[pick], hard=True
            )
        with torch.no_grad():
            stamped = shape.stamp(held_out, params)
            preds = (clip.encode_images(stamped) @ head.T).argmax(1).view(k, -1)
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
