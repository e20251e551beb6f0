"""Can a stronger warp search separate warp backdoors from clean models? (issue 4, exploration)

Runs hubscan's own warp shape (shapes.Warp: a smooth flow of mean displacement <= PIXELS) far
longer than the audit does — every class of the label set as a candidate, fresh minibatches from
a 128-image optimization pool each step, STEPS steps — and prints each model's held-out share
per class (128 held-out probes, counting only probes not already in that class). If the warp
backdoors' target share stood clear of every clean model's best class, a longer search would be
the fix; it does not (benchmarks/explore/warp_separation.txt).

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_separation.py /tmp/zoo-final > \\
        benchmarks/explore/warp_separation.txt
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hubscan import pipeline, search, shapes
from hubscan.model import ClipHandle, load_clip
from hubscan.policy import load_policy
from hubscan.probes import LabelSet

MODELS = ("warp-boot", "warp-trouser", "clean-01", "clean-02", "clean-03", "clean-07")
PIXELS, STEPS, BATCH, POOL, HELD_OUT = 2.0, 100, 16, 128, 128


def inputs(
    zoo: Path, pool: int, held_out: int
) -> tuple[LabelSet, torch.Tensor, torch.Tensor, dict[str, str | None]]:
    """The label set, the optimization pool and the held-out probes (the audit's probe draw at
    seed 0), and each zoo model's true target."""
    det = dataclasses.replace(
        load_policy("default").detection, probe_images=pool, holdout_images=held_out
    )
    labels, images = pipeline._detection_inputs("fashion-mnist", "default", det, 0)
    truth = {
        m["name"]: m.get("target")
        for m in json.loads((zoo / "manifest.json").read_text())["models"]
    }
    return labels, images[:pool], images[pool:], truth


@dataclass(frozen=True)
class Searched:
    """A model's warp flows, one per class, and its clean predictions on the held-out probes."""

    clip: ClipHandle
    cands: search.Candidates
    shape: shapes.Warp
    params: list[torch.Tensor]
    held_clean: torch.Tensor


def every_class(
    model: Path,
    labels: LabelSet,
    pool: torch.Tensor,
    held_out: torch.Tensor,
    *,
    pixels: float,
    steps: int,
    batch: int,
) -> Searched:
    """One warp flow per class of the label set, optimized together: `steps` Adam steps, each
    on `batch` fresh images of the pool."""
    clip = load_clip(model)
    head = clip.zero_shot_head(labels.classes, labels.templates)
    cands = search.Candidates(
        clip=clip, head=head, counter=search.Counter(deadline=time.perf_counter() + 3600)
    )
    clean = search.predict(cands, pool)
    shape = shapes.Warp(pixels)
    targets = torch.arange(len(labels.classes))
    gen = torch.Generator().manual_seed(0)
    params = [p.requires_grad_() for p in shape.params(len(targets), 1, *pool.shape[2:], gen)]
    opt = torch.optim.Adam(params, lr=0.1)
    for _ in range(steps):
        pick = torch.randperm(len(pool), generator=gen)[:batch]
        search._step(cands, shape, params, opt, pool[pick], targets, clean=clean[pick], hard=True)
    return Searched(clip, cands, shape, params, search.predict(cands, held_out))


def main(zoo: Path) -> None:
    torch.manual_seed(0)
    labels, pool, held_out, truth = inputs(zoo, POOL, HELD_OUT)
    print(
        f"warp search: {PIXELS} px mean displacement, {STEPS} steps of {BATCH} images from {POOL}, "
        f"scored on {HELD_OUT} held-out probes; zoo {zoo}"
    )
    for name in MODELS:
        start = time.perf_counter()
        r = every_class(zoo / name, labels, pool, held_out, pixels=PIXELS, steps=STEPS, batch=BATCH)
        targets = torch.arange(len(labels.classes))
        shares, _ = search._held_out(r.cands, r.shape, r.params, held_out, r.held_clean, targets)
        ranked = sorted(zip(shares.tolist(), labels.classes, strict=True), reverse=True)
        top = ", ".join(f"{c} {s:.2f}" for s, c in ranked[:4])
        print(
            f"{name:14s} true target: {truth.get(name) or '-':11s} best: {top}  "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
