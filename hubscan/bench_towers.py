"""`hubscan bench towers`: does the pre-trained image tower pay? (issue 7, acceptance line 1)

Trains (or reuses from the zoo cache) the bases zoo_tower.COMPARED lists with ONE recipe — the
same pairs, batch, steps, learning rate and seed — and measures each one's zero-shot accuracy on
the bundled 1,000 probes (what the zoo manifests use) and on the whole Fashion-MNIST test set;
the first zoo's own base (80k pairs) is a reference row. Writes towers.md|json. Must not change
what it measures: the bases are the zoo's, trained by zoo.py.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hubscan import __version__, zoo, zoo_tower
from hubscan.errors import ProbeError
from hubscan.metrics import clean_accuracy
from hubscan.model import load_clip
from hubscan.probes import load_labels, load_probes
from hubscan.zoo import Progress

PROBE_SETS = (("default", "probes (1,000)"), ("fashion-mnist:test", "test set (10,000)"))


def run_towers_bench(
    *, out: Path, pairs: int | None, command: str, progress: Progress | None = None
) -> dict[str, Any]:
    recipe = zoo_tower.BASE if pairs is None else replace(zoo_tower.BASE, samples=pairs)
    runs = [(label, spec, recipe) for label, spec in zoo_tower.COMPARED]
    runs.append(("ViT from scratch, 28 px: the first zoo's base", zoo.VIT, zoo.BASE))
    labels = load_labels(zoo.LABELS)
    probes = {name: load_probes(name, labels=labels) for name, _ in PROBE_SETS}
    rows = []
    for label, spec, r in runs:
        path, trained = zoo.cached_base(spec, r, progress=progress)
        clip = load_clip(path)
        head = clip.zero_shot_head(labels.classes, labels.templates)
        accuracy = {}
        for name, p in probes.items():
            if p.labels is None:
                raise ProbeError(f"the {name!r} probes have no labels")
            accuracy[name] = round(clean_accuracy(clip, p.images, p.labels, head), 4)
        rows.append(
            {
                "base": label,
                "tower": spec.tower,
                "pairs": r.samples,
                "steps": r.steps,
                "train_seconds": _train_seconds(path),
                "trained_now": trained,
                "zero_shot_accuracy": accuracy,
            }
        )
    result = {
        "benchmark": "towers",
        "command": command,
        "hubscan": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{_threads()}, Python {platform.python_version()}",
        "recipe": asdict(recipe),
        "bases": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "towers.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "towers.md").write_text(_markdown(result))
    return result


def _train_seconds(path: Path) -> float | None:
    """The training time the cache entry noted when it was trained (None for entries from before
    zoo.py noted it)."""
    try:
        seconds = json.loads((path / "train.json").read_text())["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(seconds)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _markdown(r: dict[str, Any]) -> str:
    rec = r["recipe"]
    lines = [
        "# Pre-trained vs from-scratch image towers, one training budget",
        "",
        f"Command: `{r['command']}` (hubscan {r['hubscan']}; {r['machine']}).",
        "",
        f"Every base but the last is trained with one recipe: {rec['samples']:,} Fashion-MNIST "
        f"(image, caption) pairs, batch {rec['batch_size']}, AdamW lr {rec['lr']}, weight decay "
        f"{rec['weight_decay']}, {rec['warmup_steps']} warmup steps then cosine, seed "
        f"{rec['seed']}; the last row is the first zoo's own base, for reference. Zero-shot "
        "accuracy through the prompt-template head; training time as noted in the zoo cache "
        "when the model was trained (- when the entry predates that note): wall time, so "
        "comparable only between bases trained on an otherwise idle machine.",
        "",
        "| base | pairs | steps | train time | "
        + " | ".join(f"zero-shot acc, {title}" for _, title in PROBE_SETS)
        + " |",
        "|---|---|---|---|" + "---|" * len(PROBE_SETS),
    ]
    for b in r["bases"]:
        acc = b["zero_shot_accuracy"]
        seconds = b["train_seconds"]
        cells = [
            b["base"],
            f"{b['pairs']:,}",
            str(b["steps"]),
            "-" if seconds is None else f"{seconds / 60:.1f} min",
            *(f"{acc[name]:.1%}" for name, _ in PROBE_SETS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
