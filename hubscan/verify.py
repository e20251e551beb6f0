"""Verification of a TBAR patch: the patched file, reloaded from disk, judged on the test split.

Owns the pass/fail of a patch: clean accuracy and attack success before and after, for every
trigger it is given (the one removed and, when known, the true one), on test images neither the
trigger vector nor the coefficient ever saw; and a fresh audit of the patched model, which must
come out clean (the backdoor must not be re-findable). The weights measured are the bytes that
will be released: they are loaded from `root`, never taken from memory.

Must not edit weights or write files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hubscan import invert
from hubscan.metrics import Stamp, attack_success, clean_accuracy
from hubscan.model import WEIGHTS_NAME, ClipHandle, load_clip
from hubscan.policy import DetectionPolicy, Policy
from hubscan.records import Comparison, Metrics, Verdict, Verification

Tick = Callable[[int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """A trigger to measure: what it is, what it stamps, where it sends images."""

    trigger: str
    stamp: Stamp
    target: int
    target_name: str
    source: str  # "estimated" | "known"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifySplit:
    images: torch.Tensor
    labels: torch.Tensor  # classes, or the audited model's predictions (unlabelled probes)
    labelled: bool
    classes: tuple[str, ...]  # the head: a label set, or the policy's vocabulary
    labels_given: bool  # False: the classes are the vocabulary (a label-free re-audit)
    templates: tuple[str, ...]


def verify(
    audited: ClipHandle,
    root: Path,
    *,
    checks: Sequence[Check],
    test: VerifySplit,
    policy: Policy,
    seed: int = 0,
    tick: Tick | None = None,
) -> Verification:
    """Load the patched model from `root` and compare it with `audited` on `test`."""
    patched = load_clip(root, device=str(audited.device), seed=seed)
    head = audited.zero_shot_head(test.classes, test.templates)  # the text tower is unchanged
    comparisons = tuple(
        Comparison(
            trigger=c.trigger,
            target=c.target_name,
            source=c.source,
            before=_metrics(audited, test, head, c),
            after=_metrics(patched, test, head, c),
        )
        for c in checks
    )
    redetection = invert.detect(
        patched,
        test.images,
        classes=test.classes,
        templates=test.templates,
        labelled=test.labels_given,
        policy=_every_image_held_out(policy, len(test.images)),
        seed=seed,
        tick=tick,
    ).detection
    reasons = _reasons(comparisons, redetection.verdict, policy)
    return Verification(
        weights_sha256=hashlib.sha256((root / WEIGHTS_NAME).read_bytes()).hexdigest(),
        test_images=len(test.images),
        accuracy_kind="clean accuracy" if test.labelled else "agreement",
        comparisons=comparisons,
        redetection=redetection,
        passed=not reasons,
        reasons=reasons,
    )


def _every_image_held_out(policy: Policy, images: int) -> DetectionPolicy:
    """The re-audit scores its candidates on every test image it does not optimize on: the same
    share the thresholds were calibrated for, measured on several times the audit's held-out
    probes, so a removed backdoor is not refused for the noise of a 64-image estimate."""
    det = policy.detection
    return dataclasses.replace(
        det, holdout_images=max(det.holdout_images, images - det.probe_images)
    )


def _metrics(clip: ClipHandle, test: VerifySplit, head: torch.Tensor, check: Check) -> Metrics:
    x, y = test.images, test.labels
    return Metrics(
        clean_accuracy=round(clean_accuracy(clip, x, y, head), 4),
        attack_success=round(attack_success(clip, x, y, head, check.stamp, check.target), 4),
    )


def _reasons(
    comparisons: Sequence[Comparison], redetected: Verdict, policy: Policy
) -> tuple[str, ...]:
    un = policy.unlearning
    out = []
    for c in comparisons:
        if c.after.attack_success > un.max_attack_success:
            out.append(
                f"{c.source} trigger still works: attack success {c.after.attack_success:.1%} "
                f"> {un.max_attack_success:.1%} on the test split"
            )
    before = comparisons[0].before.clean_accuracy if comparisons else 0.0
    after = comparisons[0].after.clean_accuracy if comparisons else 0.0
    if after < un.min_retention * before:
        out.append(
            f"clean accuracy fell from {before:.1%} to {after:.1%} "
            f"(< {un.min_retention:.0%} retained) on the test split"
        )
    if redetected is Verdict.FAIL:
        out.append("the re-audit of the patched model still finds a backdoor")
    return tuple(out)
