"""The references TBAR is measured against in `hubscan bench unlearning`: the two fine-tuning
baselines and the oracle vector, on the probes and splits `hubscan patch` makes with seed 0.

Owns the known-trigger setup the benchmarks share (bench_unlearning.py, bench_disentangle.py):
the zoo model, its zero-shot head, TBAR's task and the test split. Baselines fine-tune through
vector.finetune, the oracle removes through unlearn.remove, so they differ from TBAR only in
what they learn. Must not go through pipeline_patch (TBAR's own rows do) or write anything.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubscan.errors import NotRemediated, UsageError
from hubscan.policy import Policy
from hubscan.records import Patch

if TYPE_CHECKING:
    import torch

    from hubscan.model import ClipHandle
    from hubscan.vector import Task

Tick = Callable[[str], None]  # told "<model>: <method>" as each run starts
LABELS = "fashion-mnist"
BASELINE_LRS = (1e-4, 1e-3)
BASELINES = ("clean-ft", "trigger-true-ft")


def trial_curve(patch: Patch) -> list[list[float]]:
    return [[t.coef, t.clean_accuracy, t.attack_success] for t in patch.trials]


@dataclasses.dataclass(frozen=True)
class KnownSetup:
    """A zoo model with its known trigger, on the probes and splits pipeline_patch makes with
    seed 0: what the baselines, the oracle and the disentanglement benchmark share."""

    clip: ClipHandle
    head: torch.Tensor
    task: Task  # TBAR's task for the known trigger: tune and val, labelled
    test: torch.Tensor  # the split nothing is chosen on
    test_labels: torch.Tensor

    def measure(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Clean accuracy and the known trigger's attack success of the tower as it is now."""
        from hubscan.metrics import attack_success, clean_accuracy

        t = self.task
        return (
            clean_accuracy(self.clip, x, y, self.head),
            attack_success(self.clip, x, y, self.head, t.stamp, t.target),
        )


def known_setup(
    root: Path, m: dict[str, Any], policy: Policy, probes: str = "default"
) -> KnownSetup:
    from hubscan import vector
    from hubscan.model import load_clip
    from hubscan.probes import load_labels, load_probes
    from hubscan.triggers import parse_trigger

    labels = load_labels(LABELS)
    clip = load_clip(root)
    head = clip.zero_shot_head(labels.classes, labels.templates)
    probe_set = load_probes(probes, labels=labels, limit=policy.unlearning.probe_images, seed=0)
    parts = probe_set.split(seed=0)
    if parts.tune.labels is None or parts.val.labels is None or parts.test.labels is None:
        raise UsageError("the benchmark needs labelled probes")
    task = vector.Task(
        stamp=parse_trigger(m["trigger"]).apply,
        trigger=m["trigger"],
        target=labels.classes.index(m["target"]),
        target_name=m["target"],
        estimated=False,
        head=head,
        tune=parts.tune.images,
        tune_labels=parts.tune.labels,
        val=parts.val.images,
        val_labels=parts.val.labels,
        labelled=True,
    )
    return KnownSetup(
        clip=clip, head=head, task=task, test=parts.test.images, test_labels=parts.test.labels
    )


def baseline(
    name: str,
    root: Path,
    m: dict[str, Any],
    policy: Policy,
    tick: Tick | None,
    *,
    probes: str = "default",
) -> dict[str, Any]:
    """Fine-tune the image tower on the tune split (clean, or stamped, with true labels) for as
    many steps as contrast TBAR takes in all; the learning rate chosen on val by TBAR's rule."""
    from hubscan import vector

    if tick is not None:
        tick(f"{m['name']}: {name}")
    start = time.perf_counter()
    known = known_setup(root, m, policy, probes)
    clip, head, task, un = known.clip, known.head, known.task, policy.unlearning
    measure = known.measure
    ca0, asr0 = measure(known.test, known.test_labels)
    ca_val0 = measure(task.val, task.val_labels)[0]
    images = task.tune if name == "clean-ft" else task.stamp(task.tune)
    tried: list[dict[str, Any]] = []
    for lr in BASELINE_LRS:
        pol = dataclasses.replace(un, lr=lr, steps=2 * un.steps)
        tuned, _ = vector.finetune(clip, head, images, task.tune_labels, pol, 0, None)
        with vector.tower_at(clip, tuned):
            ca_val, asr_val = measure(task.val, task.val_labels)
            ca, asr = measure(known.test, known.test_labels)
        tried.append({"lr": lr, "val": [ca_val, asr_val], "test": [ca, asr]})
    ok = [t for t in tried if t["val"][0] >= un.clean_floor * ca_val0]
    pick = (
        min(ok, key=lambda t: (t["val"][1], -t["val"][0]))
        if ok
        else max(tried, key=lambda t: t["val"][0])
    )
    return {
        "status": "within floor" if ok else "below floor",
        "seconds": round(time.perf_counter() - start, 2),
        "ca_before": round(ca0, 4),
        "asr_before": round(asr0, 4),
        "ca_after": round(pick["test"][0], 4),
        "asr_after": round(pick["test"][1], 4),
        "lr": pick["lr"],
        "tried": tried,
    }


def oracle(
    root: Path,
    base: Path,
    m: dict[str, Any],
    policy: Policy,
    tick: Tick | None,
    *,
    probes: str = "default",
) -> dict[str, Any]:
    """θ_b − α·(θ_b − θ_base), α by TBAR's rule on val, measured on test (same splits)."""
    from hubscan import unlearn, vector
    from hubscan.model import load_clip

    if tick is not None:
        tick(f"{m['name']}: oracle")
    start = time.perf_counter()
    known = known_setup(root, m, policy, probes)
    clip = known.clip
    theta_b, theta_0 = vector.tower_params(clip), vector.tower_params(load_clip(base))
    tau = {k: theta_b[k] - theta_0[k] for k in theta_b}
    ca0, asr0 = known.measure(known.test, known.test_labels)
    try:
        removed = unlearn.remove(clip, known.task, policy.unlearning, tau=tau)
    except NotRemediated as err:
        curve = [list(t) for t in err.trials]
        seconds = round(time.perf_counter() - start, 2)
        return {"status": "no coefficient within the floor", "seconds": seconds, "curve": curve}
    coef = removed.patch.coef
    with vector.tower_at(clip, {k: theta_b[k] - coef * tau[k] for k in theta_b}):
        ca, asr = known.measure(known.test, known.test_labels)
    return {
        "status": "within floor",
        "seconds": round(time.perf_counter() - start, 2),
        "ca_before": round(ca0, 4),
        "asr_before": round(asr0, 4),
        "ca_after": round(ca, 4),
        "asr_after": round(asr, 4),
        "coef": coef,
        "curve": trial_curve(removed.patch),
    }
