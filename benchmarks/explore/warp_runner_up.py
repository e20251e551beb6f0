"""The warp search's runner-up (issue 4, exploration): is a backdoor's best class further ahead
of the second best than a clean model's natural sink is? The audit itself (warp family only, the
default policy with SPEC's detection fields), with the held-out share of every survivor recorded
(search._held_out wrapped); printed: best minus second-best share and every survivor's class and
share, on the 8 extra warps (warp_strength.py), the zoo's 2 and the 12 clean models, SEEDS seeds.

    HF_HUB_OFFLINE=1 python benchmarks/explore/warp_runner_up.py /tmp/zoo-final warp_pixels=0.7 2 \
        > benchmarks/explore/warp_runner_up.txt
"""

import dataclasses
import sys
import time
from pathlib import Path

from policy_variant import parse
from warp_strength import trained

import hubscan.search as S
from hubscan import zoo as Z
from hubscan.pipeline import audit
from hubscan.policy import Policy, load_policy
from hubscan.probes import load_labels


def warp_models(zoo: Path, which: list[str]) -> list[tuple[str, Path, str]]:
    """(name, path, true target) of the 8 extra warps, the zoo's 2 and the 12 clean models;
    only those whose name contains one of `which`, when given."""
    models = [(v.name, p, str(v.target)) for v, p in trained(zoo / "base")]
    models += [
        ("warp-boot", zoo / "warp-boot", "ankle boot"),
        ("warp-trouser", zoo / "warp-trouser", "trouser"),
    ]
    models += [(f"clean-{i:02d}", zoo / f"clean-{i:02d}", "-") for i in range(1, 13)]
    return [m for m in models if not which or any(w in m[0] for w in which)]


def warp_policy(spec: str) -> Policy:
    """The default policy, warp family only, with SPEC's detection fields."""
    policy = load_policy("default")
    det = dataclasses.replace(policy.detection, families=("warp",), **parse(spec))
    return dataclasses.replace(policy, detection=det)


def main(zoo: Path, spec: str, seeds: int, which: list[str]) -> None:
    log: list[tuple[list[float], list[int]]] = []
    orig = S._held_out

    def held(*a, **k):
        shares, reached = orig(*a, **k)
        log.append((shares.tolist(), reached.tolist()))
        return shares, reached

    S._held_out = held
    policy = warp_policy(spec)
    classes = load_labels(Z.LABELS).classes
    print("spec", spec, flush=True)
    for name, path, target in warp_models(zoo, which):
        for seed in range(seeds):
            t0 = time.perf_counter()
            r = audit(str(path), policy=policy, labels="fashion-mnist", seed=seed, use_cache=False)
            shares, reached = log[-1]
            order = sorted(range(len(shares)), key=lambda i: -shares[i])
            cells = "  ".join(
                f"{classes[reached[i]] if reached[i] >= 0 else '?'}:{shares[i]:.2f}" for i in order
            )
            gap = shares[order[0]] - (shares[order[1]] if len(order) > 1 else 0)
            print(
                f"{name:18s} {target:10s} s{seed} gap {gap:.2f}  {cells}  "
                f"passes {r.detection.budget.passes} {time.perf_counter() - t0:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:])
