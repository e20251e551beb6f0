"""Which Fisher damping of the contrast vector removes each backdoor? (issue 5, exploration)

For every backdoored model of a zoo, with the known trigger and the benchmark's splits
(`bench_references.known_setup`): the contrast vector once, then TBAR's coefficient rule on
τ / (1 + λ·F/F̄) for each λ; per λ the chosen coefficient, its val clean accuracy / attack
success, and test retention / attack success. No λ wins every model (fisher_dampings.txt),
which is why the `fisher` variant now chooses the damping on the val split with the coefficient.

    HF_HUB_OFFLINE=1 python benchmarks/explore/fisher_dampings.py /tmp/zoo-final [MODEL ...] \\
        > benchmarks/explore/fisher_dampings.txt
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from hubscan import unlearn, vector
from hubscan.bench_references import known_setup
from hubscan.errors import NotRemediated
from hubscan.policy import load_policy

DAMPINGS = (0.0, 3.0, 10.0, 30.0, 100.0)


def main(zoo: Path, names: list[str]) -> None:
    manifest = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    policy = load_policy("default")
    un = dataclasses.replace(policy.unlearning, variant="fisher", fisher_dampings=DAMPINGS)
    backdoored = [n for n, m in manifest.items() if m["kind"] == "backdoored"]
    for name in names or backdoored:
        start = time.perf_counter()
        known = known_setup(zoo / name, manifest[name], policy)  # the benchmark's splits
        clip, task = known.clip, known.task
        acc0, asr0 = known.measure(known.test, known.test_labels)
        tau = vector.trigger_vector(clip, task, un, seed=0, tick=None)
        line = [f"{name:28s} before {acc0:.3f}/{asr0:.3f}"]
        for lam, damped in vector.damped(clip, task, tau, un):
            try:
                removal = unlearn.remove(clip, task, un, seed=0, tau=damped)
            except NotRemediated:
                line.append(f"l{lam:g}: none")
                continue
            with vector.tower_at(clip, {k: removal.state[f"visual.{k}"] for k in tau}):
                acc, asr = known.measure(known.test, known.test_labels)
            c = removal.patch.chosen
            line.append(
                f"l{lam:g}: c{c.coef:.2f} val {c.clean_accuracy:.3f}/{c.attack_success:.3f} "
                f"test {acc / acc0:.3f}/{asr:.3f}"
            )
        print("  ".join(line) + f"  ({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
