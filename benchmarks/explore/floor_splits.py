"""Could the clean floor be measured on more images? (issue 5, exploration)

TBAR chooses its coefficient where val clean accuracy stays >= 0.97 x the audited model's, on
300 images, and test retention then scatters around it (warp-boot: 94.0 % on test at the val
floor; sinusoid-bag: val loses 4.3 points where test loses 2.3). The tune split (400 images)
trained both of the contrast vector's fine-tunes with the same clean labels, so their
difference may leave its clean accuracy nearly unbiased. For each named zoo model, the known
trigger's default vector (fisher, dampings 0 and 3) along the coefficient: clean accuracy on
tune, val and test, each as a change from the audited model (points), and the true trigger's
val attack success. If tune's drop tracked test's as closely as val's does, the floor could
be measured on tune + val (700 images).

    HF_HUB_OFFLINE=1 python benchmarks/explore/floor_splits.py /tmp/zoo-final \\
        warp-boot sinusoid-bag blend-noise-coat patch-checker-bl-trouser \\
        > benchmarks/explore/floor_splits.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hubscan import unlearn, vector
from hubscan.bench_references import known_setup
from hubscan.metrics import attack_success, clean_accuracy
from hubscan.policy import load_policy

POLICY = load_policy("default")
COEFS = (0.25, 0.5, 0.75, 1.0, 1.25)


def main(zoo: Path, names: list[str]) -> None:
    models = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    for name in names:
        s = known_setup(zoo / name, models[name], POLICY)
        clip, head, t = s.clip, s.head, s.task
        splits = {"tune": (t.tune, t.tune_labels), "val": (t.val, t.val_labels)}
        splits["test"] = (s.test, s.test_labels)
        before = {k: clean_accuracy(clip, x, y, head) for k, (x, y) in splits.items()}
        print(name, " ".join(f"{k} CA {v:.3f}" for k, v in before.items()), flush=True)
        base = vector.tower_params(clip)
        tau = vector.trigger_vector(clip, t, POLICY.unlearning, seed=0, tick=None)
        for lam, damped in vector.damped(clip, t, tau, POLICY.unlearning):
            if lam not in (0.0, 3.0):
                continue
            for coef in COEFS:
                with unlearn._edited(clip, base, damped, coef):
                    drop = {
                        k: 100 * (clean_accuracy(clip, x, y, head) - before[k])
                        for k, (x, y) in splits.items()
                    }
                    asr = attack_success(clip, t.val, t.val_labels, head, t.stamp, t.target)
                cells = " ".join(f"{k} {v:+5.1f}" for k, v in drop.items())
                print(f"  damping {lam:g} coef {coef:4.2f}  {cells}  val attack {asr:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
