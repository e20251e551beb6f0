"""TBAR with the audit's estimate, the coefficient rule swapped (issue 5, exploration): `max`
takes the largest coefficient within the clean floor among those at the lowest val attack
success (unlearn.choose replaced), `min` the policy's rule. The ad hoc figures of commit 58e8fc4
(estimate_coef = "largest", reverted in d3eeb3f) come from

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_coef.py max /tmp/zoo-final warp-trouser \\
        sinusoid-bag blend-checker-dress sinusoid-tshirt patch-white-tr-small-sandal \\
        blend-noise-coat
"""

import sys
from pathlib import Path

from strict_tbar import run  # this folder: run as a script

from hubscan import unlearn
from hubscan.policy import load_policy

if sys.argv[1] == "max":

    def choose(qualifying, tolerance, *, lowest=None):
        if lowest is None:
            lowest = min(t.attack_success for t in qualifying)
        return max(
            (t for t in qualifying if t.attack_success <= lowest + tolerance), key=lambda t: t.coef
        )

    unlearn.choose = choose
run(Path(sys.argv[2]), sys.argv[3:], load_policy("default"), sys.argv[1])
