"""Runs the stages in order and times them; the only caller of the stages.

Owns the order (fetch -> scan, and later load -> invert -> unlearn -> verify -> publish), the
timings and the RunReport. Must not render output (report.py) or parse the command line (cli.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from hubscan import __version__
from hubscan.errors import ProbeError, UsageError
from hubscan.fetch import fetch_snapshot, parse_ref
from hubscan.policy import Policy
from hubscan.records import Evaluation, RunReport, Timing
from hubscan.scan import scan_snapshot

Progress = Callable[[str], None]  # told the name of each stage as it starts


@contextmanager
def _timed(stage: str, timings: list[Timing], progress: Progress | None) -> Iterator[None]:
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
    with _timed("fetch", timings, progress):
        snapshot = fetch_snapshot(
            repo_ref, policy=policy, offline=offline, endpoint=endpoint, cache_dir=cache_dir
        )
    with _timed("scan", timings, progress):
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
    _check_device(device)
    label_set = load_labels(labels)
    stamp = parse_trigger(trigger).apply if trigger is not None else None
    target_index = _target_index(label_set.classes, target, stamp is not None)
    probe_set = load_probes(probes, labels=label_set)
    if probe_set.labels is None:
        raise ProbeError(f"the probes {probes!r} have no labels: accuracy needs labelled images")
    run = scan(ref, policy=policy, offline=offline)
    refuse_if_blocked(run.scan, policy.fail_on)
    clip = load_clip(run.scan.snapshot.root, device=device, seed=seed)
    head = clip.zero_shot_head(label_set.classes, label_set.templates)
    asr = None
    if stamp is not None and target_index is not None:
        asr = attack_success(clip, probe_set.images, probe_set.labels, head, stamp, target_index)
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


def _target_index(classes: tuple[str, ...], target: str | None, has_trigger: bool) -> int | None:
    if has_trigger != (target is not None):
        raise UsageError("--trigger and --target go together")
    if target is None:
        return None
    if target not in classes:
        raise UsageError(f"--target {target!r} is not in the label set ({', '.join(classes)})")
    return classes.index(target)


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise UsageError(f"--device {device!r}: use cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here")
