"""Does a second TBAR round remove what the first left? (issue 5, exploration)

Round r fine-tunes the contrast vector from round r-1's patched model and applies the usual
coefficient rule, with the clean-accuracy floor kept relative to the audited model θ_b (κ x its
val accuracy), so rounds cannot compound the loss. Known trigger, default policy, the probes
split as `hubscan patch` splits them; prints before / each round (val attack success, test
retention / attack success). On the first zoo's three models the contrast vector leaves above
10 %, round 2 finds no coefficient within the floor (iterated_tbar.txt).

    HF_HUB_OFFLINE=1 python benchmarks/explore/iterated_tbar.py /tmp/zoo-final \\
        blend-stripes-pullover,sinusoid-bag,blend-checker-dress contrast 2 \\
        > benchmarks/explore/iterated_tbar.txt
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from hubscan import unlearn
from hubscan.bench_references import known_setup
from hubscan.errors import NotRemediated
from hubscan.metrics import clean_accuracy
from hubscan.policy import load_policy


def main(zoo: Path, names: list[str], variant: str, rounds: int) -> None:
    manifest = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    policy = load_policy("default")
    un = dataclasses.replace(policy.unlearning, variant=variant)
    for name in names:
        start = time.perf_counter()
        known = known_setup(zoo / name, manifest[name], policy)  # the benchmark's splits
        clip, task = known.clip, known.task
        val, val_y = task.val, task.val_labels
        acc0, asr0 = known.measure(known.test, known.test_labels)
        val0 = clean_accuracy(clip, val, val_y, known.head)
        line = [f"{name:24s} before {acc0:.3f}/{asr0:.3f}"]
        for r in range(rounds):
            floor = un.clean_floor * val0 / clean_accuracy(clip, val, val_y, known.head)
            try:
                removal = unlearn.remove(
                    clip, task, dataclasses.replace(un, clean_floor=floor), seed=r
                )
            except NotRemediated:
                line.append(f"round {r + 1}: no coefficient within the floor")
                break
            clip.model.load_state_dict(removal.state)
            acc, asr = known.measure(known.test, known.test_labels)
            line.append(
                f"round {r + 1}: coef {removal.patch.coef:.3f}, val attack "
                f"{removal.patch.chosen.attack_success:.3f}, "
                f"test retention {acc / acc0:.3f} attack {asr:.3f}"
            )
            if removal.patch.chosen.attack_success <= un.asr_tolerance:
                break
        print("  ".join(line) + f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]))
