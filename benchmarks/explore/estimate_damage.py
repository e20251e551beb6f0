"""Where the estimated-trigger vector costs clean accuracy (issue 5, exploration).

Runs the benchmark's estimated-trigger TBAR (strict_tbar.run) and, once the coefficient search
is done, re-applies the vectors it tried and prints on the val split (estimate_damage.txt):

- `perclass`: at each damping and coefficients 0-0.75, clean accuracy, the true trigger's
  attack success and every class's recall;
- `blocks`: the undamped vector applied to one block of the tower at a time (stem, each
  residual block, ln_post + proj) at 0.5 and 1.0: clean accuracy, the estimate's and the true
  trigger's attack success;
- `recenter`: the first two dampings at 0.25-1.0, without and with the clean tune images' mean
  embedding restored by a shift of ln_post.bias (least squares through proj).

    HF_HUB_OFFLINE=1 python benchmarks/explore/estimate_damage.py MODE /tmp/zoo-final NAME...
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import torch
from strict_tbar import run  # this folder: run as a script

from hubscan import unlearn
from hubscan.metrics import attack_success, clean_accuracy, predict
from hubscan.policy import load_policy
from hubscan.triggers import parse_trigger

_search = unlearn._search_dampings
TRUE: dict[str, str] = {}


def perclass(clip, task, before, tried):
    x, y, head = task.val, task.val_labels, task.head
    true = parse_trigger(TRUE["spec"]).apply
    for lam, tau in tried:
        for coef in (0.0, 0.25, 0.5, 0.75):
            with unlearn._edited(clip, before, tau, coef):
                p = predict(clip, x, head)
                asr = attack_success(clip, x, y, head, true, task.target)
            recall = " ".join(f"{(p[y == c] == c).float().mean():.2f}" for c in range(len(head)))
            acc = float((p == y).float().mean())
            print(
                f"  lam {lam:4g} coef {coef:4.2f} acc {acc:.3f} true-asr {asr:.3f} "
                f"per-class {recall}"
            )


def block(name):
    m = re.search(r"resblocks\.(\d+)\.", name)
    if m:
        return f"rb{m.group(1)}"
    return "post" if "ln_post" in name or name == "proj" else "stem"


def blocks(clip, task, before, tried):
    x, y, head = task.val, task.val_labels, task.head
    true = parse_trigger(TRUE["spec"]).apply
    tau = tried[0][1]
    for b in ["all", *sorted({block(k) for k in tau})]:
        part = {k: v if b in ("all", block(k)) else torch.zeros_like(v) for k, v in tau.items()}
        for coef in (0.5, 1.0):
            with unlearn._edited(clip, before, part, coef):
                ca = clean_accuracy(clip, x, y, head)
                est = attack_success(clip, x, y, head, task.stamp, task.target)
                tru = attack_success(clip, x, y, head, true, task.target)
            print(f"   {b:5s} coef {coef:3.1f} ca {ca:.3f} est {est:.3f} true {tru:.3f}")


def recenter(clip, task, before, tried):
    x, y, head, vis = task.val, task.val_labels, task.head, clip.model.visual
    true = parse_trigger(TRUE["spec"]).apply

    def mean_embedding():
        with torch.no_grad():
            return clip.model.encode_image(clip.prepare(task.tune)).mean(0)

    reference = mean_embedding()
    for lam, tau in tried[:2]:
        for coef in (0.25, 0.5, 0.75, 1.0):
            for fix in (False, True):
                with unlearn._edited(clip, before, tau, coef):
                    if fix:
                        shift = reference - mean_embedding()
                        db = torch.linalg.lstsq(vis.proj.detach().T, shift[:, None]).solution
                        with torch.no_grad():
                            vis.ln_post.bias += db[:, 0]
                    p = predict(clip, x, head)
                    tru = attack_success(clip, x, y, head, true, task.target)
                    est = attack_success(clip, x, y, head, task.stamp, task.target)
                acc = float((p == y).float().mean())
                recall = float((p[y == task.target] == task.target).float().mean())
                print(
                    f"  lam {lam:3g} coef {coef:4.2f} fix {fix:d} acc {acc:.3f} est {est:.3f} "
                    f"true {tru:.3f} tgt-recall {recall:.2f}"
                )


def spy(show):
    def search(clip, task, policy, before, vectors, tick):
        tried, curves = _search(clip, task, policy, before, vectors, tick)
        show(clip, task, before, tried)
        return tried, curves

    return search


if __name__ == "__main__":
    mode, zoo = sys.argv[1], Path(sys.argv[2])
    shows = {"perclass": perclass, "blocks": blocks, "recenter": recenter}
    unlearn._search_dampings = spy(shows[mode])
    models = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    for name in sys.argv[3:]:
        TRUE["spec"] = models[name]["trigger"]
        print(name, "target", models[name]["target"])
        policy = load_policy("default")  # as it was before estimate_anchor
        policy = dataclasses.replace(
            policy, unlearning=dataclasses.replace(policy.unlearning, estimate_anchor=0.0)
        )
        run(zoo, [name], policy, mode)
