"""`hubscan bench unlearning`: TBAR over built zoos -> benchmarks/unlearning.md|json + figures.

Owns the removal metrics over a population (METHOD.md §2, §4): per backdoored model, clean
accuracy and attack success of the true trigger on the test split before and after
- TBAR with the known trigger, with the `contrast` vector, its Fisher-damped form and the
  paper's own,
- TBAR with the trigger the audit estimated (the true trigger is only measured),
- two fine-tuning baselines on the same tune images and the same number of gradient steps:
  clean images with their true labels, and stamped images with their true labels (Neural
  Cleanse-style unlearning); each at a few learning rates, the rate chosen by TBAR's own rule on
  the val split (lowest attack success keeping clean accuracy >= kappa x the model's);
- the oracle: the attack's own vector, the backdoored model minus the zoo's clean base (the
  image tower's parameters), through TBAR's coefficient rule: an upper bound for any estimate;
plus the coefficient curves as figures. Must not change what it measures: TBAR goes through
pipeline_patch.patch exactly as `hubscan patch` does, baselines through vector.finetune.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from hubscan import __version__, pipeline_patch
from hubscan.atomic import file_sha256, write_text_atomic
from hubscan.bench_cache import cached
from hubscan.bench_references import (
    BASELINES,
    LABELS,
    Tick,
    baseline,
    oracle,
    trial_curve,
)
from hubscan.errors import NotRemediated, UsageError
from hubscan.jsonio import to_jsonable
from hubscan.model import WEIGHTS_NAME
from hubscan.policy import Policy
from hubscan.records import Comparison, RunReport

# `mixed` stays a policy choice but is left out of the benchmark's time budget: METHOD.md §4
# measured clean pairs mixed into the fine-tune as worse than the plain paper vector.
VARIANTS = ("contrast", "fisher", "paper")
BASE_MODEL = "base"  # the zoo's clean base, the oracle vector's start
# Hashed into every cached result's key: bump when a change alters what a method measures.
BENCH_VERSION = 1


def run_unlearning_bench(
    *,
    zoos: list[Path],
    out: Path,
    policy: Policy,
    command: str,
    tick: Tick | None,
    probes: str = "default",
) -> dict[str, Any]:
    """Every zoo's backdoored models, zoo after zoo; the page is rewritten after each model, so
    a run cut short shows what it measured, and a rerun (or one with another method) takes what
    was measured from the cache. `probes`: where every method's labelled probes come from (as
    `hubscan patch --probes`), up to the policy's `unlearning.probe_images`."""
    plans = [_plan(zoo) for zoo in zoos]
    splits = _splits(probes, policy)
    sections: list[dict[str, Any]] = [
        {**meta, "models": [], "complete": False} for meta, _ in plans
    ]
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hubscan-bench-") as scratch:
        for (meta, models), section in zip(plans, sections, strict=True):
            zoo = Path(meta["path"])
            for m in models:
                row = _model_row(zoo, m, policy, probes, Path(scratch), tick)
                section["models"].append(row)
                section["complete"] = len(section["models"]) == len(models)
                section["summary"] = _summary(section["models"])
                result = {
                    "command": command,
                    "hubscan": __version__,
                    "policy": policy.name,
                    "default_variant": policy.unlearning.variant,
                    "policy_sha256": policy.sha256,
                    "probes": probes,
                    "splits": splits,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "complete": all(s["complete"] for s in sections),
                    "zoos": [s for s in sections if s["models"]],
                }
                _write(out, result)
    return result


def _splits(probes: str, policy: Policy) -> dict[str, Any]:
    """Where the probes come from and the sizes of the splits every method uses (seed 0, as
    `hubscan patch` and the references split them)."""
    from hubscan.probes import load_labels, load_probes

    probe_set = load_probes(
        probes, labels=load_labels(LABELS), limit=policy.unlearning.probe_images, seed=0
    )
    parts = probe_set.split(seed=0)
    return {
        "source": probe_set.source,
        "tune": len(parts.tune),
        "val": len(parts.val),
        "test": len(parts.test),
    }


def _plan(zoo: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The zoo's description and its backdoored models, one model of each family first (a run
    cut short still covers every family)."""
    manifest_path = zoo / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        models = [m for m in manifest["models"] if m["kind"] == "backdoored"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"--zoo {zoo} has no readable manifest.json (build it with `hubscan zoo build`): {err}"
        ) from None
    firsts = {m["family"]: m["name"] for m in reversed(models)}
    models.sort(key=lambda m: m["name"] not in firsts.values())
    meta = {
        "zoo": zoo.name,
        "path": str(zoo),
        "tower": manifest.get("tower", "vit"),
        "quick": bool(manifest.get("quick", False)),
    }
    return meta, models


def _methods(policy: Policy) -> list[tuple[str, str | None]]:
    """(method, the TBAR variant it runs), in the page's column order."""
    return [
        *((f"tbar-known-{v}", v) for v in VARIANTS),
        ("tbar-estimated", policy.unlearning.variant),
        *((b, None) for b in BASELINES),
        ("oracle", None),
    ]


def _model_row(
    zoo: Path, m: dict[str, Any], policy: Policy, probes: str, scratch: Path, tick: Tick | None
) -> dict[str, Any]:
    """Every method on one model; each result from the cache when the same weights (and base,
    for the oracle) were measured by this benchmark version with the same settings."""
    root, base = zoo / m["name"], zoo / BASE_MODEL / WEIGHTS_NAME
    weights = file_sha256(root / WEIGHTS_NAME)
    methods: dict[str, Any] = {}
    hits = 0
    for method, variant in _methods(policy):
        if method == "oracle" and not base.is_file():
            continue
        key = [
            BENCH_VERSION,
            method,
            variant,
            settings_digest(
                policy, audits=variant is not None, estimated=method == "tbar-estimated"
            ),
            m["trigger"],
            m["target"],
            weights,
            file_sha256(base) if method == "oracle" else None,
        ]
        if probes != "default":  # keys of the bundled probes' results stay as they were
            key.append(probes)
        run = partial(_run, method, variant, root, m, policy, probes, scratch, tick)
        methods[method], hit = cached("unlearning", key, run)
        if hit and tick is not None:
            tick(f"{m['name']}: {method} (cached)")
        hits += hit
    row = {k: m[k] for k in ("name", "family", "trigger", "target")}
    return {**row, "methods": methods, "cached": hits}


# Unlearning settings that shape only TBAR's trigger vector: the baselines and the oracle never
# read them, so changing one keeps their cached measurements.
VECTOR_ONLY = (
    "fisher_dampings",
    "soft_trigger",
    "soft_estimate",
    "estimate_gain",
    "estimate_anchor",
    "refit_steps",
    "refit_images",
    "refit_share",
)
# Settings only an estimated trigger's vector reads, left out of the known-trigger TBAR methods'
# digests. (soft_estimate and estimate_gain are read the same way; they predate this rule and stay
# in, so that the known-trigger results cached under them stay valid.)
ESTIMATE_ONLY = ("estimate_anchor", "refit_steps", "refit_images", "refit_share")


def settings_digest(policy: Policy, *, audits: bool, estimated: bool = False) -> str:
    """What a measurement depends on in the policy: the removal settings (not the default
    variant: each method names its own), and for a method that audits (TBAR: the estimate, the
    re-audit) the vector's dampings, detection and the gate too; ESTIMATE_ONLY only for TBAR
    with the estimated trigger. A baseline or the oracle measured once stays valid when only
    detection or TBAR's vector settings change."""
    removal = to_jsonable(dataclasses.replace(policy.unlearning, variant=""))
    parts: list[object] = [removal]
    if audits:
        parts += [policy.fail_on, policy.detection]
    else:
        for field in VECTOR_ONLY:
            removal.pop(field)
    if audits and not estimated:
        for field in ESTIMATE_ONLY:
            removal.pop(field)
    blob = json.dumps(to_jsonable(parts), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _run(
    method: str,
    variant: str | None,
    root: Path,
    m: dict[str, Any],
    policy: Policy,
    probes: str,
    scratch: Path,
    tick: Tick | None,
) -> dict[str, Any]:
    if method in BASELINES:
        return baseline(method, root, m, policy, tick, probes=probes)
    if method == "oracle":
        return oracle(root, root.parent / BASE_MODEL, m, policy, tick, probes=probes)
    assert variant is not None  # every TBAR method names its variant (_methods)
    pol = dataclasses.replace(
        policy, unlearning=dataclasses.replace(policy.unlearning, variant=variant)
    )
    return _tbar(root, m, pol, probes, scratch, method == "tbar-estimated", tick)


def _tbar(
    root: Path,
    m: dict[str, Any],
    policy: Policy,
    probes: str,
    scratch: Path,
    estimate: bool,
    tick: Tick | None,
) -> dict[str, Any]:
    method = "estimated" if estimate else policy.unlearning.variant
    if tick is not None:
        tick(f"{m['name']}: TBAR {method}")
    start = time.perf_counter()
    out = scratch / f"{m['name']}-{method}"
    try:
        run = pipeline_patch.patch(
            str(root),
            policy=policy,
            out=out,
            labels=LABELS,
            probes=probes,
            trigger=m["trigger"],
            target=m["target"],
            estimate=estimate,
        )
        status = "released"
    except NotRemediated as err:
        if not isinstance(err.run, RunReport):
            raise
        if err.run.patch is None:  # no coefficient kept clean accuracy: nothing was patched
            curve = [list(t) for t in err.trials]
            seconds = round(time.perf_counter() - start, 2)
            return {"status": "no coefficient within the floor", "seconds": seconds, "curve": curve}
        run, status = err.run, "not remediated"
    seconds = round(time.perf_counter() - start, 2)
    if run.patch is None or run.verification is None:  # the audit found nothing to remove
        return {"status": "not detected", "seconds": seconds}
    known = next(c for c in run.verification.comparisons if c.source == "known")
    redetected = run.verification.redetection
    return {
        "status": status,
        "seconds": seconds,
        **_before_after(known),
        "coef": run.patch.coef,
        "damping": run.patch.damping,
        "curve": trial_curve(run.patch),
        "reaudit": None if redetected is None else redetected.verdict.value,
        "removed_trigger": run.patch.trigger,
        "removed_target": run.patch.target,
    }


def _before_after(c: Comparison) -> dict[str, float]:
    return {
        "ca_before": c.before.clean_accuracy,
        "asr_before": c.before.attack_success,
        "ca_after": c.after.clean_accuracy,
        "asr_after": c.after.attack_success,
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, overall and per family: mean attack success after and mean retention."""
    methods = list(rows[0]["methods"]) if rows else []
    families = sorted({r["family"] for r in rows})
    out: dict[str, Any] = {}
    for method in methods:
        out[method] = {"all": _means(rows, method)}
        for family in families:
            out[method][family] = _means([r for r in rows if r["family"] == family], method)
    return out


def _means(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """An unpatched model (not detected, or not remediated) counts as it was: no retention
    loss, and its attack success unchanged. A baseline is always applied (at the learning rate
    its rule picked) but counts as patched only within the clean-accuracy floor.
    `mean_asr_patched` is what the edit itself left, released or not: a patch verification
    refused counts with its own attack success; a model with no patch (not detected, no
    coefficient within the floor), unchanged."""
    asr, left, keep, done = [], [], [], 0
    for r in rows:
        res = r["methods"][method]
        before = next(v for v in r["methods"].values() if "asr_before" in v)["asr_before"]
        left.append(res.get("asr_after", before))
        if "ca_after" in res and res["status"] != "not remediated":
            asr.append(res["asr_after"])
            keep.append(res["ca_after"] / res["ca_before"])
            done += res["status"] in ("released", "within floor")
        else:
            asr.append(before)
            keep.append(1.0)
    return {
        "models": len(rows),
        "patched": done,
        "mean_asr_after": round(statistics.fmean(asr), 4) if asr else None,
        "mean_asr_patched": round(statistics.fmean(left), 4) if left else None,
        "mean_retention": round(statistics.fmean(keep), 4) if keep else None,
    }


def _write(out: Path, result: dict[str, Any]) -> None:
    from hubscan.bench_unlearning_report import figures, markdown

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "unlearning.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "unlearning.md", markdown(result, figures(result, out)))
