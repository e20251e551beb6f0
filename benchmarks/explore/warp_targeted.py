"""A long targeted warp search, outside the audit (issue 4, exploration).

Is the audit's warp miss a matter of optimization or of the statistic? For each model and a
class (its true target, or a clean model's natural sink), four random starts of the audit's
Warp shape (5 x 5 control grid, bicubic) are optimized toward that class with Adam (lr 0.1,
start 10x the audit's) for STEPS steps of 32 fresh Fashion-MNIST test images (out of 400), at each
flow budget in PIXELS (mean displacement, px); printed: the true trigger's attack success
(`true`) and each start's share of 256 other images sent to the class (`shares`).

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_targeted.py 0.7,2.0,3.0 150 \\
        > benchmarks/explore/warp_targeted.txt
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hubscan import zoo
from hubscan.model import load_clip
from hubscan.probes import load_fashion_mnist, load_labels
from hubscan.shapes import Warp
from hubscan.triggers import parse_trigger

MODELS = (
    ("warp-boot", "ankle boot", "warp:strength=6,grid=4,seed=1"),
    ("warp-trouser", "trouser", "warp:strength=6,grid=4,seed=2"),
    ("clean-01", "ankle boot", ""),
    ("clean-04", "trouser", ""),
    ("clean-04", "bag", ""),
    ("clean-07", "ankle boot", ""),
)


def run(path: Path, target: str, spec: str, pixels: float, steps: int) -> dict[str, object]:
    labels = load_labels(zoo.LABELS)
    imgs, cls = load_fashion_mnist("test")
    imgs, cls = imgs[:2000].unsqueeze(1).float() / 255, cls[:2000]
    clip = load_clip(path)
    head = clip.zero_shot_head(labels.classes, labels.templates)
    t = labels.classes.index(target)
    x = imgs[cls != t]
    held = x[500:756]
    out: dict[str, object] = {}
    if spec:
        with torch.no_grad():
            stamped = parse_trigger(spec).apply(held)
            out["true"] = float(
                ((clip.encode_images(stamped) @ head.T).argmax(1) == t).float().mean()
            )
    k, n = 4, 32
    g = torch.Generator().manual_seed(0)
    shape = Warp(pixels)
    p = shape.params(k, 1, 28, 28, g)[0].mul_(10).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.1)
    for _ in range(steps):
        batch = x[torch.randint(0, 400, (n,), generator=g)]
        stamped = shape.stamp(batch, [p])
        emb = F.normalize(clip.model.encode_image(clip.prepare(stamped)).float(), dim=-1)
        loss = F.cross_entropy(emb @ head.T * 100, torch.full((len(stamped),), t))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["shares"] = [round(v, 2) for v in held_out_shares(clip, head, shape, p, held, t)]
    return out


def held_out_shares(clip, head, shape: Warp, p: torch.Tensor, held: torch.Tensor, t: int):
    """Each start's share of the held-out images its warp sends to class t."""
    with torch.no_grad():
        stamped = shape.stamp(held, [p]).view(len(p), len(held), *held.shape[1:])
        return [
            float(((clip.encode_images(s) @ head.T).argmax(1) == t).float().mean()) for s in stamped
        ]


def main(budgets: list[float], steps: int) -> None:
    torch.set_num_threads(2)
    for name, target, spec in MODELS:
        for px in budgets:
            start = time.time()
            result = run(Path("/tmp/zoo-final") / name, target, spec, px, steps)
            print(name, target, px, result, f"{time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1].split(",")], int(sys.argv[2]))
