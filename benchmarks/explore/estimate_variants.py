"""TBAR with the audit's estimate, one part of the pipeline swapped (issue 5, exploration).

Each MODE replaces one step of the benchmark's estimated-trigger run (bench_unlearning._tbar, via
strict_tbar.run) and prints the same fields. None was kept (estimate_variants.txt):

- `gain-measure`: the coefficient curve's attack success measured with the estimate stamped at
  `estimate_gain` (as the vector learned it) instead of at its own strength;
- `effect`: the coefficient with the smallest |p_target(stamped) - p_target(clean)| over the
  non-target val images (a measure that does not saturate at 0 like attack success);
- `project-classes[N]`, `project-target`: tau without its component along the gradients of the
  clean tune images' mean margin (logit of the class minus logsumexp of the others), per class
  (N groups of images per class) or for the target only;
- `mixed`: tau learned from every family's estimate that flags the chosen target, the stamped
  images alternating between them;
- `blur-S`: the additive estimate blurred (Gaussian, sigma S px), rescaled to its L-inf;
- `anchor-A`: `estimate_anchor = A` (clean target images per stamped one in both fine-tunes).
  The figures were measured with its first form, the target's tune images repeated R times
  (R = 3, 10); every class has 40 of the 400 tune images, so R = 3 is A = 0.3 and R = 10 is
  A = 1.0, image for image, and the benchmark at 0.3 reproduced anchor-0.3 on all 12.

Every other mode runs on the default policy as it was before `estimate_anchor` (0 here). Each
runs without the estimate's refit (refit_steps 0), as estimate_variants.txt was measured; with
`--refit` first, with the policy's refit (estimate_anchor-refit.txt).

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_variants.py MODE /tmp/zoo-final NAME...
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from strict_tbar import run  # this folder: run as a script

from hubscan import pipeline_patch, unlearn, vector
from hubscan.estimates import AdditiveTrigger
from hubscan.metrics import attack_success, clean_accuracy
from hubscan.policy import load_policy
from hubscan.records import CoefTrial, Verdict

_measure, _trigger_vector, _detect = unlearn._measure, vector.trigger_vector, pipeline_patch._detect


def gain_measure(clip, task, coef):
    if not task.estimated:
        return _measure(clip, task, coef)
    gain = load_policy("default").unlearning.estimate_gain
    stamp = lambda x: (x + gain * (task.stamp(x) - x)).clamp(0, 1)  # noqa: E731
    x, y, head = task.val, task.val_labels, task.head
    return CoefTrial(
        coef=coef,
        clean_accuracy=round(clean_accuracy(clip, x, y, head), 4),
        attack_success=round(attack_success(clip, x, y, head, stamp, task.target), 4),
    )


def effect(clip, task, coef):
    if not task.estimated:
        return _measure(clip, task, coef)
    x, y, head = task.val, task.val_labels, task.head
    keep = y != task.target

    def p_target(images):
        with torch.no_grad():
            return clip.logits(images, head).softmax(dim=1)[:, task.target].mean().item()

    shift = p_target(task.stamp(x[keep])) - p_target(x[keep])
    return CoefTrial(
        coef=coef,
        clean_accuracy=round(clean_accuracy(clip, x, y, head), 4),
        attack_success=round(abs(shift), 4),
    )


def margin_grads(clip, task, classes, groups):
    """Per class and group of its tune images: the gradient of their mean clean margin."""
    model, x, y = clip.model, task.tune, task.tune_labels
    params = dict(model.visual.named_parameters())
    scale = model.logit_scale.exp().detach()
    out = []
    with vector._training_only(clip, params):
        for c in classes:
            for xc in x[y == c].chunk(groups):
                emb = F.normalize(model.encode_image(clip.prepare(xc)), dim=-1)
                logits = scale * emb @ task.head.T
                others = logits.clone()
                others[:, c] = float("-inf")
                margin = (logits[:, c] - others.logsumexp(dim=1)).mean()
                grads = torch.autograd.grad(margin, list(params.values()))
                out.append(torch.cat([g.flatten() for g in grads]).detach())
    return torch.stack(out)


def projected(target_only, groups):
    def trigger_vector(clip, task, policy, *, seed, tick):
        tau = _trigger_vector(clip, task, policy, seed=seed, tick=tick)
        if not task.estimated:
            return tau
        classes = [task.target] if target_only else range(len(task.head))
        basis, _ = torch.linalg.qr(margin_grads(clip, task, classes, groups).T.double())
        flat = torch.cat([t.flatten() for t in tau.values()]).double()
        along = basis @ (basis.T @ flat)
        share = float(along.norm() / flat.norm())
        print(f"   {basis.shape[1]} directions, removed share {share:.3f}")
        rest, out, i = (flat - along).float(), {}, 0
        for k, t in tau.items():
            out[k] = rest[i : i + t.numel()].view_as(t)
            i += t.numel()
        return out

    return trigger_vector


@dataclasses.dataclass(frozen=True)
class Alternating:
    """Stamps image i with estimate i mod len(estimates)."""

    estimates: tuple

    def apply(self, x):
        stamped = torch.stack([e.apply(x) for e in self.estimates])
        return stamped[torch.arange(len(x)) % len(self.estimates), torch.arange(len(x))]


def mixed_detect(run_, inputs, policy, seed, bars):
    classes = inputs.label_set.classes
    outcome = pipeline_patch.detect(
        inputs.clip, inputs.splits[0][0], inputs.label_set, inputs.labels_given, policy, seed, bars
    )
    det = outcome.detection
    run_ = dataclasses.replace(run_, detection=det)
    if det.verdict is not Verdict.FAIL or det.family is None:
        return run_, None
    flagged = [s.family for s in det.families if s.flagged and s.target == det.suspected_target]
    print("   families:", flagged)
    trigger = Alternating(tuple(outcome.estimates[f] for f in flagged))
    found = pipeline_patch._Target(
        trigger=trigger, spec="mixed", target=classes.index(det.suspected_target), estimated=True
    )
    return run_, found


def blur(delta, sigma):
    r = int(3 * sigma + 1)
    g = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    z = F.conv2d(F.pad(delta[:, None], (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(z, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))[:, 0]


def blurred(sigma):
    def detect(run_, inputs, policy, seed, bars):
        run_, found = _detect(run_, inputs, policy, seed, bars)
        if found is not None and isinstance(found.trigger, AdditiveTrigger):
            d = found.trigger.delta
            b = blur(d, sigma)
            b = b * d.abs().max() / b.abs().max()
            found = dataclasses.replace(found, trigger=AdditiveTrigger("in-memory", b))
        return run_, found

    return detect


def install(mode: str) -> float:
    """Swap the mode's step in; returns the `estimate_anchor` the run uses."""
    if mode == "gain-measure":
        unlearn._measure = gain_measure
    elif mode == "effect":
        unlearn._measure = effect
    elif mode.startswith("project-"):
        vector.trigger_vector = unlearn.trigger_vector = projected(
            mode == "project-target", int(mode.removeprefix("project-classes") or 1)
        )
    elif mode == "mixed":
        pipeline_patch._detect = mixed_detect
    elif mode.startswith("anchor-"):
        return float(mode.removeprefix("anchor-"))
    elif mode.startswith("blur-"):
        pipeline_patch._detect = blurred(float(mode.removeprefix("blur-")))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0.0


if __name__ == "__main__":
    args = sys.argv[1:]
    refit = args[0] == "--refit"  # keep the estimate's refit (the default since it was added)
    mode, zoo, names = args[refit], Path(args[refit + 1]), args[refit + 2 :]
    anchor = install(mode)
    policy = load_policy("default")
    steps = policy.unlearning.refit_steps if refit else 0
    before = dataclasses.replace(policy.unlearning, estimate_anchor=anchor, refit_steps=steps)
    run(zoo, names, dataclasses.replace(policy, unlearning=before), mode)
