"""The gate over many models: `hubscan audit --models FILE`.

Owns the models file format (a `models.lock`: one `org/name@<40-hex commit>` per line, `#`
comments and blank lines allowed), running one audit per model with shared inputs, and folding the
results into one BatchReport. A model whose audit fails (a Hub error, unloadable weights) becomes
a result with its one-line error and exit code; the other models are still audited. Interrupts
and internal errors are not caught.

Must not render anything (report_batch.py does) or parse the command line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hubscan import __version__, pipeline
from hubscan.errors import ExitCode, HubscanError, LockFileError
from hubscan.policy import Policy
from hubscan.records import BatchReport, ModelResult, Verdict

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_LOCK_LINE = re.compile(rf"(?P<repo>{_PART}/{_PART})@(?P<commit>[0-9a-f]{{40}})")
_MAX_LOCK_BYTES = 1 << 20
_MAX_MODELS = 1000
_EXIT = {Verdict.PASS: ExitCode.OK, Verdict.FAIL: ExitCode.FINDINGS}

Started = Callable[[int, int, str], None]  # told (index, total, ref) as each model starts


@dataclass(frozen=True, slots=True)
class LockEntry:
    line: int
    ref: str  # org/name@commit


def read_models_file(path: Path) -> tuple[LockEntry, ...]:
    """Every model of a models.lock; any bad line is an error that names it (nothing is audited
    from a file that is not understood)."""
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_LOCK_BYTES + 1)
    except OSError as err:
        raise LockFileError(f"cannot read models file {path}: {err.strerror or err}") from err
    if len(data) > _MAX_LOCK_BYTES:
        raise LockFileError(f"models file {path} is over {_MAX_LOCK_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LockFileError(f"models file {path} is not UTF-8 text") from err
    entries, problems, seen = [], [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if _LOCK_LINE.fullmatch(line) is None:
            problems.append(f"line {number}: {line[:80]!r} is not org/name@<40-hex commit sha>")
        elif line not in seen:
            seen.add(line)
            entries.append(LockEntry(line=number, ref=line))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise LockFileError(f"models file {path}: " + "; ".join(problems[:3]) + more)
    if not entries:
        raise LockFileError(f"models file {path} lists no models")
    if len(entries) > _MAX_MODELS:
        raise LockFileError(
            f"models file {path} lists {len(entries)} models; at most {_MAX_MODELS}"
        )
    return tuple(entries)


def audit_models(
    models_file: Path,
    *,
    policy: Policy,
    labels: str | None,
    probes: str,
    offline: bool | None,
    device: str,
    seed: int,
    out: Path | None,
    use_cache: bool,
    started: Started | None = None,
    progress: pipeline.Progress | None = None,
    bars: pipeline.Bars | None = None,
) -> BatchReport:
    """Audit every model of `models_file`; with `out`, each gets its run directory in it."""
    entries = read_models_file(models_file)
    began = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    results = []
    for index, entry in enumerate(entries):
        if started is not None:
            started(index, len(entries), entry.ref)
        try:
            run = pipeline.audit(
                entry.ref,
                policy=policy,
                labels=labels,
                probes=probes,
                offline=offline,
                device=device,
                seed=seed,
                out=None if out is None else out / run_dir_name(entry.ref),
                use_cache=use_cache,
                progress=progress,
                bars=bars,
            )
        except HubscanError as err:
            verdict = Verdict.FAIL if err.exit_code is ExitCode.FINDINGS else Verdict.NO_VERDICT
            results.append(
                ModelResult(
                    ref=entry.ref,
                    line=entry.line,
                    verdict=verdict,
                    exit_code=int(err.exit_code),
                    error=str(err),
                )
            )
            continue
        code = _EXIT.get(run.verdict, ExitCode.NO_VERDICT)
        results.append(
            ModelResult(
                ref=entry.ref, line=entry.line, verdict=run.verdict, exit_code=int(code), run=run
            )
        )
    return BatchReport(
        tool_version=__version__,
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        models_file=str(models_file),
        started=began,
        verdict=combined_verdict(r.verdict for r in results),
        results=tuple(results),
        seconds=round(time.perf_counter() - clock, 3),
    )


def combined_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """FAIL if any model fails the gate, else NO_VERDICT if any could not be judged, else PASS."""
    seen = set(verdicts)
    for verdict in (Verdict.FAIL, Verdict.NO_VERDICT):
        if verdict in seen:
            return verdict
    return Verdict.PASS


def run_dir_name(ref: str) -> str:
    """`org/name@<sha>` -> `org--name--<sha[:12]>`: a file-name-safe folder per lock entry."""
    repo, _, commit = ref.partition("@")
    return f"{repo.replace('/', '--')}--{commit[:12]}"
