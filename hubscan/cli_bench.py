"""The benchmark and zoo commands: `hubscan bench scan|zoo|towers|gate|detection|perf|unlearning`
and `hubscan zoo build [--tower]`. Thin like every command: parse, call bench*/zoo, print one
line or a table, exit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hubscan import report
from hubscan.cli_common import DebugOpt, PolicyOpt, progress_bars, run_command
from hubscan.errors import ExitCode
from hubscan.policy import load_policy

bench_app = typer.Typer(help="Benchmarks; results go to benchmarks/.", no_args_is_help=True)
zoo_app = typer.Typer(
    help="Build real backdoored and clean tiny CLIPs offline.", no_args_is_help=True
)


@zoo_app.command("build")
def zoo_build(
    out: Annotated[Path, typer.Option("--out", help="where the models and manifest.json go")],
    quick: Annotated[bool, typer.Option(help="base + 2 backdoored + 2 clean only")] = False,
    tower: Annotated[
        str,
        typer.Option(
            help="image tower: vit (28 px, from scratch) or mobilenetv2 (ImageNet trunk, 64 px)"
        ),
    ] = "vit",
    debug: DebugOpt = False,
) -> None:
    """Train (or reuse from the cache) the zoo and write it in Hub layout with a manifest."""

    def body() -> int:
        from hubscan import zoo_tower

        with progress_bars() as bars:
            manifest = zoo_tower.build(out, tower=tower, quick=quick, progress=bars)
        report.render_zoo(manifest, Console(file=sys.stdout))
        return ExitCode.OK

    run_command(body, debug=debug)


@bench_app.command("scan")
def bench_scan(
    size_mb: Annotated[int, typer.Option(help="size of the safetensors file to scan")] = 600,
    runs: Annotated[int, typer.Option(help="timed runs; the median is reported")] = 5,
    out: Annotated[Path, typer.Option(help="where scan.md and scan.json go")] = Path("benchmarks"),
) -> None:
    """Time `hubscan scan` on a large safetensors file (median of several runs)."""
    from hubscan import bench

    run_command(lambda: bench.scan_speed(size_mb=size_mb, runs=runs, out=out), debug=False)


@bench_app.command("zoo")
def bench_zoo(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    out: Annotated[Path, typer.Option(help="where zoo.md and zoo.json go")] = Path("benchmarks"),
) -> None:
    """Summarize a built zoo against its promises (exit 1 if a model breaks one)."""
    from hubscan import bench

    def body() -> int:
        flags = _zoo_build_flags(zoo)
        command = f"hubscan zoo build --out {zoo}{flags} && hubscan bench zoo --zoo {zoo}"
        if out != Path("benchmarks"):
            command += f" --out {out}"
        return bench.zoo_summary(zoo=zoo, out=out, command=command)

    run_command(body, debug=False)


@bench_app.command("towers")
def bench_towers(
    pairs: Annotated[
        int | None, typer.Option(help="training pairs for every base (default: the tower zoo's)")
    ] = None,
    out: Annotated[Path, typer.Option(help="where towers.md and .json go")] = Path("benchmarks"),
) -> None:
    """Zero-shot accuracy of the ImageNet-MobileNetV2 base vs from-scratch bases trained with
    the same recipe (pairs, batch, steps, seed); bases come from the zoo cache when there."""
    from hubscan import bench_towers as towers_bench

    def body() -> int:
        command = "hubscan bench towers" + ("" if pairs is None else f" --pairs {pairs}")
        with progress_bars() as bars:
            result = towers_bench.run_towers_bench(
                out=out, pairs=pairs, command=command, progress=bars
            )
        for b in result["bases"]:
            accuracy = ", ".join(
                f"{acc:.1%} ({name})" for name, acc in b["zero_shot_accuracy"].items()
            )
            sys.stdout.write(f"{b['base']}: {b['pairs']:,} pairs, zero-shot {accuracy}\n")
        return ExitCode.OK

    run_command(body, debug=False)


@bench_app.command("gate")
def bench_gate(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    models: Annotated[int, typer.Option(help="zoo models in the models.lock")] = 4,
    runs: Annotated[int, typer.Option(help="cold+warm repetitions; medians reported")] = 3,
    policy: PolicyOpt = "default",
    out: Annotated[Path, typer.Option(help="where gate.md and .json go")] = Path("benchmarks"),
) -> None:
    """Audit a models.lock of zoo models twice (probing, then from the audit cache), timed."""
    from hubscan import bench_gate

    def body() -> int:
        command = f"hubscan bench gate --zoo {zoo} --models {models} --runs {runs}"
        command += _policy_flag(policy)
        r = bench_gate.run_gate_bench(
            zoo=zoo, models=models, runs=runs, policy=policy, out=out, command=command
        )
        sys.stdout.write(
            f"first run {r['cold_median']:.2f} s, cached run {r['warm_median']:.2f} s: "
            f"{r['speedup_median']}x\n"
        )
        return ExitCode.OK

    run_command(body, debug=False)


@bench_app.command("detection")
def bench_detection(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    labels: Annotated[
        str | None, typer.Option(help="label set for every audit; omit for label-free")
    ] = "fashion-mnist",
    label_free: Annotated[bool, typer.Option(help="audit without a label set")] = False,
    policy: PolicyOpt = "default",
    seeds: Annotated[
        int, typer.Option(min=1, help="audit each model at seeds 0..N-1 (other probes and starts)")
    ] = 1,
    out: Annotated[Path, typer.Option(help="where detection.md and .json go")] = Path("benchmarks"),
) -> None:
    """Audit every model of a zoo: TPR/FPR/AUROC, target identification, times, calibration."""
    from hubscan import bench_detection

    def body() -> int:
        chosen = None if label_free else labels
        command = f"hubscan bench detection --zoo {zoo}" + (" --label-free" if label_free else "")
        command += f" --seeds {seeds}" if seeds > 1 else ""
        command += _policy_flag(policy)
        with progress_bars() as bars:
            tick = bars("audits", _zoo_size(zoo) * seeds)
            result = bench_detection.run_detection_bench(
                zoo=zoo,
                out=out,
                policy=load_policy(policy),
                labels=chosen,
                command=command,
                tick=lambda name: tick(1),
                seeds=seeds,
            )
        s = result["summary"]
        sys.stdout.write(
            f"TPR {s['all']['tpr']:.0%} · FPR {s['fpr']:.0%} · AUROC {s['all']['auroc']}\n"
        )
        return ExitCode.OK

    run_command(body, debug=False)


@bench_app.command("unlearning")
def bench_unlearning(
    zoo: Annotated[list[Path], typer.Option("--zoo", help="a built zoo; repeat for several")],
    policy: PolicyOpt = "default",
    probes: Annotated[
        str,
        typer.Option(
            help="labelled probes for every method, as `hubscan patch --probes` "
            "(up to unlearning.probe_images of them)"
        ),
    ] = "default",
    out: Annotated[Path, typer.Option(help="where unlearning.md, .json and figures go")] = Path(
        "benchmarks"
    ),
) -> None:
    """TBAR on every backdoored model of each zoo (known trigger with two vectors, estimated
    trigger) against two fine-tuning baselines and the oracle vector; the coefficient curves as
    figures. Rows already measured on the same weights come from the cache."""
    from hubscan import bench_references, bench_unlearning

    def body() -> int:
        with progress_bars() as bars:
            # the known-trigger variants, the estimated trigger, the baselines and the oracle
            runs = len(bench_unlearning.VARIANTS) + len(bench_references.BASELINES) + 2
            size = sum(_zoo_size(z, kinds=("backdoored",)) for z in zoo)
            tick = bars("runs", runs * size)
            result = bench_unlearning.run_unlearning_bench(
                zoos=zoo,
                out=out,
                policy=load_policy(policy),
                command="hubscan bench unlearning "
                + " ".join(f"--zoo {z}" for z in zoo)
                + ("" if probes == "default" else f" --probes {probes}")
                + _policy_flag(policy),
                tick=lambda name: tick(1),
                probes=probes,
            )
        for z in result["zoos"]:
            for method, by in z["summary"].items():
                s = by["all"]
                sys.stdout.write(
                    f"{z['zoo']} {method}: attack success after {s['mean_asr_after']:.1%}, "
                    f"retention {s['mean_retention']:.1%}\n"
                )
        return ExitCode.OK

    run_command(body, debug=False)


@bench_app.command("disentanglement")
def bench_disentanglement(
    zoo: Annotated[list[Path], typer.Option("--zoo", help="a built zoo; repeat for several")],
    model: Annotated[
        str | None, typer.Option(help="the backdoored model (default: each zoo's first)")
    ] = None,
    policy: PolicyOpt = "default",
    out: Annotated[Path, typer.Option(help="where disentanglement.md and .json go")] = Path(
        "benchmarks"
    ),
) -> None:
    """The disentanglement error of TBAR's trigger vectors and the oracle vs clean behaviour."""
    from hubscan import bench_disentangle

    def body() -> int:
        zoos = " ".join(f"--zoo {z}" for z in zoo)
        chosen = f" --model {model}" if model else ""
        result = bench_disentangle.run_disentanglement_bench(
            zoos=zoo,
            model=model,
            out=out,
            policy=load_policy(policy),
            command=f"hubscan bench disentanglement {zoos}{chosen}",
        )
        for z in result["zoos"]:
            for name, v in z["vectors"].items():
                sys.stdout.write(
                    f"{z['zoo']} {name}: mean xi {v['mean_xi']:.3f}, cos(oracle) "
                    f"{v['cos_oracle']:.3f}\n"
                )
        return ExitCode.OK

    run_command(body, debug=False)


@bench_app.command("perf")
def bench_perf(
    zoo: Annotated[Path, typer.Option("--zoo", help="a zoo built by `hubscan zoo build`")],
    model: Annotated[str, typer.Option(help="the zoo model to audit")] = "patch-white-br-bag",
    vit: Annotated[bool, typer.Option(help="also audit ViT-B-32 at 224 px (minutes)")] = True,
    policy: PolicyOpt = "default",
    out: Annotated[Path, typer.Option(help="where perf.md and .json go")] = Path("benchmarks"),
) -> None:
    """Detection cost: hubscan vs per-class Neural Cleanse (100 classes), and ViT-B-32 timing."""
    from hubscan import bench_perf

    def body() -> int:
        command = f"hubscan bench perf --zoo {zoo} --model {model}" + ("" if vit else " --no-vit")
        command += _policy_flag(policy)
        result = bench_perf.run_perf_bench(
            zoo=zoo, model=model, out=out, policy=load_policy(policy), command=command, vit=vit
        )
        sys.stdout.write(
            f"hubscan {result['hubscan_detector']['passes']:,} passes vs Neural Cleanse "
            f"{result['neural_cleanse']['passes']:,} ({result['pass_ratio']}x)\n"
        )
        return ExitCode.OK

    run_command(body, debug=False)


def _policy_flag(policy: str) -> str:
    """The `--policy` a benchmark page's command needs to be rerun as it was (none: default)."""
    return "" if policy == "default" else f" --policy {policy}"


def _zoo_build_flags(zoo: Path) -> str:
    """The `zoo build` flags that made this zoo, from its manifest (for the benchmark's command)."""
    try:
        manifest = json.loads((zoo / "manifest.json").read_text())
    except (OSError, ValueError):
        return ""
    tower = manifest.get("tower", "vit") if isinstance(manifest, dict) else "vit"
    quick = isinstance(manifest, dict) and manifest.get("quick") is True
    return ("" if tower == "vit" else f" --tower {tower}") + (" --quick" if quick else "")


def _zoo_size(zoo: Path, kinds: tuple[str, ...] = ("backdoored", "clean")) -> int:
    try:
        return sum(
            m["kind"] in kinds for m in json.loads((zoo / "manifest.json").read_text())["models"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return 0
