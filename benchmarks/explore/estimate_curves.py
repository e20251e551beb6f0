"""Full coefficient curves of TBAR's vectors on every backdoored zoo model (issue 5, exploration).

For each backdoored model: the audit `hubscan patch` runs (estimate_refit.audited), its estimate
refit as the default policy does, and for the estimated vector and the known-trigger vector, at
every Fisher damping of the policy, along a fine coefficient grid: clean accuracy and attack
success on val (the estimate's for the estimated vector, the true trigger's for the known one:
what the coefficient rule sees) and, on test, clean accuracy and the true trigger's attack
success (what verification measures). Written as JSON, so coefficient rules can be compared on
the same curves offline (estimate_rules.py) instead of by rerunning the benchmark per rule.

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_curves.py /tmp/zoo-final curves.json \\
        [--ensemble K] [model ...]

`--probes N`: N probes from the Debian Fashion-MNIST test set (10,000 images), split 40/30/30
like the bundled 1,000, instead of the bundled ones (how much of an edge is the split's size).
`--ensemble K`: the estimated vector learns from K refits of the estimate (seeds 0..K-1, each
from the audit's estimate plus its own noise), tune image i stamped with refit i mod K.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from estimate_refit import POLICY, audited, cosine, task_for

from hubscan import refit, unlearn, vector
from hubscan.estimates import AdditiveTrigger, FlowTrigger
from hubscan.metrics import attack_success, clean_accuracy

STEP = 0.0625
FLOOR_STOP = 0.9  # stop a curve once val CA is under 0.9 x before


def members(clip, head, found, xt, yt, k: int):
    """k refits: the first from the audit's estimate, the others from it plus seeded noise."""
    out = []
    for seed in range(k):
        start = found.trigger
        if seed and isinstance(start, AdditiveTrigger):
            gen = torch.Generator().manual_seed(seed)
            noise = 0.08 * (2 * torch.rand(start.delta.shape, generator=gen) - 1)
            start = AdditiveTrigger(start.file, (start.delta + noise).clamp(-1, 1))
        elif seed and isinstance(start, FlowTrigger):
            gen = torch.Generator().manual_seed(seed)
            start = FlowTrigger(
                start.file, start.flow + torch.randn(start.flow.shape, generator=gen)
            )
        out.append(
            refit.refit(clip, head, start, xt, yt, found.target, POLICY.unlearning, seed=seed)
        )
    return out


def mixed(estimates):
    def stamp(x: torch.Tensor) -> torch.Tensor:
        if len(estimates) == 1:
            return estimates[0].apply(x)
        out = x.clone()
        for i, e in enumerate(estimates):
            out[i :: len(estimates)] = e.apply(x[i :: len(estimates)])
        return out

    return stamp


def curves(inputs, target, stamp, true, estimated: bool):
    clip, head = inputs.clip, inputs.head
    _, (xv, yv), (xs, ys) = inputs.splits
    task = task_for(inputs, target, stamp, estimated=estimated)
    base = vector.tower_params(clip)
    tau = vector.trigger_vector(clip, task, POLICY.unlearning, seed=0, tick=None)
    out = {}
    for lam, damped in vector.damped(clip, task, tau, POLICY.unlearning):
        rows = []
        coef, ca0 = 0.0, None
        while coef <= 3.0:
            with unlearn._edited(clip, base, damped, coef):
                ca_v = clean_accuracy(clip, xv, yv, head)
                rows.append(
                    {
                        "coef": coef,
                        "val_ca": ca_v,
                        "val_asr": attack_success(clip, xv, yv, head, stamp, target),
                        "val_true": attack_success(clip, xv, yv, head, true.apply, target),
                        "test_ca": clean_accuracy(clip, xs, ys, head),
                        "test_true": attack_success(clip, xs, ys, head, true.apply, target),
                    }
                )
            ca0 = ca_v if ca0 is None else ca0
            if ca_v < FLOOR_STOP * ca0:
                break
            coef += STEP
        out[str(lam)] = rows
    return out


def main(zoo: Path, dest: Path, names: list[str], k: int, probes: int | None) -> None:
    manifest = json.loads((zoo / "manifest.json").read_text())["models"]
    names = names or [m["name"] for m in manifest if m.get("trigger")]
    results = json.loads(dest.read_text()) if dest.exists() else {}
    for name in names:
        if name in results:
            continue
        start = time.perf_counter()
        inputs, found, true = audited(zoo, name, probes)
        (xt, yt), _, (xs, _) = inputs.splits
        known = curves(inputs, int(_target(inputs, name, manifest)), true.apply, true, False)
        row = {"known": known}
        if found is not None:
            ests = members(inputs.clip, inputs.head, found, xt, yt, k)
            if isinstance(ests[0], AdditiveTrigger):
                change = (true.apply(xs) - xs).mean(dim=0).mean(dim=0)
                row["cos"] = [cosine(e.delta.mean(dim=0), change) for e in ests]
                row["cos_mean"] = cosine(sum(e.delta for e in ests).mean(dim=0), change)
            row["estimated"] = curves(inputs, found.target, mixed(ests), true, True)
        results[name] = row
        dest.write_text(json.dumps(_rounded(results), separators=(",", ":")))
        print(name, f"{time.perf_counter() - start:.0f} s", row.get("cos"), flush=True)


def _rounded(o):
    if isinstance(o, float):
        return round(o, 4)
    if isinstance(o, dict):
        return {k: _rounded(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_rounded(v) for v in o]
    return o


def _target(inputs, name, manifest) -> int:
    m = next(m for m in manifest if m["name"] == name)
    return inputs.label_set.classes.index(m["target"])


if __name__ == "__main__":
    args = sys.argv[1:]
    options = {"--ensemble": 1, "--probes": None}
    for flag in options:
        if flag in args:
            i = args.index(flag)
            options[flag] = int(args[i + 1])
            del args[i : i + 2]
    main(Path(args[0]), Path(args[1]), args[2:], options["--ensemble"], options["--probes"])
