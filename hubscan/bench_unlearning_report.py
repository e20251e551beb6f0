"""benchmarks/unlearning.md and its figures, from the result bench_unlearning.py measured.

Owns the page: the summary per method (mean attack success after, mean clean-accuracy
retention, overall and per family), the per-model table and the coefficient-curve figures.
Must not measure anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubscan.figures import render_alpha_png
from hubscan.records import CoefTrial

_LABEL = {
    "tbar-known-contrast": "TBAR, known trigger, contrast vector",
    "tbar-known-fisher": "TBAR, known trigger, contrast vector Fisher-damped (λ chosen on val)",
    "tbar-known-paper": "TBAR, known trigger, paper vector (fine-tune on triggered → target)",
    "tbar-known-mixed": "TBAR, known trigger, mixed vector (triggered + clean, minus clean)",
    "tbar-estimated": "TBAR, estimated trigger (audit's inversion; true trigger measured)",
    "clean-ft": "baseline: fine-tune on clean probes, true labels",
    "trigger-true-ft": "baseline: fine-tune on stamped probes, true labels (NC-style)",
    "oracle": "oracle: the attack's own vector (backdoored − clean base), TBAR's α rule",
}


_TOWER = {
    "vit": "ViT image tower trained from scratch (28 px)",
    "mobilenetv2": "ImageNet MobileNetV2 image tower, fine-tuned (64 px)",
}


def figures(result: dict[str, Any], out: Path) -> dict[str, list[str]]:
    """Per zoo: one PNG per trigger family (default vector, known trigger: one curve per model)
    and one comparing the vectors on the zoo's first model. Returns zoo name -> file names."""
    default = _default(result)
    return {z["zoo"]: _zoo_figures(z, default, out) for z in result["zoos"]}


def _default(result: dict[str, Any]) -> str:
    """The known-trigger method `hubscan patch` runs by default (results from before the
    default was recorded: contrast, the default then)."""
    return f"tbar-known-{result.get('default_variant', 'contrast')}"


def _zoo_figures(z: dict[str, Any], default: str, out: Path) -> list[str]:
    names = []
    rows, tag = z["models"], z["tower"]
    for family in sorted({r["family"] for r in rows}):
        curves = [
            (r["name"], _trials(r["methods"][default]))
            for r in rows
            if r["family"] == family and "curve" in r["methods"].get(default, {})
        ]
        if curves:
            name = f"unlearning-{tag}-alpha-{family}.png"
            title = f"TBAR ({default.removeprefix('tbar-known-')}, known trigger), {tag}: {family}"
            render_alpha_png(curves, out / name, title=title)
            names.append(name)
    if rows:
        first = rows[0]
        curves = [
            (method.removeprefix("tbar-known-"), _trials(res))
            for method, res in first["methods"].items()
            if (method.startswith("tbar-") or method == "oracle") and "curve" in res
        ]
        if curves:
            name = f"unlearning-{tag}-alpha-variants.png"
            title = f"TBAR trigger vectors on {first['name']} ({tag})"
            render_alpha_png(curves, out / name, title=title)
            names.append(name)
    return names


def _trials(res: dict[str, Any]) -> list[CoefTrial]:
    return [CoefTrial(coef=c, clean_accuracy=a, attack_success=s) for c, a, s in res["curve"]]


def markdown(result: dict[str, Any], figure_names: dict[str, list[str]]) -> str:
    zoos = result["zoos"]
    reused = sum(int(r.get("cached", 0)) for z in zoos for r in z["models"])
    total = sum(len(r["methods"]) for z in zoos for r in z["models"])
    split = result["splits"]
    lines = [
        "# Backdoor removal (TBAR) on the zoos",
        "",
        f"Produced by `{result['command']}` (hubscan {result['hubscan']}, policy "
        f"`{result['policy']}`, {result['machine']['cpus']} CPUs). Test split: {split['test']:,} "
        f"probes from the {split['source']}, never used to learn the trigger vector (tune, "
        f"{split['tune']:,}) or to choose the coefficient / learning rate (val, "
        f"{split['val']:,}). Attack success is always the *true* "
        "trigger's; retention = clean accuracy after / before. Patched: TBAR wrote a verified "
        "release (the oracle: found a coefficient within the floor); a baseline kept the "
        "clean-accuracy floor. A model TBAR left unpatched (trigger not detected, no coefficient "
        "within the floor, or verification failed) counts with its attack success unchanged; a "
        "baseline is always applied. The last column of each zoo's table is what the edit itself "
        "left, released or not: a patch verification refused counts with its own attack "
        "success.",
        "",
        f"{reused} of {total} results (one method on one model) were taken from the "
        "benchmark's cache: measured by an earlier run of this command on the same weights "
        "with the same settings and benchmark version.",
        "",
        *([] if result.get("complete", True) else [_PARTIAL, ""]),
        "## Summary",
        "",
        "| method | " + " | ".join(_zoo_title(z) for z in zoos) + " |",
        "|---|" + "---|" * len(zoos),
    ]
    methods = list(dict.fromkeys(m for z in zoos for m in z["summary"]))
    for method in methods:
        cells = [_summary_cell(z["summary"].get(method)) for z in zoos]
        lines.append(f"| {_LABEL.get(method, method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each cell: models patched, mean attack success after, mean retention.",
    ]
    for z in zoos:
        lines += ["", *_zoo_section(z, _default(result), figure_names.get(z["zoo"], []))]
    return "\n".join(lines) + "\n"


_PARTIAL = "**Partial run:** the models below are all that were measured."


def _zoo_title(z: dict[str, Any]) -> str:
    return f"`{z['zoo']}`: {_TOWER.get(z['tower'], z['tower'])}" + (
        " (quick)" if z.get("quick") else ""
    )


def _summary_cell(by: dict[str, Any] | None) -> str:
    if by is None:
        return "—"
    s = by["all"]
    return f"{s['patched']}/{s['models']}, {_pct(s['mean_asr_after'])}, {_pct(s['mean_retention'])}"


def _zoo_section(z: dict[str, Any], default: str, figure_names: list[str]) -> list[str]:
    summary = z["summary"]
    lines = [
        f"## Zoo `{z['zoo']}`: {_TOWER.get(z['tower'], z['tower'])}",
        "",
        *([] if z.get("complete", True) else [_PARTIAL, ""]),
        "| method | models patched | mean attack success after | mean retention "
        "| attack success the edit left, released or not |",
        "|---|---|---|---|---|",
    ]
    for method, by in summary.items():
        s = by["all"]
        lines.append(
            f"| {_LABEL.get(method, method)} | {s['patched']}/{s['models']} | "
            f"{_pct(s['mean_asr_after'])} | {_pct(s['mean_retention'])} | "
            f"{_pct(s.get('mean_asr_patched'))} |"
        )
    lines += ["", "### Per family (mean attack success after / mean retention)", ""]
    families = [k for k in next(iter(summary.values()), {}) if k != "all"]
    lines += [
        "| method | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for method, by in summary.items():
        cells = [
            f"{_pct(by[f]['mean_asr_after'])} / {_pct(by[f]['mean_retention'])}" for f in families
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "### Per model (clean accuracy / attack success, test split)", ""]
    methods = list(summary)
    lines += [
        "| model | before | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for r in z["models"]:
        res = r["methods"]
        before = next(v for v in res.values() if "ca_before" in v)
        cells = [_cell(res[m]) for m in methods]
        lines.append(
            f"| {r['name']} | {_pct(before['ca_before'])} / {_pct(before['asr_before'])} | "
            + " | ".join(cells)
            + " |"
        )
    variant = default.removeprefix("tbar-known-")
    lines += ["", f"Coefficient chosen (known trigger, {variant}) and time per TBAR run:", ""]
    lines += [
        "| model | damping | coefficient | re-audit | seconds (patch incl. verify) |",
        "|---|---|---|---|---|",
    ]
    for r in z["models"]:
        res = r["methods"].get(default, {})
        lines.append(
            f"| {r['name']} | {res.get('damping', '—')} | {res.get('coef', '—')} | "
            f"{res.get('reaudit', '—')} | {res.get('seconds', '—')} |"
        )
    if figure_names:
        lines += ["", "### Coefficient curves", ""]
        lines += [f"![{n}]({n})" for n in figure_names]
    return lines


def _cell(res: dict[str, Any]) -> str:
    if "ca_after" not in res:
        return str(res["status"])
    mark = "" if res["status"] in ("released", "within floor") else f" ({res['status']})"
    return f"{_pct(res['ca_after'])} / {_pct(res['asr_after'])}{mark}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
