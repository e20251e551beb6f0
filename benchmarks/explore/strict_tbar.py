"""TBAR with the audit's estimate under --policy strict on named models (issue 5, exploration):
the figures of commit 285ca22 (a warp estimate stamped by scaling its flow) and of its revert
be4416f come from running this at each commit, on the first zoo's warp-boot and warp-trouser:

    HF_HUB_OFFLINE=1 python benchmarks/explore/strict_tbar.py /tmp/zoo-final warp-boot warp-trouser
"""

import json
import sys
import tempfile
from pathlib import Path

from hubscan import bench_unlearning
from hubscan.policy import Policy, load_policy

FIELDS = (
    "ca_before",
    "ca_after",
    "asr_before",
    "asr_after",
    "coef",
    "damping",
    "reaudit",
    "seconds",
)


def run(zoo: Path, names: list[str], policy: Policy, *prefix: str) -> None:
    """The benchmark's estimated-trigger TBAR (bench_unlearning._tbar) on each named model;
    prints `prefix`, the name, the status and FIELDS."""
    models = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            r = bench_unlearning._tbar(zoo / name, models[name], policy, Path(scratch), True, None)
            print(*prefix, name, r["status"], {k: r.get(k) for k in FIELDS}, flush=True)


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2:], load_policy("strict"))
