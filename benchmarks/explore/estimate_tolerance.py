"""TBAR with the audit's (refit) estimate under a coefficient tolerance (issue 5, exploration).

The benchmark's estimated-trigger run (strict_tbar.run: bench_unlearning._tbar) with the default
policy's `asr_tolerance` replaced by each value given: the smallest coefficient within that
tolerance of the lowest val attack success instead of the lowest. Meant for warp-boot, whose
patch with the refit estimate spends the val floor on its last val image and then fails test
retention (94.0 %); see estimate_tolerance.txt.

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_tolerance.py /tmp/zoo-final \\
        0.005,0.02 warp-boot warp-trouser sinusoid-tshirt sinusoid-bag \\
        > benchmarks/explore/estimate_tolerance.txt
"""

import dataclasses
import sys
from pathlib import Path

from strict_tbar import run  # this folder: run as a script

from hubscan.policy import load_policy

if __name__ == "__main__":
    policy = load_policy("default")
    for tolerance in sys.argv[2].split(","):
        removal = dataclasses.replace(policy.unlearning, asr_tolerance=float(tolerance))
        run(
            Path(sys.argv[1]),
            sys.argv[3:],
            dataclasses.replace(policy, unlearning=removal),
            f"asr_tolerance={tolerance}",
        )
