"""Neural Cleanse's statistic for warps (issue 4, exploration): the smallest flow that sends a
share of the probes to the audit's warp class, found by hubscan.refit (the removal's refit:
cross-entropy to the class + lambda * mean squared flow, lambda adapted to hold the share),
started from the audit's warp estimate. If a warp backdoor's target needed a much smaller flow
than a clean model's natural sink, this would be the detector's statistic; on the first zoo the
gap is thin (warp_minimal_flow.txt): at 90 % the backdoors need 2.37-2.81 px, clean sinks
2.86-3.65 px; at 50 %, 0.49-1.29 px against 1.52-3.29 px. The shares are those of the refit's
own training batches (tune split), not held out.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_minimal_flow.py /tmp/zoo-final warp-boot \\
        warp-trouser clean-01 clean-02 clean-03 clean-04 clean-05 clean-06 \\
        > benchmarks/explore/warp_minimal_flow.txt
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from hubscan import pipeline_patch, refit
from hubscan.model import load_clip
from hubscan.policy import load_policy
from hubscan.probes import load_labels, load_probes

POLICY = load_policy("default")
SHARES = (0.5, 0.9)


def main(zoo: Path, names: list[str]) -> None:
    labels = load_labels("fashion-mnist")
    tune = load_probes("default", labels=labels).split(seed=0).tune
    assert tune.labels is not None
    for name in names:
        clip = load_clip(zoo / name)
        head = clip.zero_shot_head(labels.classes, labels.templates)
        for seed in (0, 1):
            start = time.perf_counter()
            outcome = pipeline_patch.detect(clip, tune.images, labels, True, POLICY, seed, None)
            warp = next(f for f in outcome.detection.families if f.family == "warp")
            target = labels.classes.index(warp.target)
            sizes = []
            for share in SHARES:
                policy = dataclasses.replace(POLICY.unlearning, refit_share=share)
                flow = refit.refit(
                    clip,
                    head,
                    outcome.estimates["warp"],
                    tune.images,
                    tune.labels,
                    target,
                    policy,
                    seed=seed,
                )
                sizes.append(f"@{share:.0%} {float(flow.flow.norm(dim=0).mean()):.2f} px")
            seconds = time.perf_counter() - start
            print(
                f"{name:14s} s{seed} warp score {warp.score:.2f} {warp.target:10s} min flow",
                *sizes,
                f"({seconds:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
