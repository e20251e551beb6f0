"""The default TBAR patch with some unlearning-policy fields changed (issue 5, exploration).

For each backdoored model of a zoo, with the known trigger and the benchmark's splits
(`bench_references.known_setup`, the probes `hubscan patch` uses with seed 0): `unlearn.remove`
under the default policy with the given fields replaced; per model the chosen damping and
coefficient, val retention / attack success, test retention / attack success, the coefficients
tried over all dampings and the seconds; then the means, where a model with no coefficient, or
one verification's thresholds would refuse (test attack success over `max_attack_success`,
retention under `min_retention`; the re-audit is not run here), counts at its attack success
before, as in benchmarks/unlearning.md. Compare a line with the same model's
`tbar-known-fisher` cell on the committed page, which is this run with no field changed.

    HF_HUB_OFFLINE=1 python benchmarks/explore/policy_variant.py /tmp/zoo-final \\
        soft_trigger=false > benchmarks/explore/policy_variant-hard_stamp.txt
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from hubscan import unlearn, vector
from hubscan.bench_references import known_setup
from hubscan.errors import NotRemediated
from hubscan.policy import load_policy


def parse(spec: str) -> dict[str, Any]:
    """'steps=120,soft_trigger=false,fisher_dampings=0/3' -> fields of UnlearningPolicy."""
    fields: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, value = item.split("=")
        if value in ("true", "false"):
            fields[key] = value == "true"
        elif "/" in value:
            fields[key] = tuple(float(v) for v in value.split("/"))
        else:
            fields[key] = float(value) if "." in value or "e" in value else int(value)
    return fields


def main(zoo: Path, spec: str, names: list[str]) -> None:
    manifest = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    policy = load_policy("default")
    un = dataclasses.replace(policy.unlearning, **parse(spec))
    names = names or [n for n, m in manifest.items() if m["kind"] == "backdoored"]
    after: list[tuple[float, float]] = []
    for name in names:
        start = time.perf_counter()
        known = known_setup(zoo / name, manifest[name], policy)
        clip, task = known.clip, known.task
        acc0, asr0 = known.measure(known.test, known.test_labels)
        val0 = known.measure(task.val, task.val_labels)[0]
        try:
            removal = unlearn.remove(clip, task, un, seed=0)
        except NotRemediated:
            print(f"{name:28s} no coefficient within the floor", flush=True)
            after.append((1.0, asr0))
            continue
        keys = list(vector.tower_params(clip))
        with vector.tower_at(clip, {k: removal.state[f"visual.{k}"] for k in keys}):
            acc, asr = known.measure(known.test, known.test_labels)
        p, c = removal.patch, removal.patch.chosen
        tried = sum(len(curve.trials) for curve in p.curves)
        refused = asr > un.max_attack_success or acc / acc0 < un.min_retention
        after.append((1.0, asr0) if refused else (acc / acc0, asr))
        print(
            f"{name:28s} λ {p.damping:g} coef {c.coef:.4f}  "
            f"val {c.clean_accuracy / val0:.3f} / {c.attack_success:.3f}  "
            f"test {acc / acc0:.3f} / {asr:.3f}  {tried} coefficients  "
            f"{time.perf_counter() - start:.0f} s" + ("  (refused)" if refused else ""),
            flush=True,
        )
    retention = sum(r for r, _ in after) / len(after)
    attack = sum(a for _, a in after) / len(after)
    print(
        f"mean ({spec or 'default'}): test retention {retention:.3f}, attack success {attack:.4f}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
