"""Policies: TOML files in policies/ (bundled) or given by path -> a frozen, validated Policy.

Owns parsing and validation. A policy is data, never code: read with tomllib, every key checked
against the schema below; unknown keys, wrong types and out-of-range values are collected and
raised together as one PolicyError (exit 3). `extends = "NAME"` layers a policy over a bundled one.
Must not import anything beyond the standard library and hubscan's foundation modules.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from hubscan.codes import CODES
from hubscan.errors import PolicyError
from hubscan.records import Severity

GlobalTable = tuple[tuple[str, tuple[str, ...]], ...]  # (module, names); "*" = every name
Rule = Literal["deny", "allow", "unknown"]
FAMILIES = ("patch", "blend", "warp")  # the trigger shapes invert.py searches (METHOD.md §3)

SAFETENSORS_DTYPES = frozenset(
    {
        "F64",
        "F32",
        "F16",
        "BF16",
        "F8_E4M3",
        "F8_E5M2",
        "F8_E8M0",
        "F6_E2M3",
        "F6_E3M2",
        "F4",
        "I64",
        "I32",
        "I16",
        "I8",
        "U64",
        "U32",
        "U16",
        "U8",
        "BOOL",
        "C64",
    }
)


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
    keep: int
    probe_images: int
    holdout_images: int
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


# --- validation --------------------------------------------------------------------------------

Check = Callable[[Any, str, list[str]], Any]


def _int(lo: int, hi: int) -> Check:
    def check(value: Any, key: str, problems: list[str]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: expected an integer, got {type(value).__name__}")
        elif not lo <= value <= hi:
            problems.append(f"{key}: {value} is out of range [{lo}, {hi}]")
        return value

    return check


def _float(lo: float, hi: float) -> Check:
    def check(value: Any, key: str, problems: list[str]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: expected a number, got {type(value).__name__}")
        elif not lo <= value <= hi:
            problems.append(f"{key}: {value} is out of range [{lo}, {hi}]")
        return float(value) if isinstance(value, int | float) else value

    return check


def _families(value: Any, key: str, problems: list[str]) -> Any:
    names = _globs(value, key, problems)
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown or not names:
        problems.append(f"{key}: expected a non-empty list from {', '.join(FAMILIES)}")
    return names


def _thresholds(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, dict) or set(value) != set(FAMILIES):
        problems.append(f"{key}: expected one number per family ({', '.join(FAMILIES)})")
        return ()
    return tuple(
        (name, _float(0.01, 1.0)(value[name], f"{key}.{name}", problems)) for name in FAMILIES
    )


def _str(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value:
        problems.append(f"{key}: expected a non-empty string")
    return value


def _severity(value: Any, key: str, problems: list[str]) -> Any:
    names = ", ".join(s.label for s in Severity)
    if not isinstance(value, str) or value.upper() not in Severity.__members__:
        problems.append(f"{key}: expected one of {names}, got {value!r}")
        return Severity.CRITICAL
    return Severity.parse(value)


def _globs(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{key}: expected a list of glob strings")
        return ()
    return tuple(value)


def _dtypes(value: Any, key: str, problems: list[str]) -> Any:
    names = _globs(value, key, problems)
    unknown = sorted(set(names) - SAFETENSORS_DTYPES)
    if unknown:
        problems.append(f"{key}: unknown safetensors dtypes {unknown}")
    return frozenset(names)


def _global_table(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a table of module = [names]")
        return ()
    rows = []
    for module, names in value.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            problems.append(f'{key}.{module}: expected a list of global names (or ["*"])')
            continue
        rows.append((module, tuple(names)))
    return tuple(rows)


def _overrides(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a table of CODE = severity")
        return ()
    rows = []
    for code, level in value.items():
        if code not in CODES:
            problems.append(f"{key}.{code}: unknown finding code")
            continue
        rows.append((code, _severity(level, f"{key}.{code}", problems)))
    return tuple(rows)


GIB = 1 << 30
SCHEMA: dict[str, Any] = {
    "schema": _int(1, 1),
    "name": _str,
    "fail_on": _severity,
    "limits": {
        "max_files": _int(1, 10_000_000),
        "max_file_bytes": _int(1, 1 << 50),
        "max_download_bytes": _int(1, 1 << 50),
        "max_config_bytes": _int(1, GIB),
    },
    "fetch": {"download": _globs},
    "files": {
        "safetensors": _globs,
        "pickle": _globs,
        "other_weights": _globs,
        "code": _globs,
    },
    "safetensors": {"max_header_bytes": _int(8, 1 << 32), "dtypes": _dtypes},
    "pickle": {
        "max_pickle_bytes": _int(1, 1 << 40),
        "max_opcodes": _int(1, 1 << 40),
        "max_zip_members": _int(1, 10_000_000),
        "max_member_bytes": _int(1, 1 << 40),
        "allow": _global_table,
        "deny": _global_table,
    },
    "severity": _overrides,
    "detection": {
        "families": _families,
        "patch_area": _float(1e-4, 1.0),
        "blend_linf": _float(1e-4, 1.0),
        "warp_pixels": _float(1e-3, 64.0),
        "screen_images": _int(1, 10_000),
        "screen_batch": _int(1, 1_000_000),
        "screen_steps": _int(2, 10_000),
        "keep": _int(1, 1_000),
        "probe_images": _int(1, 100_000),
        "holdout_images": _int(8, 100_000),
        "steps": _int(1, 1_000_000),
        "success_share": _float(0.5, 1.0),
        "max_clean_share": _float(0.1, 1.0),
        "max_seconds": _int(1, 7 * 24 * 3600),
        "anomaly_index": _float(0.0, 1e3),
        "thresholds": _thresholds,
        "vocabulary": _globs,
    },
}


def _validate(
    raw: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, problems: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(raw) - set(schema)):
        problems.append(f"{prefix}{key}: unknown key")
    for key, rule in schema.items():
        dotted = f"{prefix}{key}"
        if key not in raw:
            problems.append(f'{dotted}: missing (or add `extends = "default"`)')
        elif isinstance(rule, dict):
            if isinstance(raw[key], dict):
                out[key] = _validate(raw[key], rule, dotted + ".", problems)
            else:
                problems.append(f"{dotted}: expected a table")
        else:
            out[key] = rule(raw[key], dotted, problems)
    return out


def _build(raw: Mapping[str, Any], *, source: str, digest: str) -> Policy:
    problems: list[str] = []
    v = _validate(raw, SCHEMA, "", problems)
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
    )


def with_fail_on(policy: Policy, fail_on: Severity) -> Policy:
    """A copy with another gate (for --fail-on); the policy file itself is unchanged."""
    return replace(policy, fail_on=fail_on)
