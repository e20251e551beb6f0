"""Runs the stages in order and times them; the only caller of the stages.

Owns the order (fetch -> scan -> load -> invert, and later unlearn -> verify -> publish), the
timings, the RunReport and the run directory (report.json and the estimated triggers, each file
written atomically). Must not render output itself (report.py draws it; this module only writes
what report.py and figures.py return) or parse the command line (cli.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hubscan import __version__, audit_cache, report
from hubscan.atomic import write_text_atomic
from hubscan.errors import ProbeError, UsageError
from hubscan.fetch import fetch_snapshot, parse_ref
from hubscan.policy import DetectionPolicy, Policy
from hubscan.records import Evaluation, RunReport, Timing, TriggerArtifact, Verdict
from hubscan.scan import scan_snapshot

if TYPE_CHECKING:
    import torch

    from hubscan import invert
    from hubscan.model import ClipHandle
    from hubscan.probes import LabelSet
    from hubscan.trigger_base import Trigger

Progress = Callable[[str], None]  # told the name of each stage as it starts
Tick = Callable[[int], None]  # told how many steps of a long stage just finished
Bars = Callable[[str, int], Tick]  # told a long stage's name and total steps; returns its tick
REPORT_NAME = "report.json"
COMMIT = re.compile(r"[0-9a-f]{40}")
STAMPED_IN_PNG = 4  # probe images shown stamped beside each estimated trigger


@contextmanager
def timed(stage: str, timings: list[Timing], progress: Progress | None) -> Iterator[None]:
    if progress is not None:
        progress(stage)
    start = time.perf_counter()
    yield
    timings.append(Timing(stage=stage, seconds=round(time.perf_counter() - start, 4)))


def scan(
    ref: str,
    *,
    policy: Policy,
    offline: bool | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Fetch `ref` pinned to one commit and scan its files statically."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    timings: list[Timing] = []
    repo_ref = parse_ref(ref)
    with timed("fetch", timings, progress):
        snapshot = fetch_snapshot(
            repo_ref, policy=policy, offline=offline, endpoint=endpoint, cache_dir=cache_dir
        )
    with timed("scan", timings, progress):
        report = scan_snapshot(snapshot, policy=policy)
    return RunReport(
        tool_version=__version__,
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        fail_on=policy.fail_on,
        started=started,
        verdict=report.verdict(policy.fail_on),
        timings=tuple(timings),
        scan=report,
    )


def evaluate(
    ref: str,
    *,
    policy: Policy,
    labels: str,
    probes: str,
    trigger: str | None = None,
    target: str | None = None,
    offline: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Evaluation:
    """Scan, then load `ref` and measure clean accuracy (and attack success with a trigger)."""
    # torch-backed modules are imported here, not at the top: `hubscan scan` never loads torch.
    from hubscan.metrics import attack_success, clean_accuracy
    from hubscan.model import load_clip, refuse_if_blocked
    from hubscan.probes import load_labels, load_probes
    from hubscan.triggers import parse_trigger

    start = time.perf_counter()
    check_device(device)
    label_set = load_labels(labels)
    stamp = parse_trigger(trigger).apply if trigger is not None else None
    index = target_index(label_set.classes, target, stamp is not None)
    probe_set = load_probes(probes, labels=label_set)
    if probe_set.labels is None:
        raise ProbeError(f"the probes {probes!r} have no labels: accuracy needs labelled images")
    run = scan(ref, policy=policy, offline=offline)
    refuse_if_blocked(run.scan, policy.fail_on)
    clip = load_clip(run.scan.snapshot.root, device=device, seed=seed)
    head = clip.zero_shot_head(label_set.classes, label_set.templates)
    asr = None
    if stamp is not None and index is not None:
        asr = attack_success(clip, probe_set.images, probe_set.labels, head, stamp, index)
    return Evaluation(
        repo_id=run.scan.snapshot.repo_id,
        commit=run.scan.snapshot.commit,
        labels=label_set.name,
        probes=probe_set.source,
        n_probes=len(probe_set),
        clean_accuracy=clean_accuracy(clip, probe_set.images, probe_set.labels, head),
        trigger=trigger,
        target=target,
        attack_success=asr,
        seconds=round(time.perf_counter() - start, 3),
    )


def audit(
    ref: str,
    *,
    policy: Policy,
    labels: str | None = None,
    probes: str = "default",
    offline: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
    out: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    bars: Bars | None = None,
) -> RunReport:
    """Scan `ref`, load it, and search it for a backdoor by trigger inversion: the gate.

    `labels` (a label set name or file) gives the candidate targets; None searches the policy's
    vocabulary instead (label-free: the suspected target is the nearest concept). The probes need
    no labels. The verdict is FAIL when the scan blocks loading (then nothing is loaded) or a
    backdoor is suspected, NO_VERDICT when no weights were scanned. With `out`, the run directory
    gets trigger-<family>.safetensors and .png per searched family, then report.json.

    With `use_cache`, a finished audit of the same commit with the same policy, hubscan version
    and inputs is read back from the audit cache instead of probed again; a ref pinned to a
    commit is looked up before anything is fetched.
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    check_device(device)
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    # A ref pinned to a commit is looked up first: a cache hit needs no download and no torch.
    keyed = _AuditInputs.of(policy, labels, probes, seed, device) if use_cache else None
    pinned = _pinned(ref)
    early = None if keyed is None or pinned is None else keyed.key(*pinned)
    if early is not None and (hit := _cached_run(early, out, None)) is not None:
        return hit
    from hubscan.model import load_clip, refuse_if_blocked

    timings: list[Timing] = []
    with timed("probes", timings, progress):
        label_set, images = _detection_inputs(labels, probes, policy.detection, seed)
    run = scan(ref, policy=policy, offline=offline, progress=progress)
    timings += run.timings
    run = dataclasses.replace(run, started=started, timings=tuple(timings))
    if run.verdict is not Verdict.PASS:  # blocked, or no weights: there is nothing to load
        return _finish(run, out)
    refuse_if_blocked(run.scan, policy.fail_on)
    snap = run.scan.snapshot
    key = None if keyed is None or snap.commit is None else keyed.key(snap.repo_id, snap.commit)
    if key is not None and early is None and (hit := _cached_run(key, out, run)) is not None:
        return hit
    with timed("load", timings, progress):
        clip = load_clip(run.scan.snapshot.root, device=device, seed=seed)
    with timed("detect", timings, progress):
        outcome = detect(clip, images, label_set, labels is not None, policy, seed, bars)
    detection = outcome.detection
    if out is not None:
        (out / REPORT_NAME).unlink(missing_ok=True)  # a stale report must not describe new files
        with timed("write", timings, progress):
            artifacts = _write_triggers(out, outcome.estimates, images[:STAMPED_IN_PNG])
        detection = dataclasses.replace(detection, triggers=artifacts)
    verdict = Verdict.FAIL if detection.verdict is Verdict.FAIL else Verdict.PASS
    run = _finish(
        dataclasses.replace(run, verdict=verdict, timings=tuple(timings), detection=detection),
        out,
    )
    if key is not None:
        audit_cache.store(key, run, out)
    return run


@dataclasses.dataclass(frozen=True)
class _AuditInputs:
    """What besides the commit decides an audit's result: the parts of its cache key. The label
    set and probes are keyed by the bytes they are read from (audit_cache.inputs_sha256), so a
    cache hit needs neither torch nor the probe images decoded."""

    policy: Policy
    inputs_sha256: str
    seed: int
    device: str

    @classmethod
    def of(
        cls, policy: Policy, labels: str | None, probes: str, seed: int, device: str
    ) -> _AuditInputs:
        return cls(policy, audit_cache.inputs_sha256(labels, probes), seed, device)

    def key(self, repo_id: str, commit: str) -> audit_cache.AuditKey:
        return audit_cache.AuditKey(
            repo_id=repo_id,
            commit=commit,
            policy_sha256=self.policy.sha256,
            fail_on=self.policy.fail_on.label,
            tool_version=__version__,
            inputs_sha256=self.inputs_sha256,
            seed=self.seed,
            device=self.device,
        )


def _pinned(ref: str) -> tuple[str, str] | None:
    """(repo id, commit) when `ref` names a Hub commit: its audit can be found before fetching."""
    parsed = parse_ref(ref)
    revision = parsed.revision
    if parsed.local_path is not None or revision is None or not COMMIT.fullmatch(revision):
        return None
    return parsed.repo_id, revision


def _cached_run(
    key: audit_cache.AuditKey, out: Path | None, scanned: RunReport | None
) -> RunReport | None:
    """The cached audit for `key`, its trigger files copied into `out`; None on a miss. With a
    fresh scan at hand, a cached run whose files hashed differently is a miss too."""
    cached = audit_cache.lookup(key, with_triggers=out is not None)
    if cached is None or cached.detection is None:
        return None
    if scanned is not None and _digests(cached) != _digests(scanned):
        return None
    if out is not None:
        (out / REPORT_NAME).unlink(missing_ok=True)
        audit_cache.copy_triggers(cached.detection.triggers, audit_cache.entry_dir(key), out)
    return _finish(dataclasses.replace(cached, cached=True), out)


def _digests(run: RunReport) -> dict[str, str | None]:
    return {f.path: f.sha256 for f in run.scan.snapshot.files}


def detect(
    clip: ClipHandle,
    images: torch.Tensor,
    label_set: LabelSet,
    labels_given: bool,
    policy: Policy,
    seed: int,
    bars: Bars | None,
) -> invert.Outcome:
    """invert.detect with a progress bar sized by the search's planned steps (audit and patch)."""
    from hubscan import invert
    from hubscan.search import planned_steps

    det = policy.detection
    total = len(det.families) * planned_steps(len(label_set.classes), det)
    return invert.detect(
        clip,
        images,
        classes=label_set.classes,
        templates=label_set.templates,
        labelled=labels_given,
        policy=det,
        seed=seed,
        tick=None if bars is None else bars("trigger inversion", total),
    )


def _detection_inputs(
    labels: str | None, probes: str, det: DetectionPolicy, seed: int
) -> tuple[LabelSet, torch.Tensor]:
    """The candidate classes and the probe images, checked before anything is downloaded."""
    from hubscan.probes import concept_labels, load_labels, load_probes

    label_set = concept_labels(det.vocabulary) if labels is None else load_labels(labels)
    need = det.probe_images + det.holdout_images
    # Detection reads no probe labels, so a labelled folder need not match the label set.
    probe_set = load_probes(probes, limit=need, seed=seed)
    if len(probe_set) < need:
        raise ProbeError(
            f"{len(probe_set)} probe images in {probe_set.source}; detection needs {need} "
            f"({det.probe_images} to invert, {det.holdout_images} held out)"
        )
    return label_set, probe_set.images


def _write_triggers(
    out: Path, estimates: Mapping[str, Trigger], images: torch.Tensor
) -> tuple[TriggerArtifact, ...]:
    """Each estimate as safetensors, then its PNG drawn from what the file holds."""
    from hubscan.estimates import load_estimate, save_estimate
    from hubscan.figures import render_trigger_png

    artifacts = []
    for family, estimate in estimates.items():
        tensors, png = f"trigger-{family}.safetensors", f"trigger-{family}.png"
        save_estimate(out / tensors, estimate)
        render_trigger_png(load_estimate(out / tensors), out / png, images=images)
        digest = hashlib.sha256((out / tensors).read_bytes()).hexdigest()
        artifacts.append(TriggerArtifact(family=family, tensors=tensors, png=png, sha256=digest))
    return tuple(artifacts)


def _finish(run: RunReport, out: Path | None) -> RunReport:
    """report.json goes last: its presence says the run directory is complete."""
    if out is not None:
        write_text_atomic(out / REPORT_NAME, report.render_json(run))
    return run


def target_index(classes: tuple[str, ...], target: str | None, has_trigger: bool) -> int | None:
    if has_trigger != (target is not None):
        raise UsageError("--trigger and --target go together")
    if target is None:
        return None
    if target not in classes:
        raise UsageError(f"--target {target!r} is not in the label set ({', '.join(classes)})")
    return classes.index(target)


def check_device(device: str) -> None:
    if device == "cpu":
        return
    import torch

    if not device.startswith("cuda"):
        raise UsageError(f"--device {device!r}: use cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here")
