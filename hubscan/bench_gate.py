"""`hubscan bench gate`: what the audit results cache saves -> benchmarks/gate.md|json.

Owns one measurement: zoo models (half backdoored, half clean) are put in a fresh HF cache as
`bench/<name>` at a commit, listed in a models.lock, and audited twice in a row with `audit
--models` into an empty audit cache (cold: probing; warm: cache hits), several times; medians of
the wall times, side by side. Offline, through the same pipeline call the CLI makes. Must not
change what it measures.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hubscan import __version__, pipeline_gate
from hubscan.policy import Policy
from hubscan.records import BatchReport


def run_gate_bench(
    *, zoo: Path, models: int, runs: int, policy: Policy, out: Path, command: str
) -> dict[str, Any]:
    chosen = _pick(zoo, models)
    cold, warm, verdicts = [], [], []
    with tempfile.TemporaryDirectory(prefix="hubscan-bench-gate-") as tmp:
        root = Path(tmp)
        lock = root / "models.lock"
        lines = [_cache_model(root / "hf", zoo / name, f"bench/{name}") for name in chosen]
        lock.write_text("\n".join(lines) + "\n")
        for run in range(runs):
            with _audit_cache(root / f"audits-{run}"):
                first, seconds_cold = _timed(lock, policy, root / "hf")
                second, seconds_warm = _timed(lock, policy, root / "hf")
            if [r.verdict for r in first.results] != [r.verdict for r in second.results]:
                raise RuntimeError("a cached verdict differs from the probed one")
            if not all(r.run is not None and r.run.cached for r in second.results):
                raise RuntimeError("the second run did not come from the cache")
            cold.append(seconds_cold)
            warm.append(seconds_warm)
            verdicts = [r.verdict.value for r in first.results]
    result = {
        "benchmark": "gate",
        "command": command,
        "hubscan": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "policy": policy.name,
        "models": [{"name": n, "verdict": v} for n, v in zip(chosen, verdicts, strict=True)],
        "runs": runs,
        "cold_seconds": [round(t, 3) for t in cold],
        "warm_seconds": [round(t, 3) for t in warm],
        "cold_median": round(statistics.median(cold), 3),
        "warm_median": round(statistics.median(warm), 3),
        "speedup_median": round(statistics.median(cold) / statistics.median(warm), 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gate.md").write_text(markdown(result))
    return result


def _pick(zoo: Path, models: int) -> list[str]:
    """Alternate backdoored and clean models from the manifest, `models` in all."""
    manifest = json.loads((zoo / "manifest.json").read_text())
    kinds: dict[str, list[str]] = {"backdoored": [], "clean": []}
    for m in manifest["models"]:
        if m["kind"] in kinds:
            kinds[m["kind"]].append(m["name"])
    pairs = [n for pair in zip(kinds["backdoored"], kinds["clean"], strict=False) for n in pair]
    if len(pairs) < models:
        raise ValueError(f"{zoo} has fewer than {models} backdoored/clean models")
    return pairs[:models]


def _cache_model(hf: Path, model: Path, repo_id: str) -> str:
    """Put `model`'s files in the HF cache layout as repo_id at a content-derived commit."""
    files = sorted(p for p in model.iterdir() if p.is_file())
    digest = hashlib.sha1(repo_id.encode())
    for path in files:
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    commit = digest.hexdigest()
    org, name = repo_id.split("/")
    repo = hf / f"models--{org}--{name}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    for path in files:
        (repo / "snapshots" / commit / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)  # no newline: huggingface_hub reads it raw
    return f"{repo_id}@{commit}"


@contextmanager
def _audit_cache(folder: Path) -> Iterator[None]:
    previous = os.environ.get("HUBSCAN_AUDIT_CACHE")
    os.environ["HUBSCAN_AUDIT_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HUBSCAN_AUDIT_CACHE", None)
        else:
            os.environ["HUBSCAN_AUDIT_CACHE"] = previous


def _timed(lock: Path, policy: Policy, hf: Path) -> tuple[BatchReport, float]:
    start = time.perf_counter()
    batch = pipeline_gate.audit_models(
        lock,
        policy=policy,
        labels="fashion-mnist",
        probes="default",
        offline=True,
        device="cpu",
        seed=0,
        out=None,
        use_cache=True,
        cache_dir=hf,
    )
    return batch, time.perf_counter() - start


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(f"| `{m['name']}` | {m['verdict']} |" for m in r["models"])
    cold, warm = (", ".join(f"{t:.2f}" for t in r[k]) for k in ("cold_seconds", "warm_seconds"))
    return f"""# The gate's results cache

`{r["command"]}` · hubscan {r["hubscan"]} · {r["machine"]} · policy `{r["policy"]}`

{len(r["models"])} zoo models in a fresh HF cache, listed in a models.lock, audited with
`hubscan audit --models` (labels fashion-mnist, offline) twice in a row into an empty audit
cache: the first run probes every model, the second reads every result back from the cache
(checked: same verdicts, every result marked cached). {r["runs"]} repetitions; medians.

| | wall time (median) | all runs (s) |
|---|---|---|
| first run (probing) | {r["cold_median"]:.2f} s | {cold} |
| second run (cached) | {r["warm_median"]:.2f} s | {warm} |
| **speed-up** | **{r["speedup_median"]}x** | |

| model | verdict |
|---|---|
{rows}

The CLI adds its own start-up (Python, torch import) to both runs; this measures the audit
calls in one process.
"""
