"""Stage 2, the static scan: Snapshot -> ScanReport, without loading anything.

Owns the dispatch of files to scanners and the merge of their findings (always all of them: a
scanner's findings are never dropped because another had some). Bad input is a finding; only an
I/O failure is an error. Must NEVER import torch, open_clip or pickle (import-linter enforces it):
`hubscan scan` starts in well under a second and cannot deserialize what it scans.
"""

from __future__ import annotations

from hubscan.errors import FetchError
from hubscan.policy import Policy, matches
from hubscan.records import Finding, ScanReport, Skipped, Snapshot
from hubscan.scan.files import readable, scan_files
from hubscan.scan.pickle import scan_pickle_file
from hubscan.scan.safetensors import scan_safetensors

__all__ = ["scan_snapshot"]


def scan_snapshot(snapshot: Snapshot, *, policy: Policy) -> ScanReport:
    findings: list[Finding] = []
    scanned: list[str] = []
    skipped: list[Skipped] = []
    weights: list[str] = []
    try:
        findings.extend(scan_files(snapshot, policy=policy))
        for entry in snapshot.files:
            if not readable(entry):
                skipped.append(Skipped(path=entry.path, reason=_why_unread(entry.kind.value)))
                continue
            path = snapshot.path_of(entry)
            if matches(entry.path, policy.files.safetensors):
                findings.extend(scan_safetensors(path, entry.path, policy=policy))
                weights.append(entry.path)
            elif matches(entry.path, policy.files.pickle):
                findings.extend(scan_pickle_file(path, entry.path, policy=policy))
                weights.append(entry.path)
            scanned.append(entry.path)
    except OSError as err:
        raise FetchError(f"cannot read {err.filename or 'a file'}: {err.strerror or err}") from err
    return ScanReport(
        snapshot=snapshot,
        findings=tuple(sorted(findings, key=lambda f: (-f.severity, f.path, f.code, f.message))),
        scanned=tuple(scanned),
        skipped=tuple(skipped),
        weights_scanned=tuple(weights),
    )


def _why_unread(kind: str) -> str:
    return {
        "regular": "over the size cap",
        "link_escape": "symlink out of the snapshot",
        "special": "not a regular file",
        "remote": "not downloaded",
    }[kind]
