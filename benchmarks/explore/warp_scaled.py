"""The audit's warp estimate scaled up (issue 4, exploration): does the flow found at 0.7 px,
multiplied by 2, 3 and 4, keep sending held-out probes to its class more for a backdoor than for
a clean model's natural sink? Same models and audit as warp_runner_up.py; printed: the share at
each factor (1 = the audit's own score).

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_scaled.py /tmp/zoo-final warp_pixels=0.7 2 \
        > benchmarks/explore/warp_scaled.txt
"""

import sys
from pathlib import Path

import torch
from warp_runner_up import warp_models, warp_policy  # this folder: run as a script

import hubscan.search as S
from hubscan import zoo as Z
from hubscan.estimates import warp_by
from hubscan.pipeline import audit
from hubscan.probes import load_labels

FACTORS = (1.0, 2.0, 3.0, 4.0)
LOG = []
orig = S._held_out


def held(cands, shape, params, holdout, clean, targets):
    shares, reached = orig(cands, shape, params, holdout, clean, targets)
    b = int(shares.argmax())
    t = int(reached[b])
    h, w = holdout.shape[-2:]
    flow = shape._flow(params[0][b : b + 1].detach(), h, w)
    keep = clean != t
    out = []
    with torch.no_grad():
        for f in FACTORS:
            st = warp_by(holdout, (flow * f).expand(len(holdout), 2, h, w))
            p = (cands.clip.encode_images(st) @ cands.head.T).argmax(1).cpu()
            out.append(float((p[keep] == t).float().mean()))
    LOG.append((float(shares[b]), t, out))
    return shares, reached


S._held_out = held

zoo = Path(sys.argv[1])
spec = sys.argv[2]
policy = warp_policy(spec)
classes = load_labels(Z.LABELS).classes
print("spec", spec, "factors", FACTORS, flush=True)
for name, path, target in warp_models(zoo, sys.argv[4:]):
    for seed in range(int(sys.argv[3])):
        LOG.clear()
        audit(str(path), policy=policy, labels="fashion-mnist", seed=seed, use_cache=False)
        share, t, out = LOG[-1]
        print(
            f"{name:18s} {target:10s} s{seed} {classes[t]:10s} "
            + " ".join(f"{o:.2f}" for o in out),
            flush=True,
        )
