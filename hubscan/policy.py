"""Policies: TOML files in policies/ (bundled) or given by path -> a frozen, validated Policy.

Owns reading and building. A policy is data, never code: read with tomllib, every key checked
against policy_schema.SCHEMA; unknown keys, wrong types and out-of-range values are collected and
raised together as one PolicyError (exit 3). `extends = "NAME"` layers a policy over a bundled one.
Must not import anything beyond the standard library and hubscan's foundation modules.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from hubscan.codes import CODES
from hubscan.errors import PolicyError
from hubscan.policy_schema import SCHEMA, validate
from hubscan.records import Severity

GlobalTable = tuple[tuple[str, tuple[str, ...]], ...]  # (module, names); "*" = every name
Rule = Literal["deny", "allow", "unknown"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_files: int
    max_file_bytes: int
    max_download_bytes: int
    max_config_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePatterns:
    download: tuple[str, ...]  # what a Hub scan downloads
    safetensors: tuple[str, ...]
    pickle: tuple[str, ...]
    other_weights: tuple[str, ...]
    code: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetensorsPolicy:
    max_header_bytes: int
    dtypes: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class PicklePolicy:
    max_pickle_bytes: int
    max_opcodes: int
    max_zip_members: int
    max_member_bytes: int
    allow: GlobalTable
    deny: GlobalTable

    def classify(self, module: str, name: str) -> Rule:
        """Deny wins over allow; a global on neither list is 'unknown'."""
        if _table_matches(self.deny, module, name, prefix=True):
            return "deny"
        if _table_matches(self.allow, module, name, prefix=False):
            return "allow"
        return "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionPolicy:
    """Budgets and thresholds of trigger inversion (METHOD.md §3); see policies/default.toml."""

    families: tuple[str, ...]
    patch_area: float  # budgets: the largest trigger of each shape the search may try
    blend_linf: float
    warp_pixels: float
    screen_images: int
    screen_batch: int
    screen_steps: int
    anneal: float  # the first screening round starts at this multiple of each budget
    keep: int
    probe_images: int
    holdout_images: int
    refine_batch: int  # probe images per refinement step, drawn afresh each step
    steps: int
    success_share: float
    max_clean_share: float
    max_seconds: int
    anomaly_index: float
    thresholds: tuple[tuple[str, float], ...]  # family -> held-out share at or above = flagged
    vocabulary: tuple[str, ...]  # concepts for label-free runs (the nearest one is reported)

    def threshold(self, family: str) -> float:
        return dict(self.thresholds)[family]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlearningPolicy:
    """TBAR's budgets, coefficient grid and the bars the patch must pass (METHOD.md §4)."""

    variant: str  # contrast | fisher | paper | mixed (unlearn.py)
    fisher_dampings: tuple[float, ...]  # fisher: the λ tried, ascending (τ / (1 + λ·F/mean F))
    soft_trigger: bool  # stamp a known trigger on the tune images at a random strength
    soft_estimate: bool  # stamp an estimated trigger at a random strength
    estimate_gain: float  # an estimated trigger's strength is multiplied by this (images clamped)
    estimate_anchor: float  # clean target images in an estimate's fine-tunes, per stamped one
    refit_steps: int  # an estimate's size-penalized refit before TBAR (0: removed as found)
    refit_images: int  # tune images per refit step
    refit_share: float  # the share of them the refit keeps sending to the target
    steps: int  # AdamW steps per fine-tune
    batch: int
    lr: float
    coef_step: float  # the grid: coef_step, 2·coef_step, ... coef_max
    coef_max: float
    refine: int  # halvings of the step around the best coefficient
    clean_floor: float  # kappa: keep at least this share of the audited model's val accuracy
    asr_tolerance: float  # the smallest coefficient within this of the lowest attack success
    probe_images: int  # labelled probes split 40/30/30 into tune / val / test
    max_attack_success: float  # verification: test-split attack success after, at most
    min_retention: float  # verification: test-split clean accuracy after / before, at least


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    name: str
    source: str  # "bundled:default" or the file path
    sha256: str  # of the policy file bytes (and its bases, for `extends`)
    fail_on: Severity
    limits: Limits
    files: FilePatterns
    safetensors: SafetensorsPolicy
    pickle: PicklePolicy
    severity_overrides: tuple[tuple[str, Severity], ...]
    detection: DetectionPolicy
    unlearning: UnlearningPolicy

    def severity_of(self, code: str) -> Severity:
        for overridden, severity in self.severity_overrides:
            if overridden == code:
                return severity
        return CODES[code].severity


def _table_matches(table: GlobalTable, module: str, name: str, *, prefix: bool) -> bool:
    for mod, names in table:
        if mod == module and ("*" in names or name in names):
            return True
        # A denied module with "*" covers its submodules: "os" denies "os.path.join".
        if prefix and "*" in names and module.startswith(mod + "."):
            return True
    return False


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """Glob on the file name (case-insensitive), as the policy's patterns are written."""
    name = path.rsplit("/", 1)[-1].lower()
    return any(fnmatchcase(name, p.lower()) for p in patterns)


def bundled_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[:-5] for p in _bundled_dir().iterdir() if p.name.endswith(".toml")))


def _bundled_dir() -> Path:
    # In a wheel, policies/ is installed as hubscan/policies; in a source checkout (editable
    # install) it sits at the repository root beside the package.
    packaged = importlib.resources.files("hubscan") / "policies"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "policies"


def load_policy(spec: str | Path = "default") -> Policy:
    """A bundled policy by name ("default", "strict", ...) or a TOML file by path."""
    path, source = _locate(spec)
    raw, digest = _read_layers(path, source, seen=())
    return _build(raw, source=source, digest=digest)


def _locate(spec: str | Path) -> tuple[Path, str]:
    text = str(spec)
    if "/" not in text and "\\" not in text and not text.endswith(".toml"):
        path = _bundled_dir() / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(bundled_names())
            raise PolicyError(f"'{text}'", [f"no bundled policy of that name (have: {known})"])
        return path, f"bundled:{text}"
    return Path(text), text


def _read_layers(path: Path, source: str, *, seen: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PolicyError(source, [f"cannot read: {err.strerror or err}"]) from err
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise PolicyError(source, [f"not valid TOML: {err}"]) from err
    digest = hashlib.sha256(data).hexdigest()
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw, digest
    if not isinstance(base_name, str) or base_name in seen:
        raise PolicyError(source, [f"extends: must name another bundled policy, got {base_name!r}"])
    base_path, base_source = _locate(base_name)
    base, base_digest = _read_layers(base_path, base_source, seen=(*seen, base_name))
    combined = hashlib.sha256((base_digest + digest).encode()).hexdigest()
    return _merge(base, raw), combined


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(raw: Mapping[str, Any], *, source: str, digest: str) -> Policy:
    problems: list[str] = []
    v = validate(raw, SCHEMA, "", problems)
    if problems:
        raise PolicyError(source, problems)
    return Policy(
        name=v["name"],
        source=source,
        sha256=digest,
        fail_on=v["fail_on"],
        limits=Limits(**v["limits"]),
        files=FilePatterns(download=v["fetch"]["download"], **v["files"]),
        safetensors=SafetensorsPolicy(**v["safetensors"]),
        pickle=PicklePolicy(**v["pickle"]),
        severity_overrides=v["severity"],
        detection=DetectionPolicy(**v["detection"]),
        unlearning=UnlearningPolicy(**v["unlearning"]),
    )


def with_fail_on(policy: Policy, fail_on: Severity) -> Policy:
    """A copy with another gate (for --fail-on); the policy file itself is unchanged."""
    return replace(policy, fail_on=fail_on)
