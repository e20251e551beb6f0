"""TBAR with the audit's estimated trigger at several `unlearning.estimate_gain`s, side by side
(issue 5, exploration).

The audit's estimate is capped by its search budget (blend_linf 0.08) below the trigger it stands
for (the first zoo's checker blend changes pixels by up to 0.2, sinusoid-bag's by 0.12), and with
the estimate stamped at a random strength up to 1 (the old default) TBAR left 20 % of
blend-checker-dress's true trigger. For each GAIN (a float) this runs the estimated-trigger method
exactly as `hubscan bench unlearning` does (bench_unlearning._tbar: `hubscan patch` without
--trigger, the true trigger measured on the test split), with the default policy's
`estimate_gain` replaced, on the models named after `--`:

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_gain.py /tmp/zoo-final 1.0 2.0 -- \\
        patch-white-br-bag blend-noise-coat sinusoid-tshirt patch-checker-tl-sneaker \\
        patch-checker-bl-trouser patch-white-tr-small-sandal blend-stripes-pullover \\
        blend-checker-dress sinusoid-bag patch-checker-center-sneaker \\
        > benchmarks/explore/estimate_gain.txt

and on the pre-trained tower zoo, five blends, sinusoids and a patch:

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_gain.py /tmp/zoo-tower 1.0 2.0 -- \\
        sinusoid-tshirt sinusoid-bag blend-checker-dress blend-noise-coat \\
        patch-white-tr-small-sandal > benchmarks/explore/estimate_gain-tower.txt
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from hubscan import bench_unlearning
from hubscan.policy import load_policy


def main(zoo: Path, gains: list[float], names: list[str]) -> None:
    models = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    default = load_policy("default")
    print(f"TBAR, estimated trigger, default policy but estimate_gain; zoo {zoo}; test split")
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            for gain in gains:
                unlearning = dataclasses.replace(default.unlearning, estimate_gain=gain)
                policy = dataclasses.replace(default, unlearning=unlearning)
                r = bench_unlearning._tbar(
                    zoo / name, models[name], policy, Path(scratch), True, None
                )
                numbers = (
                    f"clean {r['ca_before']:.3f} -> {r['ca_after']:.3f}, "
                    f"attack success {r['asr_before']:.3f} -> {r['asr_after']:.3f}, "
                    f"coef {r['coef']}, damping {r['damping']}, re-audit {r['reaudit']}"
                    if "ca_after" in r
                    else ""
                )
                print(
                    f"gain {gain:3.1f}  {name:28s} {r['status']:31s} {numbers} "
                    f"({r['seconds']:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--")
    main(Path(args[0]), [float(g) for g in args[1:split]], args[split + 1 :])
