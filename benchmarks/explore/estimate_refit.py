"""The audit's estimate against its refit (refit.py) before TBAR (issue 5, exploration).

For each named zoo model: the audit that `hubscan patch` runs (bench_unlearning's estimated
mode, stopped after the audit), then for the audit's estimate as found and as refit by
hubscan.refit under the default policy: its size (RMS change, or mean flow length in px), its
cosine with the true trigger (the mean change T(x) - x over the test images for an additive
estimate; the WaNet flow for a warp one) and its held-out attack success; and the coefficient
curve of its TBAR vector at Fisher damping 0 and 3: clean accuracy, the estimate's and the
true trigger's attack success on val (where the coefficient is chosen) | clean accuracy and
the true trigger's attack success on test.

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_refit.py /tmp/zoo-final \\
        sinusoid-bag warp-trouser warp-boot > benchmarks/explore/estimate_refit.txt

With `--sweep` first, no curves: the refit's size, cosine and val attack success at each
refit_share and refit_steps of SWEEP (estimate_refit-sweep.txt).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch

import hubscan.pipeline_patch as PP
from hubscan import bench_unlearning, refit, unlearn, vector
from hubscan.estimates import AdditiveTrigger
from hubscan.metrics import attack_success, clean_accuracy
from hubscan.policy import load_policy
from hubscan.triggers import WarpTrigger, parse_trigger

POLICY = load_policy("default")
COEFS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
SWEEP = ((0.8, 150), (0.8, 400), (0.9, 150), (0.9, 400), (0.97, 150), (0.97, 400), (0.995, 400))


class _Audited(Exception):
    pass


def audited(zoo: Path, name: str, probes: int | None = None):
    """(inputs, the audit's target) of `hubscan patch`'s estimated mode on the model; with
    `probes`, on that many of the Debian Fashion-MNIST test images instead of the bundled 1,000."""
    models = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    seen = {}
    detect = PP._detect

    def grab(run, inputs, policy, seed, bars):
        _, found = detect(run, inputs, policy, seed, bars)
        seen.update(inputs=inputs, found=found)
        raise _Audited

    PP._detect = grab
    try:
        with tempfile.TemporaryDirectory() as scratch:
            if probes is None:
                bench_unlearning._tbar(zoo / name, models[name], POLICY, Path(scratch), True, None)
            else:
                PP.patch(
                    str(zoo / name),
                    policy=dataclasses.replace(
                        POLICY,
                        unlearning=dataclasses.replace(POLICY.unlearning, probe_images=probes),
                    ),
                    out=Path(scratch) / "out",
                    labels=bench_unlearning.LABELS,
                    probes="fashion-mnist",
                    trigger=models[name]["trigger"],
                    target=models[name]["target"],
                    estimate=True,
                )
    except _Audited:
        pass
    finally:
        PP._detect = detect
    return seen["inputs"], seen["found"], parse_trigger(models[name]["trigger"])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-12))


def describe(estimate, true, test: torch.Tensor) -> str:
    if isinstance(estimate, AdditiveTrigger):
        change = (true.apply(test) - test).mean(dim=0).mean(dim=0)
        d = estimate.delta.mean(dim=0)
        rms = float(estimate.delta.pow(2).mean().sqrt())
        return f"rms {rms:.3f}  cos-true {cosine(d, change):+.2f}"
    f = estimate.flow
    size = f"mean |flow| {float(f.norm(dim=0).mean()):.2f} px"
    if not isinstance(true, WarpTrigger):
        return size
    h, w = f.shape[1:]
    px = true.flow(h, w).permute(2, 0, 1) * torch.tensor([(w - 1) / 2, (h - 1) / 2]).view(2, 1, 1)
    return f"{size}  cos-true {cosine(f, px):+.2f}"


def task_for(inputs, target: int, stamp, *, estimated: bool = True) -> vector.Task:
    """TBAR's task on the audited inputs' labelled tune and val splits."""
    (xt, yt), (xv, yv), _ = inputs.splits
    return vector.Task(
        stamp=stamp,
        trigger="estimate" if estimated else "known",
        target=target,
        target_name=str(target),
        estimated=estimated,
        head=inputs.head,
        tune=xt,
        tune_labels=yt,
        val=xv,
        val_labels=yv,
        labelled=True,
    )


def curve(inputs, found, estimate, true) -> None:
    clip, head = inputs.clip, inputs.head
    _, (xv, yv), (xs, ys) = inputs.splits
    t = found.target
    task = task_for(inputs, t, estimate.apply)
    base = vector.tower_params(clip)
    tau = vector.trigger_vector(clip, task, POLICY.unlearning, seed=0, tick=None)
    for lam, damped in vector.damped(clip, task, tau, POLICY.unlearning):
        if lam not in (0.0, 3.0):
            continue
        print(f"    damping {lam:g}")
        for coef in COEFS:
            with unlearn._edited(clip, base, damped, coef):
                ca_v, ca_s = clean_accuracy(clip, xv, yv, head), clean_accuracy(clip, xs, ys, head)
                est = attack_success(clip, xv, yv, head, estimate.apply, t)
                tv = attack_success(clip, xv, yv, head, true.apply, t)
                ts = attack_success(clip, xs, ys, head, true.apply, t)
            print(
                f"      coef {coef:5.3f}  val CA {ca_v:.3f} estimate {est:.3f} true {tv:.3f}"
                f" | test CA {ca_s:.3f} true {ts:.3f}",
                flush=True,
            )


def sweep(inputs, found, true) -> None:
    clip, head = inputs.clip, inputs.head
    (xt, yt), (xv, yv), (xs, _) = inputs.splits
    for share, steps in SWEEP:
        policy = dataclasses.replace(POLICY.unlearning, refit_share=share, refit_steps=steps)
        estimate = refit.refit(clip, head, found.trigger, xt, yt, found.target, policy, seed=0)
        own = attack_success(clip, xv, yv, head, estimate.apply, found.target)
        print(
            f"  share {share:5.3f} steps {steps:3d}  {describe(estimate, true, xs)}  "
            f"val attack success {own:.2f}",
            flush=True,
        )


def main(zoo: Path, names: list[str], *, only_sweep: bool) -> None:
    for name in names:
        inputs, found, true = audited(zoo, name)
        if found is None:
            print(name, "not detected")
            continue
        clip, head = inputs.clip, inputs.head
        (xt, yt), (xv, yv), (xs, _) = inputs.splits
        print(
            f"{name}: target {inputs.label_set.classes[found.target]}; val CA "
            f"{clean_accuracy(clip, xv, yv, head):.3f}, floor x{POLICY.unlearning.clean_floor}"
        )
        if only_sweep:
            sweep(inputs, found, true)
            continue
        refitted = refit.refit(
            clip, head, found.trigger, xt, yt, found.target, POLICY.unlearning, seed=0
        )
        for label, estimate in (("as found", found.trigger), ("refit", refitted)):
            own = attack_success(clip, xv, yv, head, estimate.apply, found.target)
            print(f"  {label:8s} {describe(estimate, true, xs)}  val attack success {own:.2f}")
            curve(inputs, found, estimate, true)


if __name__ == "__main__":
    args = sys.argv[1:]
    only_sweep = args[0] == "--sweep"
    main(Path(args[only_sweep]), args[only_sweep + 1 :], only_sweep=only_sweep)
