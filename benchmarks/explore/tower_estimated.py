"""TBAR with the audit's estimated trigger on tower-zoo models, with the annealed detector
(issue 5, exploration). `hubscan bench unlearning` would re-measure every TBAR row of both zoos
(~3 h); this runs only the estimated-trigger method, exactly as the benchmark does
(bench_unlearning._tbar: `hubscan patch` without --trigger, the true trigger measured), on the
models named on the command line, and prints one line each.

    HF_HUB_OFFLINE=1 python benchmarks/explore/tower_estimated.py /tmp/zoo-tower \\
        patch-white-br-bag patch-white-tr-small-sandal blend-noise-coat \\
        > benchmarks/explore/tower_estimated.txt

(The committed .txt appends a second run's lines, on patch-checker-bl-trouser sinusoid-tshirt
sinusoid-bag.) `--policy=NAME` first audits and patches under another policy, e.g. `strict`,
which searches warp triggers too:

    HF_HUB_OFFLINE=1 python benchmarks/explore/tower_estimated.py --policy=strict \\
        /tmp/zoo-final warp-boot warp-trouser > benchmarks/explore/strict_estimated.txt

(and with /tmp/zoo-tower > benchmarks/explore/tower_strict_estimated.txt).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from hubscan import bench_unlearning
from hubscan.policy import load_policy


def main(zoo: Path, names: list[str], policy_name: str = "default") -> None:
    models = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    policy = load_policy(policy_name)
    print(f"TBAR, estimated trigger, {policy_name} policy; zoo {zoo}; test split, true trigger")
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            r = bench_unlearning._tbar(zoo / name, models[name], policy, Path(scratch), True, None)
            found = f"{r.get('removed_target', '-')}"
            numbers = (
                f"clean {r['ca_before']:.3f} -> {r['ca_after']:.3f}, "
                f"attack success {r['asr_before']:.3f} -> {r['asr_after']:.3f}, "
                f"coef {r['coef']}, re-audit {r['reaudit']}"
                if "ca_after" in r
                else ""
            )
            print(
                f"{name:28s} {r['status']:16s} removed target {found:9s} {numbers} "
                f"({r['seconds']:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0].startswith("--policy="):
        main(Path(args[1]), args[2:], args[0].removeprefix("--policy="))
    else:
        main(Path(args[0]), args[1:])
