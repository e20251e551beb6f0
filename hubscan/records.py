"""Frozen records passed between pipeline stages.

Owns the data shapes only: fields are str/int/float/bool/Path/enums/tuples/records, so every record
serializes through `jsonio.to_jsonable`. Must never import torch or any third-party library;
tensors stay in files that records point to by path and sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path


class Severity(IntEnum):
    """Ordered, so `finding.severity >= policy.fail_on` is the gate."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, name: str) -> Severity:
        """'high' -> Severity.HIGH; raises KeyError on an unknown name."""
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


class SourceKind(Enum):
    HUB = "hub"  # resolved and downloaded through the Hub API
    CACHE = "cache"  # resolved from the local HF cache (offline)
    DIRECTORY = "directory"  # a plain local directory


class FileKind(Enum):
    REGULAR = "regular"  # a regular file inside the snapshot root (or its HF cache blob)
    LINK_ESCAPE = "link_escape"  # a symlink leading out of the snapshot root: never read
    SPECIAL = "special"  # fifo, socket, device: never read
    REMOTE = "remote"  # listed by the Hub but not downloaded (not needed, or over the size cap)


class Verdict(Enum):
    PASS = "pass"  # nothing at or above fail_on, and the weights were scanned
    FAIL = "fail"  # findings at or above fail_on
    NO_VERDICT = "no_verdict"  # nothing that could carry weights was scanned


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoRef:
    """What the user asked for: a Hub repo at a revision, or a local directory."""

    repo_id: str  # "org/name", or the directory path as given
    revision: str | None = None  # branch, tag or 40-hex sha; None = the default branch
    local_path: Path | None = None  # set for a local directory

    @property
    def display(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    path: str  # POSIX path relative to the snapshot root
    size: int  # bytes (for REMOTE: as the Hub reports it)
    kind: FileKind = FileKind.REGULAR
    sha256: str | None = None  # of the local bytes; None when not read (remote, too large, link)
    hub_sha256: str | None = None  # the Hub's LFS sha256 when it gives one
    link_target: str | None = None  # where a symlink points, for LINK_ESCAPE


@dataclass(frozen=True, slots=True, kw_only=True)
class HubFileScan:
    """The Hub's own security scan of one file (ClamAV, pickle import scan)."""

    path: str
    status: str  # "safe" | "unsafe" | "suspicious" | "caution" | "queued" | "unscanned" | "error"
    detail: str  # what the Hub said, one line


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    repo_id: str
    commit: str | None  # 40-hex commit sha; None for a plain local directory
    root: Path  # the snapshot directory; every read stays inside it (or its cache blobs)
    source: SourceKind
    files: tuple[FileEntry, ...]
    revision: str | None = None  # what the user asked for, before resolution
    truncated: bool = False  # the listing stopped at the policy's file-count cap
    hub_scans: tuple[HubFileScan, ...] = ()  # empty when offline or not reported
    hub_scans_done: bool | None = None  # None = unknown (offline or local)

    def path_of(self, entry: FileEntry) -> Path:
        return self.root / entry.path


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    code: str  # stable, e.g. "ST_OFFSETS_OVERLAP"; see codes.py and the README table
    severity: Severity
    path: str  # file path relative to the snapshot root ("" for the repo as a whole)
    message: str  # one sentence, no trailing period, no secrets
    scanner: str  # "safetensors" | "pickle" | "files" | "hub"


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    stage: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanReport:
    snapshot: Snapshot
    findings: tuple[Finding, ...]
    scanned: tuple[str, ...]  # files a scanner read in full
    skipped: tuple[Skipped, ...]  # files no scanner read, with why
    weights_scanned: tuple[str, ...]  # the subset of `scanned` that can carry weights

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def blocking(self, fail_on: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity >= fail_on)

    def verdict(self, fail_on: Severity) -> Verdict:
        if self.blocking(fail_on):
            return Verdict.FAIL
        if not self.weights_scanned:
            return Verdict.NO_VERDICT
        return Verdict.PASS


@dataclass(frozen=True, slots=True, kw_only=True)
class Confirmation:
    """Neural Cleanse's anomaly index over the screen's per-class success (label-aware check)."""

    target: str
    anomaly_index: float
    target_success: float
    median_success: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FamilyScore:
    """One trigger shape's result: the held-out share of probes its best candidate sends to
    `target` (the score), against the policy's threshold."""

    family: str  # "patch" | "blend" | "warp"
    score: float
    threshold: float
    flagged: bool
    target: str
    confirmation: Confirmation


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchBudget:
    passes: int  # image forward+backward passes
    forward_passes: int  # image forward-only passes
    seconds: float
    max_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerArtifact:
    family: str
    tensors: str  # safetensors path, relative to the run directory
    png: str
    sha256: str  # of the safetensors file


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """`hubscan audit`'s answer: FAIL = a backdoor is suspected."""

    verdict: Verdict
    family: str | None  # the flagged shape with the highest score over threshold
    suspected_target: str  # the class (or vocabulary concept) stamped probes land on
    target_share: float
    families: tuple[FamilyScore, ...]
    labels_given: bool  # False: the classes are the policy's vocabulary
    n_classes: int
    probe_images: int
    holdout_images: int
    budget: SearchBudget
    triggers: tuple[TriggerArtifact, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CoefTrial:
    """One TBAR coefficient tried on the val split."""

    coef: float
    clean_accuracy: float  # or agreement with the audited model (unlabelled probes)
    attack_success: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DampingCurve:
    """Every coefficient tried on the val split for one Fisher damping of the trigger vector."""

    damping: float
    trials: tuple[CoefTrial, ...]  # sorted by coefficient


@dataclass(frozen=True, slots=True, kw_only=True)
class Patch:
    """TBAR's edit: which trigger vector, the coefficient chosen by rule, and every trial."""

    variant: str  # how the trigger vector was learned (policy `unlearning.variant`)
    damping: float  # λ of the Fisher damping chosen with the coefficient (0: undamped)
    trigger: str  # the spec removed (a user's, or the audit's estimate)
    target: str
    estimated: bool  # True: the trigger came from the detector
    accuracy_kind: str  # "clean accuracy" | "agreement"
    clean_floor: float  # kappa: the chosen coefficient keeps at least this share of the reference
    coef: float
    chosen: CoefTrial
    reference: CoefTrial  # coefficient 0: the audited model on the val split
    trials: tuple[CoefTrial, ...]  # the chosen damping's, sorted by coefficient
    curves: tuple[DampingCurve, ...]  # every damping searched, ascending
    tune_images: int
    val_images: int
    steps: int
    vector_norm: float
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    clean_accuracy: float  # or agreement (see Verification.accuracy_kind)
    attack_success: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """One trigger's effect on the test split, before and after the patch."""

    trigger: str
    target: str
    source: str  # "estimated" | "known"
    before: Metrics
    after: Metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """The patched file, reloaded from disk, measured on a split TBAR never saw, and re-audited."""

    weights_sha256: str
    test_images: int
    accuracy_kind: str
    comparisons: tuple[Comparison, ...]
    redetection: Detection | None  # the audit of the patched model (None: not re-audited)
    passed: bool
    reasons: tuple[str, ...]  # why it failed; empty when it passed


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseFile:
    path: str  # relative to the release directory
    sha256: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    root: Path
    files: tuple[ReleaseFile, ...]  # every file but report.json, which lists them


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """Everything one run produced; the top of report.json."""

    tool_version: str
    policy_name: str
    policy_sha256: str
    fail_on: Severity
    started: str  # ISO 8601, UTC
    verdict: Verdict
    timings: tuple[Timing, ...]
    scan: ScanReport
    detection: Detection | None = None
    patch: Patch | None = None
    verification: Verification | None = None
    release: Release | None = None
    cached: bool = False  # read back from the audit results cache; `started` is the original run


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResult:
    """One model of `hubscan audit --models`: its run, or why there is none."""

    ref: str  # as the models file gives it
    line: int  # 1-based line in the models file
    verdict: Verdict
    exit_code: int  # what a single `hubscan audit REF` would have exited with
    run: RunReport | None = None
    error: str | None = None  # one line, when the audit raised


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchReport:
    """`hubscan audit --models FILE`: one combined report."""

    tool_version: str
    policy_name: str
    policy_sha256: str
    models_file: str
    started: str  # ISO 8601, UTC
    verdict: Verdict  # FAIL if any model fails, else NO_VERDICT if any has none, else PASS
    results: tuple[ModelResult, ...]
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """`hubscan eval`: clean accuracy and, with a trigger, attack success (METHOD.md §2)."""

    repo_id: str
    commit: str | None
    labels: str  # label set name or file
    probes: str  # probe set spec
    n_probes: int
    clean_accuracy: float
    trigger: str | None = None
    target: str | None = None
    attack_success: float | None = None  # among probes not of the target class
    seconds: float = 0.0
