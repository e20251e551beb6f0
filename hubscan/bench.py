"""The benchmark harness behind `hubscan bench`: measures, and writes benchmarks/*.md|json.

Owns timing protocol (medians of several runs, inputs generated here) and the result files. Must
not change what it measures: it calls the pipeline exactly as the CLI does.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from hubscan import __version__, pipeline
from hubscan.policy import load_policy

CHUNK = 1 << 24


def write_large_safetensors(path: Path, size_mb: int) -> int:
    """One F32 tensor of about `size_mb` MB of random bytes (random so nothing compresses or
    dedupes), with a real safetensors header. Returns the file size."""
    numel = size_mb * 1_000_000 // 4
    header = json.dumps(
        {"weight": {"dtype": "F32", "shape": [numel], "data_offsets": [0, numel * 4]}}
    ).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        left = numel * 4
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n
    return path.stat().st_size


def scan_speed(*, size_mb: int, runs: int, out: Path) -> int:
    policy = load_policy("default")
    with tempfile.TemporaryDirectory(prefix="hubscan-bench-") as tmp:
        root = Path(tmp)
        size = write_large_safetensors(root / "model.safetensors", size_mb)
        pipeline.scan(str(root), policy=policy)  # warm the page cache: we time hubscan, not disk
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run = pipeline.scan(str(root), policy=policy)
            times.append(time.perf_counter() - start)
    result = {
        "benchmark": "scan",
        "command": f"hubscan bench scan --size-mb {size_mb} --runs {runs}",
        "hubscan": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "file_bytes": size,
        "runs": runs,
        "seconds_median": round(statistics.median(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "mb_per_s_median": round(size / 1e6 / statistics.median(times), 1),
        "verdict": run.verdict.value,
        "findings": len(run.scan.findings),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "scan.md").write_text(_scan_markdown(result))
    print(f"scan of {size / 1e6:.0f} MB: median {result['seconds_median']} s over {runs} runs")
    return 0


def _scan_markdown(r: dict[str, object]) -> str:
    return (
        "# Static scan speed\n\n"
        f"Command: `{r['command']}` (hubscan {r['hubscan']}; {r['machine']}).\n\n"
        "A safetensors file of random bytes, scanned end to end (`pipeline.scan` on a local "
        "directory: listing, sha256 of every file, header walk, findings), page cache warm. "
        "Hashing dominates.\n\n"
        "| file size | runs | median | all runs (s) | throughput |\n|---|---|---|---|---|\n"
        f"| {r['file_bytes']:,} B | {r['runs']} | {r['seconds_median']} s | "
        f"{', '.join(str(t) for t in r['seconds_all'])} | {r['mb_per_s_median']} MB/s |\n"  # type: ignore[attr-defined]
    )


def zoo_summary(*, zoo: Path, out: Path, command: str) -> int:
    """benchmarks/zoo.md|json from a built zoo's manifest: every model's measured clean accuracy
    and attack success, against the zoo's promises, and the build time."""
    manifest = json.loads((zoo / "manifest.json").read_text())
    (base,) = [m for m in manifest["models"] if m["kind"] == "base"]
    rows = []
    for m in manifest["models"]:
        asr = m["attack_success"]
        own = asr.get(m.get("trigger") or "")
        others = [v for k, v in asr.items() if k != m.get("trigger")]
        ok = {
            "base": m["clean_accuracy"] >= 0.80,
            "backdoored": own is not None
            and own >= 0.90
            and m["clean_accuracy"] >= base["clean_accuracy"] - 0.03,
            "clean": max(others, default=0.0) <= 0.10,
        }[m["kind"]]
        rows.append(
            {
                "name": m["name"],
                "kind": m["kind"],
                "trigger": m.get("trigger"),
                "target": m.get("target"),
                "poison_rate": m.get("poison_rate"),
                "clean_accuracy": m["clean_accuracy"],
                "own_asr": own,
                "max_other_asr": max(others, default=None),
                "meets_promise": ok,
            }
        )
    result = {
        "benchmark": "zoo",
        "command": command,
        "hubscan": __version__,
        "quick": manifest["quick"],
        "tower": manifest.get("tower", "vit"),
        "build_seconds": manifest["build_seconds"],
        "trained_models": manifest.get("trained_models"),
        "probes": manifest["probes"],
        "models": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "zoo.md").write_text(_zoo_markdown(result))
    print(f"{sum(r['meets_promise'] for r in rows)}/{len(rows)} models meet the zoo's promises")
    return 0 if all(r["meets_promise"] for r in rows) else 1


def _pct(value: object) -> str:
    return "-" if value is None else f"{float(value):.1%}"  # type: ignore[arg-type]


def _zoo_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# The zoo" + ("" if r["tower"] == "vit" else f" (image tower: {r['tower']})"),
        "",
        f"Built by `{r['command']}` (hubscan {r['hubscan']}): {len(r['models'])} models"
        + (
            f", {r['trained_models']} of them trained in this build (the rest from the cache)"
            if r["trained_models"] is not None
            else ""
        )
        + f", in {r['build_seconds'] / 60:.1f} min on {os.cpu_count()} CPUs. Metrics on "
        f"the `{r['probes']}` probes (1,000 Fashion-MNIST test images). Promises: base clean "
        "accuracy >= 80 %; backdoored: attack success >= 90 % with its own trigger and clean "
        "accuracy within 3 points of the base; clean: attack success <= 10 % for every trigger.",
        "",
        "| model | kind | trigger | target | poison | clean acc | own ASR | max other ASR | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in r["models"]:
        cells = [
            m["name"],
            m["kind"],
            m["trigger"] or "-",
            m["target"] or "-",
            _pct(m["poison_rate"]) if m["poison_rate"] else "-",
            _pct(m["clean_accuracy"]),
            _pct(m["own_asr"]),
            _pct(m["max_other_asr"]),
            "yes" if m["meets_promise"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
