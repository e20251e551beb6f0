"""The policy schema: every key a policy file may hold, with the check of its type and range.

Owns validation only: `validate` walks raw TOML data against SCHEMA and collects every problem
(unknown keys, wrong types, out-of-range values) instead of stopping at the first. Must not read
files or build Policy objects (policy.py does both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hubscan.codes import CODES
from hubscan.records import Severity

FAMILIES = ("patch", "blend", "warp")  # the trigger shapes invert.py searches (METHOD.md §3)
# How unlearn.py learns the trigger vector (METHOD.md §4).
VARIANTS = ("contrast", "fisher", "paper", "mixed")

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


def _variant(value: Any, key: str, problems: list[str]) -> Any:
    if value not in VARIANTS:
        problems.append(f"{key}: expected one of {', '.join(VARIANTS)}, got {value!r}")
    return value


def _bool(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, bool):
        problems.append(f"{key}: expected true or false")
    return value


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


def _dampings(value: Any, key: str, problems: list[str]) -> Any:
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1e6 for v in value
        )
    )
    if not ok:
        problems.append(f"{key}: expected a non-empty list of numbers in [0, 1e6]")
        return (0.0,)
    return tuple(sorted({float(v) for v in value}))


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
        "anneal": _float(1.0, 100.0),
        "keep": _int(1, 1_000),
        "probe_images": _int(1, 100_000),
        "holdout_images": _int(8, 100_000),
        "refine_batch": _int(1, 100_000),
        "steps": _int(1, 1_000_000),
        "success_share": _float(0.5, 1.0),
        "max_clean_share": _float(0.1, 1.0),
        "max_seconds": _int(1, 7 * 24 * 3600),
        "anomaly_index": _float(0.0, 1e3),
        "thresholds": _thresholds,
        "vocabulary": _globs,
    },
    "unlearning": {
        "variant": _variant,
        "fisher_dampings": _dampings,
        "soft_trigger": _bool,
        "soft_estimate": _bool,
        "estimate_gain": _float(0.1, 10.0),
        "estimate_anchor": _float(0.0, 10.0),
        "refit_steps": _int(0, 100_000),
        "refit_images": _int(1, 100_000),
        "refit_share": _float(0.05, 1.0),
        "steps": _int(1, 1_000_000),
        "batch": _int(1, 100_000),
        "lr": _float(1e-9, 1.0),
        "coef_step": _float(1e-3, 100.0),
        "coef_max": _float(1e-3, 1_000.0),
        "refine": _int(0, 20),
        "clean_floor": _float(0.5, 1.0),
        "asr_tolerance": _float(0.0, 1.0),
        "probe_images": _int(30, 1_000_000),
        "max_attack_success": _float(0.0, 1.0),
        "min_retention": _float(0.0, 1.0),
    },
}


def validate(
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
                out[key] = validate(raw[key], rule, dotted + ".", problems)
            else:
                problems.append(f"{dotted}: expected a table")
        else:
            out[key] = rule(raw[key], dotted, problems)
    return out
