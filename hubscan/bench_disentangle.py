"""`hubscan bench disentanglement`: is the trigger vector disentangled from clean behaviour, per
zoo? -> benchmarks/disentanglement.md|json and one heatmap per zoo and vector.

Owns the measurement (paper.md §5, disentangle.py): for one backdoored model of each zoo, the
clean-task vector τ_c (fine-tune of the image tower on the clean tune probes, true labels) and
four trigger vectors — TBAR's `contrast`, `fisher` and `paper` estimates with the known
trigger, and the oracle (the backdoored model minus the zoo's clean base) — the disentanglement
error ξ over a grid of (a_c, a_t), its mean over the grid and over the removal half (a_t <= 0),
each vector's norm and its cosine with the oracle. Same probes and splits as `hubscan bench
unlearning`. Must not change what it measures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubscan import __version__
from hubscan.atomic import file_sha256
from hubscan.bench_cache import cached
from hubscan.errors import UsageError
from hubscan.model import WEIGHTS_NAME
from hubscan.policy import Policy, UnlearningPolicy

if TYPE_CHECKING:
    import torch

    from hubscan.model import ClipHandle
    from hubscan.vector import Task

# The paper's range (paper.md §5) in half steps: TBAR's chosen coefficients lie within 0.25-1.5.
COEFS = tuple(c / 2 for c in range(-6, 7))
IMAGES = 150  # clean and triggered probes per ξ term (from the test split)
VECTORS = ("contrast", "fisher", "paper", "oracle")
BENCH_VERSION = 1  # hashed into the cache key: bump when a change alters what is measured


def run_disentanglement_bench(
    *, zoos: list[Path], model: str | None, out: Path, policy: Policy, command: str
) -> dict[str, Any]:
    """The ξ maps of each zoo's model, and the answer `hubscan bench unlearning` gives in the
    same --out directory (unlearning.json), when there is one."""
    rows = [_zoo_row(zoo, model, policy, out) for zoo in zoos]
    result = {
        "command": command,
        "hubscan": __version__,
        "policy": policy.name,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "coefs": list(COEFS),
        "images": IMAGES,
        "zoos": rows,
        "removal": removal_answer(out / "unlearning.json", policy),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "disentanglement.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "disentanglement.md").write_text(markdown(result))
    return result


def _zoo_row(zoo: Path, model: str | None, policy: Policy, out: Path) -> dict[str, Any]:
    """The zoo's measurement (from the cache when these weights were measured with these
    settings) and its heatmaps, named after the zoo."""
    from hubscan.bench_unlearning import settings_digest
    from hubscan.figures import render_heatmap_png

    manifest = json.loads((zoo / "manifest.json").read_text())
    m = _pick(manifest, model, zoo)
    key = [
        BENCH_VERSION,
        settings_digest(policy, audits=False),
        COEFS,
        IMAGES,
        VECTORS,
        m["trigger"],
        m["target"],
        file_sha256(zoo / m["name"] / WEIGHTS_NAME),
        file_sha256(zoo / "base" / WEIGHTS_NAME),
    ]
    measured, hit = cached("disentanglement", key, lambda: _measure(zoo, m, policy))
    vectors = {}
    for name, v in measured["vectors"].items():
        figure = f"disentanglement-{zoo.name}-{name}.png"
        render_heatmap_png(
            v["grid"],
            COEFS,
            out / figure,
            title=f"xi on {zoo.name}/{m['name']}: clean vector x {name} trigger vector",
            rows="a_c (clean)",
            cols="a_t (trigger; < 0 removes)",
        )
        vectors[name] = {**v, "figure": figure}
    return {
        **measured,
        "zoo": str(zoo),
        "tower": manifest.get("tower", "vit"),
        "model": m["name"],
        "vectors": vectors,
        "cached": hit,
    }


def _vector(clip: ClipHandle, task: Task, un: UnlearningPolicy) -> dict[str, torch.Tensor]:
    """The variant's trigger vector; `fisher`'s at its strongest damping (the patch chooses
    among the dampings per model, a grid compares one vector per variant)."""
    from hubscan import vector

    tau = vector.trigger_vector(clip, task, un, seed=0, tick=None)
    strongest = dataclasses.replace(un, fisher_dampings=(max(un.fisher_dampings),))
    return next(iter(vector.damped(clip, task, tau, strongest)))[1]


def _measure(zoo: Path, m: dict[str, Any], policy: Policy) -> dict[str, Any]:
    import torch

    from hubscan import disentangle, vector
    from hubscan.bench_references import known_setup
    from hubscan.model import load_clip

    start = time.perf_counter()
    known = known_setup(zoo / m["name"], m, policy)
    clip, head, task, un = known.clip, known.head, known.task, policy.unlearning
    tuned, begin = vector.finetune(clip, head, task.tune, task.tune_labels, un, 0, None)
    tau_c = {k: tuned[k] - begin[k] for k in begin}
    theta_b = vector.tower_params(clip)
    base = vector.tower_params(load_clip(zoo / "base"))
    vectors = {
        v: _vector(clip, task, dataclasses.replace(un, variant=v)) for v in VECTORS if v != "oracle"
    }
    vectors["oracle"] = {k: theta_b[k] - base[k] for k in theta_b}
    clean = known.test[:IMAGES]
    triggered = task.stamp(known.test[known.test_labels != task.target][:IMAGES])
    flat_oracle = torch.cat([t.flatten() for t in vectors["oracle"].values()])
    results = {}
    for name, tau_t in vectors.items():
        grid = disentangle.error_grid(clip, head, tau_c, tau_t, clean, triggered, COEFS)
        flat = torch.cat([t.flatten() for t in tau_t.values()])
        cos = torch.nn.functional.cosine_similarity(flat, flat_oracle, dim=0)
        results[name] = {
            "mean_xi": round(grid.mean(), 4),
            "mean_xi_removal": round(grid.mean(removal_only=True), 4),
            "norm": round(float(flat.norm()), 4),
            "cos_oracle": round(float(cos), 4),
            "grid": [list(r) for r in grid.xi],
        }
    return {
        "trigger": m["trigger"],
        "target": m["target"],
        "clean_vector_norm": round(
            float(torch.cat([t.flatten() for t in tau_c.values()]).norm()), 4
        ),
        "vectors": results,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _pick(manifest: dict[str, Any], model: str | None, zoo: Path) -> dict[str, Any]:
    backdoored = [m for m in manifest["models"] if m["kind"] == "backdoored"]
    chosen = [m for m in backdoored if m["name"] == model] if model else backdoored[:1]
    if not chosen or not (zoo / "base").is_dir():
        raise UsageError(f"{zoo}: no backdoored model {model or ''} with a clean base beside it")
    pick: dict[str, Any] = chosen[0]
    return pick


def removal_answer(path: Path, policy: Policy) -> dict[str, Any] | None:
    """From `hubscan bench unlearning`'s result: per zoo and trigger vector (TBAR's variants, the
    estimated trigger, the oracle), on how many models the vector removed the backdoor within the
    policy's floor — test attack success <= max_attack_success and test clean accuracy >=
    clean_floor x before — and which known-trigger variant wins each zoo."""
    try:
        result = json.loads(path.read_text())
        zoos = result["zoos"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no unlearning benchmark beside this one: the page shows the maps only
    un = policy.unlearning
    answer: list[dict[str, Any]] = []
    for z in zoos:
        methods: dict[str, Any] = {}
        for method, summary in z["summary"].items():
            if not (method.startswith("tbar-") or method == "oracle"):
                continue
            rows = [r["methods"][method] for r in z["models"]]
            removed = sum(
                "ca_after" in res
                and res["asr_after"] <= un.max_attack_success
                and res["ca_after"] >= un.clean_floor * res["ca_before"]
                for res in rows
            )
            methods[method] = {**summary["all"], "removed": removed}
        known = {m: v for m, v in methods.items() if m.startswith("tbar-known-")}
        winner = max(
            known,
            key=lambda m: (known[m]["removed"], -known[m]["mean_asr_after"]),
            default=None,
        )
        answer.append(
            {
                "zoo": z["zoo"],
                "tower": z["tower"],
                "models": len(z["models"]),
                "complete": bool(z.get("complete", True)),
                "methods": methods,
                "winner": None if winner is None else winner.removeprefix("tbar-known-"),
            }
        )
    return {
        "command": result.get("command"),
        "max_attack_success": un.max_attack_success,
        "clean_floor": un.clean_floor,
        "default_variant": un.variant,
        "zoos": answer,
    }


def _answer_lines(a: dict[str, Any] | None) -> list[str]:
    if a is None or not a["zoos"]:
        return ["No `unlearning.json` beside this page: run `hubscan bench unlearning` first.", ""]
    zoos = a["zoos"]
    lines = [
        "## The answer",
        "",
        f"From `{a['command']}` (benchmarks/unlearning.md). A vector *removes the backdoor within "
        f"the floor* on a model when, at the coefficient TBAR's rule chose on val, the test "
        f"split's attack success is at most {a['max_attack_success']:.0%} and its clean "
        f"accuracy at least {a['clean_floor']:.0%} of the model's before.",
        "",
        "| trigger vector | " + " | ".join(f"`{z['zoo']}` ({z['tower']})" for z in zoos) + " |",
        "|---|" + "---|" * len(zoos),
    ]
    methods = list(dict.fromkeys(m for z in zoos for m in z["methods"]))
    for method in methods:
        cells = []
        for z in zoos:
            v = z["methods"].get(method)
            cells.append(
                "—"
                if v is None
                else f"{v['removed']}/{z['models']} (mean attack success after "
                f"{v['mean_asr_after']:.1%}, retention {v['mean_retention']:.1%})"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", *_answer_sentences(a), ""]
    return lines


def _answer_sentences(a: dict[str, Any]) -> list[str]:
    out = []
    for z in a["zoos"]:
        m = z["methods"]
        partial = "" if z["complete"] else " (partial run)"
        parts = [
            f"`{name.removeprefix('tbar-known-')}` {v['removed']}/{z['models']}"
            for name, v in m.items()
        ]
        gap = ""
        if "oracle" in m and z["winner"] is not None:
            best = m[f"tbar-known-{z['winner']}"]
            points = 100 * (best["mean_asr_after"] - m["oracle"]["mean_asr_after"])
            gap = (
                f"; the best estimate, `{z['winner']}`, leaves {abs(points):.1f} points "
                f"{'more' if points > 0 else 'less'} mean attack success than the oracle"
            )
        out.append(
            f"- `{z['zoo']}` ({z['tower']}){partial}: removed within the floor by "
            + ", ".join(parts)
            + gap
            + "."
        )
    winners = {z["winner"] for z in a["zoos"]} - {None}
    if len(winners) == 1:
        (winner,) = winners
        agrees = "which is" if winner == a["default_variant"] else "but the default is"
        out.append(
            f"- The known-trigger variant that removes the most backdoors is `{winner}` in every "
            f"zoo, {agrees} `hubscan patch`'s default (`{a['default_variant']}`)."
        )
    elif winners:
        out.append(_split_decision(a))
    return out


def _split_decision(a: dict[str, Any]) -> str:
    """When the zoos disagree: who wins where, the totals over every zoo, and where the
    default stands."""
    zoos = a["zoos"]
    where = ", ".join(
        f"`{z['winner']}` on `{z['zoo']}` ({z['tower']})" for z in zoos if z["winner"]
    )
    known = dict.fromkeys(m for z in zoos for m in z["methods"] if m.startswith("tbar-known-"))
    total = sum(z["models"] for z in zoos)
    totals = ", ".join(
        f"`{m.removeprefix('tbar-known-')}` "
        f"{sum(z['methods'][m]['removed'] for z in zoos if m in z['methods'])}/{total}"
        for m in known
    )
    default = a["default_variant"]
    wins = [f"`{z['zoo']}`" for z in zoos if z["winner"] == default]
    stands = f"wins on {', '.join(wins)}" if wins else "wins on no zoo"
    return (
        f"- The winning variant differs between zoos: {where}. Over all {total} models: {totals}. "
        f"`hubscan patch`'s default (`{default}`) {stands}."
    )


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Weight disentanglement: trigger vectors vs clean behaviour",
        "",
        f"`{r['command']}` · hubscan {r['hubscan']} · policy `{r['policy']}`",
        "",
        "For one backdoored model per zoo, the disentanglement error (paper.md §5) of a clean-task",
        "vector τ_c (the image tower fine-tuned on clean tune probes, true labels) and a trigger",
        "vector τ_t, both anchored at the backdoored weights θ_b:",
        "ξ(a_c, a_t) = E_clean[f(θ_b+a_c τ_c) ≠ f(θ_b+a_c τ_c+a_t τ_t)]"
        " + E_triggered[f(θ_b+a_t τ_t) ≠ f(θ_b+a_c τ_c+a_t τ_t)],",
        f"in [0, 2], over a_c, a_t ∈ {{{', '.join(f'{c:g}' for c in r['coefs'])}}}, on "
        f"{r['images']} clean and {r['images']} triggered test probes. Low ξ: the vectors act on",
        "different inputs. TBAR removes the backdoor at a_t < 0 (the removal half). Vectors:",
        "`contrast`, `fisher` and `paper` are TBAR's estimates with the known trigger; `oracle`",
        "is the backdoored model minus the zoo's clean base (the attack's own direction).",
        "",
        *_answer_lines(r.get("removal")),
        "## Disentanglement error",
        "",
        "| zoo (tower) | model | vector | mean ξ | mean ξ, a_t ≤ 0 | ‖τ_t‖ | cos(τ_t, oracle) |",
        "|---|---|---|---|---|---|---|",
    ]
    for z in r["zoos"]:
        for name, v in z["vectors"].items():
            lines.append(
                f"| {Path(z['zoo']).name} ({z['tower']}) | `{z['model']}` | {name} | "
                f"{v['mean_xi']:.3f} | {v['mean_xi_removal']:.3f} | {v['norm']:.2f} | "
                f"{v['cos_oracle']:.3f} |"
            )
    lines.append("")
    for z in r["zoos"]:
        lines.append(f"## {Path(z['zoo']).name}: `{z['model']}` ({z['trigger']} → {z['target']})")
        lines.append("")
        lines += [f"![{name}]({v['figure']})" for name, v in z["vectors"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"
