"""The audit's warp search at a smaller flow budget (issue 4, exploration).

warp_separation.py showed that at the default `warp_pixels` (2 px mean displacement) a long
warp search sends as many probes of a clean model to a natural "sink" class (bag, sandal) as a
warp backdoor's to its target. First, how the zoo's warp triggers (`warp:strength=6,grid=4`)
fire at lower strengths, on their own model, the other warp's and four clean ones (attack
success on 400 probes). Then, for each SPEC, it runs the audit itself (`pipeline.audit`, warp
family only, the default policy with SPEC's detection fields replaced) on the two warp
backdoors, three other backdoors and the 12 clean models at two seeds, and prints each audit's
held-out score and target, the screen's Neural Cleanse anomaly index (target vs median class
success) and the image passes spent.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_budget.py /tmp/zoo-final warp_pixels=1.0 \\
        warp_pixels=1.0,probe_images=32 > benchmarks/explore/warp_budget.txt
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
from policy_variant import parse  # this folder: run as a script
from warp_separation import inputs

from hubscan.model import load_clip
from hubscan.pipeline import audit
from hubscan.policy import load_policy
from hubscan.triggers import WarpTrigger

MODELS = (
    "warp-boot",
    "warp-trouser",
    "patch-white-br-bag",
    "blend-noise-coat",
    "sinusoid-bag",
    *(f"clean-{i:02d}" for i in range(1, 13)),
)
SEEDS = 2
WARPS = {"warp-boot": (1, "ankle boot"), "warp-trouser": (2, "trouser")}  # seed, target


def strengths(zoo: Path) -> None:
    labels, images, _, _ = inputs(zoo, 400, 0)
    print("attack success of each zoo warp at strength 1, 2, 3, 4, 6 (its own: 6)")
    for name in (*WARPS, "clean-01", "clean-02", "clean-03", "clean-04"):
        clip = load_clip(zoo / name)
        head = clip.zero_shot_head(labels.classes, labels.templates)
        cells = []
        with torch.no_grad():
            clean = (clip.encode_images(images) @ head.T).argmax(1)
            for trigger, (seed, target) in WARPS.items():
                t = labels.classes.index(target)
                rates = []
                for strength in (1, 2, 3, 4, 6):
                    stamped = WarpTrigger(strength, 4, seed).apply(images)
                    pred = (clip.encode_images(stamped) @ head.T).argmax(1)
                    rates.append(f"{float((pred[clean != t] == t).float().mean()):.2f}")
                cells.append(f"{trigger} " + " ".join(rates))
        print(f"{name:13s} " + "   ".join(cells), flush=True)


def main(zoo: Path, specs: list[str]) -> None:
    strengths(zoo)
    for spec in specs or [""]:
        audits([(name, zoo / name) for name in MODELS], spec, f"zoo {zoo}")


def audits(models: list[tuple[str, Path]], spec: str, where: str) -> None:
    """The warp-only audit of each model at `SEEDS` seeds, the default policy with `spec`'s
    detection fields replaced: held-out score, target, anomaly index, passes, seconds."""
    policy = load_policy("default")
    det = dataclasses.replace(policy.detection, families=("warp",), **parse(spec))
    policy = dataclasses.replace(policy, detection=det)
    print(f"warp family only, {spec or 'default'}; {where}")
    for name, path in models:
        for seed in range(SEEDS):
            start = time.perf_counter()
            report = audit(
                str(path), policy=policy, labels="fashion-mnist", seed=seed, use_cache=False
            )
            assert report.detection is not None
            family = report.detection.families[0]
            anomaly = family.confirmation
            print(
                f"{name:20s} seed {seed}  score {family.score:.2f} {family.target:11s} "
                f"anomaly {anomaly.anomaly_index:6.2f}  passes {report.detection.budget.passes}  "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
