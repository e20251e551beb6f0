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
from hubscan.errors import NotRemediated
from hubscan.metrics import attack_success, clean_accuracy
from hubscan.model import load_clip
from hubscan.policy import load_policy
from hubscan.probes import load_labels, load_probes
from hubscan.triggers import parse_trigger


def main(zoo: Path, names: list[str], variant: str, rounds: int) -> None:
    manifest = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    policy = dataclasses.replace(load_policy("default").unlearning, variant=variant)
    labels = load_labels("fashion-mnist")
    parts = load_probes("default", labels=labels, limit=policy.probe_images, seed=0).split(seed=0)
    assert parts.tune.labels is not None and parts.val.labels is not None
    assert parts.test.labels is not None
    val, val_y, test, test_y = (
        parts.val.images,
        parts.val.labels,
        parts.test.images,
        parts.test.labels,
    )
    for name in names:
        start = time.perf_counter()
        clip = load_clip(zoo / name)
        head = clip.zero_shot_head(labels.classes, labels.templates)
        trigger = parse_trigger(manifest[name]["trigger"])
        target = labels.classes.index(manifest[name]["target"])
        task = unlearn.Task(
            stamp=trigger.apply,
            trigger=manifest[name]["trigger"],
            target=target,
            target_name=manifest[name]["target"],
            estimated=False,
            head=head,
            tune=parts.tune.images,
            tune_labels=parts.tune.labels,
            val=val,
            val_labels=val_y,
            labelled=True,
        )
        acc0, val0 = (
            clean_accuracy(clip, test, test_y, head),
            clean_accuracy(clip, val, val_y, head),
        )
        asr0 = attack_success(clip, test, test_y, head, trigger.apply, target)
        line = [f"{name:24s} before {acc0:.3f}/{asr0:.3f}"]
        for r in range(rounds):
            floor = policy.clean_floor * val0 / clean_accuracy(clip, val, val_y, head)
            try:
                removal = unlearn.remove(
                    clip, task, dataclasses.replace(policy, clean_floor=floor), seed=r
                )
            except NotRemediated:
                line.append(f"round {r + 1}: no coefficient within the floor")
                break
            clip.model.load_state_dict(removal.state)
            kept = clean_accuracy(clip, test, test_y, head) / acc0
            asr = attack_success(clip, test, test_y, head, trigger.apply, target)
            line.append(
                f"round {r + 1}: coef {removal.patch.coef:.3f}, val attack "
                f"{removal.patch.chosen.attack_success:.3f}, "
                f"test retention {kept:.3f} attack {asr:.3f}"
            )
            if removal.patch.chosen.attack_success <= policy.asr_tolerance:
                break
        print("  ".join(line) + f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]))
