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
from hubscan.fetch import fetch_snapshot, parse_ref
from hubscan.policy import Policy
from hubscan.records import RunReport, Timing
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
