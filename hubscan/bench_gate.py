"""`hubscan bench gate`: what the audit results cache saves -> benchmarks/gate.md|json.

Owns one measurement: zoo models (half backdoored, half clean) are put in a fresh HF cache as
`bench/<name>` at a commit, listed in a models.lock, and audited twice in a row by the CLI,
`hubscan audit --models` in a fresh process each time as CI runs it, into an empty audit cache
(first run: probing; second: cache hits), several times; medians of the wall times, side by
side. Offline. Must not change what it measures.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hubscan import __version__
from hubscan.policy import load_policy


def run_gate_bench(
    *, zoo: Path, models: int, runs: int, policy: str, out: Path, command: str
) -> dict[str, Any]:
    """`policy`: what `--policy` is given (a bundled name or a TOML file)."""
    chosen = _pick(zoo, models)
    cold, warm, verdicts = [], [], []
    with tempfile.TemporaryDirectory(prefix="hubscan-bench-gate-") as tmp:
        root = Path(tmp)
        lock = root / "models.lock"
        lines = [_cache_model(root / "hf", zoo / name, f"bench/{name}") for name in chosen]
        lock.write_text("\n".join(lines) + "\n")
        for run in range(runs):
            audits = root / f"audits-{run}"
            first, seconds_cold = _timed(lock, root / "hf", audits, policy)
            second, seconds_warm = _timed(lock, root / "hf", audits, policy)
            verdicts = [r["verdict"] for r in first["results"]]
            if verdicts != [r["verdict"] for r in second["results"]]:
                raise RuntimeError("a cached verdict differs from the probed one")
            if not all(r["run"] and r["run"]["cached"] for r in second["results"]):
                raise RuntimeError("the second run did not come from the cache")
            cold.append(seconds_cold)
            warm.append(seconds_warm)
    result = {
        "benchmark": "gate",
        "command": command,
        "hubscan": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "policy": load_policy(policy).name,
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


def _timed(lock: Path, hf: Path, audits: Path, policy: str) -> tuple[dict[str, Any], float]:
    """One `hubscan audit --models` process; its JSON report and wall time."""
    command = [sys.executable, "-m", "hubscan", "audit", "--models", str(lock)]
    command += ["--labels", "fashion-mnist", "--policy", policy, "--format", "json"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hf),
        "HUBSCAN_AUDIT_CACHE": str(audits),
    }
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"hubscan audit --models exited {done.returncode}: {done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report, seconds


def markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(f"| `{m['name']}` | {m['verdict']} |" for m in r["models"])
    cold, warm = (", ".join(f"{t:.2f}" for t in r[k]) for k in ("cold_seconds", "warm_seconds"))
    return f"""# The gate's results cache

`{r["command"]}` · hubscan {r["hubscan"]} · {r["machine"]} · policy `{r["policy"]}`

{len(r["models"])} zoo models in a fresh HF cache, listed in a models.lock, audited by
`hubscan audit --models models.lock --labels fashion-mnist` (a new process each time, offline,
as a CI job runs it) twice in a row into an empty audit cache: the first run probes every model,
the second reads every result back from the cache (checked: same verdicts, every result marked
cached). {r["runs"]} repetitions; medians; wall time includes Python and hubscan start-up.

| | wall time (median) | all runs (s) |
|---|---|---|
| first run (probing) | {r["cold_median"]:.2f} s | {cold} |
| second run (cached) | {r["warm_median"]:.2f} s | {warm} |
| **speed-up** | **{r["speedup_median"]}x** | |

| model | verdict |
|---|---|
{rows}

A cache hit needs no download, no torch import and no probe images decoded: the entry is found
from the models.lock line (repo, commit) and the digest of the inputs alone.
"""
