"""`hubscan patch`: audit, TBAR, verify, then a release directory (the pipeline's second half).

Owns the order of the removal stages and the release's contents: scan -> load -> (detect and
refit the estimate, or the user's known trigger) -> unlearn -> the patched weights written into
a staging directory -> verified from disk -> figures, model card, report.json -> the directory
moved into place.
Nothing is released unless verification passed; an interrupted or failed run leaves no release
directory (release.staged). Must not render terminal output or parse the command line.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hubscan import __version__, report_patch
from hubscan.atomic import write_text_atomic
from hubscan.errors import NotRemediated, ProbeError
from hubscan.pipeline import (
    REPORT_NAME,
    STAMPED_IN_PNG,
    Bars,
    Progress,
    check_device,
    detect,
    target_index,
    timed,
)
from hubscan.pipeline import scan as scan_ref
from hubscan.policy import Policy
from hubscan.records import CoefTrial, Patch, Release, ReleaseFile, RunReport, Timing, Verdict

if TYPE_CHECKING:
    import torch

    from hubscan.model import ClipHandle
    from hubscan.probes import LabelSet, ProbeSet
    from hubscan.trigger_base import Trigger
    from hubscan.vector import Task
    from hubscan.verify import Check

CARD_NAME = "README.md"
TRIGGER_NAME = "trigger.safetensors"  # an estimated trigger, loadable as inverted:file=...
_CARD_MAX_BYTES = 1_000_000  # a model card is read as text; a bigger one is not a card


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Inputs:
    """The loaded model and the three probe splits, labelled (or labelled by the model)."""

    clip: ClipHandle
    label_set: LabelSet
    labels_given: bool  # False: the head is the policy's vocabulary
    labelled: bool  # False: split labels are the audited model's predictions
    head: torch.Tensor
    splits: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (images, labels): tune, val, test


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Target:
    """The trigger TBAR removes (the user's, or the audit's estimate) and where it sends images."""

    trigger: Trigger
    spec: str  # how reports name it; an estimate by the file the release keeps it in
    target: int
    estimated: bool


def patch(
    ref: str,
    *,
    policy: Policy,
    out: Path,
    labels: str | None = None,
    probes: str = "default",
    trigger: str | None = None,
    target: str | None = None,
    estimate: bool = False,
    offline: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    bars: Bars | None = None,
) -> RunReport:
    """Remove a backdoor from `ref` and write a verified release to `out`.

    With `trigger` and `target` (known-trigger mode) TBAR removes that trigger; otherwise the
    audit's estimate of the flagged shape. `estimate=True` removes the estimate even when the
    true trigger is given, which is then only measured (the benchmark's estimated-trigger mode).
    A model the audit finds clean is not patched: verdict PASS, no release directory. Raises
    NotRemediated (exit 4) when no coefficient qualifies or verification fails.
    """
    from hubscan import release
    from hubscan.model import load_clip, refuse_if_blocked
    from hubscan.triggers import parse_trigger

    started = datetime.now(UTC).isoformat(timespec="seconds")
    check_device(device)
    release.check_out(out)  # before any work: a wrong --out fails now, not after a minute
    timings: list[Timing] = []
    with timed("probes", timings, progress):
        label_set = _label_set(labels, policy)
        known = parse_trigger(trigger) if trigger is not None else None
        known_target = target_index(label_set.classes, target, known is not None)
        probe_set = _probes(probes, label_set if labels is not None else None, policy, seed)
    run = scan_ref(ref, policy=policy, offline=offline, progress=progress)
    timings += run.timings
    run = dataclasses.replace(run, started=started)
    if run.verdict is not Verdict.PASS:  # blocked, or nothing to load
        return dataclasses.replace(run, timings=tuple(timings))
    refuse_if_blocked(run.scan, policy.fail_on)
    with timed("load", timings, progress):
        clip = load_clip(run.scan.snapshot.root, device=device, seed=seed)
        inputs = _inputs(clip, label_set, labels is not None, probe_set, policy, seed)
    if known is not None and known_target is not None and not estimate:
        removal = _Target(trigger=known, spec=known.spec, target=known_target, estimated=False)
    else:
        with timed("detect", timings, progress):
            run, found = _detect(run, inputs, policy, seed, bars)
        if found is None:  # the audit found nothing to remove: no release
            return dataclasses.replace(run, timings=tuple(timings))
        removal = _refit(found, inputs, policy, seed, (timings, progress, bars))
    measured = None if known is None or known_target is None else (known, known_target)
    return _remove(run, inputs, removal, measured, policy, out, seed, timings, progress, bars)


def _label_set(labels: str | None, policy: Policy) -> LabelSet:
    from hubscan.probes import concept_labels, load_labels

    return concept_labels(policy.detection.vocabulary) if labels is None else load_labels(labels)


def _probes(probes: str, label_set: LabelSet | None, policy: Policy, seed: int) -> ProbeSet:
    """The policy's number of probes; labelled when a label set is given and the probes have
    labels in it, else unlabelled (accuracy becomes agreement with the audited model)."""
    from hubscan.probes import load_probes

    probe_set = load_probes(
        probes, labels=label_set, limit=policy.unlearning.probe_images, seed=seed
    )
    if label_set is None:  # label-free: the head is the vocabulary, the probes' labels are moot
        probe_set = dataclasses.replace(probe_set, labels=None, classes=None)
    return probe_set


def _inputs(
    clip: ClipHandle,
    label_set: LabelSet,
    labels_given: bool,
    probe_set: ProbeSet,
    policy: Policy,
    seed: int,
) -> _Inputs:
    from hubscan.metrics import predict

    head = clip.zero_shot_head(label_set.classes, label_set.templates)
    parts = probe_set.split(seed=seed)
    need = policy.detection.probe_images + policy.detection.holdout_images
    if min(len(parts.tune), len(parts.test)) < need:  # both are audited
        raise ProbeError(
            f"{len(probe_set)} probe images in {probe_set.source} split into {len(parts.tune)} "
            f"tune / {len(parts.val)} val / {len(parts.test)} test; patching audits the tune and "
            f"test splits, which need {need} images each"
        )
    labelled = probe_set.labels is not None
    splits = tuple(
        (p.images, p.labels if p.labels is not None else predict(clip, p.images, head))
        for p in (parts.tune, parts.val, parts.test)
    )
    return _Inputs(
        clip=clip,
        label_set=label_set,
        labels_given=labels_given,
        labelled=labelled,
        head=head,
        splits=splits,
    )


def _detect(
    run: RunReport, inputs: _Inputs, policy: Policy, seed: int, bars: Bars | None
) -> tuple[RunReport, _Target | None]:
    """The audit, on the tune split (the test split stays unseen until verification)."""
    images, classes = inputs.splits[0][0], inputs.label_set.classes
    outcome = detect(inputs.clip, images, inputs.label_set, inputs.labels_given, policy, seed, bars)
    detection = outcome.detection
    run = dataclasses.replace(run, detection=detection)
    if detection.verdict is not Verdict.FAIL or detection.family is None:
        return run, None
    found = _Target(
        trigger=outcome.estimates[detection.family],
        spec=f"inverted:file={TRIGGER_NAME}",
        target=classes.index(detection.suspected_target),
        estimated=True,
    )
    return run, found


def _refit(
    found: _Target,
    inputs: _Inputs,
    policy: Policy,
    seed: int,
    shown: tuple[list[Timing], Progress | None, Bars | None],
) -> _Target:
    """The audit's estimate refit on the tune split to the smallest that still reaches the
    target (refit.py), timed as its own stage when there is one to refit; what TBAR then
    removes and the release keeps."""
    from hubscan import refit

    if not refit.applies(found.trigger, policy.unlearning):
        return found
    timings, progress, bars = shown
    tune, tune_y = inputs.splits[0]
    with timed("refit", timings, progress):
        tick = None if bars is None else bars("refit", policy.unlearning.refit_steps)
        trigger = refit.refit(
            inputs.clip,
            inputs.head,
            found.trigger,
            tune,
            tune_y,
            found.target,
            policy.unlearning,
            seed=seed,
            tick=tick,
        )
    return dataclasses.replace(found, trigger=trigger)


def _alpha_curves(patch: Patch) -> list[tuple[str, tuple[CoefTrial, ...]]]:
    """One curve per damping tried (a single one names the variant only)."""
    if len(patch.curves) == 1:
        return [(patch.variant, patch.trials)]
    return [(f"{patch.variant}, damping {c.damping:g}", c.trials) for c in patch.curves]


def _remove(
    run: RunReport,
    inputs: _Inputs,
    removal: _Target,
    measured: tuple[Trigger, int] | None,
    policy: Policy,
    out: Path,
    seed: int,
    timings: list[Timing],
    progress: Progress | None,
    bars: Bars | None,
) -> RunReport:
    from hubscan import release, unlearn, vector, verify
    from hubscan.estimates import save_estimate
    from hubscan.figures import render_alpha_png, render_trigger_png
    from hubscan.model import WEIGHTS_NAME

    classes = inputs.label_set.classes
    (tune, tune_y), (val, val_y), (test, test_y) = inputs.splits
    task = vector.Task(
        stamp=removal.trigger.apply,
        trigger=removal.spec,
        target=removal.target,
        target_name=classes[removal.target],
        estimated=removal.estimated,
        head=inputs.head,
        tune=tune,
        tune_labels=tune_y,
        val=val,
        val_labels=val_y,
        labelled=inputs.labelled,
    )
    with timed("unlearn", timings, progress):
        tick = None if bars is None else bars("TBAR", unlearn.planned_steps(policy.unlearning))
        try:
            removed = unlearn.remove(inputs.clip, task, policy.unlearning, seed=seed, tick=tick)
        except NotRemediated as err:
            err.run = dataclasses.replace(run, timings=tuple(timings))
            raise
    snapshot = run.scan.snapshot
    with release.staged(out) as stage:
        with timed("verify", timings, progress):
            release.write_weights(
                stage,
                removed.state,
                like=snapshot.root / WEIGHTS_NAME,
                metadata=_provenance(run, removed.patch.coef, task),
            )
            release.copy_config(stage, snapshot.root)
            verification = verify.verify(
                inputs.clip,
                stage,
                checks=_checks(task, measured, classes),
                test=verify.VerifySplit(
                    images=test,
                    labels=test_y,
                    labelled=inputs.labelled,
                    classes=classes,
                    templates=inputs.label_set.templates,
                    labels_given=inputs.labels_given,
                ),
                policy=policy,
                seed=seed,
            )
        run = dataclasses.replace(run, patch=removed.patch, verification=verification)
        if not verification.passed:
            reasons = "; ".join(verification.reasons)
            raise NotRemediated(f"the patch failed verification: {reasons}", run=run)
        with timed("release", timings, progress):
            if removal.estimated:
                save_estimate(stage / TRIGGER_NAME, removal.trigger)
            render_trigger_png(removal.trigger, stage / "trigger.png", images=test[:STAMPED_IN_PNG])
            render_alpha_png(
                _alpha_curves(removed.patch),
                stage / "alpha.png",
                title=f"TBAR on {snapshot.repo_id}: {task.trigger} -> {task.target_name}",
                floor=round(removed.patch.clean_floor * removed.patch.reference.clean_accuracy, 4),
                chosen=removed.patch.coef,
            )
            release.write_card(
                stage,
                original=_card(snapshot.root),
                # A Hub repo id; a local directory has none, its name is the best we have.
                base_model=snapshot.repo_id if snapshot.commit else Path(snapshot.repo_id).name,
                section=report_patch.card_section(run),
            )
            files = tuple(
                ReleaseFile(path=name, sha256=digest, size=(stage / name).stat().st_size)
                for name, digest in sorted(release.sha256_files(stage).items())
            )
        run = dataclasses.replace(
            run,
            timings=tuple(timings),
            verdict=Verdict.PASS,
            release=Release(root=out, files=files),
        )
        from hubscan import report

        write_text_atomic(stage / REPORT_NAME, report.render_json(run))
    return run


def _checks(
    task: Task, measured: tuple[Trigger, int] | None, classes: tuple[str, ...]
) -> tuple[Check, ...]:
    from hubscan.verify import Check

    source = "estimated" if task.estimated else "known"
    out = [
        Check(
            trigger=task.trigger,
            stamp=task.stamp,
            target=task.target,
            target_name=task.target_name,
            source=source,
        )
    ]
    if task.estimated and measured is not None:
        trig, idx = measured
        out.append(
            Check(
                trigger=trig.spec,
                stamp=trig.apply,
                target=idx,
                target_name=classes[idx],
                source="known",
            )
        )
    return tuple(out)


def _provenance(run: RunReport, coef: float, task: Task) -> dict[str, str]:
    snapshot = run.scan.snapshot
    return {
        "format": "pt",
        "hubscan_version": __version__,
        "source_repo": snapshot.repo_id,
        "source_commit": snapshot.commit or "",
        "policy": run.policy_name,
        "policy_sha256": run.policy_sha256,
        "tbar_coef": f"{coef:g}",
        "trigger": task.trigger,
        "trigger_source": "estimated" if task.estimated else "known",
        "target": task.target_name,
    }


def _card(root: Path) -> str | None:
    """The source model card's text, if it has a readable one (it is untrusted input)."""
    path = root / CARD_NAME
    if not path.is_file() or path.is_symlink() or path.stat().st_size > _CARD_MAX_BYTES:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
