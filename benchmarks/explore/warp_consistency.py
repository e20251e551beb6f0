"""Do independent warp searches toward one class agree (issue 4, exploration)? Four starts, each
on its own 200 images, 0.7 px, STEPS steps of 16; printed: each start's held-out share, the
flows' pairwise cosine and (backdoors) each flow's cosine to the true warp's field.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_consistency.py 0.7 60 \
        > benchmarks/explore/warp_consistency.txt
"""

import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from warp_strength import trained
from warp_targeted import held_out_shares

from hubscan import zoo
from hubscan.estimates import warp_by
from hubscan.model import load_clip
from hubscan.probes import load_fashion_mnist, load_labels
from hubscan.shapes import Warp
from hubscan.triggers import parse_trigger

torch.set_num_threads(2)
labels = load_labels(zoo.LABELS)
imgs, cls = load_fashion_mnist("test")
imgs, cls = imgs[:2000].unsqueeze(1).float() / 255, cls[:2000]
PX = float(sys.argv[1])
STEPS = int(sys.argv[2])
Z = Path("/tmp/zoo-final")

extra = {v.name: (p, str(v.target), str(v.trigger)) for v, p in trained(Z / "base")}
models = [
    ("warp-boot", Z / "warp-boot", "ankle boot", "warp:strength=6,grid=4,seed=1"),
    ("warp-trouser", Z / "warp-trouser", "trouser", "warp:strength=6,grid=4,seed=2"),
]
for n in ("warp-s3-shirt", "warp-g4-pullover", "warp-s1-coat"):
    p, t, s = extra[n]
    models.append((n, p, t, s))
for c in ("clean-01", "clean-04", "clean-06", "clean-07"):
    for t in ("bag", "coat", "shirt", "ankle boot"):
        models.append((c, Z / c, t, ""))
K, N = 4, 16
for name, path, target, spec in models:
    t0 = time.time()
    clip = load_clip(path)
    head = clip.zero_shot_head(labels.classes, labels.templates)
    t = labels.classes.index(target)
    x = imgs[cls != t]
    pool = x[:800]
    held = x[800:1056]
    g = torch.Generator().manual_seed(0)
    shape = Warp(PX)
    p = shape.params(K, 1, 28, 28, g)[0].mul_(10).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.1)
    for _ in range(STEPS):
        # each start sees its own images: start i draws from pool[i*200:(i+1)*200]
        batch = torch.stack(
            [pool[i * 200 + torch.randint(0, 200, (N,), generator=g)] for i in range(K)]
        )  # K,N,1,28,28
        flow = shape._flow(p, 28, 28).repeat_interleave(N, dim=0)
        st = warp_by(batch.flatten(0, 1), flow)
        emb = F.normalize(clip.model.encode_image(clip.prepare(st)).float(), dim=-1)
        loss = F.cross_entropy(emb @ head.T * 100, torch.full((len(st),), t))
        opt.zero_grad()
        loss.backward()
        opt.step()
    flows = shape._flow(p, 28, 28).detach()
    shares = held_out_shares(clip, head, shape, p, held, t)
    f = F.normalize(flows.flatten(1), dim=1)
    cos = [float(f[i] @ f[j]) for i, j in itertools.combinations(range(K), 2)]
    true = ""
    if spec:
        tf = parse_trigger(spec).flow(28, 28).permute(2, 0, 1).flatten()
        tf = F.normalize(tf, dim=0)
        true = " true-cos " + " ".join(f"{float(f[i] @ tf):.2f}" for i in range(K))
    listed = " ".join(f"{s:.2f}" for s in shares)
    pairs = f"pair-cos mean {sum(cos) / len(cos):.2f} min {min(cos):.2f}"
    print(
        f"{name:16s} {target:10s} shares {listed}  {pairs}{true}  {time.time() - t0:.0f}s",
        flush=True,
    )
