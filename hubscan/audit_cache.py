"""The audit results cache: finished audits, keyed by everything that decides their result.

Owns the key (repo, commit, policy sha256, fail_on, hubscan version, a digest of what the label
set and the probe images are read from, the seed and the device), and storing and reading an
entry: report.json plus the run directory's trigger files, staged beside the entry and renamed
into place. The cache can
only save work, never change a result: an entry that cannot be read back whole, whose trigger
files do not match the sha256 its report gives, or that describes another repo or commit is a
miss, not an error, and a storing failure leaves the audit's own result untouched.

Must not run stages or render anything. Never stores a run without a verdict (a budget may have
run out on a loaded machine: the next run should try again) or without a detection (a scan that
blocked loading is cheap to redo). Only JSON is ever read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from hubscan.atomic import cache_root, file_sha256
from hubscan.jsonio import JsonShapeError, from_jsonable, to_jsonable
from hubscan.records import RunReport, TriggerArtifact, Verdict

ENTRY_VERSION = 1  # bump when an entry's layout or the key's meaning changes
REPORT_NAME = "report.json"
_MAX_REPORT_BYTES = 64 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditKey:
    repo_id: str
    commit: str  # 40-hex: only pinned snapshots are cached
    policy_sha256: str
    fail_on: str
    tool_version: str
    inputs_sha256: str  # the label set and probe images, by the bytes they are read from
    seed: int
    device: str

    @property
    def digest(self) -> str:
        blob = json.dumps({"entry_version": ENTRY_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def inputs_sha256(labels: str | None, probes: str) -> str:
    """A digest of the audit's inputs without reading them as images (so a cache hit costs no
    torch import): a label file or probe folder by its bytes, a built-in by its name (its
    content ships with this hubscan version, which is in the key too). Conservative: it hashes
    at least everything the probe reader may use, so a change can only cause a miss."""
    digest = hashlib.sha256()
    for kind, spec in (("labels", labels), ("probes", probes)):
        digest.update(f"{kind}\0{spec}\0".encode())
        if spec is not None and Path(spec).is_file():
            digest.update(_file_sha256(Path(spec)).encode())
        elif spec is not None and Path(spec).is_dir():
            digest.update(_folder_sha256(Path(spec)).encode())
    return digest.hexdigest()


def _folder_sha256(root: Path) -> str:
    """Every visible file under `root` by relative path and content; a symlink by its target."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            content = f"link:{os.readlink(path)}" if path.is_symlink() else _file_sha256(path)
            digest.update(f"{rel}\0{content}\0".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as err:  # unreadable now: the probe reader will say why; never a hit
        return f"unreadable:{err.errno}"


def audits_root() -> Path:
    """HUBSCAN_AUDIT_CACHE (e.g. a folder CI restores between runs), else <cache root>/audits."""
    env = os.environ.get("HUBSCAN_AUDIT_CACHE")
    return Path(env) if env else cache_root() / "audits"


def entry_dir(key: AuditKey, root: Path | None = None) -> Path:
    digest = key.digest
    return (root or audits_root()) / digest[:2] / digest


def lookup(key: AuditKey, *, with_triggers: bool, root: Path | None = None) -> RunReport | None:
    """The cached run for `key`, or None. `with_triggers`: a hit must also hold the estimated
    trigger files (the caller wants a run directory), checked against their sha256."""
    entry = entry_dir(key, root)
    run = _read_report(entry / REPORT_NAME)
    if run is None or run.detection is None or run.verdict is Verdict.NO_VERDICT:
        return None
    snapshot = run.scan.snapshot
    if (snapshot.repo_id, snapshot.commit) != (key.repo_id, key.commit):
        return None
    if with_triggers and not _triggers_intact(entry, run.detection.triggers):
        return None
    return run


def store(key: AuditKey, run: RunReport, run_dir: Path | None, root: Path | None = None) -> bool:
    """Cache `run` (and the trigger files it lists in `run_dir`); False when it was not stored."""
    if run.detection is None or run.verdict is Verdict.NO_VERDICT:
        return False
    final = entry_dir(key, root)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    except OSError:
        return False
    try:
        if run_dir is not None:
            copy_triggers(run.detection.triggers, run_dir, stage)
        (stage / REPORT_NAME).write_text(json.dumps(to_jsonable(run)), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)  # a stale or partial entry for the same key
        os.rename(stage, final)
    except OSError:
        return False  # a full disk or a concurrent writer: the audit's result stands regardless
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return True


def copy_triggers(triggers: tuple[TriggerArtifact, ...], source: Path, dest: Path) -> None:
    """Copy each artifact's safetensors and PNG from `source` to `dest` (both directories)."""
    dest.mkdir(parents=True, exist_ok=True)
    for artifact in triggers:
        for name in (artifact.tensors, artifact.png):
            shutil.copyfile(source / name, dest / name)


def _read_report(path: Path) -> RunReport | None:
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_REPORT_BYTES + 1)
        if len(data) > _MAX_REPORT_BYTES:
            return None
        return from_jsonable(RunReport, json.loads(data))
    except (OSError, ValueError, JsonShapeError):
        # JSONDecodeError and UnicodeDecodeError are ValueErrors: a torn or foreign file.
        return None


def _triggers_intact(entry: Path, triggers: tuple[TriggerArtifact, ...]) -> bool:
    if not triggers:
        return False
    for artifact in triggers:
        if not all(_plain_name(n) for n in (artifact.tensors, artifact.png)):
            return False
        tensors, png = entry / artifact.tensors, entry / artifact.png
        if not png.is_file() or not tensors.is_file():
            return False
        if hashlib.sha256(tensors.read_bytes()).hexdigest() != artifact.sha256:
            return False
    return True


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and Path(name).name == name
